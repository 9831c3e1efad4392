//! Where a Matrix client looks for the homeserver's authentication metadata (MSC2965, Matrix
//! spec v1.15), in the order it tries them, and the discovery itself.

use serde::Serialize;
use serde_json::Value;
use url::Url;

use crate::{
    http::{short_url, Http},
    Error,
};

/// Where the metadata was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `GET /_matrix/client/v1/auth_metadata` (Matrix spec v1.15).
    AuthMetadata,
    /// `GET /_matrix/client/unstable/org.matrix.msc2965/auth_metadata`.
    UnstableAuthMetadata,
    /// `/.well-known/matrix/client` → `org.matrix.msc2965.authentication.issuer` → OIDC
    /// discovery at the issuer.
    WellKnown,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AuthMetadata => "/_matrix/client/v1/auth_metadata",
            Self::UnstableAuthMetadata => {
                "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata"
            }
            Self::WellKnown => "/.well-known/matrix/client and the issuer's openid-configuration",
        })
    }
}

/// The provider a homeserver delegates to, and its metadata (RFC 8414).
#[derive(Debug, Clone)]
pub struct Discovered {
    pub issuer: Url,
    pub metadata: Value,
    pub via: Via,
}

/// One place to read authentication metadata from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataSource {
    /// `GET /_matrix/client/v1/auth_metadata`: the provider's RFC 8414 metadata, verbatim.
    Stable(Url),
    /// `GET /_matrix/client/unstable/org.matrix.msc2965/auth_metadata`.
    Unstable(Url),
    /// `GET /.well-known/matrix/client`, whose `org.matrix.msc2965.authentication.issuer`
    /// names the issuer whose OIDC discovery document is then read.
    WellKnown(Url),
}

/// The sources to try for a homeserver, most preferred first.
pub fn metadata_sources(homeserver: &Url) -> Vec<MetadataSource> {
    let join = |path: &str| {
        let mut url = homeserver.clone();
        url.set_path(path);
        url.set_query(None);
        url
    };
    vec![
        MetadataSource::Stable(join("/_matrix/client/v1/auth_metadata")),
        MetadataSource::Unstable(join(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
        )),
        MetadataSource::WellKnown(join("/.well-known/matrix/client")),
    ]
}

