//! Why the playground could not start or stopped.

use std::{net::SocketAddr, path::PathBuf};

/// Each message carries its cause, so none is chained as a `source` twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("can't {action} {}: {cause}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is not what the playground wrote ({reason}); delete it or run with --fresh", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("can't listen on {addr} ({what}): {cause}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("{} is invalid (delete it or run with --fresh):\n  {}", path.display(), problems.join("\n  "))]
    Config {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("can't generate the provider's keys: {0}")]
    Keys(#[from] provider::keys::KeyError),
    #[error(transparent)]
    Serve(#[from] provider::server::ServeError),
    #[error("storage: {0}")]
    Storage(#[from] provider::storage::StorageError),
    #[error("can't hash a seeded password: {0}")]
    Password(#[from] provider::core::passwords::PasswordError),
    #[error("the fake homeserver: {0}")]
    Homeserver(#[from] fake_homeserver::Error),
    #[error("the real Synapse: {0}")]
    Synapse(String),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the dashboard: {0}")]
    Dashboard(String),
    #[error("the {0} server stopped unexpectedly: {1}")]
    Stopped(&'static str, String),
}

impl Error {
    pub(crate) fn file(
        action: &'static str,
        path: impl Into<PathBuf>,
        cause: std::io::Error,
    ) -> Self {
        Self::File {
            action,
            path: path.into(),
            cause,
        }
    }
}
