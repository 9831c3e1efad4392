//! Outgoing mail: the verification codes and password recovery links the account pages send.
//!
//! One [`Mailer`] per process (in `Core` as `state.mailer`), with the transport the `email`
//! section of the configuration chooses:
//!
//! - `smtp`: through a relay, with [`lettre`] over rustls ([`smtp`]): STARTTLS required
//!   (RFC 3207), implicit TLS (RFC 8314 §3.3), or no TLS to a relay on loopback only;
//! - `capture`: kept in memory, in a [`MailBox`] the playground's mailbox page and the tests read;
//! - `none` (the default): dropped, and logged without its body (which holds codes and links).
//!
//! Callers send a mail only after the transaction that made its code or ticket has committed,
//! so a mail never names something that doesn't exist; a failed send is logged and told to the
//! user (who can ask again), and loses nothing. Mail is not queued in the job table: its body
//! holds the code or link in clear, which the database only ever keeps hashed.
//!
//! What each mail says lives in [`messages`], rendered from `templates/emails/` (text and HTML).

pub mod messages;
mod smtp;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use lettre::{message::Mailbox, Address};
use serde::Serialize;

use crate::{
    clock::Entropy,
    config::{EmailSettings, EmailTransport},
};

/// The longest address accepted (RFC 5321 §4.5.3.1.3: a path is at most 256 octets, with its
/// angle brackets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// How many mails a [`MailBox`] keeps: the oldest go first.
pub const MAILBOX_CAPACITY: usize = 500;

/// One mail to send: to one address, in plain text and HTML (`multipart/alternative`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A mail the `capture` transport kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentMail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub sent_at: DateTime<Utc>,
}

/// The mails the `capture` transport kept, oldest first, up to [`MAILBOX_CAPACITY`]. Clones
/// share the same mails.
#[derive(Debug, Clone, Default)]
pub struct MailBox {
    mails: Arc<Mutex<VecDeque<SentMail>>>,
}

impl MailBox {
    /// Every mail kept, oldest first.
    pub fn list(&self) -> Vec<SentMail> {
        self.lock().iter().cloned().collect()
    }

    /// The mails sent to `to` (compared without regard to case), oldest first.
    pub fn to(&self, to: &str) -> Vec<SentMail> {
        self.lock()
            .iter()
            .filter(|m| m.to.eq_ignore_ascii_case(to))
            .cloned()
            .collect()
    }

    /// How many mails are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record(&self, mail: SentMail) {
        let mut mails = self.lock();
        if mails.len() >= MAILBOX_CAPACITY {
            mails.pop_front();
        }
        mails.push_back(mail);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SentMail>> {
        // Only ever held for a push or a copy: a poisoned lock still holds whole mails.
        self.mails.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("`{0}` is not a valid mail address")]
    Address(String),
    #[error("the mail could not be built: {0}")]
    Build(String),
    #[error("the SMTP relay refused or failed: {0}")]
    Smtp(String),
    #[error("the mail transport is misconfigured: {0}")]
    Misconfigured(String),
}

enum Transport {
    None,
    Capture(MailBox),
    Smtp(smtp::Relay),
    /// An SMTP relay whose TLS settings could not be built (configuration validation rules
    /// this out): every send fails with this reason.
    Broken(String),
}

/// Sends mail with the configured transport. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: Arc<Transport>,
    /// The sender (`From`), already checked.
    from: Mailbox,
    /// Stamps captured mails and the `Date` header; makes `Message-ID`s.
    entropy: Entropy,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.transport.as_ref() {
            Transport::None => "none",
            Transport::Capture(_) => "capture",
            Transport::Smtp(_) => "smtp",
            Transport::Broken(_) => "smtp (misconfigured)",
        };
        f.debug_struct("Mailer")
            .field("transport", &transport)
            .field("from", &self.from.to_string())
            .finish()
    }
}

/// The sender when none is configured or the configured one doesn't parse (a valid address:
/// `noreply` and `localhost` are both well-formed).
fn fallback_from() -> Mailbox {
    Mailbox::new(None, Address::new_dangerous("noreply", "localhost"))
}

impl Mailer {
    /// The mailer the validated `email` settings describe. `hello_name` is the name the
    /// provider gives itself to the relay (SMTP `EHLO`, RFC 5321 §4.1.1.1): the issuer's host.
    pub fn from_settings(settings: &EmailSettings, hello_name: &str, entropy: Entropy) -> Self {
        let from = settings.from.parse().unwrap_or_else(|_| fallback_from());
        let transport = match &settings.transport {
            EmailTransport::None => Transport::None,
            EmailTransport::Capture => Transport::Capture(MailBox::default()),
            EmailTransport::Smtp(smtp) => match smtp::Relay::new(smtp, hello_name) {
                Ok(relay) => Transport::Smtp(relay),
                Err(why) => {
                    tracing::error!(error = %why, "email: the SMTP relay can't be set up; no mail will be sent");
                    Transport::Broken(why.to_string())
                }
            },
        };
        Self {
            transport: Arc::new(transport),
            from,
            entropy,
        }
    }

    /// A mailer that drops every mail (logging it).
    pub fn none() -> Self {
        Self {
            transport: Arc::new(Transport::None),
            from: fallback_from(),
            entropy: Entropy::system(),
        }
    }

