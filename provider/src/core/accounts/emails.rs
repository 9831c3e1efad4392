//! Email addresses a user adds themselves, confirmed by a code mailed to them, and password
//! recovery links mailed to a confirmed address.
//!
//! The operations work in the caller's transaction, like the rest of [`crate::core::accounts`], and
//! hand back the secret to mail (a code, a ticket): the caller commits, then mails it (see
//! [`crate::core::email`]), so a mail never names a code the database doesn't have. Codes and
//! tickets are stored as SHA-256 hashes only.
//!
//! A code is 6 digits, valid [`CODE_LIFETIME_MINUTES`], for [`MAX_CODE_ATTEMPTS`] tries: each
//! try is counted before the comparison, in the same statement that checks the code can still
//! be tried, and the caller commits the count whatever the outcome, so guessing stops after a
//! few tries even with concurrent requests. Only the newest code of an address counts.

use chrono::{DateTime, Duration, Utc};
use rand::{Rng as _, RngCore};
use subtle::ConstantTimeEq as _;
use ulid::Ulid;

use crate::{
    core::{
        email::{self, MailError},
        matrix::provisioning::AfterCommit,
    },
    crypto::sha256,
    domain::token::random_code,
    storage::{BoxRepository, RecoveryTicket, StorageError, TokenHash, User, UserEmail},
};

/// How long a mailed code works.
pub const CODE_LIFETIME_MINUTES: i64 = 15;
/// How many codes may be tried against one mailed code.
pub const MAX_CODE_ATTEMPTS: i32 = 5;
/// The digits of a code.
pub const CODE_DIGITS: usize = 6;
/// How many addresses one account may have.
pub const MAX_EMAILS_PER_USER: usize = 10;
/// How long a password recovery link works.
pub const RECOVERY_LIFETIME_MINUTES: i64 = 60;
/// The length of a recovery ticket (base62: about 190 bits).
const TICKET_CHARS: usize = 32;

/// OIDC Core §5.4: the address the `email` scope releases, at the UserInfo endpoint and in the
/// ID token alike: the user's first confirmed one. Only confirmed addresses are released, so
/// `email_verified` is always true; `None` when the user has none.
pub async fn released_email(
    repo: &mut BoxRepository,
    user_id: Ulid,
) -> Result<Option<String>, StorageError> {
    let emails = repo.user_emails().list_for_user(user_id).await?;
    Ok(emails
        .into_iter()
        .find(|e| e.confirmed_at.is_some())
        .map(|e| e.email))
}

/// A new code: [`CODE_DIGITS`] decimal digits, uniformly drawn.
pub fn generate_code(rng: &mut impl RngCore) -> String {
    (0..CODE_DIGITS)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

/// A code as typed: the digits, with the spaces or dashes people add dropped; `None` unless
/// that leaves exactly [`CODE_DIGITS`] digits and nothing else.
pub fn normalize_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '\u{a0}'))
        .collect();
    (code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// How a code is stored and compared.
pub fn code_hash(code: &str) -> TokenHash {
    sha256(code)
}

/// Does a typed code match a stored hash? In constant time; a malformed code never matches.
fn matches(typed: &str, stored: &TokenHash) -> bool {
    normalize_code(typed).is_some_and(|code| bool::from(code_hash(&code).ct_eq(stored)))
}

/// An address a user typed, checked and normalised (see [`email::normalize_address`]), and
/// plausible as a real one (a dotted domain, [`super::is_plausible_email`]).
pub fn checked_address(typed: &str) -> Result<String, MailError> {
    let address = email::normalize_address(typed)?;
    if super::is_plausible_email(&address) {
        Ok(address)
    } else {
        Err(MailError::Address(address))
    }
}

/// Why an address can't be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddRefusal {
    /// The user has it already.
    AlreadyAdded,
    /// The user has [`MAX_EMAILS_PER_USER`] addresses.
    TooMany,
}

/// Adds an unconfirmed address to a user, with a fresh code to mail to it.
pub async fn start_adding(
    repo: &mut BoxRepository,
    user: &User,
    address: &str,
    now: DateTime<Utc>,
    rng: &mut impl RngCore,
) -> Result<Result<(UserEmail, String), AddRefusal>, StorageError> {
    let existing = repo.user_emails().list_for_user(user.id).await?;
    if existing.iter().any(|e| e.email == address) {
        return Ok(Err(AddRefusal::AlreadyAdded));
    }
    if existing.len() >= MAX_EMAILS_PER_USER {
        return Ok(Err(AddRefusal::TooMany));
    }
    let added = match repo.user_emails().add(user.id, address).await {
        Ok(added) => added,
        Err(StorageError::Conflict(_)) => return Ok(Err(AddRefusal::AlreadyAdded)),
        Err(e) => return Err(e),
    };
    let code = new_code(repo, added.id, now, rng).await?;
    Ok(Ok((added, code)))
}