/// The URL of a path on the homeserver (its origin: the client-server API lives at the root).
fn on_homeserver(homeserver: &Url, path: &str) -> Url {
    let mut url = homeserver.clone();
    url.set_path(path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// Whether a `/versions` answer lists v1.15 or later (the version that made `auth_metadata`
/// part of the spec).
fn lists_v1_15(versions: &Value) -> bool {
    versions["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|v| {
            let (major, minor) = v.strip_prefix('v')?.split_once('.')?;
            Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
        })
        .any(|version| version >= (1, 15))
}

/// MSC2965 order: `/_matrix/client/versions`, `/_matrix/client/v1/auth_metadata`, the unstable
/// path, then `/.well-known/matrix/client`'s issuer and `{issuer}/.well-known/openid-configuration`.
/// A 404 (or 405) moves on to the next source; any other failure, or metadata a Matrix client
/// can't use ([`check_metadata`]), is an error.
pub async fn from_homeserver(http: &Http, homeserver: &Url) -> Result<Discovered, Error> {
    let transcript = http.transcript();
    // Matrix spec §"GET /_matrix/client/versions": clients ask it first; OAuth-aware clients
    // look for v1.15 before asking for auth_metadata.
    transcript.note(format!(
        "discovery (MSC2965, Matrix spec v1.15): the versions of {}",
        short_url(homeserver)
    ));
    let versions = http
        .get(on_homeserver(homeserver, "/_matrix/client/versions").as_str())
        .await?
        .expect("GET /_matrix/client/versions (Matrix spec)", 200)?
        .json()?;
    if !lists_v1_15(&versions) {
        transcript.note("the homeserver does not list v1.15: trying the older ways too");
    }
    let mut tried = Vec::new();
    for source in metadata_sources(homeserver) {
        match source {
            MetadataSource::Stable(url) | MetadataSource::Unstable(url) => {
                let via = if url.path().contains("/unstable/") {
                    Via::UnstableAuthMetadata
                } else {
                    Via::AuthMetadata
                };
                transcript.note(format!("discovery: authentication metadata at {via}"));
                let reply = http.get(url.as_str()).await?;
                match reply.status {
                    404 | 405 => tried.push(format!("{via}: HTTP {}", reply.status)),
                    _ => {
                        let metadata =
                            reply.expect(&format!("GET {via} (MSC2965)"), 200)?.json()?;
                        return discovered(metadata, via);
                    }
                }
            }
            MetadataSource::WellKnown(url) => {
                transcript.note("discovery: /.well-known/matrix/client (MSC2965, older clients)");
                let reply = http.get(url.as_str()).await?;
                if reply.status == 404 {
                    tried.push("/.well-known/matrix/client: HTTP 404".to_owned());
                    continue;
                }
                let well_known = reply
                    .expect("GET /.well-known/matrix/client", 200)?
                    .json()?;
                let Some(issuer) =
                    well_known["org.matrix.msc2965.authentication"]["issuer"].as_str()
                else {
                    tried.push(
                        "/.well-known/matrix/client: no org.matrix.msc2965.authentication.issuer"
                            .to_owned(),
                    );
                    continue;
                };
                let metadata = from_issuer_str(http, issuer).await?;
                return discovered(metadata, Via::WellKnown);
            }
        }
    }
    Err(Error::Protocol(format!(
        "{} offers no OAuth 2.0 authentication metadata (MSC2965): {}",
        short_url(homeserver),
        tried.join("; ")
    )))
}

fn discovered(metadata: Value, via: Via) -> Result<Discovered, Error> {
    check_metadata(&metadata)?;
    let issuer = metadata["issuer"].as_str().unwrap_or_default();
    let issuer = Url::parse(issuer).map_err(|e| {
        Error::Protocol(format!(
            "the metadata's issuer `{issuer}` is not a URL: {e}"
        ))
    })?;
    Ok(Discovered {
        issuer,
        metadata,
        via,
    })
}

/// `{issuer}/.well-known/openid-configuration` (OIDC Discovery 1.0 §4.1); its `issuer` must be
/// `issuer`, exactly (§4.3).
pub async fn from_issuer(http: &Http, issuer: &Url) -> Result<Value, Error> {
    from_issuer_str(http, issuer.as_str()).await
}

/// [`from_issuer`] with the issuer as the homeserver wrote it (no URL normalisation, so the
/// comparison is exact).
async fn from_issuer_str(http: &Http, issuer: &str) -> Result<Value, Error> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    http.transcript().note(format!(
        "discovery: the issuer's metadata (OIDC Discovery 1.0 §4) at {url}"
    ));
    let metadata = http
        .get(&url)
        .await?
        .expect(
            "GET /.well-known/openid-configuration (OIDC Discovery 1.0 §4)",
            200,
        )?
        .json()?;
    match metadata["issuer"].as_str() {
        Some(found) if found == issuer => Ok(metadata),
        found => Err(Error::Protocol(format!(
            "the metadata at {url} names the issuer {found:?}, not `{issuer}` (OIDC Discovery 1.0 §4.3: they must be identical)"
        ))),
    }
}

