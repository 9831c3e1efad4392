//! Every path the provider serves, in one place: the router mounts these and the discovery
//! document links to them, so a link can't drift from its route.

use url::Url;

/// OpenID Connect Discovery 1.0 §4.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
/// RFC 8414 §3: the same metadata under the OAuth 2.0 well-known name.
pub const OAUTH_AUTHORIZATION_SERVER: &str = "/.well-known/oauth-authorization-server";
/// The public signing keys (RFC 7517 JWK Set).
pub const JWKS: &str = "/oauth2/keys.json";
/// The authorization endpoint (RFC 6749 §3.1).
pub const AUTHORIZE: &str = "/authorize";
/// Dynamic client registration (RFC 7591 §3, MSC2966).
pub const REGISTRATION: &str = "/oauth2/registration";
/// The token endpoint (RFC 6749 §3.2).
pub const TOKEN: &str = "/oauth2/token";
/// Token revocation (RFC 7009 §2).
pub const REVOCATION: &str = "/oauth2/revoke";
/// Token introspection (RFC 7662 §2), for the homeserver and confidential clients.
pub const INTROSPECTION: &str = "/oauth2/introspect";
/// The UserInfo endpoint (OIDC Core §5.3).
pub const USERINFO: &str = "/oauth2/userinfo";
/// RP-Initiated Logout 1.0 (`end_session_endpoint`).
pub const END_SESSION: &str = "/oauth2/logout";
/// The device authorization endpoint (RFC 8628 §3.1, MSC4341).
pub const DEVICE_AUTHORIZATION: &str = "/oauth2/device";
/// The consent step of a pending authorization request (`/consent/{grant id}`).
pub const CONSENT: &str = "/consent";
/// The sign-in page.
pub const LOGIN: &str = "/login";
/// The registration page.
pub const REGISTER: &str = "/register";
/// "Forgot password?": the page that mails a recovery link, which opens `/recover/{ticket}`.
pub const RECOVER: &str = "/recover";
/// `GET /upstream/authorize/{provider_id}`: starts a login at an upstream provider.
pub const UPSTREAM_AUTHORIZE: &str = "/upstream/authorize";
/// `GET|POST /upstream/callback/{provider_id}`: the upstream provider's redirect URI.
pub const UPSTREAM_CALLBACK: &str = "/upstream/callback";
/// `GET|POST /upstream/link/{session_id}`: what to do with the identity that came back.
pub const UPSTREAM_LINK: &str = "/upstream/link";
/// `GET|POST /upstream/unlink/{link_id}`: removes a linked identity from the account.
pub const UPSTREAM_UNLINK: &str = "/upstream/unlink";
/// The device flow's verification page, where the user enters the code (RFC 8628 §3.3).
pub const LINK: &str = "/link";
/// Where the verification page's approval form posts (RFC 8628 §3.3).
pub const LINK_APPROVE: &str = "/link/approve";
/// Where the homeserver's reverse proxy sends the legacy Matrix login API (client-server API
/// §"Login", MSC3824): under both the `r0` prefix old clients still use and `v3`. The paths
/// below are relative to each prefix.
pub const MATRIX_CLIENT_PREFIXES: [&str; 2] = ["/_matrix/client/r0", "/_matrix/client/v3"];
/// `GET` the login flows, `POST` a login (`m.login.password`, `m.login.token`).
pub const COMPAT_LOGIN: &str = "/login";
/// `m.login.sso`: the browser starts here and comes back to the client with a `loginToken`.
pub const COMPAT_SSO_REDIRECT: &str = "/login/sso/redirect";
/// The same, naming an identity provider (ignored: the provider is the only one).
pub const COMPAT_SSO_REDIRECT_IDP: &str = "/login/sso/redirect/{idp_id}";
/// Refresh a compat access token (client-server API §"Refreshing access tokens").
pub const COMPAT_REFRESH: &str = "/refresh";
/// End the session of the access token.
pub const COMPAT_LOGOUT: &str = "/logout";
/// End every compat session of the access token's user.
pub const COMPAT_LOGOUT_ALL: &str = "/logout/all";
/// The page where the user confirms an `m.login.sso` login (`/complete-compat-sso/{id}`).
pub const COMPLETE_COMPAT_SSO: &str = "/complete-compat-sso";
/// The account management page (MSC4191 `account_management_uri`): profile, devices,
/// deactivation, cross-signing reset, each opened with `?action=…`.
pub const ACCOUNT: &str = "/account";
/// Liveness and database check for load balancers and orchestrators.
pub const HEALTH: &str = "/health";

/// The absolute URL of a path under a base URL that ends with `/`.
pub fn url(base: &Url, path: &str) -> Url {
    // `path` is one of the constants above: joining a relative path to a valid base can't fail.
    base.join(path.trim_start_matches('/'))
        .unwrap_or_else(|_| base.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_base_path() {
        let base = Url::parse("https://example.com/auth/").unwrap();
        assert_eq!(
            url(&base, JWKS).as_str(),
            "https://example.com/auth/oauth2/keys.json"
        );
        let root = Url::parse("http://localhost:8080/").unwrap();
        assert_eq!(
            url(&root, OPENID_CONFIGURATION).as_str(),
            "http://localhost:8080/.well-known/openid-configuration"
        );
    }
}
