//! Protocol values of OAuth 2.0 and its extensions whose set is closed: grant types, client
//! authentication methods, response types and modes, prompt values, error codes. Each is an
//! enum, parsed once at the edge ([`FromStr`]) and written back with
//! [`as_str`](GrantType::as_str) (also through [`Display`](fmt::Display) and serde), so the wire
//! form lives in one table per enum; the discovery document's `*_supported` lists are generated
//! from the same tables.
//!
//! Parsing is exact (case-sensitive, no trimming): these values are case-sensitive ASCII
//! strings on the wire (RFC 6749 §8.1 for grant types, §11.4 for error codes, RFC 7591 §2 for
//! the client metadata members).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a known {kind}")]
pub struct UnknownValue {
    /// What was being parsed (`grant type`, `error code`, …).
    pub kind: &'static str,
    pub value: String,
}

/// Defines a protocol enum from its table of `Variant => "wire value"`: `ALL` (in table order),
/// `as_str`, [`FromStr`], [`Display`](fmt::Display), and serde as the wire string. There is no
/// comparison with strings: code compares values, and a string is parsed first.
macro_rules! protocol_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order of the table.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(value: &str) -> Result<Self, UnknownValue> {
                match value {
                    $($wire => Ok(Self::$variant),)+
                    _ => Err(UnknownValue { kind: $kind, value: value.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                value.parse().map_err(serde::de::Error::custom)
            }
        }

    };
}

protocol_enum! {
    /// A grant type at the token endpoint (RFC 6749 §4, §6; RFC 8628 §3.4), and in a client's
    /// `grant_types` (RFC 7591 §2).
    pub enum GrantType ("grant type") {
        /// RFC 6749 §4.1.3.
        AuthorizationCode => "authorization_code",
        /// RFC 6749 §6.
        RefreshToken => "refresh_token",
        /// RFC 6749 §4.4.
        ClientCredentials => "client_credentials",
        /// RFC 8628 §3.4 (MSC4341).
        DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
    }
}

protocol_enum! {
    /// How a client authenticates at the token endpoint (RFC 7591 §2
    /// `token_endpoint_auth_method`, OIDC Core §9).
    pub enum ClientAuthMethod ("client authentication method") {
        /// A public client (MSC2966: MUST be supported; what Matrix clients use).
        None => "none",
        /// RFC 6749 §2.3.1, HTTP Basic. RFC 7591 §2: the default when the member is absent.
        ClientSecretBasic => "client_secret_basic",
        /// RFC 6749 §2.3.1, in the form body.
        ClientSecretPost => "client_secret_post",
        /// RFC 7523 §2.2 / OIDC Core §9: a JWT signed (HS256) with the client secret.
        ClientSecretJwt => "client_secret_jwt",
        /// RFC 7523 §2.2 / OIDC Core §9: a JWT signed with the client's key.
        PrivateKeyJwt => "private_key_jwt",
    }
}

impl ClientAuthMethod {
    /// Is a client registered for this method a public client? RFC 6749 §2.1: a public client
    /// can't keep credentials confidential, and authenticates with none (`none`, RFC 7591 §2);
    /// every other method proves the client's identity (RFC 6749 §2.3).
    pub fn is_public(self) -> bool {
        self == Self::None
    }

    /// Does the server hold a client secret for this method?
    pub fn uses_secret(self) -> bool {
        matches!(
            self,
            Self::ClientSecretBasic | Self::ClientSecretPost | Self::ClientSecretJwt
        )
    }
}

protocol_enum! {
    /// An authorization request's `response_type` (RFC 6749 §3.1.1), and a client's
    /// `response_types` (RFC 7591 §2). Only the code flow is offered (MSC2964).
    pub enum ResponseType ("response type") {
        /// RFC 6749 §4.1.1.
        Code => "code",
    }
}

protocol_enum! {
    /// How the authorization response is returned (OAuth 2.0 Multiple Response Type Encoding
    /// Practices §2.1, OAuth 2.0 Form Post Response Mode §2).
    pub enum ResponseMode ("response mode") {
        /// The default for `response_type=code` (Multiple Response Type Encoding Practices §2.1).
        Query => "query",
        Fragment => "fragment",
        /// OAuth 2.0 Form Post Response Mode §2.
        FormPost => "form_post",
    }
}

protocol_enum! {
    /// A value of an authorization request's `prompt` (OIDC Core §3.1.2.1), read into a
    /// [`Prompts`] set.
    pub enum Prompt ("prompt value") {
        /// OIDC Core §3.1.2.1: no page at all; an error if one would be needed (§3.1.2.6).
        None => "none",
        /// OIDC Core §3.1.2.1: sign in again.
        Login => "login",
        /// OIDC Core §3.1.2.1: ask for consent again.
        Consent => "consent",
        /// Initiating User Registration via OpenID Connect 1.0 §4: show the registration page.
        Create => "create",
        /// OIDC Core §3.1.2.1: let the user choose an account.
        SelectAccount => "select_account",
    }
}

