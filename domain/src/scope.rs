//! Scope values (RFC 6749 §3.3): space-delimited, case-sensitive tokens, order irrelevant.
//! The Matrix scope grammar (MSC2967) builds on this.

use std::{collections::BTreeSet, fmt};

/// MSC2967: access to the whole Matrix client-server API.
pub const API_SCOPE: &str = "urn:matrix:client:api:*";
/// [`API_SCOPE`] in the unstable form of MSC2967, which clients still send.
pub const UNSTABLE_API_SCOPE: &str = "urn:matrix:org.matrix.msc2967.client:api:*";
/// Synapse administration (the Synapse admin API), as the homeserver contract names it.
pub const SYNAPSE_ADMIN_SCOPE: &str = "urn:synapse:admin:*";
/// The provider's own admin API (`/api/admin/v1`), as MAS names it. Granted only to users
/// allowed to administer (`can_request_admin`, authorization code and device flows) and to the
/// clients the config lists in `admin.clients` (client credentials).
pub const MAS_ADMIN_SCOPE: &str = "urn:mas:admin";

/// Does a scope hold a token only administrators may be granted ([`SYNAPSE_ADMIN_SCOPE`],
/// [`MAS_ADMIN_SCOPE`])?
pub fn asks_for_admin(scope: &str) -> bool {
    scope
        .split(' ')
        .any(|t| t == SYNAPSE_ADMIN_SCOPE || t == MAS_ADMIN_SCOPE)
}
/// MSC2967: the device scope is this prefix followed by the device ID.
pub const DEVICE_SCOPE_PREFIX: &str = "urn:matrix:client:device:";
/// [`DEVICE_SCOPE_PREFIX`] in the unstable form of MSC2967.
pub const UNSTABLE_DEVICE_SCOPE_PREFIX: &str = "urn:matrix:org.matrix.msc2967.client:device:";

/// The device ID a scope token names, when it is an MSC2967 device scope (stable or unstable
/// form) with a non-empty ID; `None` for every other token.
pub fn device_id(token: &str) -> Option<&str> {
    token
        .strip_prefix(DEVICE_SCOPE_PREFIX)
        .or_else(|| token.strip_prefix(UNSTABLE_DEVICE_SCOPE_PREFIX))
        .filter(|id| !id.is_empty())
}

/// Is this a scope token of the Matrix family (MSC2967 `urn:matrix:…`, or Synapse's
/// `urn:synapse:…`)? Such tokens grant access to a user's account.
pub fn is_matrix_token(token: &str) -> bool {
    token.starts_with("urn:matrix:") || token.starts_with("urn:synapse:")
}

/// MSC2967: a device ID is chosen by the client from RFC 3986 unreserved characters
/// (`ALPHA / DIGIT / "-" / "." / "_" / "~"`); we also cap its length at 255 (Synapse's column).
pub fn is_valid_device_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Which spelling of the MSC2967 scopes a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixForm {
    /// `urn:matrix:client:…` (the Matrix spec since v1.15).
    Stable,
    /// `urn:matrix:org.matrix.msc2967.client:…` (what matrix-rust-sdk still sends).
    Unstable,
}

/// What a scope grants on the Matrix side (MSC2967).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MatrixGrant {
    /// The whole client-server API (`urn:matrix:client:api:*`).
    pub api: bool,
    /// The device the client chose (`urn:matrix:client:device:<id>`).
    pub device_id: Option<String>,
    /// Synapse administration (`urn:synapse:admin:*`).
    pub admin: bool,
    /// The spelling used, when any MSC2967 token is present.
    pub form: Option<MatrixForm>,
}

impl MatrixGrant {
    /// Does the scope ask for anything on the Matrix side?
    pub fn is_empty(&self) -> bool {
        !self.api && self.device_id.is_none() && !self.admin
    }
}

/// Why a scope is refused on the Matrix side (answered `invalid_scope`, RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixScopeError {
    #[error("only one device scope may be requested per grant (MSC2967)")]
    SeveralDevices,
    #[error("a device scope needs the API scope urn:matrix:client:api:* as well (MSC2967)")]
    DeviceWithoutApi,
    #[error(
        "the stable and unstable (org.matrix.msc2967) scope forms can't be mixed in one request"
    )]
    MixedForms,
    #[error("`{0}` is not a valid device ID: use 1 to 255 of A-Z a-z 0-9 - . _ ~ (MSC2967, RFC 3986 unreserved)")]
    InvalidDeviceId(String),
    #[error("`{0}` is not a known Matrix scope (MSC2967)")]
    Unknown(String),
}

