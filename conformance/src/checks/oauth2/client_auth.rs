//! Client authentication at the token endpoint (RFC 6749 §2.3.1, RFC 7523 §2.2 / §3, OIDC Core
//! §9): each advertised method gets a client past authentication. The request carries an
//! unknown code, so a client that authenticated is answered `invalid_grant`, one that did not
//! `invalid_client`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use test_clients::http::Reply;

use crate::checks::expect::{fail, oauth_error, skip};
use crate::checks::oauth2::registration::{register, registered, web_client};
use crate::checks::oauth2::token::confidential;
use crate::context::{list_has, Probe};
use crate::{Checked, Stop};

/// A P-256 key made for this suite only (its private half is public: it proves nothing but
/// that the provider checks `private_key_jwt` assertions).
const EC_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdL+nF/2cWe48YGse
Crts1RRpkbcxAp+2kj7ESbocpKmhRANCAASAnpvzzciEosNkZ53MYDc2US4g50Cu
nuDZRSqXE8gE2wFZaqm7Rybki4LAa7qX462blO3EWnIxRGUYkKSzVajk
-----END PRIVATE KEY-----
";
const EC_X: &str = "gJ6b883IhKLDZGedzGA3NlEuIOdArp7g2UUqlxPIBNs";
const EC_Y: &str = "AVlqqbtHJuSLgsBrupfjrZuU7cRacjFEZRiQpLNVqOQ";
const KID: &str = "conformance-suite";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The form of a token request for an unknown code.
fn bogus_code<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", "conformance-not-a-code"),
        ("redirect_uri", crate::context::WEB_REDIRECT),
        (
            "code_verifier",
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        ),
    ];
    form.extend_from_slice(extra);
    form
}

/// Authentication passed: the unknown code is what is refused.
fn authenticated(reply: &Reply) -> Checked {
    let error = reply
        .json()
        .ok()
        .and_then(|b| b.get("error").and_then(Value::as_str).map(str::to_owned));
    if error.as_deref() == Some("invalid_client") {
        return Err(fail(
            "the client's credentials were refused (invalid_client)",
        ));
    }
    oauth_error(reply, &[400], &["invalid_grant"])
}

/// Whether the issuer advertises `method` (RFC 8414 §2: client_secret_basic when absent).
fn advertised(p: &Probe, method: &str) -> Result<(), Stop> {
    let doc = p.cx.metadata()?;
    let listed = match doc.get("token_endpoint_auth_methods_supported") {
        None => method == "client_secret_basic",
        Some(_) => list_has(doc, "token_endpoint_auth_methods_supported", method),
    };
    if listed {
        Ok(())
    } else {
        Err(skip(format!("{method} is not advertised")))
    }
}

/// Registers a web client with `method` (and `extra` metadata); skipped when refused (a
/// registration policy may reserve methods).
async fn register_with(p: &Probe, method: &str, extra: Value) -> Result<Value, Stop> {
    let mut body = web_client();
    body["token_endpoint_auth_method"] = json!(method);
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    p.step(&format!("register a {method} client"));
    let reply = register(p, &body).await?;
    registered(&reply).map_err(|e| match e {
        Stop::Fail { reason, .. } => {
            skip(format!("a {method} client can't be registered: {reason}"))
        }
        other => other,
    })
}

/// RFC 6749 §2.3.1: HTTP Basic with the registered secret authenticates the client.
pub(crate) async fn client_secret_basic(p: Probe) -> Checked {
    advertised(&p, "client_secret_basic")?;
    let client = confidential(&p).await?;
    let token = p.cx.endpoint("token_endpoint")?;
    let reply = p
        .post_form(&token, &bogus_code(&[]), client.basic())
        .await?;
    authenticated(&reply)
}

