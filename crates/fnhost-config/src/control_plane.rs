//! Validation of the Lambda control plane's `[server]` keys: the access
//! keys SigV4 requests are checked against (`[[server.aws_credentials]]`,
//! `server.aws_credentials_file`), `server.invoke_auth`, and the limits of
//! deployment zips.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::schema::RawServer;
use crate::span::KeyPath;
use crate::validate::{bounded, invalid, to_u64, Invalid};

/// Who may invoke through the Lambda API (`server.invoke_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvokeAuth {
    /// `"none"`: anyone who reaches the listener (the default: keep
    /// `listen` on loopback or behind a proxy that authenticates).
    #[default]
    None,
    /// `"sigv4"`: Lambda API invocations must be signed with a configured
    /// key; the native `/v1/functions/…/invoke` route is refused.
    Sigv4,
}

/// The control plane's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlPlaneConfig {
    /// `(access_key_id, secret_access_key)`; empty = control plane refused.
    pub credentials: Vec<(String, String)>,
    pub invoke_auth: InvokeAuth,
    pub max_code_zip_bytes: u64,
    pub max_code_unzipped_bytes: u64,
}

impl std::fmt::Debug for ControlPlaneConfig {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneConfig")
            .field(
                "access_key_ids",
                &self.credentials.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("invoke_auth", &self.invoke_auth)
            .field("max_code_zip_bytes", &self.max_code_zip_bytes)
            .field("max_code_unzipped_bytes", &self.max_code_unzipped_bytes)
            .finish()
    }
}

impl Default for ControlPlaneConfig {
    /// Lambda's limits: 50 MiB zipped, 250 MiB unzipped.
    fn default() -> Self {
        ControlPlaneConfig {
            credentials: Vec::new(),
            invoke_auth: InvokeAuth::None,
            max_code_zip_bytes: 50 << 20,
            max_code_unzipped_bytes: 250 << 20,
        }
    }
}

/// One `[[server.aws_credentials]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAwsCredential {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
}

fn check_key(id: &str, secret: &str, path: KeyPath) -> Result<(), Invalid> {
    if id.len() < 3 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid(
            path,
            format!("access key id {id:?} must be at least 3 letters or digits"),
        ));
    }
    if secret.len() < 8 || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            path,
            format!("the secret of {id:?} must be at least 8 characters without spaces"),
        ));
    }
    Ok(())
}

/// The key pairs of an AWS shared credentials file (`[profile]` sections
/// with `aws_access_key_id` and `aws_secret_access_key`).
pub(crate) fn parse_credentials_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let (mut id, mut secret): (Option<String>, Option<String>) = (None, None);
    let mut flush = |id: &mut Option<String>,
                     secret: &mut Option<String>,
                     section: &str|
     -> Result<(), String> {
        match (id.take(), secret.take()) {
            (Some(i), Some(s)) => out.push((i, s)),
            (None, None) => {}
            _ => {
                return Err(format!(
                    "profile [{section}] needs both aws_access_key_id and aws_secret_access_key"
                ))
            }
        }
        Ok(())
    };
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            flush(&mut id, &mut secret, &section)?;
            section = name.trim().to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    flush(&mut id, &mut secret, &section)?;
    Ok(out)
}

