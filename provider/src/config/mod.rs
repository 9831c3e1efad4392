//! The configuration file (YAML), environment overrides, validation and generation.
//!
//! [`load`] reads the file, applies `PROVIDER__…` environment overrides, and checks everything,
//! returning either the typed [`Settings`] the server runs on or *every* [`Problem`] found, each
//! with its path in the file (`http.issuer`, `clients[0].redirect_uris[1]`, ...).
//!
//! Environment overrides: a variable `PROVIDER__<SECTION>__<KEY>` sets `<section>.<key>` (path
//! segments upper-cased and joined by `__`; list items by index, `PROVIDER__CLIENTS__0__CLIENT_SECRET`).
//! The value is read as YAML (so `10` is a number), except that it stays a string where the file
//! has a string. Unknown paths are reported like unknown keys in the file.

use std::{
    collections::BTreeSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use rand::{distributions::Alphanumeric, CryptoRng, Rng, RngCore};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use url::Url;

pub use self::proxies::{IpNet, TrustedProxies};
use crate::{
    domain::rate_limit::{Limit, Quota, RateLimits},
    keys::{Keystore, PrivateKey, SigningKey},
    storage::{DatabaseKind, PoolSettings},
};

pub mod captcha;
pub mod email;
pub mod proxies;
pub mod upstream;

/// The prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "PROVIDER__";

/// The configuration file, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub http: HttpConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    pub secrets: SecretsConfig,
    pub matrix: MatrixConfig,
    #[serde(default)]
    pub clients: Vec<StaticClientConfig>,
    #[serde(default)]
    pub account: AccountConfig,
    #[serde(default)]
    pub captcha: CaptchaConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub rate_limiting: RateLimitingConfig,
    /// Upstream OpenID Connect providers to sign in with (see [`crate::config::upstream`]).
    #[serde(default)]
    pub upstream_oauth2: crate::config::upstream::UpstreamOAuth2Config,
    #[serde(default)]
    pub tokens: TokensConfig,
}

/// `tokens`: how issued tokens behave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensConfig {
    /// How long after a refresh the refresh token it consumed may be presented again, when the
    /// response was lost, as long as neither new token was used (client-server API
    /// "Refreshing access tokens"); `0`: never. At most [`MAX_REFRESH_GRACE_SECONDS`].
    #[serde(default = "default_refresh_grace_seconds")]
    pub refresh_grace_seconds: u32,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            refresh_grace_seconds: default_refresh_grace_seconds(),
        }
    }
}

fn default_refresh_grace_seconds() -> u32 {
    60
}

/// The longest `tokens.refresh_grace_seconds`: a retry is for a response lost in transit.
pub const MAX_REFRESH_GRACE_SECONDS: u32 = 3600;

/// The admin API (`/api/admin/v1`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminConfig {
    /// The `client_id`s of confidential clients that may obtain the `urn:mas:admin` scope with
    /// the client credentials grant (RFC 6749 §4.4): automation acting on the admin API without
    /// a user. Users get the scope through the authorization code flow when they may administer
    /// (`can_request_admin`). Empty by default: no client may.
    #[serde(default)]
    pub clients: Vec<String>,
}

/// What people may do with their accounts themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountConfig {
    /// May people create accounts on the sign-in pages (and with `prompt=create`)?
    #[serde(default)]
    pub registration: bool,
    /// May users change their display name on the account page?
    #[serde(default = "yes")]
    pub display_name_change_allowed: bool,
    /// May users add and remove email addresses on the account page?
    #[serde(default = "yes")]
    pub email_change_allowed: bool,
    /// May users change their password on the account page (with their current one)?
    #[serde(default = "yes")]
    pub password_change_allowed: bool,
    /// "Forgot password?": a link mailed to a confirmed address sets a new password. Needs an
    /// `email.transport` other than `none`.
    #[serde(default)]
    pub password_recovery_enabled: bool,
    /// May users deactivate their own account on the account page (MSC4191
    /// `org.matrix.account_deactivate`)?
    #[serde(default = "yes")]
    pub account_deactivation_allowed: bool,
    /// Registration asks for an email address and creates the account only once the code
    /// mailed to it is entered. Needs an `email.transport` other than `none`.
    #[serde(default)]
    pub password_registration_email_required: bool,
    /// Registration needs a registration token issued by an administrator (admin API, CLI).
    #[serde(default)]
    pub registration_token_required: bool,
    /// Terms of service people must accept to register (a required checkbox linking them);
    /// each acceptance is recorded with the URL and the time.
    #[serde(default)]
    pub terms_of_service_url: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for AccountConfig {
    /// Every switch at its default, as when the section is absent.
    fn default() -> Self {
        Self {
            registration: false,
            display_name_change_allowed: true,
            email_change_allowed: true,
            password_change_allowed: true,
            password_recovery_enabled: false,
            account_deactivation_allowed: true,
            password_registration_email_required: false,
            registration_token_required: false,
            terms_of_service_url: None,
        }
    }
}

/// Bot protection on the registration page (see [`crate::core::captcha`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CaptchaConfig {
    /// `none` (the default), `hcaptcha`, `recaptcha_v2` or `turnstile`.
    #[serde(default)]
    pub service: captcha::CaptchaService,
    /// The public key the widget is rendered with.
    #[serde(default)]
    pub site_key: Option<String>,
    /// The private key responses are verified with.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Where responses are verified; defaults to the service's official siteverify URL.
    #[serde(default)]
    pub verify_url: Option<String>,
}

/// How the provider sends mail (verification codes, password recovery links).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmailConfig {
    /// `none` (mail is dropped and logged: the default), `smtp`, or `capture` (kept in memory
    /// for the playground and tests).
    #[serde(default)]
    pub transport: EmailTransportKind,
    /// The sender, `Name <address>` or a bare address; defaults to `noreply@<homeserver>`.
    #[serde(default)]
    pub from: Option<String>,
    /// `smtp`: the relay's host name (or address).
    #[serde(default)]
    pub hostname: Option<String>,
    /// `smtp`: the relay's port; defaults to 587 for `starttls`, 465 for `tls`, 25 for `plain`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `smtp`: how the connection is secured.
    #[serde(default)]
    pub mode: SmtpMode,
    /// `smtp`: credentials, both or neither (sent only over TLS, or on loopback).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// `smtp`: a PEM file of certificate authorities to trust besides the public ones (a relay
    /// with a private CA), relative to the config file.
    #[serde(default)]
    pub ca_certificate_file: Option<PathBuf>,
}

