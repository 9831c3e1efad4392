//! The `clients` section: OAuth 2.0 clients known in advance, written to the database by
//! `provider config sync` and at start.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use url::Url;

use super::{check_url, Problem};
use crate::domain::protocol::{wire_values, ClientAuthMethod, GrantType, ResponseType};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaticClientConfig {
    pub client_id: String,
    /// `none`, `client_secret_basic`, `client_secret_post`, `client_secret_jwt` or `private_key_jwt`
    /// ([`ClientAuthMethod`]; read as text so a wrong value is reported at its path).
    pub client_auth_method: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser afterwards.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// The ID token algorithm, `RS256` (default) or `ES256`.
    #[serde(default)]
    pub id_token_signed_response_alg: Option<String>,
    /// Any of [`GrantType`] (read as text, like the method).
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    /// For `private_key_jwt`: the client's public keys, inline...
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// ...or where to fetch them.
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

fn default_grant_types() -> Vec<String> {
    [GrantType::AuthorizationCode, GrantType::RefreshToken]
        .map(|g| g.as_str().to_owned())
        .into()
}

/// A validated static client.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticClient {
    pub client_id: String,
    pub auth_method: ClientAuthMethod,
    pub secret: Option<String>,
    /// The registered metadata (RFC 7591 §2) stored for the client.
    pub metadata: serde_json::Value,
}

/// `clients`: each client checked, reporting problems at `clients[i].…`; the clients without
/// problems.
pub(super) fn resolve(configs: &[StaticClientConfig], p: &mut Vec<Problem>) -> Vec<StaticClient> {
    let mut seen = BTreeSet::new();
    let mut clients = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let path = format!("clients[{i}]");
        let before = p.len();
        if c.client_id.trim().is_empty() || c.client_id.len() > 255 {
            p.push(Problem::new(
                format!("{path}.client_id"),
                "must be 1 to 255 characters",
            ));
        } else if !seen.insert(c.client_id.as_str()) {
            p.push(Problem::new(
                format!("{path}.client_id"),
                format!("`{}` is used by another client", c.client_id),
            ));
        }
        let method = c.client_auth_method.as_str();
        let parsed = method.parse::<ClientAuthMethod>().ok();
        if parsed.is_none() {
            p.push(Problem::new(
                format!("{path}.client_auth_method"),
                format!(
                    "`{method}` is not one of {}",
                    wire_values(ClientAuthMethod::ALL).join(", ")
                ),
            ));
        }
        let needs_secret = parsed.is_some_and(ClientAuthMethod::uses_secret);
        match (&c.client_secret, needs_secret) {
            (None, true) => p.push(Problem::new(
                format!("{path}.client_secret"),
                format!("required by `{method}`"),
            )),
            (Some(_), false) => p.push(Problem::new(
                format!("{path}.client_secret"),
                format!("not used by `{method}`: remove it"),
            )),
            (Some(s), true) if s.len() < 16 => p.push(Problem::new(
                format!("{path}.client_secret"),
                "must be at least 16 characters",
            )),
            _ => {}
        }
        if parsed == Some(ClientAuthMethod::PrivateKeyJwt)
            && c.jwks.is_none() == c.jwks_uri.is_none()
        {
            p.push(Problem::new(
                path.clone(),
                "`private_key_jwt` needs exactly one of `jwks` or `jwks_uri`",
            ));
        }
        if let Some(uri) = &c.jwks_uri {
            check_url(p, &format!("{path}.jwks_uri"), uri);
        }
        for (j, uri) in c.redirect_uris.iter().enumerate() {
            let at = format!("{path}.redirect_uris[{j}]");
            // RFC 6749 §3.1.2: an absolute URI without a fragment. Native clients may use
            // private-use schemes (RFC 8252 §7.1), so any scheme is accepted here.
            match Url::parse(uri) {
                Ok(url) if url.fragment().is_some() => p.push(Problem::new(
                    at,
                    "must not contain a fragment (RFC 6749 §3.1.2)",
                )),
                Ok(_) => {}
                Err(e) => p.push(Problem::new(at, format!("`{uri}` is not a valid URI: {e}"))),
            }
        }
        for (j, uri) in c.post_logout_redirect_uris.iter().enumerate() {
            let at = format!("{path}.post_logout_redirect_uris[{j}]");
            // RP-Initiated Logout §3: absolute URIs, compared like redirect URIs.
            match Url::parse(uri) {
                Ok(url) if url.fragment().is_some() => {
                    p.push(Problem::new(at, "must not contain a fragment"))
                }
                Ok(_) => {}
                Err(e) => p.push(Problem::new(at, format!("`{uri}` is not a valid URI: {e}"))),
            }
        }
        if let Some(alg) = &c.id_token_signed_response_alg {
            let algs = crate::domain::client_registration::ID_TOKEN_ALGS;
            if !algs.contains(&alg.as_str()) {
                p.push(Problem::new(
                    format!("{path}.id_token_signed_response_alg"),
                    format!("`{alg}` is not one of {}", algs.join(", ")),
                ));
            }
        }
        for (j, grant) in c.grant_types.iter().enumerate() {
            if grant.parse::<GrantType>().is_err() {
                p.push(Problem::new(
                    format!("{path}.grant_types[{j}]"),
                    format!(
                        "`{grant}` is not one of {}",
                        wire_values(GrantType::ALL).join(", ")
                    ),
                ));
            }
        }
        if c.has_grant(GrantType::AuthorizationCode) && c.redirect_uris.is_empty() {
            p.push(Problem::new(
                format!("{path}.redirect_uris"),
                "the authorization_code grant needs at least one redirect URI",
            ));
        }
        match parsed {
            Some(method) if p.len() == before => clients.push(c.to_static_client(method)),
            _ => {}
        }
    }
    clients
}

