//! Authorization server metadata: OpenID Connect Discovery 1.0 §3 and RFC 8414 §2.
//!
//! Only endpoints this server actually serves are listed; `tests/discovery.rs` checks every
//! advertised URL against the router.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    config::Settings,
    domain::{
        pkce,
        protocol::{ClientAuthMethod, GrantType, Prompt, ResponseMode, ResponseType},
    },
    endpoints,
    http::AppState,
};

/// The fixed scope values this provider grants (OIDC Core §5.4, MSC2967 in both forms).
pub const SCOPES: &[&str] = &[
    "openid",
    "email",
    crate::domain::scope::API_SCOPE,
    crate::domain::scope::UNSTABLE_API_SCOPE,
    crate::domain::scope::SYNAPSE_ADMIN_SCOPE,
    crate::domain::scope::MAS_ADMIN_SCOPE,
];

/// The claims of the ID token (OIDC Core §2, §3.1.3.6) and userinfo (§5.3.2, §5.4).
pub const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "c_hash",
    "sid",
    "email",
    "email_verified",
];

/// The metadata document. Optional members are left out when `None`.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderMetadata {
    /// RFC 8414 §2 / OIDC Discovery §3: REQUIRED, identical to the configured issuer.
    pub issuer: String,
    /// REQUIRED (OIDC Discovery §3, RFC 8414 §2).
    pub authorization_endpoint: String,
    /// RFC 8414 §2: REQUIRED unless only the implicit grant is supported.
    pub token_endpoint: String,
    /// RFC 8414 §2.
    pub grant_types_supported: &'static [GrantType],
    /// RFC 8414 §2.
    pub token_endpoint_auth_methods_supported: &'static [ClientAuthMethod],
    /// RFC 8414 §2 / OIDC Discovery §3: the algorithms of JWT client assertions
    /// (`client_secret_jwt`: HS256; `private_key_jwt`: RS256, ES256; RFC 7523 §2.2).
    pub token_endpoint_auth_signing_alg_values_supported: &'static [&'static str],
    /// RFC 8414 §2 (RFC 7009); Matrix clients require it (MSC2965).
    pub revocation_endpoint: String,
    /// RFC 8414 §2: public clients (`none`) may revoke too (RFC 7009 §5).
    pub revocation_endpoint_auth_methods_supported: &'static [ClientAuthMethod],
    /// RFC 8414 §2 (RFC 7662).
    pub introspection_endpoint: String,
    /// RFC 8414 §2: confidential clients, and `Bearer` (an access token type) for the
    /// homeserver's shared secret.
    pub introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    /// OIDC Discovery §3: RECOMMENDED (OIDC Core §5.3).
    pub userinfo_endpoint: String,
    /// RP-Initiated Logout 1.0 §2.1.
    pub end_session_endpoint: String,
    /// REQUIRED (OIDC Discovery §3).
    pub jwks_uri: String,
    /// RFC 8414 §2 (RFC 7591 §3): OPTIONAL in general, required by Matrix clients (MSC2965,
    /// MSC2966: they register themselves before their first authorization request).
    pub registration_endpoint: String,
    /// RFC 8628 §4; MSC4341: Matrix clients find the device authorization grant by it.
    pub device_authorization_endpoint: String,
    /// OIDC Discovery §3: REQUIRED. Only the authorization code flow is offered (MSC2964).
    pub response_types_supported: &'static [ResponseType],
    /// RFC 8414 §2; Matrix clients require query and fragment (MSC2965).
    pub response_modes_supported: &'static [ResponseMode],
    /// RFC 8414 §2: S256 only (RFC 7636, MSC2964; `plain` is refused).
    pub code_challenge_methods_supported: Vec<&'static str>,
    /// RFC 9207 §3: authorization responses carry `iss`.
    pub authorization_response_iss_parameter_supported: bool,
    /// OIDC Discovery §3: REQUIRED. Subjects are the same for every client.
    pub subject_types_supported: Vec<&'static str>,
    /// OIDC Discovery §3: REQUIRED, and RS256 MUST be included (OIDC Core §15.1).
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
    /// RFC 8414 §2 / OIDC Discovery §3 (RECOMMENDED): the scopes a client may ask for. Device
    /// scopes (MSC2967) are open-ended (`urn:matrix:client:device:<id>`), so they are not listed
    /// ("servers MAY choose not to advertise some supported scope values").
    pub scopes_supported: &'static [&'static str],
    /// OIDC Discovery §3 (RECOMMENDED): the claims the ID token and userinfo may carry.
    pub claims_supported: &'static [&'static str],
    /// OIDC Discovery §3: the `prompt` values `/authorize` understands; `create` (Initiating
    /// User Registration via OpenID Connect 1.0 §4) only while registration is open. Matrix
    /// clients look for `create` to offer "Create account" (MSC2965).
    pub prompt_values_supported: Vec<Prompt>,
    /// MSC4191: where users manage their account (MSC2965 clients link to it).
    pub account_management_uri: String,
    /// MSC4191: the `action` values the account page serves (deactivation only when
    /// `account.account_deactivation_allowed`).
    pub account_management_actions_supported: Vec<&'static str>,
    /// OIDC Discovery §3: the `claims` request parameter (OIDC Core §5.5) is not supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims_parameter_supported: Option<bool>,
    /// OIDC Discovery §3: request objects (OIDC Core §6) are not supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_parameter_supported: Option<bool>,
    /// OIDC Discovery §3: defaults to true, which would promise `request_uri` support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_uri_parameter_supported: Option<bool>,
}

