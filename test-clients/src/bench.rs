//! `test-clients bench`: a load generator for the hot paths of any deployment, over HTTP:
//! token introspection (as a homeserver or a confidential client calls it), refresh token
//! rotation, `client_credentials` token issuance and legacy password logins.
//!
//! Set-up goes through the ordinary journeys (discovery, registration, sign-in through the
//! pages); only the measured requests bypass the transcript. Each of `concurrency` workers sends
//! one request at a time until the duration is over (a closed loop, like `wrk -c N`); latencies
//! are kept per request and the figures are exact percentiles, not estimates.

use std::{
    fmt,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use url::Url;

use crate::{discovery, http::Http, oauth, pages::Account, transcript::Transcript, Error};

/// A path under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// RFC 7662: one access token introspected again and again.
    Introspection,
    /// RFC 6749 §6: each worker rotates its own refresh token chain (RFC 9700 §4.14.2).
    Refresh,
    /// RFC 6749 §4.4: a confidential client asking for tokens.
    ClientCredentials,
    /// The legacy Matrix `m.login.password` (each login is a new device).
    PasswordLogin,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Introspection,
        Target::Refresh,
        Target::ClientCredentials,
        Target::PasswordLogin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Introspection => "introspection",
            Self::Refresh => "refresh",
            Self::ClientCredentials => "client-credentials",
            Self::PasswordLogin => "password-login",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// What to measure, and against what.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub issuer: Url,
    /// Where the legacy login API is reached (the homeserver, whose proxy sends it to the
    /// provider); the issuer when absent.
    pub homeserver: Option<Url>,
    pub concurrency: usize,
    pub duration: Duration,
    pub targets: Vec<Target>,
    /// The user the sessions are for (registered on the first sign-in when asked).
    pub account: Account,
    /// The homeserver's shared secret: introspection as the homeserver calls it.
    pub homeserver_secret: Option<String>,
    /// A confidential client registered for `client_credentials` (and allowed to introspect).
    pub client: Option<(String, String)>,
}

/// The figures of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub target: Target,
    /// Requests answered with a success.
    pub ok: u64,
    /// Requests answered otherwise, or not at all.
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Figures {
    /// Successful requests per second.
    pub fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<20} {:>10.1} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({} ok, {} errors)",
            self.target.name(),
            self.per_second(),
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0,
            self.max.as_secs_f64() * 1000.0,
            self.ok,
            self.errors
        )
    }
}

/// The `q`-quantile (0 < q ≤ 1) of sorted latencies, nearest rank; zero when empty.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One measured request, prepared per worker.
#[derive(Debug, Clone)]
enum Work {
    Introspect {
        url: String,
        token: String,
        auth: CallerAuth,
    },
    Refresh {
        url: String,
        client_id: String,
        refresh_token: String,
    },
    ClientCredentials {
        url: String,
        client_id: String,
        secret: String,
    },
    PasswordLogin {
        url: String,
        username: String,
        password: String,
    },
}

#[derive(Debug, Clone)]
enum CallerAuth {
    Bearer(String),
    Basic(String, String),
}

impl Work {
    /// Sends the request; `Ok(true)` on success. Refresh keeps its chain going.
    async fn once(&mut self, client: &reqwest::Client) -> Result<bool, reqwest::Error> {
        match self {
            Self::Introspect { url, token, auth } => {
                let request = client
                    .post(url.as_str())
                    .header("X-MAS-Supports-Device-Id", "1")
                    .form(&[
                        ("token", token.as_str()),
                        ("token_type_hint", "access_token"),
                    ]);
                let request = match auth {
                    CallerAuth::Bearer(secret) => request.bearer_auth(secret),
                    CallerAuth::Basic(id, secret) => request.basic_auth(id, Some(secret)),
                };
                let response = request.send().await?;
                let ok = response.status().is_success();
                let body: Value = response.json().await.unwrap_or_default();
                Ok(ok && body["active"] == true)
            }
            Self::Refresh {
                url,
                client_id,
                refresh_token,
            } => {
                let response = client
                    .post(url.as_str())
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh_token.as_str()),
                        ("client_id", client_id.as_str()),
                    ])
                    .send()
                    .await?;
                if !response.status().is_success() {
                    return Ok(false);
                }
                let body: Value = response.json().await.unwrap_or_default();
                match body["refresh_token"].as_str() {
                    Some(next) => {
                        *refresh_token = next.to_owned();
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            Self::ClientCredentials {
                url,
                client_id,
                secret,
            } => {
                let response = client
                    .post(url.as_str())
                    .basic_auth(client_id.as_str(), Some(secret.as_str()))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await?;
                let ok = response.status().is_success();
                let _ = response.bytes().await?;
                Ok(ok)
            }
            Self::PasswordLogin {
                url,
                username,
                password,
            } => {
                let response = client
                    .post(url.as_str())
                    .json(&json!({
                        "type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": username},
                        "password": password,
                    }))
                    .send()
                    .await?;
                let ok = response.status().is_success();
                let _ = response.bytes().await?;
                Ok(ok)
            }
        }
    }
}