/// Where mail goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailTransportKind {
    /// Dropped (and logged without its secrets): nothing is sent.
    #[default]
    None,
    /// Sent through an SMTP relay.
    Smtp,
    /// Kept in memory (`Mailer::mailbox`): the playground's mailbox page, tests.
    Capture,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpMode {
    /// Plain connection upgraded with STARTTLS, which is required (RFC 3207): port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (RFC 8314 §3.3, "implicit TLS"): port 465.
    Tls,
    /// No TLS at all: only to a relay on this machine (loopback).
    Plain,
}

impl SmtpMode {
    /// The port of this mode when none is configured.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::Plain => 25,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpConfig {
    /// The issuer identifier: an https URL (http only on loopback) ending with `/`.
    pub issuer: String,
    /// Where the endpoints and pages are reached from outside; defaults to the issuer.
    #[serde(default)]
    pub public_base: Option<String>,
    /// The socket address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Reverse proxies (addresses or networks like `10.0.0.0/8`) whose `X-Forwarded-For` names
    /// the client for per-IP rate limits; from anyone else the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://path` (created when missing).
    #[serde(default = "default_database_url")]
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_database_url() -> String {
    "sqlite://provider.db".into()
}

fn default_max_connections() -> u32 {
    10
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_database_url(),
            max_connections: default_max_connections(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretsConfig {
    /// 32 bytes as 64 hex characters: encrypts client and upstream secrets at rest.
    pub encryption: String,
    pub keys: Vec<KeyConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyConfig {
    /// Key ID; defaults to the RFC 7638 thumbprint.
    #[serde(default)]
    pub kid: Option<String>,
    /// The PEM key inline...
    #[serde(default)]
    pub key: Option<String>,
    /// ...or a path to it (relative to the config file).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixConfig {
    /// Which API the provider speaks to the homeserver with.
    #[serde(default)]
    pub kind: HomeserverKind,
    /// The homeserver's server name (the part after `:` in user IDs).
    pub homeserver: String,
    /// Where the provider reaches the homeserver.
    pub endpoint: String,
    /// The secret shared with the homeserver (`matrix_authentication_service.secret` in Synapse).
    pub secret: String,
}

/// The API the provider provisions users and devices with (the homeserver contract of
/// SPEC-NOTES.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HomeserverKind {
    /// Synapse ≥ 1.136 in `matrix_authentication_service` mode: the `/_synapse/mas/*` API.
    #[default]
    Synapse,
    /// Older Synapse: the `/_synapse/admin` API, with the shared secret as the admin token.
    SynapseLegacy,
}

/// The client authentication methods (RFC 7591 §2, OIDC Core §9).
pub const CLIENT_AUTH_METHODS: &[&str] = &[
    "none",
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
];

/// The grant types a static client may be given.
pub const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaticClientConfig {
    pub client_id: String,
    /// `none`, `client_secret_basic`, `client_secret_post`, `client_secret_jwt` or `private_key_jwt`.
    pub client_auth_method: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser afterwards.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// The ID token algorithm, `RS256` (default) or `ES256`.
    #[serde(default)]
    pub id_token_signed_response_alg: Option<String>,
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    /// For `private_key_jwt`: the client's public keys, inline...
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// ...or where to fetch them.
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

fn default_grant_types() -> Vec<String> {
    vec!["authorization_code".into(), "refresh_token".into()]
}

/// `rate_limiting`: the limits of [`crate::core::rate_limit`], each `{burst, per_second}` with
/// `enabled: false` to turn it off; a missing value takes the limit's default
/// ([`Limit::default_rate`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitingConfig {
    /// Off: no limit at all (for a test bed behind its own limits).
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub login: LoginRateLimits,
    #[serde(default)]
    pub registration: RegistrationRateLimits,
    #[serde(default)]
    pub email: EmailRateLimits,
    #[serde(default)]
    pub recovery: RecoveryRateLimits,
    #[serde(default)]
    pub token: TokenRateLimits,
}

impl Default for RateLimitingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login: LoginRateLimits::default(),
            registration: RegistrationRateLimits::default(),
            email: EmailRateLimits::default(),
            recovery: RecoveryRateLimits::default(),
            token: TokenRateLimits::default(),
        }
    }
}

/// `rate_limiting.login`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoginRateLimits {
    /// Sign-in attempts per client IP.
    #[serde(default)]
    pub per_ip: LimitConfig,
    /// Failed sign-in attempts per account.
    #[serde(default)]
    pub per_account: LimitConfig,
}

/// `rate_limiting.registration`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegistrationRateLimits {
    #[serde(default)]
    pub per_ip: LimitConfig,
}

/// `rate_limiting.email`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmailRateLimits {
    #[serde(default)]
    pub per_address: LimitConfig,
    #[serde(default)]
    pub per_user: LimitConfig,
}

/// `rate_limiting.recovery`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoveryRateLimits {
    #[serde(default)]
    pub per_ip: LimitConfig,
    #[serde(default)]
    pub per_address: LimitConfig,
}

/// `rate_limiting.token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenRateLimits {
    /// Per authenticated client; public clients (shared by all their users) per IP.
    #[serde(default)]
    pub per_client: LimitConfig,
}

/// One limit: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LimitConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl RateLimitingConfig {
    fn limit(&self, limit: Limit) -> &LimitConfig {
        match limit {
            Limit::LoginPerIp => &self.login.per_ip,
            Limit::LoginPerAccount => &self.login.per_account,
            Limit::Registration => &self.registration.per_ip,
            Limit::EmailSend => &self.email.per_address,
            Limit::EmailSendPerUser => &self.email.per_user,
            Limit::Recovery => &self.recovery.per_address,
            Limit::RecoveryPerIp => &self.recovery.per_ip,
            Limit::Token => &self.token.per_client,
        }
    }

    /// Every limit's quota (its defaults where unset), or the problems with their paths.
    fn resolve(&self, p: &mut Vec<Problem>) -> RateLimits {
        let mut limits = RateLimits::off();
        for limit in Limit::ALL {
            let conf = self.limit(limit);
            let (default_burst, default_per_second) = limit.default_rate();
            let (section, name) = limit.config_path();
            let path = format!("rate_limiting.{section}.{name}");
            let burst = conf.burst.unwrap_or(default_burst);
            let per_second = conf.per_second.unwrap_or(default_per_second);
            match Quota::new(burst, per_second) {
                Ok(quota) if self.enabled && conf.enabled.unwrap_or(true) => {
                    limits.set(limit, Some(quota));
                }
                Ok(_) => {}
                Err(why) => {
                    // Quota::new checks the burst first.
                    let key = if Quota::new(burst, 1.0).is_err() {
                        "burst"
                    } else {
                        "per_second"
                    };
                    p.push(Problem::new(format!("{path}.{key}"), why));
                }
            }
        }
        limits
    }
}

