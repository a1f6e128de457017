//! The launcher against stand-in daemons (shell scripts): it reads the
//! address lines, waits for /healthz, reports an early exit with the
//! daemon's stderr, and stops with SIGTERM. Root-free.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use fnhost_testkit::{fake, AdminLine, Launch, LogTo};

fn healthy_server() -> SocketAddr {
    fake::healthy_server().expect("stand-in server")
}

fn script(dir: &Path, body: &str) -> PathBuf {
    fake::script(dir, body).expect("stand-in script")
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("fnhost.toml");
    std::fs::write(&path, "[server]\n").expect("write config");
    path
}

#[test]
fn early_exit_reports_the_stderr_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = script(
        dir.path(),
        "#!/bin/sh\necho 'error: config is broken' >&2\nexit 3\n",
    );
    let err = match Launch::new(&fake, &config(dir.path())).start() {
        Ok(_) => panic!("a daemon that exits must not start"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("config is broken"), "{err}");
    assert!(err.contains("exit status"), "{err}");
}

#[test]
fn starts_waits_healthy_and_stops_with_sigterm() {
    let addr = healthy_server();
    let dir = tempfile::tempdir().expect("tempdir");
    // Checks its arguments, prints the contract line, then idles until
    // SIGTERM (the default action ends it).
    let body = format!(
        "#!/bin/sh\n[ \"$1\" = serve ] && [ \"$2\" = --config ] && [ -f \"$3\" ] || exit 9\n\
         [ \"$4\" = --listen ] && [ \"$FNHOST_LOG\" = info ] || exit 8\n\
         echo 'fnhost: listening on http://{addr}'\necho 'more output'\nexec sleep 60\n"
    );
    let fake = script(dir.path(), &body);
    let mut daemon = Launch::new(&fake, &config(dir.path()))
        .arg("--listen")
        .env("FNHOST_LOG", "info")
        .wait_healthy()
        .start()
        .expect("fake daemon starts");
    assert_eq!(daemon.url(), format!("http://{addr}"));
    assert_eq!(daemon.addr(), addr);
    assert_eq!(daemon.admin(), None);
    let status = daemon.stop().expect("stopped");
    assert_eq!(status.signal(), Some(libc_sigterm()));
    // Idempotent.
    assert_eq!(daemon.stop(), Some(status));
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

#[test]
fn reads_the_admin_address_from_the_second_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr.log");
    let body = "#!/bin/sh\necho 'fnhost: listening on http://127.0.0.1:8'\n\
                echo 'fnhost: admin API on http://127.0.0.1:9'\necho ' WARN slow' >&2\nexec sleep 60\n";
    let fake = script(dir.path(), body);
    let daemon = Launch::new(&fake, &config(dir.path()))
        .admin(AdminLine::Required)
        .log(LogTo::File(log))
        .start()
        .expect("fake daemon starts");
    assert_eq!(daemon.admin_url(), Some("http://127.0.0.1:9"));
    assert_eq!(daemon.admin(), Some("127.0.0.1:9".parse().expect("addr")));
    assert!(fnhost_testkit::eventually(
        std::time::Duration::from_secs(10),
        || daemon.warnings() == [" WARN slow"]
    ));
    drop(daemon);

    // An admin API that is off is not an address, and not an error.
    let body = "#!/bin/sh\necho 'fnhost: listening on http://127.0.0.1:8'\n\
                echo 'fnhost: admin API off'\nexec sleep 60\n";
    let fake = script(dir.path(), body);
    let daemon = Launch::new(&fake, &config(dir.path()))
        .admin(AdminLine::Optional)
        .start()
        .expect("fake daemon starts");
    assert_eq!(daemon.admin(), None);
    drop(daemon);

    // Required but missing: the start fails and says what it expected.
    let body =
        "#!/bin/sh\necho 'fnhost: listening on http://127.0.0.1:8'\necho other\nexec sleep 60\n";
    let fake = script(dir.path(), body);
    let err = match Launch::new(&fake, &config(dir.path()))
        .admin(AdminLine::Required)
        .start()
    {
        Ok(_) => panic!("a daemon without an admin line must not start"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("fnhost: admin API on "), "{err}");
}

#[test]
fn an_unexpected_first_line_fails_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = script(dir.path(), "#!/bin/sh\necho hello\nexec sleep 60\n");
    let err = match Launch::new(&fake, &config(dir.path())).start() {
        Ok(_) => panic!("a daemon without an address must not start"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("unexpected stdout line"), "{err}");
}
