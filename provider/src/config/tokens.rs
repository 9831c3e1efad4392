//! The `tokens` section: how issued tokens behave.

use serde::{Deserialize, Serialize};

use super::{Config, Problem};

/// The longest `tokens.refresh_grace_seconds`: a retry is for a response lost in transit.
pub const MAX_REFRESH_GRACE_SECONDS: u32 = 3600;

/// `tokens`: how issued tokens behave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokensConfig {
    /// How long after a refresh the refresh token it consumed may be presented again, when the
    /// response was lost, as long as neither new token was used (client-server API
    /// "Refreshing access tokens"); `0`: never. At most [`MAX_REFRESH_GRACE_SECONDS`].
    #[serde(default = "default_refresh_grace_seconds")]
    pub refresh_grace_seconds: u32,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            refresh_grace_seconds: default_refresh_grace_seconds(),
        }
    }
}

fn default_refresh_grace_seconds() -> u32 {
    60
}

impl Config {
    /// `tokens.refresh_grace_seconds`, checked against its bound.
    pub(super) fn resolve_tokens(&self, p: &mut Vec<Problem>) -> u32 {
        if self.tokens.refresh_grace_seconds > MAX_REFRESH_GRACE_SECONDS {
            p.push(Problem::new(
                "tokens.refresh_grace_seconds",
                format!("must be at most {MAX_REFRESH_GRACE_SECONDS}"),
            ));
        }
        self.tokens.refresh_grace_seconds
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
    fn the_refresh_grace_is_bounded() {
        let with = |grace: &str| {
            format!(
                "{}\ntokens:\n  refresh_grace_seconds: {grace}\n",
                generated()
            )
        };
        let settings = |grace: &str| parse(&with(grace), no_env(), Path::new("."));
        assert_eq!(
            parse(&generated(), no_env(), Path::new("."))
                .unwrap()
                .1
                .refresh_grace_seconds,
            60
        );
        assert_eq!(settings("0").unwrap().1.refresh_grace_seconds, 0);
        assert_eq!(settings("3600").unwrap().1.refresh_grace_seconds, 3600);
        let problems = settings("3601").unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["tokens.refresh_grace_seconds"]);
    }
}