impl Scope {
    /// The Matrix reading of this scope (MSC2967), with its rules: at most one device scope,
    /// which needs the API scope; valid device IDs; one spelling (stable or unstable) for the
    /// whole request; no unknown `urn:matrix:` / `urn:synapse:` tokens. Other tokens are not
    /// this function's business.
    pub fn matrix(&self) -> Result<MatrixGrant, MatrixScopeError> {
        let mut grant = MatrixGrant::default();
        let use_form = |form: MatrixForm, grant: &mut MatrixGrant| match grant.form {
            Some(seen) if seen != form => Err(MatrixScopeError::MixedForms),
            _ => {
                grant.form = Some(form);
                Ok(())
            }
        };
        for token in self.iter().filter(|t| is_matrix_token(t)) {
            if token == API_SCOPE || token == UNSTABLE_API_SCOPE {
                let form = if token == API_SCOPE {
                    MatrixForm::Stable
                } else {
                    MatrixForm::Unstable
                };
                use_form(form, &mut grant)?;
                grant.api = true;
            } else if token == SYNAPSE_ADMIN_SCOPE {
                grant.admin = true;
            } else if let Some((form, id)) = token
                .strip_prefix(DEVICE_SCOPE_PREFIX)
                .map(|id| (MatrixForm::Stable, id))
                .or_else(|| {
                    token
                        .strip_prefix(UNSTABLE_DEVICE_SCOPE_PREFIX)
                        .map(|id| (MatrixForm::Unstable, id))
                })
            {
                use_form(form, &mut grant)?;
                if !is_valid_device_id(id) {
                    return Err(MatrixScopeError::InvalidDeviceId(id.to_owned()));
                }
                if grant.device_id.is_some() {
                    return Err(MatrixScopeError::SeveralDevices);
                }
                grant.device_id = Some(id.to_owned());
            } else {
                return Err(MatrixScopeError::Unknown(token.to_owned()));
            }
        }
        if grant.device_id.is_some() && !grant.api {
            return Err(MatrixScopeError::DeviceWithoutApi);
        }
        Ok(grant)
    }
}

/// The device a granted scope (stored, so already checked) names, if any.
pub fn granted_device(scope: &str) -> Option<String> {
    Scope::parse(scope).ok()?.matrix().ok()?.device_id
}

/// The other spelling of an MSC2967 token (stable ↔ unstable), if it has one. Introspection
/// answers both, so a homeserver that knows either form understands the token.
pub fn other_form(token: &str) -> Option<String> {
    if token == API_SCOPE {
        return Some(UNSTABLE_API_SCOPE.to_owned());
    }
    if token == UNSTABLE_API_SCOPE {
        return Some(API_SCOPE.to_owned());
    }
    if let Some(id) = token.strip_prefix(DEVICE_SCOPE_PREFIX) {
        return Some(format!("{UNSTABLE_DEVICE_SCOPE_PREFIX}{id}"));
    }
    token
        .strip_prefix(UNSTABLE_DEVICE_SCOPE_PREFIX)
        .map(|id| format!("{DEVICE_SCOPE_PREFIX}{id}"))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("the scope is empty")]
    Empty,
    #[error("`{0}` is not a valid scope token (RFC 6749 §3.3)")]
    InvalidToken(String),
}

/// A set of scope tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope(BTreeSet<String>);

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E')
}

impl Scope {
    /// Parses a scope parameter: tokens separated by single spaces (extra spaces are tolerated,
    /// repeated tokens collapse). An empty scope is refused.
    pub fn parse(raw: &str) -> Result<Self, ScopeError> {
        let mut tokens = BTreeSet::new();
        for token in raw.split(' ').filter(|t| !t.is_empty()) {
            if !token.chars().all(is_scope_char) {
                return Err(ScopeError::InvalidToken(token.to_owned()));
            }
            tokens.insert(token.to_owned());
        }
        if tokens.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(Self(tokens))
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for Scope {
    /// Sorted and space-separated: one canonical form per set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for token in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(token)?;
            first = false;
        }
        Ok(())
    }
}

/// Human words for a scope token, for the pages that ask the user to approve a request.
pub fn describe_scope(token: &str) -> String {
    match token {
        "openid" => "Know who you are (your user ID)".into(),
        "email" => "See your email address".into(),
        API_SCOPE | UNSTABLE_API_SCOPE => "Access your Matrix account".into(),
        SYNAPSE_ADMIN_SCOPE => "Administer the Matrix server".into(),
        MAS_ADMIN_SCOPE => "Administer the accounts of this server (the admin API)".into(),
        _ => match device_id(token) {
            Some(id) => format!("Device {id}"),
            None => format!("Use the permission “{token}”"),
        },
    }
}

