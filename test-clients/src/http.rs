//! The HTTP client of the scripted clients: it never follows redirects (the journeys look at
//! each one), and records every request and response in its [`Transcript`].

use std::{sync::Arc, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use reqwest::{
    cookie::{CookieStore as _, Jar},
    header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION},
    Method, RequestBuilder,
};
use scraper::{Html, Selector};
use url::Url;

use crate::{
    transcript::{self, Exchange, Transcript},
    Error,
};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The longest body quoted in an error.
const MAX_ERROR_BODY: usize = 600;

/// A client that never follows redirects and records everything in its transcript.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    jar: Option<Arc<Jar>>,
    transcript: Transcript,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("browser", &self.jar.is_some())
            .finish_non_exhaustive()
    }
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .user_agent(concat!("test-clients/", env!("CARGO_PKG_VERSION")))
}

impl Http {
    /// An API client: no cookies.
    pub fn new(transcript: Transcript) -> Self {
        let client = builder()
            .build()
            .expect("an HTTP client with the built-in rustls configuration");
        Self {
            client,
            jar: None,
            transcript,
        }
    }

    /// A browser: keeps cookies in a jar of its own.
    pub fn browser(transcript: Transcript) -> Self {
        let jar = Arc::new(Jar::default());
        let client = builder()
            .cookie_provider(jar.clone())
            .build()
            .expect("an HTTP client with the built-in rustls configuration");
        Self {
            client,
            jar: Some(jar),
            transcript,
        }
    }

    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// A request to send with [`Http::send`].
    pub fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends a request built from [`Http::request`] and records it with its response.
    pub async fn send(&self, request: RequestBuilder) -> Result<Reply, Error> {
        let request = request.build()?;
        let method = request.method().to_string();
        let url = request.url().clone();
        let mut request_headers = header_pairs(request.headers());
        if let Some(cookies) = self.jar.as_ref().and_then(|jar| jar.cookies(&url)) {
            if let Ok(cookies) = cookies.to_str() {
                request_headers.push((COOKIE.to_string(), cookies.to_owned()));
            }
        }
        let request_body = request
            .body()
            .and_then(|b| b.as_bytes())
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                self.transcript
                    .note(format!("{method} {}: no answer ({e})", short_url(&url)));
                return Err(e.into());
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        self.transcript.record(Exchange {
            step: None,
            method,
            url: url.to_string(),
            request_headers,
            request_body,
            status,
            response_headers: header_pairs(&headers),
            response_body: body.clone(),
        });
        Ok(Reply {
            status,
            headers,
            body,
            url,
        })
    }

    pub async fn get(&self, url: &str) -> Result<Reply, Error> {
        self.send(self.request(Method::GET, url)).await
    }

    /// `GET` with `Authorization: Bearer` (RFC 6750 §2.1).
    pub async fn get_bearer(&self, url: &str, token: &str) -> Result<Reply, Error> {
        self.send(self.request(Method::GET, url).bearer_auth(token))
            .await
    }