/// The commented `rate_limiting` section of a generated file: every limit at its default.
fn rate_limiting_yaml() -> String {
    let mut out = String::new();
    let mut section = "";
    for limit in Limit::ALL {
        let (s, name) = limit.config_path();
        if s != section {
            out.push_str(&format!("  # {s}:\n"));
            section = s;
        }
        // `{}` of an f64 is the shortest text that reads back as the same number.
        let (burst, per_second) = limit.default_rate();
        out.push_str(&format!(
            "  #   {name}: {{burst: {burst}, per_second: {per_second}}}\n"
        ));
    }
    out
}

impl HttpConfig {
    /// `http.trusted_proxies`, each an address or a network.
    fn resolve_trusted_proxies(&self, p: &mut Vec<Problem>) -> TrustedProxies {
        let mut networks = Vec::new();
        for (i, entry) in self.trusted_proxies.iter().enumerate() {
            match entry.parse::<IpNet>() {
                Ok(net) => networks.push(net),
                Err(why) => p.push(Problem::new(format!("http.trusted_proxies[{i}]"), why)),
            }
        }
        TrustedProxies::new(networks)
    }
}

/// One thing wrong with the configuration, at a path in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path (`http.issuer`, `clients[0].client_id`); empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The validated settings the provider runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: Url,
    pub public_base: Url,
    pub listen: SocketAddr,
    /// Whose `X-Forwarded-For` is believed (`http.trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// The quota of each rate limit (`rate_limiting`).
    pub rate_limits: RateLimits,
    pub database_url: String,
    pub pool: PoolSettings,
    pub encryption_key: [u8; 32],
    pub keystore: Keystore,
    pub matrix: MatrixSettings,
    pub clients: Vec<StaticClient>,
    /// Self-service registration is open.
    pub registration: bool,
    /// The clients that may get `urn:mas:admin` by client credentials (`admin.clients`).
    pub admin_clients: Vec<String>,
    /// What users may change themselves (the `account` section).
    pub account: AccountConfig,
    /// How mail is sent.
    pub email: EmailSettings,
    /// The captcha registration asks for (`captcha`), if any.
    pub captcha: Option<captcha::CaptchaSettings>,
    /// The terms of service registration asks to accept (`account.terms_of_service_url`).
    pub terms_of_service_url: Option<Url>,
    /// The upstream OpenID Connect providers (`upstream_oauth2.providers`), written to the
    /// database at start.
    pub upstream_providers: Vec<crate::config::upstream::UpstreamProviderSettings>,
    /// `tokens.refresh_grace_seconds`.
    pub refresh_grace_seconds: u32,
}

/// The validated `email` section.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub transport: EmailTransport,
    /// The sender (`From`), checked to be a valid mailbox.
    pub from: String,
}

/// Where mail goes, with what each transport needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailTransport {
    None,
    Capture,
    Smtp(SmtpSettings),
}

/// A validated SMTP relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub hostname: String,
    pub port: u16,
    pub mode: SmtpMode,
    /// `(username, password)`.
    pub credentials: Option<(String, String)>,
    /// Extra trusted certificate authorities (PEM), read from `ca_certificate_file`.
    pub ca_certificates: Option<String>,
}

impl EmailSettings {
    /// Is mail actually delivered somewhere (a transport other than `none`)?
    pub fn delivers(&self) -> bool {
        self.transport != EmailTransport::None
    }
}

#[derive(Debug, Clone)]
pub struct MatrixSettings {
    pub kind: HomeserverKind,
    pub homeserver: String,
    pub endpoint: Url,
    pub secret: String,
}

/// A validated static client.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticClient {
    pub client_id: String,
    pub auth_method: String,
    pub secret: Option<String>,
    /// The registered metadata (RFC 7591 §2) stored for the client.
    pub metadata: serde_json::Value,
}

/// Reads, overrides and validates a configuration file. `env` is the process environment (or a
/// test's stand-in).
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Settings), Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem::new(
            "",
            format!("can't read {}: {e}", path.display()),
        )]
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, env, base_dir)
}

/// [`load`] on text already read; `base_dir` resolves relative `key_file` paths.
pub fn parse(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    base_dir: &Path,
) -> Result<(Config, Settings), Vec<Problem>> {
    let mut value: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| vec![Problem::new("", format!("not valid YAML: {e}"))])?;
    if value.is_null() {
        return Err(vec![Problem::new("", "the file is empty")]);
    }
    if !value.is_mapping() {
        return Err(vec![Problem::new(
            "",
            "the file must be a YAML mapping of sections (http, database, secrets, matrix, clients); \
             `provider config generate` writes a complete one",
        )]);
    }
    let (mut problems, from_env) = apply_env(&mut value, env);

    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let parsed: Result<Config, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut on_unknown));
    problems.extend(unknown.into_iter().map(|path| {
        let path = display_path(path.split('.'));
        match from_env.iter().find(|(p, _)| *p == path) {
            Some((_, var)) => Problem::new(
                path,
                format!("unknown key (set by environment variable {var})"),
            ),
            None => Problem::new(path, "unknown key"),
        }
    }));
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            problems.push(Problem::new(path, e.into_inner().to_string()));
            return Err(problems);
        }
    };
    match config.resolve(base_dir) {
        Ok(settings) if problems.is_empty() => Ok((config, settings)),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Applies `PROVIDER__A__B=value` overrides to the parsed file. Returns the problems and, for
/// each override applied, its path and variable name (so problems can say where they came from).
fn apply_env(
    root: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> (Vec<Problem>, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let segments: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            problems.push(Problem::new(
                "",
                format!("environment variable {name}: empty path segment"),
            ));
            continue;
        }
        let path = display_path(segments.iter().map(String::as_str));
        if set_path(root, &segments, raw) {
            applied.push((path, name));
        } else {
            problems.push(Problem::new(
                path,
                format!("environment variable {name} doesn't name a setting"),
            ));
        }
    }
    (problems, applied)
}

/// `clients`, `0`, `client_id` → `clients[0].client_id`: the path style of every problem.
fn display_path<'a>(segments: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for segment in segments {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// Sets the value at a path, creating mappings on the way; `false` when the path can't exist
/// (an index past a list's end, or a key under a scalar).
fn set_path(node: &mut Value, segments: &[String], raw: String) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        *node = if matches!(node, Value::String(_)) {
            Value::String(raw)
        } else {
            serde_yaml_ng::from_str(&raw).unwrap_or(Value::String(raw))
        };
        return true;
    };
    if node.is_null() {
        *node = Value::Mapping(Default::default());
    }
    match node {
        Value::Sequence(items) => {
            match first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(item) => set_path(item, rest, raw),
                None => false,
            }
        }
        Value::Mapping(map) => set_path(
            map.entry(Value::String(first.clone()))
                .or_insert(Value::Null),
            rest,
            raw,
        ),
        _ => false,
    }
}

