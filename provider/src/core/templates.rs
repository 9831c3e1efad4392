//! The templates (`templates/pages/`, `templates/emails/`), compiled into the binary once and
//! shared by the pages (the http layer) and the mails ([`crate::core::email`]).

use minijinja::Environment;
use serde::Serialize;

/// The page templates, compiled once.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, source) in [
            (
                "pages/base.html",
                include_str!("../../../templates/pages/base.html"),
            ),
            (
                "pages/error.html",
                include_str!("../../../templates/pages/error.html"),
            ),
            (
                "pages/form_post.html",
                include_str!("../../../templates/pages/form_post.html"),
            ),
            (
                "pages/authorize_error.html",
                include_str!("../../../templates/pages/authorize_error.html"),
            ),
            (
                "pages/login.html",
                include_str!("../../../templates/pages/login.html"),
            ),
            (
                "pages/consent.html",
                include_str!("../../../templates/pages/consent.html"),
            ),
            (
                "pages/link.html",
                include_str!("../../../templates/pages/link.html"),
            ),
            (
                "pages/link_approve.html",
                include_str!("../../../templates/pages/link_approve.html"),
            ),
            (
                "pages/signed_in.html",
                include_str!("../../../templates/pages/signed_in.html"),
            ),
            (
                "pages/logout.html",
                include_str!("../../../templates/pages/logout.html"),
            ),
            (
                "pages/signed_out.html",
                include_str!("../../../templates/pages/signed_out.html"),
            ),
            (
                "pages/register.html",
                include_str!("../../../templates/pages/register.html"),
            ),
            (
                "pages/compat_sso.html",
                include_str!("../../../templates/pages/compat_sso.html"),
            ),
            (
                "pages/account_base.html",
                include_str!("../../../templates/pages/account_base.html"),
            ),
            (
                "pages/account.html",
                include_str!("../../../templates/pages/account.html"),
            ),
            (
                "pages/account_devices.html",
                include_str!("../../../templates/pages/account_devices.html"),
            ),
            (
                "pages/account_device.html",
                include_str!("../../../templates/pages/account_device.html"),
            ),
            (
                "pages/account_cross_signing.html",
                include_str!("../../../templates/pages/account_cross_signing.html"),
            ),
            (
                "pages/account_deactivate.html",
                include_str!("../../../templates/pages/account_deactivate.html"),
            ),
            (
                "pages/account_deactivated.html",
                include_str!("../../../templates/pages/account_deactivated.html"),
            ),
            (
                "pages/account_emails.html",
                include_str!("../../../templates/pages/account_emails.html"),
            ),
            (
                "pages/account_password.html",
                include_str!("../../../templates/pages/account_password.html"),
            ),
            (
                "pages/account_refused.html",
                include_str!("../../../templates/pages/account_refused.html"),
            ),
            (
                "pages/recover.html",
                include_str!("../../../templates/pages/recover.html"),
            ),
            (
                "pages/recover_reset.html",
                include_str!("../../../templates/pages/recover_reset.html"),
            ),
            (
                "pages/recover_done.html",
                include_str!("../../../templates/pages/recover_done.html"),
            ),
            (
                "pages/register_verify.html",
                include_str!("../../../templates/pages/register_verify.html"),
            ),
            (
                "emails/base.html",
                include_str!("../../../templates/emails/base.html"),
            ),
            (
                "emails/verification.html",
                include_str!("../../../templates/emails/verification.html"),
            ),
            (
                "emails/verification.txt",
                include_str!("../../../templates/emails/verification.txt"),
            ),
            (
                "emails/recovery.html",
                include_str!("../../../templates/emails/recovery.html"),
            ),
            (
                "emails/recovery.txt",
                include_str!("../../../templates/emails/recovery.txt"),
            ),
            (
                "pages/upstream_buttons.html",
                include_str!("../../../templates/pages/upstream_buttons.html"),
            ),
            (
                "pages/upstream_continue.html",
                include_str!("../../../templates/pages/upstream_continue.html"),
            ),
            (
                "pages/upstream_link.html",
                include_str!("../../../templates/pages/upstream_link.html"),
            ),
            (
                "pages/upstream_linked.html",
                include_str!("../../../templates/pages/upstream_linked.html"),
            ),
            (
                "pages/upstream_unlink.html",
                include_str!("../../../templates/pages/upstream_unlink.html"),
            ),
        ] {
            // The templates are part of the binary and covered by tests: a syntax error is a
            // build defect, reported when the page is rendered.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "template does not compile");
            }
        }
        Self { env }
    }

    /// Renders a page; `None` (logged) if the template fails, which tests rule out.
    pub fn render(&self, name: &str, context: impl Serialize) -> Option<String> {
        let result = self
            .env
            .get_template(name)
            .and_then(|template| template.render(context));
        match result {
            Ok(html) => Some(html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "template failed to render");
                None
            }
        }
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}