/// What Matrix clients need in the metadata (MSC2965, as matrix-rust-sdk checks it): `issuer`,
/// `authorization_endpoint`, `token_endpoint`, `revocation_endpoint`, `registration_endpoint`,
/// `response_types_supported ∋ code`, `grant_types_supported ⊇ {authorization_code,
/// refresh_token}`, `response_modes_supported ⊇ {query, fragment}`,
/// `code_challenge_methods_supported ∋ S256`. Every problem is named in the error.
pub fn check_metadata(metadata: &Value) -> Result<(), Error> {
    let mut problems = Vec::new();
    if !metadata.is_object() {
        return Err(Error::protocol(
            "the authentication metadata is not a JSON object",
        ));
    }
    for name in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
    ] {
        match metadata[name].as_str() {
            Some(value) if Url::parse(value).is_ok() => {}
            Some(value) => problems.push(format!("`{name}` is not a URL: {value}")),
            None => problems.push(format!("`{name}` is missing")),
        }
    }
    let lists = |name: &str, wanted: &[&str]| {
        let values: Vec<&str> = metadata[name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        wanted
            .iter()
            .filter(|w| !values.contains(w))
            .map(|w| format!("`{name}` lacks `{w}`"))
            .collect::<Vec<_>>()
    };
    problems.extend(lists("response_types_supported", &["code"]));
    problems.extend(lists(
        "grant_types_supported",
        &["authorization_code", "refresh_token"],
    ));
    problems.extend(lists("response_modes_supported", &["query", "fragment"]));
    problems.extend(lists("code_challenge_methods_supported", &["S256"]));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "the authentication metadata is not usable by Matrix clients (MSC2965): {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_first_then_unstable_then_well_known() {
        let hs = Url::parse("https://matrix.example.org/some/path?x=1").unwrap();
        let urls: Vec<String> = metadata_sources(&hs)
            .into_iter()
            .map(|s| match s {
                MetadataSource::Stable(u)
                | MetadataSource::Unstable(u)
                | MetadataSource::WellKnown(u) => u.to_string(),
            })
            .collect();
        assert_eq!(
            urls,
            [
                "https://matrix.example.org/_matrix/client/v1/auth_metadata",
                "https://matrix.example.org/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
                "https://matrix.example.org/.well-known/matrix/client",
            ]
        );
    }

    mod over_http {
        use serde_json::json;
        use wiremock::{
            matchers::{method, path},
            Mock, MockServer, ResponseTemplate,
        };

        use super::super::*;
        use crate::transcript::Transcript;

        fn metadata(issuer: &str) -> Value {
            json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}authorize"),
                "token_endpoint": format!("{issuer}oauth2/token"),
                "revocation_endpoint": format!("{issuer}oauth2/revoke"),
                "registration_endpoint": format!("{issuer}oauth2/registration"),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "response_modes_supported": ["query", "fragment"],
                "code_challenge_methods_supported": ["S256"],
            })
        }

        fn unrecognized() -> ResponseTemplate {
            ResponseTemplate::new(404).set_body_json(
                json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
            )
        }

        /// A homeserver serving `versions`, and 404 for everything not mounted later.
        async fn homeserver(versions: &[&str]) -> MockServer {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path("/_matrix/client/versions"))
                .respond_with(
                    ResponseTemplate::new(200).set_body_json(json!({"versions": versions})),
                )
                .mount(&server)
                .await;
            server
        }

        async fn serve(server: &MockServer, at: &str, body: Value) {
            Mock::given(method("GET"))
                .and(path(at))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .mount(server)
                .await;
        }

        async fn discover(server: &MockServer) -> (Result<Discovered, Error>, Transcript) {
            let transcript = Transcript::new();
            let http = Http::new(transcript.clone());
            let hs = Url::parse(&server.uri()).unwrap();
            (from_homeserver(&http, &hs).await, transcript)
        }

        fn paths(transcript: &Transcript) -> Vec<String> {
            transcript
                .entries()
                .iter()
                .map(|x| Url::parse(&x.url).unwrap().path().to_owned())
                .collect()
        }

        #[tokio::test]
        async fn auth_metadata_first() {
            let server = homeserver(&["v1.14", "v1.15"]).await;
            let issuer = "https://auth.test/";
            serve(
                &server,
                "/_matrix/client/v1/auth_metadata",
                metadata(issuer),
            )
            .await;
            // Present too, but not needed.
            serve(
                &server,
                "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
                metadata("https://other.test/"),
            )
            .await;
            let (found, transcript) = discover(&server).await;
            let found = found.unwrap();
            assert_eq!(found.via, Via::AuthMetadata);
            assert_eq!(found.issuer.as_str(), issuer);
            assert_eq!(found.metadata, metadata(issuer));
            assert_eq!(
                paths(&transcript),
                [
                    "/_matrix/client/versions",
                    "/_matrix/client/v1/auth_metadata"
                ]
            );
        }

        #[tokio::test]
        async fn only_the_unstable_path() {
            let server = homeserver(&["v1.11"]).await;
            Mock::given(method("GET"))
                .and(path("/_matrix/client/v1/auth_metadata"))
                .respond_with(unrecognized())
                .mount(&server)
                .await;
            serve(
                &server,
                "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
                metadata("https://auth.test/"),
            )
            .await;
            let (found, transcript) = discover(&server).await;
            assert_eq!(found.unwrap().via, Via::UnstableAuthMetadata);
            assert_eq!(
                paths(&transcript),
                [
                    "/_matrix/client/versions",
                    "/_matrix/client/v1/auth_metadata",
                    "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata"
                ]
            );
        }

        #[tokio::test]
        async fn only_the_well_known_issuer() {
            let server = homeserver(&["v1.11"]).await;
            // The issuer lives on the same mock server, under a path, without a trailing slash:
            // compared as written.
            let issuer = format!("{}/auth", server.uri());
            serve(
                &server,
                "/.well-known/matrix/client",
                json!({
                    "m.homeserver": {"base_url": server.uri()},
                    "org.matrix.msc2965.authentication": {"issuer": issuer, "account": "x"},
                }),
            )
            .await;
            let mut document = metadata(&format!("{issuer}/"));
            document["issuer"] = json!(issuer);
            serve(
                &server,
                "/auth/.well-known/openid-configuration",
                document.clone(),
            )
            .await;
            let (found, transcript) = discover(&server).await;
            let found = found.unwrap();
            assert_eq!(found.via, Via::WellKnown);
            assert_eq!(found.metadata, document);
            assert_eq!(
                paths(&transcript),
                [
                    "/_matrix/client/versions",
                    "/_matrix/client/v1/auth_metadata",
                    "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
                    "/.well-known/matrix/client",
                    "/auth/.well-known/openid-configuration"
                ]
            );
        }

        #[tokio::test]
        async fn none_is_a_clear_error() {
            let server = homeserver(&["v1.15"]).await;
            serve(
                &server,
                "/.well-known/matrix/client",
                json!({"m.homeserver": {"base_url": server.uri()}}),
            )
            .await;
            let (found, _) = discover(&server).await;
            let error = found.unwrap_err().to_string();
            assert!(
                error.contains("offers no OAuth 2.0 authentication metadata"),
                "{error}"
            );
            assert!(error.contains("auth_metadata: HTTP 404"), "{error}");
            assert!(
                error.contains("no org.matrix.msc2965.authentication.issuer"),
                "{error}"
            );
        }

        #[tokio::test]
        async fn a_wrong_issuer_or_unusable_metadata_is_an_error() {
            // The well-known issuer differs from the document's.
            let server = homeserver(&["v1.11"]).await;
            let issuer = format!("{}/", server.uri());
            serve(
                &server,
                "/.well-known/matrix/client",
                json!({"org.matrix.msc2965.authentication": {"issuer": issuer}}),
            )
            .await;
            serve(
                &server,
                "/.well-known/openid-configuration",
                metadata("https://elsewhere.test/"),
            )
            .await;
            let error = discover(&server).await.0.unwrap_err().to_string();
            assert!(error.contains("OIDC Discovery 1.0 §4.3"), "{error}");

            // auth_metadata without S256 and a registration endpoint.
            let server = homeserver(&["v1.15"]).await;
            let mut bad = metadata("https://auth.test/");
            bad["code_challenge_methods_supported"] = json!(["plain"]);
            bad.as_object_mut().unwrap().remove("registration_endpoint");
            serve(&server, "/_matrix/client/v1/auth_metadata", bad).await;
            let error = discover(&server).await.0.unwrap_err().to_string();
            assert!(
                error.contains("`registration_endpoint` is missing"),
                "{error}"
            );
            assert!(error.contains("lacks `S256`"), "{error}");

            // A broken homeserver (500) is not a reason to look elsewhere.
            let server = homeserver(&["v1.15"]).await;
            Mock::given(method("GET"))
                .and(path("/_matrix/client/v1/auth_metadata"))
                .respond_with(ResponseTemplate::new(500))
                .mount(&server)
                .await;
            let error = discover(&server).await.0.unwrap_err();
            assert!(
                matches!(error, Error::Status { status: 500, .. }),
                "{error}"
            );
        }
    }
}