impl StaticClientConfig {
    /// Is `grant` among the client's `grant_types`?
    pub fn has_grant(&self, grant: GrantType) -> bool {
        self.grant_types.iter().any(|g| g.parse() == Ok(grant))
    }

    /// The client, once checked: `method` is its `client_auth_method`, read.
    fn to_static_client(&self, method: ClientAuthMethod) -> StaticClient {
        let mut metadata = serde_json::json!({
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "grant_types": self.grant_types,
            "response_types": if self.has_grant(GrantType::AuthorizationCode) {
                vec![ResponseType::Code]
            } else {
                vec![]
            },
            "token_endpoint_auth_method": method,
        });
        if let serde_json::Value::Object(map) = &mut metadata {
            if let Some(name) = &self.client_name {
                map.insert("client_name".into(), name.clone().into());
            }
            if let Some(jwks) = &self.jwks {
                map.insert("jwks".into(), jwks.clone());
            }
            if let Some(uri) = &self.jwks_uri {
                map.insert("jwks_uri".into(), uri.clone().into());
            }
            if let Some(alg) = &self.id_token_signed_response_alg {
                map.insert("id_token_signed_response_alg".into(), alg.clone().into());
            }
        }
        StaticClient {
            client_id: self.client_id.clone(),
            auth_method: method,
            secret: self.client_secret.clone(),
            metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, test_support::generated};

    #[test]
    fn static_clients_may_ask_for_es256() {
        let env = vec![(
            "PROVIDER__CLIENTS__0__ID_TOKEN_SIGNED_RESPONSE_ALG".to_owned(),
            "ES256".to_owned(),
        )];
        let (_, settings) = parse(&generated(), env, Path::new(".")).unwrap();
        assert_eq!(
            settings.clients[0].metadata["id_token_signed_response_alg"],
            "ES256"
        );
        let env = vec![(
            "PROVIDER__CLIENTS__0__ID_TOKEN_SIGNED_RESPONSE_ALG".to_owned(),
            "none".to_owned(),
        )];
        let p = parse(&generated(), env, Path::new(".")).unwrap_err();
        assert_eq!(p[0].path, "clients[0].id_token_signed_response_alg");
    }
}
