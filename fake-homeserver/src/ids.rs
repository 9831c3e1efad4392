//! Matrix user identifiers: `@<localpart>:<server_name>` (Matrix spec, appendices "User
//! Identifiers").

use crate::error::MatrixError;

/// The longest a full user ID may be (Matrix spec, "User Identifiers": 255 bytes).
const MAX_USER_ID_LENGTH: usize = 255;

/// `@<localpart>:<server_name>`.
pub(crate) fn user_id(localpart: &str, server_name: &str) -> String {
    format!("@{localpart}:{server_name}")
}

/// Checks a localpart the way Synapse's `check_username` does before creating a user.
/// Allowed characters are `a-z 0-9 . _ = - / +` (Matrix spec v1.8 added `+`, MSC4009); Synapse
/// also refuses a leading `_` (reserved for application services), all-numeric localparts
/// (reserved for guests) and user IDs longer than 255 bytes. Answers 400 `M_INVALID_USERNAME`.
pub(crate) fn check_localpart(localpart: &str, server_name: &str) -> Result<(), MatrixError> {
    if localpart.is_empty() {
        return Err(MatrixError::invalid_username("User ID cannot be empty"));
    }
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '.' | '_' | '=' | '-' | '/' | '+')
    };
    if !localpart.chars().all(allowed) {
        return Err(MatrixError::invalid_username(
            "User ID can only contain characters a-z, 0-9, or '=_-./+'",
        ));
    }
    if localpart.starts_with('_') {
        return Err(MatrixError::invalid_username(
            "User ID may not begin with _",
        ));
    }
    let digits = localpart.strip_prefix(['-', '+']).unwrap_or(localpart);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(MatrixError::invalid_username(
            "Numeric user IDs are reserved for guest users.",
        ));
    }
    if user_id(localpart, server_name).len() > MAX_USER_ID_LENGTH {
        return Err(MatrixError::invalid_username(
            "User ID may not be longer than 255 characters",
        ));
    }
    Ok(())
}

/// Splits a user ID of this server into its localpart (the legacy admin API's `{mxid}` path
/// parameter). Malformed IDs and IDs of other servers are 400 `M_INVALID_PARAM` (homeserver
/// contract: the admin API only manages local users).
pub(crate) fn local_localpart(mxid: &str, server_name: &str) -> Result<String, MatrixError> {
    let rest = mxid
        .strip_prefix('@')
        .ok_or_else(|| MatrixError::invalid_param("Invalid user ID"))?;
    let (localpart, server) = rest
        .split_once(':')
        .ok_or_else(|| MatrixError::invalid_param("Invalid user ID"))?;
    if localpart.is_empty() {
        return Err(MatrixError::invalid_param("Invalid user ID"));
    }
    if server != server_name {
        return Err(MatrixError::invalid_param("Can only look up local users"));
    }
    Ok(localpart.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localparts_follow_the_matrix_grammar() {
        for ok in ["alice", "a.b_c=d-e/f", "bob+work", "x1", "1a"] {
            assert!(check_localpart(ok, "hs").is_ok(), "{ok}");
        }
        for bad in [
            "", "Alice", "al ice", "al:ice", "élise", "_bot", "1234", "-12",
        ] {
            assert_eq!(
                check_localpart(bad, "hs").unwrap_err().errcode(),
                "M_INVALID_USERNAME",
                "{bad}"
            );
        }
        // "@" + localpart + ":hs" may be 255 bytes, not 256.
        assert!(check_localpart(&"a".repeat(251), "hs").is_ok());
        assert!(check_localpart(&"a".repeat(252), "hs").is_err());
    }

    #[test]
    fn mxids_must_be_local() {
        assert_eq!(local_localpart("@alice:hs", "hs").unwrap(), "alice");
        assert_eq!(
            local_localpart("@alice:other", "hs").unwrap_err().errcode(),
            "M_INVALID_PARAM"
        );
        assert!(local_localpart("alice:hs", "hs").is_err());
        assert!(local_localpart("@alice", "hs").is_err());
        assert!(local_localpart("@:hs", "hs").is_err());
        // The server name may carry a port.
        assert_eq!(
            local_localpart("@bob:localhost:8008", "localhost:8008").unwrap(),
            "bob"
        );
    }
}
