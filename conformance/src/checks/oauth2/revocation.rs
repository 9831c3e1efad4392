//! Token revocation (RFC 7009).

use crate::checks::expect::{ensure, fail, public_client, short, skip};
use crate::checks::oauth2::token::{accepted_at_userinfo, refresh};
use crate::context::{Probe, Session};
use crate::Checked;

/// RFC 7009 §2.1 for a public client: `token` and its `client_id`.
async fn revoke(p: &Probe, client_id: &str, token: &str) -> Result<u16, crate::Stop> {
    let endpoint = p.cx.endpoint("revocation_endpoint")?;
    let reply = p
        .post_form(
            &endpoint,
            &[("token", token), ("client_id", client_id)],
            None,
        )
        .await?;
    Ok(reply.status)
}

async fn fresh(p: &Probe) -> Result<Session, crate::Stop> {
    p.cx.endpoint("revocation_endpoint")?;
    p.sign_in("openid").await
}

/// RFC 7009 §2.2: "invalid tokens do not cause an error response": 200.
pub(crate) async fn unknown_token(p: Probe) -> Checked {
    let client = public_client(&p).await?;
    let status = revoke(&p, &client.client_id, "conformance-not-a-token").await?;
    ensure(status == 200, || {
        format!("revoking an unknown token answered HTTP {status}, not 200")
    })
}

/// RFC 7009 §2.2: a revoked access token stops working.
pub(crate) async fn access_token(p: Probe) -> Checked {
    let session = fresh(&p).await?;
    let access = session.access_token().unwrap_or_default().to_owned();
    p.step("revoke the access token");
    let status = revoke(&p, &session.client.client_id, &access).await?;
    ensure(status == 200, || {
        format!("the revocation answered HTTP {status}")
    })?;
    p.step("use it");
    match accepted_at_userinfo(&p, &access).await? {
        Some(true) => Err(fail(
            "the revoked access token still works at the UserInfo endpoint",
        )),
        Some(false) => Ok(()),
        None => Err(skip(
            "no UserInfo endpoint to tell whether the token still works",
        )),
    }
}

/// RFC 7009 §2.1: a revoked refresh token can't be used.
pub(crate) async fn refresh_token(p: Probe) -> Checked {
    let session = fresh(&p).await?;
    let refresh_token = session
        .refresh_token()
        .ok_or_else(|| skip("the sign-in issued no refresh token"))?
        .to_owned();
    p.step("revoke the refresh token");
    let status = revoke(&p, &session.client.client_id, &refresh_token).await?;
    ensure(status == 200, || {
        format!("the revocation answered HTTP {status}")
    })?;
    p.step("refresh with it");
    let reply = refresh(&p, &session.client.client_id, &refresh_token).await?;
    ensure(reply.status != 200, || {
        "the revoked refresh token still refreshes".into()
    })?;
    crate::checks::expect::oauth_error(&reply, &[400], &["invalid_grant"])
}

/// RFC 7009 §2.1: revoking a refresh token SHOULD also invalidate the access tokens of the
/// same grant.
pub(crate) async fn refresh_revokes_access(p: Probe) -> Checked {
    let session = fresh(&p).await?;
    let refresh_token = session
        .refresh_token()
        .ok_or_else(|| skip("the sign-in issued no refresh token"))?
        .to_owned();
    let access = session.access_token().unwrap_or_default().to_owned();
    p.step("revoke the refresh token");
    let status = revoke(&p, &session.client.client_id, &refresh_token).await?;
    ensure(status == 200, || {
        format!("the revocation answered HTTP {status}")
    })?;
    p.step("use the access token of the same grant");
    match accepted_at_userinfo(&p, &access).await? {
        Some(true) => Err(fail("the access token of the revoked grant still works")),
        Some(false) => Ok(()),
        None => Err(skip(
            "no UserInfo endpoint to tell whether the token still works",
        )),
    }
}

/// RFC 7009 §2.1: the server checks that the token was issued to the client asking; another
/// client can't revoke it.
pub(crate) async fn other_client_cannot_revoke(p: Probe) -> Checked {
    let session = fresh(&p).await?;
    let other = public_client(&p).await?;
    if other.client_id == session.client.client_id {
        return Err(skip("the fresh sign-in used the suite's own client"));
    }
    let access = session.access_token().unwrap_or_default().to_owned();
    p.step("revoke it as another client");
    let _ = revoke(&p, &other.client_id, &access).await?;
    p.step("use it");
    match accepted_at_userinfo(&p, &access).await? {
        Some(true) => Ok(()),
        Some(false) => Err(fail("another client revoked the access token")),
        None => Err(skip(
            "no UserInfo endpoint to tell whether the token still works",
        )),
    }
}

/// RFC 7009 §2.1: "The authorization server first validates the client credentials": a
/// request that names no client is refused.
pub(crate) async fn requires_client(p: Probe) -> Checked {
    let endpoint = p.cx.endpoint("revocation_endpoint")?;
    let reply = p
        .post_form(&endpoint, &[("token", "conformance-not-a-token")], None)
        .await?;
    ensure(matches!(reply.status, 400 | 401), || {
        format!(
            "a revocation without client identification answered HTTP {}: {}",
            reply.status,
            short(&reply.body)
        )
    })
}
