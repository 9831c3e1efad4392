//! What can happen to an account, written once for every door it comes through: the account
//! pages, the admin API, the `provider manage` CLI, registration and upstream login.
//!
//! Each operation works inside the caller's transaction (a [`BoxRepository`]) and returns the
//! homeserver jobs it enqueued ([`AfterCommit`]), which the caller runs once it has committed,
//! so a change and the homeserver's copy of it never drift apart: the job is durable with the
//! change and retried by the worker when the homeserver is down.

pub mod emails;
pub mod profile;

use chrono::{DateTime, Utc};
use rand::RngCore;
use ulid::Ulid;

use crate::core::{
    sessions::{self, end_compat_session},
    Core,
};
use crate::{
    config::AccountConfig,
    domain::account_management::{Action, ACTIONS},
};
use crate::{
    core::{
        matrix::{
            provisioning::{self, AfterCommit, Outcome, Task},
            HomeserverError,
        },
        passwords::{PasswordError, PolicyError},
        sessions::end_oauth2_session,
    },
    crypto::sha256,
    domain::{
        scope,
        token::TokenKind,
        username::{self, UsernameError},
    },
    storage::{BoxRepository, CompatSession, StorageError, User, UserEmail},
};

/// Ends every session of a user: their OAuth 2.0 sessions and legacy (compat) logins, whose
/// devices the homeserver deletes (jobs returned), and their browser sessions, so no page and
/// no token of theirs works any longer.
pub async fn end_all_sessions(
    repo: &mut BoxRepository,
    user_id: Ulid,
    now: DateTime<Utc>,
) -> Result<AfterCommit, StorageError> {
    let mut jobs = AfterCommit::default();
    for session in repo.oauth2_sessions().list_active_for_user(user_id).await? {
        jobs.add(end_oauth2_session(repo, session.id, now).await?);
    }
    for session in repo.compat_sessions().list_active_for_user(user_id).await? {
        jobs.push(end_compat_session(repo, &session, now).await?);
    }
    repo.browser_sessions().finish_all_for_user(user_id).await?;
    Ok(jobs)
}

/// Deactivates an account: marks it deactivated (its username stays taken for ever, so it is
/// never issued to someone else), ends every session, and has the homeserver deactivate the
/// user (`erase` asks it to erase their data too).
pub async fn deactivate(
    repo: &mut BoxRepository,
    user: &User,
    erase: bool,
    now: DateTime<Utc>,
) -> Result<AfterCommit, StorageError> {
    repo.users().set_deactivated(user.id, true).await?;
    let mut jobs = end_all_sessions(repo, user.id, now).await?;
    let task = Task::DeactivateUser {
        user_id: user.id,
        erase,
    };
    jobs.push(provisioning::enqueue(repo, &task, now).await?);
    Ok(jobs)
}