/// Runs every target in turn; set-up requests are recorded in `transcript`.
pub async fn run(options: &BenchOptions, transcript: &Transcript) -> Result<Vec<Figures>, Error> {
    let http = Http::new(transcript.clone());
    let metadata = discovery::from_issuer(&http, &options.issuer).await?;
    let endpoint = |name: &str| -> Result<String, Error> {
        metadata[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol(format!("the metadata has no {name}")))
    };
    // The first sign-in registers the account when asked; later ones sign in.
    let mut account = options.account.clone();
    let (username, password) = match &account {
        Account::SignIn { username, password } | Account::Register { username, password } => {
            (username.clone(), password.clone())
        }
    };
    let scope = "openid urn:matrix:client:api:*";
    let mut figures = Vec::new();
    for &target in &options.targets {
        transcript.note(format!("== bench set-up: {}", target.name()));
        let mut workers = Vec::with_capacity(options.concurrency);
        match target {
            Target::Introspection => {
                let auth = match (&options.homeserver_secret, &options.client) {
                    (Some(secret), _) => CallerAuth::Bearer(secret.clone()),
                    (None, Some((id, secret))) => CallerAuth::Basic(id.clone(), secret.clone()),
                    (None, None) => return Err(Error::Protocol(
                        "introspection needs --homeserver-secret or --client-id/--client-secret"
                            .into(),
                    )),
                };
                let signed_in = oauth::sign_in(
                    &Http::browser(transcript.clone()),
                    &metadata,
                    scope,
                    &account,
                )
                .await?;
                account = signed_in_account(&username, &password);
                let token = access_token(&signed_in.tokens)?;
                let url = endpoint("introspection_endpoint")?;
                for _ in 0..options.concurrency {
                    workers.push(Work::Introspect {
                        url: url.clone(),
                        token: token.clone(),
                        auth: auth.clone(),
                    });
                }
            }
            Target::Refresh => {
                let url = endpoint("token_endpoint")?;
                for _ in 0..options.concurrency {
                    let signed_in = oauth::sign_in(
                        &Http::browser(transcript.clone()),
                        &metadata,
                        scope,
                        &account,
                    )
                    .await?;
                    account = signed_in_account(&username, &password);
                    let refresh_token = signed_in.tokens["refresh_token"]
                        .as_str()
                        .ok_or_else(|| Error::Protocol("no refresh_token was issued".into()))?
                        .to_owned();
                    workers.push(Work::Refresh {
                        url: url.clone(),
                        client_id: signed_in.client_id.clone(),
                        refresh_token,
                    });
                }
            }
            Target::ClientCredentials => {
                let Some((client_id, secret)) = &options.client else {
                    return Err(Error::Protocol(
                        "client-credentials needs --client-id and --client-secret".into(),
                    ));
                };
                let url = endpoint("token_endpoint")?;
                for _ in 0..options.concurrency {
                    workers.push(Work::ClientCredentials {
                        url: url.clone(),
                        client_id: client_id.clone(),
                        secret: secret.clone(),
                    });
                }
            }
            Target::PasswordLogin => {
                if matches!(account, Account::Register { .. }) {
                    oauth::sign_in(
                        &Http::browser(transcript.clone()),
                        &metadata,
                        scope,
                        &account,
                    )
                    .await?;
                    account = signed_in_account(&username, &password);
                }
                let base = options.homeserver.as_ref().unwrap_or(&options.issuer);
                let url = base
                    .join("_matrix/client/v3/login")
                    .map_err(|e| Error::Protocol(e.to_string()))?
                    .to_string();
                for _ in 0..options.concurrency {
                    workers.push(Work::PasswordLogin {
                        url: url.clone(),
                        username: username.clone(),
                        password: password.clone(),
                    });
                }
            }
        }
        figures.push(measure(target, workers, options.duration).await?);
    }
    Ok(figures)
}

fn signed_in_account(username: &str, password: &str) -> Account {
    Account::SignIn {
        username: username.to_owned(),
        password: password.to_owned(),
    }
}

fn access_token(tokens: &Value) -> Result<String, Error> {
    tokens["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Protocol("no access_token was issued".into()))
}

/// Drives the workers until `duration` is over; one connection pool shared by all, as a load
/// generator with `concurrency` connections.
async fn measure(target: Target, workers: Vec<Work>, duration: Duration) -> Result<Figures, Error> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(workers.len())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(Error::Http)?;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut work| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0_u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match work.once(&client).await {
                        Ok(true) => latencies.push(sent.elapsed()),
                        Ok(false) | Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut l, e) = task
            .await
            .map_err(|e| Error::Protocol(format!("a bench worker failed: {e}")))?;
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Figures {
        target,
        ok: latencies.len() as u64,
        errors,
        elapsed,
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(quantile(&sorted, 0.50), ms(50));
        assert_eq!(quantile(&sorted, 0.99), ms(99));
        assert_eq!(quantile(&sorted, 1.0), ms(100));
        assert_eq!(quantile(&[ms(7)], 0.99), ms(7));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn targets_parse_by_name() {
        for target in Target::ALL {
            assert_eq!(Target::parse(target.name()), Some(target));
        }
        assert_eq!(Target::parse("nope"), None);
    }

    #[test]
    fn figures_read_well() {
        let figures = Figures {
            target: Target::Refresh,
            ok: 2000,
            errors: 1,
            elapsed: Duration::from_secs(2),
            p50: Duration::from_micros(1500),
            p99: Duration::from_millis(4),
            max: Duration::from_millis(9),
        };
        assert!((figures.per_second() - 1000.0).abs() < f64::EPSILON);
        let line = figures.to_string();
        assert!(line.starts_with("refresh"), "{line}");
        assert!(line.contains("1000.0 req/s"), "{line}");
        assert!(line.contains("p99     4.00 ms"), "{line}");
    }
}
