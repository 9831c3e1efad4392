//! The conformance page: runs the conformance suite (the `conformance` crate, HTTP only) in the
//! background, against this deployment (its issuer, its homeserver and the secret the homeserver
//! introspects with) or against an issuer typed in (and optionally a homeserver; no secret ever
//! goes there), and shows the report: a summary line, then a table per profile, failures with
//! their reason and evidence (elided by the suite), and downloads as JSON, JUnit XML and
//! Markdown. The last [`KEPT`] runs are kept in memory; one run at a time per issuer.

use std::{collections::VecDeque, sync::Arc};

use ::conformance::{render_exchange, Finding, Outcome, Profile, Report, Summary, CHECKS};
use axum::{
    extract::{Path, RawForm, State},
    http::{header, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use chrono::{DateTime, Utc};
use minijinja::context;
use rand::Rng as _;
use url::Url;

use super::{not_found_page, Dashboard};

/// The conformance pages' own style sheet (after the dashboard's).
pub const STYLE: &str = include_str!("conformance.css");

/// How many runs are remembered (finished ones are forgotten first).
pub const KEPT: usize = 10;
/// How many runs may be going at once (whatever their targets).
const MAX_RUNNING: usize = 3;
/// How often a running run's page reloads itself, in seconds.
const REFRESH_SECONDS: i64 = 2;

/// The runs started from the page, oldest first.
#[derive(Default)]
pub struct Runs(std::sync::Mutex<VecDeque<Run>>);

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Run>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &str) -> Option<Run> {
        self.lock().iter().find(|r| r.id == id).cloned()
    }

    /// Records the end of a run (unless it was forgotten meanwhile).
    fn finish(&self, id: &str, progress: Progress) {
        if let Some(run) = self.lock().iter_mut().find(|r| r.id == id) {
            run.progress = progress;
        }
    }
}

/// What the suite is run against.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    issuer: Url,
    homeserver: Option<Url>,
    /// This deployment: the homeserver's shared secret goes with it.
    this_deployment: bool,
}

#[derive(Clone)]
struct Run {
    id: String,
    target: Target,
    profiles: Vec<Profile>,
    /// How many checks were selected.
    checks: usize,
    started_at: DateTime<Utc>,
    progress: Progress,
}

#[derive(Clone)]
enum Progress {
    Running,
    Done {
        report: Arc<Report>,
        finished_at: DateTime<Utc>,
    },
    /// The run ended without a report (the playground stopped, the suite crashed).
    Stopped {
        why: String,
        finished_at: DateTime<Utc>,
    },
}

impl Run {
    fn is_running(&self) -> bool {
        matches!(self.progress, Progress::Running)
    }

    fn finished_at(&self) -> Option<DateTime<Utc>> {
        match &self.progress {
            Progress::Running => None,
            Progress::Done { finished_at, .. } | Progress::Stopped { finished_at, .. } => {
                Some(*finished_at)
            }
        }
    }

    /// A word for its state, and its CSS class.
    fn status(&self) -> (String, &'static str) {
        match &self.progress {
            Progress::Running => ("running".to_owned(), ""),
            Progress::Stopped { why, .. } => (why.clone(), "failed"),
            Progress::Done { report, .. } if report.unreachable.is_some() => {
                ("unreachable issuer".to_owned(), "failed")
            }
            Progress::Done { report, .. } => (
                report.summary().line(),
                if report.passed_all_musts() {
                    "approved"
                } else {
                    "failed"
                },
            ),
        }
    }
}

/// The form as posted (or as first shown).
#[derive(Debug, Clone, Default, serde::Serialize)]
struct FormInput {
    /// `this` or `url`.
    target: String,
    issuer: String,
    homeserver: String,
    profiles: Vec<String>,
}

impl FormInput {
    fn defaults() -> Self {
        Self {
            target: "this".to_owned(),
            profiles: Profile::ALL.iter().map(|p| p.as_str().to_owned()).collect(),
            ..Self::default()
        }
    }

