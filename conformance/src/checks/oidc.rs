//! The `oidc` profile: OpenID Connect Discovery 1.0, Core 1.0 (ID token, UserInfo, prompt)
//! and RP-Initiated Logout 1.0.

use serde_json::{json, Value};

use crate::checks::expect::{
    authorize_refused, authorize_url, ensure, fail, header, is_loopback, json, param,
    public_client, short, skip,
};
use crate::checks::oauth2::metadata::{judge_metadata, string_member};
use crate::checks::oauth2::registration::{register, registered};
use crate::context::{list_has, Probe, Session};
use crate::{jwt, Checked, Stop};

// ---- Discovery ----

/// OIDC Discovery §3: `jwks_uri` REQUIRED, https.
pub(crate) async fn jwks_uri(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        string_member(doc, "jwks_uri")?;
        let raw = doc["jwks_uri"].as_str().unwrap_or_default();
        match url::Url::parse(raw) {
            Ok(u) if u.scheme() == "https" || is_loopback(&u) => Ok(()),
            Ok(_) => Err(format!("`jwks_uri` `{raw}` is not https")),
            Err(e) => Err(format!("`jwks_uri` `{raw}` is not a URL: {e}")),
        }
    })
}

/// OIDC Discovery §3: `subject_types_supported` REQUIRED (`public`, `pairwise`).
pub(crate) async fn subject_types(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        match doc.get("subject_types_supported").and_then(Value::as_array) {
            Some(list)
                if !list.is_empty() && list.iter().all(|v| v == "public" || v == "pairwise") =>
            {
                Ok(())
            }
            Some(list) => Err(format!("`subject_types_supported` is {list:?}")),
            None => Err("`subject_types_supported` is missing or not an array".into()),
        }
    })
}

/// OIDC Discovery §3: `id_token_signing_alg_values_supported` REQUIRED.
pub(crate) async fn id_token_algs(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        match doc
            .get("id_token_signing_alg_values_supported")
            .and_then(Value::as_array)
        {
            Some(list) if !list.is_empty() => Ok(()),
            _ => Err("`id_token_signing_alg_values_supported` is missing or empty".into()),
        }
    })
}

/// OIDC Discovery §3 (and Core §15.1): RS256 MUST be included.
pub(crate) async fn rs256(p: Probe) -> Checked {
    judge_metadata(&p, |doc| {
        if list_has(doc, "id_token_signing_alg_values_supported", "RS256") {
            Ok(())
        } else {
            Err("`id_token_signing_alg_values_supported` lacks RS256".into())
        }
    })
}

/// OIDC Discovery §3: `userinfo_endpoint` RECOMMENDED.
pub(crate) async fn userinfo_endpoint(p: Probe) -> Checked {
    judge_metadata(&p, |doc| string_member(doc, "userinfo_endpoint"))
}

/// OIDC Discovery §3: `scopes_supported` RECOMMENDED; it MUST hold `openid` when present.
pub(crate) async fn scopes_supported(p: Probe) -> Checked {
    judge_metadata(&p, |doc| match doc.get("scopes_supported") {
        None => Err("`scopes_supported` is missing (RECOMMENDED)".into()),
        Some(_) if list_has(doc, "scopes_supported", "openid") => Ok(()),
        Some(other) => Err(format!("`scopes_supported` {other} lacks openid")),
    })
}

/// OIDC Discovery §3: `claims_supported` RECOMMENDED.
pub(crate) async fn claims_supported(p: Probe) -> Checked {
    judge_metadata(&p, |doc| match doc.get("claims_supported") {
        Some(Value::Array(_)) => Ok(()),
        Some(other) => Err(format!("`claims_supported` is {other}, not an array")),
        None => Err("`claims_supported` is missing (RECOMMENDED)".into()),
    })
}

// ---- JWKS ----

