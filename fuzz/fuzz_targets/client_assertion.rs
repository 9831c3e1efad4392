//! JWT client assertions (RFC 7523 §2.2 and §3, OIDC Core §9): what runs before any key is
//! trusted (`read_assertion`) and the claim checks after the signature (`check_claims`), from
//! `provider::http::oauth2::client_auth`.
//!
//! The input is used twice: as the assertion text, and as a JSON claims set put in a JWT with
//! a fixed header (so the fuzzer reaches the claim checks without having to write base64).
#![no_main]

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use libfuzzer_sys::fuzz_target;
use provider::http::oauth2::client_auth::{check_claims, read_assertion};
use serde_json::Value;

const NOW: i64 = 1_700_000_000;
const TOKEN_ENDPOINT: &str = "https://auth.example/oauth2/token";
const ISSUER: &str = "https://auth.example/";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(read) = read_assertion(text, None) {
            check_read(&read.claims, &read.client_id);
            let _ = check_claims(&read.claims, NOW, TOKEN_ENDPOINT, ISSUER);
        }
        for body_id in [Some(""), Some("client")] {
            let _ = read_assertion(text, body_id);
        }
    }
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let json = serde_json::to_vec(&claims).expect("serialises");
    // What the JWT carries (serde_json's float parsing is not exact: 1e27-ish numbers may come
    // back one unit off, so the claims are compared with their own re-reading).
    let sent: serde_json::Map<String, Value> = serde_json::from_slice(&json).expect("parses");
    let payload = URL_SAFE_NO_PAD.encode(&json);
    let jwt = format!("{header}.{payload}.c2lnbmF0dXJl");
    let iss = claims.get("iss").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    match read_assertion(&jwt, None) {
        Ok(read) => {
            // The claims come back as sent, naming the client both `iss` and `sub` name.
            assert_eq!(read.claims, sent);
            check_read(&read.claims, &read.client_id);
            // RFC 7523 §3: a different client_id alongside is refused.
            let other = format!("{}x", read.client_id);
            assert!(read_assertion(&jwt, Some(&other)).is_err());
            assert!(read_assertion(&jwt, Some(&read.client_id)).is_ok());
        }
        Err(e) => {
            assert_eq!(e.error.as_str(), "invalid_client");
            assert!(iss.is_none() || sub.is_none() || iss != sub, "{claims:?}");
        }
    }

    // Realistic clocks: the claims are the attacker's, the time is not.
    for now in [NOW, 0] {
        let Ok(granted) = check_claims(&claims, now, TOKEN_ENDPOINT, ISSUER) else {
            continue;
        };
        // RFC 7523 §3 items 4 and 7: accepted only unexpired, with a jti, for this server.
        let exp = claims["exp"].as_i64().expect("a numeric exp");
        assert!(
            i128::from(exp) + 60 >= i128::from(now),
            "expired: {claims:?} at {now}"
        );
        assert!(
            i128::from(exp) <= i128::from(now) + 360,
            "too long: {claims:?} at {now}"
        );
        assert!(!granted.jti.is_empty());
        assert_eq!(claims["jti"].as_str(), Some(granted.jti.as_str()));
        let aud_ok = |a: &str| a == TOKEN_ENDPOINT || a == ISSUER || a == "https://auth.example";
        assert!(match &claims["aud"] {
            Value::String(a) => aud_ok(a),
            Value::Array(all) => all.iter().filter_map(Value::as_str).any(aud_ok),
            _ => false,
        });
        for early in ["nbf", "iat"] {
            if let Some(t) = claims.get(early).and_then(Value::as_i64) {
                assert!(
                    i128::from(t) - 60 <= i128::from(now),
                    "{early}: {claims:?} at {now}"
                );
            }
        }
    }
});

fn check_read(claims: &serde_json::Map<String, Value>, client_id: &str) {
    assert_eq!(claims["iss"].as_str(), Some(client_id));
    assert_eq!(claims["sub"].as_str(), Some(client_id));
}
