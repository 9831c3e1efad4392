//! What a user changes on their own profile: the display name (pushed to the homeserver's
//! profile) and the password (with the current one, checked by the caller).

use chrono::{DateTime, Utc};

use super::{HashedPassword, MAX_DISPLAY_NAME_CHARS};
use crate::{
    core::matrix::provisioning::{self, AfterCommit, Task},
    storage::{BoxRepository, StorageError, User},
};

/// Why a display name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisplayNameError {
    #[error("enter a display name")]
    Empty,
    #[error("a display name has at most {MAX_DISPLAY_NAME_CHARS} characters")]
    TooLong,
    #[error("a display name can't hold control characters (line breaks, tabs…)")]
    ControlCharacters,
}

/// A display name as typed, as it is kept: trimmed, not blank, at most
/// [`MAX_DISPLAY_NAME_CHARS`] characters, without control characters (a profile field other
/// clients show on one line).
pub fn check_display_name(typed: &str) -> Result<&str, DisplayNameError> {
    let name = typed.trim();
    if name.is_empty() {
        Err(DisplayNameError::Empty)
    } else if name.chars().any(char::is_control) {
        Err(DisplayNameError::ControlCharacters)
    } else {
        super::valid_display_name(name).ok_or(DisplayNameError::TooLong)
    }
}

/// Sets the user's display name (checked with [`check_display_name`]) and has the homeserver
/// update the profile (`provision_user` sends it, the homeserver contract).
pub async fn set_display_name(
    repo: &mut BoxRepository,
    user: &User,
    display_name: &str,
    now: DateTime<Utc>,
) -> Result<(User, AfterCommit), StorageError> {
    let user = repo
        .users()
        .set_display_name(user.id, Some(display_name))
        .await?;
    let mut jobs = AfterCommit::default();
    let task = Task::ProvisionUser { user_id: user.id };
    jobs.push(provisioning::enqueue(repo, &task, now).await?);
    Ok((user, jobs))
}

/// Changes the password of a user who gave their current one: the new one is in force at once,
/// and the recovery links mailed before it stop working. Sessions stay: the user changes their
/// password from one of them.
pub async fn change_password(
    repo: &mut BoxRepository,
    user: &User,
    password: &HashedPassword,
) -> Result<(), StorageError> {
    super::set_password(repo, user, password).await?;
    repo.recovery_tickets()
        .consume_all_for_user(user.id)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(check_display_name("  Bob B. "), Ok("Bob B."));
        assert_eq!(check_display_name("   "), Err(DisplayNameError::Empty));
        assert_eq!(
            check_display_name("a\nb"),
            Err(DisplayNameError::ControlCharacters)
        );
        let long = "é".repeat(MAX_DISPLAY_NAME_CHARS + 1);
        assert_eq!(check_display_name(&long), Err(DisplayNameError::TooLong));
        let max = "é".repeat(MAX_DISPLAY_NAME_CHARS);
        assert_eq!(check_display_name(&max), Ok(max.as_str()));
    }
}
