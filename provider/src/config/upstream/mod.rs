//! The `upstream_oauth2` section of the configuration: the upstream OpenID Connect providers
//! people may sign in with ("Continue with …"), checked once at start with a problem per wrong
//! setting (each at its path in the file, like the rest of [`crate::config`]).
//!
//! What the login needs at run time is written to the database by
//! [`crate::core::upstream::sync`]: the provider's columns plus [`StoredSettings`] in its
//! `settings` JSON, so every replica reads the same provider from the same row.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use ulid::Ulid;
use url::Url;

pub mod claims;

use crate::config::Problem;
use crate::domain::protocol::ClientAuthMethod;

/// The section as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpstreamOAuth2Config {
    #[serde(default)]
    pub providers: Vec<UpstreamProviderConfig>,
}

/// One upstream provider as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpstreamProviderConfig {
    /// A ULID chosen by the operator: the provider's identity in the database and in its
    /// callback URL (`/upstream/callback/{id}`), so it must never change.
    pub id: String,
    /// The issuer identifier, compared exactly with discovery's `issuer` and the ID token's `iss`.
    pub issuer: String,
    /// The name on the button ("Continue with …"); defaults to the issuer's host.
    #[serde(default)]
    pub human_name: Option<String>,
    /// `google`, `github`, `gitlab`, `apple`, `facebook`… for clients that show a logo.
    #[serde(default)]
    pub brand_name: Option<String>,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// How the provider authenticates at the upstream token endpoint (OIDC Core §9); the
    /// secret-based methods need `client_secret`, `private_key_jwt` signs with our own key.
    #[serde(default = "default_auth_method")]
    pub token_endpoint_auth_method: ClientAuthMethod,
    /// Space-separated; must contain `openid`.
    #[serde(default = "default_scope")]
    pub scope: String,
    #[serde(default)]
    pub discovery_mode: DiscoveryMode,
    #[serde(default)]
    pub pkce_method: PkceMethod,
    /// Explicit endpoints: required when discovery is disabled, and override discovery's.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub response_mode: ResponseMode,
    /// Ask the userinfo endpoint for more claims after the token exchange.
    #[serde(default)]
    pub fetch_userinfo: bool,
    /// The algorithm the provider signs ID tokens with (OIDC Core §3.1.3.7 item 7: RS256
    /// unless registered otherwise).
    #[serde(default = "default_id_token_alg")]
    pub id_token_signed_response_alg: String,
    #[serde(default)]
    pub claims_imports: claims::ClaimsImports,
    /// The provider's ID in Synapse's `user_external_ids.auth_provider` (`oidc-<idp_id>` for an
    /// `oidc_providers` entry with that `idp_id`; `oidc` for the legacy `oidc_config`):
    /// `provider syn2mas` imports those links as links to this provider.
    #[serde(default)]
    pub synapse_idp_id: Option<String>,
}

fn default_scope() -> String {
    "openid profile email".to_owned()
}

fn default_id_token_alg() -> String {
    "RS256".to_owned()
}

/// How the provider authenticates at an upstream token endpoint when the configuration says
/// nothing: `client_secret_basic`, OIDC Core §9 ("If omitted, the default is
/// client_secret_basic") and RFC 7591 §2.
fn default_auth_method() -> ClientAuthMethod {
    ClientAuthMethod::ClientSecretBasic
}

/// How the provider's endpoints are found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryMode {
    /// OIDC Discovery, checked strictly: the document's `issuer` equals the configured one
    /// (OIDC Discovery §4.3) and every endpoint is https (http only on loopback).
    #[default]
    Oidc,
    /// OIDC Discovery without those checks, for providers that don't follow them.
    Insecure,
    /// No discovery: the endpoints are configured.
    Disabled,
}

/// Whether authorization requests carry a PKCE challenge (RFC 7636, S256 only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PkceMethod {
    /// When discovery says the provider supports S256 (`code_challenge_methods_supported`).
    #[default]
    Auto,
    Always,
    Never,
}

/// How the provider returns the authorization response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// A redirect with the response in the query (RFC 6749 §4.1.2).
    #[default]
    Query,
    /// A POST of an auto-submitted form (OAuth 2.0 Form Post Response Mode).
    FormPost,
}

