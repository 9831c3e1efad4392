//! The `captcha` section: which service guards registration, and its keys. The verification
//! itself is [`crate::core::captcha`].

use serde::{Deserialize, Serialize};
use url::Url;

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
