//! Bot protection on the registration page: hCaptcha, reCAPTCHA v2 or Cloudflare Turnstile
//! (the `captcha` section of the configuration).
//!
//! All three work alike: the page loads the service's script, which renders a widget from the
//! site key and, once the visitor passes it, puts a one-time response token into a hidden form
//! field. The provider then asks the service whether that token is good with a form `POST` of
//! `secret`, `response` and (optionally) `remoteip` to its "siteverify" endpoint, and reads
//! `success` from the JSON answer. The service's script and frames must be allowed by the
//! page's Content-Security-Policy: [`CaptchaService::csp_sources`].
//!
//! A token is good for one verification only, and only the service can tell a good one from a
//! forged one: when the service can't be asked (network, 5xx, garbage), registration fails with
//! a message to try again, never open.

use std::{net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};
use url::Url;

/// A whole verification gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the service gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// What the register page needs to show the widget.
#[derive(Debug, Clone, Serialize)]
pub struct Widget {
    pub script: &'static str,
    pub class: &'static str,
    pub site_key: String,
}

impl CaptchaSettings {
    pub fn widget(&self) -> Option<Widget> {
        Some(Widget {
            script: self.service.script_url()?,
            class: self.service.widget_class()?,
            site_key: self.site_key.clone(),
        })
    }

    /// `csp` (as [`crate::web::csp`] writes it) with this service's sources added.
    pub fn extend_csp(&self, csp: &str) -> String {
        extend_csp(csp, self.service.csp_sources())
    }
}

/// Adds sources to directives of a CSP: appended to a directive that is there (replacing a
/// lone `'none'`), or added as a new directive. With `default-src 'none'`, a directive that
/// is not there allows nothing, so adding it only allows what is added.
pub fn extend_csp(csp: &str, additions: &[(&str, &str)]) -> String {
    let mut directives: Vec<(String, Vec<String>)> = csp
        .split(';')
        .filter_map(|d| {
            let mut parts = d.split_whitespace();
            let name = parts.next()?.to_owned();
            Some((name, parts.map(str::to_owned).collect()))
        })
        .collect();
    for (name, sources) in additions {
        let at = match directives.iter().position(|(n, _)| n == name) {
            Some(at) => at,
            None => {
                directives.push(((*name).to_owned(), Vec::new()));
                directives.len() - 1
            }
        };
        let values = &mut directives[at].1;
        values.retain(|v| v != "'none'");
        for source in sources.split_whitespace() {
            if !values.iter().any(|v| v == source) {
                values.push(source.to_owned());
            }
        }
    }
    directives
        .into_iter()
        .map(|(name, values)| {
            if values.is_empty() {
                name
            } else {
                format!("{name} {}", values.join(" "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a captcha response was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CaptchaError {
    /// The form carries no response: the visitor didn't solve the challenge (or the script
    /// didn't load).
    #[error("no captcha response in the form")]
    Missing,
    /// The service says no (`success: false`): wrong, expired or reused token.
    #[error("the captcha service refused the response: {}", codes.join(", "))]
    Refused { codes: Vec<String> },
    /// The service couldn't be asked, or answered something else than its verdict.
    #[error("the captcha service can't be reached: {0}")]
    Unavailable(String),
}

/// The siteverify answer (the same shape for the three services; unknown members ignored).
#[derive(Debug, Deserialize)]
struct SiteverifyAnswer {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

/// Verifies captcha responses with the configured service.
#[derive(Debug, Clone)]
pub struct CaptchaVerifier {
    settings: CaptchaSettings,
    client: reqwest::Client,
}

impl CaptchaVerifier {
    pub fn new(settings: CaptchaSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The verdict comes from the configured URL only.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "can't build the captcha HTTP client; using the default one");
                reqwest::Client::new()
            });
        Self { settings, client }
    }

    pub fn settings(&self) -> &CaptchaSettings {
        &self.settings
    }

    /// Asks the service about a response token; `Ok(())` only on `success: true`.
    pub async fn verify(
        &self,
        response: Option<&str>,
        remote_ip: Option<IpAddr>,
    ) -> Result<(), CaptchaError> {
        let response = response
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or(CaptchaError::Missing)?;
        let mut form = vec![
            ("secret", self.settings.secret_key.clone()),
            ("response", response.to_owned()),
        ];
        if let Some(ip) = remote_ip {
            form.push(("remoteip", ip.to_string()));
        }
        let answer = self
            .client
            .post(self.settings.verify_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| CaptchaError::Unavailable(e.without_url().to_string()))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(CaptchaError::Unavailable(format!("HTTP {status}")));
        }
        let verdict: SiteverifyAnswer = answer
            .json()
            .await
            .map_err(|e| CaptchaError::Unavailable(format!("unreadable answer: {e}")))?;
        if verdict.success {
            Ok(())
        } else {
            Err(CaptchaError::Refused {
                codes: verdict.error_codes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_gets_the_service_sources() {
        let base = crate::web::csp("'self'", None);
        let csp = extend_csp(&base, CaptchaService::Turnstile.csp_sources());
        assert!(
            csp.contains("script-src https://challenges.cloudflare.com;"),
            "{csp}"
        );
        assert!(
            csp.contains("frame-src https://challenges.cloudflare.com"),
            "{csp}"
        );
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");

        let csp = extend_csp(&base, CaptchaService::Hcaptcha.csp_sources());
        assert!(
            csp.contains("style-src 'self' https://hcaptcha.com https://*.hcaptcha.com"),
            "{csp}"
        );
        assert!(csp.contains("connect-src https://hcaptcha.com"), "{csp}");

        let hashed = crate::web::csp("'self'", Some("sha256-abc"));
        let csp = extend_csp(&hashed, CaptchaService::RecaptchaV2.csp_sources());
        assert!(
            csp.contains("script-src 'sha256-abc' https://www.google.com/recaptcha/"),
            "{csp}"
        );
        // Nothing to add: unchanged.
        assert_eq!(extend_csp(&base, &[]), base);
    }

    #[test]
    fn every_service_is_described() {
        for service in [
            CaptchaService::Hcaptcha,
            CaptchaService::RecaptchaV2,
            CaptchaService::Turnstile,
        ] {
            assert!(service
                .default_verify_url()
                .unwrap()
                .starts_with("https://"));
            assert!(service.script_url().unwrap().starts_with("https://"));
            assert!(service.widget_class().is_some());
            assert!(service.response_field().is_some());
            assert!(!service.csp_sources().is_empty());
        }
        assert_eq!(CaptchaService::None.response_field(), None);
    }
}
