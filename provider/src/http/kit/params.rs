//! Reading requests, the same way at every door: form-encoded parameters ([`Params`], RFC 6749
//! §3.1; [`form`] for the bodies of the token endpoint and the endpoints built like it) and the
//! `Authorization` header ([`authorization`], RFC 6750 §2.1).
//!
//! Control characters never pass: no protocol value may hold one (RFC 6749 Appendix A: every
//! OAuth parameter is VSCHAR / NQCHAR / NQSCHAR, printable; Matrix identifiers are printable),
//! and PostgreSQL refuses a NUL in text outright. [`form`] refuses them, and so does the edge
//! check of every request ([`super::edge`]), before any handler reads a value.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};

/// Does the text hold a control character (Unicode `Cc`: C0, DEL and C1)?
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// `Content-Type: application/x-www-form-urlencoded` (parameters such as `charset` allowed).
pub fn is_form_urlencoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// Why a form body was refused; each door answers it in its own shape (the OAuth endpoints:
/// `invalid_request`, RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the request body must be application/x-www-form-urlencoded")]
    NotForm,
    #[error("the body is not UTF-8")]
    NotUtf8,
    /// RFC 6749 §3.1: parameters must not be included more than once.
    #[error("the `{0}` parameter is repeated (RFC 6749 §3.1)")]
    Repeated(String),
    /// A name or value holds a control character (see the module documentation).
    #[error("the `{0}` parameter holds control characters")]
    Control(String),
}

/// The parameters of a `POST` to the token endpoint and the endpoints built like it:
/// an `application/x-www-form-urlencoded` body (RFC 6749 §3.2; device authorization RFC 8628
/// §3.1, introspection RFC 7662 §2.1, revocation RFC 7009 §2.1), in UTF-8, each parameter at most
/// once (RFC 6749 §3.1), without control characters. The one way to read such a form.
pub fn form(headers: &HeaderMap, body: &[u8]) -> Result<Params, FormError> {
    if !is_form_urlencoded(headers) {
        return Err(FormError::NotForm);
    }
    let text = std::str::from_utf8(body).map_err(|_| FormError::NotUtf8)?;
    let params = Params::parse(text);
    if let Some(name) = params.repeated_names().first() {
        return Err(FormError::Repeated(name.clone()));
    }
    if let Some(name) = params.control_name() {
        return Err(FormError::Control(name.to_owned()));
    }
    Ok(params)
}

/// Request parameters. RFC 6749 §3.1: parameters MUST NOT be included more than once; the
/// names that were are kept to be refused.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: BTreeMap<String, String>,
    repeated: Vec<String>,
}

impl Params {
    /// Parses an `application/x-www-form-urlencoded` query or body. Never fails: bad input is
    /// judged by the checks.
    pub fn parse(input: &str) -> Self {
        let mut params = Self::default();
        for (name, value) in url::form_urlencoded::parse(input.as_bytes()) {
            if params.values.contains_key(name.as_ref()) {
                if !params.repeated.iter().any(|r| r == name.as_ref()) {
                    params.repeated.push(name.into_owned());
                }
            } else {
                params.values.insert(name.into_owned(), value.into_owned());
            }
        }
        params
    }

    /// A parameter's value; RFC 6749 §3.1: a parameter sent without a value is treated as if
    /// it were omitted.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn is_repeated(&self, name: &str) -> bool {
        self.repeated.iter().any(|r| r == name)
    }

    /// The names of the parameters sent more than once.
    pub fn repeated_names(&self) -> &[String] {
        &self.repeated
    }

    /// The first parameter whose name or value holds a control character.
    pub fn control_name(&self) -> Option<&str> {
        self.values
            .iter()
            .find(|(name, value)| has_control(name) || has_control(value))
            .map(|(name, _)| name.as_str())
    }

    /// Every parameter, in name order (a repeated one with its first value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// What the `Authorization` header of a request holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization<'a> {
    /// No `Authorization` header.
    Absent,
    /// RFC 6750 §2.1: `Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
    Bearer(&'a str),
    /// RFC 7617 §2: `Basic <credentials>`, the base64 of `id:secret` as sent (client
    /// credentials, RFC 6749 §2.3.1; the scheme is case-insensitive, RFC 9110 §11.1).
    Basic(&'a str),
    /// Another scheme (`DPoP`, `Digest`, …).
    Other,
    /// A `Bearer` header without a token, a header that is not text, or several `Authorization`
    /// headers (RFC 9110 §5.3 allows one value only).
    Malformed,
}

/// Reads the `Authorization` header of a request.
pub fn authorization(headers: &HeaderMap) -> Authorization<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Authorization::Absent;
    };
    if values.next().is_some() {
        return Authorization::Malformed;
    }
    match value.to_str() {
        Ok(text) => parse_authorization(text),
        Err(_) => Authorization::Malformed,
    }
}

