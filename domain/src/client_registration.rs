//! Dynamic client registration: the requested client metadata (RFC 7591 §2), judged by the
//! Matrix rules of MSC2966. Pure: a JSON value in, validated metadata or an error out.
//!
//! What is kept:
//! - `client_uri` (REQUIRED, MSC2966), the base every other URI must share: `logo_uri`,
//!   `tos_uri`, `policy_uri`, `jwks_uri` and the redirect URIs live on its host or a subdomain.
//! - The human-readable members and their localized variants (`client_name#fr`, RFC 7591 §2.2),
//!   `contacts`, `software_id`, `software_version`.
//! - `application_type`, `redirect_uris`, `post_logout_redirect_uris`, `grant_types`,
//!   `response_types`, `token_endpoint_auth_method`, `jwks`, `jwks_uri`.
//!
//! Every other member is ignored and not registered (RFC 7591 §2: "The authorization server MUST
//! ignore any client metadata sent by the client that it does not understand"). A member sent as
//! JSON `null` counts as absent (clients that serialise empty options as `null` still register).
//!
//! The output is what gets stored and echoed, and it reads back through
//! [`RegisteredMetadata`](super::client_metadata::RegisteredMetadata): every defaulted member is
//! written out explicitly, and redirect URIs are kept exactly as sent, since the authorization
//! endpoint compares them as strings (RFC 9700 §4.1.3).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use url::{Host, Url};

use crate::protocol::{wire_values, ClientAuthMethod, ErrorCode, GrantType, ResponseType};

/// RFC 6749 §4.1: the authorization code grant.
pub const AUTHORIZATION_CODE: &str = GrantType::AuthorizationCode.as_str();
/// RFC 6749 §6: refreshing an access token.
pub const REFRESH_TOKEN: &str = GrantType::RefreshToken.as_str();
/// RFC 8628 §3.4: the device authorization grant.
pub const DEVICE_CODE: &str = GrantType::DeviceCode.as_str();

/// The grant types a client can register for (MSC2966). Others are ignored.
pub const SUPPORTED_GRANT_TYPES: &[GrantType] = &[
    GrantType::AuthorizationCode,
    GrantType::RefreshToken,
    GrantType::DeviceCode,
];
/// The response types a client can register for (MSC2964: the code flow only). Others are
/// ignored.
pub const SUPPORTED_RESPONSE_TYPES: &[ResponseType] = &[ResponseType::Code];
/// The authentication methods a client can register with. `client_secret_jwt` is for clients of
/// the configuration only: a self-registered client would need its secret before it has one.
pub const REGISTRABLE_AUTH_METHODS: &[ClientAuthMethod] = &[
    ClientAuthMethod::None,
    ClientAuthMethod::ClientSecretBasic,
    ClientAuthMethod::ClientSecretPost,
    ClientAuthMethod::PrivateKeyJwt,
];

/// The members that may carry a language tag (RFC 7591 §2.2: the human-readable ones).
const LOCALIZABLE: &[&str] = &[
    "client_name",
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
];

/// Loopback redirect URI authorities, written exactly so (RFC 8252 §7.3, MSC2966).
const LOOPBACK_AUTHORITIES: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// JWK members that hold private or symmetric key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_JWK_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a registration is refused (RFC 7591 §3.2.2). The description names the member and the
/// rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// "The value of one or more redirection URIs is invalid."
    #[error("invalid_redirect_uri: {0}")]
    InvalidRedirectUri(String),
    /// "The value of one of the client metadata fields is invalid."
    #[error("invalid_client_metadata: {0}")]
    InvalidClientMetadata(String),
}

impl RegistrationError {
    /// The `error` code on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRedirectUri(_) => ErrorCode::InvalidRedirectUri,
            Self::InvalidClientMetadata(_) => ErrorCode::InvalidClientMetadata,
        }
    }

    /// The `error_description` on the wire.
    pub fn description(&self) -> &str {
        match self {
            Self::InvalidRedirectUri(d) | Self::InvalidClientMetadata(d) => d,
        }
    }
}

/// How an error of one member is built: redirect URI problems are `invalid_redirect_uri`,
/// everything else `invalid_client_metadata`.
type ErrorKind = fn(String) -> RegistrationError;

fn metadata_error(description: impl Into<String>) -> RegistrationError {
    RegistrationError::InvalidClientMetadata(description.into())
}

/// OIDC Dynamic Client Registration 1.0 §2 / MSC2966: `web` (the default) or `native`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplicationType {
    Web,
    Native,
}

impl ApplicationType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Native => "native",
        }
    }
}

/// Registration metadata that passed every rule, with the defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedMetadata {
    pub client_uri: String,
    pub application_type: ApplicationType,
    /// Exactly as sent (compared as strings at the authorization endpoint).
    pub redirect_uris: Vec<String>,
    /// Exactly as sent; empty when none were registered.
    pub post_logout_redirect_uris: Vec<String>,
    /// Supported ones only, without repeats, in the order sent.
    pub grant_types: Vec<GrantType>,
    /// Supported ones only, without repeats.
    pub response_types: Vec<ResponseType>,
    pub token_endpoint_auth_method: ClientAuthMethod,
    pub client_name: Option<String>,
    pub logo_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    /// Localized variants by member name (`client_name#fr` → value), RFC 7591 §2.2.
    pub localized: BTreeMap<String, String>,
    pub contacts: Option<Vec<String>>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    /// OIDC Dynamic Client Registration §2: the ID token algorithm (RS256 when absent).
    pub id_token_signed_response_alg: Option<String>,
}

/// The ID token algorithms a client may ask for: the ones this server signs with.
pub const ID_TOKEN_ALGS: &[&str] = &["RS256", "ES256"];

impl ValidatedMetadata {
    /// The registered metadata as a JSON object: what is stored and echoed (RFC 7591 §3.2.1).
    /// Members with a default are always written; optional ones only when registered.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |name: &str, value: Value| {
            map.insert(name.to_owned(), value);
        };
        put("client_uri", self.client_uri.clone().into());
        put("application_type", self.application_type.as_str().into());
        put("redirect_uris", self.redirect_uris.clone().into());
        put("grant_types", wire_values(&self.grant_types).into());
        put("response_types", wire_values(&self.response_types).into());
        put(
            "token_endpoint_auth_method",
            self.token_endpoint_auth_method.as_str().into(),
        );
        if !self.post_logout_redirect_uris.is_empty() {
            put(
                "post_logout_redirect_uris",
                self.post_logout_redirect_uris.clone().into(),
            );
        }
        let optional = [
            ("client_name", &self.client_name),
            ("logo_uri", &self.logo_uri),
            ("tos_uri", &self.tos_uri),
            ("policy_uri", &self.policy_uri),
            ("software_id", &self.software_id),
            ("software_version", &self.software_version),
            ("jwks_uri", &self.jwks_uri),
            (
                "id_token_signed_response_alg",
                &self.id_token_signed_response_alg,
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                put(name, value.clone().into());
            }
        }
        if let Some(contacts) = &self.contacts {
            put("contacts", contacts.clone().into());
        }
        if let Some(jwks) = &self.jwks {
            put("jwks", jwks.clone());
        }
        for (name, value) in &self.localized {
            put(name, value.clone().into());
        }
        map
    }
}

