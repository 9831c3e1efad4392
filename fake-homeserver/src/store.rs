//! The homeserver's state: users and their devices, in memory. One `std::sync::Mutex` guards
//! everything; it is only ever taken inside synchronous closures, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// A user as the homeserver knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub localpart: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// Email addresses (Synapse's `email` threepids), in the order they were set.
    pub emails: Vec<String>,
    pub locked: bool,
    pub deactivated: bool,
    /// Set when the user was deleted with `erase` (GDPR erasure); cleared on reactivation.
    pub erased: bool,
    /// The Synapse server-admin flag (legacy admin API `admin`).
    pub admin: bool,
    /// Synapse's suspension flag (MSC3823); nothing in the contract sets it, tests may.
    pub suspended: bool,
    /// Set by `/_synapse/mas/allow_cross_signing_reset`.
    pub cross_signing_reset_allowed: bool,
}

impl UserRecord {
    /// A fresh, active user with an empty profile.
    pub fn new(localpart: impl Into<String>) -> Self {
        Self {
            localpart: localpart.into(),
            displayname: None,
            avatar_url: None,
            emails: Vec::new(),
            locked: false,
            deactivated: false,
            erased: false,
            admin: false,
            suspended: false,
            cross_signing_reset_allowed: false,
        }
    }
}

/// A device of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    pub device_id: String,
    pub display_name: Option<String>,
}

#[derive(Debug)]
pub(crate) struct UserEntry {
    pub(crate) record: UserRecord,
    pub(crate) devices: BTreeMap<String, DeviceRecord>,
}

impl UserEntry {
    fn new(record: UserRecord) -> Self {
        Self {
            record,
            devices: BTreeMap::new(),
        }
    }

    /// Inserts a device; `true` when it did not exist. An existing device keeps its display
    /// name unless a new one is given.
    pub(crate) fn upsert_device(&mut self, device_id: &str, display_name: Option<String>) -> bool {
        match self.devices.get_mut(device_id) {
            Some(device) => {
                if display_name.is_some() {
                    device.display_name = display_name;
                }
                false
            }
            None => {
                self.devices.insert(
                    device_id.to_owned(),
                    DeviceRecord {
                        device_id: device_id.to_owned(),
                        display_name,
                    },
                );
                true
            }
        }
    }

    /// Deactivation as Synapse does it: the account is marked deactivated, every device (and
    /// with it every access token) and every threepid is removed; `erase` also clears the
    /// profile and marks the user erased.
    pub(crate) fn deactivate(&mut self, erase: bool) {
        self.record.deactivated = true;
        self.record.emails.clear();
        self.devices.clear();
        if erase {
            self.record.erased = true;
            self.record.displayname = None;
            self.record.avatar_url = None;
        }
    }

    /// Reactivation as Synapse does it: no longer deactivated nor erased.
    pub(crate) fn reactivate(&mut self) {
        self.record.deactivated = false;
        self.record.erased = false;
    }
}

pub(crate) type Users = BTreeMap<String, UserEntry>;

