//! Checks of the `email` section that need the mail stack's parsers (the mail itself is
//! [`crate::core::email`]).

use lettre::{message::Mailbox, transport::smtp::client::Certificate};

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