/// Validates a registration request body (RFC 7591 §3.1) by the rules of RFC 7591 §2 and
/// MSC2966. The first rule broken is reported.
pub fn validate(request: &Value) -> Result<ValidatedMetadata, RegistrationError> {
    // RFC 7591 §3.1: the metadata is a JSON object.
    let Value::Object(body) = request else {
        return Err(metadata_error(
            "the request body must be a JSON object of client metadata (RFC 7591 §3.1)",
        ));
    };
    let m = Members(body);

    // MSC2966: `client_uri` is required, https, without user or password. It is the common base
    // of every other URI.
    let client_uri = m
        .string("client_uri", metadata_error)?
        .ok_or_else(|| metadata_error("client_uri is required (MSC2966)"))?;
    let base = https_uri("client_uri", client_uri, metadata_error)?;
    let base_host = base
        .host()
        .map(|h| h.to_owned())
        .ok_or_else(|| metadata_error("client_uri must have a host (MSC2966)"))?;

    // MSC2966: `logo_uri`, `tos_uri`, `policy_uri`: https, no user or password, on the
    // client_uri host or a subdomain of it.
    let uri_under_base = |name: &str| -> Result<Option<String>, RegistrationError> {
        m.string(name, metadata_error)?
            .map(|raw| {
                https_uri_under(name, raw, &base_host, metadata_error).map(|()| raw.to_owned())
            })
            .transpose()
    };
    let logo_uri = uri_under_base("logo_uri")?;
    let tos_uri = uri_under_base("tos_uri")?;
    let policy_uri = uri_under_base("policy_uri")?;
    // MSC2966 applies the same base to every other URI of the metadata, `jwks_uri` included.
    let jwks_uri = uri_under_base("jwks_uri")?;
    let client_name = m.non_empty_string("client_name")?;

    // RFC 7591 §2.2: localized variants `member#tag`, validated like their base member.
    let mut localized = BTreeMap::new();
    for (key, value) in body {
        let Some((member, tag)) = key.split_once('#') else {
            continue;
        };
        if !LOCALIZABLE.contains(&member) || value.is_null() {
            // not a member we understand: ignored (RFC 7591 §2)
            continue;
        }
        if !is_language_tag(tag) {
            return Err(metadata_error(format!(
                "{key}: `{tag}` is not a BCP 47 language tag (RFC 7591 §2.2)"
            )));
        }
        let value = if member == "client_name" {
            m.non_empty_string(key)?
        } else {
            uri_under_base(key)?
        };
        if let Some(value) = value {
            localized.insert(key.clone(), value);
        }
    }

    // OIDC Dynamic Client Registration 1.0 §2, MSC2966: `web` unless said otherwise.
    let application_type = match m.string("application_type", metadata_error)? {
        None | Some("web") => ApplicationType::Web,
        Some("native") => ApplicationType::Native,
        Some(other) => {
            return Err(metadata_error(format!(
                "application_type `{other}` is not supported: use web or native (MSC2966)"
            )))
        }
    };

    // RFC 7591 §2: grant_types defaults to ["authorization_code"]; MSC2966: the server MUST
    // ignore grant types it does not understand.
    let grant_types = match m.string_array("grant_types", metadata_error)? {
        None => vec![GrantType::AuthorizationCode],
        Some(requested) => supported(&requested, SUPPORTED_GRANT_TYPES),
    };
    let code_grant = grant_types.contains(&GrantType::AuthorizationCode);
    if !code_grant && !grant_types.contains(&GrantType::DeviceCode) {
        return Err(metadata_error(format!(
            "grant_types must include {AUTHORIZATION_CODE} or {DEVICE_CODE}: without one of \
             them the client can't obtain tokens (supported: {}; others are ignored, MSC2966)",
            wire_values(SUPPORTED_GRANT_TYPES).join(", ")
        )));
    }

    // RFC 7591 §2: response_types defaults to ["code"], unknown ones ignored (MSC2966). The
    // default follows the grants: a client without the code grant (device flow only) gets none,
    // so omitting the member can't make it inconsistent.
    let response_types = match m.string_array("response_types", metadata_error)? {
        None if code_grant => vec![ResponseType::Code],
        None => Vec::new(),
        Some(requested) => supported(&requested, SUPPORTED_RESPONSE_TYPES),
    };
    // RFC 7591 §2.1: the `code` response type and the `authorization_code` grant go together;
    // an inconsistent registration is refused.
    match (code_grant, response_types.contains(&ResponseType::Code)) {
        (true, false) => {
            return Err(metadata_error(
                "response_types must include `code` when grant_types includes \
                 authorization_code (RFC 7591 §2.1)",
            ))
        }
        (false, true) => {
            return Err(metadata_error(
                "response_types includes `code` but grant_types does not include \
                 authorization_code (RFC 7591 §2.1)",
            ))
        }
        _ => {}
    }

    // RFC 7591 §2: token_endpoint_auth_method defaults to client_secret_basic. (Matrix clients
    // are public and send `none`, which MSC2966 requires the server to support.)
    let token_endpoint_auth_method = match m.string("token_endpoint_auth_method", metadata_error)? {
        None => ClientAuthMethod::ClientSecretBasic,
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|method| REGISTRABLE_AUTH_METHODS.contains(method))
            .ok_or_else(|| {
                metadata_error(format!(
                    "token_endpoint_auth_method `{raw}` is not supported: use {}",
                    wire_values(REGISTRABLE_AUTH_METHODS).join(", ")
                ))
            })?,
    };

    // RFC 7591 §2: `jwks` and `jwks_uri` MUST NOT both be present.
    let jwks = m.get("jwks").map(check_jwks).transpose()?;
    if jwks.is_some() && jwks_uri.is_some() {
        return Err(metadata_error(
            "jwks and jwks_uri must not both be present (RFC 7591 §2)",
        ));
    }
    // RFC 7523 §2.2 / OIDC Core §9: private_key_jwt needs the client's public keys.
    if token_endpoint_auth_method == ClientAuthMethod::PrivateKeyJwt
        && jwks.is_none()
        && jwks_uri.is_none()
    {
        return Err(metadata_error(
            "token_endpoint_auth_method private_key_jwt needs jwks or jwks_uri (RFC 7591 §2)",
        ));
    }

    // RFC 7591 §2 / MSC2966: redirect URIs, by application type.
    let redirect_uris = m
        .string_array("redirect_uris", RegistrationError::InvalidRedirectUri)?
        .unwrap_or_default();
    // MSC2966: the authorization code grant needs at least one redirect URI. (A device-flow-only
    // client registers without any.)
    if code_grant && redirect_uris.is_empty() {
        return Err(RegistrationError::InvalidRedirectUri(format!(
            "redirect_uris must hold at least one URI for the {AUTHORIZATION_CODE} grant (MSC2966)"
        )));
    }
    for (i, uri) in redirect_uris.iter().enumerate() {
        redirect_uri(
            &format!("redirect_uris[{i}]"),
            uri,
            application_type,
            &base_host,
            RegistrationError::InvalidRedirectUri,
        )?;
    }

    // OIDC RP-Initiated Logout 1.0 §3.1 / MSC2966: the same rules as redirect URIs (loopback
    // ones included). They are not `redirect_uris`, so their errors are
    // `invalid_client_metadata` (RFC 7591 §3.2.2 keeps `invalid_redirect_uri` for those).
    let post_logout_redirect_uris = m
        .string_array("post_logout_redirect_uris", metadata_error)?
        .unwrap_or_default();
    for (i, uri) in post_logout_redirect_uris.iter().enumerate() {
        redirect_uri(
            &format!("post_logout_redirect_uris[{i}]"),
            uri,
            application_type,
            &base_host,
            metadata_error,
        )?;
    }

    // RFC 7591 §2: contacts, software_id, software_version, kept when well-formed.
    let contacts = match m.string_array("contacts", metadata_error)? {
        Some(list) => {
            if let Some(i) = list.iter().position(|c| c.trim().is_empty()) {
                return Err(metadata_error(format!(
                    "contacts[{i}] must not be empty (RFC 7591 §2)"
                )));
            }
            Some(list.into_iter().map(str::to_owned).collect())
        }
        None => None,
    };
    let software_id = m.non_empty_string("software_id")?;
    let software_version = m.non_empty_string("software_version")?;
    // OIDC Dynamic Client Registration §2: id_token_signed_response_alg, one this server signs
    // with (RS256 is the default and always available; `none` is never allowed with the code
    // flow).
    let id_token_signed_response_alg = match m.non_empty_string("id_token_signed_response_alg")? {
        Some(alg) if ID_TOKEN_ALGS.contains(&alg.as_str()) => Some(alg),
        Some(alg) => {
            return Err(metadata_error(format!(
                "id_token_signed_response_alg `{alg}` is not supported; use one of {}",
                ID_TOKEN_ALGS.join(", ")
            )))
        }
        None => None,
    };

    Ok(ValidatedMetadata {
        client_uri: client_uri.to_owned(),
        application_type,
        redirect_uris: redirect_uris.into_iter().map(str::to_owned).collect(),
        post_logout_redirect_uris: post_logout_redirect_uris
            .into_iter()
            .map(str::to_owned)
            .collect(),
        grant_types,
        response_types,
        token_endpoint_auth_method,
        client_name,
        logo_uri,
        tos_uri,
        policy_uri,
        localized,
        contacts,
        software_id,
        software_version,
        jwks,
        jwks_uri,
        id_token_signed_response_alg,
    })
}

