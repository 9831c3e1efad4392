//! The `account` section: what people may do with their accounts themselves (registration,
//! self-service changes, recovery, terms of service).

use serde::{Deserialize, Serialize};
use url::Url;

use super::{check_url, EmailTransportKind, Problem};

/// What people may do with their accounts themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountConfig {
    /// May people create accounts on the sign-in pages (and with `prompt=create`)?
    #[serde(default)]
    pub registration: bool,
    /// May users change their display name on the account page?
    #[serde(default = "super::yes")]
    pub display_name_change_allowed: bool,
    /// May users add and remove email addresses on the account page?
    #[serde(default = "super::yes")]
    pub email_change_allowed: bool,
    /// May users change their password on the account page (with their current one)?
    #[serde(default = "super::yes")]
    pub password_change_allowed: bool,
    /// "Forgot password?": a link mailed to a confirmed address sets a new password. Needs an
    /// `email.transport` other than `none`.
    #[serde(default)]
    pub password_recovery_enabled: bool,
    /// May users deactivate their own account on the account page (MSC4191
    /// `org.matrix.account_deactivate`)?
    #[serde(default = "super::yes")]
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

impl AccountConfig {
    /// `account.terms_of_service_url`, when set.
    pub(super) fn resolve_terms_of_service(&self, p: &mut Vec<Problem>) -> Option<Url> {
        self.terms_of_service_url
            .as_deref()
            .and_then(|raw| check_url(p, "account.terms_of_service_url", raw))
    }

    /// The switches that mail codes or links: with the `none` transport nobody could finish
    /// them.
    pub(super) fn check_mail_is_sent(&self, transport: EmailTransportKind, p: &mut Vec<Problem>) {
        if transport != EmailTransportKind::None {
            return;
        }
        for (key, on) in [
            ("password_recovery_enabled", self.password_recovery_enabled),
            (
                "password_registration_email_required",
                self.password_registration_email_required,
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::AccountConfig;
    use crate::config::{parse, test_support::generated};

    fn problems(env: &[(&str, &str)]) -> Vec<String> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        parse(&generated(), env, Path::new("."))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_missing_section_is_the_defaults() {
        let defaults: AccountConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(
            format!("{defaults:?}"),
            format!("{:?}", AccountConfig::default())
        );
        assert!(!defaults.registration);
        assert!(defaults.password_change_allowed);
    }

    #[test]
    fn mailing_switches_need_a_transport() {
        assert_eq!(
            problems(&[
                ("PROVIDER__ACCOUNT__PASSWORD_RECOVERY_ENABLED", "true"),
                ("PROVIDER__ACCOUNT__PASSWORD_REGISTRATION_EMAIL_REQUIRED", "true"),
            ]),
            [
                "account.password_recovery_enabled: needs mail: set `email.transport` to `smtp` (or `capture`)",
                "account.password_registration_email_required: needs mail: set `email.transport` to `smtp` (or `capture`)",
            ]
        );
        let env = [
            ("PROVIDER__ACCOUNT__PASSWORD_RECOVERY_ENABLED", "true"),
            ("PROVIDER__EMAIL__TRANSPORT", "capture"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert!(parse(&generated(), env, Path::new(".")).is_ok());
    }

    #[test]
    fn terms_of_service_are_a_url() {
        assert_eq!(
            problems(&[("PROVIDER__ACCOUNT__TERMS_OF_SERVICE_URL", "x")]),
            ["account.terms_of_service_url: `x` is not a valid URL: relative URL without a base"]
        );
    }
}
