//! Who may use the admin API. It can create functions, i.e. run code, so it
//! is never open: a configured `server.admin_token`, else — on a TCP
//! listener — a token generated at start and written to
//! `<state_dir>/admin.token` (0600, readable by root only; the CLI reads it
//! from there). A Unix-socket listener with no token relies on the socket's
//! 0600 mode. On a loopback listener the `Host` header must name loopback,
//! so a web page that rebinds its DNS name to 127.0.0.1 cannot reach it.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fnhost_config::{AdminListen, ServerConfig};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::HeaderMap;
use sha2::{Digest, Sha256};

/// File name of the generated token inside `server.state_dir`.
pub const TOKEN_FILE: &str = "admin.token";

/// Why the admin API's credentials could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    #[error("cannot read random bytes for the admin token from /dev/urandom: {0}")]
    Random(#[source] std::io::Error),
    #[error("cannot write the admin token file {path}: {source} (set server.admin_token, or make server.state_dir writable)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No or wrong bearer token.
    Token,
    /// A loopback listener reached under a non-loopback `Host` name.
    Host,
}

/// The admin API's credentials and listener facts.
#[derive(Clone)]
pub struct AdminAuth {
    /// SHA-256 of the token; `None` only for a Unix socket without one.
    token_digest: Option<[u8; 32]>,
    /// Where a generated token was written (for messages).
    token_file: Option<PathBuf>,
    loopback_only: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token_digest.map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("loopback_only", &self.loopback_only)
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Compares two digests without an early exit. Comparing fixed-size
/// digests rather than the tokens keeps the token's length secret too.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True for `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl AdminAuth {
    /// The credentials for `server`: its token, or (TCP without one) a
    /// token generated now and written to `<state_dir>/admin.token`.
    pub fn for_server(server: &ServerConfig) -> Result<AdminAuth, AdminAuthError> {
        let loopback_only =
            matches!(&server.admin_listen, AdminListen::Tcp(a) if a.ip().is_loopback());
        if let Some(token) = &server.admin_token {
            return Ok(AdminAuth {
                token_digest: Some(digest(token.as_bytes())),
                token_file: None,
                loopback_only,
            });
        }
        if !matches!(server.admin_listen, AdminListen::Tcp(_)) {
            return Ok(AdminAuth {
                token_digest: None,
                token_file: None,
                loopback_only,
            });
        }
        let path = server.state_dir.join(TOKEN_FILE);
        let token = generate_token()?;
        write_token_file(&path, &token)?;
        Ok(AdminAuth {
            token_digest: Some(digest(token.as_bytes())),
            token_file: Some(path),
            loopback_only,
        })
    }

    /// A fixed token, for the tests.
    #[cfg(test)]
    fn with_token(token: &str, loopback_only: bool) -> AdminAuth {
        AdminAuth {
            token_digest: Some(digest(token.as_bytes())),
            token_file: None,
            loopback_only,
        }
    }

    /// Where the generated token is, if one was generated.
    pub fn token_file(&self) -> Option<&Path> {
        self.token_file.as_deref()
    }

    /// Checks one request's headers.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.loopback_only {
            let host = headers.get(HOST).and_then(|v| v.to_str().ok());
            if !host.is_some_and(is_loopback_host) {
                return Err(Refusal::Host);
            }
        }
        let Some(expected) = &self.token_digest else {
            return Ok(());
        };
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.as_bytes()));
        match given {
            Some(given) if digests_equal(&given, expected) => Ok(()),
            _ => Err(Refusal::Token),
        }
    }

    /// What a refused client is told.
    pub fn explain(&self, refusal: Refusal) -> String {
        match (refusal, &self.token_file) {
            (Refusal::Host, _) => "the admin API listens on loopback and answers only requests whose Host header names loopback (localhost, 127.0.0.1, [::1])".to_string(),
            (Refusal::Token, Some(file)) => format!(
                "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token fnhost generated in {} (root only; `fnhost` admin commands read it), or set server.admin_token",
                file.display()
            ),
            (Refusal::Token, None) => "missing or wrong bearer token (server.admin_token)".to_string(),
        }
    }
}

