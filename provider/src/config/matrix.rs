//! The `matrix` section: the homeserver the provider serves and how it reaches it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::{check_url, Problem};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixConfig {
    /// Which API the provider speaks to the homeserver with.
    #[serde(default)]
    pub kind: HomeserverKind,
    /// The homeserver's server name (the part after `:` in user IDs).
    pub homeserver: String,
    /// Where the provider reaches the homeserver.
    pub endpoint: String,
    /// The secret shared with the homeserver (`matrix_authentication_service.secret` in Synapse).
    pub secret: String,
    /// How long one call to the homeserver may take, in seconds, before it counts as no answer
    /// (the caller then answers 503 or retries later); [`DEFAULT_REQUEST_TIMEOUT_SECONDS`] when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_seconds: Option<u64>,
}

/// `matrix.request_timeout_seconds` when the file doesn't say.
pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 10;

/// The API the provider provisions users and devices with (the homeserver contract of
/// SPEC-NOTES.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HomeserverKind {
    /// Synapse ≥ 1.136 in `matrix_authentication_service` mode: the `/_synapse/mas/*` API.
    #[default]
    Synapse,
    /// Older Synapse: the `/_synapse/admin` API, with the shared secret as the admin token.
    SynapseLegacy,
}

#[derive(Debug, Clone)]
pub struct MatrixSettings {
    pub kind: HomeserverKind,
    pub homeserver: String,
    pub endpoint: Url,
    pub secret: String,
    /// A whole call to the homeserver gives up after this long.
    pub request_timeout: Duration,
}

impl MatrixConfig {
    /// Checks the section, reporting problems at `matrix.…`; the settings unless the endpoint
    /// is unusable.
    pub(super) fn resolve(&self, p: &mut Vec<Problem>) -> Option<MatrixSettings> {
        if self.homeserver.trim().is_empty() || self.homeserver.contains('/') {
            p.push(Problem::new(
                "matrix.homeserver",
                "must be the homeserver's server name, like `example.com`",
            ));
        }
        let endpoint = check_url(p, "matrix.endpoint", &self.endpoint);
        // The shared secret authenticates the homeserver's introspection calls and the
        // provider's provisioning calls (Synapse `matrix_authentication_service.secret`).
        if self.secret.len() < 16 {
            p.push(Problem::new(
                "matrix.secret",
                "must be at least 16 characters (use `provider config generate` for a fresh one)",
            ));
        }
        let timeout = self
            .request_timeout_seconds
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECONDS);
        if timeout == 0 {
            p.push(Problem::new(
                "matrix.request_timeout_seconds",
                "must be at least 1 (a call that may take no time always fails)",
            ));
        }
        endpoint.map(|endpoint| MatrixSettings {
            kind: self.kind,
            homeserver: self.homeserver.clone(),
            endpoint,
            secret: self.secret.clone(),
            request_timeout: Duration::from_secs(timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::HomeserverKind;
    use crate::config::{
        parse,
        test_support::{generated, no_env},
    };

    #[test]
    fn the_homeserver_is_named_reached_and_shares_a_long_secret() {
        let env = [
            ("PROVIDER__MATRIX__HOMESERVER", "example.com/matrix"),
            ("PROVIDER__MATRIX__ENDPOINT", "nope"),
            ("PROVIDER__MATRIX__SECRET", "short"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let p = parse(&generated(), env, Path::new(".")).unwrap_err();
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["matrix.homeserver", "matrix.endpoint", "matrix.secret"],
            "{p:?}"
        );
    }

    #[test]
    fn the_legacy_admin_api_is_chosen_by_kind() {
        let env = vec![(
            "PROVIDER__MATRIX__KIND".to_owned(),
            "synapse_legacy".to_owned(),
        )];
        let (_, settings) = parse(&generated(), env, Path::new(".")).unwrap();
        assert_eq!(settings.matrix.kind, HomeserverKind::SynapseLegacy);
        let (_, settings) = parse(&generated(), no_env(), Path::new(".")).unwrap();
        assert_eq!(settings.matrix.kind, HomeserverKind::Synapse);
    }

    #[test]
    fn the_homeserver_request_timeout_is_ten_seconds_unless_set() {
        let (_, settings) = parse(&generated(), no_env(), Path::new(".")).unwrap();
        assert_eq!(settings.matrix.request_timeout, Duration::from_secs(10));
        let env = |v: &str| {
            vec![(
                "PROVIDER__MATRIX__REQUEST_TIMEOUT_SECONDS".to_owned(),
                v.to_owned(),
            )]
        };
        let (_, settings) = parse(&generated(), env("600"), Path::new(".")).unwrap();
        assert_eq!(settings.matrix.request_timeout, Duration::from_secs(600));
        let p = parse(&generated(), env("0"), Path::new(".")).unwrap_err();
        assert_eq!(p[0].path, "matrix.request_timeout_seconds", "{p:?}");
    }
}