/// The ID token signature algorithms accepted (asymmetric only: an ID token keyed with the
/// client secret proves less, and `none` proves nothing).
pub const ID_TOKEN_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// What the login reads at run time from the provider's `settings` column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSettings {
    pub discovery_mode: DiscoveryMode,
    pub pkce_method: PkceMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<Url>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<Url>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<Url>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<Url>,
    pub response_mode: ResponseMode,
    pub fetch_userinfo: bool,
    pub id_token_signed_response_alg: String,
    pub claims_imports: claims::ClaimsImports,
}

/// A validated provider, as [`crate::core::upstream::sync`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamProviderSettings {
    pub id: Ulid,
    pub issuer: String,
    pub human_name: Option<String>,
    pub brand_name: Option<String>,
    pub client_id: String,
    /// In plain text here; encrypted in the database.
    pub client_secret: Option<String>,
    pub token_endpoint_auth_method: ClientAuthMethod,
    pub scope: String,
    pub settings: StoredSettings,
    /// Synapse's ID of this provider (`synapse_idp_id`), for `provider syn2mas`.
    pub synapse_idp_id: Option<String>,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// Is the URL's host the local machine?
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An http(s) URL with a host, or a problem at `path`.
fn check_url(p: &mut Vec<Problem>, path: &str, raw: &str) -> Option<Url> {
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) => {
            p.push(problem(path, format!("`{raw}` is not an http(s) URL")));
            None
        }
        Err(e) => {
            p.push(problem(path, format!("`{raw}` is not a valid URL: {e}")));
            None
        }
    }
}

impl UpstreamOAuth2Config {
    /// Checks every provider; the valid ones are returned, the rest reported in `p`.
    pub fn resolve(&self, p: &mut Vec<Problem>) -> Vec<UpstreamProviderSettings> {
        let mut seen = BTreeSet::new();
        let mut seen_synapse_ids = BTreeSet::new();
        let mut out = Vec::new();
        for (i, provider) in self.providers.iter().enumerate() {
            let path = format!("upstream_oauth2.providers[{i}]");
            let before = p.len();
            let id = match Ulid::from_string(&provider.id) {
                Ok(id) if !seen.insert(id) => {
                    p.push(problem(
                        format!("{path}.id"),
                        format!("`{}` is used by another provider", provider.id),
                    ));
                    None
                }
                Ok(id) => Some(id),
                Err(_) => {
                    p.push(problem(
                        format!("{path}.id"),
                        "must be a ULID (26 characters, e.g. 01JAYS74TCG3BTWKADN5Q4518C); \
                         it names the provider for good",
                    ));
                    None
                }
            };
            if let Some(synapse_id) = &provider.synapse_idp_id {
                let at = format!("{path}.synapse_idp_id");
                if synapse_id.is_empty() || synapse_id.contains(char::is_whitespace) {
                    p.push(problem(
                        at,
                        "must be Synapse's `auth_provider` of this provider: `oidc-<idp_id>` \
                         (or `oidc` for Synapse's legacy `oidc_config`)",
                    ));
                } else if !seen_synapse_ids.insert(synapse_id.as_str()) {
                    p.push(problem(
                        at,
                        format!("`{synapse_id}` is mapped by another provider"),
                    ));
                }
            }
            let settings = provider.resolve(&path, p);
            if let (Some(id), Some(settings), true) = (id, settings, p.len() == before) {
                out.push(UpstreamProviderSettings { id, ..settings });
            }
        }
        out
    }
}

