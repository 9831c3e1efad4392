//! Structured logs: pretty on a terminal, plain text on a pipe, JSON on request. The level comes
//! from `RUST_LOG` (default `info`).

use std::io::IsTerminal as _;

use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Pretty and coloured on a terminal, plain text otherwise.
    Auto,
    Pretty,
    Plain,
    Json,
}

/// Installs the global subscriber (logs go to stderr; stdout is for command output).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        // The current span only (`span`: the request's method, route and ID), not the list of
        // every enclosing span too (`spans`), which repeated the same fields on each line: a
        // third of the formatting cost of a request's log line.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.pretty().with_ansi(terminal).try_init(),
        LogFormat::Auto if terminal => builder.pretty().try_init(),
        LogFormat::Auto | LogFormat::Plain => builder.with_ansi(false).try_init(),
    };
}