/// A refused `prompt` parameter (OIDC Core §3.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("prompt value `{}` is not supported", .0.value)]
    Unknown(UnknownValue),
    /// OIDC Core §3.1.2.1: "If this parameter contains none with any other value, an error is
    /// returned."
    #[error("prompt=none can't be combined with other values")]
    NoneWithOthers,
}

/// The `prompt` of an authorization request: a set of [`Prompt`] values (OIDC Core §3.1.2.1,
/// "space-delimited, case-sensitive list of ASCII string values"), parsed once at the edge and
/// carried typed. [`Display`](fmt::Display) writes it back in table order, which parses to the
/// same set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Prompts(u8);

impl Prompts {
    /// No `prompt` parameter.
    pub const NONE_GIVEN: Self = Self(0);

    const fn bit(prompt: Prompt) -> u8 {
        1 << (prompt as u8)
    }

    /// Was this value asked for?
    pub const fn contains(self, prompt: Prompt) -> bool {
        self.0 & Self::bit(prompt) != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The values, in table order.
    pub fn iter(self) -> impl Iterator<Item = Prompt> {
        Prompt::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }

    /// The parameter's value, absent when not given; an empty value is as if omitted (RFC 6749
    /// §3.1).
    pub fn parse_param(raw: Option<&str>) -> Result<Self, PromptError> {
        raw.map_or(Ok(Self::NONE_GIVEN), str::parse)
    }
}

impl FromIterator<Prompt> for Prompts {
    fn from_iter<I: IntoIterator<Item = Prompt>>(values: I) -> Self {
        Self(values.into_iter().fold(0, |bits, p| bits | Self::bit(p)))
    }
}

impl FromStr for Prompts {
    type Err = PromptError;

    /// OIDC Core §3.1.2.1: space-delimited values, each one of [`Prompt`] (exact); `none` only on
    /// its own. A value given twice counts once.
    fn from_str(raw: &str) -> Result<Self, PromptError> {
        let prompts = raw
            .split(' ')
            .filter(|v| !v.is_empty())
            .map(str::parse)
            .collect::<Result<Self, UnknownValue>>()
            .map_err(PromptError::Unknown)?;
        if prompts.contains(Prompt::None) && prompts.0 != Self::bit(Prompt::None) {
            return Err(PromptError::NoneWithOthers);
        }
        Ok(prompts)
    }
}

impl fmt::Display for Prompts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, prompt) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(prompt.as_str())?;
        }
        Ok(())
    }
}

protocol_enum! {
    /// The `error` of an OAuth error response: authorization (RFC 6749 §4.1.2.1, OIDC Core
    /// §3.1.2.6), token (RFC 6749 §5.2, RFC 8628 §3.5), registration (RFC 7591 §3.2.2),
    /// revocation (RFC 7009 §2.2.1), bearer tokens (RFC 6750 §3.1).
    pub enum ErrorCode ("OAuth error code") {
        /// RFC 6749 §4.1.2.1, §5.2.
        InvalidRequest => "invalid_request",
        /// RFC 6749 §5.2.
        InvalidClient => "invalid_client",
        /// RFC 6749 §5.2.
        InvalidGrant => "invalid_grant",
        /// RFC 6749 §4.1.2.1, §5.2.
        UnauthorizedClient => "unauthorized_client",
        /// RFC 6749 §5.2.
        UnsupportedGrantType => "unsupported_grant_type",
        /// RFC 6749 §4.1.2.1, §5.2.
        InvalidScope => "invalid_scope",
        /// RFC 6749 §4.1.2.1; RFC 8628 §3.5 (the user denied the device).
        AccessDenied => "access_denied",
        /// RFC 6749 §4.1.2.1.
        UnsupportedResponseType => "unsupported_response_type",
        /// RFC 6749 §4.1.2.1.
        ServerError => "server_error",
        /// RFC 6749 §4.1.2.1.
        TemporarilyUnavailable => "temporarily_unavailable",
        /// RFC 8628 §3.5.
        AuthorizationPending => "authorization_pending",
        /// RFC 8628 §3.5.
        SlowDown => "slow_down",
        /// RFC 8628 §3.5.
        ExpiredToken => "expired_token",
        /// RFC 7591 §3.2.2.
        InvalidRedirectUri => "invalid_redirect_uri",
        /// RFC 7591 §3.2.2.
        InvalidClientMetadata => "invalid_client_metadata",
        /// RFC 7591 §3.2.2.
        InvalidSoftwareStatement => "invalid_software_statement",
        /// RFC 7591 §3.2.2.
        UnapprovedSoftwareStatement => "unapproved_software_statement",
        /// RFC 7009 §2.2.1.
        UnsupportedTokenType => "unsupported_token_type",
        /// RFC 6750 §3.1.
        InvalidToken => "invalid_token",
        /// RFC 6750 §3.1.
        InsufficientScope => "insufficient_scope",
        /// OIDC Core §3.1.2.6.
        InteractionRequired => "interaction_required",
        /// OIDC Core §3.1.2.6.
        LoginRequired => "login_required",
        /// OIDC Core §3.1.2.6.
        AccountSelectionRequired => "account_selection_required",
        /// OIDC Core §3.1.2.6.
        ConsentRequired => "consent_required",
        /// OIDC Core §3.1.2.6.
        InvalidRequestUri => "invalid_request_uri",
        /// OIDC Core §3.1.2.6.
        InvalidRequestObject => "invalid_request_object",
        /// OIDC Core §3.1.2.6.
        RequestNotSupported => "request_not_supported",
        /// OIDC Core §3.1.2.6.
        RequestUriNotSupported => "request_uri_not_supported",
        /// OIDC Core §3.1.2.6.
        RegistrationNotSupported => "registration_not_supported",
    }
}

