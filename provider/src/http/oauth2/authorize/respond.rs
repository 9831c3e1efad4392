//! Answering the client at its redirect URI (RFC 6749 §4.1.2, §4.1.2.1), for `/authorize` and
//! the consent step alike: the one encoding of an authorization response in the requested
//! response mode, with RFC 9207 `iss` ([`encode_response`]); sending it ([`respond_to_client`]);
//! and an error, sent at once or shown first ([`error_to_client`], RFC 9700 §4.11.2).

use axum::{http::StatusCode, response::Response};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::{
    core::clients,
    domain::protocol::{ErrorCode, ResponseMode},
    http::{kit, AppState},
    storage::Client,
};

/// An OAuth error for the client (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub error: ErrorCode,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }
}

/// An authorization response (a code, or an error) encoded for the client's redirect URI in a
/// response mode, with `iss` (RFC 9207 §2: in every authorization response, errors included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub mode: ResponseMode,
    /// Where the browser goes: the redirect URI with the fields in its query (`query`) or
    /// fragment (`fragment`), OAuth 2.0 Multiple Response Type Encoding Practices §2.1; for
    /// `form_post`, the redirect URI itself, which the form posts to (Form Post Response Mode
    /// §2).
    pub url: Url,
    /// Every field, `iss` last (what a `form_post` form carries).
    pub fields: Vec<(String, String)>,
}

/// The one encoding of an authorization response for the client's redirect URI (see
/// [`Encoded`]); `None` when `redirect` is not a URL. `redirect` must be one the client
/// registered (checked before any call).
pub fn encode_response(
    state: &AppState,
    redirect: &str,
    mode: ResponseMode,
    fields: &[(&str, &str)],
) -> Option<Encoded> {
    let mut url = Url::parse(redirect).ok()?;
    let issuer = state.settings.issuer.to_string();
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .chain([("iss".to_owned(), issuer)])
        .collect();
    match mode {
        ResponseMode::Query => {
            url.query_pairs_mut().extend_pairs(fields.iter());
        }
        ResponseMode::Fragment => {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields.iter())
                .finish();
            url.set_fragment(Some(&encoded));
        }
        ResponseMode::FormPost => {}
    }
    Some(Encoded { mode, url, fields })
}

/// Sends an authorization response (a code, or an error) to the client's redirect URI in the
/// requested response mode ([`encode_response`]): a redirect, or for `form_post` the
/// auto-submitting form.
pub fn respond_to_client(
    state: &AppState,
    redirect: &str,
    mode: ResponseMode,
    fields: &[(&str, &str)],
) -> Response {
    let Some(encoded) = encode_response(state, redirect, mode, fields) else {
        return kit::error_page(
            &state.templates,
            &state.chrome(),
            StatusCode::BAD_REQUEST,
            "Invalid return address",
            "The registered return address is not a valid URL.",
            Some(ErrorCode::InvalidRequest.as_str()),
        );
    };
    match encoded.mode {
        ResponseMode::Query | ResponseMode::Fragment => kit::redirect_to(&encoded.url),
        ResponseMode::FormPost => form_post(state, &encoded.url, &encoded.fields),
    }
}

/// The auto-submitting form of OAuth 2.0 Form Post Response Mode §2 (with a button when
/// JavaScript is off). The CSP allows exactly this script and a post to the client's origin.
const FORM_POST_SCRIPT: &str =
    "window.addEventListener('DOMContentLoaded',function(){document.forms[0].submit()});";

fn form_post(state: &AppState, action: &Url, fields: &[(String, String)]) -> Response {
    let hash = format!(
        "sha256-{}",
        STANDARD.encode(Sha256::digest(FORM_POST_SCRIPT.as_bytes()))
    );
    let origin = action.origin().ascii_serialization();
    kit::page_with_csp(
        state,
        StatusCode::OK,
        "pages/form_post.html",
        minijinja::context! {
            script => FORM_POST_SCRIPT,
            action => action.as_str(),
            fields => fields,
        },
        &kit::csp(&origin, Some(&hash)),
    )
}

/// Sends an authorization error to the client's redirect URI (RFC 6749 §4.1.2.1): straight
/// away for a client the operator configured, by the user's choice for one that registered
/// itself.
///
/// RFC 9700 §4.11.2 (the authorization server as open redirector): anyone can register a client
/// (RFC 7591) whose redirect URI is a phishing site, then send users an authorization request
/// that fails on purpose (a bad scope), that they will deny, or a silent `prompt=none` one, to
/// have this server send them there. "The authorization server SHOULD only automatically
/// redirect the user agent if it trusts the redirection URI. If the URI is not trusted, the
/// authorization server MAY inform the user and rely on the user to make the correct decision."
/// Trusted are the redirect URIs of static clients (`Client::is_static`: written by the operator
/// in the configuration); those of dynamically registered clients are not, so their errors are
/// shown on a page that names the application, the error and where the link leads, and the user
/// decides whether to go back (a link with the error in the response mode's place; a button for
/// `form_post`). Codes are still redirected without a page: one is only issued after the user
/// signed in and consented (§4.11.2: "MUST always authenticate the user first").
pub fn error_to_client(
    state: &AppState,
    client: &Client,
    redirect: &str,
    mode: ResponseMode,
    error: &OAuthError,
    client_state: Option<&str>,
) -> Response {
    let mut fields: Vec<(&str, &str)> = vec![
        ("error", error.error.as_str()),
        ("error_description", &error.description),
    ];
    if let Some(s) = client_state {
        fields.push(("state", s));
    }
    let encoded = if client.is_static {
        None
    } else {
        encode_response(state, redirect, mode, &fields)
    };
    // Trusted (static), or a redirect URI that is no URL (its own error page): no choice here.
    let Some(encoded) = encoded else {
        return respond_to_client(state, redirect, mode, &fields);
    };
    let form_post = mode == ResponseMode::FormPost;
    kit::page_with_csp(
        state,
        StatusCode::BAD_REQUEST,
        "pages/authorize_error.html",
        minijinja::context! {
            client_name => clients::client_name(client),
            description => error.description,
            error => error.error.as_str(),
            target => redirect,
            form_post => form_post,
            action => encoded.url.as_str(),
            fields => encoded.fields,
        },
        // The button of `form_post` posts to the client (`form-action`); a link needs nothing.
        &kit::csp_redirecting_to(form_post.then_some(&encoded.url)),
    )
}
