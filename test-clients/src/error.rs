//! The one error type of the library: where a journey stopped, and why.

/// What went wrong, at the first step that did not behave as the specs say.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be made or its answer not read (connection refused, timeout…).
    #[error("HTTP transport error: {0}")]
    Http(#[from] reqwest::Error),
    /// An answer with another status than the step expects. `what` names the step and the
    /// expected status; `body` is the answer, secrets elided and shortened.
    #[error("{what}, got HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    /// A document or an answer that is not as the spec says.
    #[error("{0}")]
    Protocol(String),
    /// A page of the provider without the form or link to go on with (its text is in the message).
    #[error("{0}")]
    Page(String),
}

impl Error {
    /// A [`Error::Protocol`] from anything printable.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::Protocol(message.into())
    }
}
