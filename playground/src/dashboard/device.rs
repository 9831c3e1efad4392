//! The device-flow panel (RFC 8628, MSC4341): the dashboard plays the device. It starts a grant
//! with the demo client, shows the user code and a QR code of `verification_uri_complete`, and
//! polls the token endpoint each time the page refreshes itself (never faster than the
//! `interval` asked, slower after `slow_down`), until the grant is approved, denied or expired;
//! then it calls `whoami` with the new access token.

use std::{collections::VecDeque, sync::Mutex};

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    Form,
};
use chrono::{DateTime, Duration, Utc};
use minijinja::context;
use rand::Rng as _;
use reqwest::Method;
use serde::Deserialize;

use super::{
    http::{send, Outgoing, Step},
    not_found_page, Dashboard,
};
use crate::DEMO_CLIENT_ID;

/// How many grants the panel remembers.
const KEPT: usize = 20;
/// RFC 8628 §3.5: polling slows by 5 seconds at each `slow_down`.
const SLOW_DOWN_SECONDS: i64 = 5;
/// RFC 8628 §3.2: when the provider names no interval, 5 seconds.
const DEFAULT_INTERVAL: i64 = 5;
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The grants started from the panel, newest last.
#[derive(Default)]
pub struct Grants(Mutex<VecDeque<Grant>>);

