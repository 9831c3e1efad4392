//! The OAuth 2.0 client side: registration (RFC 7591, MSC2966), the authorization request
//! (RFC 6749 §4.1, RFC 7636, MSC2964), its response (RFC 9207), the token endpoint (RFC 6749
//! §4.1.3, §6) and revocation (RFC 7009).

use rand::{rngs::StdRng, CryptoRng, RngCore, SeedableRng};
use serde_json::{json, Value};
use url::Url;

use crate::{
    http::{Http, Reply},
    pages::{self, Account},
    pkce::PkcePair,
    Error,
};

/// The redirect URI of the native clients registered here: loopback, no port (MSC2966, RFC
/// 8252 §7.3). Nothing listens there: the walk through the pages stops at the redirect.
pub const LOOPBACK_REDIRECT: &str = "http://127.0.0.1/callback";

/// The `client_uri` of the clients registered here unless told otherwise (MSC2966: https).
pub const DEFAULT_CLIENT_URI: &str = "https://client.example.org/";

/// An endpoint of the metadata, as a URL.
pub fn endpoint(metadata: &Value, name: &str) -> Result<Url, Error> {
    let value = metadata[name]
        .as_str()
        .ok_or_else(|| Error::Protocol(format!("the metadata has no `{name}`")))?;
    Url::parse(value).map_err(|e| {
        Error::Protocol(format!(
            "the metadata's `{name}` is not a URL ({e}): {value}"
        ))
    })
}

/// RFC 7591 / MSC2966 registration: returns the registration response (`client_id`…). RFC 7591
/// §3.2.1: success is 201 with the `client_id`.
pub async fn register(http: &Http, metadata: &Value, client: &Value) -> Result<Value, Error> {
    let url = endpoint(metadata, "registration_endpoint")?;
    let registered = http
        .post_json(url.as_str(), client, None)
        .await?
        .expect("client registration (RFC 7591 §3.2.1)", 201)?
        .json()?;
    match registered["client_id"].as_str() {
        Some(id) if !id.is_empty() => Ok(registered),
        _ => Err(Error::protocol(
            "the registration response has no `client_id` (RFC 7591 §3.2.1)",
        )),
    }
}

/// The metadata of a public native client with the loopback redirect [`LOOPBACK_REDIRECT`]
/// (MSC2966): `application_type: native`, `token_endpoint_auth_method: none`, the code and
/// refresh grants.
pub fn native_client(client_name: &str, client_uri: &str) -> Value {
    json!({
        "client_name": client_name,
        "client_uri": client_uri,
        "application_type": "native",
        "redirect_uris": [LOOPBACK_REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    })
}

/// An authorization request (RFC 6749 §4.1.1) with PKCE S256 (RFC 7636 §4.3); `extra`
/// parameters are added (or replace the ones of the same name).
pub struct AuthRequest<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub challenge: &'a str,
    pub extra: &'a [(&'a str, &'a str)],
}

/// The authorization URL: the metadata's `authorization_endpoint` with the request's parameters
/// added to its query.
pub fn authorization_url(metadata: &Value, request: &AuthRequest<'_>) -> Result<Url, Error> {
    let mut url = endpoint(metadata, "authorization_endpoint")?;
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", request.client_id),
        ("redirect_uri", request.redirect_uri),
        ("scope", request.scope),
        ("state", request.state),
        ("code_challenge", request.challenge),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in request.extra {
        match params.iter_mut().find(|(n, _)| n == name) {
            Some(param) => param.1 = value,
            None => params.push((name, value)),
        }
    }
    url.query_pairs_mut().extend_pairs(params);
    Ok(url)
}

