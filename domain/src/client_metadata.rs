//! The parts of a registered client's metadata (RFC 7591 §2) the endpoints read, with the RFC's
//! defaults for absent members.

use serde::Deserialize;

/// A lenient view over stored metadata: unknown members are ignored, absent ones defaulted.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RegisteredMetadata {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// RFC 7591 §2: defaults to `["authorization_code"]`.
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    /// RFC 7591 §2: defaults to `["code"]`.
    #[serde(default = "default_response_types")]
    pub response_types: Vec<String>,
    #[serde(default)]
    pub client_name: Option<String>,
}

fn default_grant_types() -> Vec<String> {
    vec!["authorization_code".into()]
}

fn default_response_types() -> Vec<String> {
    vec!["code".into()]
}

impl RegisteredMetadata {
    /// Reads stored metadata; malformed metadata reads as a client with nothing registered, so
    /// every check refuses it rather than guessing.
    pub fn from_json(value: &serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or(Self {
            redirect_uris: Vec::new(),
            grant_types: Vec::new(),
            response_types: Vec::new(),
            client_name: None,
        })
    }

    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    pub fn allows_response_type(&self, response_type: &str) -> bool {
        self.response_types.iter().any(|r| r == response_type)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc7591_defaults_and_malformed_metadata() {
        let m =
            RegisteredMetadata::from_json(&json!({"redirect_uris": ["https://a/cb"], "extra": 1}));
        assert!(m.allows_grant("authorization_code"));
        assert!(!m.allows_grant("refresh_token"));
        assert!(m.allows_response_type("code"));
        let broken = RegisteredMetadata::from_json(&json!({"redirect_uris": "nope"}));
        assert!(broken.redirect_uris.is_empty());
        assert!(!broken.allows_grant("authorization_code"));
    }
}