pub(crate) fn control_plane(
    raw: &RawServer,
    path: &KeyPath,
    base_dir: &Path,
) -> Result<ControlPlaneConfig, Invalid> {
    let mut cp = ControlPlaneConfig::default();
    for (i, c) in raw.aws_credentials.iter().flatten().enumerate() {
        let at = path.key("aws_credentials").index(i);
        check_key(&c.access_key_id, &c.secret_access_key, at)?;
        cp.credentials
            .push((c.access_key_id.clone(), c.secret_access_key.clone()));
    }
    if let Some(file) = &raw.aws_credentials_file {
        let at = path.key("aws_credentials_file");
        let file: PathBuf = base_dir.join(file);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| invalid(at.clone(), format!("cannot read {}: {e}", file.display())))?;
        let pairs = parse_credentials_file(&text)
            .map_err(|e| invalid(at.clone(), format!("{}: {e}", file.display())))?;
        if pairs.is_empty() {
            return Err(invalid(
                at,
                format!(
                    "{} has no aws_access_key_id / aws_secret_access_key pair",
                    file.display()
                ),
            ));
        }
        for (id, secret) in pairs {
            check_key(&id, &secret, at.clone())?;
            cp.credentials.push((id, secret));
        }
    }
    if let Some(mode) = &raw.invoke_auth {
        cp.invoke_auth = match mode.as_str() {
            "none" => InvokeAuth::None,
            "sigv4" => InvokeAuth::Sigv4,
            other => {
                return Err(invalid(
                    path.key("invoke_auth"),
                    format!("{other:?} is not \"none\" or \"sigv4\""),
                ))
            }
        };
    }
    if cp.invoke_auth == InvokeAuth::Sigv4 && cp.credentials.is_empty() {
        return Err(invalid(
            path.key("invoke_auth"),
            "\"sigv4\" needs access keys: add [[server.aws_credentials]] or server.aws_credentials_file",
        ));
    }
    if let Some(v) = raw.max_code_zip_bytes {
        cp.max_code_zip_bytes = to_u64(bounded(
            v,
            &path.key("max_code_zip_bytes"),
            1,
            1 << 32,
            " bytes",
        )?);
    }
    if let Some(v) = raw.max_code_unzipped_bytes {
        cp.max_code_unzipped_bytes = to_u64(bounded(
            v,
            &path.key("max_code_unzipped_bytes"),
            1,
            1 << 40,
            " bytes",
        )?);
    }
    Ok(cp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{assert_invalid, base, parse};

    #[test]
    fn credentials_from_tables_and_a_file() {
        let dir = base();
        std::fs::write(
            dir.path().join("creds"),
            "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = filesecret1\n",
        )
        .expect("write");
        let config = parse(
            "[server]\naws_credentials_file = \"creds\"\ninvoke_auth = \"sigv4\"\n[[server.aws_credentials]]\naccess_key_id = \"AKIDTABLE\"\nsecret_access_key = \"tablesecret\"\n",
            dir.path(),
        )
        .expect("valid");
        let cp = &config.server.control_plane;
        assert_eq!(cp.credentials.len(), 2);
        assert_eq!(cp.invoke_auth, InvokeAuth::Sigv4);
        assert_eq!(cp.max_code_zip_bytes, 50 << 20);
        assert!(!format!("{cp:?}").contains("secret"));
    }

    #[test]
    fn refusals_name_the_key() {
        assert_invalid(
            "[server]\ninvoke_auth = \"sigv4\"\n",
            2,
            "server.invoke_auth",
            "needs access keys",
        );
        assert_invalid(
            "[server]\ninvoke_auth = \"iam\"\n",
            2,
            "server.invoke_auth",
            "\"iam\"",
        );
        assert_invalid(
            "[server]\naws_credentials_file = \"/nonexistent/creds\"\n",
            2,
            "server.aws_credentials_file",
            "cannot read",
        );
        assert_invalid(
            "[server]\n[[server.aws_credentials]]\naccess_key_id = \"AKID\"\nsecret_access_key = \"short\"\n",
            2,
            "server.aws_credentials[0]",
            "at least 8",
        );
    }

    #[test]
    fn credentials_file_format() {
        let pairs = parse_credentials_file("# c\n[a]\naws_access_key_id=X1\naws_secret_access_key = y\n\n[b]\naws_access_key_id = X2\naws_secret_access_key=z\nregion = us\n").expect("ok");
        assert_eq!(
            pairs,
            vec![("X1".into(), "y".into()), ("X2".into(), "z".into())]
        );
        assert!(parse_credentials_file("[a]\naws_access_key_id = X\n").is_err());
    }
}