async fn fetch_jwks(p: &Probe) -> Result<Value, Stop> {
    let url = p.cx.endpoint("jwks_uri")?;
    let reply = p.get(&url).await?;
    ensure(reply.status == 200, || {
        format!(
            "GET jwks_uri answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    json(&reply, "the JWK Set")
}

/// OIDC Discovery §3 / RFC 7517 §5: the JWK Set is served, with keys.
pub(crate) async fn jwks_reachable(p: Probe) -> Checked {
    let jwks = fetch_jwks(&p).await?;
    ensure(
        jwks.get("keys")
            .and_then(Value::as_array)
            .is_some_and(|k| !k.is_empty()),
        || "the JWK Set has no `keys`".into(),
    )
}

/// RFC 7517 §9.2 / RFC 7518 §6: no private or symmetric key material is published.
pub(crate) async fn jwks_public_only(p: Probe) -> Checked {
    let jwks = fetch_jwks(&p).await?;
    const PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    let leaks: Vec<String> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|key| {
            let members: Vec<&str> = PRIVATE
                .iter()
                .copied()
                .filter(|m| key.get(*m).is_some())
                .collect();
            (!members.is_empty()).then(|| {
                format!(
                    "key {} has {}",
                    key.get("kid").unwrap_or(&Value::Null),
                    members.join(", ")
                )
            })
        })
        .collect();
    ensure(leaks.is_empty(), || leaks.join("; "))
}

/// RFC 7517 §4.5: keys of a set SHOULD have distinct `kid`s.
pub(crate) async fn jwks_distinct_kids(p: Probe) -> Checked {
    let jwks = fetch_jwks(&p).await?;
    let kids: Vec<&str> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|k| k.get("kid").and_then(Value::as_str))
        .collect();
    let mut sorted = kids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    ensure(sorted.len() == kids.len(), || {
        format!("repeated kid among {kids:?}")
    })
}

// ---- ID token ----

async fn user(p: &Probe) -> Result<&Session, Stop> {
    p.cx.user().await.map_err(|e| e.skip("the shared sign-in"))
}

/// The ID token of the shared sign-in and its claims, or skipped.
async fn id_token(p: &Probe) -> Result<(String, Value, Value), Stop> {
    let session = user(p).await?;
    let token = session
        .id_token()
        .ok_or_else(|| skip("the sign-in issued no id_token (see oidc.id_token.issued)"))?
        .to_owned();
    let header = jwt::header(&token).map_err(|e| fail(format!("the id_token: {e}")))?;
    let claims = jwt::claims(&token).map_err(|e| fail(format!("the id_token: {e}")))?;
    Ok((token, header, claims))
}

/// OIDC Core §3.1.3.3: a code flow with `openid` returns an `id_token`.
pub(crate) async fn id_token_issued(p: Probe) -> Checked {
    let session = user(&p).await?;
    match session.id_token() {
        Some(_) => Ok(()),
        None => Err(Stop::Fail {
            reason: "the token response of a grant with `openid` has no id_token".into(),
            evidence: session.evidence.clone(),
        }),
    }
}

/// OIDC Core §3.1.3.7: the signature verifies with a key of the issuer's JWK Set.
pub(crate) async fn id_token_signature(p: Probe) -> Checked {
    let (token, _, _) = id_token(&p).await?;
    let jwks = fetch_jwks(&p).await?;
    jwt::verify(&token, &jwks).map_err(fail)
}

/// OIDC Core §3.1.3.7: the `alg` is one the issuer advertises.
pub(crate) async fn id_token_alg_advertised(p: Probe) -> Checked {
    let (_, header, _) = id_token(&p).await?;
    let doc = p.cx.metadata()?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ensure(
        list_has(doc, "id_token_signing_alg_values_supported", alg),
        || format!("alg `{alg}` is not in id_token_signing_alg_values_supported"),
    )
}

/// OIDC Dynamic Client Registration §2: without `id_token_signed_response_alg`, RS256.
pub(crate) async fn id_token_default_rs256(p: Probe) -> Checked {
    let (_, header, _) = id_token(&p).await?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ensure(alg == "RS256", || {
        format!(
            "the client registered no id_token_signed_response_alg, so RS256 is due; got `{alg}`"
        )
    })
}

/// OIDC Core §3.1.3.7 step 2: `iss` is exactly the issuer.
pub(crate) async fn id_token_iss(p: Probe) -> Checked {
    let (_, _, claims) = id_token(&p).await?;
    let doc = p.cx.metadata()?;
    ensure(
        claims.get("iss").is_some() && claims.get("iss") == doc.get("issuer"),
        || {
            format!(
                "iss is {}, the issuer is {}",
                claims.get("iss").unwrap_or(&Value::Null),
                doc.get("issuer").unwrap_or(&Value::Null)
            )
        },
    )
}

/// OIDC Core §3.1.3.7 steps 3-5: `aud` holds the client; with several audiences, `azp` is it.
pub(crate) async fn id_token_aud(p: Probe) -> Checked {
    let (_, _, claims) = id_token(&p).await?;
    let client_id = user(&p).await?.client.client_id.clone();
    match claims.get("aud") {
        Some(Value::String(aud)) => ensure(*aud == client_id, || {
            format!("aud is `{aud}`, the client is `{client_id}`")
        }),
        Some(Value::Array(list)) => {
            ensure(list.iter().any(|a| a == client_id.as_str()), || {
                format!("aud {list:?} lacks the client `{client_id}`")
            })?;
            if list.len() > 1 {
                ensure(
                    claims.get("azp").and_then(Value::as_str) == Some(&client_id),
                    || "several audiences without azp naming the client".into(),
                )?;
            }
            Ok(())
        }
        _ => Err(fail("no aud claim")),
    }
}

/// OIDC Core §2, §3.1.3.7 steps 9-10: `exp` in the future, `iat` a time not ahead of now.
pub(crate) async fn id_token_times(p: Probe) -> Checked {
    let (_, _, claims) = id_token(&p).await?;
    let now = p.cx.now_unix();
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| fail("no numeric exp"))?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| fail("no numeric iat"))?;
    ensure(exp > now - 60, || {
        format!("exp {exp} has passed (now {now})")
    })?;
    ensure(iat <= now + 300, || {
        format!("iat {iat} is ahead of now ({now})")
    })?;
    ensure(exp > iat, || format!("exp {exp} is not after iat {iat}"))
}

