//! Server-rendered pages: templates from `templates/` (embedded in the binary), the security
//! headers every page carries, and the stylesheet.

use std::fmt;

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use axum_extra::extract::PrivateCookieJar;
use minijinja::Environment;
use serde::Serialize;

use crate::{
    app::AppState,
    domain::client_metadata::RegisteredMetadata,
    storage::Client,
    web::session::{BrowserCookie, CsrfError},
};

pub mod account;
pub mod consent;
pub mod link;
pub mod login;
pub mod logout;
pub mod recover;
pub mod register;
pub mod register_controls;
pub mod register_verify;
pub mod session;

/// Where the stylesheet is served.
pub const STYLESHEET: &str = "/assets/style.css";

const STYLESHEET_CSS: &str = include_str!("../../../templates/assets/style.css");

/// The page templates, compiled once.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, source) in [
            (
                "pages/base.html",
                include_str!("../../../templates/pages/base.html"),
            ),
            (
                "pages/error.html",
                include_str!("../../../templates/pages/error.html"),
            ),
            (
                "pages/form_post.html",
                include_str!("../../../templates/pages/form_post.html"),
            ),
            (
                "pages/login.html",
                include_str!("../../../templates/pages/login.html"),
            ),
            (
                "pages/consent.html",
                include_str!("../../../templates/pages/consent.html"),
            ),
            (
                "pages/link.html",
                include_str!("../../../templates/pages/link.html"),
            ),
            (
                "pages/link_approve.html",
                include_str!("../../../templates/pages/link_approve.html"),
            ),
            (
                "pages/signed_in.html",
                include_str!("../../../templates/pages/signed_in.html"),
            ),
            (
                "pages/logout.html",
                include_str!("../../../templates/pages/logout.html"),
            ),
            (
                "pages/signed_out.html",
                include_str!("../../../templates/pages/signed_out.html"),
            ),
            (
                "pages/register.html",
                include_str!("../../../templates/pages/register.html"),
            ),
            (
                "pages/compat_sso.html",
                include_str!("../../../templates/pages/compat_sso.html"),
            ),
            (
                "pages/account_base.html",
                include_str!("../../../templates/pages/account_base.html"),
            ),
            (
                "pages/account.html",
                include_str!("../../../templates/pages/account.html"),
            ),
            (
                "pages/account_devices.html",
                include_str!("../../../templates/pages/account_devices.html"),
            ),
            (
                "pages/account_device.html",
                include_str!("../../../templates/pages/account_device.html"),
            ),
            (
                "pages/account_cross_signing.html",
                include_str!("../../../templates/pages/account_cross_signing.html"),
            ),
            (
                "pages/account_deactivate.html",
                include_str!("../../../templates/pages/account_deactivate.html"),
            ),
            (
                "pages/account_deactivated.html",
                include_str!("../../../templates/pages/account_deactivated.html"),
            ),
            (
                "pages/account_emails.html",
                include_str!("../../../templates/pages/account_emails.html"),
            ),
            (
                "pages/account_password.html",
                include_str!("../../../templates/pages/account_password.html"),
            ),
            (
                "pages/account_refused.html",
                include_str!("../../../templates/pages/account_refused.html"),
            ),
            (
                "pages/recover.html",
                include_str!("../../../templates/pages/recover.html"),
            ),
            (
                "pages/recover_reset.html",
                include_str!("../../../templates/pages/recover_reset.html"),
            ),
            (
                "pages/recover_done.html",
                include_str!("../../../templates/pages/recover_done.html"),
            ),
            (
                "pages/register_verify.html",
                include_str!("../../../templates/pages/register_verify.html"),
            ),
            (
                "emails/base.html",
                include_str!("../../../templates/emails/base.html"),
            ),
            (
                "emails/verification.html",
                include_str!("../../../templates/emails/verification.html"),
            ),
            (
                "emails/verification.txt",
                include_str!("../../../templates/emails/verification.txt"),
            ),
            (
                "emails/recovery.html",
                include_str!("../../../templates/emails/recovery.html"),
            ),
            (
                "emails/recovery.txt",
                include_str!("../../../templates/emails/recovery.txt"),
            ),
        ]
        .into_iter()
        .chain(crate::upstream::TEMPLATES.iter().copied())
        {
            // The templates are part of the binary and covered by tests: a syntax error is a
            // build defect, reported when the page is rendered.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "template does not compile");
            }
        }
        Self { env }
    }

    /// Renders a page; `None` (logged) if the template fails, which tests rule out.
    pub fn render(&self, name: &str, context: impl Serialize) -> Option<String> {
        let result = self
            .env
            .get_template(name)
            .and_then(|template| template.render(context));
        match result {
            Ok(html) => Some(html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "template failed to render");
                None
            }
        }
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

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

/// A client's name as the pages show it: its registered `client_name`, else its `client_id`.
pub fn client_name(client: &Client) -> String {
    RegisteredMetadata::from_json(&client.metadata)
        .client_name
        .unwrap_or_else(|| client.client_id.clone())
}

/// A client's registered `client_uri`, for a link to it.
pub fn client_uri(client: &Client) -> Option<String> {
    client
        .metadata
        .get("client_uri")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
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
