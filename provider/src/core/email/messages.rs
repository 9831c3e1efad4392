//! What the provider's mails say: each one rendered from `templates/emails/` in plain text and
//! HTML. Subjects never hold the code or the link, so logging a subject leaks nothing.

use super::{Mail, MailError};
use crate::core::{
    accounts::emails::{CODE_LIFETIME_MINUTES, RECOVERY_LIFETIME_MINUTES},
    templates::Templates,
    Core,
};

/// Who the mail is for and which site sends it.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// The address the mail goes to.
    pub to: &'a str,
    /// The account's username (a new account's, for a registration).
    pub username: &'a str,
    /// The site's name (the homeserver's server name).
    pub site_name: &'a str,
}

/// Why a verification code is mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodePurpose {
    /// An address added on the account page.
    AddEmail,
    /// The address a new account registers with (`account.password_registration_email_required`).
    Registration,
}

/// The mail with a verification code, valid `minutes`.
pub fn verification_code(
    templates: &Templates,
    recipient: Recipient<'_>,
    code: &str,
    minutes: i64,
    purpose: CodePurpose,
) -> Result<Mail, MailError> {
    let registration = purpose == CodePurpose::Registration;
    let context = minijinja::context! {
        site_name => recipient.site_name,
        username => recipient.username,
        email => recipient.to,
        code => code,
        minutes => minutes,
        registration => registration,
    };
    let subject = if registration {
        format!("Finish creating your account on {}", recipient.site_name)
    } else {
        format!("Confirm your email address for {}", recipient.site_name)
    };
    render(
        templates,
        "emails/verification",
        recipient.to,
        subject,
        context,
    )
}

/// The mail with a password recovery link, valid `minutes`.
pub fn password_recovery(
    templates: &Templates,
    recipient: Recipient<'_>,
    link: &str,
    minutes: i64,
) -> Result<Mail, MailError> {
    let context = minijinja::context! {
        site_name => recipient.site_name,
        username => recipient.username,
        link => link,
        minutes => minutes,
    };
    let subject = format!("Reset your password on {}", recipient.site_name);
    render(templates, "emails/recovery", recipient.to, subject, context)
}

/// Mails `code` (valid [`CODE_LIFETIME_MINUTES`]) to `to` for the account `username`, after
/// the commit that stored it; see [`deliver`].
pub async fn send_code(
    state: &Core,
    to: &str,
    username: &str,
    code: &str,
    purpose: CodePurpose,
) -> bool {
    let recipient = recipient(state, to, username);
    let mail = verification_code(
        &state.templates,
        recipient,
        code,
        CODE_LIFETIME_MINUTES,
        purpose,
    );
    deliver(state, recipient, mail).await
}

/// Mails a password recovery `link` (valid [`RECOVERY_LIFETIME_MINUTES`]) to `to` for the
/// account `username`, after the commit that stored its ticket; see [`deliver`].
pub async fn send_recovery_link(state: &Core, to: &str, username: &str, link: &str) -> bool {
    let recipient = recipient(state, to, username);
    let mail = password_recovery(&state.templates, recipient, link, RECOVERY_LIFETIME_MINUTES);
    deliver(state, recipient, mail).await
}

/// The provider's site is the homeserver's server name.
fn recipient<'a>(state: &'a Core, to: &'a str, username: &'a str) -> Recipient<'a> {
    Recipient {
        to,
        username,
        site_name: &state.settings.matrix.homeserver,
    }
}

/// Sends a rendered mail with the provider's mailer. A failure (of the template or the
/// transport) is logged, never with the body, and `false`: what the mail is about stays, and the
/// user may ask again.
async fn deliver(state: &Core, recipient: Recipient<'_>, mail: Result<Mail, MailError>) -> bool {
    let sent = match mail {
        Ok(mail) => state.mailer.send(mail).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(user = %recipient.username, error = %e, "email: can't send a mail");
            false
        }
    }
}

/// Renders `<name>.txt` and `<name>.html` (a template that fails is logged by
/// [`Templates::render`]; tests rule it out).
fn render(
    templates: &Templates,
    name: &str,
    to: &str,
    subject: String,
    context: minijinja::Value,
) -> Result<Mail, MailError> {
    let text = templates.render(&format!("{name}.txt"), &context);
    let html = templates.render(&format!("{name}.html"), &context);
    match (text, html) {
        (Some(text), Some(html)) => Ok(Mail {
            to: to.to_owned(),
            subject,
            text,
            html,
        }),
        _ => Err(MailError::Build(format!("the template {name} failed"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient() -> Recipient<'static> {
        Recipient {
            to: "bob@example.org",
            username: "bob",
            site_name: "example.org",
        }
    }

    #[test]
    fn the_code_mail_says_the_code_in_both_parts() {
        let t = Templates::new();
        let mail = verification_code(&t, recipient(), "042137", 15, CodePurpose::AddEmail).unwrap();
        assert_eq!(mail.to, "bob@example.org");
        assert_eq!(mail.subject, "Confirm your email address for example.org");
        assert!(!mail.subject.contains("042137"));
        assert!(mail.text.contains("    042137\n"), "{}", mail.text);
        assert!(mail
            .text
            .contains("To add bob@example.org to the account bob"));
        assert!(mail.text.contains("for 15 minutes"));
        assert!(mail.html.contains(">042137</p>"), "{}", mail.html);
        let mail =
            verification_code(&t, recipient(), "000001", 15, CodePurpose::Registration).unwrap();
        assert!(mail.subject.starts_with("Finish creating your account"));
        assert!(mail.text.contains("To create the account bob"));
    }

    #[test]
    fn the_recovery_mail_holds_the_link_and_escapes_html() {
        let t = Templates::new();
        let hostile = Recipient {
            username: "<b>eve</b>",
            ..recipient()
        };
        let link = "https://auth.example.org/recover/abc?x=1&y=2";
        let mail = password_recovery(&t, hostile, link, 60).unwrap();
        assert!(
            mail.text.contains(&format!("    {link}\n")),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("<b>eve</b>"), "text is not escaped");
        assert!(mail.html.contains("&lt;b&gt;eve&lt;"), "{}", mail.html);
        assert!(mail.html.contains("x=1&amp;y=2"), "{}", mail.html);
        assert_eq!(mail.subject, "Reset your password on example.org");
    }
}
