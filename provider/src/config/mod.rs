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

use std::{fmt, net::SocketAddr, path::Path};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use url::Url;

pub use self::{
    account::AccountConfig,
    admin::AdminConfig,
    captcha::CaptchaConfig,
    clients::{StaticClient, StaticClientConfig},
    database::DatabaseConfig,
    email::{
        EmailConfig, EmailSettings, EmailTransport, EmailTransportKind, SmtpMode, SmtpSettings,
    },
    generate::{generate, GenerateOptions},
    http::{proxies, HttpConfig},
    matrix::{HomeserverKind, MatrixConfig, MatrixSettings},
    proxies::{IpNet, TrustedProxies},
    rate_limiting::{
        EmailRateLimits, LimitConfig, LoginRateLimits, RateLimitingConfig, RecoveryRateLimits,
        RegistrationRateLimits, TokenRateLimits,
    },
    secrets::{KeyConfig, SecretsConfig},
    sessions::{BrowserSessionLifetimes, SessionsConfig},
    tokens::{TokensConfig, MAX_REFRESH_GRACE_SECONDS},
};
use self::{
    captcha::CaptchaSettings,
    upstream::{UpstreamOAuth2Config, UpstreamProviderSettings},
};
use crate::{domain::rate_limit::RateLimits, keys::Keystore, storage::PoolSettings};

mod account;
mod admin;
pub mod captcha;
mod clients;
mod database;
pub mod email;
mod generate;
mod http;
mod matrix;
mod rate_limiting;
mod secrets;
mod sessions;
mod tokens;
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
    /// Upstream OpenID Connect providers to sign in with (see [`upstream`]).
    #[serde(default)]
    pub upstream_oauth2: UpstreamOAuth2Config,
    /// How issued tokens behave.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// How long browser sessions last.
    #[serde(default)]
    pub sessions: SessionsConfig,
}

/// The default of the switches that are on unless turned off.
fn yes() -> bool {
    true
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
    pub captcha: Option<CaptchaSettings>,
    /// The terms of service registration asks to accept (`account.terms_of_service_url`).
    pub terms_of_service_url: Option<Url>,
    /// The upstream OpenID Connect providers (`upstream_oauth2.providers`), written to the
    /// database at start.
    pub upstream_providers: Vec<UpstreamProviderSettings>,
    /// `secrets.password_pepper`: appended to passwords checked against imported bcrypt hashes.
    pub password_pepper: Option<String>,
    /// `tokens.refresh_grace_seconds`.
    pub refresh_grace_seconds: u32,
    /// `sessions`: the idle and absolute lifetimes of browser sessions.
    pub browser_sessions: BrowserSessionLifetimes,
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
    /// Checks every setting and builds the runtime [`Settings`], or lists every problem. Each
    /// section checks itself (in the order of this function, which is the order problems are
    /// listed in); the sections that depend on others are given what they need.
    pub fn resolve(&self, base_dir: &Path) -> Result<Settings, Vec<Problem>> {
        let mut problems = Vec::new();
        let p = &mut problems;

        let http = self.http.resolve(p);
        let rate_limits = self.rate_limiting.resolve(p);
        self.database.check(p);
        let encryption_key = self.secrets.resolve_encryption(p);
        let keystore = self.secrets.resolve_keys(p, base_dir);
        let matrix = self.matrix.resolve(p);
        let clients = clients::resolve(&self.clients, p);
        let admin_clients = self.admin.resolve(&self.clients, p);
        let email = self.email.resolve(p, &self.matrix.homeserver, base_dir);
        self.account.check_mail_is_sent(self.email.transport, p);
        let terms_of_service_url = self.account.resolve_terms_of_service(p);
        let captcha = self.captcha.resolve(p);
        let upstream_providers = self.upstream_oauth2.resolve(p);
        let refresh_grace_seconds = self.resolve_tokens(p);
        let browser_sessions = self.resolve_sessions(p);

        match (
            http.issuer,
            http.public_base,
            http.listen,
            encryption_key,
            keystore,
            matrix,
        ) {
            (
                Some(issuer),
                Some(public_base),
                Some(listen),
                Some(encryption_key),
                Some(keystore),
                Some(matrix),
            ) if problems.is_empty() => Ok(Settings {
                issuer,
                public_base,
                listen,
                trusted_proxies: http.trusted_proxies,
                rate_limits,
                database_url: self.database.url.clone(),
                pool: self.database.pool(),
                encryption_key,
                keystore,
                matrix,
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
                password_pepper: self.secrets.password_pepper.clone(),
                refresh_grace_seconds,
                browser_sessions,
            }),
            _ => Err(problems),
        }
    }
}

/// What the tests of every section start from: the file `config generate` writes, with fixed
/// randomness and clock.
#[cfg(test)]
mod test_support {
    use rand::{rngs::StdRng, SeedableRng};

    pub(super) fn generated() -> String {
        let clock = crate::clock::MockClock::default();
        super::generate(
            &mut StdRng::seed_from_u64(1),
            &clock,
            &super::GenerateOptions::default(),
        )
        .unwrap()
    }

    pub(super) fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::{
        test_support::{generated, no_env},
        *,
    };

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
}
