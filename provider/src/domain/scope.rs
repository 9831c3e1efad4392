//! Scope values (RFC 6749 §3.3): space-delimited, case-sensitive tokens, order irrelevant.
//! The Matrix scope grammar (MSC2967) builds on this.

use std::{collections::BTreeSet, fmt};

/// MSC2967: access to the whole Matrix client-server API.
pub const API_SCOPE: &str = "urn:matrix:client:api:*";
/// [`API_SCOPE`] in the unstable form of MSC2967, which clients still send.
pub const UNSTABLE_API_SCOPE: &str = "urn:matrix:org.matrix.msc2967.client:api:*";
/// Synapse administration (the Synapse admin API), as the homeserver contract names it.
pub const SYNAPSE_ADMIN_SCOPE: &str = "urn:synapse:admin:*";
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

    proptest! {
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