impl UpstreamProviderConfig {
    fn resolve(&self, path: &str, p: &mut Vec<Problem>) -> Option<UpstreamProviderSettings> {
        let mode = self.discovery_mode;
        // OIDC Core §3.1.3.7 item 2: the issuer is what the ID token's `iss` must equal, so it
        // is needed whatever the discovery mode.
        let issuer_at = format!("{path}.issuer");
        if let Some(url) = check_url(p, &issuer_at, &self.issuer) {
            if mode == DiscoveryMode::Oidc && url.scheme() != "https" && !is_loopback(&url) {
                p.push(problem(
                    &issuer_at,
                    "must use https with `discovery_mode: oidc` (plain http only on loopback; \
                     `insecure` accepts it)",
                ));
            }
        }
        if self.client_id.trim().is_empty() {
            p.push(problem(format!("{path}.client_id"), "must not be empty"));
        }
        let method = self.token_endpoint_auth_method;
        match (&self.client_secret, method.uses_secret()) {
            (None, true) => p.push(problem(
                format!("{path}.client_secret"),
                format!("required by `{}`", method.as_str()),
            )),
            (Some(_), false) => p.push(problem(
                format!("{path}.client_secret"),
                format!("not used by `{}`: remove it", method.as_str()),
            )),
            (Some(s), true) if s.is_empty() => p.push(problem(
                format!("{path}.client_secret"),
                "must not be empty",
            )),
            _ => {}
        }
        // OIDC Core §3.1.2.1: an OpenID Connect request MUST contain the `openid` scope.
        if !self.scope.split(' ').any(|s| s == "openid") {
            p.push(problem(
                format!("{path}.scope"),
                "must contain `openid` (OIDC Core §3.1.2.1)",
            ));
        }
        if !ID_TOKEN_ALGS.contains(&self.id_token_signed_response_alg.as_str()) {
            p.push(problem(
                format!("{path}.id_token_signed_response_alg"),
                format!(
                    "`{}` is not one of {}",
                    self.id_token_signed_response_alg,
                    ID_TOKEN_ALGS.join(", ")
                ),
            ));
        }
        let mut endpoint = |name: &str, raw: &Option<String>, required: bool| {
            let at = format!("{path}.{name}");
            match raw {
                Some(raw) => check_url(p, &at, raw),
                None if required => {
                    p.push(problem(at, "required when `discovery_mode` is `disabled`"));
                    None
                }
                None => None,
            }
        };
        let disabled = mode == DiscoveryMode::Disabled;
        let authorization_endpoint = endpoint(
            "authorization_endpoint",
            &self.authorization_endpoint,
            disabled,
        );
        let token_endpoint = endpoint("token_endpoint", &self.token_endpoint, disabled);
        let jwks_uri = endpoint("jwks_uri", &self.jwks_uri, disabled);
        let userinfo_endpoint = endpoint(
            "userinfo_endpoint",
            &self.userinfo_endpoint,
            disabled && self.fetch_userinfo,
        );
        self.claims_imports
            .check(&format!("{path}.claims_imports"), p);
        Some(UpstreamProviderSettings {
            id: Ulid::nil(),
            issuer: self.issuer.clone(),
            human_name: self.human_name.clone().filter(|n| !n.trim().is_empty()),
            brand_name: self.brand_name.clone().filter(|n| !n.trim().is_empty()),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            token_endpoint_auth_method: method,
            scope: self.scope.clone(),
            settings: StoredSettings {
                discovery_mode: mode,
                pkce_method: self.pkce_method,
                authorization_endpoint,
                token_endpoint,
                jwks_uri,
                userinfo_endpoint,
                response_mode: self.response_mode,
                fetch_userinfo: self.fetch_userinfo,
                id_token_signed_response_alg: self.id_token_signed_response_alg.clone(),
                claims_imports: self.claims_imports.clone(),
            },
            synapse_idp_id: self.synapse_idp_id.clone(),
        })
    }
}

