//! The `email` section: how the provider sends mail (verification codes, password recovery
//! links), checked with the mail stack's own parsers. The mail itself is [`crate::core::email`].

use std::path::{Path, PathBuf};

use lettre::{message::Mailbox, transport::smtp::client::Certificate};
use serde::{Deserialize, Serialize};

use super::{is_loopback_host, Problem};

/// How the provider sends mail (verification codes, password recovery links).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmailConfig {
    /// `none` (mail is dropped and logged: the default), `smtp`, or `capture` (kept in memory
    /// for the playground and tests).
    #[serde(default)]
    pub transport: EmailTransportKind,
    /// The sender, `Name <address>` or a bare address; defaults to `noreply@<homeserver>`.
    #[serde(default)]
    pub from: Option<String>,
    /// `smtp`: the relay's host name (or address).
    #[serde(default)]
    pub hostname: Option<String>,
    /// `smtp`: the relay's port; defaults to 587 for `starttls`, 465 for `tls`, 25 for `plain`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `smtp`: how the connection is secured.
    #[serde(default)]
    pub mode: SmtpMode,
    /// `smtp`: credentials, both or neither (sent only over TLS, or on loopback).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// `smtp`: a PEM file of certificate authorities to trust besides the public ones (a relay
    /// with a private CA), relative to the config file.
    #[serde(default)]
    pub ca_certificate_file: Option<PathBuf>,
}

/// Where mail goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailTransportKind {
    /// Dropped (and logged without its secrets): nothing is sent.
    #[default]
    None,
    /// Sent through an SMTP relay.
    Smtp,
    /// Kept in memory (`Mailer::mailbox`): the playground's mailbox page, tests.
    Capture,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpMode {
    /// Plain connection upgraded with STARTTLS, which is required (RFC 3207): port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (RFC 8314 §3.3, "implicit TLS"): port 465.
    Tls,
    /// No TLS at all: only to a relay on this machine (loopback).
    Plain,
}

impl SmtpMode {
    /// The port of this mode when none is configured.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::Plain => 25,
        }
    }
}

/// The validated `email` section.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub transport: EmailTransport,
    /// The sender (`From`), checked to be a valid mailbox.
    pub from: String,
}

/// Where mail goes, with what each transport needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailTransport {
    None,
    Capture,
    Smtp(SmtpSettings),
}

/// A validated SMTP relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub hostname: String,
    pub port: u16,
    pub mode: SmtpMode,
    /// `(username, password)`.
    pub credentials: Option<(String, String)>,
    /// Extra trusted certificate authorities (PEM), read from `ca_certificate_file`.
    pub ca_certificates: Option<String>,
}

impl EmailSettings {
    /// Is mail actually delivered somewhere (a transport other than `none`)?
    pub fn delivers(&self) -> bool {
        self.transport != EmailTransport::None
    }
}

impl EmailConfig {
    /// Checks the section, reporting problems at `email.…`; the sender defaults to
    /// `noreply@<homeserver>` and `ca_certificate_file` is relative to `base_dir`.
    pub(super) fn resolve(
        &self,
        p: &mut Vec<Problem>,
        homeserver: &str,
        base_dir: &Path,
    ) -> Option<EmailSettings> {
        let e = self;
        let before = p.len();
        let from = e
            .from
            .clone()
            .unwrap_or_else(|| format!("noreply@{}", homeserver.trim()));
        if let Err(why) = check_mailbox(&from) {
            p.push(Problem::new(
                "email.from",
                format!("`{from}` is not a mail address like `Name <noreply@example.com>`: {why}"),
            ));
        }
        let smtp_only = [
            ("hostname", e.hostname.is_some()),
            ("port", e.port.is_some()),
            ("username", e.username.is_some()),
            ("password", e.password.is_some()),
            ("ca_certificate_file", e.ca_certificate_file.is_some()),
        ];
        let transport = match e.transport {
            EmailTransportKind::None | EmailTransportKind::Capture => {
                for (key, set) in smtp_only {
                    if set {
                        p.push(Problem::new(
                            format!("email.{key}"),
                            "only used by `transport: smtp`: remove it",
                        ));
                    }
                }
                if e.transport == EmailTransportKind::None {
                    EmailTransport::None
                } else {
                    EmailTransport::Capture
                }
            }
            EmailTransportKind::Smtp => {
                let hostname = e.hostname.clone().unwrap_or_default();
                if hostname.trim().is_empty() {
                    p.push(Problem::new(
                        "email.hostname",
                        "required by `transport: smtp`",
                    ));
                } else if e.mode == SmtpMode::Plain && !is_loopback_host(&hostname) {
                    // Without TLS the mail (recovery links) and the password cross the network
                    // in the clear: only a relay on this machine may be reached that way.
                    p.push(Problem::new(
                        "email.mode",
                        format!(
                            "`plain` (no TLS) is only allowed to a relay on loopback, not `{hostname}`: use `starttls` or `tls`"
                        ),
                    ));
                }
                if e.port == Some(0) {
                    p.push(Problem::new("email.port", "must be 1 to 65535"));
                }
                let credentials = match (&e.username, &e.password) {
                    (Some(user), Some(password)) => Some((user.clone(), password.clone())),
                    (None, None) => None,
                    (Some(_), None) => {
                        p.push(Problem::new("email.password", "required with `username`"));
                        None
                    }
                    (None, Some(_)) => {
                        p.push(Problem::new("email.username", "required with `password`"));
                        None
                    }
                };
                let ca_certificates = match &e.ca_certificate_file {
                    None => None,
                    Some(file) => {
                        let file = base_dir.join(file);
                        match std::fs::read_to_string(&file) {
                            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {
                                match check_ca_certificates(&pem) {
                                    Ok(()) => Some(pem),
                                    Err(why) => {
                                        p.push(Problem::new(
                                            "email.ca_certificate_file",
                                            format!("{}: {why}", file.display()),
                                        ));
                                        None
                                    }
                                }
                            }
                            Ok(_) => {
                                p.push(Problem::new(
                                    "email.ca_certificate_file",
                                    format!("{} holds no PEM certificate", file.display()),
                                ));
                                None
                            }
                            Err(err) => {
                                p.push(Problem::new(
                                    "email.ca_certificate_file",
                                    format!("can't read {}: {err}", file.display()),
                                ));
                                None
                            }
                        }
                    }
                };
                EmailTransport::Smtp(SmtpSettings {
                    hostname: hostname.trim().to_owned(),
                    port: e.port.unwrap_or_else(|| e.mode.default_port()),
                    mode: e.mode,
                    credentials,
                    ca_certificates,
                })
            }
        };
        (p.len() == before).then_some(EmailSettings { transport, from })
    }
}

