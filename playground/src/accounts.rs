//! The seeded accounts: `alice` (may be granted the Synapse admin scope) and `bob`, with
//! passwords generated once and kept in the data directory, written to the database on every
//! start (idempotently) and provisioned on the homeserver.

use std::path::Path;

use provider::{
    core::matrix::provisioning::{self, Outcome, Task},
    http::AppState,
};
use rand::seq::SliceRandom as _;
use serde::{Deserialize, Serialize};

use crate::{data::ACCOUNTS_FILE, Error};

/// One seeded account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub password: String,
    /// May be granted `urn:synapse:admin:*` (MSC2967).
    pub admin: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountsFile {
    #[serde(default, rename = "_comment")]
    comment: String,
    accounts: Vec<Account>,
}

const COMMENT: &str = "Seeded by the playground at every start: these passwords always work \
                       (a changed password is set back). Delete this file, or run with --fresh, \
                       for new ones.";

/// The seeded usernames and whether each is an admin.
const SEEDED: &[(&str, bool)] = &[("alice", true), ("bob", false)];

/// Letters and digits that can't be mistaken for one another when read off a terminal.
const PASSWORD_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// Reads the accounts file, creating it (with fresh passwords) on first start.
pub fn load_or_create(
    data_dir: &Path,
    entropy: &provider::clock::Entropy,
) -> Result<Vec<Account>, Error> {
    let path = data_dir.join(ACCOUNTS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let file: AccountsFile = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            if file.accounts.is_empty() {
                return Err(Error::Corrupt {
                    path,
                    reason: "it lists no accounts".into(),
                });
            }
            Ok(file.accounts)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut rng = entropy.rng.rng();
            let accounts: Vec<Account> = SEEDED
                .iter()
                .map(|&(username, admin)| Account {
                    username: username.to_owned(),
                    password: password(&mut rng),
                    admin,
                })
                .collect();
            let file = AccountsFile {
                comment: COMMENT.to_owned(),
                accounts,
            };
            let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            std::fs::write(&path, text + "\n").map_err(|e| Error::file("write", &path, e))?;
            Ok(file.accounts)
        }
        Err(e) => Err(Error::file("read", path, e)),
    }
}

/// Three groups of four characters, e.g. `k3fq-8bzt-w2mx` (about 59 bits).
fn password(rng: &mut impl rand::Rng) -> String {
    (0..3)
        .map(|_| {
            (0..4)
                .map(|_| char::from(*PASSWORD_ALPHABET.choose(rng).unwrap_or(&b'x')))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes the accounts to the database: creates missing users, sets the password when the one
/// in force is not the listed one, sets the admin flag, unlocks and reactivates. Changes nothing
/// when all is already so (a restart creates no duplicates). Each changed user is provisioned
/// on the homeserver (see [`sync_homeserver`] for the others).
pub async fn seed(state: &AppState, accounts: &[Account]) -> Result<(), Error> {
    for account in accounts {
        let mut reader = state.storage.reader().await?;
        let existing = reader.users().find_by_username(&account.username).await?;
        let current = match &existing {
            Some(user) => reader.user_passwords().active(user.id).await?,
            None => None,
        };
        drop(reader);
        let password_ok = match &current {
            Some(p) => state
                .passwords
                .verify(p.version, &p.hashed_password, account.password.clone())
                .await
                .is_ok_and(|v| v.is_match()),
            None => false,
        };
        let new_hash = if password_ok {
            None
        } else {
            Some(state.passwords.hash(account.password.clone()).await?)
        };

        let mut repo = state.storage.begin().await?;
        let (user, created) = match existing {
            Some(user) => (user, false),
            None => (repo.users().add(&account.username).await?, true),
        };
        let mut changed = created;
        if let Some((version, hash)) = &new_hash {
            repo.user_passwords()
                .add(user.id, hash, *version, None)
                .await?;
            changed = true;
        }
        if user.can_request_admin != account.admin {
            repo.users()
                .set_can_request_admin(user.id, account.admin)
                .await?;
            changed = true;
        }
        if user.locked_at.is_some() {
            repo.users().set_locked(user.id, false).await?;
            changed = true;
        }
        let task = if user.deactivated_at.is_some() {
            repo.users().set_deactivated(user.id, false).await?;
            changed = true;
            Task::ReactivateUser { user_id: user.id }
        } else {
            Task::ProvisionUser { user_id: user.id }
        };
        if !changed {
            continue;
        }
        let now = state.storage.entropy().clock.now();
        let job = provisioning::enqueue(&mut repo, &task, now).await?;
        repo.commit().await?;
        tracing::info!(username = %account.username, created, "seeded account");
        provisioning::run_now(state, &[job]).await;
    }
    Ok(())
}

/// Tells the homeserver every active user and the devices of their active sessions. The fake
/// homeserver keeps them in memory, so after a restart it knows nobody: without this, tokens
/// issued in an earlier run would be refused. Returns how many users stay queued for the
/// worker (the homeserver refused them this time).
pub async fn sync_homeserver(state: &AppState) -> Result<usize, Error> {
    let mut after = None;
    let mut queued = 0;
    let mut synced = 0;
    loop {
        let page = state
            .storage
            .reader()
            .await?
            .users()
            .list_page(after, 100)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for user in page.iter().filter(|u| u.deactivated_at.is_none()) {
            match provisioning::run_task_now(state, &Task::SyncDevices { user_id: user.id }).await?
            {
                Outcome::Done => synced += 1,
                Outcome::Queued(error) => {
                    queued += 1;
                    tracing::warn!(username = %user.username, %error, "can't sync a user to the homeserver; the worker will retry");
                }
            }
        }
    }
    tracing::info!(
        synced,
        queued,
        "homeserver synced with the provider's users and sessions"
    );
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn passwords_are_readable_groups() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let p = password(&mut rng);
        assert_eq!(p.len(), 14, "{p}");
        assert_eq!(p.split('-').count(), 3);
        assert!(p
            .bytes()
            .all(|b| b == b'-' || PASSWORD_ALPHABET.contains(&b)));
        assert_ne!(p, password(&mut rng));
    }

    #[test]
    fn accounts_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let entropy = provider::clock::Entropy::test(5).0;
        let first = load_or_create(dir.path(), &entropy).unwrap();
        assert_eq!(
            first
                .iter()
                .map(|a| (a.username.as_str(), a.admin))
                .collect::<Vec<_>>(),
            SEEDED
        );
        assert_eq!(load_or_create(dir.path(), &entropy).unwrap(), first);
        std::fs::write(dir.path().join(ACCOUNTS_FILE), "{").unwrap();
        assert!(matches!(
            load_or_create(dir.path(), &entropy),
            Err(Error::Corrupt { .. })
        ));
    }
}
