//! Bot protection on the registration page: hCaptcha, reCAPTCHA v2 or Cloudflare Turnstile
//! (the `captcha` section of the configuration).
//!
//! All three work alike: the page loads the service's script, which renders a widget from the
//! site key and, once the visitor passes it, puts a one-time response token into a hidden form
//! field. The provider then asks the service whether that token is good with a form `POST` of
//! `secret`, `response` and (optionally) `remoteip` to its "siteverify" endpoint, and reads
//! `success` from the JSON answer. The service's script and frames must be allowed by the
//! page's Content-Security-Policy:
//! [`CaptchaService::csp_sources`](crate::config::captcha::CaptchaService::csp_sources).
//!
//! A token is good for one verification only, and only the service can tell a good one from a
//! forged one: when the service can't be asked (network, 5xx, garbage), registration fails with
//! a message to try again, never open.

use std::{net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

/// A whole verification gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the service gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

use crate::config::captcha::CaptchaSettings;

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

    /// A page's CSP (as the http layer's kit writes it) with this service's sources added.
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
    use crate::config::captcha::CaptchaService;

    #[test]
    fn csp_gets_the_service_sources() {
        // A CSP shaped like a page's (the register page's real one, written by the http kit
        // and extended here, is checked end to end: tests/registration_controls.rs).
        let base = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'none'; \
                    form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            .to_owned();
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

        let hashed = base.replace("script-src 'none'", "script-src 'sha256-abc'");
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
