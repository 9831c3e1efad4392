//! The http layer's kit, shared by every door: page rendering and the security headers every
//! page carries, the browser cookie ([`session`]), the client's IP ([`client_ip`]), the
//! stylesheet, and what the sign-in pages share: the redirect once signed in ([`go_on`]) and
//! the upstream providers' buttons ([`Button`]).

use std::fmt;

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Serialize;

use crate::storage::{BrowserSession, StorageError, User};
use crate::{
    core::{sign_in::UpstreamOffer, templates::Templates},
    domain::after_sign_in::{self, AfterSignIn},
    endpoints,
    http::{
        kit::session::{BrowserCookie, CsrfError},
        AppState,
    },
};
use url::Url;

pub mod client_ip;
pub mod edge;
pub mod params;
pub mod session;

/// Where a sign-in page sends the browser once the user is signed in: on to `after`, or back
/// to the login page (which then says who is signed in).
pub fn go_on(after: Option<&AfterSignIn>) -> Response {
    axum::response::Redirect::to(&AfterSignIn::target(after)).into_response()
}

/// Sends the browser to sign in first (to the registration page instead when `register` asks
/// for it and registration is open, OIDC "Initiating User Registration" §4), carrying where it
/// goes on to once signed in, `after`: the one way every page that needs a signed-in user asks
/// for one. Absolute, on the public base (which may carry a path), as every URL the provider
/// sends a browser to.
pub fn sign_in_first(state: &AppState, after: &AfterSignIn, register: bool) -> Response {
    let page = if register && state.settings.registration {
        endpoints::REGISTER
    } else {
        endpoints::LOGIN
    };
    let link = after_sign_in::sign_in_link(page, Some(after));
    redirect_to(&endpoints::url(&state.settings.public_base, &link))
}

/// A "Continue with …" link of the sign-in pages: an upstream provider's login, carrying the
/// pending request or the page to return to.
#[derive(Debug, Clone, Serialize)]
pub struct Button {
    pub name: String,
    pub brand: Option<String>,
    /// Where it starts the login (`/upstream/authorize/{id}?grant=…|next=…`).
    pub href: String,
}

impl Button {
    pub fn new(offer: UpstreamOffer, after: Option<&AfterSignIn>) -> Self {
        Self {
            href: after_sign_in::start_url(offer.id, after),
            name: offer.name,
            brand: offer.brand,
        }
    }
}

/// Where the stylesheet is served.
pub const STYLESHEET: &str = "/assets/style.css";

const STYLESHEET_CSS: &str = include_str!("../../../../templates/assets/style.css");

/// The CSP `form-action` of a page whose form answer redirects to `target` (a client): ourselves
/// and that origin, since browsers check a form's redirects against `form-action` too.
pub fn form_action(target: &url::Url) -> String {
    let source = if matches!(target.scheme(), "http" | "https") {
        target.origin().ascii_serialization()
    } else {
        format!("{}:", target.scheme())
    };
    // Serialised URL origins and schemes hold no CSP delimiters; be sure anyway.
    if source.is_empty() || source.contains([';', ',', ' ', '\'']) {
        "'self'".to_owned()
    } else {
        format!("'self' {source}")
    }
}

/// The CSP of a page whose form answer redirects on to `target` (the consent, sign-in, logout
/// and legacy SSO confirmation pages); only ourselves when there is none.
pub fn csp_redirecting_to(target: Option<&url::Url>) -> String {
    csp(
        &target.map_or_else(|| "'self'".to_owned(), form_action),
        None,
    )
}

