//! The account page's "Linked accounts" section: the identities of upstream providers linked
//! to the account (each with its unlink page, served by the upstream login's pages), and a
//! button per provider to link one more.

use serde::Serialize;

use crate::domain::after_sign_in::{self, AfterSignIn};
use crate::{
    core::upstream::client::{display_name, provider_name},
    endpoints,
    http::AppState,
    storage::{StorageError, User},
};

/// A linked identity as the account page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkedView {
    pub provider: String,
    /// The upstream account's name (its username or email there), when known.
    pub account: Option<String>,
    pub linked_at: String,
    pub unlink_url: String,
}

/// A provider the user may link an identity of.
#[derive(Debug, Clone, Serialize)]
pub struct LinkableView {
    pub name: String,
    /// Where the login starts, coming back to the account page.
    pub href: String,
}

/// The account page's "Linked accounts" section.
#[derive(Debug, Clone, Serialize)]
pub struct LinkedAccounts {
    pub linked: Vec<LinkedView>,
    pub providers: Vec<LinkableView>,
}

/// The section for `user`; `None` (the section is hidden) when there is nothing to show — no
/// provider configured and nothing linked — or when storage fails (logged: the rest of the
/// account page still works).
pub async fn linked_accounts(state: &AppState, user: &User) -> Option<LinkedAccounts> {
    let found = async {
        let mut repo = state.storage.reader().await?;
        let providers = repo.upstream_providers().list_enabled().await?;
        let mut linked = Vec::new();
        for link in repo.upstream_links().list_for_user(user.id).await? {
            linked.push(LinkedView {
                provider: provider_name(&mut repo, &providers, link.provider_id).await?,
                account: link.human_account_name,
                linked_at: link.created_at.format("%Y-%m-%d").to_string(),
                unlink_url: format!("{}/{}", endpoints::UPSTREAM_UNLINK, link.id),
            });
        }
        Ok::<_, StorageError>((linked, providers))
    }
    .await;
    let (linked, providers) = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "account page: can't read the linked identities");
            return None;
        }
    };
    if linked.is_empty() && providers.is_empty() {
        return None;
    }
    Some(LinkedAccounts {
        linked,
        providers: providers
            .iter()
            .map(|p| LinkableView {
                name: display_name(p),
                href: after_sign_in::start_url(p.id, Some(&AfterSignIn::ACCOUNT)),
            })
            .collect(),
    })
}