fn check_url(problems: &mut Vec<Problem>, path: &str, raw: &str) -> Option<Url> {
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) => {
            problems.push(Problem::new(path, format!("`{raw}` is not an http(s) URL")));
            None
        }
        Err(e) => {
            problems.push(Problem::new(
                path,
                format!("`{raw}` is not a valid URL: {e}"),
            ));
            None
        }
    }
}

/// Is this host name or address this machine (`localhost`, 127.0.0.0/8, `::1`)? A port is
/// ignored (`localhost:8448`, `[::1]:8008`): the Matrix server name may carry one.
pub(crate) fn is_loopback_host(name: &str) -> bool {
    let name = name.trim();
    let host = if let Some(bracketed) = name.strip_prefix('[') {
        // `[::1]` or `[::1]:8448`
        bracketed.split(']').next().unwrap_or_default()
    } else {
        match name.rsplit_once(':') {
            // `host:port`, but not a bare IPv6 address.
            Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
            _ => name,
        }
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Config {
    /// Checks every setting and builds the runtime [`Settings`], or lists every problem.
    pub fn resolve(&self, base_dir: &Path) -> Result<Settings, Vec<Problem>> {
        let mut problems = Vec::new();
        let p = &mut problems;

        // OIDC Discovery §3 / RFC 8414 §2: the issuer is an https URL with no query or
        // fragment, compared exactly by clients; plain http is accepted for loopback only.
        let issuer = check_url(p, "http.issuer", &self.http.issuer);
        if let Some(url) = &issuer {
            if !self.http.issuer.ends_with('/') {
                p.push(Problem::new("http.issuer", "must end with `/`"));
            }
            if url.query().is_some() || url.fragment().is_some() {
                p.push(Problem::new(
                    "http.issuer",
                    "must not have a query or fragment",
                ));
            }
            if url.scheme() != "https" && !is_loopback(url) {
                p.push(Problem::new(
                    "http.issuer",
                    "must use https (plain http is only allowed on localhost/loopback)",
                ));
            }
        }
        let public_base = match &self.http.public_base {
            Some(raw) => {
                let url = check_url(p, "http.public_base", raw);
                if url.is_some() && !raw.ends_with('/') {
                    p.push(Problem::new("http.public_base", "must end with `/`"));
                }
                url
            }
            None => issuer.clone(),
        };
        let listen = self
            .http
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                p.push(Problem::new(
                    "http.listen",
                    format!(
                        "`{}` is not a socket address like 127.0.0.1:8080",
                        self.http.listen
                    ),
                ))
            })
            .ok();
        let trusted_proxies = self.http.resolve_trusted_proxies(p);
        let rate_limits = self.rate_limiting.resolve(p);

        if let Err(e) = DatabaseKind::of_url(&self.database.url) {
            p.push(Problem::new("database.url", e.to_string()));
        }
        if self.database.max_connections == 0 {
            p.push(Problem::new(
                "database.max_connections",
                "must be at least 1",
            ));
        }

        let encryption_key = match hex::decode(&self.secrets.encryption) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                Some(key)
            }
            _ => {
                p.push(Problem::new(
                    "secrets.encryption",
                    "must be 32 bytes written as 64 hex characters",
                ));
                None
            }
        };

        let keystore = self.resolve_keys(p, base_dir);

        if self.matrix.homeserver.trim().is_empty() || self.matrix.homeserver.contains('/') {
            p.push(Problem::new(
                "matrix.homeserver",
                "must be the homeserver's server name, like `example.com`",
            ));
        }
        let endpoint = check_url(p, "matrix.endpoint", &self.matrix.endpoint);
        if self.matrix.secret.len() < 16 {
            p.push(Problem::new(
                "matrix.secret",
                "must be at least 16 characters (use `provider config generate` for a fresh one)",
            ));
        }

        let clients = self.resolve_clients(p);
        let admin_clients = self.resolve_admin(p);
        let email = self.resolve_email(p, base_dir);
        let (captcha, terms_of_service_url) = self.resolve_registration_controls(p);
        let upstream_providers = self.upstream_oauth2.resolve(p);
        if self.tokens.refresh_grace_seconds > MAX_REFRESH_GRACE_SECONDS {
            p.push(Problem::new(
                "tokens.refresh_grace_seconds",
                format!("must be at most {MAX_REFRESH_GRACE_SECONDS}"),
            ));
        }

        match (
            issuer,
            public_base,
            listen,
            encryption_key,
            keystore,
            endpoint,
        ) {
            (
                Some(issuer),
                Some(public_base),
                Some(listen),
                Some(encryption_key),
                Some(keystore),
                Some(endpoint),
            ) if problems.is_empty() => Ok(Settings {
                issuer,
                public_base,
                listen,
                trusted_proxies,
                rate_limits,
                database_url: self.database.url.clone(),
                pool: PoolSettings {
                    max_connections: self.database.max_connections,
                    ..PoolSettings::default()
                },
                encryption_key,
                keystore,
                matrix: MatrixSettings {
                    kind: self.matrix.kind,
                    homeserver: self.matrix.homeserver.clone(),
                    endpoint,
                    secret: self.matrix.secret.clone(),
                },
                clients,
                registration: self.account.registration,
                admin_clients,
                account: self.account.clone(),
                email: email.unwrap_or(EmailSettings {
                    transport: EmailTransport::None,
                    from: String::new(),
                }),
                captcha,
                terms_of_service_url,
                upstream_providers,
                refresh_grace_seconds: self.tokens.refresh_grace_seconds,
            }),
            _ => Err(problems),
        }
    }

    /// The `captcha` section and `account.terms_of_service_url`.
    fn resolve_registration_controls(
        &self,
        p: &mut Vec<Problem>,
    ) -> (Option<captcha::CaptchaSettings>, Option<Url>) {
        let terms = self
            .account
            .terms_of_service_url
            .as_deref()
            .and_then(|raw| check_url(p, "account.terms_of_service_url", raw));
        let c = &self.captcha;
        let service = c.service;
        let Some(default_verify_url) = service.default_verify_url() else {
            for (key, set) in [
                ("site_key", c.site_key.is_some()),
                ("secret_key", c.secret_key.is_some()),
                ("verify_url", c.verify_url.is_some()),
            ] {
                if set {
                    p.push(Problem::new(
                        format!("captcha.{key}"),
                        "only used with a captcha `service`: remove it, or choose hcaptcha, recaptcha_v2 or turnstile",
                    ));
                }
            }
            return (None, terms);
        };
        let mut required = |key: &str, value: &Option<String>| match value.as_deref().map(str::trim)
        {
            Some(v) if !v.is_empty() => Some(v.to_owned()),
            _ => {
                p.push(Problem::new(
                    format!("captcha.{key}"),
                    format!("required by `service: {}`", service.name()),
                ));
                None
            }
        };
        let site_key = required("site_key", &c.site_key);
        let secret_key = required("secret_key", &c.secret_key);
        let verify_url = check_url(
            p,
            "captcha.verify_url",
            c.verify_url.as_deref().unwrap_or(default_verify_url),
        );
        let captcha = match (site_key, secret_key, verify_url) {
            (Some(site_key), Some(secret_key), Some(verify_url)) => {
                Some(captcha::CaptchaSettings {
                    service,
                    site_key,
                    secret_key,
                    verify_url,
                })
            }
            _ => None,
        };
        (captcha, terms)
    }

    /// The `email` section, and the `account` switches that need mail.
    fn resolve_email(&self, p: &mut Vec<Problem>, base_dir: &Path) -> Option<EmailSettings> {
        let e = &self.email;
        let before = p.len();
        let from = e
            .from
            .clone()
            .unwrap_or_else(|| format!("noreply@{}", self.matrix.homeserver.trim()));
        if let Err(why) = email::check_mailbox(&from) {
            p.push(Problem::new(
                "email.from",
                format!("`{from}` is not a mail address like `Name <noreply@example.com>`: {why}"),
            ));
        }
        let smtp_only = [
            ("hostname", e.hostname.is_some()),
            ("port", e.port.is_some()),
            ("username", e.username.is_some()),
            ("password", e.password.is_some()),
            ("ca_certificate_file", e.ca_certificate_file.is_some()),
        ];
        let transport = match e.transport {
            EmailTransportKind::None | EmailTransportKind::Capture => {
                for (key, set) in smtp_only {
                    if set {
                        p.push(Problem::new(
                            format!("email.{key}"),
                            "only used by `transport: smtp`: remove it",
                        ));
                    }
                }
                if e.transport == EmailTransportKind::None {
                    EmailTransport::None
                } else {
                    EmailTransport::Capture
                }
            }
            EmailTransportKind::Smtp => {
                let hostname = e.hostname.clone().unwrap_or_default();
                if hostname.trim().is_empty() {
                    p.push(Problem::new(
                        "email.hostname",
                        "required by `transport: smtp`",
                    ));
                } else if e.mode == SmtpMode::Plain && !is_loopback_host(&hostname) {
                    // Without TLS the mail (recovery links) and the password cross the network
                    // in the clear: only a relay on this machine may be reached that way.
                    p.push(Problem::new(
                        "email.mode",
                        format!(
                            "`plain` (no TLS) is only allowed to a relay on loopback, not `{hostname}`: use `starttls` or `tls`"
                        ),
                    ));
                }
                if e.port == Some(0) {
                    p.push(Problem::new("email.port", "must be 1 to 65535"));
                }
                let credentials = match (&e.username, &e.password) {
                    (Some(user), Some(password)) => Some((user.clone(), password.clone())),
                    (None, None) => None,
                    (Some(_), None) => {
                        p.push(Problem::new("email.password", "required with `username`"));
                        None
                    }
                    (None, Some(_)) => {
                        p.push(Problem::new("email.username", "required with `password`"));
                        None
                    }
                };
                let ca_certificates = match &e.ca_certificate_file {
                    None => None,
                    Some(file) => {
                        let file = base_dir.join(file);
                        match std::fs::read_to_string(&file) {
                            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {
                                match email::check_ca_certificates(&pem) {
                                    Ok(()) => Some(pem),
                                    Err(why) => {
                                        p.push(Problem::new(
                                            "email.ca_certificate_file",
                                            format!("{}: {why}", file.display()),
                                        ));
                                        None
                                    }
                                }
                            }
                            Ok(_) => {
                                p.push(Problem::new(
                                    "email.ca_certificate_file",
                                    format!("{} holds no PEM certificate", file.display()),
                                ));
                                None
                            }
                            Err(err) => {
                                p.push(Problem::new(
                                    "email.ca_certificate_file",
                                    format!("can't read {}: {err}", file.display()),
                                ));
                                None
                            }
                        }
                    }
                };
                EmailTransport::Smtp(SmtpSettings {
                    hostname: hostname.trim().to_owned(),
                    port: e.port.unwrap_or_else(|| e.mode.default_port()),
                    mode: e.mode,
                    credentials,
                    ca_certificates,
                })
            }
        };
        // Both need mail that arrives: with `none`, nobody could finish them.
        if e.transport == EmailTransportKind::None {
            for (key, on) in [
                (
                    "password_recovery_enabled",
                    self.account.password_recovery_enabled,
                ),
                (
                    "password_registration_email_required",
                    self.account.password_registration_email_required,
                ),
            ] {
                if on {
                    p.push(Problem::new(
                        format!("account.{key}"),
                        "needs mail: set `email.transport` to `smtp` (or `capture`)",
                    ));
                }
            }
        }
        (p.len() == before).then_some(EmailSettings { transport, from })
    }

    fn resolve_keys(&self, p: &mut Vec<Problem>, base_dir: &Path) -> Option<Keystore> {
        if self.secrets.keys.is_empty() {
            p.push(Problem::new(
                "secrets.keys",
                "at least one RSA signing key is required",
            ));
            return None;
        }
        let mut keys = Vec::new();
        for (i, entry) in self.secrets.keys.iter().enumerate() {
            let path = format!("secrets.keys[{i}]");
            let pem = match (&entry.key, &entry.key_file) {
                (Some(pem), None) => pem.clone(),
                (None, Some(file)) => {
                    let file = base_dir.join(file);
                    match std::fs::read_to_string(&file) {
                        Ok(pem) => pem,
                        Err(e) => {
                            p.push(Problem::new(
                                format!("{path}.key_file"),
                                format!("can't read {}: {e}", file.display()),
                            ));
                            continue;
                        }
                    }
                }
                _ => {
                    p.push(Problem::new(
                        path,
                        "needs exactly one of `key` or `key_file`",
                    ));
                    continue;
                }
            };
            match PrivateKey::from_pem(&pem) {
                Ok(key) => keys.push(SigningKey::new(key, entry.kid.clone())),
                Err(e) => p.push(Problem::new(path, e.to_string())),
            }
        }
        if keys.len() != self.secrets.keys.len() {
            return None;
        }
        Keystore::new(keys)
            .map_err(|e| p.push(Problem::new("secrets.keys", e.to_string())))
            .ok()
    }

    /// The `admin` section: the admin clients, each named once; a static client named there
    /// must be able to use the client credentials grant (confidential, with the grant).
    fn resolve_admin(&self, p: &mut Vec<Problem>) -> Vec<String> {
        let mut seen = BTreeSet::new();
        for (i, id) in self.admin.clients.iter().enumerate() {
            let path = format!("admin.clients[{i}]");
            if id.trim().is_empty() {
                p.push(Problem::new(path, "must be a client_id, not empty"));
                continue;
            }
            if !seen.insert(id.as_str()) {
                p.push(Problem::new(path, format!("`{id}` is listed twice")));
                continue;
            }
            if let Some(c) = self.clients.iter().find(|c| c.client_id == *id) {
                // RFC 6749 §4.4: the client credentials grant is for confidential clients only.
                if c.client_auth_method == "none" {
                    p.push(Problem::new(
                        path,
                        format!(
                            "`{id}` is a public client (`none`): it can't use client credentials"
                        ),
                    ));
                } else if !c.grant_types.iter().any(|g| g == "client_credentials") {
                    p.push(Problem::new(
                        path,
                        format!(
                            "`{id}` doesn't have the client_credentials grant in its grant_types"
                        ),
                    ));
                }
            }
        }
        self.admin.clients.clone()
    }

    fn resolve_clients(&self, p: &mut Vec<Problem>) -> Vec<StaticClient> {
        let mut seen = BTreeSet::new();
        let mut clients = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            let path = format!("clients[{i}]");
            let before = p.len();
            if c.client_id.trim().is_empty() || c.client_id.len() > 255 {
                p.push(Problem::new(
                    format!("{path}.client_id"),
                    "must be 1 to 255 characters",
                ));
            } else if !seen.insert(c.client_id.as_str()) {
                p.push(Problem::new(
                    format!("{path}.client_id"),
                    format!("`{}` is used by another client", c.client_id),
                ));
            }
            let method = c.client_auth_method.as_str();
            if !CLIENT_AUTH_METHODS.contains(&method) {
                p.push(Problem::new(
                    format!("{path}.client_auth_method"),
                    format!(
                        "`{method}` is not one of {}",
                        CLIENT_AUTH_METHODS.join(", ")
                    ),
                ));
            }
            let needs_secret = method.starts_with("client_secret_");
            match (&c.client_secret, needs_secret) {
                (None, true) => p.push(Problem::new(
                    format!("{path}.client_secret"),
                    format!("required by `{method}`"),
                )),
                (Some(_), false) => p.push(Problem::new(
                    format!("{path}.client_secret"),
                    format!("not used by `{method}`: remove it"),
                )),
                (Some(s), true) if s.len() < 16 => p.push(Problem::new(
                    format!("{path}.client_secret"),
                    "must be at least 16 characters",
                )),
                _ => {}
            }
            if method == "private_key_jwt" && c.jwks.is_none() == c.jwks_uri.is_none() {
                p.push(Problem::new(
                    path.clone(),
                    "`private_key_jwt` needs exactly one of `jwks` or `jwks_uri`",
                ));
            }
            if let Some(uri) = &c.jwks_uri {
                check_url(p, &format!("{path}.jwks_uri"), uri);
            }
            for (j, uri) in c.redirect_uris.iter().enumerate() {
                let at = format!("{path}.redirect_uris[{j}]");
                // RFC 6749 §3.1.2: an absolute URI without a fragment. Native clients may use
                // private-use schemes (RFC 8252 §7.1), so any scheme is accepted here.
                match Url::parse(uri) {
                    Ok(url) if url.fragment().is_some() => p.push(Problem::new(
                        at,
                        "must not contain a fragment (RFC 6749 §3.1.2)",
                    )),
                    Ok(_) => {}
                    Err(e) => p.push(Problem::new(at, format!("`{uri}` is not a valid URI: {e}"))),
                }
            }
            for (j, uri) in c.post_logout_redirect_uris.iter().enumerate() {
                let at = format!("{path}.post_logout_redirect_uris[{j}]");
                // RP-Initiated Logout §3: absolute URIs, compared like redirect URIs.
                match Url::parse(uri) {
                    Ok(url) if url.fragment().is_some() => {
                        p.push(Problem::new(at, "must not contain a fragment"))
                    }
                    Ok(_) => {}
                    Err(e) => p.push(Problem::new(at, format!("`{uri}` is not a valid URI: {e}"))),
                }
            }
            if let Some(alg) = &c.id_token_signed_response_alg {
                let algs = crate::domain::client_registration::ID_TOKEN_ALGS;
                if !algs.contains(&alg.as_str()) {
                    p.push(Problem::new(
                        format!("{path}.id_token_signed_response_alg"),
                        format!("`{alg}` is not one of {}", algs.join(", ")),
                    ));
                }
            }
            for (j, grant) in c.grant_types.iter().enumerate() {
                if !GRANT_TYPES.contains(&grant.as_str()) {
                    p.push(Problem::new(
                        format!("{path}.grant_types[{j}]"),
                        format!("`{grant}` is not one of {}", GRANT_TYPES.join(", ")),
                    ));
                }
            }
            if c.grant_types.iter().any(|g| g == "authorization_code") && c.redirect_uris.is_empty()
            {
                p.push(Problem::new(
                    format!("{path}.redirect_uris"),
                    "the authorization_code grant needs at least one redirect URI",
                ));
            }
            if p.len() == before {
                clients.push(c.to_static_client());
            }
        }
        clients
    }
}