impl Grants {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Grant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct Grant {
    id: String,
    started_at: DateTime<Utc>,
    start: Step,
    device_code: Option<String>,
    user_code: Option<String>,
    verification_uri: Option<String>,
    verification_uri_complete: Option<String>,
    interval: i64,
    expires_at: DateTime<Utc>,
    next_poll_at: DateTime<Utc>,
    polling: bool,
    polls: u32,
    last_poll: Option<Step>,
    outcome: Outcome,
}

#[derive(Clone)]
enum Outcome {
    Pending,
    Approved { whoami: Step },
    Failed(String),
}

impl Grant {
    fn state(&self) -> &'static str {
        match self.outcome {
            Outcome::Pending => "pending",
            Outcome::Approved { .. } => "approved",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// `GET /device`: the form, and the grants started so far.
pub async fn form(State(d): State<Dashboard>) -> Response {
    let device_id: String = {
        let mut rng = d.entropy.rng.rng();
        (0..10)
            .map(|_| char::from(b'A' + rng.gen_range(0..26u8)))
            .collect()
    };
    let scope = format!("openid urn:matrix:client:api:* urn:matrix:client:device:{device_id}");
    let grants: Vec<_> = d
        .devices
        .lock()
        .iter()
        .rev()
        .map(|g| {
            context! {
                id => g.id,
                started_at => g.started_at.format("%H:%M:%S").to_string(),
                user_code => g.user_code,
                state => g.state(),
            }
        })
        .collect();
    d.render(
        "device.html",
        "/device",
        context! { scope, grants, demo_client_id => DEMO_CLIENT_ID },
    )
}

#[derive(Debug, Deserialize)]
pub struct StartForm {
    scope: String,
}

/// `POST /device`: asks the provider for a device code, then shows the grant.
pub async fn start(State(d): State<Dashboard>, Form(form): Form<StartForm>) -> Response {
    let Some(endpoint) = d.endpoint("device_authorization_endpoint") else {
        return not_found_page(
            &d,
            "The provider advertises no device authorization endpoint.",
        );
    };
    let answer = send(
        &d.http,
        "Device authorization request (RFC 8628 §3.1)",
        Method::POST,
        endpoint,
        None,
        Outgoing::Form(vec![
            ("client_id", DEMO_CLIENT_ID.to_owned()),
            ("scope", form.scope.trim().to_owned()),
        ]),
    )
    .await;
    let now = d.entropy.clock.now();
    let field = |name: &str| answer.str(name).map(str::to_owned);
    let number = |name: &str| {
        answer
            .json
            .as_ref()
            .and_then(|j| j.get(name))
            .and_then(serde_json::Value::as_i64)
    };
    let interval = number("interval").unwrap_or(DEFAULT_INTERVAL).max(1);
    let expires_at = now + Duration::seconds(number("expires_in").unwrap_or(0));
    let (device_code, user_code) = (field("device_code"), field("user_code"));
    let outcome = match (&device_code, &user_code, answer.is_success()) {
        (Some(_), Some(_), true) => Outcome::Pending,
        _ => Outcome::Failed(format!(
            "The provider did not start the grant: {}",
            answer
                .str("error_description")
                .or(answer.str("error"))
                .unwrap_or("see its answer below")
        )),
    };
    let id = {
        let mut rng = d.entropy.rng.rng();
        format!("{:016x}", rng.gen::<u64>())
    };
    let grant = Grant {
        id: id.clone(),
        started_at: now,
        start: answer.step.clone(),
        device_code,
        user_code,
        verification_uri: field("verification_uri"),
        verification_uri_complete: field("verification_uri_complete"),
        interval,
        expires_at,
        next_poll_at: now + Duration::seconds(interval),
        polling: false,
        polls: 0,
        last_poll: None,
        outcome,
    };
    let mut grants = d.devices.lock();
    if grants.len() == KEPT {
        grants.pop_front();
    }
    grants.push_back(grant);
    drop(grants);
    Redirect::to(&format!("/device/{id}")).into_response()
}

/// `GET /device/{id}`: the grant; polls the token endpoint when it is time.
pub async fn status(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    let now = d.entropy.clock.now();
    let poll = {
        let mut grants = d.devices.lock();
        let Some(grant) = grants.iter_mut().find(|g| g.id == id) else {
            drop(grants);
            return not_found_page(
                &d,
                "No such device grant (the panel remembers the last 20).",
            );
        };
        match (&grant.outcome, &grant.device_code) {
            (Outcome::Pending, _) if now >= grant.expires_at => {
                grant.outcome = Outcome::Failed("The code expired before it was approved.".into());
                None
            }
            (Outcome::Pending, Some(code)) if !grant.polling && now >= grant.next_poll_at => {
                grant.polling = true;
                Some(code.clone())
            }
            _ => None,
        }
    };
    if let Some(device_code) = poll {
        poll_once(&d, &id, device_code).await;
    }
    let Some(grant) = d.devices.lock().iter().find(|g| g.id == id).cloned() else {
        return not_found_page(&d, "No such device grant.");
    };
    render(&d, &grant)
}

/// One token request (RFC 8628 §3.4) and what follows from its answer (§3.5).
async fn poll_once(d: &Dashboard, id: &str, device_code: String) {
    let Some(endpoint) = d.endpoint("token_endpoint") else {
        return;
    };
    let answer = send(
        &d.http,
        "Device access token request (RFC 8628 §3.4)",
        Method::POST,
        endpoint,
        None,
        Outgoing::Form(vec![
            ("grant_type", DEVICE_GRANT.to_owned()),
            ("device_code", device_code),
            ("client_id", DEMO_CLIENT_ID.to_owned()),
        ]),
    )
    .await;
    let mut slow_down = false;
    let outcome = match (
        answer.is_success(),
        answer.str("access_token"),
        answer.str("error"),
    ) {
        (true, Some(token), _) => {
            let whoami = send(
                &d.http,
                "whoami on the homeserver, with the new access token",
                Method::GET,
                d.homeserver_url("/_matrix/client/v3/account/whoami"),
                Some(token),
                Outgoing::Empty,
            )
            .await;
            Outcome::Approved {
                whoami: whoami.step,
            }
        }
        (_, _, Some("authorization_pending")) => Outcome::Pending,
        (_, _, Some("slow_down")) => {
            slow_down = true;
            Outcome::Pending
        }
        (_, _, Some("access_denied")) => Outcome::Failed("You denied the request.".into()),
        (_, _, Some("expired_token")) => Outcome::Failed("The code expired.".into()),
        (_, _, error) => Outcome::Failed(format!(
            "The token endpoint answered {}: {}",
            answer
                .status
                .map_or("nothing".to_owned(), |s| s.to_string()),
            answer
                .str("error_description")
                .or(error)
                .unwrap_or("see below")
        )),
    };
    let now = d.entropy.clock.now();
    let mut grants = d.devices.lock();
    if let Some(grant) = grants.iter_mut().find(|g| g.id == id) {
        if slow_down {
            grant.interval += SLOW_DOWN_SECONDS;
        }
        grant.polling = false;
        grant.polls += 1;
        grant.next_poll_at = now + Duration::seconds(grant.interval);
        grant.last_poll = Some(answer.step);
        grant.outcome = outcome;
    }
}

fn render(d: &Dashboard, grant: &Grant) -> Response {
    let (status, refresh) = match &grant.outcome {
        Outcome::Pending => (
            "Waiting for approval: this page polls the token endpoint and refreshes itself."
                .to_owned(),
            Some(grant.interval),
        ),
        Outcome::Approved { .. } => ("Approved: the device has its tokens.".to_owned(), None),
        Outcome::Failed(why) => (why.clone(), None),
    };
    let mut steps = vec![grant.start.clone()];
    steps.extend(grant.last_poll.clone());
    if let Outcome::Approved { whoami } = &grant.outcome {
        steps.push(whoami.clone());
    }
    let qr = grant.verification_uri_complete.as_ref().map(|uri| {
        format!(
            "/qr.svg?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("data", uri)
                .finish()
        )
    });
    d.render(
        "device_grant.html",
        "/device",
        context! {
            g => context! {
                user_code => grant.user_code,
                verification_uri => grant.verification_uri,
                verification_uri_complete => grant.verification_uri_complete,
                interval => grant.interval,
                polls => grant.polls,
                expires_at => grant.expires_at.format("%H:%M:%S UTC").to_string(),
                state => grant.state(),
                status,
            },
            qr,
            refresh,
            steps,
        },
    )
}