/// OIDC Core §3.1.2.1 / §3.1.3.7 step 11: the request's `nonce` is in the ID token.
pub(crate) async fn id_token_nonce(p: Probe) -> Checked {
    let (_, _, claims) = id_token(&p).await?;
    let sent = user(&p).await?.nonce.clone().unwrap_or_default();
    ensure(
        claims.get("nonce").and_then(Value::as_str) == Some(sent.as_str()),
        || {
            format!(
                "nonce is {}, sent {sent:?}",
                claims.get("nonce").unwrap_or(&Value::Null)
            )
        },
    )
}

/// OIDC Core §2: `sub` REQUIRED, at most 255 ASCII characters.
pub(crate) async fn id_token_sub(p: Probe) -> Checked {
    let (_, _, claims) = id_token(&p).await?;
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() && sub.len() <= 255 && sub.is_ascii() => Ok(()),
        Some(sub) => Err(fail(format!("sub `{sub}` is empty, too long or not ASCII"))),
        None => Err(fail("no sub claim")),
    }
}

/// OIDC Core §3.1.3.8 (and §3.1.3.6): `at_hash`, when present, matches the access token.
pub(crate) async fn id_token_at_hash(p: Probe) -> Checked {
    let (_, header, claims) = id_token(&p).await?;
    let Some(at_hash) = claims.get("at_hash").and_then(Value::as_str) else {
        return Err(skip("no at_hash (OPTIONAL in the code flow)"));
    };
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let access = user(&p)
        .await?
        .access_token()
        .unwrap_or_default()
        .to_owned();
    let expected = jwt::half_hash(alg, &access)
        .ok_or_else(|| skip(format!("no hash defined for alg `{alg}`")))?;
    ensure(at_hash == expected, || {
        format!("at_hash is `{at_hash}`, the access token's is `{expected}`")
    })
}

