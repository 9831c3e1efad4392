//! `GET /authorize`: the authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2).
//!
//! The request is checked in two stages:
//! 1. The client and its redirect URI. Until both are trusted, errors are shown to the user as a
//!    page and never redirected (RFC 6749 §4.1.2.1, RFC 9700 §4.1.3).
//! 2. Everything else, by the named checks of [`CHECKS`], in order. The table says which
//!    endpoint runs which check, so the device authorization endpoint shares the same checks over
//!    the same [`Params`]. Their errors go back to the client's redirect URI in the requested
//!    response mode, with `state` and `iss` (RFC 9207); for a dynamically registered client,
//!    only by the user's choice on a page ([`error_to_client`], RFC 9700 §4.11.2).
//!
//! 3. A request that passes is stored as an authorization grant. A browser that nobody is signed
//!    in on goes straight to the sign-in page, carrying the request as a typed continuation
//!    ([`AfterSignIn::Grant`]); after the sign-in, the consent step ([`consent::get`]) decides and
//!    answers. So a first login walks `/authorize` → sign-in → consent → client, each once. A
//!    browser with a session has [`consent::proceed`] decide at once: the consent page, the
//!    code, or a new sign-in.

pub mod consent;
pub mod respond;

use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use axum_extra::extract::PrivateCookieJar;

use crate::domain::after_sign_in::AfterSignIn;
use crate::domain::protocol::ResponseMode;
use crate::http::kit;
use crate::{
    domain::{
        client_metadata::RegisteredMetadata,
        pkce,
        protocol::{ErrorCode, GrantType, Prompt, Prompts, ResponseType},
        redirect_uri,
        scope::Scope,
    },
    http::AppState,
    storage::NewAuthorizationGrant,
};
use respond::{error_to_client, OAuthError};

/// The endpoints that run the shared request checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /authorize` (RFC 6749 §4.1.1).
    Authorization,
    /// `POST /oauth2/device` (RFC 8628 §3.1).
    DeviceAuthorization,
}

use crate::http::kit::params::Params;

/// The response mode of a request (OAuth 2.0 Multiple Response Type Encoding Practices §2.1,
/// OAuth 2.0 Form Post Response Mode §2); absent is `query`, the default for
/// `response_type=code`.
pub fn response_mode(value: Option<&str>) -> Result<ResponseMode, OAuthError> {
    match value {
        None => Ok(ResponseMode::Query),
        Some(raw) => raw.parse().map_err(|_| {
            OAuthError::new(
                ErrorCode::InvalidRequest,
                format!("response_mode `{raw}` is not supported; use query, fragment or form_post"),
            )
        }),
    }
}

/// A check over a request whose client is known.
pub type Check = fn(&Params, &RegisteredMetadata, Endpoint) -> Result<(), OAuthError>;

use Endpoint::{Authorization, DeviceAuthorization};

/// The checks after the client (and redirect URI) are trusted, in the order they run, with the
/// endpoints each applies to.
pub const CHECKS: &[(&str, Check, &[Endpoint])] = &[
    (
        "parameters_once",
        check_parameters_once,
        &[Authorization, DeviceAuthorization],
    ),
    (
        "no_request_object",
        check_no_request_object,
        &[Authorization],
    ),
    ("response_type", check_response_type, &[Authorization]),
    (
        "grant_type_allowed",
        check_grant_type_allowed,
        &[Authorization, DeviceAuthorization],
    ),
    ("pkce", check_pkce, &[Authorization]),
    ("scope", check_scope, &[Authorization, DeviceAuthorization]),
    ("prompt", check_prompt, &[Authorization]),
    ("max_age", check_max_age, &[Authorization]),
];

/// Runs every check of [`CHECKS`] that applies to `endpoint`; the first failure wins.
pub fn run_checks(
    params: &Params,
    metadata: &RegisteredMetadata,
    endpoint: Endpoint,
) -> Result<(), OAuthError> {
    CHECKS
        .iter()
        .filter(|(_, _, endpoints)| endpoints.contains(&endpoint))
        .try_for_each(|(_, check, _)| check(params, metadata, endpoint))
}

/// RFC 6749 §3.1: no parameter more than once.
fn check_parameters_once(
    params: &Params,
    _: &RegisteredMetadata,
    _: Endpoint,
) -> Result<(), OAuthError> {
    match params.repeated_names().first() {
        Some(name) => Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            format!("the `{name}` parameter is repeated (RFC 6749 §3.1)"),
        )),
        None => Ok(()),
    }
}

/// OIDC Core §6: request objects are not supported (discovery says so).
fn check_no_request_object(
    params: &Params,
    _: &RegisteredMetadata,
    _: Endpoint,
) -> Result<(), OAuthError> {
    if params.get("request").is_some() {
        return Err(OAuthError::new(
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        ));
    }
    if params.get("request_uri").is_some() {
        return Err(OAuthError::new(
            ErrorCode::RequestUriNotSupported,
            "request_uri is not supported",
        ));
    }
    Ok(())
}