impl StaticClientConfig {
    fn to_static_client(&self) -> StaticClient {
        let mut metadata = serde_json::json!({
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "grant_types": self.grant_types,
            "response_types": if self.grant_types.iter().any(|g| g == "authorization_code") {
                vec!["code"]
            } else {
                vec![]
            },
            "token_endpoint_auth_method": self.client_auth_method,
        });
        if let serde_json::Value::Object(map) = &mut metadata {
            if let Some(name) = &self.client_name {
                map.insert("client_name".into(), name.clone().into());
            }
            if let Some(jwks) = &self.jwks {
                map.insert("jwks".into(), jwks.clone());
            }
            if let Some(uri) = &self.jwks_uri {
                map.insert("jwks_uri".into(), uri.clone().into());
            }
            if let Some(alg) = &self.id_token_signed_response_alg {
                map.insert("id_token_signed_response_alg".into(), alg.clone().into());
            }
        }
        StaticClient {
            client_id: self.client_id.clone(),
            auth_method: self.client_auth_method.clone(),
            secret: self.client_secret.clone(),
            metadata,
        }
    }
}

/// Choices for [`generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub issuer: String,
    pub listen: String,
    pub database_url: String,
    pub homeserver: String,
    pub homeserver_endpoint: String,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            issuer: "http://localhost:8080/".into(),
            listen: default_listen(),
            database_url: default_database_url(),
            homeserver: "localhost".into(),
            homeserver_endpoint: "http://localhost:8008/".into(),
        }
    }
}