    /// `POST` a form; `basic` authenticates the client with `client_secret_basic` (RFC 6749
    /// §2.3.1: both parts form-urlencoded before the Base64 encoding).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Reply, Error> {
        let mut request = self.request(Method::POST, url).form(form);
        if let Some((id, secret)) = basic {
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            let (id, secret): (String, String) = (encode(id), encode(secret));
            let credentials = STANDARD.encode(format!("{id}:{secret}"));
            request = request.header(AUTHORIZATION, format!("Basic {credentials}"));
        }
        self.send(request).await
    }

    /// `POST` a JSON body, with a bearer token when given.
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        bearer: Option<&str>,
    ) -> Result<Reply, Error> {
        let mut request = self.request(Method::POST, url).json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A URL without its query and fragment, for messages (queries may carry codes).
pub fn short_url(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// An answer, read in full.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    /// The URL the request went to.
    pub url: Url,
}

impl Reply {
    /// The body as JSON; [`Error::Protocol`] when it is not.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_str(&self.body).map_err(|e| {
            Error::Protocol(format!(
                "{} answered HTTP {} with a body that is not JSON ({e}): {}",
                short_url(&self.url),
                self.status,
                self.quoted_body()
            ))
        })
    }

    /// The `Location` header, resolved against the request URL (RFC 9110 §10.2.2).
    pub fn location(&self) -> Option<Url> {
        let location = self.headers.get(LOCATION)?.to_str().ok()?;
        self.url.join(location).ok()
    }

    /// Itself when its status is `status`, else [`Error::Status`] naming the step `what`.
    pub fn expect(self, what: &str, status: u16) -> Result<Self, Error> {
        if self.status == status {
            Ok(self)
        } else {
            Err(Error::Status {
                what: format!("{what}: expected HTTP {status}"),
                status: self.status,
                body: self.quoted_body(),
            })
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body for an error message: secrets elided, pages as their text, shortened.
    pub fn quoted_body(&self) -> String {
        let content_type = self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let body = if content_type.is_some_and(|t| t.contains("html")) {
            page_text(&self.body)
        } else {
            transcript::elide_body(&self.body, content_type, &mut Vec::new())
        };
        shorten(&body, MAX_ERROR_BODY)
    }
}

/// The text a person reads on a page (of `<main>`, else `<body>`), whitespace collapsed and
/// shortened: for error messages.
pub fn page_text(page: &str) -> String {
    let doc = Html::parse_document(page);
    let root = doc
        .select(&Selector::parse("main").expect("a valid CSS selector"))
        .next()
        .or_else(|| {
            doc.select(&Selector::parse("body").expect("a valid CSS selector"))
                .next()
        });
    let text: String = match root {
        Some(root) => root.text().collect::<Vec<_>>().join(" "),
        None => doc.root_element().text().collect::<Vec<_>>().join(" "),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    shorten(&text, 500)
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let end = (0..=max)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(url: &str, location: Option<&str>, status: u16) -> Reply {
        let mut headers = HeaderMap::new();
        if let Some(location) = location {
            headers.insert(LOCATION, location.parse().unwrap());
        }
        Reply {
            status,
            headers,
            body: r#"{"error":"invalid_grant","refresh_token":"mar_abcdefghijklmnopq"}"#.into(),
            url: Url::parse(url).unwrap(),
        }
    }

    #[test]
    fn location_is_resolved_against_the_request_url() {
        let base = "https://auth.test/consent/01J?x=1";
        assert_eq!(
            reply(base, Some("/login?grant=01J"), 303)
                .location()
                .unwrap()
                .as_str(),
            "https://auth.test/login?grant=01J"
        );
        assert_eq!(
            reply(base, Some("approve"), 303)
                .location()
                .unwrap()
                .as_str(),
            "https://auth.test/consent/approve"
        );
        assert_eq!(
            reply(
                base,
                Some("http://127.0.0.1/callback?code=abc&state=s"),
                303
            )
            .location()
            .unwrap()
            .as_str(),
            "http://127.0.0.1/callback?code=abc&state=s"
        );
        assert!(reply(base, None, 200).location().is_none());
    }

    #[test]
    fn expect_names_the_step_and_elides_the_body() {
        let error = reply("https://auth.test/oauth2/token?code=x", None, 400)
            .expect("token exchange", 200)
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("token exchange: expected HTTP 200, got HTTP 400: "),
            "{text}"
        );
        assert!(text.contains("invalid_grant") && !text.contains("abcdefghijklmnopq"));
        assert!(reply("https://a.test/", None, 201)
            .expect("registration", 201)
            .is_ok());
    }

    #[test]
    fn json_errors_are_protocol_errors() {
        let mut r = reply("https://a.test/x", None, 200);
        r.body = "<html>".into();
        assert!(matches!(r.json(), Err(Error::Protocol(_))));
    }
}