/// Why an account operation of the admin API or the CLI was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("username: {0}")]
    InvalidUsername(#[from] UsernameError),
    #[error("the username `{0}` is taken")]
    UsernameTaken(String),
    /// The homeserver has the last word on a new localpart (the homeserver contract), and it
    /// can't be asked now.
    #[error("can't ask the homeserver whether the username is free: {0}")]
    Homeserver(HomeserverError),
    #[error("password: {0}")]
    PasswordPolicy(#[from] PolicyError),
    #[error("password: {0}")]
    Password(#[from] PasswordError),
    #[error("`{0}` is not an email address")]
    InvalidEmail(String),
    #[error("the user already has the address {0}")]
    EmailTaken(String),
    #[error(
        "the display name must be 1 to {MAX_DISPLAY_NAME_CHARS} characters, not blank, \
         without control characters"
    )]
    InvalidDisplayName,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The longest display name kept, in characters (Synapse's limit for profile fields).
pub const MAX_DISPLAY_NAME_CHARS: usize = 256;

/// A password hashed with the current scheme, ready to store.
#[derive(Debug, Clone)]
pub struct HashedPassword {
    pub version: i32,
    pub hash: String,
}

/// Hashes a new password, off the runtime (see [`crate::core::passwords`]). `enforce_policy` checks
/// the whole policy first; an operator may knowingly skip it (`--ignore-policy`), but never the
/// maximum length, which bounds the hashing work, nor the refusal of control characters, which
/// nobody could type to sign in.
pub async fn hash_password(
    state: &Core,
    password: &str,
    enforce_policy: bool,
) -> Result<HashedPassword, AccountError> {
    if enforce_policy {
        state.passwords.check_policy(password)?;
    }
    let (version, hash) = state.passwords.hash(password.to_owned()).await?;
    Ok(HashedPassword { version, hash })
}

/// Checks a username for a new account: the Matrix grammar, then the homeserver, which may hold
/// users the provider doesn't (imported, appservice users) and so has the last word on whether
/// the localpart is free (the homeserver contract). Run it before the transaction: it calls the
/// homeserver. (The provider's own table is checked by [`create_user`], in the transaction.)
pub async fn check_new_username(state: &Core, username: &str) -> Result<(), AccountError> {
    check_username(state, username)?;
    check_localpart_available(state, username).await
}

/// The grammar half of [`check_new_username`]: a Matrix localpart on this server. For a form
/// that reports a bad username before anything else (the registration page).
pub fn check_username(state: &Core, username: &str) -> Result<(), AccountError> {
    username::check(username, &state.settings.matrix.homeserver)?;
    Ok(())
}

/// The homeserver half of [`check_new_username`]: whether the homeserver has the localpart
/// free (it may hold users the provider doesn't). A call: run it before the transaction.
pub async fn check_localpart_available(state: &Core, username: &str) -> Result<(), AccountError> {
    match state.homeserver.is_localpart_available(username).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AccountError::UsernameTaken(username.to_owned())),
        Err(e) => Err(AccountError::Homeserver(e)),
    }
}

/// A plausible email address: one `@` between a non-empty local part and a domain with a dot,
/// no spaces or control characters, at most 254 bytes (RFC 5321 §4.5.3.1.3). Whether it is
/// reachable is for a confirmation mail to tell.
pub fn is_plausible_email(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    address.len() <= 254
        && !local.is_empty()
        && !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An address as stored: normalised as the account pages do ([`emails::checked_address`]).
fn checked_email(address: &str) -> Result<String, AccountError> {
    emails::checked_address(address).map_err(|_| AccountError::InvalidEmail(address.to_owned()))
}

/// A display name as kept: trimmed; `None` when blank or too long.
pub fn valid_display_name(name: &str) -> Option<&str> {
    let name = name.trim();
    (!name.is_empty() && name.chars().count() <= MAX_DISPLAY_NAME_CHARS).then_some(name)
}

/// An email address for a new account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEmail {
    pub address: String,
    /// Stored as confirmed (the operator vouches for it), so it is pushed to the homeserver.
    pub verified: bool,
}

/// What [`create_user`] makes.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub username: String,
    /// `None`: no password (the account signs in through an upstream provider, or gets one
    /// later with `set-password`).
    pub password: Option<HashedPassword>,
    pub emails: Vec<NewEmail>,
    /// May be granted `urn:synapse:admin:*` and `urn:mas:admin`.
    pub admin: bool,
    pub display_name: Option<String>,
}