impl ProviderMetadata {
    pub fn new(settings: &Settings) -> Self {
        let base = &settings.public_base;
        Self {
            issuer: settings.issuer.to_string(),
            authorization_endpoint: endpoints::url(base, endpoints::AUTHORIZE).to_string(),
            token_endpoint: endpoints::url(base, endpoints::TOKEN).to_string(),
            grant_types_supported: super::token::GRANT_TYPES,
            token_endpoint_auth_methods_supported: super::token::AUTH_METHODS,
            token_endpoint_auth_signing_alg_values_supported:
                super::client_auth::ASSERTION_SIGNING_ALGS,
            revocation_endpoint: endpoints::url(base, endpoints::REVOCATION).to_string(),
            revocation_endpoint_auth_methods_supported: super::revocation::AUTH_METHODS,
            introspection_endpoint: endpoints::url(base, endpoints::INTROSPECTION).to_string(),
            introspection_endpoint_auth_methods_supported: super::introspection::auth_methods(),
            userinfo_endpoint: endpoints::url(base, endpoints::USERINFO).to_string(),
            end_session_endpoint: endpoints::url(base, endpoints::END_SESSION).to_string(),
            jwks_uri: endpoints::url(base, endpoints::JWKS).to_string(),
            registration_endpoint: endpoints::url(base, endpoints::REGISTRATION).to_string(),
            device_authorization_endpoint: endpoints::url(base, endpoints::DEVICE_AUTHORIZATION)
                .to_string(),
            response_types_supported: ResponseType::ALL,
            response_modes_supported: ResponseMode::ALL,
            code_challenge_methods_supported: vec![pkce::S256],
            authorization_response_iss_parameter_supported: true,
            subject_types_supported: vec!["public"],
            id_token_signing_alg_values_supported: settings
                .keystore
                .algorithms()
                .into_iter()
                .map(|a| a.as_str())
                .collect(),
            scopes_supported: SCOPES,
            claims_supported: CLAIMS,
            prompt_values_supported: super::authorize::offered_prompts(settings.registration),
            account_management_uri: endpoints::url(base, endpoints::ACCOUNT).to_string(),
            account_management_actions_supported: crate::core::accounts::supported_actions(
                &settings.account,
            ),
            claims_parameter_supported: Some(false),
            request_parameter_supported: Some(false),
            request_uri_parameter_supported: Some(false),
        }
    }
}

/// `GET /.well-known/openid-configuration` and `GET /.well-known/oauth-authorization-server`.
/// The document is serialised once at start-up: this is a hot path for every client start.
pub async fn get(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        state.documents.metadata.clone(),
    )
        .into_response()
}
