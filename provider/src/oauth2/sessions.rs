//! The end of an OAuth 2.0 session, written once for every way a session ends early.

use ulid::Ulid;

use crate::storage::{BoxRepository, StorageError};

/// Ends an OAuth 2.0 session: revokes all its access and refresh tokens and finishes it, in the
/// caller's transaction (which commits). A session finished already stays as it was; its
/// remaining tokens are revoked all the same.
///
/// The one place a session is ended from, whatever ends it:
/// - the reuse of a rotated refresh token ([`super::token::refresh_token`], RFC 9700 §4.14.2);
/// - the replay of an authorization code ([`super::token::authorization_code`], RFC 6749
///   §4.1.2: revoke what the code issued);
/// - the revocation of a refresh token ([`super::revocation`], RFC 7009 §2.1).
///
/// Later, the deletion of the session's Matrix device on the homeserver hooks in here, so every
/// way a session ends also removes its device.
pub(crate) async fn end_oauth2_session(
    repo: &mut BoxRepository,
    session_id: Ulid,
) -> Result<(), StorageError> {
    repo.access_tokens()
        .revoke_all_for_session(session_id)
        .await?;
    repo.refresh_tokens()
        .revoke_all_for_session(session_id)
        .await?;
    repo.oauth2_sessions().finish(session_id).await?;
    Ok(())
}