/// Checks the authorization response the browser was sent back with, and returns its `code`:
/// no `error` (RFC 6749 §4.1.2.1), the `state` sent (§4.1.2, §10.12), and `iss` equal to the
/// issuer (RFC 9207 §2.4: required when the metadata says
/// `authorization_response_iss_parameter_supported`, checked whenever present).
pub fn check_authorization_response(
    metadata: &Value,
    back: &Url,
    state: &str,
) -> Result<String, Error> {
    let param = |name: &str| {
        back.query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        return Err(Error::Protocol(format!(
            "the authorization was refused: error={error} ({})",
            param("error_description").unwrap_or_default()
        )));
    }
    match param("state") {
        Some(s) if s == state => {}
        other => {
            return Err(Error::Protocol(format!(
            "the authorization response's state is {other:?}, not the one sent (RFC 6749 §4.1.2)"
        )))
        }
    }
    let issuer = metadata["issuer"].as_str().unwrap_or_default();
    let iss_supported = metadata["authorization_response_iss_parameter_supported"] == json!(true);
    match param("iss") {
        Some(iss) if iss != issuer => {
            return Err(Error::Protocol(format!(
                "the authorization response's iss is `{iss}`, not the issuer `{issuer}` (RFC 9207 §2.4)"
            )))
        }
        None if iss_supported => {
            return Err(Error::protocol(
                "the authorization response has no iss, though the metadata says authorization_response_iss_parameter_supported (RFC 9207 §2.4)",
            ))
        }
        _ => {}
    }
    param("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::protocol("the authorization response has no code (RFC 6749 §4.1.2)"))
}

/// Sends the browser `http` through an authorization request (the provider's pages, as
/// `account`) until it is sent back to `request.redirect_uri`; checks the response
/// ([`check_authorization_response`]) and returns the code.
pub async fn authorize(
    http: &Http,
    metadata: &Value,
    request: &AuthRequest<'_>,
    account: &Account,
) -> Result<String, Error> {
    let url = authorization_url(metadata, request)?;
    let back = pages::walk(http, &url, request.redirect_uri, account).await?;
    check_authorization_response(metadata, &back, request.state)
}

/// Checks a successful token response (RFC 6749 §5.1): HTTP 200, JSON with `access_token` and
/// `token_type` Bearer, and `Cache-Control: no-store`.
pub fn check_token_response(reply: Reply, what: &str) -> Result<Value, Error> {
    let reply = reply.expect(what, 200)?;
    let tokens = reply.json()?;
    if tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return Err(Error::Protocol(format!(
            "{what}: the token response has no access_token (RFC 6749 §5.1)"
        )));
    }
    if !tokens["token_type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(Error::Protocol(format!(
            "{what}: the token_type is {}, not Bearer (RFC 6749 §5.1, RFC 6750)",
            tokens["token_type"]
        )));
    }
    if !reply
        .header("cache-control")
        .is_some_and(|c| c.to_ascii_lowercase().contains("no-store"))
    {
        return Err(Error::Protocol(format!(
            "{what}: the token response lacks Cache-Control: no-store (RFC 6749 §5.1)"
        )));
    }
    Ok(tokens)
}

/// The authorization code grant at the token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.5), as a
/// public client (`client_id` in the body). Non-200 → [`Error::Status`].
pub async fn exchange_code(
    http: &Http,
    metadata: &Value,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<Value, Error> {
    let url = endpoint(metadata, "token_endpoint")?;
    let reply = http
        .post_form(
            url.as_str(),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", client_id),
                ("code_verifier", verifier),
            ],
            None,
        )
        .await?;
    check_token_response(reply, "token exchange (RFC 6749 §4.1.3)")
}

/// A refresh (RFC 6749 §6) as a public client.
pub async fn refresh(
    http: &Http,
    metadata: &Value,
    client_id: &str,
    refresh_token: &str,
) -> Result<Value, Error> {
    let url = endpoint(metadata, "token_endpoint")?;
    let reply = http
        .post_form(
            url.as_str(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ],
            None,
        )
        .await?;
    check_token_response(reply, "refresh (RFC 6749 §6)")
}

/// Revokes a token (RFC 7009 §2.1) as a public client; 200 expected (§2.2).
pub async fn revoke(
    http: &Http,
    metadata: &Value,
    client_id: &str,
    token: &str,
) -> Result<(), Error> {
    revoke_hinted(http, metadata, client_id, token, None).await
}

/// [`revoke`] with a `token_type_hint` (RFC 7009 §2.1: `access_token` or `refresh_token`).
pub async fn revoke_hinted(
    http: &Http,
    metadata: &Value,
    client_id: &str,
    token: &str,
    hint: Option<&str>,
) -> Result<(), Error> {
    let url = endpoint(metadata, "revocation_endpoint")?;
    let mut form = vec![("token", token), ("client_id", client_id)];
    if let Some(hint) = hint {
        form.push(("token_type_hint", hint));
    }
    http.post_form(url.as_str(), &form, None)
        .await?
        .expect("revocation (RFC 7009 §2.2)", 200)?;
    Ok(())
}

/// The outcome of [`sign_in`].
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub client_id: String,
    /// The token response.
    pub tokens: Value,
    pub redirect_uri: String,
}

/// A whole sign-in for tests and the conformance suite: registers a public native client
/// (loopback redirect [`LOOPBACK_REDIRECT`]), runs the code flow with PKCE for `scope` through
/// [`pages::walk`] with `account` (`prompt=create` for [`Account::Register`]), exchanges the
/// code; returns the `client_id` and the token response. PKCE and `state` come from the OS's
/// randomness; see [`sign_in_with_rng`] for a seeded run.
pub async fn sign_in(
    http_browser: &Http,
    metadata: &Value,
    scope: &str,
    account: &Account,
) -> Result<SignedIn, Error> {
    let mut rng = StdRng::from_entropy();
    sign_in_with_rng(http_browser, metadata, scope, account, &mut rng).await
}

