//! Signing in with a password, whatever the door (the login page, the legacy Matrix login, the
//! account page's password change and deactivation, linking an upstream identity): the one
//! credential check, behind the sign-in rate limits, and opening a browser session. Also what
//! the sign-in pages show besides their form: the pending authorization request they continue
//! ([`pending_request`]) and the upstream providers offered ([`upstream_offers`]).

use ulid::Ulid;
use url::Url;

use crate::{
    core::{
        clients,
        passwords::Verified,
        rate_limit::{compound_key, marker_key, ClientIp, Limit, RateLimitError},
        Core,
    },
    domain::after_sign_in::{username_from_hint, AfterSignIn},
    domain::sign_in_method::SignInMethod,
    storage::{BoxRepository, StorageError, User},
};

/// Why a password check refused a sign-in. Shared by the login page and the legacy Matrix
/// login (`m.login.password`), which tell it in their own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown username or wrong password: one answer for both.
    WrongCredentials,
    Locked,
    Deactivated,
}

impl Refusal {
    /// What the sign-in page says.
    pub fn message(self) -> &'static str {
        match self {
            Self::WrongCredentials => "Wrong username or password.",
            Self::Locked => "This account is locked. Contact the server's administrators.",
            Self::Deactivated => "This account has been deactivated.",
        }
    }
}

/// A user who gave the right password, with the stronger hash of it to store when theirs was
/// made by an older scheme (see [`crate::core::passwords::Verified`]).
#[derive(Debug)]
pub struct PasswordMatch {
    pub user: User,
    /// `(version, hash, the stored password it replaces)`.
    upgrade: Option<(i32, String, Ulid)>,
}

impl PasswordMatch {
    /// Stores the upgraded hash, if any, in the caller's transaction (the one that opens the
    /// session): it lands with the sign-in or not at all, and the next sign-in tries again.
    pub async fn store_upgrade(&self, repo: &mut BoxRepository) -> Result<(), StorageError> {
        if let Some((version, hash, replaces)) = &self.upgrade {
            repo.user_passwords()
                .add(self.user.id, hash, *version, Some(*replaces))
                .await?;
        }
        Ok(())
    }
}

/// Checks a username and password: the one credential check of the provider, used by the
/// login page and the legacy Matrix login alike.
///
/// An unknown user (or one without a password) is checked against a dummy hash, so the answer
/// comes after the same work and timing doesn't tell which usernames exist. Whether the
/// account is locked or deactivated is said only after the right password. Nothing is written:
/// the caller stores [`PasswordMatch::store_upgrade`] with the session it opens.
pub async fn check_password(
    state: &Core,
    username: &str,
    password: String,
) -> Result<Result<PasswordMatch, Refusal>, PasswordCheckError> {
    let mut repo = state.storage.reader().await?;
    let user = repo.users().find_by_username(username.trim()).await?;
    let stored = match &user {
        Some(user) => repo.user_passwords().active(user.id).await?,
        None => None,
    };
    drop(repo);
    let (Some(user), Some(stored)) = (user, stored) else {
        // The same work as a real check, so timing doesn't reveal unknown usernames.
        let dummy = state.dummy_password_hash().await;
        let _ = state
            .passwords
            .verify(state.passwords.current_version(), &dummy, password)
            .await;
        return Ok(Err(Refusal::WrongCredentials));
    };
    let verified = state
        .passwords
        .verify(stored.version, &stored.hashed_password, password)
        .await?;
    let Verified::Match { upgrade } = verified else {
        return Ok(Err(Refusal::WrongCredentials));
    };
    if user.deactivated_at.is_some() {
        return Ok(Err(Refusal::Deactivated));
    }
    if user.locked_at.is_some() {
        return Ok(Err(Refusal::Locked));
    }
    Ok(Ok(PasswordMatch {
        user,
        upgrade: upgrade.map(|(version, hash)| (version, hash, stored.id)),
    }))
}