/// A fresh code for an address (the earlier ones stop counting); returns it, to mail.
pub async fn new_code(
    repo: &mut BoxRepository,
    user_email_id: Ulid,
    now: DateTime<Utc>,
    rng: &mut impl RngCore,
) -> Result<String, StorageError> {
    let code = generate_code(rng);
    repo.user_email_verifications()
        .add(
            user_email_id,
            &code_hash(&code),
            now + Duration::minutes(CODE_LIFETIME_MINUTES),
        )
        .await?;
    Ok(code)
}

/// What became of a code typed for an address.
#[derive(Debug)]
pub enum CodeCheck {
    /// Right: the address is confirmed; the homeserver gets it through these jobs.
    Confirmed(UserEmail, AfterCommit),
    /// Wrong; this many tries are left with this code.
    Wrong { attempts_left: i32 },
    /// The code expired: ask for a new one.
    Expired,
    /// The code was tried [`MAX_CODE_ATTEMPTS`] times: ask for a new one.
    TooManyAttempts,
    /// No code was sent for this address, or it was used.
    NoCode,
    /// The address is confirmed already.
    AlreadyConfirmed,
}

/// Tries a typed code against the newest code of the address `email` (the caller checked the
/// address is the signed-in user's). The attempt is written in the caller's transaction, which
/// it commits whatever the outcome.
pub async fn confirm_with_code(
    repo: &mut BoxRepository,
    email: &UserEmail,
    typed: &str,
    now: DateTime<Utc>,
) -> Result<CodeCheck, StorageError> {
    if email.confirmed_at.is_some() {
        return Ok(CodeCheck::AlreadyConfirmed);
    }
    let Some(latest) = repo.user_email_verifications().latest(email.id).await? else {
        return Ok(CodeCheck::NoCode);
    };
    let Some(tried) = repo
        .user_email_verifications()
        .record_attempt(latest.id, MAX_CODE_ATTEMPTS)
        .await?
    else {
        return Ok(if latest.consumed_at.is_some() {
            CodeCheck::NoCode
        } else if latest.expires_at <= now {
            CodeCheck::Expired
        } else {
            CodeCheck::TooManyAttempts
        });
    };
    if !matches(typed, &tried.code_hash) {
        return Ok(CodeCheck::Wrong {
            attempts_left: MAX_CODE_ATTEMPTS - tried.attempts,
        });
    }
    if !repo.user_email_verifications().consume(tried.id).await? {
        // Used or expired between the two statements (a concurrent request won).
        return Ok(CodeCheck::NoCode);
    }
    let (confirmed, jobs) = super::verify_email(repo, email, now).await?;
    Ok(CodeCheck::Confirmed(confirmed, jobs))
}

/// What became of a code typed for a pending registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationCodeCheck {
    /// Right, and the registration is marked completed: create the account now, in the same
    /// transaction.
    Right,
    Wrong {
        attempts_left: i32,
    },
    Expired,
    TooManyAttempts,
    /// Completed already (the account exists, or an earlier attempt created it).
    Completed,
    /// No such pending registration.
    Unknown,
}

/// Tries a typed code against a pending registration, counting the attempt (commit it whatever
/// the outcome); on [`RegistrationCodeCheck::Right`] the registration is completed.
pub async fn check_registration_code(
    repo: &mut BoxRepository,
    id: Ulid,
    typed: &str,
    now: DateTime<Utc>,
) -> Result<RegistrationCodeCheck, StorageError> {
    let Some(tried) = repo
        .pending_registrations()
        .record_attempt(id, MAX_CODE_ATTEMPTS)
        .await?
    else {
        // Not counted: read it only to say why.
        return Ok(match repo.pending_registrations().lookup(id).await? {
            None => RegistrationCodeCheck::Unknown,
            Some(pending) if pending.completed_at.is_some() => RegistrationCodeCheck::Completed,
            Some(pending) if pending.expires_at <= now => RegistrationCodeCheck::Expired,
            Some(_) => RegistrationCodeCheck::TooManyAttempts,
        });
    };
    if !matches(typed, &tried.code_hash) {
        return Ok(RegistrationCodeCheck::Wrong {
            attempts_left: MAX_CODE_ATTEMPTS - tried.attempts,
        });
    }
    if !repo.pending_registrations().complete(id).await? {
        return Ok(RegistrationCodeCheck::Completed);
    }
    Ok(RegistrationCodeCheck::Right)
}

