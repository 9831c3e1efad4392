//! Request parameters (RFC 6749 §3.1) and the `Authorization` header (RFC 6750 §2.1), as every
//! door reads them: `provider::http::kit::params`.
#![no_main]

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use provider::http::kit::params::{authorization, parse_authorization, Authorization, Params};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_params(text);
    check_authorization(text);
    // The header as it arrives: bytes that may not be text.
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value);
        let read = authorization(&headers);
        match headers[header::AUTHORIZATION].to_str() {
            Ok(text) => assert_eq!(read, parse_authorization(text)),
            Err(_) => assert_eq!(read, Authorization::Malformed),
        }
        // RFC 9110 §5.3: a second Authorization header makes the request malformed.
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(authorization(&headers), Authorization::Malformed);
    }
});

/// `Params::parse` against an independent reading of the same form: the first value of each
/// name is kept, names sent twice are reported once each, an empty value reads as absent; and
/// what was kept, encoded again, reads back the same.
fn check_params(text: &str) {
    let params = Params::parse(text);
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(text.as_bytes()) {
        *count.entry(name.to_string()).or_default() += 1;
        first.entry(name.into_owned()).or_insert(value.into_owned());
    }
    for (name, value) in &first {
        let expected = Some(value.as_str()).filter(|v| !v.is_empty());
        assert_eq!(params.get(name), expected, "value of {name:?}");
        assert_eq!(
            params.is_repeated(name),
            count[name] > 1,
            "repeat of {name:?}"
        );
    }
    let repeated = params.repeated_names();
    assert_eq!(repeated.len(), count.values().filter(|c| **c > 1).count());
    for name in repeated {
        assert!(count[name] > 1);
        assert_eq!(repeated.iter().filter(|r| *r == name).count(), 1);
    }

    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&first)
        .finish();
    let again = Params::parse(&encoded);
    assert!(again.repeated_names().is_empty(), "{encoded:?}");
    for name in first.keys() {
        assert_eq!(again.get(name), params.get(name), "{encoded:?}");
    }
}

/// `parse_authorization`: a Bearer token is never empty nor padded with spaces, comes from the
/// value, only under the `Bearer` scheme (any case), and reads back the same once rewritten.
fn check_authorization(text: &str) {
    match parse_authorization(text) {
        Authorization::Bearer(token) => {
            assert!(!token.is_empty());
            assert_eq!(token, token.trim());
            assert!(text.contains(token));
            let scheme = text.trim_start().split(' ').next().unwrap_or_default();
            assert!(scheme.eq_ignore_ascii_case("bearer"), "{text:?}");
            let rewritten = format!("Bearer {token}");
            assert_eq!(
                parse_authorization(&rewritten),
                Authorization::Bearer(token)
            );
        }
        Authorization::Absent => panic!("a value that is there can't be absent"),
        Authorization::Other => {
            let scheme = text.trim_start().split(' ').next().unwrap_or_default();
            assert!(!scheme.is_empty() && !scheme.eq_ignore_ascii_case("bearer"));
        }
        Authorization::Malformed => {}
    }
}
