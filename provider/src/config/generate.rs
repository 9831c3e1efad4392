//! `provider config generate`: a complete, commented configuration file with fresh secrets and
//! keys, which [`super::load`] accepts as it is.

use rand::{distributions::Alphanumeric, CryptoRng, Rng, RngCore};

use super::{
    database::default_database_url, http::default_listen, rate_limiting::rate_limiting_yaml,
};
use crate::keys::PrivateKey;

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
{sessions}
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
        sessions = super::sessions::GENERATED,
        upstream = super::upstream::GENERATED_EXAMPLE,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::quoted;
    use crate::config::{
        parse,
        test_support::{generated, no_env},
    };

    #[test]
    fn generated_config_is_valid() {
        let (config, settings) = parse(&generated(), no_env(), Path::new(".")).unwrap();
        assert_eq!(settings.issuer.as_str(), "http://localhost:8080/");
        assert_eq!(settings.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.keystore.keys().len(), 2);
        assert_eq!(settings.clients.len(), 1);
        assert_eq!(
            settings.clients[0].auth_method.as_str(),
            "client_secret_basic"
        );
        assert_eq!(config.database.url, "sqlite://provider.db");
        assert_eq!(settings.matrix.homeserver, "localhost");
    }

    #[test]
    fn the_same_randomness_generates_the_same_file() {
        assert_eq!(generated(), generated());
    }

    #[test]
    fn values_are_quoted_for_yaml() {
        assert_eq!(quoted("a \"b\": c"), r#""a \"b\": c""#);
    }
}
