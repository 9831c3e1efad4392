//! What a stored authorization request still needs (RFC 6749 §4.1, OIDC Core §3.1.2), whatever
//! the page asks: who is signed in, the sign-in and consent decision, and issuing the code.
//!
//! [`decide`] is the one place that says what a request still needs, from the grant, the
//! signed-in browser session and the remembered consents:
//! - sign-in, when nobody is signed in, when `prompt=login` asked for a sign-in that hasn't
//!   happened since the request, or when the last sign-in is older than `max_age`
//!   (OIDC Core §3.1.2.1);
//! - refusal, when the request asks for an admin scope the user may not have (MSC2967);
//! - consent, when `prompt=consent` asked for it or the user never granted this client these
//!   scopes;
//! - confirmation, when the user did grant them but the client's identity can't be assured
//!   ([`identity_assured`], RFC 8252 §8.6): the consent page again, never a silent code.
//!
//! `prompt=none` turns each need into an error for the client (`login_required`,
//! `consent_required`, `interaction_required`, OIDC Core §3.1.2.6) instead of a page: the http
//! layer's continuation (`crate::http::oauth2::authorize`) answers.

use chrono::Duration;
use ulid::Ulid;

use crate::{
    core::{sessions, Core},
    crypto::sha256,
    domain::{protocol::Prompt, scope, token::random_code},
    storage::{
        AuthorizationGrant, BoxRepository, BrowserSession, Client, NewOAuth2Session, StorageError,
        User,
    },
};

/// How long a stored authorization request may wait for the user (sign-in and consent).
pub const REQUEST_LIFETIME_MINUTES: i64 = 15;

/// What a request still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    SignIn,
    /// The signed-in user may not have what the request asks for: `urn:synapse:admin:*` is
    /// only for users allowed to administer the server (MSC2967, the homeserver contract).
    NotAllowed,
    Consent,
    /// The user granted this client these scopes before, but the client's identity can't be
    /// assured ([`identity_assured`]): the user confirms on the consent page; under
    /// `prompt=none` the client is answered `interaction_required` (OIDC Core §3.1.2.6).
    Confirm,
    /// Everything is there: issue the code.
    Complete,
}

/// Can the authorization server be sure the request comes from the client it names, so that a
/// consent the user gave that client before may be applied without asking again?
///
/// RFC 8252 §8.6: "the authorization server SHOULD NOT process authorization requests
/// automatically without user consent or interaction, except when the identity of the client
/// can be assured. This includes the case where the user has previously approved an
/// authorization request for a given client id"; RFC 9700 §2.1 and §4.x say the same of public
/// clients. Any app on the device can listen on a loopback port (§7.3) or claim a private-use
/// URI scheme (§7.1), so a public client redirected there proves nothing; a code is still only
/// sent after the user confirms. Assured are:
/// - confidential clients (any `token_endpoint_auth_method` but `none`): the code is only
///   exchanged with the client's credentials (RFC 6749 §2.3);
/// - public clients redirected to an `https` URI: a web client's origin, or a native app's claimed
///   https redirect, which the operating system verifies (RFC 8252 §7.2).
pub fn identity_assured(client: &Client, redirect_uri: &str) -> bool {
    !client.token_endpoint_auth_method.is_public()
        || url::Url::parse(redirect_uri).is_ok_and(|u| u.scheme() == "https")
}

/// Decides what the request needs next (see the module docs).
///
/// `signed_in_for` is the request a sign-in of this browser was made for, if any: a sign-in made
/// for this very request satisfies `prompt=login`.
pub async fn decide(
    repo: &mut BoxRepository,
    core: &Core,
    grant: &AuthorizationGrant,
    client: &Client,
    signed_in: Option<&(BrowserSession, User)>,
    signed_in_for: Option<Ulid>,
) -> Result<Decision, StorageError> {
    let Some((session, user)) = signed_in else {
        return Ok(Decision::SignIn);
    };
    let now = core.storage.entropy().clock.now();
    let last = repo
        .browser_sessions()
        .last_authentication(session.id)
        .await?;
    let Some(last) = last else {
        return Ok(Decision::SignIn);
    };
    // `urn:synapse:admin:*` and `urn:mas:admin` only for users allowed to administer.
    if !user.can_request_admin && scope::asks_for_admin(&grant.scope) {
        return Ok(Decision::NotAllowed);
    }
    let prompts = grant.prompt;
    // prompt=login / prompt=create: a sign-in (or registration) made for this request, or
    // anyway after it was made.
    let fresh = signed_in_for == Some(grant.id) || last.created_at > grant.created_at;
    if (prompts.contains(Prompt::Login) || prompts.contains(Prompt::Create)) && !fresh {
        return Ok(Decision::SignIn);
    }
    if let Some(max_age) = grant.max_age {
        if last.created_at + Duration::seconds(max_age) < now {
            return Ok(Decision::SignIn);
        }
    }
    if prompts.contains(Prompt::Consent)
        || !repo
            .consents()
            .has_consent(user.id, grant.client_id, &grant.scope)
            .await?
    {
        return Ok(Decision::Consent);
    }
    // RFC 8252 §8.6: a remembered consent counts only for a client whose identity is assured.
    if !identity_assured(client, &grant.redirect_uri) {
        return Ok(Decision::Confirm);
    }
    Ok(Decision::Complete)
}