/// Parses an `Authorization` value. RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`; the
/// token is taken as it is (surrounding spaces trimmed) without checking the b64token alphabet:
/// our tokens are checked by their checksum, and an operator's shared secret may use any
/// printable character. RFC 7617 §2: `Basic` and its credentials, decoded by the caller.
/// A known scheme without its credentials is malformed.
pub fn parse_authorization<'a>(value: &'a str) -> Authorization<'a> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let known: fn(&'a str) -> Authorization<'a> = if scheme.eq_ignore_ascii_case("bearer") {
        Authorization::Bearer
    } else if scheme.eq_ignore_ascii_case("basic") {
        Authorization::Basic
    } else if scheme.is_empty() {
        return Authorization::Malformed;
    } else {
        return Authorization::Other;
    };
    match rest.trim() {
        "" => Authorization::Malformed,
        credentials => known(credentials),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(
            parse_authorization("Bearer abc"),
            Authorization::Bearer("abc")
        );
        // RFC 9110 §11.1: the scheme is case-insensitive; extra spaces are tolerated.
        assert_eq!(
            parse_authorization("bearer abc"),
            Authorization::Bearer("abc")
        );
        assert_eq!(
            parse_authorization("BEARER   abc  "),
            Authorization::Bearer("abc")
        );
        assert_eq!(
            parse_authorization("Bearer a=b/c+"),
            Authorization::Bearer("a=b/c+")
        );
        assert_eq!(parse_authorization("Bearer"), Authorization::Malformed);
        assert_eq!(parse_authorization("Bearer    "), Authorization::Malformed);
        assert_eq!(parse_authorization(""), Authorization::Malformed);
        assert_eq!(
            parse_authorization("Basic YTpi"),
            Authorization::Basic("YTpi")
        );
        // RFC 9110 §11.1, for Basic as for Bearer.
        assert_eq!(
            parse_authorization("BASIC  YTpi "),
            Authorization::Basic("YTpi")
        );
        assert_eq!(parse_authorization("basic"), Authorization::Malformed);
        assert_eq!(parse_authorization("Bearerabc"), Authorization::Other);
        assert_eq!(parse_authorization("DPoP abc"), Authorization::Other);
    }

    #[test]
    fn reads_the_header() {
        assert_eq!(authorization(&HeaderMap::new()), Authorization::Absent);
        let one = headers(&[(header::AUTHORIZATION, "Bearer x")]);
        assert_eq!(authorization(&one), Authorization::Bearer("x"));
        let two = headers(&[
            (header::AUTHORIZATION, "Bearer x"),
            (header::AUTHORIZATION, "Bearer y"),
        ]);
        assert_eq!(authorization(&two), Authorization::Malformed);
        let mut binary = HeaderMap::new();
        binary.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        assert_eq!(authorization(&binary), Authorization::Malformed);
    }

    proptest! {
        #[test]
        fn header_parsing_never_panics(value in "\\PC{0,80}") {
            let _ = parse_authorization(&value);
        }
    }

    fn form_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers
    }

    #[test]
    fn forms_refuse_control_characters_in_names_and_values() {
        for c in (0u8..0x20).chain([0x7f]) {
            let encoded = format!("%{c:02X}");
            let body = format!("client_id=a{encoded}b");
            assert_eq!(
                form(&form_headers(), body.as_bytes()).unwrap_err(),
                FormError::Control("client_id".into()),
                "{encoded}"
            );
            let body = format!("x{encoded}=1");
            assert!(matches!(
                form(&form_headers(), body.as_bytes()),
                Err(FormError::Control(_))
            ));
        }
        // C1 controls too (U+0085 NEL).
        assert!(form(&form_headers(), b"state=%C2%85").is_err());
        // Printable text, spaces and other scripts pass.
        let params = form(&form_headers(), "state=a+b%C3%A9%E2%82%AC".as_bytes()).unwrap();
        assert_eq!(params.get("state"), Some("a b\u{e9}\u{20ac}"));
        assert_eq!(
            form(&form_headers(), b"a=1&a=2").unwrap_err(),
            FormError::Repeated("a".into())
        );
        assert_eq!(
            form(&HeaderMap::new(), b"a=1").unwrap_err(),
            FormError::NotForm
        );
    }
}