/// OIDC Core §3.1.2.1: with `max_age` in the request, the ID token MUST hold `auth_time`.
pub(crate) async fn id_token_auth_time(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let nonce = p.cx.random(16);
    let code = p
        .code(&client, "openid", &[("max_age", "3600"), ("nonce", &nonce)])
        .await?;
    p.step("exchange the code of a request with max_age");
    let reply = crate::checks::oauth2::token::exchange_with(&p, &code, &[]).await?;
    let tokens = crate::checks::oauth2::token::tokens(&reply, "the exchange")?;
    let token = tokens
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("no id_token"))?;
    let claims = jwt::claims(token).map_err(|e| fail(format!("the id_token: {e}")))?;
    match claims.get("auth_time").and_then(Value::as_i64) {
        Some(t) if t <= p.cx.now_unix() + 300 => Ok(()),
        Some(t) => Err(fail(format!("auth_time {t} is ahead of now"))),
        None => Err(fail("no numeric auth_time although max_age was requested")),
    }
}

// ---- UserInfo ----

async fn userinfo_with(p: &Probe) -> Result<(url::Url, String), Stop> {
    let url = p.cx.endpoint("userinfo_endpoint")?;
    let access = user(p).await?.access_token().unwrap_or_default().to_owned();
    Ok((url, access))
}

