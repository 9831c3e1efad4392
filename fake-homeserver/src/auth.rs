//! Authenticating client requests by introspecting their bearer token at the provider
//! (MSC3861; homeserver contract), then checking the answer against the homeserver's own state.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio::time::Instant;

use crate::error::MatrixError;
use crate::ids::user_id;
use crate::secret::access_token;
use crate::store::Store;
use crate::upstream::Introspection;
use crate::AppState;

/// The C-S API scope (MSC2967), stable and unstable forms.
const SCOPE_API: &str = "urn:matrix:client:api:*";
const SCOPE_API_UNSTABLE: &str = "urn:matrix:org.matrix.msc2967.client:api:*";
/// Device scope prefixes (MSC2967), stable and unstable forms.
const SCOPE_DEVICE_PREFIX: &str = "urn:matrix:client:device:";
const SCOPE_DEVICE_PREFIX_UNSTABLE: &str = "urn:matrix:org.matrix.msc2967.client:device:";
/// The Synapse admin scope: the requester is a server admin.
const SCOPE_SYNAPSE_ADMIN: &str = "urn:synapse:admin:*";
/// Synapse's bounds on a device ID taken from an introspection answer.
const MAX_DEVICE_ID_LENGTH: usize = 255;

/// Who is calling: the outcome of a successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub localpart: String,
    pub user_id: String,
    /// The token's device. Synapse accepts tokens without one (e.g. personal tokens), so do we.
    pub device_id: Option<String>,
    /// Holds `urn:synapse:admin:*`.
    pub is_admin: bool,
    pub scopes: BTreeSet<String>,
}

/// A refused token, and whether its cached introspection must be dropped.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) error: MatrixError,
    pub(crate) forget_token: bool,
}

impl From<MatrixError> for Refusal {
    fn from(error: MatrixError) -> Self {
        Self {
            error,
            forget_token: false,
        }
    }
}

/// The device the token acts for: the explicit `device_id` field (sent because we ask with
/// `X-MAS-Supports-Device-Id: 1`), else the single device scope, stable or unstable (MSC2967).
/// Several different device scopes, or an out-of-bounds ID, are the provider's fault: 500
/// `M_FORBIDDEN`, as in Synapse (`AuthError(500, …)` in `synapse/api/auth/mas.py`).
fn device_of(
    introspection: &Introspection,
    scopes: &BTreeSet<String>,
) -> Result<Option<String>, MatrixError> {
    let device_id = match &introspection.body.device_id {
        Some(device_id) => Some(device_id.clone()),
        None => {
            let ids: BTreeSet<&str> = scopes
                .iter()
                .filter_map(|scope| {
                    scope
                        .strip_prefix(SCOPE_DEVICE_PREFIX)
                        .or_else(|| scope.strip_prefix(SCOPE_DEVICE_PREFIX_UNSTABLE))
                })
                .collect();
            if ids.len() > 1 {
                return Err(MatrixError::provider_fault("Multiple device IDs in scope"));
            }
            ids.into_iter().next().map(str::to_owned)
        }
    };
    if let Some(id) = &device_id {
        if id.is_empty() || id.len() > MAX_DEVICE_ID_LENGTH {
            return Err(MatrixError::provider_fault(
                "Invalid device ID in introspection result",
            ));
        }
    }
    Ok(device_id)
}

/// The checks on an introspection answer, in this order, applied to every request even when
/// the answer came from the cache (so changes on the homeserver take effect at once). Steps 1,
/// 2, 3 and 4 are Synapse's (`synapse/api/auth/mas.py`, `get_user_by_access_token`):
/// 1. the token is active and not past `expires_in` (RFC 7662 §2.2) → else 401 `M_UNKNOWN_TOKEN`;
/// 2. the scope grants the C-S API (MSC2967) → else 401 `M_UNKNOWN_TOKEN`;
/// 3. `username` is present and names a user of this homeserver → else 500 `M_FORBIDDEN` (the
///    provider's fault: Synapse's `AuthError(500, "User not found")`);
/// 4. the device, when the token names one, exists for that user → else 401 `M_UNKNOWN_TOKEN`
///    and the cached answer is dropped (homeserver contract: deleting the device is how a
///    logout takes effect despite the 2-minute cache);
/// 5. (the fake only, on purpose: Synapse does not look at these flags here and relies on the
///    provider answering inactive) not deactivated → else 403 `M_USER_DEACTIVATED`; not locked
///    → else 401 `M_USER_LOCKED` with `soft_logout: true`. This catches a provider that keeps
///    tokens of deactivated or locked users active (the contract suite states the difference).
pub(crate) fn evaluate(
    introspection: &Introspection,
    now: Instant,
    store: &Store,
    server_name: &str,
) -> Result<Requester, Refusal> {
    if !introspection.is_active(now) {
        return Err(MatrixError::unknown_token("Token is not active").into());
    }

    let scopes: BTreeSet<String> = introspection
        .body
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !scopes.contains(SCOPE_API) && !scopes.contains(SCOPE_API_UNSTABLE) {
        return Err(
            MatrixError::unknown_token("Token doesn't grant access to the Matrix C-S API").into(),
        );
    }

    let localpart = introspection.body.username.clone().ok_or_else(|| {
        MatrixError::provider_fault("Invalid username claim in the introspection result")
    })?;
    let user = store
        .user(&localpart)
        .ok_or_else(|| MatrixError::provider_fault("User not found"))?;

    let device_id = device_of(introspection, &scopes)?;
    if let Some(device_id) = &device_id {
        if !store.has_device(&localpart, device_id) {
            return Err(Refusal {
                error: MatrixError::unknown_token("Token is not active"),
                forget_token: true,
            });
        }
    }

    if user.deactivated {
        return Err(MatrixError::user_deactivated().into());
    }
    if user.locked {
        return Err(MatrixError::user_locked().into());
    }

    Ok(Requester {
        user_id: user_id(&localpart, server_name),
        localpart,
        device_id,
        is_admin: scopes.contains(SCOPE_SYNAPSE_ADMIN),
        scopes,
    })
}