/// Creates an account the way an operator does (admin API, `provider manage register-user`):
/// with or without a password, addresses verified or not, the admin flag and a display name;
/// the homeserver learns of it through the job queue. Call [`check_new_username`] before the
/// transaction; a username the provider ever issued is [`AccountError::UsernameTaken`] here.
pub async fn create_user(
    repo: &mut BoxRepository,
    new: &NewUser,
    now: DateTime<Utc>,
) -> Result<(User, AfterCommit), AccountError> {
    let addresses = new
        .emails
        .iter()
        .map(|e| Ok((checked_email(&e.address)?, e.verified)))
        .collect::<Result<Vec<_>, AccountError>>()?;
    // The account page's rule ([`profile::check_display_name`]).
    let display_name = match &new.display_name {
        Some(name) => {
            Some(profile::check_display_name(name).map_err(|_| AccountError::InvalidDisplayName)?)
        }
        None => None,
    };
    let mut user = match repo.users().add(&new.username).await {
        Ok(user) => user,
        Err(StorageError::Conflict(_)) => {
            return Err(AccountError::UsernameTaken(new.username.clone()))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(password) = &new.password {
        repo.user_passwords()
            .add(user.id, &password.hash, password.version, None)
            .await?;
    }
    for (address, verified) in &addresses {
        match repo.user_emails().add(user.id, address).await {
            Ok(added) if *verified => {
                repo.user_emails().confirm(added.id).await?;
            }
            Ok(_) | Err(StorageError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if new.admin {
        user = repo.users().set_can_request_admin(user.id, true).await?;
    }
    if let Some(name) = display_name {
        user = repo.users().set_display_name(user.id, Some(name)).await?;
    }
    let mut jobs = AfterCommit::default();
    let task = Task::ProvisionUser { user_id: user.id };
    jobs.push(provisioning::enqueue(repo, &task, now).await?);
    Ok((user, jobs))
}

/// Sets a new password (the newest one is in force). Sessions stay: the operator ends them
/// with [`end_all_sessions`] when the password was compromised.
pub async fn set_password(
    repo: &mut BoxRepository,
    user: &User,
    password: &HashedPassword,
) -> Result<(), StorageError> {
    repo.user_passwords()
        .add(user.id, &password.hash, password.version, None)
        .await?;
    Ok(())
}

/// An operator sets a user's password (admin API, `provider manage set-password`): the new one
/// is in force at once, recovery links mailed before it stop working, and every browser
/// session of the user ends (issue 14, finding 10: whoever signed in with the old password is
/// signed out of the provider's pages; no session is the operator's to keep). Matrix devices
/// stay, as after a change on the account page; the operator ends them with
/// [`end_all_sessions`] when the password was compromised. Returns how many browser sessions
/// ended.
pub async fn reset_password(
    repo: &mut BoxRepository,
    user: &User,
    password: &HashedPassword,
) -> Result<u64, StorageError> {
    set_password(repo, user, password).await?;
    repo.recovery_tickets()
        .consume_all_for_user(user.id)
        .await?;
    repo.browser_sessions().finish_all_for_user(user.id).await
}

/// Locks an account (or unlocks it, `locked: false`). A lock keeps the sessions, as MAS does:
/// while it lasts the user can't sign in and every token of theirs is inactive (introspection
/// and userinfo don't find tokens of locked users), and the homeserver is told (`locked`, so it
/// answers `M_USER_LOCKED`); unlocking brings the same tokens back.
pub async fn set_locked(
    repo: &mut BoxRepository,
    user: &User,
    locked: bool,
    now: DateTime<Utc>,
) -> Result<(User, AfterCommit), StorageError> {
    let user = repo.users().set_locked(user.id, locked).await?;
    let mut jobs = AfterCommit::default();
    let task = Task::ProvisionUser { user_id: user.id };
    jobs.push(provisioning::enqueue(repo, &task, now).await?);
    Ok((user, jobs))
}

/// Reactivates a deactivated account: the homeserver reactivates the user and gets their
/// profile again. Their sessions ended with the deactivation and stay ended; a lock stays.
pub async fn reactivate(
    repo: &mut BoxRepository,
    user: &User,
    now: DateTime<Utc>,
) -> Result<(User, AfterCommit), StorageError> {
    let user = repo.users().set_deactivated(user.id, false).await?;
    let mut jobs = AfterCommit::default();
    let task = Task::ReactivateUser { user_id: user.id };
    jobs.push(provisioning::enqueue(repo, &task, now).await?);
    Ok((user, jobs))
}

/// Allows (`admin: true`) or stops a user being granted the admin scopes (`urn:synapse:admin:*`
/// and `urn:mas:admin`). Demoting also ends the sessions that hold one of them (OAuth 2.0
/// sessions with such a scope, compat sessions acting as Synapse administrator): a token issued
/// while the user was an administrator must not keep acting as one.
pub async fn set_admin(
    repo: &mut BoxRepository,
    user: &User,
    admin: bool,
    now: DateTime<Utc>,
) -> Result<(User, AfterCommit), StorageError> {
    let user = repo.users().set_can_request_admin(user.id, admin).await?;
    let mut jobs = AfterCommit::default();
    if !admin {
        for session in repo.oauth2_sessions().list_active_for_user(user.id).await? {
            if scope::asks_for_admin(&session.scope) {
                jobs.add(end_oauth2_session(repo, session.id, now).await?);
            }
        }
        for session in repo.compat_sessions().list_active_for_user(user.id).await? {
            if session.is_synapse_admin {
                jobs.push(end_compat_session(repo, &session, now).await?);
            }
        }
    }
    Ok((user, jobs))
}

/// Is password recovery ("Forgot password?") offered? Only when the configuration enables it
/// and mail is delivered (a recovery link is mailed).
pub fn password_recovery_offered(core: &Core) -> bool {
    core.settings.account.password_recovery_enabled && core.mailer.delivers()
}

/// Does the configuration let users do what this account-management action does (MSC4191)?
/// `Err` says why not, for the page that refuses it.
pub fn action_allowed(action: Action, account: &AccountConfig) -> Result<(), &'static str> {
    let (allowed, refusal) = match action {
        Action::Emails => (
            account.email_change_allowed,
            "Email addresses can't be added or removed on this server.",
        ),
        Action::Password => (
            account.password_change_allowed,
            "Passwords can't be changed on this server.",
        ),
        Action::AccountDeactivate => (
            account.account_deactivation_allowed,
            "Accounts can't be deactivated by their users on this server.",
        ),
        _ => (true, ""),
    };
    if allowed {
        Ok(())
    } else {
        Err(refusal)
    }
}

/// The [`ACTIONS`] this configuration serves (MSC4191 `account_management_actions_supported`):
/// all of them, but `org.matrix.account_deactivate` only when users may deactivate their
/// account.
pub fn supported_actions(account: &AccountConfig) -> Vec<&'static str> {
    ACTIONS
        .iter()
        .copied()
        .filter(|name| Action::parse(name).is_some_and(|a| action_allowed(a, account).is_ok()))
        .collect()
}

/// The longest registration token value an operator may choose.
pub const MAX_REGISTRATION_TOKEN_LEN: usize = 64;

/// A registration token value an operator chooses (admin API, `provider manage
/// issue-registration-token`): typed or pasted by people, so 1 to
/// [`MAX_REGISTRATION_TOKEN_LEN`] unreserved characters (RFC 3986 §2.3).
pub fn is_valid_registration_token(value: &str) -> bool {
    (1..=MAX_REGISTRATION_TOKEN_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A compat access token issued by an operator ([`issue_compat_token`]).
#[derive(Debug)]
pub struct IssuedCompatToken {
    /// The token (`mct_…`), shown once: only its hash is stored.
    pub access_token: String,
    pub session: CompatSession,
}

/// Issues a legacy (compat) access token for a user's device, like MAS's
/// `issue-compatibility-token`: a new compat session for the device, started as every compat
/// login starts one ([`sessions::start_compat_session`]: the user's live session holding the
/// device, compat or OAuth 2.0, ends first, its device staying), with an access token that
/// never expires (as a legacy login without refresh, SPEC-NOTES.md), acting as Synapse
/// administrator when `synapse_admin`. The device is created on the homeserver by a device sync
/// in the job queue. Run the returned jobs after the commit.
pub async fn issue_compat_token(
    repo: &mut BoxRepository,
    user: &User,
    device_id: &str,
    synapse_admin: bool,
    now: DateTime<Utc>,
    rng: &mut impl RngCore,
) -> Result<(IssuedCompatToken, AfterCommit), StorageError> {
    let (session, mut jobs) =
        sessions::start_compat_session(repo, user.id, device_id, None, synapse_admin, None, now)
            .await?;
    let access_token = TokenKind::CompatAccessToken.generate(rng);
    repo.compat_tokens()
        .add_access(session.id, &sha256(&access_token), None)
        .await?;
    let task = Task::SyncDevices { user_id: user.id };
    jobs.push(provisioning::enqueue(repo, &task, now).await?);
    Ok((
        IssuedCompatToken {
            access_token,
            session,
        },
        jobs,
    ))
}

/// Adds an address to a user without any mail: the operator vouches for it when `verified`
/// (then the homeserver gets it too). [`AccountError::EmailTaken`] when the user has it.
pub async fn add_email(
    repo: &mut BoxRepository,
    user: &User,
    address: &str,
    verified: bool,
    now: DateTime<Utc>,
) -> Result<(UserEmail, AfterCommit), AccountError> {
    let address = checked_email(address)?;
    let mut email = match repo.user_emails().add(user.id, &address).await {
        Ok(email) => email,
        Err(StorageError::Conflict(_)) => return Err(AccountError::EmailTaken(address)),
        Err(e) => return Err(e.into()),
    };
    let mut jobs = AfterCommit::default();
    if verified {
        email = repo.user_emails().confirm(email.id).await?;
        let task = Task::ProvisionUser { user_id: user.id };
        jobs.push(provisioning::enqueue(repo, &task, now).await?);
    }
    Ok((email, jobs))
}

/// Marks an address verified (the first confirmation time stays); the homeserver gets the
/// user's new list of addresses.
pub async fn verify_email(
    repo: &mut BoxRepository,
    email: &UserEmail,
    now: DateTime<Utc>,
) -> Result<(UserEmail, AfterCommit), StorageError> {
    let email = repo.user_emails().confirm(email.id).await?;
    let mut jobs = AfterCommit::default();
    let task = Task::ProvisionUser {
        user_id: email.user_id,
    };
    jobs.push(provisioning::enqueue(repo, &task, now).await?);
    Ok((email, jobs))
}

/// Removes an address; the homeserver gets the new list when it was a confirmed one. `false`
/// when it was gone already.
pub async fn remove_email(
    repo: &mut BoxRepository,
    email: &UserEmail,
    now: DateTime<Utc>,
) -> Result<(bool, AfterCommit), StorageError> {
    let removed = repo.user_emails().remove(email.id).await?;
    let mut jobs = AfterCommit::default();
    if removed && email.confirmed_at.is_some() {
        let task = Task::ProvisionUser {
            user_id: email.user_id,
        };
        jobs.push(provisioning::enqueue(repo, &task, now).await?);
    }
    Ok((removed, jobs))
}

/// Has the homeserver provision every user again (profile, addresses, lock, deactivation), a
/// page of users per transaction; `report` hears of each user once their job ran (or stayed
/// queued: the homeserver is down, the worker retries). For `provider manage
/// provision-all-users`, after a homeserver was restored from a backup or replaced.
pub async fn provision_all(
    state: &Core,
    mut report: impl FnMut(&User, Outcome),
) -> Result<(), StorageError> {
    const PAGE: u32 = 200;
    let mut after = None;
    loop {
        let now = state.storage.entropy().clock.now();
        let mut repo = state.storage.begin().await?;
        let users = repo.users().list_page(after, PAGE).await?;
        let Some(last) = users.last() else {
            return Ok(());
        };
        after = Some(last.id);
        let mut jobs = Vec::with_capacity(users.len());
        for user in &users {
            let task = Task::ProvisionUser { user_id: user.id };
            let mut one = AfterCommit::default();
            one.push(provisioning::enqueue(&mut repo, &task, now).await?);
            jobs.push(one);
        }
        repo.commit().await?;
        for (user, job) in users.iter().zip(jobs) {
            for outcome in job.run_and_report(state).await? {
                report(user, outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_registration_token_values() {
        assert!(is_valid_registration_token("team-2026_spring.~"));
        assert!(!is_valid_registration_token(""));
        assert!(!is_valid_registration_token("has space"));
        assert!(!is_valid_registration_token(
            &"a".repeat(MAX_REGISTRATION_TOKEN_LEN + 1)
        ));
    }
}