    fn parse(body: &[u8]) -> Self {
        let mut form = Self::default();
        for (name, value) in url::form_urlencoded::parse(body) {
            match name.as_ref() {
                "target" => form.target = value.into_owned(),
                "issuer" => form.issuer = value.trim().to_owned(),
                "homeserver" => form.homeserver = value.trim().to_owned(),
                "profile" => form.profiles.push(value.into_owned()),
                _ => {}
            }
        }
        form
    }
}

/// Why a form can't start a run: a message, and the run in the way (if one is).
struct Refusal {
    status: StatusCode,
    message: String,
    running: Option<String>,
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            running: None,
        }
    }
}

/// The target and profiles a form asks for.
fn validate(d: &Dashboard, form: &FormInput) -> Result<(Target, Vec<Profile>), Refusal> {
    let target = match form.target.as_str() {
        "this" | "" => Target {
            issuer: d.urls.issuer.clone(),
            homeserver: Some(d.urls.homeserver.clone()),
            this_deployment: true,
        },
        "url" => {
            if form.issuer.is_empty() {
                return Err(Refusal::invalid(
                    "Type the URL of the issuer to check, or choose this deployment.",
                ));
            }
            let issuer = parse_url("issuer", &form.issuer).map_err(Refusal::invalid)?;
            let homeserver = match form.homeserver.as_str() {
                "" => None,
                text => Some(parse_url("homeserver", text).map_err(Refusal::invalid)?),
            };
            Target {
                issuer,
                homeserver,
                this_deployment: false,
            }
        }
        other => {
            return Err(Refusal::invalid(format!(
                "Unknown target `{other}`: choose this deployment or another issuer."
            )))
        }
    };
    let mut profiles = Vec::new();
    for name in &form.profiles {
        let profile = name.parse::<Profile>().map_err(Refusal::invalid)?;
        if !profiles.contains(&profile) {
            profiles.push(profile);
        }
    }
    if profiles.is_empty() {
        return Err(Refusal::invalid("Choose at least one profile to run."));
    }
    // Report order, whatever the order of the boxes.
    profiles.sort();
    Ok((target, profiles))
}

/// An issuer or homeserver URL typed in: http or https, a host, no credentials, no query or
/// fragment.
fn parse_url(what: &str, text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("The {what} `{text}` is not a URL: {e}."))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "The {what} must be an http or https URL, not `{}:`.",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("The {what} URL has no host."));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "The {what} URL must not carry a user name or password."
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "The {what} URL must not have a query or a fragment."
        ));
    }
    Ok(url)
}

/// `GET /conformance`: the form and the recent runs.
pub async fn form(State(d): State<Dashboard>) -> Response {
    page(&d, &FormInput::defaults(), None)
}

/// `POST /conformance`: starts a run in the background and shows it.
pub async fn start(State(d): State<Dashboard>, RawForm(body): RawForm) -> Response {
    let form = FormInput::parse(&body);
    match try_start(&d, &form) {
        Ok(id) => Redirect::to(&format!("/conformance/runs/{id}")).into_response(),
        Err(refusal) => page(&d, &form, Some(refusal)),
    }
}

fn try_start(d: &Dashboard, form: &FormInput) -> Result<String, Refusal> {
    let (target, profiles) = validate(d, form)?;
    let mut options = ::conformance::Options::new(target.issuer.clone());
    options.homeserver = target.homeserver.clone();
    options.profiles = profiles.clone();
    if target.this_deployment {
        options.homeserver_secret = Some(d.provider.settings.matrix.secret.clone());
    }
    let checks = ::conformance::select(&options).len();
    let id = {
        let mut rng = d.entropy.rng.rng();
        format!("{:016x}", rng.gen::<u64>())
    };
    {
        let mut runs = d.conformance.lock();
        if let Some(busy) = runs
            .iter()
            .find(|r| r.is_running() && r.target.issuer == target.issuer)
        {
            return Err(Refusal {
                status: StatusCode::CONFLICT,
                message: format!(
                    "The suite is already running against {}: one run at a time per issuer. \
                     Wait for it to finish.",
                    target.issuer
                ),
                running: Some(busy.id.clone()),
            });
        }
        if runs.iter().filter(|r| r.is_running()).count() >= MAX_RUNNING {
            return Err(Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!("{MAX_RUNNING} runs are going already: wait for one to finish."),
                running: None,
            });
        }
        runs.push_back(Run {
            id: id.clone(),
            target,
            profiles,
            checks,
            started_at: d.entropy.clock.now(),
            progress: Progress::Running,
        });
        // Forget the oldest finished runs beyond the limit (running ones are bounded above).
        while runs.len() > KEPT {
            match runs.iter().position(|r| !r.is_running()) {
                Some(oldest) => {
                    runs.remove(oldest);
                }
                None => break,
            }
        }
    }
    spawn(d, id.clone(), options);
    Ok(id)
}