/// Who is signed in and what the request still needs, on one connection.
///
/// `session_id` and `signed_in_for` come from the browser's cookie.
pub async fn assess(
    repo: &mut BoxRepository,
    core: &Core,
    grant: &AuthorizationGrant,
    client: &Client,
    session_id: Option<Ulid>,
    signed_in_for: Option<Ulid>,
) -> Result<(Option<(BrowserSession, User)>, Decision), StorageError> {
    let user = sessions::signed_in_on(repo, core, session_id).await?;
    let decision = decide(repo, core, grant, client, user.as_ref(), signed_in_for).await?;
    Ok((user, decision))
}

/// A stored grant still waiting for the user, with its client.
pub async fn pending_grant(
    repo: &mut BoxRepository,
    core: &Core,
    id: &str,
) -> Result<Option<(AuthorizationGrant, Client)>, StorageError> {
    let Ok(id) = Ulid::from_string(id) else {
        return Ok(None);
    };
    let Some(grant) = repo.authorization_grants().lookup(id).await? else {
        return Ok(None);
    };
    let now = core.storage.entropy().clock.now();
    if grant.fulfilled_at.is_some()
        || grant.cancelled_at.is_some()
        || grant.created_at + Duration::minutes(REQUEST_LIFETIME_MINUTES) < now
    {
        return Ok(None);
    }
    Ok(repo
        .clients()
        .lookup(grant.client_id)
        .await?
        .map(|c| (grant, c)))
}

/// Cancels a request (denied, refused, or answered with an error under `prompt=none`), so no
/// page serves it later. `false` when it was no longer pending.
pub async fn cancel(core: &Core, grant_id: Ulid) -> Result<bool, StorageError> {
    let mut repo = core.storage.begin().await?;
    let won = repo.authorization_grants().cancel(grant_id).await?;
    repo.commit().await?;
    Ok(won)
}

/// Issues the code of an approved request: the OAuth 2.0 session, the remembered consent and
/// the fulfilled grant, in one transaction. `None` when the request was fulfilled meanwhile
/// (approved twice: two tabs, a double click). Only the code's hash is stored.
pub async fn issue_code(
    core: &Core,
    grant: &AuthorizationGrant,
    client: &Client,
    session: &BrowserSession,
    user: &User,
) -> Result<Option<String>, StorageError> {
    // RFC 6749 §10.10: unguessable; only its hash is stored.
    let code = random_code(&mut core.storage.entropy().rng.rng(), 32);
    let mut repo = core.storage.begin().await?;
    let oauth_session = repo
        .oauth2_sessions()
        .add(NewOAuth2Session {
            user_id: Some(user.id),
            client_id: client.id,
            browser_session_id: Some(session.id),
            scope: &grant.scope,
            device_id: scope::granted_device(&grant.scope).as_deref(),
            user_agent: session.user_agent.as_deref(),
        })
        .await?;
    repo.consents()
        .record(user.id, client.id, &grant.scope)
        .await?;
    let won = repo
        .authorization_grants()
        .fulfill(grant.id, session.id, oauth_session.id, &sha256(&code))
        .await?;
    if !won {
        return Ok(None);
    }
    repo.commit().await?;
    Ok(Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::protocol::ClientAuthMethod;

    fn client(auth: ClientAuthMethod) -> Client {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Client {
            id: Ulid::from_parts(1, 2),
            client_id: "c".into(),
            is_static: false,
            encrypted_client_secret: None,
            token_endpoint_auth_method: auth,
            metadata: serde_json::json!({}),
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn public_native_clients_are_not_assured() {
        let public = client(ClientAuthMethod::None);
        for redirect in [
            "http://127.0.0.1/callback",
            "http://127.0.0.1:49152/callback",
            "http://[::1]:8080/cb",
            "http://localhost:1234/",
            "com.example.app:/callback",
            "com.example.app://callback",
            "not a url",
        ] {
            assert!(!identity_assured(&public, redirect), "{redirect}");
        }
        // A public web client's origin, or a claimed https redirect (RFC 8252 §7.2).
        assert!(identity_assured(&public, "https://app.example/cb"));
    }

    #[test]
    fn confidential_clients_are_assured_wherever_they_redirect() {
        for auth in ClientAuthMethod::ALL
            .iter()
            .copied()
            .filter(|m| !m.is_public())
        {
            assert!(identity_assured(&client(auth), "http://127.0.0.1:5000/cb"));
            assert!(identity_assured(&client(auth), "https://app.example/cb"));
        }
    }
}
