//! A stand-in for Synapse in `matrix_authentication_service` mode (MSC3861): it advertises the
//! provider to clients and delegates every authentication decision to it. It talks to the
//! provider over HTTP only and never links the provider crate.
//!
//! This first part builds the client discovery documents a homeserver serves.

use serde_json::{json, Value};
use url::Url;

/// The Matrix spec versions this homeserver claims. OAuth-aware clients (matrix-rust-sdk) only
/// ask for `auth_metadata` when `v1.15` or later is listed (Matrix spec v1.15, MSC2965).
pub const SPEC_VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12", "v1.13", "v1.14", "v1.15",
];

/// `GET /_matrix/client/versions`.
pub fn versions() -> Value {
    json!({ "versions": SPEC_VERSIONS, "unstable_features": {} })
}

/// `GET /.well-known/matrix/client`: the homeserver's base URL, and for older OIDC-aware clients
/// the provider's issuer and account page (`org.matrix.msc2965.authentication`, MSC2965).
pub fn client_well_known(homeserver_base: &Url, issuer: &Url, account: Option<&Url>) -> Value {
    let mut auth = json!({ "issuer": issuer.as_str() });
    if let (Some(account), Value::Object(map)) = (account, &mut auth) {
        map.insert("account".into(), account.as_str().into());
    }
    json!({
        "m.homeserver": { "base_url": homeserver_base.as_str() },
        "org.matrix.msc2965.authentication": auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_include_the_oauth_spec_version() {
        let v = versions();
        let list = v["versions"].as_array().unwrap();
        assert!(list.iter().any(|x| x == "v1.15"));
    }

    #[test]
    fn well_known_points_at_the_provider() {
        let hs = Url::parse("http://localhost:8008/").unwrap();
        let issuer = Url::parse("http://localhost:8080/").unwrap();
        let account = Url::parse("http://localhost:8080/account").unwrap();
        assert_eq!(
            client_well_known(&hs, &issuer, Some(&account)),
            json!({
                "m.homeserver": {"base_url": "http://localhost:8008/"},
                "org.matrix.msc2965.authentication": {
                    "issuer": "http://localhost:8080/",
                    "account": "http://localhost:8080/account",
                },
            })
        );
        let bare = client_well_known(&hs, &issuer, None);
        assert!(bare["org.matrix.msc2965.authentication"]
            .get("account")
            .is_none());
    }
}