/// Runs the suite in a task of its own; the run ends early when the playground stops.
fn spawn(d: &Dashboard, id: String, options: ::conformance::Options) {
    let d = d.clone();
    let mut stop = d.stop.clone();
    tokio::spawn(async move {
        let suite = tokio::spawn(async move { ::conformance::run(&options).await });
        let abort = suite.abort_handle();
        let ended = tokio::select! {
            joined = suite => match joined {
                Ok(report) => Ok(report),
                Err(error) => Err(format!("The suite stopped without a report: {error}")),
            },
            _ = stop.wait_for(|stop| *stop) => {
                abort.abort();
                Err("The playground stopped before the run was done.".to_owned())
            }
        };
        let finished_at = d.entropy.clock.now();
        let progress = match ended {
            Ok(report) => {
                tracing::info!(
                    run = id,
                    issuer = report.issuer,
                    summary = report.summary().line(),
                    "conformance run done"
                );
                Progress::Done {
                    report: Arc::new(report),
                    finished_at,
                }
            }
            Err(why) => {
                tracing::warn!(run = id, why, "conformance run ended without a report");
                Progress::Stopped { why, finished_at }
            }
        };
        d.conformance.finish(&id, progress);
    });
}

/// The form page, with a refusal when there is one.
fn page(d: &Dashboard, form: &FormInput, refusal: Option<Refusal>) -> Response {
    let profiles: Vec<_> = Profile::ALL
        .iter()
        .map(|p| {
            context! {
                name => p.as_str(),
                checks => CHECKS.iter().filter(|c| c.profile == *p).count(),
                checked => form.profiles.iter().any(|n| n == p.as_str()),
            }
        })
        .collect();
    let runs: Vec<_> = d
        .conformance
        .lock()
        .iter()
        .rev()
        .map(|r| {
            let (status, class) = r.status();
            context! {
                id => r.id,
                started_at => r.started_at.format("%H:%M:%S").to_string(),
                issuer => r.target.issuer.as_str(),
                this_deployment => r.target.this_deployment,
                profiles => r.profiles.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
                status,
                class,
            }
        })
        .collect();
    let (status, error, running) = match refusal {
        Some(r) => (r.status, Some(r.message), r.running),
        None => (StatusCode::OK, None, None),
    };
    let mut response = d.render(
        "conformance.html",
        "/conformance",
        context! {
            form,
            profiles,
            runs,
            error,
            running,
            total => CHECKS.len(),
            kept => KEPT,
            tls => d.tls.is_some(),
        },
    );
    if response.status().is_success() {
        *response.status_mut() = status;
    }
    response
}

/// `GET /conformance/runs/{id}` (the run's page) and `{id}.json`, `{id}.xml`, `{id}.md` (its
/// report).
pub async fn run(State(d): State<Dashboard>, Path(file): Path<String>) -> Response {
    let (id, format) = match file.rsplit_once('.') {
        Some((id, format)) => (id, Some(format)),
        None => (file.as_str(), None),
    };
    let Some(run) = d.conformance.get(id) else {
        return not_found_page(
            &d,
            &format!("No such conformance run (the page remembers the last {KEPT})."),
        );
    };
    match format {
        None => run_page(&d, &run),
        Some(format) => download(&d, &run, format),
    }
}