/// 32 random bytes, hex.
fn generate_token() -> Result<String, AdminAuthError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(AdminAuthError::Random)?;
    Ok(hex::encode(bytes))
}

/// Writes the token readable by its owner only, replacing any earlier one
/// atomically (a CLI never reads half a token).
fn write_token_file(path: &Path, token: &str) -> Result<(), AdminAuthError> {
    let err = |source| AdminAuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let staged = path.with_extension("token.new");
    let _ = std::fs::remove_file(&staged);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .map_err(err)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    std::fs::rename(&staged, path).map_err(err)
}

/// Reads a token file written by [`AdminAuth::for_server`] (for clients).
pub fn read_token_file(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(host: Option<&str>, token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(HOST, HeaderValue::from_str(host).expect("host"));
        }
        if let Some(token) = token {
            h.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).expect("auth"),
            );
        }
        h
    }

    #[test]
    fn tokens_must_match_exactly() {
        let auth = AdminAuth::with_token("0123456789abcdef", false);
        assert_eq!(auth.check(&headers(None, Some("0123456789abcdef"))), Ok(()));
        for wrong in [
            "0123456789abcdeF",
            "0123456789abcde",
            "0123456789abcdef0",
            "",
        ] {
            assert_eq!(
                auth.check(&headers(None, Some(wrong))),
                Err(Refusal::Token),
                "{wrong:?}"
            );
        }
        assert_eq!(auth.check(&headers(None, None)), Err(Refusal::Token));
    }

    #[test]
    fn a_loopback_listener_wants_a_loopback_host() {
        let auth = AdminAuth::with_token("0123456789abcdef", true);
        let token = Some("0123456789abcdef");
        for ok in [
            "localhost",
            "LOCALHOST:8081",
            "127.0.0.1",
            "127.0.0.1:8081",
            "[::1]:8081",
            "[::1]",
        ] {
            assert_eq!(auth.check(&headers(Some(ok), token)), Ok(()), "{ok}");
        }
        for rebound in [
            "evil.example",
            "evil.example:8081",
            "10.0.0.1:8081",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert_eq!(
                auth.check(&headers(Some(rebound), token)),
                Err(Refusal::Host),
                "{rebound}"
            );
        }
        assert_eq!(auth.check(&headers(None, token)), Err(Refusal::Host));
    }

    #[test]
    fn tcp_without_a_token_generates_one_readable_by_root_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerConfig {
            state_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        };
        let auth = AdminAuth::for_server(&server).expect("auth");
        let file = auth
            .token_file()
            .expect("a token was generated")
            .to_path_buf();
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = read_token_file(&file).expect("read");
        assert_eq!(token.len(), 64);
        assert_eq!(
            auth.check(&headers(Some("127.0.0.1"), Some(&token))),
            Ok(())
        );
        assert_eq!(
            auth.check(&headers(Some("127.0.0.1"), None)),
            Err(Refusal::Token)
        );
        // A restart generates a new one; the old one stops working.
        let again = AdminAuth::for_server(&server).expect("auth");
        let new_token = read_token_file(&file).expect("read");
        assert_ne!(token, new_token);
        assert_eq!(
            again.check(&headers(Some("127.0.0.1"), Some(&token))),
            Err(Refusal::Token)
        );
    }

    #[test]
    fn a_unix_socket_without_a_token_relies_on_its_mode() {
        let server = ServerConfig {
            admin_listen: AdminListen::Unix("/run/fnhost/admin.sock".into()),
            ..ServerConfig::default()
        };
        let auth = AdminAuth::for_server(&server).expect("auth");
        assert!(auth.token_file().is_none());
        assert_eq!(auth.check(&headers(None, None)), Ok(()));
    }
}