    /// A mailer that keeps every mail in the returned [`MailBox`].
    pub fn capture() -> (Mailer, MailBox) {
        let mailbox = MailBox::default();
        let mailer = Self {
            transport: Arc::new(Transport::Capture(mailbox.clone())),
            from: fallback_from(),
            entropy: Entropy::system(),
        };
        (mailer, mailbox)
    }

    /// The mails kept, with the `capture` transport.
    pub fn mailbox(&self) -> Option<MailBox> {
        match self.transport.as_ref() {
            Transport::Capture(mailbox) => Some(mailbox.clone()),
            _ => None,
        }
    }

    /// Does mail go anywhere? (`false` with the `none` transport: features that need a mail
    /// to arrive are hidden then.)
    pub fn delivers(&self) -> bool {
        !matches!(self.transport.as_ref(), Transport::None)
    }

    /// Sends one mail now. The caller has committed whatever the mail is about; on failure it
    /// logs and tells the user, who may ask again.
    pub async fn send(&self, mail: Mail) -> Result<(), MailError> {
        let to = parse_address(&mail.to)?;
        match self.transport.as_ref() {
            Transport::None => {
                // The body holds a code or a link: never logged.
                tracing::info!(to = %mail.to, subject = %mail.subject, "email: not sent (email.transport is none)");
                Ok(())
            }
            Transport::Capture(mailbox) => {
                mailbox.record(SentMail {
                    from: self.from.to_string(),
                    to: to.to_string(),
                    subject: mail.subject,
                    text: mail.text,
                    html: mail.html,
                    sent_at: self.entropy.clock.now(),
                });
                Ok(())
            }
            Transport::Smtp(relay) => {
                let message = smtp::message(
                    &self.from,
                    Mailbox::new(None, to),
                    &mail,
                    self.entropy.clock.now(),
                    &mut self.entropy.rng.rng(),
                )?;
                relay.send(message).await?;
                tracing::info!(to = %mail.to, subject = %mail.subject, "email: sent");
                Ok(())
            }
            Transport::Broken(why) => Err(MailError::Misconfigured(why.clone())),
        }
    }
}

/// An address as a user typed it, checked and normalised: trimmed, at most
/// [`MAX_ADDRESS_LEN`] characters, a valid `local@domain` (RFC 5321 §4.1.2) with the domain in
/// lower case (domains are case-insensitive, RFC 5321 §2.4; the local part is left as typed).
/// This is the form stored and compared.
pub fn normalize_address(value: &str) -> Result<String, MailError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_ADDRESS_LEN {
        return Err(MailError::Address(value.chars().take(80).collect()));
    }
    let address = parse_address(value)?;
    Ok(format!(
        "{}@{}",
        address.user(),
        address.domain().to_ascii_lowercase()
    ))
}

fn parse_address(value: &str) -> Result<Address, MailError> {
    value
        .parse::<Address>()
        .map_err(|_| MailError::Address(value.chars().take(80).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::email::check_mailbox;

    fn mail(to: &str) -> Mail {
        Mail {
            to: to.into(),
            subject: "S".into(),
            text: "T".into(),
            html: "<p>H</p>".into(),
        }
    }

    #[test]
    fn addresses_are_checked_and_normalised() {
        assert_eq!(
            normalize_address("  Alice@Example.ORG ").unwrap(),
            "Alice@example.org"
        );
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.org",
            "a b@example.org",
            "alice@exa mple.org",
        ] {
            assert!(normalize_address(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(normalize_address(&long).is_err());
        assert!(check_mailbox("Matrix <noreply@example.org>").is_ok());
        assert!(check_mailbox("noreply@localhost").is_ok());
        assert!(check_mailbox("not an address").is_err());
    }

    #[tokio::test]
    async fn the_capture_transport_keeps_mail_and_none_drops_it() {
        let (mailer, mailbox) = Mailer::capture();
        assert!(mailer.delivers());
        mailer.send(mail("bob@example.org")).await.unwrap();
        mailer.send(mail("carol@example.org")).await.unwrap();
        assert_eq!(mailbox.len(), 2);
        assert_eq!(mailbox.list()[0].to, "bob@example.org");
        assert_eq!(mailbox.to("BOB@example.org").len(), 1);
        assert_eq!(mailer.mailbox().unwrap().len(), 2, "the same mailbox");
        assert!(matches!(
            mailer.send(mail("nobody")).await,
            Err(MailError::Address(_))
        ));

        let none = Mailer::none();
        assert!(!none.delivers());
        assert!(none.mailbox().is_none());
        none.send(mail("bob@example.org")).await.unwrap();
    }

    #[tokio::test]
    async fn the_mailbox_keeps_the_newest() {
        let (mailer, mailbox) = Mailer::capture();
        for i in 0..MAILBOX_CAPACITY + 3 {
            mailer
                .send(mail(&format!("u{i}@example.org")))
                .await
                .unwrap();
        }
        let kept = mailbox.list();
        assert_eq!(kept.len(), MAILBOX_CAPACITY);
        assert_eq!(kept[0].to, "u3@example.org");
    }
}
