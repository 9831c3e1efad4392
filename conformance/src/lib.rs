//! The conformance suite: spec checks that judge any issuer over HTTP. A check is data: an id,
//! the spec and section it comes from, a level, and an outcome with its evidence.
//!
//! This first part holds the check model and the metadata checks Matrix clients depend on.

pub mod metadata;

/// How strongly a spec asks for something (RFC 2119).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Must,
    Should,
    May,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Failed, with what was seen.
    Fail(String),
    /// Not applicable or not checkable here, with why.
    Skipped(String),
}

/// One requirement and whether it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub id: &'static str,
    /// The spec and section, e.g. "RFC 8414 §2".
    pub spec: &'static str,
    pub level: Level,
    pub requirement: &'static str,
    pub outcome: Outcome,
}

impl Finding {
    /// A failed MUST makes the whole run fail.
    pub fn is_blocking(&self) -> bool {
        self.level == Level::Must && matches!(self.outcome, Outcome::Fail(_))
    }
}