/// OIDC Core §5.3.2: the UserInfo `sub` is the ID token's.
pub(crate) async fn userinfo_sub(p: Probe) -> Checked {
    let (_, _, claims) = id_token(&p).await?;
    let (url, access) = userinfo_with(&p).await?;
    let reply = p.get_bearer(&url, &access).await?;
    ensure(reply.status == 200, || {
        format!(
            "UserInfo answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })?;
    let info = json(&reply, "UserInfo")?;
    ensure(
        info.get("sub").is_some() && info.get("sub") == claims.get("sub"),
        || {
            format!(
                "UserInfo sub {} differs from the ID token's {}",
                info.get("sub").unwrap_or(&Value::Null),
                claims.get("sub").unwrap_or(&Value::Null)
            )
        },
    )
}

/// OIDC Core §5.3.2: an unsigned answer is `application/json`.
pub(crate) async fn userinfo_json(p: Probe) -> Checked {
    let (url, access) = userinfo_with(&p).await?;
    let reply = p.get_bearer(&url, &access).await?;
    ensure(reply.status == 200, || {
        format!("UserInfo answered HTTP {}", reply.status)
    })?;
    let ct = header(&reply, "content-type").unwrap_or("");
    ensure(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json"),
        || format!("Content-Type is `{ct}`"),
    )
}

/// OIDC Core §5.3.1: GET and POST are both supported.
pub(crate) async fn userinfo_post(p: Probe) -> Checked {
    let (url, access) = userinfo_with(&p).await?;
    let request = p.request(reqwest::Method::POST, &url).bearer_auth(&access);
    let reply = p.send(request).await?;
    ensure(reply.status == 200, || {
        format!(
            "POST UserInfo answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })
}

/// RFC 6750 §3: a request without a token is answered 401 with `WWW-Authenticate`.
pub(crate) async fn userinfo_no_token(p: Probe) -> Checked {
    let url = p.cx.endpoint("userinfo_endpoint")?;
    let reply = p.get(&url).await?;
    ensure(reply.status == 401, || {
        format!("HTTP {} instead of 401", reply.status)
    })?;
    let challenge = header(&reply, "www-authenticate").unwrap_or("");
    ensure(challenge.to_ascii_lowercase().starts_with("bearer"), || {
        format!("WWW-Authenticate is `{challenge}`, not a Bearer challenge")
    })
}

/// RFC 6750 §3.1: an invalid token is answered 401 with a Bearer challenge
/// (`error="invalid_token"`).
pub(crate) async fn userinfo_invalid_token(p: Probe) -> Checked {
    let url = p.cx.endpoint("userinfo_endpoint")?;
    let reply = p.get_bearer(&url, "conformance-not-a-token").await?;
    ensure(reply.status == 401, || {
        format!("HTTP {} instead of 401", reply.status)
    })?;
    let challenge = header(&reply, "www-authenticate").unwrap_or("");
    ensure(challenge.to_ascii_lowercase().starts_with("bearer"), || {
        format!("WWW-Authenticate is `{challenge}`, not a Bearer challenge")
    })?;
    if !challenge.contains("invalid_token") {
        p.note("the challenge does not say error=\"invalid_token\" (RFC 6750 §3.1 SHOULD)");
    }
    Ok(())
}

// ---- Authorization endpoint ----

/// OIDC Core §3.1.2.1 / §3.1.2.6: `prompt=none` without a session is `login_required` (or
/// another interaction error), never a page.
pub(crate) async fn prompt_none(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let url = authorize_url(&p, &client, &[("prompt", Some("none"))])?;
    let reply = p.get(&url).await?;
    authorize_refused(
        &reply,
        &client.redirect_uri,
        &["login_required", "interaction_required", "consent_required"],
    )
    .map(drop)
}

// ---- RP-Initiated Logout ----

/// RP-Initiated Logout 1.0 §2.1: `end_session_endpoint` (areweoidcyet: required for native
/// Matrix clients).
pub(crate) async fn logout_advertised(p: Probe) -> Checked {
    judge_metadata(&p, |doc| string_member(doc, "end_session_endpoint"))
}

/// RP-Initiated Logout 1.0 §3: never redirect to a `post_logout_redirect_uri` the client did
/// not register.
pub(crate) async fn logout_unregistered_redirect(p: Probe) -> Checked {
    let mut url = p.cx.endpoint("end_session_endpoint")?;
    let client = public_client(&p).await?;
    let target = "https://attacker.example.net/logged-out";
    let hint = match p.cx.user().await {
        Ok(session) => session.id_token().map(str::to_owned),
        Err(_) => None,
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &client.client_id)
            .append_pair("post_logout_redirect_uri", target)
            .append_pair("state", "conformance");
        if let Some(hint) = &hint {
            q.append_pair("id_token_hint", hint);
        }
    }
    let reply = p.get(&url).await?;
    crate::checks::expect::not_redirected_to(&reply, target)
}

/// RP-Initiated Logout 1.0 §3: with no one signed in, a registered `post_logout_redirect_uri`
/// is returned to, with `state`. Without `id_token_hint` the OP "MUST NOT perform post-logout
/// redirection unless the OP has other means of confirming the legitimacy of the post-logout
/// redirection target": a page with a link there, for the user to follow, is the other answer.
pub(crate) async fn logout_registered_redirect(p: Probe) -> Checked {
    let mut url = p.cx.endpoint("end_session_endpoint")?;
    let target = "http://127.0.0.1/logged-out";
    let mut body = crate::context::native_client(&[crate::context::LOOPBACK_REDIRECT]);
    body["post_logout_redirect_uris"] = json!([target]);
    p.step("register a client with a post_logout_redirect_uri");
    let answer = registered(&register(&p, &body).await?).map_err(|e| match e {
        Stop::Fail { reason, .. } => skip(format!("could not register the client: {reason}")),
        other => other,
    })?;
    let client_id = answer["client_id"].as_str().unwrap_or_default();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("post_logout_redirect_uri", target)
        .append_pair("state", "conformance-state");
    p.step("end the session");
    let reply = p.get(&url).await?;
    let redirected = crate::checks::expect::client_redirect(&reply, target);
    let Some(params) = redirected.or_else(|| crate::checks::expect::shown_response(&reply, target))
    else {
        return Err(fail(format!(
            "neither redirected nor linked to the registered post_logout_redirect_uri (HTTP {})",
            reply.status
        )));
    };
    ensure(param(&params, "state") == Some("conformance-state"), || {
        format!("state came back as {:?}", param(&params, "state"))
    })
}
