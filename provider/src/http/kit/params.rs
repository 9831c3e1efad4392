//! Reading requests, the same way at every door: form-encoded parameters ([`Params`], RFC 6749
//! §3.1) and the `Authorization` header ([`authorization`], RFC 6750 §2.1).

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};

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
}

/// What the `Authorization` header of a request holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization<'a> {
    /// No `Authorization` header.
    Absent,
    /// RFC 6750 §2.1: `Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
    Bearer(&'a str),
    /// Another scheme, e.g. `Basic` client credentials (RFC 6749 §2.3.1).
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
/// printable character.
pub fn parse_authorization(value: &str) -> Authorization<'_> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return if scheme.is_empty() {
            Authorization::Malformed
        } else {
            Authorization::Other
        };
    }
    match rest.trim() {
        "" => Authorization::Malformed,
        token => Authorization::Bearer(token),
    }
}
