//! Server-rendered pages: templates from `templates/` (embedded in the binary), the security
//! headers every page carries, and the stylesheet.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use minijinja::Environment;
use serde::Serialize;

/// Where the stylesheet is served.
pub mod consent;
pub mod link;
pub mod login;
pub mod logout;
pub mod register;
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
        ] {
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
