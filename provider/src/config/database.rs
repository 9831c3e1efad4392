//! The `database` section: which database, and how many connections to it.

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::storage::{DatabaseKind, PoolSettings};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://path` (created when missing).
    #[serde(default = "default_database_url")]
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

pub(super) fn default_database_url() -> String {
    "sqlite://provider.db".into()
}

fn default_max_connections() -> u32 {
    10
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_database_url(),
            max_connections: default_max_connections(),
        }
    }
}

impl DatabaseConfig {
    /// Checks the section, reporting problems at `database.…`.
    pub(super) fn check(&self, p: &mut Vec<Problem>) {
        if let Err(e) = DatabaseKind::of_url(&self.url) {
            p.push(Problem::new("database.url", e.to_string()));
        }
        if self.max_connections == 0 {
            p.push(Problem::new(
                "database.max_connections",
                "must be at least 1",
            ));
        }
    }

    /// The connection pool the section asks for.
    pub(super) fn pool(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.max_connections,
            ..PoolSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{
        parse,
        test_support::{generated, no_env},
    };

    #[test]
    fn unsupported_urls_and_empty_pools_are_refused() {
        let text = generated()
            .replace("url: \"sqlite://provider.db\"", "url: \"mysql://db\"")
            .replace("max_connections: 10", "max_connections: 0");
        let p = parse(&text, no_env(), Path::new(".")).unwrap_err();
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["database.url", "database.max_connections"], "{p:?}");
        assert_eq!(p[1].message, "must be at least 1");
    }
}
