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

    /// Is the client registered for `grant` (a [`GrantType`], or its wire form)?
    pub fn allows_grant<G: Copy>(&self, grant: G) -> bool
    where
        GrantType: PartialEq<G>,
    {
        self.grant_types.iter().any(|g| *g == grant)
    }

    /// Is the client registered for `response_type` (a [`ResponseType`], or its wire form)?
    pub fn allows_response_type<R: Copy>(&self, response_type: R) -> bool
    where
        ResponseType: PartialEq<R>,
    {
        self.response_types.iter().any(|r| *r == response_type)
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