/// Extracting a [`Requester`] authenticates the request: no token → 401 `M_MISSING_TOKEN`;
/// provider unreachable or answering nonsense → 503 `M_UNKNOWN` (as Synapse).
impl FromRequestParts<AppState> for Requester {
    type Rejection = MatrixError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = access_token(&parts.headers, parts.uri.query())?
            .ok_or_else(|| MatrixError::missing_token("Missing access token"))?;
        let introspection = state.upstream().introspect(&token).await.map_err(|error| {
            tracing::warn!(%error, "token introspection failed");
            MatrixError::unavailable("Unable to introspect the access token")
        })?;
        evaluate(
            &introspection,
            Instant::now(),
            state.store(),
            state.server_name(),
        )
        .map_err(|refusal| {
            if refusal.forget_token {
                state.upstream().forget(&token);
            }
            tracing::debug!(error = %refusal.error, "token refused");
            refusal.error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::IntrospectionBody;
    use std::time::Duration;

    fn answer(scope: &str, device_id: Option<&str>) -> Introspection {
        Introspection {
            body: IntrospectionBody {
                active: true,
                scope: Some(scope.into()),
                username: Some("alice".into()),
                device_id: device_id.map(str::to_owned),
                expires_in: Some(300),
            },
            retrieved_at: Instant::now(),
        }
    }

    fn store() -> Store {
        let store = Store::new();
        store.insert_device("alice", "DEV");
        store
    }

    fn refuse(i: &Introspection, store: &Store) -> MatrixError {
        evaluate(i, Instant::now(), store, "hs").unwrap_err().error
    }

    #[test]
    fn accepts_stable_and_unstable_forms() {
        let store = store();
        for scope in [
            "urn:matrix:client:api:* urn:matrix:client:device:DEV",
            "urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:DEV",
        ] {
            let r = evaluate(&answer(scope, None), Instant::now(), &store, "hs").unwrap();
            assert_eq!(r.user_id, "@alice:hs");
            assert_eq!(r.device_id.as_deref(), Some("DEV"));
            assert!(!r.is_admin);
        }
    }

    #[test]
    fn explicit_device_id_wins_and_admin_scope_is_read() {
        let store = store();
        let r = evaluate(
            &answer("urn:matrix:client:api:* urn:synapse:admin:*", Some("DEV")),
            Instant::now(),
            &store,
            "hs",
        )
        .unwrap();
        assert_eq!(r.device_id.as_deref(), Some("DEV"));
        assert!(r.is_admin);
    }

    #[test]
    fn checks_run_in_order() {
        let store = store();
        let mut inactive = answer("", None);
        inactive.body.active = false;
        assert_eq!(refuse(&inactive, &store).errcode(), "M_UNKNOWN_TOKEN");

        let expired = answer("urn:matrix:client:api:*", Some("DEV"));
        let later = expired.retrieved_at + Duration::from_secs(301);
        let refusal = evaluate(&expired, later, &store, "hs").unwrap_err();
        assert_eq!(refusal.error.errcode(), "M_UNKNOWN_TOKEN");

        assert_eq!(
            refuse(&answer("openid", Some("DEV")), &store).errcode(),
            "M_UNKNOWN_TOKEN"
        );

        // An unknown user is the provider's fault, as in Synapse: 500 `M_FORBIDDEN`.
        let mut stranger = answer("urn:matrix:client:api:*", Some("DEV"));
        stranger.body.username = Some("bob".into());
        let refusal = refuse(&stranger, &store);
        assert_eq!(
            (refusal.status().as_u16(), refusal.errcode()),
            (500, "M_FORBIDDEN")
        );

        // A missing device wins over the account flags (Synapse checks the device only).
        store.update_user("alice", |u| u.locked = true);
        let gone = answer("urn:matrix:client:api:*", Some("GONE"));
        let refusal = evaluate(&gone, Instant::now(), &store, "hs").unwrap_err();
        assert_eq!(refusal.error.errcode(), "M_UNKNOWN_TOKEN");
        assert!(refusal.forget_token);

        let ok = answer("urn:matrix:client:api:*", Some("DEV"));
        assert_eq!(refuse(&ok, &store).errcode(), "M_USER_LOCKED");
        store.update_user("alice", |u| u.deactivated = true);
        assert_eq!(refuse(&ok, &store).errcode(), "M_USER_DEACTIVATED");
        store.update_user("alice", |u| {
            u.deactivated = false;
            u.locked = false;
        });
        assert!(evaluate(&ok, Instant::now(), &store, "hs").is_ok());
    }

    #[test]
    fn device_scopes_must_agree() {
        let store = store();
        let i = answer(
            "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B",
            None,
        );
        assert_eq!(refuse(&i, &store).status().as_u16(), 500);
        // The same device in both forms is one device.
        let i = answer(
            "urn:matrix:client:api:* urn:matrix:client:device:DEV urn:matrix:org.matrix.msc2967.client:device:DEV",
            None,
        );
        assert!(evaluate(&i, Instant::now(), &store, "hs").is_ok());
    }

    #[test]
    fn tokens_without_device_are_accepted() {
        let store = store();
        let r = evaluate(
            &answer("urn:matrix:client:api:*", None),
            Instant::now(),
            &store,
            "hs",
        )
        .unwrap();
        assert_eq!(r.device_id, None);
    }
}