/// RFC 6749 §2.3.1: `client_id` and `client_secret` in the body authenticate the client.
pub(crate) async fn client_secret_post(p: Probe) -> Checked {
    advertised(&p, "client_secret_post")?;
    let answer = register_with(&p, "client_secret_post", json!({})).await?;
    let client_id = answer["client_id"].as_str().unwrap_or_default();
    let secret = answer
        .get("client_secret")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("no client_secret for a client_secret_post client"))?;
    let token = p.cx.endpoint("token_endpoint")?;
    p.step("authenticate with client_secret_post");
    let form = bogus_code(&[("client_id", client_id), ("client_secret", secret)]);
    let reply = p.post_form(&token, &form, None).await?;
    authenticated(&reply)
}

/// A client assertion (RFC 7523 §3) for `client_id`, signed with the suite's key.
fn assertion(p: &Probe, client_id: &str, audience: &str) -> Result<String, Stop> {
    let now = p.cx.now_unix();
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": p.cx.random(24),
        "iat": now,
        "exp": now + 300,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.to_owned());
    let key = EncodingKey::from_ec_pem(EC_KEY_PEM.as_bytes())
        .map_err(|e| Stop::fail(format!("the suite's key: {e}")))?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| Stop::fail(format!("signing: {e}")))
}

async fn private_key_jwt_client(p: &Probe) -> Result<String, Stop> {
    advertised(p, "private_key_jwt")?;
    let doc = p.cx.metadata()?;
    if doc
        .get("token_endpoint_auth_signing_alg_values_supported")
        .is_some()
        && !list_has(
            doc,
            "token_endpoint_auth_signing_alg_values_supported",
            "ES256",
        )
    {
        return Err(skip(
            "ES256 is not among token_endpoint_auth_signing_alg_values_supported",
        ));
    }
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y,
        "use": "sig", "alg": "ES256", "kid": KID,
    }] });
    let answer = register_with(p, "private_key_jwt", json!({ "jwks": jwks })).await?;
    Ok(answer["client_id"].as_str().unwrap_or_default().to_owned())
}

/// RFC 7523 §2.2 / OIDC Core §9: a `private_key_jwt` assertion authenticates the client.
pub(crate) async fn private_key_jwt(p: Probe) -> Checked {
    let client_id = private_key_jwt_client(&p).await?;
    let token = p.cx.endpoint("token_endpoint")?;
    let signed = assertion(&p, &client_id, token.as_str())?;
    p.step("authenticate with a client assertion");
    let form = bogus_code(&[
        ("client_id", &client_id),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", &signed),
    ]);
    let reply = p.post_form(&token, &form, None).await?;
    authenticated(&reply)
}

/// RFC 7523 §3: an assertion for another audience is refused (`invalid_client`).
pub(crate) async fn private_key_jwt_audience(p: Probe) -> Checked {
    let client_id = private_key_jwt_client(&p).await?;
    let token = p.cx.endpoint("token_endpoint")?;
    let signed = assertion(&p, &client_id, "https://attacker.example.net/token")?;
    p.step("authenticate with an assertion for another audience");
    let form = bogus_code(&[
        ("client_id", &client_id),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", &signed),
    ]);
    let reply = p.post_form(&token, &form, None).await?;
    oauth_error(&reply, &[400, 401], &["invalid_client"])
}

/// RFC 7523 §2.2 / OIDC Core §9: a `client_secret_jwt` assertion (HS256 with the client
/// secret) authenticates the client.
pub(crate) async fn client_secret_jwt(p: Probe) -> Checked {
    advertised(&p, "client_secret_jwt")?;
    let answer = register_with(&p, "client_secret_jwt", json!({})).await?;
    let client_id = answer["client_id"].as_str().unwrap_or_default().to_owned();
    let secret = answer
        .get("client_secret")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("no client_secret for a client_secret_jwt client"))?
        .to_owned();
    let token = p.cx.endpoint("token_endpoint")?;
    let now = p.cx.now_unix();
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": token.as_str(),
        "jti": p.cx.random(24), "iat": now, "exp": now + 300,
    });
    let signed = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| Stop::fail(format!("signing: {e}")))?;
    p.step("authenticate with a client_secret_jwt assertion");
    let form = bogus_code(&[
        ("client_id", &client_id),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", &signed),
    ]);
    let reply = p.post_form(&token, &form, None).await?;
    authenticated(&reply)
}