/// Checks a configured sender: `Name <address>` or a bare address.
pub fn check_mailbox(value: &str) -> Result<(), String> {
    value
        .parse::<Mailbox>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checks the PEM of `email.ca_certificate_file` when the configuration is read.
pub fn check_ca_certificates(pem: &str) -> Result<(), String> {
    Certificate::from_pem(pem.as_bytes())
        .map(drop)
        .map_err(|e| {
            format!(
                "the mail transport is misconfigured: the certificate authorities don't parse: {e}"
            )
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{EmailTransport, SmtpMode};
    use crate::config::{parse, test_support::generated};

    fn parsed(env: &[(&str, &str)]) -> Result<crate::config::Settings, Vec<String>> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        parse(&generated(), env, Path::new("."))
            .map(|(_, settings)| settings)
            .map_err(|p| p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_sender_defaults_to_the_homeserver() {
        let settings = parsed(&[]).unwrap();
        assert_eq!(settings.email.from, "noreply@localhost");
        assert!(!settings.email.delivers());
    }

    #[test]
    fn smtp_settings_are_only_for_smtp() {
        assert_eq!(
            parsed(&[
                ("PROVIDER__EMAIL__TRANSPORT", "capture"),
                ("PROVIDER__EMAIL__HOSTNAME", "smtp.example.com"),
            ])
            .unwrap_err(),
            ["email.hostname: only used by `transport: smtp`: remove it"]
        );
    }

    #[test]
    fn smtp_needs_a_relay_tls_off_loopback_and_both_credentials() {
        assert_eq!(
            parsed(&[
                ("PROVIDER__EMAIL__TRANSPORT", "smtp"),
                ("PROVIDER__EMAIL__PASSWORD", "p"),
            ])
            .unwrap_err(),
            [
                "email.hostname: required by `transport: smtp`",
                "email.username: required with `password`",
            ]
        );
        assert_eq!(
            parsed(&[
                ("PROVIDER__EMAIL__TRANSPORT", "smtp"),
                ("PROVIDER__EMAIL__MODE", "plain"),
                ("PROVIDER__EMAIL__HOSTNAME", "relay.example.com"),
                ("PROVIDER__EMAIL__PORT", "0"),
            ])
            .unwrap_err(),
            [
                "email.mode: `plain` (no TLS) is only allowed to a relay on loopback, not `relay.example.com`: use `starttls` or `tls`",
                "email.port: must be 1 to 65535",
            ]
        );
        let settings = parsed(&[
            ("PROVIDER__EMAIL__TRANSPORT", "smtp"),
            ("PROVIDER__EMAIL__MODE", "tls"),
            ("PROVIDER__EMAIL__HOSTNAME", " smtp.example.com "),
        ])
        .unwrap();
        let EmailTransport::Smtp(smtp) = settings.email.transport else {
            panic!("{:?}", settings.email);
        };
        assert_eq!(smtp.hostname, "smtp.example.com");
        assert_eq!((smtp.mode, smtp.port), (SmtpMode::Tls, 465));
        assert_eq!(smtp.credentials, None);
    }
}
