//! How a user proved who they are in a browser session: what each sign-in records (its time is
//! the ID token's `auth_time`, OIDC Core §2), stored as text and read back here, once.

use std::{fmt, str::FromStr};

use ulid::Ulid;

/// A way of signing in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignInMethod {
    /// The account's password (the login page, or linking an upstream identity to it).
    Password,
    /// An upstream OpenID Connect provider, through the identity linked to the account (the
    /// link's ID).
    Upstream(Ulid),
}

/// Stored text that is no [`SignInMethod`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a sign-in method")]
pub struct UnknownSignInMethod(pub String);

const PASSWORD: &str = "password";
const UPSTREAM: &str = "upstream:";

impl fmt::Display for SignInMethod {
    /// `password`, or `upstream:<link id>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password => f.write_str(PASSWORD),
            Self::Upstream(link) => write!(f, "{UPSTREAM}{link}"),
        }
    }
}

impl FromStr for SignInMethod {
    type Err = UnknownSignInMethod;

    fn from_str(text: &str) -> Result<Self, UnknownSignInMethod> {
        if text == PASSWORD {
            return Ok(Self::Password);
        }
        text.strip_prefix(UPSTREAM)
            .and_then(|link| Ulid::from_string(link).ok())
            .map(Self::Upstream)
            .ok_or_else(|| UnknownSignInMethod(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn stored_text() {
        assert_eq!(SignInMethod::Password.to_string(), "password");
        let link = Ulid::from_string("01J0000000000000000000000A").unwrap();
        assert_eq!(
            SignInMethod::Upstream(link).to_string(),
            "upstream:01J0000000000000000000000A"
        );
        for bad in [
            "",
            "Password",
            "upstream:",
            "upstream:nope",
            "oidc:01J0000000000000000000000A",
        ] {
            assert!(bad.parse::<SignInMethod>().is_err(), "{bad}");
        }
    }

    proptest! {
        /// Every method reads back as itself from its stored text.
        #[test]
        fn reads_back(upstream in any::<Option<u128>>()) {
            let method = upstream.map_or(SignInMethod::Password, |n| SignInMethod::Upstream(Ulid(n)));
            prop_assert_eq!(method.to_string().parse::<SignInMethod>(), Ok(method));
        }

        /// Any text is a method or an error, never a panic.
        #[test]
        fn any_text(text in "\\PC{0,40}") {
            let _ = text.parse::<SignInMethod>();
        }
    }
}
