//! The controls an operator may put in front of self-service registration (`/register`):
//!
//! - a **registration token** (`account.registration_token_required`): one issued by an
//!   administrator, valid (not revoked, not expired, under its usage limit), whose use is
//!   counted in the transaction that creates the user, so a registration that fails afterwards
//!   gives it back, and two registrations racing for its last use can't both get it;
//! - **terms of service** (`account.terms_of_service_url`): a required checkbox linking them;
//!   the acceptance (URL and time) is recorded with the new user;
//! - a **captcha** (`captcha`, see [`crate::core::captcha`]): verified with the service before any
//!   other work (password hashing, asking the homeserver), so bots don't get that far.
//!
//! [`check`] runs before the account is created and tells the visitor what is missing;
//! [`Passed::apply`] runs inside the creating transaction.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::{
    core::captcha::{CaptchaError, Widget},
    http::AppState,
    storage::{BoxRepository, RegistrationTokenInvalid, StorageError},
};

/// The form fields of the controls (flattened into the registration form).
#[derive(Debug, Default, Deserialize)]
pub struct ControlsForm {
    #[serde(default)]
    registration_token: Option<String>,
    /// The terms checkbox: present (whatever its value) when ticked.
    #[serde(default)]
    accept_terms: Option<String>,
    /// Where each service's widget puts its response token.
    #[serde(default, rename = "h-captcha-response")]
    h_captcha_response: Option<String>,
    #[serde(default, rename = "g-recaptcha-response")]
    g_recaptcha_response: Option<String>,
    #[serde(default, rename = "cf-turnstile-response")]
    cf_turnstile_response: Option<String>,
}

impl ControlsForm {
    fn token(&self) -> &str {
        self.registration_token.as_deref().map_or("", str::trim)
    }

    fn captcha_response(&self, field: &str) -> Option<&str> {
        match field {
            "h-captcha-response" => self.h_captcha_response.as_deref(),
            "g-recaptcha-response" => self.g_recaptcha_response.as_deref(),
            "cf-turnstile-response" => self.cf_turnstile_response.as_deref(),
            _ => None,
        }
    }
}

/// What the register page shows of the controls (the `controls` of its template).
#[derive(Debug, Serialize)]
pub struct PageControls {
    token_required: bool,
    /// The token typed so far, kept when the form comes back with an error.
    token: String,
    terms_url: Option<String>,
    terms_accepted: bool,
    captcha: Option<Widget>,
}

/// The controls of the register page, refilled from `form` when it comes back.
pub fn page_controls(state: &AppState, form: Option<&ControlsForm>) -> PageControls {
    let settings = &state.settings;
    PageControls {
        token_required: settings.account.registration_token_required,
        token: form.map(|f| f.token().to_owned()).unwrap_or_default(),
        terms_url: settings
            .terms_of_service_url
            .as_ref()
            .map(|u| u.to_string()),
        terms_accepted: form.is_some_and(|f| f.accept_terms.is_some()),
        captcha: settings.captcha.as_ref().and_then(|c| c.widget()),
    }
}

/// The register page's CSP: `csp` plus, when a captcha is configured, its service's script,
/// frame (and for hCaptcha style and API) origins.
pub fn page_csp(state: &AppState, csp: &str) -> String {
    match &state.settings.captcha {
        Some(captcha) => captcha.extend_csp(csp),
        None => csp.to_owned(),
    }
}

/// What [`check`] found good, to be applied in the creating transaction.
#[derive(Debug, Default)]
pub struct Passed {
    /// The registration token to count a use of.
    token: Option<Ulid>,
    /// The terms accepted.
    terms_url: Option<String>,
}

fn token_refusal(reason: Option<RegistrationTokenInvalid>) -> String {
    match reason {
        None => {
            "This registration token is not valid. Check it, or ask the administrators for one."
        }
        Some(RegistrationTokenInvalid::Revoked) => {
            "This registration token has been revoked. Ask the administrators for another one."
        }
        Some(RegistrationTokenInvalid::Expired) => {
            "This registration token has expired. Ask the administrators for another one."
        }
        Some(RegistrationTokenInvalid::UsedUp) => {
            "This registration token has been used up. Ask the administrators for another one."
        }
    }
    .to_owned()
}

