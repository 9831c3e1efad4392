//! Real Synapse in the loop (DESIGN.md, "Tests: reality"): starts the PyPI release of Synapse,
//! pinned to [`SYNAPSE_VERSION`], in `matrix_authentication_service` mode (MSC3861) or in plain
//! mode (before `provider syn2mas`; [`SynapseMode`]), and Debian's
//! nginx as the reverse proxy in front of it, both as child processes of the test; and the
//! homeserver contract suite ([`contract`]) that real Synapse and the `fake-homeserver` crate
//! both run, so the fake cannot drift from the real thing.
//!
//! In a test:
//! ```no_run
//! # async fn demo() -> Result<(), synapse_harness::Error> {
//! use synapse_harness::{prepare, Availability, Synapse, SynapseOptions};
//!
//! let tools = match prepare().await? {
//!     Availability::Ready(tools) => tools,
//!     Availability::Skip(reason) => {
//!         eprintln!("skipped: {reason}");
//!         return Ok(());
//!     }
//! };
//! let synapse = Synapse::start(
//!     &tools,
//!     SynapseOptions::new("localhost", "http://127.0.0.1:8080/".parse().unwrap(), "secret"),
//! )
//! .await?;
//! // … drive synapse.url() …
//! synapse.stop().await;
//! # Ok(()) }
//! ```
//!
//! Prerequisites: `python3` (with `venv`) and `nginx` on the machine. The Synapse virtualenv is
//! made once per target directory (see [`prepare`]); with `CI` set in the environment a missing
//! prerequisite is an error, never a silent skip.

pub mod contract;
mod process;
mod proxy;
mod synapse;
mod venv;

pub use proxy::{render_site, ReverseProxy, SiteVars, NGINX_SITE_TEMPLATE};
pub use synapse::{Synapse, SynapseDatabase, SynapseMode, SynapseOptions};
pub use venv::{prepare, venv_path, Availability, Tools, PINS, PSYCOPG2_VERSION, SYNAPSE_VERSION};

/// Everything that can go wrong while preparing or running the real processes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A prerequisite is missing and `CI` is set, so the test must not skip.
    #[error("{0} (CI is set, so this is an error rather than a skip)")]
    Prerequisite(String),
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid option: {0}")]
    Options(String),
    #[error("cannot write the configuration: {0}")]
    Config(#[from] serde_yaml_ng::Error),
    /// The child process exited or never answered; `log_tail` holds the last lines of its logs.
    #[error("{what} did not start: {reason}\n--- last log lines ---\n{log_tail}")]
    Start {
        what: &'static str,
        reason: String,
        log_tail: String,
    },
    #[error("HTTP client error: {0}")]
    Http(#[from] reqwest::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