/// Typed access to the members of the request, `null` counting as absent.
struct Members<'a>(&'a Map<String, Value>);

impl<'a> Members<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &str, kind: ErrorKind) -> Result<Option<&'a str>, RegistrationError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(kind(format!("{name} must be a string (RFC 7591 §2)"))),
        }
    }

    fn non_empty_string(&self, name: &str) -> Result<Option<String>, RegistrationError> {
        match self.string(name, metadata_error)? {
            Some(s) if s.trim().is_empty() => Err(metadata_error(format!(
                "{name} must not be empty (RFC 7591 §2)"
            ))),
            other => Ok(other.map(str::to_owned)),
        }
    }

    fn string_array(
        &self,
        name: &str,
        kind: ErrorKind,
    ) -> Result<Option<Vec<&'a str>>, RegistrationError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let not_strings = || kind(format!("{name} must be an array of strings (RFC 7591 §2)"));
        let Value::Array(items) = value else {
            return Err(not_strings());
        };
        items
            .iter()
            .map(|item| item.as_str().ok_or_else(not_strings))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// The requested values the server supports, without repeats, in the order requested.
fn supported<T: Copy + PartialEq + std::str::FromStr>(requested: &[&str], known: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for value in requested {
        if let Ok(value) = value.parse::<T>() {
            if known.contains(&value) && !out.contains(&value) {
                out.push(value);
            }
        }
    }
    out
}

/// RFC 5646 (BCP 47), loosely: subtags of 1 to 8 letters or digits joined by `-`, the first
/// letters only.
fn is_language_tag(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    let first_ok = subtags
        .next()
        .is_some_and(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic()));
    first_ok
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Parses an absolute URI, refusing text the URL parser would silently repair: surrounding
/// spaces, tabs and newlines (which it strips) and other control characters. What is stored must
/// be what was checked.
fn absolute_uri(field: &str, raw: &str, kind: ErrorKind) -> Result<Url, RegistrationError> {
    if raw.is_empty() {
        return Err(kind(format!("{field} must not be empty")));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(kind(format!(
            "{field} must not contain spaces or control characters (RFC 3986 §2)"
        )));
    }
    let url = Url::parse(raw)
        .map_err(|e| kind(format!("{field}: `{raw}` is not an absolute URI: {e}")))?;
    // RFC 3986 §3: an authority is introduced by `//`, and `\` is no URI character (§2). For
    // http and https the parser repairs `https:/host`, `https:host` and `https:\\host` into
    // `https://host` (the WHATWG URL Standard's leniency); such text is refused, not repaired.
    // Found by fuzzing (fuzz/fuzz_targets/client_registration.rs).
    let after_scheme = raw.get(url.scheme().len() + 1..).unwrap_or_default();
    if url.has_authority() && (!after_scheme.starts_with("//") || raw.contains('\\')) {
        return Err(kind(format!(
            "{field}: `{raw}` is not an absolute URI: write the authority as `{}://host` \
             (RFC 3986 §3)",
            url.scheme()
        )));
    }
    Ok(url)
}

/// MSC2966: an https URI without a user or password in its authority.
fn https_uri(field: &str, raw: &str, kind: ErrorKind) -> Result<Url, RegistrationError> {
    let url = absolute_uri(field, raw, kind)?;
    if url.scheme() != "https" {
        return Err(kind(format!(
            "{field}: `{raw}` must use the https scheme (MSC2966)"
        )));
    }
    no_userinfo(field, raw, &url, kind)?;
    Ok(url)
}

/// MSC2966: no user or password in the authority component.
fn no_userinfo(
    field: &str,
    raw: &str,
    url: &Url,
    kind: ErrorKind,
) -> Result<(), RegistrationError> {
    if url.username().is_empty() && url.password().is_none() {
        Ok(())
    } else {
        Err(kind(format!(
            "{field}: `{raw}` must not contain a user or password (MSC2966)"
        )))
    }
}

