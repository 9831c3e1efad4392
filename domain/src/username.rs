//! Usernames are Matrix localparts (Matrix spec, Appendices, "User Identifiers"): the user ID is
//! `@<localpart>:<server name>`, at most 255 bytes, and a localpart uses only `a-z`, `0-9`, `.`,
//! `_`, `=`, `-`, `/` and `+`.

/// The longest a Matrix user ID may be, in bytes.
pub const MAX_USER_ID_LENGTH: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("choose a username")]
    Empty,
    #[error("use only lower-case letters, digits and . _ = - / + (not `{0}`)")]
    InvalidCharacter(char),
    #[error("the username is too long: the full user ID may have at most 255 characters")]
    TooLong,
}

/// Checks a username for a homeserver named `server_name`.
pub fn check(username: &str, server_name: &str) -> Result<(), UsernameError> {
    if username.is_empty() {
        return Err(UsernameError::Empty);
    }
    if let Some(c) = username
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'))
    {
        return Err(UsernameError::InvalidCharacter(c));
    }
    // "@" + localpart + ":" + server name
    if username.len() + server_name.len() + 2 > MAX_USER_ID_LENGTH {
        return Err(UsernameError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_matrix_grammar() {
        assert_eq!(check("alice", "example.org"), Ok(()));
        assert_eq!(check("a.b_c=d-e/f+g9", "example.org"), Ok(()));
        assert_eq!(check("", "example.org"), Err(UsernameError::Empty));
        assert_eq!(
            check("Alice", "example.org"),
            Err(UsernameError::InvalidCharacter('A'))
        );
        assert_eq!(
            check("al ice", "example.org"),
            Err(UsernameError::InvalidCharacter(' '))
        );
        assert_eq!(
            check("al:ice", "example.org"),
            Err(UsernameError::InvalidCharacter(':'))
        );
        assert_eq!(check(&"a".repeat(242), "example.org"), Ok(()));
        assert_eq!(
            check(&"a".repeat(243), "example.org"),
            Err(UsernameError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn valid_localparts_pass(name in "[a-z0-9._=/+-]{1,40}") {
            prop_assert_eq!(check(&name, "example.org"), Ok(()));
        }

        #[test]
        fn never_panics_and_refuses_anything_else(name in "\\PC{0,60}") {
            let ok = check(&name, "example.org").is_ok();
            let grammar = !name.is_empty() && name.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'));
            prop_assert_eq!(ok, grammar);
        }
    }
}
