//! Reading request bodies and query strings the way the homeserver contract expects: bodies are
//! JSON objects; malformed JSON is `M_BAD_JSON`, a missing field `M_MISSING_PARAM`, a field of
//! the wrong type `M_INVALID_PARAM`.

use axum::body::{to_bytes, Body, Bytes};
use serde_json::{Map, Value};

use crate::error::MatrixError;

/// The largest request body accepted anywhere (the homeserver API, the proxy).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Buffers a request body, refusing bodies over [`MAX_BODY_BYTES`] with 413 `M_TOO_LARGE`.
pub(crate) async fn read_body(body: Body) -> Result<Bytes, MatrixError> {
    to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| MatrixError::too_large())
}

/// A JSON object request body with typed field accessors.
#[derive(Debug)]
pub(crate) struct JsonObject(Map<String, Value>);

impl JsonObject {
    /// Parses a body that must be a JSON object (homeserver contract: bodies are JSON).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, MatrixError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|_| MatrixError::bad_json("Content not JSON."))?;
        match value {
            Value::Object(map) => Ok(Self(map)),
            _ => Err(MatrixError::bad_json("Content must be a JSON object.")),
        }
    }

    /// Like [`Self::parse`], but an empty body counts as `{}` (Synapse's `allow_empty_body`).
    pub(crate) fn parse_allow_empty(bytes: &[u8]) -> Result<Self, MatrixError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(Self(Map::new()))
        } else {
            Self::parse(bytes)
        }
    }

    /// Whether the key is present at all (even as `null`).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub(crate) fn req_str(&self, key: &str) -> Result<String, MatrixError> {
        self.opt_str(key)?.ok_or_else(|| missing(key))
    }

    /// A string field; absent or `null` is `None`.
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<String>, MatrixError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(wrong_type(key, "a string")),
        }
    }

    pub(crate) fn req_bool(&self, key: &str) -> Result<bool, MatrixError> {
        self.opt_bool(key)?.ok_or_else(|| missing(key))
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, MatrixError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(key, "a boolean")),
        }
    }

    pub(crate) fn req_str_list(&self, key: &str) -> Result<Vec<String>, MatrixError> {
        self.opt_str_list(key)?.ok_or_else(|| missing(key))
    }

    pub(crate) fn opt_str_list(&self, key: &str) -> Result<Option<Vec<String>>, MatrixError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(wrong_type(key, "a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong_type(key, "a list of strings")),
        }
    }

    /// A list of JSON objects (e.g. the admin API's `threepids`).
    pub(crate) fn opt_object_list(&self, key: &str) -> Result<Option<Vec<Self>>, MatrixError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Object(map) => Ok(Self(map.clone())),
                    _ => Err(wrong_type(key, "a list of objects")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong_type(key, "a list of objects")),
        }
    }
}

fn missing(key: &str) -> MatrixError {
    MatrixError::missing_param(format!("Missing parameter: {key}"))
}

fn wrong_type(key: &str, expected: &str) -> MatrixError {
    MatrixError::invalid_param(format!("Parameter {key} must be {expected}"))
}

/// The first value of a query-string parameter, percent-decoded.
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A required query-string parameter: absent → 400 `M_MISSING_PARAM`.
pub(crate) fn required_query_param(query: Option<&str>, key: &str) -> Result<String, MatrixError> {
    query_param(query, key).ok_or_else(|| missing(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_bad_json() {
        assert_eq!(
            JsonObject::parse(b"{nope").unwrap_err().errcode(),
            "M_BAD_JSON"
        );
        assert_eq!(JsonObject::parse(b"").unwrap_err().errcode(), "M_BAD_JSON");
        assert_eq!(
            JsonObject::parse(b"[1]").unwrap_err().errcode(),
            "M_BAD_JSON"
        );
        assert!(JsonObject::parse_allow_empty(b"").is_ok());
    }

    #[test]
    fn fields_are_typed() {
        let body =
            JsonObject::parse(br#"{"a": "x", "b": true, "c": ["1", "2"], "n": null, "i": 3}"#)
                .unwrap();
        assert_eq!(body.req_str("a").unwrap(), "x");
        assert!(body.req_bool("b").unwrap());
        assert_eq!(body.req_str_list("c").unwrap(), vec!["1", "2"]);
        assert_eq!(body.opt_str("n").unwrap(), None);
        assert!(body.has("n"));
        assert_eq!(body.req_str("zz").unwrap_err().errcode(), "M_MISSING_PARAM");
        assert_eq!(body.req_str("n").unwrap_err().errcode(), "M_MISSING_PARAM");
        assert_eq!(body.req_str("i").unwrap_err().errcode(), "M_INVALID_PARAM");
        assert_eq!(body.opt_bool("a").unwrap_err().errcode(), "M_INVALID_PARAM");
        assert_eq!(
            body.opt_str_list("a").unwrap_err().errcode(),
            "M_INVALID_PARAM"
        );
    }

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(
            query_param(Some("localpart=al%69ce&x=1"), "localpart").as_deref(),
            Some("alice")
        );
        assert_eq!(query_param(None, "localpart"), None);
        assert_eq!(
            required_query_param(Some("x=1"), "localpart")
                .unwrap_err()
                .errcode(),
            "M_MISSING_PARAM"
        );
    }
}
