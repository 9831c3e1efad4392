//! The `smtp` transport: [`lettre`]'s async SMTP client on tokio, TLS by rustls (ring provider,
//! the Mozilla roots plus the configured `ca_certificate_file`), no native TLS.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lettre::{
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
        extension::ClientId,
    },
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};
use rand::RngCore;

use super::{Mail, MailError};
use crate::{
    config::{SmtpMode, SmtpSettings},
    domain::token::random_code,
};

/// A relay that doesn't answer within this long fails the send (the user is waiting).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A configured relay. Each send opens its own connection: mail is rare (a code, a link), and a
/// pooled connection a relay closed meanwhile would fail the next send.
pub(super) struct Relay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Relay {
    pub(super) fn new(settings: &SmtpSettings, hello_name: &str) -> Result<Self, MailError> {
        let tls = match settings.mode {
            // RFC 3207: STARTTLS, required: a relay that doesn't offer it fails the send
            // rather than receiving the mail in the clear.
            SmtpMode::Starttls => Tls::Required(tls_parameters(settings)?),
            // RFC 8314 §3.3: TLS from the first byte.
            SmtpMode::Tls => Tls::Wrapper(tls_parameters(settings)?),
            // Loopback only (checked with the configuration).
            SmtpMode::Plain => Tls::None,
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.hostname.as_str())
                .port(settings.port)
                .tls(tls)
                .timeout(Some(TIMEOUT))
                .hello_name(ClientId::Domain(hello_name.to_owned()));
        if let Some((username, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
        })
    }

    pub(super) async fn send(&self, message: Message) -> Result<(), MailError> {
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| MailError::Smtp(e.to_string()))
    }
}

/// TLS towards the relay: its name checked against its certificate, trusted by the public
/// roots or by the configured extra authorities.
fn tls_parameters(settings: &SmtpSettings) -> Result<TlsParameters, MailError> {
    let mut builder = TlsParameters::builder(settings.hostname.clone());
    if let Some(pem) = &settings.ca_certificates {
        builder = builder.add_root_certificate(certificate(pem)?);
    }
    builder
        .build_rustls()
        .map_err(|e| MailError::Misconfigured(e.to_string()))
}

fn certificate(pem: &str) -> Result<Certificate, MailError> {
    Certificate::from_pem(pem.as_bytes()).map_err(|e| {
        MailError::Misconfigured(format!("the certificate authorities don't parse: {e}"))
    })
}

/// The message on the wire: `multipart/alternative` with the text first and the HTML last
/// (RFC 2046 §5.1.4: the last part is the preferred one), dated by the injected clock, with a
/// `Message-ID` on the sender's domain (RFC 5322 §3.6.4).
pub(super) fn message(
    from: &Mailbox,
    to: Mailbox,
    mail: &Mail,
    now: DateTime<Utc>,
    rng: &mut impl RngCore,
) -> Result<Message, MailError> {
    let id = format!("<{}@{}>", random_code(rng, 24), from.email.domain());
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .date(SystemTime::from(now))
        .message_id(Some(id))
        .multipart(MultiPart::alternative_plain_html(
            mail.text.clone(),
            mail.html.clone(),
        ))
        .map_err(|e| MailError::Build(e.to_string()))
}
