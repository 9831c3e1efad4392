//! The parts of a registered client's metadata (RFC 7591 §2) the endpoints read, with the RFC's
//! defaults for absent members.

use serde::Deserialize;

use crate::protocol::{known_values, GrantType, ResponseType};

/// A lenient view over stored metadata: unknown members are ignored, absent ones defaulted.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RegisteredMetadata {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// RFC 7591 §2: defaults to `["authorization_code"]`; values this server doesn't know are
    /// left out (MSC2966: ignored).
    #[serde(default = "default_grant_types", deserialize_with = "known_values")]
    pub grant_types: Vec<GrantType>,
    /// RFC 7591 §2: defaults to `["code"]`; unknown values left out.
    #[serde(default = "default_response_types", deserialize_with = "known_values")]
    pub response_types: Vec<ResponseType>,
    #[serde(default)]
    pub client_name: Option<String>,
}

fn default_grant_types() -> Vec<GrantType> {
    vec![GrantType::AuthorizationCode]
}

fn default_response_types() -> Vec<ResponseType> {
    vec![ResponseType::Code]
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

    /// Is the client registered for `grant`?
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// Is the client registered for `response_type`?
    pub fn allows_response_type(&self, response_type: ResponseType) -> bool {
        self.response_types.contains(&response_type)
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
        assert!(m.allows_grant(GrantType::AuthorizationCode));
        assert!(!m.allows_grant(GrantType::RefreshToken));
        assert!(m.allows_response_type(ResponseType::Code));
        let broken = RegisteredMetadata::from_json(&json!({"redirect_uris": "nope"}));
        assert!(broken.redirect_uris.is_empty());
        assert!(!broken.allows_grant(GrantType::AuthorizationCode));
    }
}