protocol_enum! {
    /// The kinds of token a `token_type_hint` names (RFC 7009 §2.1, RFC 7662 §2.1), which the
    /// introspection response's `token_type` also uses (as MAS does; SPEC-NOTES.md).
    pub enum TokenTypeHint ("token type hint") {
        /// RFC 7009 §2.1.
        AccessToken => "access_token",
        /// RFC 7009 §2.1.
        RefreshToken => "refresh_token",
    }
}

/// The wire values of `values`, in order (for the discovery document's `*_supported` lists).
pub fn wire_values<T: Copy + Into<&'static str>>(values: &[T]) -> Vec<&'static str> {
    values.iter().map(|v| (*v).into()).collect()
}

macro_rules! into_str {
    ($($name:ident),+) => {$(
        impl From<$name> for &'static str {
            fn from(value: $name) -> Self {
                value.as_str()
            }
        }

        impl From<$name> for serde_json::Value {
            fn from(value: $name) -> Self {
                value.as_str().into()
            }
        }
    )+};
}
into_str!(
    GrantType,
    ClientAuthMethod,
    ResponseType,
    ResponseMode,
    Prompt,
    ErrorCode
);

/// Deserializes a list of protocol values, keeping the known ones and dropping the rest (RFC 7591
/// §2: "The authorization server MUST ignore any … values that it does not understand"; MSC2966).
pub fn known_values<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
{
    let raw = Vec::<String>::deserialize(deserializer)?;
    Ok(raw.iter().filter_map(|v| v.parse().ok()).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every value of `T` reads back from its wire form, through `FromStr` and serde, and no two
    /// share a wire form.
    fn round_trips<T>(all: &[T])
    where
        T: Copy
            + PartialEq
            + fmt::Debug
            + fmt::Display
            + FromStr<Err = UnknownValue>
            + Serialize
            + for<'de> Deserialize<'de>
            + Into<&'static str>,
    {
        let wire = wire_values(all);
        for (value, text) in all.iter().zip(&wire) {
            assert_eq!(value.to_string(), *text);
            assert_eq!(text.parse::<T>(), Ok(*value));
            let json = serde_json::to_value(value).unwrap();
            assert_eq!(json, serde_json::Value::String((*text).to_owned()));
            assert_eq!(serde_json::from_value::<T>(json).unwrap(), *value);
        }
        let mut unique = wire.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), wire.len(), "{wire:?}");
    }

    #[test]
    fn every_value_round_trips() {
        round_trips(GrantType::ALL);
        round_trips(ClientAuthMethod::ALL);
        round_trips(ResponseType::ALL);
        round_trips(ResponseMode::ALL);
        round_trips(Prompt::ALL);
        round_trips(ErrorCode::ALL);
    }

    #[test]
    fn the_wire_forms_are_the_specs() {
        assert_eq!(
            wire_values(GrantType::ALL),
            [
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:device_code"
            ]
        );
        assert_eq!(
            wire_values(ClientAuthMethod::ALL),
            [
                "none",
                "client_secret_basic",
                "client_secret_post",
                "client_secret_jwt",
                "private_key_jwt"
            ]
        );
        assert_eq!(
            wire_values(ResponseMode::ALL),
            ["query", "fragment", "form_post"]
        );
        assert_eq!(
            wire_values(Prompt::ALL),
            ["none", "login", "consent", "create", "select_account"]
        );
        assert_eq!(ErrorCode::LoginRequired.as_str(), "login_required");
        assert_eq!("slow_down".parse(), Ok(ErrorCode::SlowDown));
    }

    #[test]
    fn unknown_values_are_refused_and_ignored_in_lists() {
        let e = "implicit".parse::<GrantType>().unwrap_err();
        assert_eq!(e.to_string(), "`implicit` is not a known grant type");
        // Case-sensitive (RFC 6749 §8.1, §11.4), no trimming.
        assert!("Authorization_Code".parse::<GrantType>().is_err());
        assert!(" code".parse::<ResponseType>().is_err());
        assert!(serde_json::from_str::<ErrorCode>("\"nope\"").is_err());
        #[derive(Deserialize)]
        struct Lenient {
            #[serde(deserialize_with = "known_values")]
            grants: Vec<GrantType>,
        }
        let read: Lenient = serde_json::from_str(
            r#"{"grants": ["implicit", "refresh_token", "password", "authorization_code"]}"#,
        )
        .unwrap();
        assert_eq!(
            read.grants,
            [GrantType::RefreshToken, GrantType::AuthorizationCode]
        );
    }

    #[test]
    fn prompts_are_a_set_with_none_alone() {
        let p: Prompts = " login  consent login".parse().unwrap();
        assert!(p.contains(Prompt::Login) && p.contains(Prompt::Consent));
        assert!(!p.contains(Prompt::None) && !p.contains(Prompt::Create));
        assert_eq!(p.to_string(), "login consent");
        assert_eq!(Prompts::parse_param(None), Ok(Prompts::NONE_GIVEN));
        assert!(Prompts::parse_param(Some("")).unwrap().is_empty());
        assert_eq!("none".parse::<Prompts>().unwrap().to_string(), "none");
        // OIDC Core §3.1.2.1: `none` with any other value is an error.
        assert_eq!(
            "none login".parse::<Prompts>(),
            Err(PromptError::NoneWithOthers)
        );
        let e = "login sometimes".parse::<Prompts>().unwrap_err();
        assert_eq!(e.to_string(), "prompt value `sometimes` is not supported");
        // Case-sensitive, like every value here.
        assert!("Login".parse::<Prompts>().is_err());
        assert!("login\tconsent".parse::<Prompts>().is_err());
    }

    /// Any string outside the table is refused; any string that parses is the wire form of the
    /// value it parses to.
    fn exact<T>(text: &str) -> Result<(), TestCaseError>
    where
        T: FromStr<Err = UnknownValue> + Copy + Into<&'static str> + fmt::Debug,
    {
        match text.parse::<T>() {
            Ok(value) => {
                let wire: &str = value.into();
                prop_assert_eq!(wire, text);
            }
            Err(e) => prop_assert_eq!(e.value, text),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn only_the_exact_wire_forms_parse(text in "[a-z_:\\-]{0,48}|\\PC{0,24}") {
            exact::<GrantType>(&text)?;
            exact::<ClientAuthMethod>(&text)?;
            exact::<ResponseType>(&text)?;
            exact::<ResponseMode>(&text)?;
            exact::<Prompt>(&text)?;
            exact::<ErrorCode>(&text)?;
        }

        /// Any set of values but `none` with others is written back to a string that parses to
        /// the same set; any string either parses to a set whose display parses back the same,
        /// or is refused.
        #[test]
        fn prompts_round_trip(picks in proptest::collection::vec(0usize..5, 0..8), text in "[a-z_ ]{0,40}") {
            let set: Prompts = picks.iter().map(|i| Prompt::ALL[*i]).collect();
            let alone = !set.contains(Prompt::None) || set.iter().count() == 1;
            match set.to_string().parse::<Prompts>() {
                Ok(back) => prop_assert!(alone && back == set),
                Err(e) => prop_assert!(!alone && e == PromptError::NoneWithOthers),
            }
            if let Ok(read) = text.parse::<Prompts>() {
                prop_assert_eq!(read.to_string().parse::<Prompts>(), Ok(read));
                for word in text.split(' ').filter(|w| !w.is_empty()) {
                    prop_assert!(read.contains(word.parse::<Prompt>().unwrap()));
                }
            }
        }

        /// A wire form with any change (a character added, the case flipped) is refused.
        #[test]
        fn near_misses_are_refused(i in 0usize..29, extra in "[a-zA-Z_ ]") {
            let code = ErrorCode::ALL[i % ErrorCode::ALL.len()];
            let text = code.as_str();
            let longer = format!("{text}{extra}");
            prop_assert!(longer.parse::<ErrorCode>().is_err());
            prop_assert!(text.to_uppercase().parse::<ErrorCode>().is_err());
            let grant = GrantType::ALL[i % GrantType::ALL.len()];
            let prefixed = format!("{extra}{grant}");
            prop_assert!(prefixed.parse::<GrantType>().is_err());
        }
    }
}