/// [`sign_in`] with the randomness (PKCE verifier, `state`) drawn from `rng`.
pub async fn sign_in_with_rng<R: RngCore + CryptoRng + Send>(
    http_browser: &Http,
    metadata: &Value,
    scope: &str,
    account: &Account,
    rng: &mut R,
) -> Result<SignedIn, Error> {
    let pkce = PkcePair::generate(rng);
    let state = random_state(rng);
    let transcript = http_browser.transcript();
    transcript.note("client registration (RFC 7591 §3, MSC2966): a public native client");
    let client = register(
        http_browser,
        metadata,
        &native_client("test-clients", DEFAULT_CLIENT_URI),
    )
    .await?;
    let client_id = client["client_id"].as_str().unwrap_or_default().to_owned();
    transcript.note(
        "authorization request (RFC 6749 §4.1.1, RFC 7636 S256) through the provider's pages",
    );
    let extra: &[(&str, &str)] = if account.is_register() {
        &[("prompt", "create")]
    } else {
        &[]
    };
    let code = authorize(
        http_browser,
        metadata,
        &AuthRequest {
            client_id: &client_id,
            redirect_uri: LOOPBACK_REDIRECT,
            scope,
            state: &state,
            challenge: &pkce.challenge,
            extra,
        },
        account,
    )
    .await?;
    transcript.note("token exchange (RFC 6749 §4.1.3, RFC 7636 §4.5)");
    let tokens = exchange_code(
        http_browser,
        metadata,
        &client_id,
        &code,
        LOOPBACK_REDIRECT,
        &pkce.verifier,
    )
    .await?;
    Ok(SignedIn {
        client_id,
        tokens,
        redirect_uri: LOOPBACK_REDIRECT.to_owned(),
    })
}

/// A `state` value (RFC 6749 §10.12): 16 random octets, base64url.
pub fn random_state<R: RngCore + ?Sized>(rng: &mut R) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> Value {
        json!({
            "issuer": "https://auth.test/",
            "authorization_endpoint": "https://auth.test/authorize?tenant=a",
            "authorization_response_iss_parameter_supported": true,
        })
    }

    #[test]
    fn authorization_url_has_every_parameter() {
        let url = authorization_url(
            &metadata(),
            &AuthRequest {
                client_id: "client 1",
                redirect_uri: LOOPBACK_REDIRECT,
                scope: "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ",
                state: "s&1",
                challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                extra: &[("prompt", "create"), ("response_type", "code")],
            },
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://auth.test/authorize?tenant=a&response_type=code&client_id=client+1\
             &redirect_uri=http%3A%2F%2F127.0.0.1%2Fcallback\
             &scope=openid+urn%3Amatrix%3Aclient%3Aapi%3A*+urn%3Amatrix%3Aclient%3Adevice%3AABCDEFGHIJ\
             &state=s%261&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
             &code_challenge_method=S256&prompt=create"
        );
        assert!(matches!(
            authorization_url(
                &json!({}),
                &AuthRequest {
                    client_id: "c",
                    redirect_uri: "r",
                    scope: "s",
                    state: "s",
                    challenge: "c",
                    extra: &[],
                }
            ),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn authorization_responses() {
        let m = metadata();
        let back = |q: &str| Url::parse(&format!("http://127.0.0.1/callback?{q}")).unwrap();
        assert_eq!(
            check_authorization_response(
                &m,
                &back("code=c1&state=s&iss=https%3A%2F%2Fauth.test%2F"),
                "s"
            )
            .unwrap(),
            "c1"
        );
        for (query, fragment) in [
            ("code=c1&state=t&iss=https%3A%2F%2Fauth.test%2F", "state"),
            ("code=c1&iss=https%3A%2F%2Fauth.test%2F", "state"),
            ("code=c1&state=s", "no iss"),
            ("code=c1&state=s&iss=https%3A%2F%2Fevil.test%2F", "RFC 9207"),
            ("error=access_denied&state=s", "access_denied"),
            ("state=s&iss=https%3A%2F%2Fauth.test%2F", "no code"),
        ] {
            let error = check_authorization_response(&m, &back(query), "s")
                .unwrap_err()
                .to_string();
            assert!(error.contains(fragment), "{query}: {error}");
        }
        // Without the metadata's promise, a missing iss is fine.
        let plain = json!({"issuer": "https://auth.test/"});
        assert!(check_authorization_response(&plain, &back("code=c&state=s"), "s").is_ok());
    }

    #[test]
    fn states_are_random_and_url_safe() {
        let mut rng = StdRng::seed_from_u64(7);
        let (a, b) = (random_state(&mut rng), random_state(&mut rng));
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