/// RFC 6749 §4.1.1 / §4.1.2.1: only `code` (MSC2964: the authorization code flow), and only for
/// clients registered for it (RFC 7591 §2).
fn check_response_type(
    params: &Params,
    metadata: &RegisteredMetadata,
    _: Endpoint,
) -> Result<(), OAuthError> {
    match params.get("response_type").map(str::parse::<ResponseType>) {
        None => Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "response_type is required",
        )),
        Some(Ok(code)) if metadata.allows_response_type(code) => Ok(()),
        Some(Ok(_)) => Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client is not registered for response_type=code",
        )),
        Some(Err(other)) => Err(OAuthError::new(
            ErrorCode::UnsupportedResponseType,
            format!("response_type `{}` is not supported; use code", other.value),
        )),
    }
}

/// RFC 6749 §4.1.2.1 / RFC 8628 §3.2: the client must be registered for the grant it starts.
fn check_grant_type_allowed(
    _: &Params,
    metadata: &RegisteredMetadata,
    endpoint: Endpoint,
) -> Result<(), OAuthError> {
    let grant = match endpoint {
        Authorization => GrantType::AuthorizationCode,
        DeviceAuthorization => GrantType::DeviceCode,
    };
    if metadata.allows_grant(grant) {
        Ok(())
    } else {
        Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            format!("this client is not registered for the {grant} grant"),
        ))
    }
}

/// RFC 7636 §4.3 with MSC2964: S256 on every request, `plain` refused.
fn check_pkce(params: &Params, _: &RegisteredMetadata, _: Endpoint) -> Result<(), OAuthError> {
    pkce::check_challenge(
        params.get("code_challenge_method"),
        params.get("code_challenge"),
    )
    .map_err(|e| OAuthError::new(ErrorCode::InvalidRequest, e.to_string()))
}

/// RFC 6749 §3.3: a well-formed, non-empty scope, and MSC2967's rules for the Matrix tokens in
/// it (one device, which needs the API scope; valid device IDs; one spelling). Both endpoints
/// here are interactive grants, where Matrix scopes are allowed. (Whether this user may have
/// `urn:synapse:admin:*` is decided once they are known, at consent.)
fn check_scope(params: &Params, _: &RegisteredMetadata, _: Endpoint) -> Result<(), OAuthError> {
    let raw = params
        .get("scope")
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidScope, "scope is required"))?;
    let scope =
        Scope::parse(raw).map_err(|e| OAuthError::new(ErrorCode::InvalidScope, e.to_string()))?;
    scope
        .matrix()
        .map(|_| ())
        .map_err(|e| OAuthError::new(ErrorCode::InvalidScope, e.to_string()))
}

/// The `prompt` of a request (OIDC Core §3.1.2.1), read once: unknown values and `none` with
/// others are `invalid_request`.
pub fn prompts(params: &Params) -> Result<Prompts, OAuthError> {
    Prompts::parse_param(params.get("prompt"))
        .map_err(|e| OAuthError::new(ErrorCode::InvalidRequest, e.to_string()))
}

/// OIDC Core §3.1.2.1: known prompt values; `none` only on its own ([`Prompts`]).
fn check_prompt(params: &Params, _: &RegisteredMetadata, _: Endpoint) -> Result<(), OAuthError> {
    prompts(params).map(|_| ())
}

/// The `prompt` values `/authorize` offers (OIDC Discovery §3 `prompt_values_supported`), in
/// table order: `create` only while registration is open (Initiating User Registration via
/// OpenID Connect 1.0 §4). `select_account` is accepted but not offered: there is one account
/// per browser session, so there is nothing to choose.
pub fn offered_prompts(registration: bool) -> Vec<Prompt> {
    Prompt::ALL
        .iter()
        .copied()
        .filter(|p| match p {
            Prompt::Create => registration,
            Prompt::SelectAccount => false,
            Prompt::None | Prompt::Login | Prompt::Consent => true,
        })
        .collect()
}

/// OIDC Core §3.1.2.1: `max_age` is a non-negative number of seconds.
fn check_max_age(params: &Params, _: &RegisteredMetadata, _: Endpoint) -> Result<(), OAuthError> {
    match params.get("max_age") {
        Some(raw) if raw.parse::<u32>().is_err() => Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "max_age must be a non-negative number of seconds",
        )),
        _ => Ok(()),
    }
}