/// Why a sign-in attempt got no answer about its password.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// Over a rate limit (attempts from this IP, or failed attempts on this account): the
    /// password was not checked. Try again after `retry_after`.
    #[error("too many sign-in attempts")]
    Limited { retry_after: std::time::Duration },
    /// The check itself failed.
    #[error(transparent)]
    Check(#[from] PasswordCheckError),
}

impl From<StorageError> for AttemptError {
    fn from(e: StorageError) -> Self {
        Self::Check(e.into())
    }
}

impl From<RateLimitError> for AttemptError {
    fn from(e: RateLimitError) -> Self {
        match e {
            RateLimitError::Limited { retry_after } => Self::Limited { retry_after },
            RateLimitError::Storage(e) => Self::Check(e.into()),
        }
    }
}

/// How long an address where an account signed in stays a *known place* for it (see
/// [`attempt_sign_in`]).
pub const KNOWN_PLACE_DAYS: u64 = 30;

/// [`check_password`] behind the sign-in rate limits, for the doors where anyone may try a
/// password (the login page, the legacy Matrix login). The limits bound guessing without
/// letting a stranger lock an account out (README "Rate limits"):
///
/// 1. one unit of [`Limit::LoginPerIp`] for the client's address, whatever the outcome;
/// 2. one unit of [`Limit::LoginPerAccount`] for the account *from this address* (IPv6: its
///    /64), spent before the check (so parallel guesses can't all slip in before the first
///    failure counts) and given back when the password was right: only failed attempts count.
///    An empty bucket refuses the attempt without checking the password, so a guesser can't
///    tell a right guess from a wrong one; but it is the guesser's own bucket: the account's
///    owner, elsewhere, is not affected;
/// 3. one unit of [`Limit::LoginPerAccountGlobal`] for the account from every address
///    together (much larger: it bounds guessing from many addresses), also given back on the
///    right password. When it is empty, the password is checked only from a *known place*:
///    an address where the account signed in during the last [`KNOWN_PLACE_DAYS`] days. So a
///    botnet that empties it still can't keep the owner out at home.
///
/// The account key is the trimmed username, as [`check_password`] looks it up; unknown
/// usernames have buckets too, so the limits say nothing about which accounts exist.
pub async fn attempt_sign_in(
    state: &Core,
    client_ip: &ClientIp,
    username: &str,
    password: String,
) -> Result<Result<PasswordMatch, Refusal>, AttemptError> {
    state.limiter.check_ip(Limit::LoginPerIp, client_ip).await?;
    let account = username.trim();
    let address = client_ip.bucket_key().unwrap_or_default();
    let place = compound_key(&[account, &address]);
    state.limiter.check(Limit::LoginPerAccount, &place).await?;
    let known_place = marker_key("login_known_place", &place);
    let global_spent = match state
        .limiter
        .check(Limit::LoginPerAccountGlobal, account)
        .await
    {
        Ok(()) => true,
        Err(RateLimitError::Limited { .. })
            if !address.is_empty() && state.limiter.remembers(&known_place).await? =>
        {
            false
        }
        Err(e) => return Err(e.into()),
    };
    let outcome = check_password(state, username, password).await?;
    if !matches!(outcome, Err(Refusal::WrongCredentials)) {
        // The right password (the account may still be locked): not a failed attempt.
        let mut given_back = vec![(Limit::LoginPerAccount, place.as_str())];
        if global_spent {
            given_back.push((Limit::LoginPerAccountGlobal, account));
        }
        for (limit, key) in given_back {
            if let Err(e) = state.limiter.refund(limit, key).await {
                tracing::warn!(error = %e, "sign-in: can't give back the attempt's rate-limit unit");
            }
        }
        if outcome.is_ok() && !address.is_empty() {
            let period = std::time::Duration::from_secs(KNOWN_PLACE_DAYS * 24 * 3600);
            if let Err(e) = state.limiter.remember(&known_place, period).await {
                tracing::warn!(error = %e, "sign-in: can't remember the address as a known place");
            }
        }
    }
    Ok(outcome)
}

