//! Linked identities on the account page: the list (with a button per provider to link one
//! more), and `GET|POST /upstream/unlink/{link_id}` to remove one (a `GET` never changes
//! anything, RFC 9110 §9.2.1: it asks for confirmation, the form posts).
//!
//! The last way to sign in is never removed: an account without a password keeps its last
//! linked identity.

use axum::{
    extract::{Form, Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::PrivateCookieJar;
use serde::Deserialize;
use ulid::Ulid;

use crate::core::upstream::client::provider_name;
use crate::domain::after_sign_in::AfterSignIn;
use crate::endpoints::UPSTREAM_UNLINK;
use crate::http::kit;
use crate::{
    endpoints,
    http::{kit::signed_in, AppState},
    storage::{BoxRepository, StorageError, UpstreamLink, User},
};

#[derive(Debug, Default, Deserialize)]
pub struct UnlinkForm {
    #[serde(default)]
    csrf: String,
}

/// What the unlink pages know about the link.
struct Target {
    link: UpstreamLink,
    provider: String,
    /// Removing it would leave the account without a way to sign in.
    last_way_in: bool,
}

/// The signed-in user's link `link_id`, read on `repo` (the POST's transaction, so the
/// "last way in" check and the removal see the same rows), or the response to give instead.
async fn target(
    state: &AppState,
    repo: &mut BoxRepository,
    user: &User,
    link_id: &str,
) -> Result<Result<Target, Response>, StorageError> {
    let link = match Ulid::from_string(link_id) {
        Ok(id) => repo.upstream_links().lookup(id).await?,
        Err(_) => None,
    };
    let Some(link) = link.filter(|l| l.user_id == Some(user.id)) else {
        return Ok(Err(kit::error_page(
            &state.templates,
            &state.chrome(),
            StatusCode::NOT_FOUND,
            "No such linked account",
            "This identity is not linked to your account (any more).",
            None,
        )));
    };
    let has_password = repo.user_passwords().active(user.id).await?.is_some();
    let links = repo.upstream_links().list_for_user(user.id).await?.len();
    let provider = provider_name(repo, &[], link.provider_id).await?;
    Ok(Ok(Target {
        link,
        provider,
        last_way_in: !has_password && links <= 1,
    }))
}

/// `GET /upstream/unlink/{link_id}`: the confirmation.
pub async fn unlink_page(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(link_id): Path<String>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    let response = async {
        let Some((_, user)) = signed_in(&state, &cookie).await? else {
            return Ok(kit::sign_in_first(&state, &AfterSignIn::ACCOUNT, false));
        };
        let mut repo = state.storage.reader().await?;
        let target = match target(&state, &mut repo, &user, &link_id).await? {
            Ok(target) => target,
            Err(response) => return Ok(response),
        };
        Ok::<_, StorageError>(kit::page(
            &state,
            StatusCode::OK,
            "pages/upstream_unlink.html",
            minijinja::context! {
                username => user.username,
                provider => target.provider,
                account => target.link.human_account_name,
                last_way_in => target.last_way_in,
                csrf => cookie.csrf_token(),
                action => format!("{UPSTREAM_UNLINK}/{}", target.link.id),
                back => endpoints::ACCOUNT,
            },
        ))
    }
    .await
    .unwrap_or_else(|e| kit::unavailable(&state, "unlink", &e));
    (cookie.into_jar(), response).into_response()
}

/// `POST /upstream/unlink/{link_id}`.
pub async fn unlink(
    State(state): State<AppState>,
    jar: PrivateCookieJar,
    Path(link_id): Path<String>,
    Form(form): Form<UnlinkForm>,
) -> Response {
    let cookie = kit::load_cookie(&state, jar);
    if let Err(e) = cookie.verify_csrf(&form.csrf) {
        let response = kit::csrf_refused(&state, &e);
        return (cookie.into_jar(), response).into_response();
    }
    let response = async {
        let Some((_, user)) = signed_in(&state, &cookie).await? else {
            return Ok(kit::sign_in_first(&state, &AfterSignIn::ACCOUNT, false));
        };
        // One transaction: the "last way in" check and the removal see the same rows. (Two
        // unlinks of the last two identities submitted at the very same moment could still both
        // pass on PostgreSQL; the account then needs a password reset or an operator.)
        let mut repo = state.storage.begin().await?;
        let target = match target(&state, &mut repo, &user, &link_id).await? {
            Ok(target) => target,
            Err(response) => return Ok(response),
        };
        if target.last_way_in {
            return Ok(kit::error_page(
                &state.templates,
                &state.chrome(),
                StatusCode::CONFLICT,
                "Can't unlink",
                &format!(
                    "{} is the only way to sign in to your account: unlinking it would lock you out. \
                     Link another account first.",
                    target.provider
                ),
                None,
            ));
        }
        repo.upstream_links().remove(target.link.id).await?;
        repo.commit().await?;
        tracing::info!(username = %user.username, link = %target.link.id, "upstream identity unlinked");
        Ok::<_, StorageError>(Redirect::to(endpoints::ACCOUNT).into_response())
    }
    .await
    .unwrap_or_else(|e| kit::unavailable(&state, "unlink", &e));
    (cookie.into_jar(), response).into_response()
}