/// MSC2966: an https URI on the client_uri host or a subdomain of it (port, path and query may
/// differ).
fn https_uri_under(
    field: &str,
    raw: &str,
    base: &Host<String>,
    kind: ErrorKind,
) -> Result<(), RegistrationError> {
    let url = https_uri(field, raw, kind)?;
    host_under(field, raw, &url, base, kind)
}

fn host_under(
    field: &str,
    raw: &str,
    url: &Url,
    base: &Host<String>,
    kind: ErrorKind,
) -> Result<(), RegistrationError> {
    let under = match (url.host(), base) {
        (Some(Host::Domain(host)), Host::Domain(base)) => {
            host == base
                || host
                    .strip_suffix(base.as_str())
                    .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
        }
        (Some(host), base) => host.to_owned() == *base,
        (None, _) => false,
    };
    if under {
        Ok(())
    } else {
        Err(kind(format!(
            "{field}: `{raw}` must be on the client_uri host `{base}` or a subdomain of it \
             (MSC2966)"
        )))
    }
}

/// A redirect URI (or post-logout redirect URI) for this kind of application.
fn redirect_uri(
    field: &str,
    raw: &str,
    application_type: ApplicationType,
    base: &Host<String>,
    kind: ErrorKind,
) -> Result<(), RegistrationError> {
    let url = absolute_uri(field, raw, kind)?;
    // RFC 6749 §3.1.2, MSC2966: "In all cases, the redirect URI MUST NOT have a fragment
    // component" (an empty one, `…#`, included).
    if raw.contains('#') {
        return Err(kind(format!(
            "{field}: `{raw}` must not contain a fragment (RFC 6749 §3.1.2, MSC2966)"
        )));
    }
    match (url.scheme(), application_type) {
        // MSC2966 web clients, and native clients with a claimed https URI (RFC 8252 §7.2):
        // https, no user or password, on the client_uri host or a subdomain.
        ("https", _) => {
            no_userinfo(field, raw, &url, kind)?;
            host_under(field, raw, &url, base, kind)
        }
        (_, ApplicationType::Web) => Err(kind(format!(
            "{field}: `{raw}` must use the https scheme: web clients can't use other schemes \
             (MSC2966; use application_type native for loopback or private-use schemes)"
        ))),
        ("http", ApplicationType::Native) => loopback(field, raw, &url, kind),
        (scheme, ApplicationType::Native) => private_use(field, raw, scheme, base, kind),
    }
}

/// RFC 8252 §7.3, MSC2966: `http` on the loopback interface, written `localhost`, `127.0.0.1`
/// or `[::1]`, with NO port: the app picks a free port at run time, and the authorization
/// endpoint accepts any port for a port-less loopback registration. A registered port would be
/// matched exactly, which MSC2966 rules out ("it MUST have no port"), so one is refused here.
fn loopback(field: &str, raw: &str, url: &Url, kind: ErrorKind) -> Result<(), RegistrationError> {
    no_userinfo(field, raw, url, kind)?;
    // The authority as written (the parser would drop a default port such as `:80`).
    let authority = raw
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '\\', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    if LOOPBACK_AUTHORITIES.contains(&authority) {
        Ok(())
    } else {
        Err(kind(format!(
            "{field}: `{raw}`: http is only allowed on the loopback interface, written \
             http://localhost, http://127.0.0.1 or http://[::1] with no port (any port is \
             accepted at authorization time; RFC 8252 §7.3, MSC2966)"
        )))
    }
}

/// RFC 8252 §7.1, MSC2966: a private-use scheme, the client_uri host in reverse-DNS notation
/// or a name under it (`com.example.app:/callback` for `https://example.com/` or
/// `https://app.example.com/`), with no authority component.
fn private_use(
    field: &str,
    raw: &str,
    scheme: &str,
    base: &Host<String>,
    kind: ErrorKind,
) -> Result<(), RegistrationError> {
    let Host::Domain(base) = base else {
        return Err(kind(format!(
            "{field}: `{raw}`: a private-use scheme must be the client_uri host in reverse-DNS \
             notation, and the client_uri host `{base}` is not a domain name (MSC2966)"
        )));
    };
    let reversed: Vec<&str> = base.split('.').rev().collect();
    let reversed = reversed.join(".");
    let prefixed = scheme == reversed
        || scheme
            .strip_prefix(reversed.as_str())
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'));
    // RFC 8252 §7.1: a scheme based on a domain name, so it holds a period; this also keeps
    // `javascript:`, `data:` and `file:` out whatever the client_uri host.
    if !prefixed || !scheme.contains('.') {
        return Err(kind(format!(
            "{field}: `{raw}`: the scheme `{scheme}` must be the client_uri host in reverse-DNS \
             notation (`{reversed}`) or a name under it (`{reversed}.app`), and contain a \
             period (RFC 8252 §7.1, MSC2966)"
        )));
    }
    // MSC2966: "the URI MUST NOT have an authority component" (`com.example.app:/callback` or
    // `com.example.app:callback`, never `com.example.app://callback`).
    let after_scheme = raw.get(scheme.len() + 1..).unwrap_or_default();
    if after_scheme.starts_with("//") {
        return Err(kind(format!(
            "{field}: `{raw}`: a private-use URI must not have an authority component: write \
             `{scheme}:/path`, not `{scheme}://path` (RFC 8252 §7.1, MSC2966)"
        )));
    }
    Ok(())
}