fn download(d: &Dashboard, run: &Run, format: &str) -> Response {
    let report = match &run.progress {
        Progress::Done { report, .. } => report,
        Progress::Running => {
            return (
                StatusCode::CONFLICT,
                "The run is still going: its report can be downloaded when it is done.",
            )
                .into_response()
        }
        Progress::Stopped { why, .. } => {
            return (
                StatusCode::CONFLICT,
                format!("The run has no report: {why}"),
            )
                .into_response()
        }
    };
    let (content_type, body) = match format {
        "json" => ("application/json", report.render_json()),
        "xml" => ("application/xml; charset=utf-8", report.render_junit()),
        "md" => ("text/markdown; charset=utf-8", report.render_markdown()),
        _ => {
            return not_found_page(
                d,
                "Reports download as .json, .xml (JUnit) or .md (Markdown).",
            )
        }
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"conformance-{}.{format}\"", run.id),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}

fn run_page(d: &Dashboard, run: &Run) -> Response {
    let now = d.entropy.clock.now();
    let elapsed = (run.finished_at().unwrap_or(now) - run.started_at)
        .num_seconds()
        .max(0);
    let (state, why, report) = match &run.progress {
        Progress::Running => ("running", None, None),
        Progress::Done { report, .. } => ("done", None, Some(report_context(report))),
        Progress::Stopped { why, .. } => ("stopped", Some(why.as_str()), None),
    };
    d.render(
        "conformance_run.html",
        "/conformance",
        context! {
            run => context! {
                id => run.id,
                issuer => run.target.issuer.as_str(),
                homeserver => run.target.homeserver.as_ref().map(Url::as_str),
                this_deployment => run.target.this_deployment,
                profiles => run.profiles.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                checks => run.checks,
                started_at => run.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                finished_at => run.finished_at().map(|t| t.format("%H:%M:%S UTC").to_string()),
                elapsed,
                state,
                why,
            },
            report,
            refresh => run.is_running().then_some(REFRESH_SECONDS),
        },
    )
}

/// The report, as the run page shows it: grouped by profile, in registry order.
fn report_context(report: &Report) -> minijinja::Value {
    let profiles: Vec<_> = report
        .by_profile()
        .map(|(profile, findings)| {
            context! {
                name => profile.as_str(),
                summary => Summary::of(findings.iter().copied()).line(),
                findings => findings.into_iter().map(finding_context).collect::<Vec<_>>(),
            }
        })
        .collect();
    context! {
        summary => report.summary().line(),
        passed_all_musts => report.passed_all_musts(),
        verdict => report.verdict(),
        unreachable => report.unreachable,
        profiles,
    }
}

fn finding_context(f: &Finding) -> minijinja::Value {
    let (result, evidence) = match &f.outcome {
        Outcome::Pass => ("pass", Vec::new()),
        Outcome::Skipped(_) => ("skipped", Vec::new()),
        Outcome::Fail { evidence, .. } => ("fail", evidence.iter().map(render_exchange).collect()),
    };
    context! {
        id => f.id,
        requirement => f.requirement,
        // "RFC 8414 §2, RFC 8628 §4": lines break between references, not inside one.
        spec => f.spec.replace(' ', "\u{a0}").replace(",\u{a0}", ", "),
        level => f.level.as_str(),
        result,
        reason => f.outcome.reason(),
        evidence,
        notes => f.notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_urls_are_http_or_https_without_credentials() {
        assert!(parse_url("issuer", "https://auth.example.org/").is_ok());
        assert!(parse_url("issuer", "http://127.0.0.1:8080/realms/x").is_ok());
        for bad in [
            "auth.example.org",
            "ftp://auth.example.org/",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://user:pw@auth.example.org/",
            "https://auth.example.org/?x=1",
            "https://auth.example.org/#top",
        ] {
            assert!(parse_url("issuer", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_form_reads_repeated_profiles() {
        let form = FormInput::parse(
            b"target=url&issuer=+https%3A%2F%2Fa.example%2F+&profile=oauth2&profile=oidc",
        );
        assert_eq!(form.target, "url");
        assert_eq!(form.issuer, "https://a.example/");
        assert_eq!(form.profiles, ["oauth2", "oidc"]);
    }
}