fn random_string<R: RngCore>(rng: &mut R, len: usize) -> String {
    rng.sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A YAML double-quoted scalar (a JSON string is one).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn indented_block(text: &str, indent: &str) -> String {
    text.lines()
        .map(|l| format!("{indent}{l}\n"))
        .collect::<String>()
}

/// A complete, commented configuration with fresh secrets and keys.
pub fn generate<R: RngCore + CryptoRng>(
    rng: &mut R,
    clock: &dyn crate::clock::Clock,
    options: &GenerateOptions,
) -> Result<String, crate::keys::KeyError> {
    let rsa = PrivateKey::generate_rsa(rng)?.to_pkcs8_pem()?;
    let ec = PrivateKey::generate_p256(rng).to_pkcs8_pem()?;
    let mut encryption = [0u8; 32];
    rng.fill_bytes(&mut encryption);
    let matrix_secret = random_string(rng, 48);
    let millis = u64::try_from(clock.now().timestamp_millis()).unwrap_or(0);
    let client_id = ulid::Ulid::from_parts(
        millis,
        u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()),
    );
    let client_secret = random_string(rng, 40);

    Ok(format!(
        r#"# Configuration of the Matrix OAuth 2.0 / OpenID Connect provider.
# Check it with `provider config check FILE`. Any setting can be overridden by an environment
# variable PROVIDER__<SECTION>__<KEY>, e.g. PROVIDER__DATABASE__URL=postgres://… or
# PROVIDER__CLIENTS__0__CLIENT_SECRET=… (list items by index).

http:
  # The issuer identifier clients see and compare exactly: https (plain http only on
  # localhost), ending with "/".
  issuer: {issuer}
  # Where clients and browsers reach the provider; defaults to the issuer.
  public_base: {issuer}
  # The address the server listens on.
  listen: {listen}
  # Reverse proxies (addresses, or networks like 10.0.0.0/8) whose X-Forwarded-For header
  # names the client for per-IP rate limits. From anyone else the header is ignored.
  trusted_proxies: []

database:
  # postgres://user:password@host/dbname for production; sqlite://path (created when missing)
  # for small deployments and trying things out.
  url: {database_url}
  max_connections: 10

secrets:
  # 32 random bytes (hex) that encrypt client and upstream secrets in the database.
  # Changing it makes the stored secrets unreadable.
  encryption: {encryption}
  # Signing keys for ID tokens. An RSA key (RS256) is required; a P-256 key adds ES256.
  # PEM in PKCS#1, PKCS#8 or SEC1; use `key_file: path` instead of `key` to keep it apart.
  # The key ID (`kid`) defaults to the key's RFC 7638 thumbprint.
  keys:
    - key: |
{rsa}    - key: |
{ec}
matrix:
  # How the provider talks to the homeserver: `synapse` (Synapse 1.136 or later, the
  # /_synapse/mas API) or `synapse_legacy` (older Synapse, the /_synapse/admin API).
  kind: synapse
  # The homeserver's server name (user IDs look like @alice:<homeserver>).
  homeserver: {homeserver}
  # Where the provider reaches the homeserver's API.
  endpoint: {endpoint}
  # Shared with the homeserver (Synapse: matrix_authentication_service.secret). The
  # homeserver uses it to introspect tokens; the provider uses it to provision users.
  secret: {matrix_secret}

account:
  # Let people create their own accounts on the sign-in page (and with prompt=create).
  registration: false
  # What people may change themselves on the account page.
  display_name_change_allowed: true
  email_change_allowed: true
  password_change_allowed: true
  account_deactivation_allowed: true
  # "Forgot password?" on the login page: a link mailed to a confirmed address sets a new
  # password. Needs an email transport.
  password_recovery_enabled: false
  # Registration asks for an email address and creates the account once the code mailed to it
  # is entered. Needs an email transport.
  password_registration_email_required: false
  # Registration needs a registration token, issued by an administrator (admin API, or
  # `provider manage issue-registration-token`).
  registration_token_required: false
  # Terms of service to accept when registering (a required checkbox linking them); each
  # acceptance is recorded with its URL and time.
  # terms_of_service_url: "https://example.com/terms"

# Bot protection on the registration page: none, hcaptcha, recaptcha_v2 or turnstile.
captcha:
  service: none
  # site_key: "…"
  # secret_key: "…"
  # Where responses are verified; defaults to the service's siteverify URL.
  # verify_url: "https://api.hcaptcha.com/siteverify"

# How mail (verification codes, password recovery links) is sent.
email:
  # none: mail is dropped (logged without codes or links); smtp: through a relay; capture:
  # kept in memory (playground, tests).
  transport: none
  # The sender; defaults to noreply@<matrix.homeserver>.
  # from: "Matrix <noreply@example.com>"
  # For transport: smtp:
  # hostname: smtp.example.com
  # mode: starttls        # starttls (port 587), tls (implicit TLS, port 465) or plain (loopback only, port 25)
  # port: 587
  # username: provider
  # password: "…"
  # ca_certificate_file: relay-ca.pem   # extra certificate authorities to trust (PEM)

admin:
  # Clients (client_id) that may get the `urn:mas:admin` scope with the client_credentials
  # grant, to call the admin API (/api/admin/v1) without a user. Users who may administer get
  # it through the authorization code flow.
  clients: []

# Rate limits: a request over one is answered 429 with Retry-After (M_LIMIT_EXCEEDED on the
# Matrix API). The buckets are kept in the database, so replicas share them. Each limit lets
# `burst` requests through at once and refills at `per_second`; set a value to change it, or
# `enabled: false` to turn one off. The defaults:
rate_limiting:
  enabled: true
{rate_limiting}
# Clients known in advance. `provider config sync` (and `provider serve`) writes them to the
# database; edit or remove this example.
clients:
  - client_id: {client_id}
    client_name: "Example confidential client"
    client_auth_method: client_secret_basic
    client_secret: {client_secret}
    redirect_uris:
      - "https://client.example.com/callback"
    post_logout_redirect_uris:
      - "https://client.example.com/signed-out"
    grant_types: [authorization_code, refresh_token]

{upstream}"#,
        issuer = quoted(&options.issuer),
        listen = quoted(&options.listen),
        rate_limiting = rate_limiting_yaml(),
        database_url = quoted(&options.database_url),
        encryption = quoted(&hex::encode(encryption)),
        rsa = indented_block(&rsa, "        "),
        ec = indented_block(&ec, "        "),
        homeserver = quoted(&options.homeserver),
        endpoint = quoted(&options.homeserver_endpoint),
        matrix_secret = quoted(&matrix_secret),
        client_id = quoted(&client_id.to_string()),
        client_secret = quoted(&client_secret),
        upstream = crate::config::upstream::GENERATED_EXAMPLE,
    ))
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn loopback_names() {
        for name in [
            "localhost",
            "LOCALHOST:8448",
            "127.0.0.1",
            "127.1.2.3:80",
            "::1",
            "[::1]:8008",
        ] {
            assert!(is_loopback_host(name), "{name}");
        }
        for name in [
            "example.com",
            "matrix.org:443",
            "10.0.0.1",
            "localhost.example",
        ] {
            assert!(!is_loopback_host(name), "{name}");
        }
    }

    fn generated() -> String {
        let clock = crate::clock::MockClock::default();
        generate(
            &mut StdRng::seed_from_u64(1),
            &clock,
            &GenerateOptions::default(),
        )
        .unwrap()
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn generated_config_is_valid() {
        let (config, settings) = parse(&generated(), no_env(), Path::new(".")).unwrap();
        assert_eq!(settings.issuer.as_str(), "http://localhost:8080/");
        assert_eq!(settings.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.keystore.keys().len(), 2);
        assert_eq!(settings.clients.len(), 1);
        assert_eq!(settings.clients[0].auth_method, "client_secret_basic");
        assert_eq!(config.database.url, "sqlite://provider.db");
        assert_eq!(settings.matrix.homeserver, "localhost");
    }

    #[test]
    fn environment_overrides() {
        let env = vec![
            (
                "PROVIDER__DATABASE__URL".to_owned(),
                "postgres://db/provider".to_owned(),
            ),
            (
                "PROVIDER__DATABASE__MAX_CONNECTIONS".to_owned(),
                "25".to_owned(),
            ),
            // the file has a string here, so digits stay a string
            (
                "PROVIDER__MATRIX__SECRET".to_owned(),
                "0123456789012345678".to_owned(),
            ),
            (
                "PROVIDER__CLIENTS__0__CLIENT_NAME".to_owned(),
                "Renamed".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let (config, settings) = parse(&generated(), env, Path::new(".")).unwrap();
        assert_eq!(settings.database_url, "postgres://db/provider");
        assert!(settings.clients[0]
            .metadata
            .get("id_token_signed_response_alg")
            .is_none());
        assert_eq!(settings.pool.max_connections, 25);
        assert_eq!(config.matrix.secret, "0123456789012345678");
        assert_eq!(settings.clients[0].metadata["client_name"], "Renamed");
    }

    #[test]
    fn unknown_environment_paths_are_reported() {
        let env = vec![
            ("PROVIDER__HTTP__ISSUR".to_owned(), "x".to_owned()),
            (
                "PROVIDER__CLIENTS__7__CLIENT_NAME".to_owned(),
                "x".to_owned(),
            ),
        ];
        let problems = parse(&generated(), env, Path::new(".")).unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["clients[7].client_name", "http.issur"],
            "{problems:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let broken = generated()
            .replace(
                "issuer: \"http://localhost:8080/\"",
                "issuer: \"https://auth.example.com\"\n  colour: blue",
            )
            .replace("url: \"sqlite://provider.db\"", "url: \"mysql://db\"")
            .replace(
                "client_auth_method: client_secret_basic",
                "client_auth_method: magic",
            )
            .replace(
                "\"https://client.example.com/callback\"",
                "\"https://client.example.com/cb#frag\"",
            )
            .replace("listen: \"127.0.0.1:8080\"", "listen: \"everywhere\"");
        let broken = broken.replacen(
            "    - key: |\n",
            "    - key_file: /nonexistent/key.pem\n      key: |\n",
            1,
        );
        let problems = parse(&broken, no_env(), Path::new(".")).unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let expect = [
            "http.colour: unknown key",
            "http.issuer: must end with `/`",
            "http.listen: `everywhere` is not a socket address like 127.0.0.1:8080",
            "database.url: unsupported database URL `mysql://db`",
            "secrets.keys[0]: needs exactly one of `key` or `key_file`",
            "clients[0].client_auth_method: `magic` is not one of",
            "clients[0].client_secret: not used by `magic`: remove it",
            "clients[0].redirect_uris[0]: must not contain a fragment",
        ];
        for e in expect {
            assert!(
                text.iter().any(|t| t.starts_with(e)),
                "missing `{e}` in {text:#?}"
            );
        }
        assert_eq!(text.len(), expect.len(), "{text:#?}");
    }

    #[test]
    fn structural_and_syntax_errors() {
        let p = parse("http: [1, 2", no_env(), Path::new(".")).unwrap_err();
        assert!(p[0].message.starts_with("not valid YAML"), "{p:?}");
        let p = parse("", no_env(), Path::new(".")).unwrap_err();
        assert_eq!(p[0].message, "the file is empty");
        let p = parse("just some words", no_env(), Path::new(".")).unwrap_err();
        assert!(
            p[0].message.starts_with("the file must be a YAML mapping"),
            "{p:?}"
        );
        let p = parse(
            "http: {issuer: 'http://localhost/'}\nextra: 1\n",
            no_env(),
            Path::new("."),
        )
        .unwrap_err();
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"extra: unknown key".to_owned()), "{text:?}");
        assert!(
            text.iter().any(|t| t.contains("missing field `secrets`")),
            "{text:?}"
        );
        let p = parse(
            &generated().replace("max_connections: 10", "max_connections: many"),
            no_env(),
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "database.max_connections", "{p:?}");
    }

    #[test]
    fn static_clients_may_ask_for_es256() {
        let env = vec![(
            "PROVIDER__CLIENTS__0__ID_TOKEN_SIGNED_RESPONSE_ALG".to_owned(),
            "ES256".to_owned(),
        )];
        let (_, settings) = parse(&generated(), env, Path::new(".")).unwrap();
        assert_eq!(
            settings.clients[0].metadata["id_token_signed_response_alg"],
            "ES256"
        );
        let env = vec![(
            "PROVIDER__CLIENTS__0__ID_TOKEN_SIGNED_RESPONSE_ALG".to_owned(),
            "none".to_owned(),
        )];
        let p = parse(&generated(), env, Path::new(".")).unwrap_err();
        assert_eq!(p[0].path, "clients[0].id_token_signed_response_alg");
    }

    #[test]
    fn http_issuer_only_on_loopback() {
        let text = generated().replace("http://localhost:8080/", "http://auth.example.com/");
        let p = parse(&text, no_env(), Path::new(".")).unwrap_err();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "http.issuer");
    }
}