/// `GET /authorize`.
pub async fn get(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.as_deref().unwrap_or(""));
    let page = |status: StatusCode, title: &str, detail: String, code: Option<&str>| {
        kit::error_page(
            &state.templates,
            &state.chrome(),
            status,
            title,
            &detail,
            code,
        )
    };

    // Stage 1: the client and the redirect URI (errors shown, never redirected).
    if params.is_repeated("client_id") || params.is_repeated("redirect_uri") {
        return page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in request",
            "The request names its application or its return address more than once.".into(),
            Some(ErrorCode::InvalidRequest.as_str()),
        );
    }
    let Some(client_id) = params.get("client_id") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in request",
            "The request doesn't say which application is asking (client_id is missing).".into(),
            Some(ErrorCode::InvalidRequest.as_str()),
        );
    };
    let client = match state.storage.reader().await {
        Ok(mut repo) => repo.clients().find_by_client_id(client_id).await,
        Err(e) => Err(e),
    };
    let client = match client {
        Ok(Some(client)) => client,
        Ok(None) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                format!("No application is registered here as `{client_id}`."),
                Some(ErrorCode::InvalidClient.as_str()),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "authorize: can't look up the client");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service can't process requests right now. Try again in a moment."
                    .into(),
                None,
            );
        }
    };
    let metadata = RegisteredMetadata::from_json(&client.metadata);
    // OIDC Core §3.1.2.1: redirect_uri is REQUIRED, and must match a registered one exactly
    // (RFC 9700 §4.1.3; loopback redirects on any port, RFC 8252 §7.3).
    let Some(redirect) = params.get("redirect_uri") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in request",
            "The request doesn't say where to return (redirect_uri is missing).".into(),
            Some(ErrorCode::InvalidRequest.as_str()),
        );
    };
    if redirect_uri::find_match(&metadata.redirect_uris, redirect).is_none() {
        return page(
            StatusCode::BAD_REQUEST,
            "Invalid return address",
            format!("`{redirect}` is not a return address registered for this application, so you are not sent there."),
            Some(ErrorCode::InvalidRequest.as_str()),
        );
    }
    let redirect = redirect.to_owned();
    let client_state = params.get("state").map(str::to_owned);

    // Stage 2: errors go back to the client (by the user's choice if it registered itself).
    let respond = |mode: ResponseMode, error: OAuthError| {
        error_to_client(
            &state,
            &client,
            &redirect,
            mode,
            &error,
            client_state.as_deref(),
        )
    };
    let mode = match response_mode(params.get("response_mode")) {
        Ok(mode) => mode,
        Err(error) => return respond(ResponseMode::Query, error),
    };
    if let Err(error) = run_checks(&params, &metadata, Endpoint::Authorization) {
        return respond(mode, error);
    }

    // Stage 3: remember the request, then sign-in or the decision (module docs, 3.). Without a
    // session in this browser there is nothing to decide yet: without a signed-in user the one
    // decision (`grants::decide`) can only be "sign in".
    let cookie = kit::load_cookie(&state, jar);
    let signed_out = cookie.session_id().is_none();
    // Checked by `run_checks`: one reading of the parameter, carried typed from here on.
    let prompts = match prompts(&params) {
        Ok(prompts) => prompts,
        Err(error) => return respond(mode, error),
    };
    if signed_out && prompts.contains(Prompt::None) {
        // OIDC Core §3.1.2.6: `prompt=none` and nobody signed in: `login_required`, and nothing
        // is stored (no page may serve this request later).
        let error = OAuthError::new(ErrorCode::LoginRequired, "the user is not signed in");
        return (cookie.into_jar(), respond(mode, error)).into_response();
    }
    let scope = params
        .get("scope")
        .and_then(|s| Scope::parse(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let max_age = params.get("max_age").and_then(|m| m.parse::<i64>().ok());
    let stored = async {
        let mut repo = state.storage.begin().await?;
        let grant = repo
            .authorization_grants()
            .add(NewAuthorizationGrant {
                client_id: client.id,
                redirect_uri: &redirect,
                scope: &scope,
                state: client_state.as_deref(),
                nonce: params.get("nonce"),
                response_mode: mode,
                code_challenge: params.get("code_challenge"),
                code_challenge_method: params.get("code_challenge_method"),
                max_age,
                prompt: prompts,
                login_hint: params.get("login_hint"),
                code_hash: None,
            })
            .await?;
        repo.commit().await?;
        Ok::<_, crate::storage::StorageError>(grant)
    }
    .await;
    match stored {
        Ok(grant) if signed_out => {
            let response = kit::sign_in_first(
                &state,
                &AfterSignIn::Grant(grant.id),
                prompts.contains(Prompt::Create),
            );
            (cookie.into_jar(), response).into_response()
        }
        Ok(grant) => consent::proceed(&state, cookie, grant, client).await,
        Err(e) => {
            tracing::error!(error = %e, "authorize: can't store the request");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "The sign-in service can't process requests right now. Try again in a moment."
                    .into(),
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn metadata() -> RegisteredMetadata {
        RegisteredMetadata::from_json(&json!({
            "redirect_uris": ["https://app.example/cb"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
    }

    const GOOD: &str = "client_id=c&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code\
        &scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";

    fn check(query: &str) -> Result<(), OAuthError> {
        run_checks(&Params::parse(query), &metadata(), Endpoint::Authorization)
    }

    fn error_of(query: &str) -> &'static str {
        check(query).unwrap_err().error.as_str()
    }

    #[test]
    fn a_good_request_passes_every_check() {
        assert_eq!(check(GOOD), Ok(()));
    }

    #[test]
    fn each_check_refuses_with_its_error() {
        assert_eq!(error_of(&format!("{GOOD}&scope=x")), "invalid_request");
        assert_eq!(
            error_of(&format!("{GOOD}&request=eyJ")),
            "request_not_supported"
        );
        assert_eq!(
            error_of(&format!("{GOOD}&request_uri=urn:x")),
            "request_uri_not_supported"
        );
        assert_eq!(
            error_of(&GOOD.replace("response_type=code", "response_type=token")),
            "unsupported_response_type"
        );
        assert_eq!(
            error_of(&GOOD.replace("response_type=code", "")),
            "invalid_request"
        );
        assert_eq!(error_of(&GOOD.replace("S256", "plain")), "invalid_request");
        assert_eq!(
            error_of(&GOOD.replace("&code_challenge_method=S256", "")),
            "invalid_request"
        );
        assert_eq!(
            error_of(&GOOD.replace("scope=openid", "scope=")),
            "invalid_scope"
        );
        assert_eq!(
            error_of(&GOOD.replace("scope=openid", "scope=a%22b")),
            "invalid_scope"
        );
        assert_eq!(
            error_of(&format!("{GOOD}&prompt=none%20login")),
            "invalid_request"
        );
        assert_eq!(
            error_of(&format!("{GOOD}&prompt=sometimes")),
            "invalid_request"
        );
        assert_eq!(error_of(&format!("{GOOD}&max_age=-1")), "invalid_request");
        assert_eq!(check(&format!("{GOOD}&prompt=consent&max_age=0")), Ok(()));
    }

    #[test]
    fn a_client_must_be_registered_for_the_grant() {
        let implicit_only = RegisteredMetadata::from_json(&json!({
            "redirect_uris": ["https://app.example/cb"],
            "grant_types": ["implicit"],
            "response_types": ["token"],
        }));
        let e = run_checks(
            &Params::parse(GOOD),
            &implicit_only,
            Endpoint::Authorization,
        )
        .unwrap_err();
        assert_eq!(e.error, ErrorCode::UnauthorizedClient);
        let e = run_checks(
            &Params::parse("scope=openid"),
            &metadata(),
            Endpoint::DeviceAuthorization,
        )
        .unwrap_err();
        assert_eq!(e.error, ErrorCode::UnauthorizedClient);
    }

    #[test]
    fn response_mode_and_prompt_are_read_once() {
        assert_eq!(response_mode(None), Ok(ResponseMode::Query));
        assert_eq!(response_mode(Some("form_post")), Ok(ResponseMode::FormPost));
        // Case-sensitive: the value is not a known mode.
        assert_eq!(
            response_mode(Some("Fragment")).unwrap_err().error,
            ErrorCode::InvalidRequest
        );
        let read = |q: &str| prompts(&Params::parse(q));
        assert_eq!(
            read("prompt=login%20%20consent").unwrap().to_string(),
            "login consent"
        );
        assert_eq!(read(""), Ok(Prompts::NONE_GIVEN));
        assert_eq!(
            read("prompt=none%20login").unwrap_err().error,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            offered_prompts(true),
            [Prompt::None, Prompt::Login, Prompt::Consent, Prompt::Create]
        );
        assert!(!offered_prompts(false).contains(&Prompt::Create));
    }

    #[test]
    fn the_table_is_explicit_about_endpoints() {
        let device: Vec<&str> = CHECKS
            .iter()
            .filter(|(_, _, e)| e.contains(&Endpoint::DeviceAuthorization))
            .map(|(name, _, _)| *name)
            .collect();
        assert_eq!(device, ["parameters_once", "grant_type_allowed", "scope"]);
    }

    proptest! {
        /// No query string makes the checks panic.
        #[test]
        fn never_panics(query in "\\PC{0,200}") {
            let _ = check(&query);
            let _ = response_mode(Params::parse(&query).get("response_mode"));
        }

        /// Any parameter repeated is refused.
        #[test]
        fn repeated_parameters_are_refused(i in 0usize..6) {
            let name = ["response_type", "scope", "code_challenge", "code_challenge_method", "state", "nonce"][i];
            let query = format!("{GOOD}&{name}=x&{name}=y");
            prop_assert_eq!(check(&query).unwrap_err().error, ErrorCode::InvalidRequest);
        }
    }
}