/// A recovery ticket to mail: the link's secret, and where it goes.
#[derive(Debug, Clone)]
pub struct RecoveryToSend {
    pub ticket: String,
    /// The address to mail it to.
    pub email: String,
    /// The account it recovers.
    pub username: String,
}

/// Recovery tickets for every active account with `address` confirmed (usually one), to mail
/// to it. Nothing for an address no active account has confirmed: the caller answers the
/// same either way, so the page doesn't tell which addresses have accounts.
pub async fn start_recovery(
    repo: &mut BoxRepository,
    address: &str,
    now: DateTime<Utc>,
    rng: &mut impl RngCore,
) -> Result<Vec<RecoveryToSend>, StorageError> {
    let mut tickets = Vec::new();
    for email in repo.user_emails().find_confirmed(address).await? {
        let Some(user) = repo.users().lookup(email.user_id).await? else {
            continue;
        };
        if !user.is_active() {
            continue;
        }
        let ticket = random_code(rng, TICKET_CHARS);
        repo.recovery_tickets()
            .add(
                user.id,
                email.id,
                &sha256(&ticket),
                now + Duration::minutes(RECOVERY_LIFETIME_MINUTES),
            )
            .await?;
        tickets.push(RecoveryToSend {
            ticket,
            email: email.email,
            username: user.username,
        });
    }
    Ok(tickets)
}

/// Why a recovery link can't set a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketRefusal {
    /// No such ticket (mistyped, or its address was removed).
    Unknown,
    /// Used already.
    Used,
    Expired,
    /// Its account is locked or deactivated meanwhile.
    Inactive,
}

/// The ticket of a recovery link and its account, if it can still set a password at `now`.
pub async fn find_recovery(
    repo: &mut BoxRepository,
    ticket: &str,
    now: DateTime<Utc>,
) -> Result<Result<(RecoveryTicket, User), TicketRefusal>, StorageError> {
    let Some(found) = repo
        .recovery_tickets()
        .find_by_ticket_hash(&sha256(ticket))
        .await?
    else {
        return Ok(Err(TicketRefusal::Unknown));
    };
    if found.consumed_at.is_some() {
        return Ok(Err(TicketRefusal::Used));
    }
    if !found.is_usable(now) {
        return Ok(Err(TicketRefusal::Expired));
    }
    match repo.users().lookup(found.user_id).await? {
        Some(user) if user.is_active() => Ok(Ok((found, user))),
        _ => Ok(Err(TicketRefusal::Inactive)),
    }
}

/// Sets the password a recovery link was opened for: uses the ticket (once), stores the new
/// password, voids the user's other recovery links, and ends every session of the user (whoever
/// knew the old password is signed out). `Ok(None)` when the ticket was used or expired
/// meanwhile.
pub async fn recover_password(
    repo: &mut BoxRepository,
    ticket: &RecoveryTicket,
    user: &User,
    password: &super::HashedPassword,
    now: DateTime<Utc>,
) -> Result<Option<AfterCommit>, StorageError> {
    if !repo.recovery_tickets().consume(ticket.id).await? {
        return Ok(None);
    }
    super::set_password(repo, user, password).await?;
    repo.recovery_tickets()
        .consume_all_for_user(user.id)
        .await?;
    Ok(Some(super::end_all_sessions(repo, user.id, now).await?))
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn codes_are_six_digits_and_typed_loosely() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let code = generate_code(&mut rng);
            assert_eq!(code.len(), CODE_DIGITS);
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
            assert!(matches(&code, &code_hash(&code)));
        }
        assert_eq!(normalize_code(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalize_code("123-456").as_deref(), Some("123456"));
        for bad in ["", "12345", "1234567", "12345a", "١٢٣٤٥٦", "123 45"] {
            assert_eq!(normalize_code(bad), None, "{bad}");
        }
        assert!(!matches("654321", &code_hash("123456")));
        assert!(!matches("abc", &code_hash("abc")));
    }

    #[test]
    fn addresses_typed_by_users() {
        assert_eq!(
            checked_address(" Bob@Example.org").unwrap(),
            "Bob@example.org"
        );
        assert!(
            checked_address("bob@localhost").is_err(),
            "no dotted domain"
        );
        assert!(checked_address("bob").is_err());
    }
}
