//! Client metadata of dynamic registration (RFC 7591 §2, MSC2966): `domain::client_registration`.
#![no_main]

use domain::{client_metadata::RegisteredMetadata, client_registration::validate};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(metadata) = validate(&request) else {
        return;
    };
    // MSC2966: client_uri is an https URL; redirect URIs are kept exactly as sent.
    let scheme = metadata.client_uri.get(..8).unwrap_or_default();
    assert!(scheme.eq_ignore_ascii_case("https://"), "{request}");
    for uri in &metadata.redirect_uris {
        let sent = request["redirect_uris"].as_array().expect("sent as a list");
        assert!(sent.iter().any(|s| s.as_str() == Some(uri.as_str())));
    }
    // What is stored validates again to the same metadata (it is re-read and echoed), and
    // reads back through RegisteredMetadata with the same grants.
    let stored = Value::Object(metadata.to_json());
    let again = validate(&stored).unwrap_or_else(|e| panic!("stored {stored} refused: {e:?}"));
    assert_eq!(again, metadata, "{stored}");
    assert_eq!(Value::Object(again.to_json()), stored);
    let registered = RegisteredMetadata::from_json(&stored);
    for grant in &metadata.grant_types {
        assert!(registered.allows_grant(*grant), "{grant} in {stored}");
    }
    // The stored JSON survives a text round trip (the database column).
    let text = serde_json::to_string(&stored).expect("serialises");
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("parses"),
        stored
    );
});
