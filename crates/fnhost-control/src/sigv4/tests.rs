use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn creds() -> Credentials {
    Credentials::new([("AKIDEXAMPLE".to_string(), SECRET.to_string())])
}

fn vanilla(auth: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![
        ("host".to_string(), "example.amazonaws.com".to_string()),
        ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
    ];
    if let Some(a) = auth {
        h.push(("authorization".to_string(), a.to_string()));
    }
    h
}

const VANILLA_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

fn at(date: &str) -> i64 {
    parse_amz_date(date).expect("valid date")
}

#[test]
fn hmac_matches_rfc_4231() {
    assert_eq!(
        hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn signing_key_matches_the_aws_documentation() {
    let k_date = hmac(format!("AWS4{SECRET}").as_bytes(), b"20120215");
    let k_region = hmac(&k_date, b"us-east-1");
    let k_service = hmac(&k_region, b"iam");
    let k_signing = hmac(&k_service, b"aws4_request");
    assert_eq!(
        hex::encode(k_signing),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
}

#[test]
fn aws_test_suite_get_vanilla_verifies() {
    let req = SignedRequest {
        method: "GET",
        path: "/",
        query: "",
        headers: vanilla(Some(VANILLA_AUTH)),
        body: b"",
    };
    assert_eq!(
        verify(&req, &creds(), at("20150830T123600Z")),
        Ok("AKIDEXAMPLE".to_string())
    );
}

#[test]
fn a_changed_request_or_key_is_refused() {
    let tampered = VANILLA_AUTH.replace("5fa00", "5fa01");
    let req = SignedRequest {
        method: "GET",
        path: "/",
        query: "",
        headers: vanilla(Some(&tampered)),
        body: b"",
    };
    let now = at("20150830T123600Z");
    assert_eq!(verify(&req, &creds(), now), Err(AuthError::Mismatch));
    let req = SignedRequest {
        method: "POST",
        headers: vanilla(Some(VANILLA_AUTH)),
        ..req
    };
    assert_eq!(verify(&req, &creds(), now), Err(AuthError::Mismatch));
    let other = Credentials::new([("AKIDEXAMPLE".to_string(), "other".to_string())]);
    let req = SignedRequest {
        method: "GET",
        ..req
    };
    assert_eq!(verify(&req, &other, now), Err(AuthError::Mismatch));
    let unknown = Credentials::new([("AKIDOTHER".to_string(), SECRET.to_string())]);
    let err = verify(&req, &unknown, now).unwrap_err();
    assert_eq!(err, AuthError::UnknownKey);
    assert_eq!(err.to_api().kind, "UnrecognizedClientException");
    assert_eq!(err.to_api().status, 403);
}

#[test]
fn dates_outside_fifteen_minutes_are_refused() {
    let req = SignedRequest {
        method: "GET",
        path: "/",
        query: "",
        headers: vanilla(Some(VANILLA_AUTH)),
        body: b"",
    };
    let signed = at("20150830T123600Z");
    assert!(verify(&req, &creds(), signed + MAX_SKEW_SECS).is_ok());
    let late = verify(&req, &creds(), signed + MAX_SKEW_SECS + 1).unwrap_err();
    assert!(matches!(late, AuthError::Expired { .. }), "{late:?}");
    assert_eq!(late.to_api().kind, "InvalidSignatureException");
    assert!(
        late.to_string().starts_with(
            "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z"
        ),
        "{late}"
    );
    let early = verify(&req, &creds(), signed - MAX_SKEW_SECS - 1).unwrap_err();
    assert!(matches!(early, AuthError::Future { .. }), "{early:?}");
}

#[test]
fn missing_and_malformed_headers() {
    let req = SignedRequest {
        method: "GET",
        path: "/",
        query: "",
        headers: vanilla(None),
        body: b"",
    };
    let err = verify(&req, &creds(), 0).unwrap_err();
    assert_eq!(err.to_api().kind, "MissingAuthenticationTokenException");
    let req = SignedRequest {
        headers: vanilla(Some("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00")),
        ..req
    };
    let err = verify(&req, &creds(), 0).unwrap_err();
    assert_eq!(err.to_api().kind, "IncompleteSignatureException");
    assert!(err.to_string().contains("'Credential'"), "{err}");
}

#[test]
fn round_trip_with_escaped_path_query_and_body() {
    let mut headers = vec![
        ("host".to_string(), "127.0.0.1:9000".to_string()),
        ("x-amz-date".to_string(), "20261202T193000Z".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let base = SignedRequest {
        method: "PUT",
        path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af/code",
        query: "MaxItems=2&Marker=a%20b",
        headers: headers.clone(),
        body: br#"{"ZipFile":"UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}"#,
    };
    let auth = sign(&base, "AKID", "secret", "eu-west-1");
    headers.push(("authorization".to_string(), auth));
    let creds = Credentials::new([("AKID".to_string(), "secret".to_string())]);
    let now = at("20261202T193000Z");
    let req = SignedRequest { headers, ..base };
    assert_eq!(verify(&req, &creds, now), Ok("AKID".to_string()));
    let other_body = SignedRequest {
        body: b"{}",
        ..req.clone()
    };
    assert_eq!(verify(&other_body, &creds, now), Err(AuthError::Mismatch));
    let other_query = SignedRequest {
        query: "MaxItems=3&Marker=a%20b",
        ..req
    };
    assert_eq!(verify(&other_query, &creds, now), Err(AuthError::Mismatch));
}

#[test]
fn dates_round_trip() {
    for s in ["19700101T000000Z", "20150830T123600Z", "20240229T235959Z"] {
        assert_eq!(format_amz_date(at(s)), s);
    }
    assert_eq!(at("19700102T000001Z"), 86_401);
    assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
}
