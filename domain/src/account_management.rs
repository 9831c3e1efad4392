//! Account management from a client (MSC4191): the actions a client may send the user to
//! (`account_management_actions_supported` in the metadata, `?action=…` on the account page).

/// What a page of `/account` shows: an MSC4191 action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Profile,
    DevicesList,
    DeviceView,
    DeviceDelete,
    AccountDeactivate,
    CrossSigningReset,
    /// Ours: the email addresses.
    Emails,
    /// Ours: the password.
    Password,
}

impl Action {
    /// An MSC4191 action name, the stable ones and the older unstable aliases alike.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "org.matrix.profile" => Self::Profile,
            "org.matrix.devices_list" | "org.matrix.sessions_list" => Self::DevicesList,
            "org.matrix.device_view" | "org.matrix.session_view" => Self::DeviceView,
            "org.matrix.device_delete" | "org.matrix.session_end" => Self::DeviceDelete,
            "org.matrix.account_deactivate" => Self::AccountDeactivate,
            "org.matrix.cross_signing_reset" => Self::CrossSigningReset,
            "emails" => Self::Emails,
            "password" => Self::Password,
            _ => return None,
        })
    }

    /// The stable name, for our own links.
    pub fn name(self) -> &'static str {
        match self {
            Self::Profile => "org.matrix.profile",
            Self::DevicesList => "org.matrix.devices_list",
            Self::DeviceView => "org.matrix.device_view",
            Self::DeviceDelete => "org.matrix.device_delete",
            Self::AccountDeactivate => "org.matrix.account_deactivate",
            Self::CrossSigningReset => "org.matrix.cross_signing_reset",
            Self::Emails => "emails",
            Self::Password => "password",
        }
    }
}

/// MSC4191 `account_management_actions_supported`: the `action` values `/account` serves, with
/// the older unstable names (`org.matrix.sessions_list`, …) that clients still send.
pub const ACTIONS: &[&str] = &[
    "org.matrix.profile",
    "org.matrix.devices_list",
    "org.matrix.device_view",
    "org.matrix.device_delete",
    "org.matrix.account_deactivate",
    "org.matrix.cross_signing_reset",
    "org.matrix.sessions_list",
    "org.matrix.session_view",
    "org.matrix.session_end",
];