/// Content-Security-Policy for pages: nothing but our stylesheet, no framing (clickjacking),
/// forms only to ourselves unless a page says otherwise.
pub fn csp(form_action: &str, script: Option<&str>) -> String {
    let script = script.map_or_else(|| "'none'".to_owned(), |hash| format!("'{hash}'"));
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src {script}; \
         form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// An answer over a rate limit, with `Retry-After` (RFC 6585 §4): the wait in whole seconds,
/// rounded up (RFC 9110 §10.2.3). Every door's refusal over a limit goes through here.
pub fn with_retry_after(mut response: Response, wait: std::time::Duration) -> Response {
    let seconds = crate::core::rate_limit::retry_after_seconds(wait);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// An HTML response with the security headers of every page.
pub fn html(status: StatusCode, body: String, csp: &str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// A page from a template, with the site's [`Chrome`] added to `context`, the headers of
/// [`html`] and this CSP; a template that fails (logged by [`Templates::render`]) is a bare 500.
pub fn page_with_csp(
    state: &AppState,
    status: StatusCode,
    name: &str,
    context: minijinja::Value,
    csp: &str,
) -> Response {
    let chrome = state.chrome();
    let context = minijinja::context! {
        site_name => chrome.site_name,
        stylesheet => chrome.stylesheet,
        ..context
    };
    match state.templates.render(name, context) {
        Some(body) => html(status, body, csp),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A page from a template whose forms post only to ourselves (see [`page_with_csp`]).
pub fn page(
    state: &AppState,
    status: StatusCode,
    name: &str,
    context: minijinja::Value,
) -> Response {
    page_with_csp(state, status, name, context, &csp("'self'", None))
}

/// The browser's cookie for this request (`Secure` on an https issuer).
pub fn load_cookie(state: &AppState, jar: PrivateCookieJar) -> BrowserCookie {
    let mut rng = state.storage.entropy().rng.rng();
    BrowserCookie::load(jar, &mut rng, state.settings.issuer.scheme() == "https")
}

/// The longest `User-Agent` kept with a session or a device request, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 512;

/// The request's `User-Agent`, cut to [`MAX_USER_AGENT_CHARS`], as it is stored.
pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect())
}

/// The page for a storage failure in the middle of a sign-in or approval (`flow` names it in
/// the log).
pub fn unavailable(state: &AppState, flow: &str, error: &impl fmt::Display) -> Response {
    tracing::error!(error = %error, "{flow}: storage error");
    error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The sign-in service can't process requests right now. Try again in a moment.",
        None,
    )
}

/// The page for a form whose CSRF token does not match the cookie's.
pub fn csrf_refused(state: &AppState, error: &CsrfError) -> Response {
    error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::FORBIDDEN,
        "Please try again",
        &error.to_string(),
        None,
    )
}

/// The page for an approval form answered with something else than allow or deny.
pub fn invalid_answer(state: &AppState) -> Response {
    error_page(
        &state.templates,
        &state.chrome(),
        StatusCode::BAD_REQUEST,
        "Invalid answer",
        "Choose Allow or Deny.",
        None,
    )
}

/// What a page needs besides its own fields.
#[derive(Debug, Serialize)]
pub struct Chrome<'a> {
    pub site_name: &'a str,
    pub stylesheet: &'a str,
}

/// The error page: for errors the browser's user must see (never redirected to a client whose
/// redirect URI can't be trusted, RFC 6749 §4.1.2.1).
pub fn error_page(
    templates: &Templates,
    chrome: &Chrome<'_>,
    status: StatusCode,
    title: &str,
    detail: &str,
    code: Option<&str>,
) -> Response {
    let body = templates
        .render(
            "pages/error.html",
            minijinja::context! {
                site_name => chrome.site_name,
                stylesheet => chrome.stylesheet,
                title => title,
                detail => detail,
                code => code,
            },
        )
        .unwrap_or_else(|| format!("{title}: {detail}"));
    html(status, body, &csp("'self'", None))
}

/// The browser session the cookie names and its user, when both are still active
/// ([`crate::core::sessions::signed_in`]).
pub async fn signed_in(
    state: &AppState,
    cookie: &BrowserCookie,
) -> Result<Option<(BrowserSession, User)>, StorageError> {
    crate::core::sessions::signed_in(state, cookie.session_id()).await
}

/// A `303 See Other` to a URL.
pub fn redirect_to(url: &Url) -> Response {
    match HeaderValue::from_str(url.as_str()) {
        Ok(location) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// `GET /assets/style.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET_CSS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds() {
        use std::time::Duration;
        let wait = |d| with_retry_after(StatusCode::TOO_MANY_REQUESTS.into_response(), d);
        assert_eq!(
            wait(Duration::from_secs(60)).headers()[header::RETRY_AFTER],
            "60"
        );
        assert_eq!(
            wait(Duration::from_millis(1)).headers()[header::RETRY_AFTER],
            "1"
        );
    }

    #[test]
    fn every_template_renders_and_escapes() {
        let t = Templates::new();
        let html = t
            .render(
                "pages/error.html",
                minijinja::context! { site_name => "S", stylesheet => "/s.css", title => "T", detail => "<script>x</script>", code => "invalid_request" },
            )
            .unwrap();
        assert!(html.contains("&lt;script&gt;x&lt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("<code>invalid_request</code>"));
        let html = t
            .render(
                "pages/form_post.html",
                minijinja::context! { site_name => "S", stylesheet => "/s.css", script => "s()", action => "https://a/cb?x=\"", fields => vec![("state", "a\"b")] },
            )
            .unwrap();
        // attribute values are escaped (the browser decodes them back)
        assert!(html.contains(r#"name="state" value="a&quot;b""#), "{html}");
        assert!(
            html.contains(r#"action="https:&#x2f;&#x2f;a&#x2f;cb?x=&quot;""#),
            "{html}"
        );
        // our own script is inserted verbatim, so its CSP hash matches
        assert!(html.contains("<script>s()</script>"), "{html}");
    }
}
