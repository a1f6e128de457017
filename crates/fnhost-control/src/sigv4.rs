//! AWS Signature Version 4 verification of a request against the access
//! keys the operator configured: canonical request, string to sign, the
//! HMAC-SHA256 key derivation and the ±15 minute clock window, answering
//! with the errors the AWS API gives (all 403).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::api_error::ApiError;

/// How far `X-Amz-Date` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Access key id → secret access key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    keys: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Credentials {
            keys: pairs.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What of a request the signature covers, as received.
#[derive(Debug, Clone)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent on the wire (still percent-encoded).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Header names lowercased; repeated headers appear once per value.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error("Signature expired: {date} is now earlier than {earliest} ({now} - 15 min.)")]
    Expired {
        date: String,
        earliest: String,
        now: String,
    },
    #[error("Signature not yet current: {date} is still later than {latest} ({now} + 15 min.)")]
    Future {
        date: String,
        latest: String,
        now: String,
    },
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")]
    Mismatch,
}

impl AuthError {
    /// As the AWS API reports it.
    pub fn to_api(&self) -> ApiError {
        let kind = match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::Expired { .. } | AuthError::Future { .. } | AuthError::Mismatch => {
                "InvalidSignatureException"
            }
        };
        ApiError::new(403, kind, self.to_string())
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthError> {
    let incomplete = |what: &str| {
        AuthError::Incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={value}"
        ))
    };
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| {
            AuthError::Incomplete(format!(
                "Authorization header must use the {ALGORITHM} algorithm. Authorization={value}"
            ))
        })?
        .trim();
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').unwrap_or((part.trim(), ""));
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Credential"))?;
    let signed = signed.ok_or_else(|| incomplete("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(AuthError::Incomplete(format!(
            "Credential should be scoped to a valid region and end with aws4_request: {credential}"
        )));
    };
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// Verifies `req` at `now` (Unix seconds); the access key id on success.
pub fn verify(req: &SignedRequest<'_>, creds: &Credentials, now: i64) -> Result<String, AuthError> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let auth = parse_authorization(header("authorization").ok_or(AuthError::Missing)?)?;
    let secret = creds
        .keys
        .get(auth.access_key)
        .ok_or(AuthError::UnknownKey)?;
    let amz_date = header("x-amz-date").ok_or_else(|| {
        AuthError::Incomplete("the request must carry an X-Amz-Date header".into())
    })?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        AuthError::Incomplete(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(AuthError::Mismatch);
    }
    if signed_at < now - MAX_SKEW_SECS {
        return Err(AuthError::Expired {
            date: amz_date.to_string(),
            earliest: format_amz_date(now - MAX_SKEW_SECS),
            now: format_amz_date(now),
        });
    }
    if signed_at > now + MAX_SKEW_SECS {
        return Err(AuthError::Future {
            date: amz_date.to_string(),
            latest: format_amz_date(now + MAX_SKEW_SECS),
            now: format_amz_date(now),
        });
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(AuthError::Incomplete(
            "the signed headers must include host".into(),
        ));
    }
    let body_hash = hex::encode(Sha256::digest(req.body));
    let payload_hash = match header("x-amz-content-sha256") {
        Some("UNSIGNED-PAYLOAD") | None => body_hash,
        Some(claimed) if claimed.eq_ignore_ascii_case(&body_hash) => body_hash,
        Some(_) => return Err(AuthError::Mismatch),
    };
    let canonical = canonical_request(req, &auth.signed_headers, &payload_hash);
    let expected = signature(
        secret,
        amz_date,
        auth.date,
        auth.region,
        auth.service,
        &canonical,
    );
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(auth.access_key.to_string())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The `Authorization` header a client with these keys would send (for
/// tests and tools); `req.headers` must already hold `host` and `x-amz-date`.
pub fn sign(req: &SignedRequest<'_>, access_key: &str, secret: &str, region: &str) -> String {
    let mut names: Vec<&str> = req.headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let amz_date = req
        .headers
        .iter()
        .find(|(k, _)| k == "x-amz-date")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let date = amz_date.get(..8).unwrap_or_default();
    let payload_hash = hex::encode(Sha256::digest(req.body));
    let canonical = canonical_request(req, &names, &payload_hash);
    let sig = signature(secret, amz_date, date, region, "lambda", &canonical);
    format!(
        "{ALGORITHM} Credential={access_key}/{date}/{region}/lambda/aws4_request, SignedHeaders={}, Signature={sig}",
        names.join(";")
    )
}

fn canonical_request(req: &SignedRequest<'_>, signed: &[&str], payload_hash: &str) -> String {
    let mut headers = String::new();
    for name in signed {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{}\n{}\n{}\n{headers}\n{}\n{payload_hash}",
        req.method,
        // Every service but S3 signs the path as sent, encoded once more.
        uri_encode(req.path, false),
        canonical_query(req.query),
        signed.join(";")
    )
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), true),
                uri_encode(&percent_decode(v), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes `%XX` escapes (query strings here; the dispatcher's path
/// segments, where clients escape ARNs' colons); malformed escapes are kept
/// as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 encoding of all but the unreserved characters (and `/` unless
/// `encode_slash`).
fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !encode_slash)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn signature(
    secret: &str,
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    canonical: &str,
) -> String {
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, to_sign.as_bytes()))
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `YYYYMMDDTHHMMSSZ` → Unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Unix seconds → `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests;