/// Checks the controls the configuration asks for, cheapest first: the terms box, the
/// registration token (looked up, not yet counted), then the captcha (verified with the
/// service, which uses up its response). `Ok(Err(message))` tells the visitor what to fix.
pub async fn check(
    state: &AppState,
    form: &ControlsForm,
    remote_ip: Option<IpAddr>,
) -> Result<Result<Passed, String>, StorageError> {
    let settings = &state.settings;
    let mut passed = Passed::default();
    if let Some(terms) = &settings.terms_of_service_url {
        if form.accept_terms.is_none() {
            return Ok(Err(
                "Accept the terms of service to create an account.".to_owned()
            ));
        }
        passed.terms_url = Some(terms.to_string());
    }
    if settings.account.registration_token_required {
        let token = form.token();
        if token.is_empty() {
            return Ok(Err(
                "A registration token is required to create an account here. Ask the administrators for one."
                    .to_owned(),
            ));
        }
        let found = state
            .storage
            .reader()
            .await?
            .registration_tokens()
            .find_by_token(token)
            .await?;
        let now = state.storage.entropy().clock.now();
        match found {
            None => return Ok(Err(token_refusal(None))),
            Some(t) => match t.invalid_reason(now) {
                Some(reason) => return Ok(Err(token_refusal(Some(reason)))),
                None => passed.token = Some(t.id),
            },
        }
    }
    if let Some(verifier) = &state.captcha {
        let response = verifier
            .settings()
            .service
            .response_field()
            .and_then(|field| form.captcha_response(field));
        match verifier.verify(response, remote_ip).await {
            Ok(()) => {}
            Err(CaptchaError::Missing) => {
                return Ok(Err(
                    "Complete the captcha to show you are not a robot.".to_owned()
                ))
            }
            Err(CaptchaError::Refused { codes }) => {
                tracing::info!(
                    ?codes,
                    "registration: the captcha service refused the response"
                );
                return Ok(Err("The captcha was not solved. Try it again.".to_owned()));
            }
            Err(e @ CaptchaError::Unavailable(_)) => {
                tracing::error!(error = %e, "registration: can't verify the captcha");
                return Ok(Err(
                    "The captcha can't be checked right now. Try again in a moment.".to_owned(),
                ));
            }
        }
    }
    Ok(Ok(passed))
}

impl Passed {
    /// In the transaction that created `user_id`: counts the token's use (refused when it was
    /// used up, revoked or expired since [`check`]: the caller then rolls back, so nothing of
    /// the registration stays) and records the accepted terms. `now` is the request's time.
    pub async fn apply(
        &self,
        repo: &mut BoxRepository,
        user_id: Ulid,
        now: DateTime<Utc>,
    ) -> Result<Result<(), String>, StorageError> {
        if let Some(token) = self.token {
            match repo.registration_tokens().use_token(token).await {
                Ok(true) => {}
                Ok(false) => {
                    // Changed since `check`: most likely another registration took its last use.
                    let reason = repo.registration_tokens().lookup(token).await?.map(|t| {
                        t.invalid_reason(now)
                            .unwrap_or(RegistrationTokenInvalid::UsedUp)
                    });
                    return Ok(Err(token_refusal(reason)));
                }
                Err(StorageError::NotFound(_)) => return Ok(Err(token_refusal(None))),
                Err(e) => return Err(e),
            }
        }
        if let Some(terms) = &self.terms_url {
            repo.user_terms().accept(user_id, terms).await?;
        }
        Ok(Ok(()))
    }
}

// Kept with a registration that waits for the code mailed to its address
// (`account.password_registration_email_required`, see `super::register_verify`), and applied
// when the code is entered.
impl Passed {
    /// The registration token to count and the terms accepted, to keep until the account is
    /// created.
    pub fn parts(&self) -> (Option<Ulid>, Option<&str>) {
        (self.token, self.terms_url.as_deref())
    }

    /// [`Passed`] again from its [`Passed::parts`].
    pub fn from_parts(token: Option<Ulid>, terms_url: Option<String>) -> Self {
        Self { token, terms_url }
    }
}