/// A granted scope in words, one line a token, for the consent and device approval pages.
pub fn describe_scopes(scope: &str) -> Vec<String> {
    scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(describe_scope)
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_matrix_style_scopes() {
        let s = Scope::parse("openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ")
            .unwrap();
        assert!(s.contains("urn:matrix:client:api:*"));
        assert_eq!(
            s.to_string(),
            "openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ"
        );
        assert_eq!(Scope::parse("b  a a").unwrap().to_string(), "a b");
        assert_eq!(Scope::parse("  "), Err(ScopeError::Empty));
        assert_eq!(
            Scope::parse("a\"b"),
            Err(ScopeError::InvalidToken("a\"b".into()))
        );
        assert_eq!(
            Scope::parse("a\\b"),
            Err(ScopeError::InvalidToken("a\\b".into()))
        );
        assert_eq!(Scope::parse("é"), Err(ScopeError::InvalidToken("é".into())));
    }

    #[test]
    fn device_ids_of_scope_tokens() {
        assert_eq!(
            device_id("urn:matrix:client:device:ABCDEFGHIJ"),
            Some("ABCDEFGHIJ")
        );
        assert_eq!(
            device_id("urn:matrix:org.matrix.msc2967.client:device:ABC"),
            Some("ABC")
        );
        // Only the prefix: no device.
        assert_eq!(device_id(DEVICE_SCOPE_PREFIX), None);
        assert_eq!(device_id(UNSTABLE_DEVICE_SCOPE_PREFIX), None);
        for other in [
            "openid",
            API_SCOPE,
            UNSTABLE_API_SCOPE,
            "urn:matrix:client:devices:ABC",
            "URN:MATRIX:CLIENT:DEVICE:ABC",
            " urn:matrix:client:device:ABC",
            "",
        ] {
            assert_eq!(device_id(other), None, "{other}");
        }
    }

    fn matrix(raw: &str) -> Result<MatrixGrant, MatrixScopeError> {
        Scope::parse(raw).unwrap().matrix()
    }

    #[test]
    fn matrix_scope_rules() {
        let grant =
            matrix("openid urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ").unwrap();
        assert_eq!(
            grant,
            MatrixGrant {
                api: true,
                device_id: Some("ABCDEFGHIJ".into()),
                admin: false,
                form: Some(MatrixForm::Stable),
            }
        );
        let unstable = matrix(
            "urn:matrix:org.matrix.msc2967.client:api:* \
             urn:matrix:org.matrix.msc2967.client:device:abc-._~1 urn:synapse:admin:*",
        )
        .unwrap();
        assert_eq!(unstable.form, Some(MatrixForm::Unstable));
        assert_eq!(unstable.device_id.as_deref(), Some("abc-._~1"));
        assert!(unstable.admin);
        assert!(matrix("openid email").unwrap().is_empty());
        assert_eq!(
            matrix("urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B"),
            Err(MatrixScopeError::SeveralDevices)
        );
        assert_eq!(
            matrix("openid urn:matrix:client:device:ABCDEFGHIJ"),
            Err(MatrixScopeError::DeviceWithoutApi)
        );
        assert_eq!(
            matrix("urn:matrix:client:api:* urn:matrix:org.matrix.msc2967.client:device:ABC"),
            Err(MatrixScopeError::MixedForms)
        );
        assert_eq!(
            matrix("urn:matrix:client:api:* urn:matrix:client:device:a/b"),
            Err(MatrixScopeError::InvalidDeviceId("a/b".into()))
        );
        assert_eq!(
            matrix("urn:matrix:client:api:* urn:matrix:client:device:"),
            Err(MatrixScopeError::InvalidDeviceId(String::new()))
        );
        assert_eq!(
            matrix("urn:matrix:client:api:guest"),
            Err(MatrixScopeError::Unknown(
                "urn:matrix:client:api:guest".into()
            ))
        );
        assert_eq!(other_form(API_SCOPE).as_deref(), Some(UNSTABLE_API_SCOPE));
        assert_eq!(
            other_form("urn:matrix:org.matrix.msc2967.client:device:X").as_deref(),
            Some("urn:matrix:client:device:X")
        );
        assert_eq!(other_form("openid"), None);
        assert_eq!(other_form(SYNAPSE_ADMIN_SCOPE), None);
    }

    /// Device IDs: RFC 3986 unreserved characters, 1 to 255 of them.
    fn device_id_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~-]{1,40}"
    }

    proptest! {
        /// Any valid device ID in either form, with the API scope of the same form, is read back.
        #[test]
        fn valid_matrix_scopes_are_read_back(id in device_id_strategy(), unstable in any::<bool>(), admin in any::<bool>(), openid in any::<bool>()) {
            let (api, prefix) = if unstable {
                (UNSTABLE_API_SCOPE, UNSTABLE_DEVICE_SCOPE_PREFIX)
            } else {
                (API_SCOPE, DEVICE_SCOPE_PREFIX)
            };
            let mut raw = format!("{api} {prefix}{id}");
            if admin { raw.push_str(" urn:synapse:admin:*"); }
            if openid { raw.push_str(" openid"); }
            let grant = matrix(&raw).unwrap();
            prop_assert!(grant.api);
            prop_assert_eq!(grant.admin, admin);
            prop_assert_eq!(grant.device_id, Some(id));
            prop_assert_eq!(grant.form, Some(if unstable { MatrixForm::Unstable } else { MatrixForm::Stable }));
        }

        /// Two different devices are always refused, whatever their forms.
        #[test]
        fn two_devices_are_refused(a in device_id_strategy(), b in device_id_strategy(), unstable in any::<bool>()) {
            prop_assume!(a != b);
            let (api, prefix) = if unstable {
                (UNSTABLE_API_SCOPE, UNSTABLE_DEVICE_SCOPE_PREFIX)
            } else {
                (API_SCOPE, DEVICE_SCOPE_PREFIX)
            };
            let raw = format!("{api} {prefix}{a} {prefix}{b}");
            prop_assert_eq!(matrix(&raw), Err(MatrixScopeError::SeveralDevices));
        }

        /// Repeating the same device scope is one device (scope tokens are a set, RFC 6749 §3.3).
        #[test]
        fn duplicate_device_scopes_collapse(id in device_id_strategy()) {
            let raw = format!("{API_SCOPE} {DEVICE_SCOPE_PREFIX}{id} {DEVICE_SCOPE_PREFIX}{id}");
            prop_assert_eq!(matrix(&raw).unwrap().device_id, Some(id));
        }

        /// A device ID with any character outside the unreserved set is refused.
        #[test]
        fn invalid_device_ids_are_refused(good in "[A-Za-z0-9]{0,5}", bad in "[!#-,/:-@\\[\\]^`{|}]", rest in "[A-Za-z0-9]{0,5}") {
            let id = format!("{good}{bad}{rest}");
            let raw = format!("{API_SCOPE} {DEVICE_SCOPE_PREFIX}{id}");
            prop_assert_eq!(matrix(&raw), Err(MatrixScopeError::InvalidDeviceId(id)));
        }

        /// Mixing forms is refused, whichever token carries which form.
        #[test]
        fn mixed_forms_are_refused(id in device_id_strategy(), api_unstable in any::<bool>()) {
            let (api, prefix) = if api_unstable {
                (UNSTABLE_API_SCOPE, DEVICE_SCOPE_PREFIX)
            } else {
                (API_SCOPE, UNSTABLE_DEVICE_SCOPE_PREFIX)
            };
            prop_assert_eq!(matrix(&format!("{api} {prefix}{id}")), Err(MatrixScopeError::MixedForms));
        }

        /// The Matrix reading never panics, whatever the scope.
        #[test]
        fn matrix_reading_never_panics(tokens in proptest::collection::vec("(urn:matrix:(client|org\\.matrix\\.msc2967\\.client):(api|device):)?[!#-\\[\\]-~]{0,12}", 1..5)) {
            if let Ok(scope) = Scope::parse(&tokens.join(" ")) {
                let _ = scope.matrix();
            }
        }

        #[test]
        fn device_ids_come_back_from_either_prefix(id in "[!#-\\[\\]-~]{1,20}", unstable in any::<bool>()) {
            let prefix = if unstable { UNSTABLE_DEVICE_SCOPE_PREFIX } else { DEVICE_SCOPE_PREFIX };
            let token = format!("{prefix}{id}");
            prop_assert_eq!(device_id(&token), Some(id.as_str()));
        }

        /// Other tokens (up to 20 characters, shorter than either prefix, or behind another
        /// prefix) name no device.
        #[test]
        fn other_tokens_name_no_device(
            prefix in prop::sample::select(vec!["", "openid", API_SCOPE, UNSTABLE_API_SCOPE]),
            rest in "\\PC{0,20}",
        ) {
            let token = format!("{prefix}{rest}");
            prop_assert_eq!(device_id(&token), None);
        }

        #[test]
        fn canonical_form_round_trips(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,12}", 1..6)) {
            let scope = Scope::parse(&tokens.join(" ")).unwrap();
            prop_assert_eq!(Scope::parse(&scope.to_string()).unwrap(), scope.clone());
            for t in &tokens {
                prop_assert!(scope.contains(t));
            }
        }

        #[test]
        fn never_panics(raw in "\\PC{0,40}") {
            let _ = Scope::parse(&raw);
        }
    }
}