/// The in-memory state. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Store {
    users: Arc<Mutex<Users>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with the state locked. `f` is synchronous, so the lock is never held across an
    /// `.await`. A poisoned lock (a panic elsewhere) is recovered rather than propagated.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Users) -> R) -> R {
        let mut guard = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// The user with this localpart.
    pub fn user(&self, localpart: &str) -> Option<UserRecord> {
        self.with(|users| users.get(localpart).map(|entry| entry.record.clone()))
    }

    /// Every user, ordered by localpart.
    pub fn users(&self) -> Vec<UserRecord> {
        self.with(|users| users.values().map(|entry| entry.record.clone()).collect())
    }

    /// The user's devices, ordered by device ID; empty when the user is unknown.
    pub fn devices(&self, localpart: &str) -> Vec<DeviceRecord> {
        self.with(|users| {
            users
                .get(localpart)
                .map(|entry| entry.devices.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// Whether the user has this device.
    pub fn has_device(&self, localpart: &str, device_id: &str) -> bool {
        self.with(|users| {
            users
                .get(localpart)
                .is_some_and(|entry| entry.devices.contains_key(device_id))
        })
    }

    /// Test setter: creates an active user with an empty profile. `true` when created, `false`
    /// when the user already existed (then nothing changes). No localpart validation.
    pub fn insert_user(&self, localpart: &str) -> bool {
        self.with(|users| {
            if users.contains_key(localpart) {
                false
            } else {
                users.insert(
                    localpart.to_owned(),
                    UserEntry::new(UserRecord::new(localpart)),
                );
                true
            }
        })
    }

    /// Test setter: gives the user a device (without display name), creating the user first if
    /// needed. `true` when the device was created.
    pub fn insert_device(&self, localpart: &str, device_id: &str) -> bool {
        self.with(|users| {
            users
                .entry(localpart.to_owned())
                .or_insert_with(|| UserEntry::new(UserRecord::new(localpart)))
                .upsert_device(device_id, None)
        })
    }

    /// Test setter: changes a user in place (lock, deactivate, make admin…). The localpart
    /// cannot be changed this way. `false` when the user is unknown.
    pub fn update_user(&self, localpart: &str, f: impl FnOnce(&mut UserRecord)) -> bool {
        self.with(|users| match users.get_mut(localpart) {
            Some(entry) => {
                f(&mut entry.record);
                entry.record.localpart = localpart.to_owned();
                true
            }
            None => false,
        })
    }

    /// Test setter: removes a device. `true` when it existed.
    pub fn remove_device(&self, localpart: &str, device_id: &str) -> bool {
        self.with(|users| {
            users
                .get_mut(localpart)
                .is_some_and(|entry| entry.devices.remove(device_id).is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_and_getters() {
        let store = Store::new();
        assert!(store.insert_user("alice"));
        assert!(!store.insert_user("alice"));
        assert!(store.insert_device("alice", "DEV1"));
        assert!(!store.insert_device("alice", "DEV1"));
        assert!(store.insert_device("bob", "DEV2"), "creates bob on the way");
        assert!(store.user("bob").is_some());
        assert!(store.has_device("alice", "DEV1"));
        assert!(!store.has_device("alice", "DEV2"));
        assert_eq!(
            store.devices("alice"),
            vec![DeviceRecord {
                device_id: "DEV1".into(),
                display_name: None
            }]
        );
        assert!(store.devices("nobody").is_empty());
        assert!(store.update_user("alice", |u| {
            u.locked = true;
            u.localpart = "mallory".into();
        }));
        let alice = store.user("alice").unwrap();
        assert!(alice.locked);
        assert_eq!(alice.localpart, "alice");
        assert!(!store.update_user("nobody", |_| {}));
        assert!(store.remove_device("alice", "DEV1"));
        assert!(!store.remove_device("alice", "DEV1"));
        let names: Vec<_> = store.users().into_iter().map(|u| u.localpart).collect();
        assert_eq!(names, ["alice", "bob"]);
    }

    #[test]
    fn deactivation_and_erasure() {
        let mut entry = UserEntry::new(UserRecord {
            displayname: Some("Alice".into()),
            avatar_url: Some("mxc://hs/a".into()),
            emails: vec!["a@example.com".into()],
            ..UserRecord::new("alice")
        });
        entry.upsert_device("D", Some("phone".into()));
        entry.deactivate(false);
        assert!(entry.record.deactivated && !entry.record.erased);
        assert!(entry.devices.is_empty() && entry.record.emails.is_empty());
        assert_eq!(entry.record.displayname.as_deref(), Some("Alice"));
        entry.deactivate(true);
        assert!(entry.record.erased);
        assert_eq!(entry.record.displayname, None);
        assert_eq!(entry.record.avatar_url, None);
        entry.reactivate();
        assert!(!entry.record.deactivated && !entry.record.erased);
    }

    #[test]
    fn upsert_keeps_the_display_name_unless_given() {
        let mut entry = UserEntry::new(UserRecord::new("alice"));
        assert!(entry.upsert_device("D", Some("phone".into())));
        assert!(!entry.upsert_device("D", None));
        assert_eq!(entry.devices["D"].display_name.as_deref(), Some("phone"));
        assert!(!entry.upsert_device("D", Some("tablet".into())));
        assert_eq!(entry.devices["D"].display_name.as_deref(), Some("tablet"));
    }
}
