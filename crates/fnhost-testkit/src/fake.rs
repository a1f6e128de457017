//! Stand-ins for a daemon in root-free tests of code that launches one: an
//! executable script to run in its place, and a loopback HTTP server that
//! answers every request with 200 (a healthy `/healthz`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// Writes `body` to `dir/fnhost`, mode 0755, and returns its path.
pub fn script(dir: &Path, body: &str) -> std::io::Result<PathBuf> {
    let path = dir.join("fnhost");
    std::fs::write(&path, body)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(path)
}

/// A thread serving `200 ok` to every request on a free loopback port,
/// for the rest of the process.
pub fn healthy_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_answers_200_and_the_script_is_executable() {
        let addr = healthy_server().expect("server");
        assert_eq!(crate::http(addr, "GET", "/healthz", b"").status, 200);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = script(dir.path(), "#!/bin/sh\nexit 0\n").expect("script");
        let status = std::process::Command::new(&path).status().expect("runs");
        assert!(status.success());
    }
}