/// The commented example `provider config generate` writes.
pub const GENERATED_EXAMPLE: &str = r#"# Upstream OpenID Connect providers: "Continue with …" buttons on the login page. Each needs
# a client registered at the provider with the redirect URI <issuer>upstream/callback/<id>.
# upstream_oauth2:
#   providers:
#     - id: 01JAYS74TCG3BTWKADN5Q4518C     # a ULID of your choice; never change it
#       issuer: "https://accounts.example.com/"
#       human_name: Example
#       client_id: "matrix"
#       client_secret: "…"
#       token_endpoint_auth_method: client_secret_basic
#       scope: "openid profile email"
#       claims_imports:
#         localpart: { action: suggest, template: "{{ user.preferred_username | lower }}" }
#         displayname: { action: suggest }
#         email: { action: suggest }
"#;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resolve(value: serde_json::Value) -> Result<Vec<UpstreamProviderSettings>, Vec<String>> {
        let config: UpstreamOAuth2Config = serde_json::from_value(value).unwrap();
        let mut p = Vec::new();
        let out = config.resolve(&mut p);
        if p.is_empty() {
            Ok(out)
        } else {
            Err(p.iter().map(ToString::to_string).collect())
        }
    }

    const ID: &str = "01JAYS74TCG3BTWKADN5Q4518C";

    #[test]
    fn defaults() {
        let out = resolve(json!({"providers": [{
            "id": ID, "issuer": "https://id.example/", "client_id": "c", "client_secret": "s"
        }]}))
        .unwrap();
        let p = &out[0];
        assert_eq!(p.id.to_string(), ID);
        assert_eq!(p.scope, "openid profile email");
        assert_eq!(
            p.token_endpoint_auth_method,
            ClientAuthMethod::ClientSecretBasic
        );
        assert_eq!(p.settings.discovery_mode, DiscoveryMode::Oidc);
        assert_eq!(p.settings.pkce_method, PkceMethod::Auto);
        assert_eq!(p.settings.response_mode, ResponseMode::Query);
        assert_eq!(p.settings.id_token_signed_response_alg, "RS256");
        assert!(!p.settings.fetch_userinfo);
    }

    #[test]
    fn every_problem_has_its_path() {
        let problems = resolve(json!({"providers": [
            {"id": "nope", "issuer": "http://id.example/", "client_id": "", "scope": "profile",
             "token_endpoint_auth_method": "client_secret_post",
             "id_token_signed_response_alg": "none"},
            {"id": ID, "issuer": "https://id.example/", "client_id": "c",
             "token_endpoint_auth_method": "none", "client_secret": "s",
             "discovery_mode": "disabled", "fetch_userinfo": true,
             "token_endpoint": "ftp://x/",
             "claims_imports": {"localpart": {"action": "require", "template": "{{ user."}}},
            {"id": ID, "issuer": "https://id.example/", "client_id": "c",
             "token_endpoint_auth_method": "none"},
        ]}))
        .unwrap_err();
        let expect = [
            "upstream_oauth2.providers[0].id: must be a ULID",
            "upstream_oauth2.providers[0].issuer: must use https",
            "upstream_oauth2.providers[0].client_id: must not be empty",
            "upstream_oauth2.providers[0].client_secret: required by `client_secret_post`",
            "upstream_oauth2.providers[0].scope: must contain `openid`",
            "upstream_oauth2.providers[0].id_token_signed_response_alg: `none` is not one of",
            "upstream_oauth2.providers[1].client_secret: not used by `none`",
            "upstream_oauth2.providers[1].authorization_endpoint: required when",
            "upstream_oauth2.providers[1].token_endpoint: `ftp://x/` is not an http(s) URL",
            "upstream_oauth2.providers[1].jwks_uri: required when",
            "upstream_oauth2.providers[1].userinfo_endpoint: required when",
            "upstream_oauth2.providers[1].claims_imports.localpart.template: ",
            "upstream_oauth2.providers[2].id: `01JAYS74TCG3BTWKADN5Q4518C` is used by another provider",
        ];
        for e in expect {
            assert!(
                problems.iter().any(|t| t.starts_with(e)),
                "missing `{e}` in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn insecure_discovery_accepts_http_and_explicit_endpoints_parse() {
        let out = resolve(json!({"providers": [{
            "id": ID, "issuer": "http://id.example/", "client_id": "c",
            "token_endpoint_auth_method": "none", "discovery_mode": "insecure",
            "pkce_method": "always", "response_mode": "form_post",
            "token_endpoint": "http://id.example/token"
        }]}))
        .unwrap();
        let s = &out[0].settings;
        assert_eq!(s.response_mode, ResponseMode::FormPost);
        assert_eq!(
            s.token_endpoint.as_ref().map(Url::as_str),
            Some("http://id.example/token")
        );
        // The stored form reads back the same.
        let stored = serde_json::to_value(s).unwrap();
        let back: StoredSettings = serde_json::from_value(stored).unwrap();
        assert_eq!(&back, s);
    }
}
