//! The `rate_limiting` section: the quota of each limit of [`crate::core::rate_limit`].

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::domain::rate_limit::{Limit, Quota, RateLimits};

/// `rate_limiting`: the limits of [`crate::core::rate_limit`], each `{burst, per_second}` with
/// `enabled: false` to turn it off; a missing value takes the limit's default
/// ([`Limit::default_rate`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitingConfig {
    /// Off: no limit at all (for a test bed behind its own limits).
    #[serde(default = "super::yes")]
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
    #[serde(default)]
    pub client_registration: PerIpRateLimits,
    #[serde(default)]
    pub device_authorization: PerIpRateLimits,
    #[serde(default)]
    pub authorize: PerIpRateLimits,
    #[serde(default)]
    pub compat_sso: PerIpRateLimits,
    #[serde(default)]
    pub user_code: UserCodeRateLimits,
    #[serde(default)]
    pub client_auth: ClientAuthRateLimits,
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
            client_registration: PerIpRateLimits::default(),
            device_authorization: PerIpRateLimits::default(),
            authorize: PerIpRateLimits::default(),
            compat_sso: PerIpRateLimits::default(),
            user_code: UserCodeRateLimits::default(),
            client_auth: ClientAuthRateLimits::default(),
        }
    }
}

/// `rate_limiting.login`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoginRateLimits {
    /// Sign-in attempts per client IP.
    #[serde(default)]
    pub per_ip: LimitConfig,
    /// Failed sign-in attempts per account from one address.
    #[serde(default)]
    pub per_account: LimitConfig,
    /// Failed sign-in attempts per account from every address together.
    #[serde(default)]
    pub per_account_global: LimitConfig,
}

/// A section with one per-IP limit: `client_registration`, `device_authorization`,
/// `authorize`, `compat_sso` (the unauthenticated requests that store a row).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PerIpRateLimits {
    #[serde(default)]
    pub per_ip: LimitConfig,
}

/// `rate_limiting.user_code`: user codes typed on the device verification page.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserCodeRateLimits {
    #[serde(default)]
    pub per_ip: LimitConfig,
    #[serde(default)]
    pub per_session: LimitConfig,
}

/// `rate_limiting.client_auth`: failed client authentications (per address only: see
/// `http::oauth2::client_auth`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientAuthRateLimits {
    #[serde(default)]
    pub failures_per_ip: LimitConfig,
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
            Limit::LoginPerAccountGlobal => &self.login.per_account_global,
            Limit::ClientRegistration => &self.client_registration.per_ip,
            Limit::DeviceAuthorization => &self.device_authorization.per_ip,
            Limit::Authorize => &self.authorize.per_ip,
            Limit::CompatSsoRedirect => &self.compat_sso.per_ip,
            Limit::UserCodePerIp => &self.user_code.per_ip,
            Limit::UserCodePerSession => &self.user_code.per_session,
            Limit::ClientAuthPerIp => &self.client_auth.failures_per_ip,
        }
    }

    /// Every limit's quota (its defaults where unset), or the problems with their paths.
    pub(super) fn resolve(&self, p: &mut Vec<Problem>) -> RateLimits {
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
pub(super) fn rate_limiting_yaml() -> String {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Limit;
    use crate::config::{parse, test_support::generated};

    #[test]
    fn out_of_range_values_are_reported_at_their_key() {
        let env = [
            ("PROVIDER__RATE_LIMITING__LOGIN__PER_IP__BURST", "0"),
            (
                "PROVIDER__RATE_LIMITING__TOKEN__PER_CLIENT__PER_SECOND",
                "-1",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let p = parse(&generated(), env, Path::new(".")).unwrap_err();
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "rate_limiting.login.per_ip.burst",
                "rate_limiting.token.per_client.per_second"
            ],
            "{p:?}"
        );
    }

    #[test]
    fn a_limit_or_all_of_them_can_be_turned_off() {
        let env = vec![(
            "PROVIDER__RATE_LIMITING__EMAIL__PER_USER__ENABLED".to_owned(),
            "false".to_owned(),
        )];
        let (_, settings) = parse(&generated(), env, Path::new(".")).unwrap();
        for limit in Limit::ALL {
            let on = settings.rate_limits.quota(limit).is_some();
            assert_eq!(on, limit != Limit::EmailSendPerUser, "{limit:?}");
        }
        let env = vec![(
            "PROVIDER__RATE_LIMITING__ENABLED".to_owned(),
            "false".to_owned(),
        )];
        let (_, settings) = parse(&generated(), env, Path::new(".")).unwrap();
        assert!(Limit::ALL
            .into_iter()
            .all(|limit| settings.rate_limits.quota(limit).is_none()));
    }
}