/// Checks the credentials (behind the rate limits, see [`attempt_sign_in`]); on success opens a
/// browser session (storing an upgraded hash in the same transaction) and returns its ID.
pub async fn authenticate(
    state: &Core,
    client_ip: &ClientIp,
    username: &str,
    password: String,
    user_agent: Option<&str>,
) -> Result<Result<Ulid, Refusal>, AttemptError> {
    let matched = match attempt_sign_in(state, client_ip, username, password).await? {
        Ok(matched) => matched,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut repo = state.storage.begin().await?;
    matched.store_upgrade(&mut repo).await?;
    let session = open_password_session(&mut repo, matched.user.id, user_agent).await?;
    repo.commit().await?;
    Ok(Ok(session))
}

/// Opens a browser session for a user who just gave their password (signing in, or creating the
/// account), recording the sign-in, in the caller's transaction; returns its ID.
pub async fn open_password_session(
    repo: &mut BoxRepository,
    user_id: Ulid,
    user_agent: Option<&str>,
) -> Result<Ulid, StorageError> {
    let session = repo
        .browser_sessions()
        .add(user_id, user_agent, None)
        .await?;
    repo.browser_sessions()
        .record_authentication(session.id, SignInMethod::Password)
        .await?;
    Ok(session.id)
}

/// Why a password could not be checked (not a refusal: the check itself failed).
#[derive(Debug, thiserror::Error)]
pub enum PasswordCheckError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Password(#[from] crate::core::passwords::PasswordError),
}

/// What the sign-in pages (login, registration, an upstream login's account link) show of the
/// pending authorization request they serve, read once per page (one connection: the request,
/// then its client). Empty when the page serves no request or it can't be read: the page still
/// works, without the client's name.
#[derive(Debug, Default)]
pub struct PendingRequest {
    /// The client's name, to show "to continue to …".
    pub client_name: Option<String>,
    /// The username its `login_hint` suggests (OIDC Core §3.1.2.1), to pre-fill the form.
    pub login_hint: Option<String>,
    /// Its redirect URI: when the consent is remembered, signing in redirects on to it, so the
    /// page's `form-action` must allow it (browsers check a form's redirects against it).
    pub redirect_uri: Option<Url>,
}

/// The pending authorization request that `after` continues, as the sign-in pages show it.
pub async fn pending_request(state: &Core, after: Option<&AfterSignIn>) -> PendingRequest {
    let found = async {
        let id = after?.grant()?;
        let mut repo = state.storage.reader().await.ok()?;
        let grant = repo.authorization_grants().lookup(id).await.ok()??;
        let client = repo.clients().lookup(grant.client_id).await.ok()?;
        Some((grant, client))
    }
    .await;
    let Some((grant, client)) = found else {
        return PendingRequest::default();
    };
    PendingRequest {
        client_name: client.as_ref().map(clients::client_name),
        login_hint: grant
            .login_hint
            .as_deref()
            .and_then(|hint| username_from_hint(hint, &state.settings.matrix.homeserver)),
        redirect_uri: Url::parse(&grant.redirect_uri).ok(),
    }
}

/// An upstream provider the login page offers ("Continue with …").
#[derive(Debug, Clone)]
pub struct UpstreamOffer {
    pub id: Ulid,
    pub name: String,
    pub brand: Option<String>,
}

/// The enabled upstream providers, for the login page. Empty when they can't be read (logged):
/// the password form still works.
pub async fn upstream_offers(state: &Core) -> Vec<UpstreamOffer> {
    let providers = async {
        let mut repo = state.storage.reader().await?;
        repo.upstream_providers().list_enabled().await
    }
    .await;
    match providers {
        Ok(providers) => providers
            .iter()
            .map(|p| UpstreamOffer {
                id: p.id,
                name: crate::core::upstream::client::display_name(p),
                brand: p.brand_name.clone(),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "login page: can't list the upstream providers");
            Vec::new()
        }
    }
}