/// RFC 7591 §2: `jwks` is a JWK Set (RFC 7517 §5) of the client's PUBLIC keys.
fn check_jwks(value: &Value) -> Result<Value, RegistrationError> {
    let keys = value
        .as_object()
        .and_then(|set| set.get("keys"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            metadata_error("jwks must be a JWK Set: an object with a `keys` array (RFC 7517 §5)")
        })?;
    if keys.is_empty() {
        return Err(metadata_error(
            "jwks must hold at least one key (RFC 7517 §5)",
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        let Some(key) = key.as_object() else {
            return Err(metadata_error(format!(
                "jwks.keys[{i}] must be a JWK object (RFC 7517 §4)"
            )));
        };
        if !key.get("kty").is_some_and(Value::is_string) {
            return Err(metadata_error(format!(
                "jwks.keys[{i}] must have a `kty` string (RFC 7517 §4.1)"
            )));
        }
        if let Some(member) = PRIVATE_JWK_MEMBERS.iter().find(|m| key.contains_key(**m)) {
            return Err(metadata_error(format!(
                "jwks.keys[{i}] holds private or symmetric key material (`{member}`): register \
                 public keys only (RFC 7591 §2)"
            )));
        }
    }
    Ok(value.clone())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::client_metadata::RegisteredMetadata;

    /// Element X on iOS, as it registers.
    fn element_x() -> Value {
        json!({
            "client_name": "Element X",
            "client_uri": "https://element.io",
            "logo_uri": "https://element.io/mobile-icon.png",
            "tos_uri": "https://element.io/acceptable-use-policy-terms",
            "policy_uri": "https://element.io/privacy",
            "application_type": "native",
            "redirect_uris": ["io.element.elementx:/oidc/login"],
            "token_endpoint_auth_method": "none",
            "response_types": ["code"],
            "grant_types": [AUTHORIZATION_CODE, REFRESH_TOKEN, DEVICE_CODE],
        })
    }

    fn web() -> Value {
        json!({
            "client_uri": "https://example.com/",
            "redirect_uris": ["https://app.example.com/callback"],
        })
    }

    /// Regression (found by fuzzing): text that the URL parser repairs into an https URL with
    /// a host is not an RFC 3986 URI with that host, and is refused rather than stored as sent.
    #[test]
    fn uris_the_parser_would_repair_are_refused() {
        for repaired in [
            "https:/example.com",
            "https:example.com",
            "https:\\\\example.com",
            "https:/\\example.com",
            "https://example.com\\path",
        ] {
            metadata_refused(&with(web(), "client_uri", json!(repaired)), "client_uri");
            metadata_refused(&with(web(), "logo_uri", json!(repaired)), "logo_uri");
            redirect_refused(
                &with(web(), "redirect_uris", json!([repaired])),
                "redirect_uris",
            );
        }
        let native = with(element_x(), "redirect_uris", json!(["http:/127.0.0.1/cb"]));
        redirect_refused(&native, "redirect_uris");
        // The written forms still register.
        ok(&with(web(), "client_uri", json!("HTTPS://example.com/")));
        ok(&with(
            web(),
            "redirect_uris",
            json!(["https://example.com/cb"]),
        ));
    }

    #[test]
    fn id_token_algorithm_on_request() {
        let es = validate(&with(web(), "id_token_signed_response_alg", json!("ES256"))).unwrap();
        assert_eq!(es.id_token_signed_response_alg.as_deref(), Some("ES256"));
        assert_eq!(es.to_json()["id_token_signed_response_alg"], "ES256");
        let default = validate(&web()).unwrap();
        assert!(default
            .to_json()
            .get("id_token_signed_response_alg")
            .is_none());
        for refused in ["none", "HS256", "PS256"] {
            let e =
                validate(&with(web(), "id_token_signed_response_alg", json!(refused))).unwrap_err();
            assert!(
                e.to_string().contains("id_token_signed_response_alg"),
                "{refused}: {e}"
            );
        }
    }

    fn with(mut base: Value, member: &str, value: Value) -> Value {
        if let Value::Object(map) = &mut base {
            if value.is_null() {
                map.remove(member);
            } else {
                map.insert(member.to_owned(), value);
            }
        }
        base
    }

    fn ok(request: &Value) -> ValidatedMetadata {
        match validate(request) {
            Ok(m) => m,
            Err(e) => panic!("{request} was refused: {e}"),
        }
    }

    /// The error, checked to name `field` in its description.
    fn refused(request: &Value, field: &str) -> RegistrationError {
        let e = validate(request).expect_err("expected a refusal");
        assert!(
            e.description().contains(field),
            "`{}` does not name {field}",
            e.description()
        );
        e
    }

    fn redirect_refused(request: &Value, field: &str) {
        let e = refused(request, field);
        assert_eq!(e.code().as_str(), "invalid_redirect_uri", "{e}");
    }

    fn metadata_refused(request: &Value, field: &str) {
        let e = refused(request, field);
        assert_eq!(e.code().as_str(), "invalid_client_metadata", "{e}");
    }

    #[test]
    fn element_x_registers_as_sent() {
        let m = ok(&element_x());
        assert_eq!(m.application_type, ApplicationType::Native);
        assert_eq!(m.token_endpoint_auth_method, ClientAuthMethod::None);
        assert_eq!(
            m.grant_types,
            [
                GrantType::AuthorizationCode,
                GrantType::RefreshToken,
                GrantType::DeviceCode
            ]
        );
        assert_eq!(m.redirect_uris, ["io.element.elementx:/oidc/login"]);
        let json = Value::Object(m.to_json());
        assert_eq!(json["client_uri"], "https://element.io");
        assert_eq!(json["client_name"], "Element X");
        assert_eq!(json["token_endpoint_auth_method"], "none");
        assert!(json.get("contacts").is_none());
    }

    #[test]
    fn the_body_must_be_an_object() {
        for body in [json!([]), json!("x"), json!(1), Value::Null, json!(true)] {
            metadata_refused(&body, "JSON object");
        }
    }

    #[test]
    fn client_uri_is_required_https_without_userinfo() {
        metadata_refused(&with(web(), "client_uri", Value::Null), "client_uri");
        metadata_refused(&with(web(), "client_uri", json!(5)), "client_uri");
        metadata_refused(&with(web(), "client_uri", json!("")), "client_uri");
        metadata_refused(
            &with(web(), "client_uri", json!("http://example.com/")),
            "client_uri",
        );
        metadata_refused(
            &with(web(), "client_uri", json!("example.com")),
            "client_uri",
        );
        metadata_refused(
            &with(web(), "client_uri", json!("https://u:p@example.com/")),
            "client_uri",
        );
        metadata_refused(
            &with(web(), "client_uri", json!("https://u@example.com/")),
            "client_uri",
        );
        metadata_refused(
            &with(web(), "client_uri", json!(" https://example.com/")),
            "client_uri",
        );
        metadata_refused(
            &with(web(), "client_uri", json!("https://exa\tmple.com/")),
            "client_uri",
        );
        // the path, port and query are free
        ok(&with(
            web(),
            "client_uri",
            json!("https://example.com:8443/about?x=1"),
        ));
    }

    #[test]
    fn display_uris_share_the_client_uri_host() {
        for member in ["logo_uri", "tos_uri", "policy_uri"] {
            ok(&with(web(), member, json!("https://example.com/x")));
            ok(&with(
                web(),
                member,
                json!("https://cdn.example.com:444/x?y"),
            ));
            ok(&with(web(), member, json!("https://a.b.example.com/x")));
            metadata_refused(&with(web(), member, json!("https://example.org/x")), member);
            metadata_refused(
                &with(web(), member, json!("https://badexample.com/x")),
                member,
            );
            metadata_refused(&with(web(), member, json!("https://com/x")), member);
            metadata_refused(&with(web(), member, json!("http://example.com/x")), member);
            metadata_refused(
                &with(web(), member, json!("https://u@example.com/x")),
                member,
            );
            metadata_refused(
                &with(web(), member, json!(["https://example.com/x"])),
                member,
            );
        }
        // a subdomain client_uri does not cover its parent
        let sub = with(web(), "client_uri", json!("https://app.example.com/"));
        metadata_refused(
            &with(sub, "logo_uri", json!("https://example.com/l.png")),
            "logo_uri",
        );
    }

    #[test]
    fn localized_variants_follow_their_base_member() {
        let request = with(
            with(
                with(web(), "client_name#fr", json!("Mon application")),
                "tos_uri#de-CH",
                json!("https://example.com/de/tos"),
            ),
            "redirect_uris#fr",
            json!("ignored: not a localizable member"),
        );
        let m = ok(&request);
        assert_eq!(m.localized.len(), 2);
        assert_eq!(m.localized["client_name#fr"], "Mon application");
        let json = Value::Object(m.to_json());
        assert_eq!(json["tos_uri#de-CH"], "https://example.com/de/tos");
        assert!(json.get("redirect_uris#fr").is_none());

        metadata_refused(
            &with(web(), "tos_uri#fr", json!("https://evil.example/tos")),
            "tos_uri#fr",
        );
        metadata_refused(
            &with(web(), "logo_uri#fr", json!("http://example.com/l")),
            "logo_uri#fr",
        );
        metadata_refused(&with(web(), "client_name#fr", json!("")), "client_name#fr");
        metadata_refused(&with(web(), "client_name#fr", json!(3)), "client_name#fr");
        metadata_refused(&with(web(), "client_name#", json!("x")), "client_name#");
        metadata_refused(
            &with(web(), "client_name#f r", json!("x")),
            "client_name#f r",
        );
        metadata_refused(&with(web(), "client_name#1x", json!("x")), "client_name#1x");
        metadata_refused(
            &with(web(), "client_uri#fr", json!("https://other.example/")),
            "client_uri#fr",
        );
    }

    #[test]
    fn application_type_is_web_or_native() {
        assert_eq!(ok(&web()).application_type, ApplicationType::Web);
        assert_eq!(
            ok(&with(web(), "application_type", json!("web"))).application_type,
            ApplicationType::Web
        );
        metadata_refused(
            &with(web(), "application_type", json!("desktop")),
            "application_type",
        );
        metadata_refused(
            &with(web(), "application_type", json!(1)),
            "application_type",
        );
    }

    #[test]
    fn web_redirect_uris() {
        let uri = |u: &str| with(web(), "redirect_uris", json!([u]));
        for good in [
            "https://example.com/callback",
            "https://app.example.com/callback",
            "https://example.com:5173/?query=value",
            "https://example.com",
        ] {
            assert_eq!(ok(&uri(good)).redirect_uris, [good], "kept as sent");
        }
        for bad in [
            "https://example.com/callback#fragment",
            "https://example.com/callback#",
            "http://example.com/callback",
            "http://localhost/",
            "http://127.0.0.1/cb",
            "https://app.com/callback",
            "https://u:p@example.com/cb",
            "com.example.app:/callback",
            "/relative/callback",
            "https://example.com/ cb",
            "",
        ] {
            redirect_refused(&uri(bad), "redirect_uris[0]");
        }
        // the index names the culprit
        redirect_refused(
            &with(
                web(),
                "redirect_uris",
                json!(["https://example.com/ok", "https://evil.example/cb"]),
            ),
            "redirect_uris[1]",
        );
        redirect_refused(
            &with(web(), "redirect_uris", json!("https://example.com/cb")),
            "redirect_uris",
        );
        redirect_refused(&with(web(), "redirect_uris", json!([1])), "redirect_uris");
    }

    #[test]
    fn native_redirect_uris() {
        // MSC2966's examples, with https://example.com/ as the client URI
        let native = |u: &str| {
            with(
                with(web(), "application_type", json!("native")),
                "redirect_uris",
                json!([u]),
            )
        };
        for good in [
            "com.example.app:/callback",
            "com.example:/",
            "com.example:callback",
            "COM.Example.App:/callback",
            "http://localhost/callback",
            "http://127.0.0.1/callback",
            "http://[::1]/callback",
            "http://127.0.0.1",
            "https://example.com/callback",
            "https://app.example.com/callback",
        ] {
            assert_eq!(ok(&native(good)).redirect_uris, [good]);
        }
        for bad in [
            "example:/callback",
            "com.example.app://callback",
            "com.exampleapp:/callback",
            "com.other:/callback",
            "com:/callback",
            "https://localhost/callback",
            "http://localhost:1234/callback",
            "http://localhost:80/callback",
            "http://127.0.0.1:0/cb",
            "http://[::1]:8080/cb",
            "http://127.0.0.2/cb",
            "http://LOCALHOST/cb",
            "http://u@localhost/cb",
            "http://example.com/cb",
            "com.example.app:/callback#frag",
            "http://localhost/cb#",
            "javascript:alert(1)",
        ] {
            redirect_refused(&native(bad), "redirect_uris[0]");
        }
        // the Element X case: the scheme is a name under the reversed client_uri host
        ok(&element_x());
        // an IP client_uri has no reverse-DNS form
        let ip = with(
            with(
                native("http://localhost/cb"),
                "client_uri",
                json!("https://192.0.2.1/"),
            ),
            "redirect_uris",
            json!(["com.example:/cb"]),
        );
        redirect_refused(&ip, "redirect_uris[0]");
        // one-label hosts can't turn into `javascript:`
        let one_label = with(
            with(
                native("http://localhost/cb"),
                "client_uri",
                json!("https://javascript/"),
            ),
            "redirect_uris",
            json!(["javascript:/x"]),
        );
        redirect_refused(&one_label, "period");
    }

    #[test]
    fn grant_and_response_types() {
        // RFC 7591 §2 defaults
        let m = ok(&web());
        assert_eq!(m.grant_types, [GrantType::AuthorizationCode]);
        assert_eq!(m.response_types, [ResponseType::Code]);
        // unknown ones are ignored (MSC2966), repeats collapse
        let m = ok(&with(
            with(
                web(),
                "grant_types",
                json!([
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                    AUTHORIZATION_CODE,
                    "implicit",
                    REFRESH_TOKEN,
                    AUTHORIZATION_CODE
                ]),
            ),
            "response_types",
            json!(["code", "code id_token", "token"]),
        ));
        assert_eq!(
            m.grant_types,
            [GrantType::AuthorizationCode, GrantType::RefreshToken]
        );
        assert_eq!(m.response_types, [ResponseType::Code]);
        // nothing left to obtain tokens with
        for grants in [json!([]), json!(["implicit"]), json!([REFRESH_TOKEN])] {
            metadata_refused(&with(web(), "grant_types", grants), "grant_types");
        }
        metadata_refused(
            &with(web(), "grant_types", json!("authorization_code")),
            "grant_types",
        );
        metadata_refused(&with(web(), "response_types", json!([1])), "response_types");
        // RFC 7591 §2.1 consistency
        metadata_refused(&with(web(), "response_types", json!([])), "response_types");
        metadata_refused(
            &with(web(), "response_types", json!(["token"])),
            "response_types",
        );
        let device = with(web(), "grant_types", json!([DEVICE_CODE]));
        metadata_refused(
            &with(device, "response_types", json!(["code"])),
            "response_types",
        );
    }

    #[test]
    fn a_device_only_client_needs_no_redirect_uri() {
        let device = json!({
            "client_uri": "https://tv.example.com/",
            "grant_types": [DEVICE_CODE, REFRESH_TOKEN],
            "response_types": [],
            "token_endpoint_auth_method": "none",
        });
        let m = ok(&device);
        assert!(m.redirect_uris.is_empty());
        assert!(m.response_types.is_empty());
        // without response_types, the default follows the grants
        assert!(ok(&with(device.clone(), "response_types", Value::Null))
            .response_types
            .is_empty());
        // the code grant needs a redirect URI
        redirect_refused(&with(web(), "redirect_uris", Value::Null), "redirect_uris");
        redirect_refused(&with(web(), "redirect_uris", json!([])), "redirect_uris");
    }

    #[test]
    fn token_endpoint_auth_methods() {
        // RFC 7591 §2 default
        assert_eq!(
            ok(&web()).token_endpoint_auth_method,
            ClientAuthMethod::ClientSecretBasic
        );
        for (raw, method, secret) in [
            ("none", ClientAuthMethod::None, false),
            (
                "client_secret_basic",
                ClientAuthMethod::ClientSecretBasic,
                true,
            ),
            (
                "client_secret_post",
                ClientAuthMethod::ClientSecretPost,
                true,
            ),
        ] {
            let m = ok(&with(web(), "token_endpoint_auth_method", json!(raw)));
            assert_eq!(m.token_endpoint_auth_method, method);
            assert_eq!(method.uses_secret(), secret);
        }
        for bad in [
            json!("client_secret_jwt"),
            json!("tls_client_auth"),
            json!(1),
        ] {
            metadata_refused(
                &with(web(), "token_endpoint_auth_method", bad),
                "token_endpoint_auth_method",
            );
        }
    }

    #[test]
    fn private_key_jwt_needs_exactly_one_key_source() {
        let pkj = with(
            web(),
            "token_endpoint_auth_method",
            json!("private_key_jwt"),
        );
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]});
        metadata_refused(&pkj, "private_key_jwt");
        let m = ok(&with(pkj.clone(), "jwks", jwks.clone()));
        assert_eq!(m.jwks.as_ref(), Some(&jwks));
        assert!(!m.token_endpoint_auth_method.uses_secret());
        ok(&with(
            pkj.clone(),
            "jwks_uri",
            json!("https://example.com/jwks.json"),
        ));
        metadata_refused(
            &with(
                with(pkj.clone(), "jwks", jwks),
                "jwks_uri",
                json!("https://example.com/jwks.json"),
            ),
            "jwks_uri",
        );
        metadata_refused(
            &with(pkj.clone(), "jwks_uri", json!("https://other.example/j")),
            "jwks_uri",
        );
        metadata_refused(
            &with(pkj.clone(), "jwks_uri", json!("http://example.com/j")),
            "jwks_uri",
        );
        for bad in [
            json!([]),
            json!({}),
            json!({"keys": []}),
            json!({"keys": [1]}),
            json!({"keys": [{"n": "x"}]}),
            json!({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "d": "secret"}]}),
            json!({"keys": [{"kty": "oct", "k": "secret"}]}),
        ] {
            metadata_refused(&with(pkj.clone(), "jwks", bad), "jwks");
        }
    }

    #[test]
    fn post_logout_redirect_uris_follow_the_redirect_rules() {
        let native = with(element_x(), "redirect_uris", json!(["http://127.0.0.1/cb"]));
        let m = ok(&with(
            native.clone(),
            "post_logout_redirect_uris",
            json!(["http://localhost/logout", "io.element.elementx:/logout"]),
        ));
        assert_eq!(m.post_logout_redirect_uris.len(), 2);
        for bad in [
            "http://localhost:8080/logout",
            "https://evil.example/",
            "x.y:/z",
        ] {
            metadata_refused(
                &with(native.clone(), "post_logout_redirect_uris", json!([bad])),
                "post_logout_redirect_uris[0]",
            );
        }
        metadata_refused(
            &with(
                web(),
                "post_logout_redirect_uris",
                json!(["https://example.com/bye#x"]),
            ),
            "post_logout_redirect_uris[0]",
        );
        metadata_refused(
            &with(
                web(),
                "post_logout_redirect_uris",
                json!(["http://localhost/bye"]),
            ),
            "post_logout_redirect_uris[0]",
        );
    }

    #[test]
    fn descriptive_members() {
        let m = ok(&with(
            with(
                with(
                    web(),
                    "contacts",
                    json!(["ops@example.com", "https://example.com/help"]),
                ),
                "software_id",
                json!("4NRB1-0XZABZI9E6-5SM3R"),
            ),
            "software_version",
            json!("2.1"),
        ));
        let json = Value::Object(m.to_json());
        assert_eq!(
            json["contacts"],
            json!(["ops@example.com", "https://example.com/help"])
        );
        assert_eq!(json["software_id"], "4NRB1-0XZABZI9E6-5SM3R");
        assert_eq!(json["software_version"], "2.1");
        metadata_refused(
            &with(web(), "contacts", json!("ops@example.com")),
            "contacts",
        );
        metadata_refused(&with(web(), "contacts", json!([""])), "contacts[0]");
        metadata_refused(&with(web(), "client_name", json!("  ")), "client_name");
        metadata_refused(
            &with(web(), "client_name", json!({"en": "x"})),
            "client_name",
        );
        metadata_refused(&with(web(), "software_id", json!(1)), "software_id");
        metadata_refused(
            &with(web(), "software_version", json!("")),
            "software_version",
        );
    }

    #[test]
    fn unknown_and_null_members_are_ignored() {
        let request = with(
            with(
                with(web(), "scope", json!("openid")),
                "client_id",
                json!("i-choose-my-id"),
            ),
            "frobnicate",
            json!({"a": [1, 2]}),
        );
        let json = Value::Object(ok(&request).to_json());
        for member in ["scope", "client_id", "frobnicate"] {
            assert!(json.get(member).is_none(), "{member} is not registered");
        }
        let mut nulls = web();
        if let Value::Object(map) = &mut nulls {
            for member in ["client_name", "logo_uri", "grant_types", "jwks", "contacts"] {
                map.insert(member.into(), Value::Null);
            }
        }
        assert_eq!(ok(&nulls), ok(&web()));
    }

    // --- property tests -------------------------------------------------------------------

    const MEMBERS: &[&str] = &[
        "client_uri",
        "client_name",
        "client_name#fr",
        "logo_uri",
        "tos_uri",
        "tos_uri#de",
        "policy_uri",
        "application_type",
        "redirect_uris",
        "post_logout_redirect_uris",
        "grant_types",
        "response_types",
        "token_endpoint_auth_method",
        "jwks",
        "jwks_uri",
        "contacts",
        "software_id",
        "software_version",
    ];

    fn interesting_string() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("https://example.com/".to_owned()),
            Just("https://app.example.com/cb".to_owned()),
            Just("com.example.app:/cb".to_owned()),
            Just("http://127.0.0.1/cb".to_owned()),
            Just("native".to_owned()),
            Just("none".to_owned()),
            Just("private_key_jwt".to_owned()),
            Just(AUTHORIZATION_CODE.to_owned()),
            Just(DEVICE_CODE.to_owned()),
            Just("code".to_owned()),
            "[a-z.:/#@\\[\\]0-9-]{0,30}",
            "\\PC{0,20}",
            ".{0,10}",
        ]
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            interesting_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                prop::sample::select(MEMBERS).prop_map(str::to_owned),
                Just("keys".to_owned()),
                Just("kty".to_owned()),
                "\\PC{0,12}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A valid request with one member replaced by arbitrary JSON.
    fn mutated() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec![web(), element_x()]),
            prop::sample::select(MEMBERS),
            arbitrary_json(),
        )
            .prop_map(|(base, member, value)| with(base, member, value))
    }

    /// Accepted metadata is stable: validating what was stored gives the same metadata, and the
    /// read side sees what was registered.
    fn check_accepted(m: &ValidatedMetadata) -> Result<(), TestCaseError> {
        let stored = Value::Object(m.to_json());
        prop_assert_eq!(&validate(&stored), &Ok(m.clone()));
        let read = RegisteredMetadata::from_json(&stored);
        prop_assert_eq!(&read.redirect_uris, &m.redirect_uris);
        prop_assert_eq!(&read.grant_types, &m.grant_types);
        prop_assert_eq!(&read.response_types, &m.response_types);
        prop_assert_eq!(&read.client_name, &m.client_name);
        prop_assert!(m
            .grant_types
            .iter()
            .all(|g| SUPPORTED_GRANT_TYPES.contains(g)));
        Ok(())
    }

    proptest! {
        /// Any JSON at all: an answer, never a panic.
        #[test]
        fn never_panics_on_arbitrary_json(request in arbitrary_json()) {
            if let Ok(m) = validate(&request) {
                check_accepted(&m)?;
            }
        }

        /// A good request with one member broken: refused with a description, or accepted and
        /// stable.
        #[test]
        fn one_broken_member_is_judged(request in mutated()) {
            match validate(&request) {
                Ok(m) => check_accepted(&m)?,
                Err(e) => prop_assert!(!e.description().is_empty()),
            }
        }

        /// Web redirect URIs: any path on the host or a subdomain passes; other hosts don't.
        #[test]
        fn web_redirects_stay_under_the_client_uri_host(
            sub in "([a-z0-9]{1,8}\\.){0,2}",
            path in "(/[a-zA-Z0-9._~-]{0,10}){0,3}",
            port in prop::option::of(1u16..),
            other in "[a-z]{1,10}\\.(org|net|example)",
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let good = format!("https://{sub}example.com{port}{path}");
            let m = validate(&with(web(), "redirect_uris", json!([good.clone()])));
            prop_assert_eq!(m.map(|m| m.redirect_uris), Ok(vec![good.clone()]));
            let bad = format!("https://{sub}{other}{port}{path}");
            let e = validate(&with(web(), "redirect_uris", json!([bad]))).unwrap_err();
            prop_assert_eq!(e.code().as_str(), "invalid_redirect_uri");
            let fragment = format!("{good}#{sub}");
            let result = validate(&with(web(), "redirect_uris", json!([fragment.clone()])));
            prop_assert!(result.is_err(), "{} was accepted", fragment);
        }

        /// Native private-use schemes: the reversed host or a name under it, nothing else.
        #[test]
        fn native_schemes_are_reversed_client_uri_hosts(
            labels in prop::collection::vec("[a-z][a-z0-9]{0,6}", 2..4),
            extra in "(\\.[a-z][a-z0-9]{0,5}){0,2}",
            other in "[a-z][a-z0-9.+-]{0,15}",
            path in prop_oneof!["(/[a-z0-9]{1,5}){0,2}", "[a-z0-9]{1,5}", Just("/".to_owned())],
        ) {
            let host = labels.join(".");
            let reversed: Vec<&str> = labels.iter().rev().map(String::as_str).collect();
            let scheme = format!("{}{extra}", reversed.join("."));
            let request = |uri: String| json!({
                "client_uri": format!("https://{host}/"),
                "application_type": "native",
                "redirect_uris": [uri],
            });
            let good = format!("{scheme}:{path}");
            let result = validate(&request(good.clone()));
            prop_assert!(result.is_ok(), "{} was refused: {:?}", good, result);
            let authority = format!("{scheme}://host{path}");
            prop_assert!(validate(&request(authority.clone())).is_err(), "{} was accepted", authority);
            let same_or_under = other == scheme
                || other.starts_with(&format!("{}.", reversed.join(".")))
                || other == reversed.join(".");
            if !same_or_under {
                let bad = format!("{other}:{path}");
                prop_assert!(validate(&request(bad.clone())).is_err(), "{} was accepted", bad);
            }
        }

        /// Loopback redirects: any port is refused at registration; none is the only form.
        #[test]
        fn loopback_redirects_carry_no_port(
            port in any::<u16>(),
            host in prop::sample::select(vec!["localhost", "127.0.0.1", "[::1]"]),
            path in "(/[a-z0-9]{0,8}){0,2}",
        ) {
            let native = |uri: String| with(
                with(web(), "application_type", json!("native")),
                "redirect_uris",
                json!([uri]),
            );
            let portless = format!("http://{host}{path}");
            let result = validate(&native(portless.clone()));
            prop_assert!(result.is_ok(), "{} was refused: {:?}", portless, result);
            let e = validate(&native(format!("http://{host}:{port}{path}"))).unwrap_err();
            prop_assert_eq!(e.code().as_str(), "invalid_redirect_uri");
            prop_assert!(e.description().contains("no port"), "{}", e);
            // web clients never get loopback
            let web_loopback = validate(&with(web(), "redirect_uris", json!([portless])));
            prop_assert!(web_loopback.is_err(), "a web client got a loopback redirect");
        }

        /// Unknown grant and response types are dropped, known ones kept once, in order.
        #[test]
        fn unknown_types_are_ignored(
            grants in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(SUPPORTED_GRANT_TYPES).prop_map(|g| g.as_str().to_owned()),
                    "[a-z:_-]{1,20}",
                ],
                0..8,
            ),
        ) {
            let request = with(web(), "grant_types", json!(grants.clone()));
            let mut expected: Vec<GrantType> = Vec::new();
            for g in &grants {
                if let Some(k) = SUPPORTED_GRANT_TYPES.iter().find(|k| k.as_str() == g.as_str()) {
                    if !expected.contains(k) {
                        expected.push(*k);
                    }
                }
            }
            let result = validate(&with(
                request,
                "response_types",
                if expected.contains(&GrantType::AuthorizationCode) { json!(["code", "weird"]) } else { json!(["weird"]) },
            ));
            if expected.contains(&GrantType::AuthorizationCode) || expected.contains(&GrantType::DeviceCode) {
                prop_assert_eq!(result.map(|m| m.grant_types), Ok(expected));
            } else {
                prop_assert_eq!(result.unwrap_err().code().as_str(), "invalid_client_metadata");
            }
        }
    }
}
