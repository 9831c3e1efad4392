//! The `captcha` section: which service guards registration, and its keys. The verification
//! itself is [`crate::core::captcha`].

use serde::{Deserialize, Serialize};
use url::Url;

use super::{check_url, Problem};

/// Bot protection on the registration page (see [`crate::core::captcha`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CaptchaConfig {
    /// `none` (the default), `hcaptcha`, `recaptcha_v2` or `turnstile`.
    #[serde(default)]
    pub service: CaptchaService,
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

impl CaptchaConfig {
    /// Checks the section, reporting problems at `captcha.…`: the captcha registration asks
    /// for, if any.
    pub(super) fn resolve(&self, p: &mut Vec<Problem>) -> Option<CaptchaSettings> {
        let c = self;
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
            return None;
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
        match (site_key, secret_key, verify_url) {
            (Some(site_key), Some(secret_key), Some(verify_url)) => Some(CaptchaSettings {
                service,
                site_key,
                secret_key,
                verify_url,
            }),
            _ => None,
        }
    }
}

/// Which captcha service guards registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptchaService {
    /// No captcha (the default).
    #[default]
    None,
    /// hCaptcha (<https://docs.hcaptcha.com/>).
    Hcaptcha,
    /// Google reCAPTCHA v2, the checkbox (<https://developers.google.com/recaptcha/docs/display>).
    RecaptchaV2,
    /// Cloudflare Turnstile (<https://developers.cloudflare.com/turnstile/>).
    Turnstile,
}

impl CaptchaService {
    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Hcaptcha => "hcaptcha",
            Self::RecaptchaV2 => "recaptcha_v2",
            Self::Turnstile => "turnstile",
        }
    }

    /// The service's official siteverify endpoint (the default of `captcha.verify_url`).
    pub fn default_verify_url(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Hcaptcha => Some("https://api.hcaptcha.com/siteverify"),
            Self::RecaptchaV2 => Some("https://www.google.com/recaptcha/api/siteverify"),
            Self::Turnstile => Some("https://challenges.cloudflare.com/turnstile/v0/siteverify"),
        }
    }

    /// The script that renders the widget.
    pub fn script_url(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Hcaptcha => Some("https://js.hcaptcha.com/1/api.js"),
            Self::RecaptchaV2 => Some("https://www.google.com/recaptcha/api.js"),
            Self::Turnstile => Some("https://challenges.cloudflare.com/turnstile/v0/api.js"),
        }
    }

    /// The class of the element the script turns into the widget (its `data-sitekey` names the
    /// site).
    pub fn widget_class(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Hcaptcha => Some("h-captcha"),
            Self::RecaptchaV2 => Some("g-recaptcha"),
            Self::Turnstile => Some("cf-turnstile"),
        }
    }

    /// The form field the widget puts its response token in.
    pub fn response_field(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Hcaptcha => Some("h-captcha-response"),
            Self::RecaptchaV2 => Some("g-recaptcha-response"),
            Self::Turnstile => Some("cf-turnstile-response"),
        }
    }

    /// What the page's CSP must allow, per directive, as each service documents it: hCaptcha
    /// its script, frames, styles and API calls on `hcaptcha.com`; reCAPTCHA its script on
    /// `www.google.com`/`www.gstatic.com` and its frames; Turnstile its script and frame on
    /// `challenges.cloudflare.com`.
    pub fn csp_sources(self) -> &'static [(&'static str, &'static str)] {
        const HCAPTCHA: &str = "https://hcaptcha.com https://*.hcaptcha.com";
        const TURNSTILE: &str = "https://challenges.cloudflare.com";
        match self {
            Self::None => &[],
            Self::Hcaptcha => &[
                ("script-src", HCAPTCHA),
                ("frame-src", HCAPTCHA),
                ("style-src", HCAPTCHA),
                ("connect-src", HCAPTCHA),
            ],
            Self::RecaptchaV2 => &[
                (
                    "script-src",
                    "https://www.google.com/recaptcha/ https://www.gstatic.com/recaptcha/",
                ),
                (
                    "frame-src",
                    "https://www.google.com/recaptcha/ https://recaptcha.google.com/recaptcha/",
                ),
            ],
            Self::Turnstile => &[("script-src", TURNSTILE), ("frame-src", TURNSTILE)],
        }
    }
}

/// A configured captcha (service other than `none`), validated.
#[derive(Clone, PartialEq, Eq)]
pub struct CaptchaSettings {
    pub service: CaptchaService,
    /// Public: goes into the page.
    pub site_key: String,
    /// Private: only sent to the service.
    pub secret_key: String,
    /// Where tokens are verified.
    pub verify_url: Url,
}

// Never print the secret key.
impl std::fmt::Debug for CaptchaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptchaSettings")
            .field("service", &self.service)
            .field("site_key", &self.site_key)
            .field("secret_key", &"<redacted>")
            .field("verify_url", &self.verify_url.as_str())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::CaptchaService;
    use crate::config::{parse, test_support::generated};

    fn parsed(env: &[(&str, &str)]) -> Result<crate::config::Settings, Vec<String>> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        parse(&generated(), env, Path::new("."))
            .map(|(_, settings)| settings)
            .map_err(|p| p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn keys_are_refused_without_a_service() {
        assert_eq!(
            parsed(&[("PROVIDER__CAPTCHA__SITE_KEY", "k")]).unwrap_err(),
            ["captcha.site_key: only used with a captcha `service`: remove it, or choose hcaptcha, recaptcha_v2 or turnstile"]
        );
    }

    #[test]
    fn a_service_needs_both_keys_and_verifies_at_its_own_url_by_default() {
        assert_eq!(
            parsed(&[("PROVIDER__CAPTCHA__SERVICE", "hcaptcha")]).unwrap_err(),
            [
                "captcha.site_key: required by `service: hcaptcha`",
                "captcha.secret_key: required by `service: hcaptcha`",
            ]
        );
        let settings = parsed(&[
            ("PROVIDER__CAPTCHA__SERVICE", "turnstile"),
            ("PROVIDER__CAPTCHA__SITE_KEY", "site"),
            ("PROVIDER__CAPTCHA__SECRET_KEY", "secret"),
        ])
        .unwrap();
        let captcha = settings.captcha.unwrap();
        assert_eq!(captcha.service, CaptchaService::Turnstile);
        assert_eq!(
            captcha.verify_url.as_str(),
            CaptchaService::Turnstile.default_verify_url().unwrap()
        );
        assert!(!format!("{captcha:?}").contains("secret\""));
    }
}
