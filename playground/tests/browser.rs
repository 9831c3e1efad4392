//! The dashboard in a real browser: headless Chromium (Debian's `chromium` package) driven over
//! WebDriver (Debian's `chromium-driver`) clicks through the browser client's whole journey
//! (discovery, dynamic registration, authorization through the provider's sign-in and consent
//! pages, token exchange, whoami, refresh, revocation, RP-initiated logout), the exchange log
//! showing the homeserver's introspections during that journey, the device-flow panel (a grant
//! approved through `verification_uri_complete`) and the legacy login panel, asserting on what
//! the pages show.
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` the test says it was skipped and
//! passes; CI installs both (`.ci/run`).

mod common;

use std::{
    future::Future,
    net::{Ipv4Addr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _};
use common::{options, password, start};
use fantoccini::{error::CmdError, Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use playground::Playground;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page may take to show what a step should show.
const WAIT: Duration = Duration::from_secs(30);
/// The device panel polls the token endpoint every `interval` (5 s) once the page refreshes.
const DEVICE_WAIT: Duration = Duration::from_secs(60);
/// How often explicit waits look again.
const POLL: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_and_the_device_panel_work_in_chromium() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        provider::test_harness::skip_or_fail(&format!(
            "skipped: the browser test needs {CHROMIUM} and {CHROMEDRIVER} \
             (apt-get install chromium chromium-driver)"
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let playground = start(&options(&dir.path().join("data"))).await;
    let driver = Chromedriver::start().await;
    let browser = open_browser(&driver, &dir.path().join("profile")).await;

    let journey = async {
        client_journey(&browser, &playground)
            .await
            .context("the browser client's journey")?;
        log_shows_introspections(&browser, &playground)
            .await
            .context("the exchange log")?;
        device_journey(&browser, &playground)
            .await
            .context("the device flow panel")?;
        legacy_journey(&browser, &playground)
            .await
            .context("the legacy login panel")
    }
    .await;
    // Say where the browser was before closing it (a panic would leave Chromium running).
    let failure = match journey {
        Ok(()) => None,
        Err(error) => Some(format!(
            "{error:#}\n\n{}\n\nThe last exchanges with the provider and the homeserver:\n{}",
            where_it_stopped(&browser).await,
            last_exchanges(&playground, 12),
        )),
    };
    browser.close().await.expect("the browser session closes");
    drop(driver);
    playground.stop().await.unwrap();
    if let Some(failure) = failure {
        panic!("{failure}");
    }
}

/// The browser client page (`/client`), one button after the other.
async fn client_journey(b: &Client, playground: &Playground) -> anyhow::Result<()> {
    let urls = &playground.urls;
    let issuer = urls.issuer.as_str();
    let mut steps = Steps::default();
    b.goto(&urls.client_page()).await?;
    let homeserver = wait_for(b, "#homeserver").await?;
    ensure!(
        homeserver.prop("value").await?.as_deref() == Some(urls.homeserver.as_str()),
        "the homeserver field is filled in with the playground's homeserver"
    );

    // 1. Discovery through the homeserver.
    click(b, "discover").await?;
    let versions = steps.next(b).await?;
    versions.expect("Spec versions", "ok", &["HTTP 200", "\"versions\""])?;
    let metadata = steps.next(b).await?;
    metadata.expect(
        "The provider's metadata, through the homeserver",
        "ok",
        &["HTTP 200", &format!("\"issuer\": \"{issuer}\"")],
    )?;
    ensure!(
        fact(b, "Issuer").await? == issuer,
        "the state shows the issuer"
    );

    // 2. Dynamic registration (a native client on plain-http loopback).
    click(b, "register").await?;
    let registration = steps.next(b).await?;
    registration.expect(
        "Dynamic client registration",
        "ok",
        &[
            "HTTP 201",
            "\"client_id\"",
            "\"application_type\": \"native\"",
        ],
    )?;
    let client_id = fact(b, "client_id").await?;
    ensure!(
        registration.response.contains(&client_id) && client_id != "—",
        "the state shows the registered client_id ({client_id})"
    );

    // 3. Authorization: the provider's sign-in and consent pages, then back to /callback.
    click(b, "authorize").await?;
    sign_in(b, "alice", &password(playground, "alice")).await?;
    let consent = wait_for(b, "button[value='allow']").await?;
    let page = text(b, "main").await?;
    ensure!(
        page.contains("Playground browser client") && page.contains("alice"),
        "the consent page names the client and the user: {page}"
    );
    consent.click().await?;
    // Back on the client page: the request it sent before leaving, and the answer.
    let request = steps.next(b).await?;
    request.expect("Authorization request", "note", &["sign in, consent"])?;
    ensure!(
        request.request.contains("code_challenge_method=S256")
            && request.request.contains(&format!("client_id={client_id}")),
        "the authorization request is shown: {request:#?}"
    );
    let back = steps.next(b).await?;
    back.expect(
        "Authorization response",
        "ok",
        &["code=", "state=", &format!("iss={issuer}")],
    )?;
    let device_id = fact(b, "Device ID").await?;
    ensure!(
        device_id.len() == 10 && device_id.chars().all(|c| c.is_ascii_uppercase()),
        "the state shows the device ID asked for ({device_id})"
    );
    ensure!(
        b.current_url().await?.path() == "/client",
        "the page drops the code from its address"
    );

    // 4. Token exchange (and the ID token's claims, decoded).
    click(b, "token").await?;
    steps.next(b).await?.expect(
        "Token request",
        "ok",
        &[
            "HTTP 200",
            "\"access_token\": \"mat_",
            "\"refresh_token\": \"mar_",
            "\"id_token\"",
            &format!("urn:matrix:client:device:{device_id}"),
        ],
    )?;
    steps.next(b).await?.expect(
        "The ID token's claims",
        "note",
        &[
            &format!("\"iss\": \"{issuer}\""),
            &format!("\"aud\": \"{client_id}\""),
            "\"nonce\"",
        ],
    )?;
    let first_access = fact(b, "Access token").await?;
    ensure!(
        first_access.starts_with("mat_"),
        "the state shows the access token ({first_access})"
    );

    // 5. whoami on the homeserver.
    let user_id = "@alice:localhost";
    let whoami_ok = [
        "HTTP 200",
        &format!("\"user_id\": \"{user_id}\""),
        &format!("\"device_id\": \"{device_id}\""),
    ];
    click(b, "whoami").await?;
    steps.next(b).await?.expect("whoami", "ok", &whoami_ok)?;

    // 6. Refresh: a new pair, which works.
    click(b, "refresh").await?;
    steps.next(b).await?.expect(
        "Refresh",
        "ok",
        &[
            "HTTP 200",
            "\"access_token\": \"mat_",
            "\"refresh_token\": \"mar_",
        ],
    )?;
    let second_access = fact(b, "Access token").await?;
    ensure!(
        second_access.starts_with("mat_") && second_access != first_access,
        "the state shows the new access token ({first_access} → {second_access})"
    );
    click(b, "whoami").await?;
    steps.next(b).await?.expect("whoami", "ok", &whoami_ok)?;

    // 7. Revocation: the token dies on the homeserver at once.
    click(b, "revoke").await?;
    steps
        .next(b)
        .await?
        .expect("Revocation", "ok", &["HTTP 200"])?;
    let revoked = fact(b, "Access token").await?;
    ensure!(
        revoked.ends_with("(revoked)"),
        "the state says the token is revoked ({revoked})"
    );
    click(b, "whoami").await?;
    steps
        .next(b)
        .await?
        .expect("whoami", "failed", &["HTTP 401", "M_UNKNOWN_TOKEN"])?;

    // 8. RP-initiated logout: the provider asks, signs out, and sends the browser back.
    click(b, "logout").await?;
    let sign_out = wait_for(b, "form.choices button[type='submit']").await?;
    let page = text(b, "main").await?;
    ensure!(
        page.contains("Sign out?") && page.contains("alice"),
        "the provider asks before signing out: {page}"
    );
    sign_out.click().await?;
    let request = steps.next(b).await?;
    request.expect(
        "RP-initiated logout",
        "note",
        &["the provider asks to confirm"],
    )?;
    ensure!(
        request.request.contains("id_token_hint="),
        "the logout request is shown: {request:#?}"
    );
    steps.next(b).await?.expect(
        "Back from the provider's logout",
        "ok",
        &["whoami now fails"],
    )?;
    ensure!(
        b.current_url().await?.path() == "/client",
        "the browser is back on the client page"
    );
    steps.none_after(b).await
}

/// The device flow panel (`/device`): start a grant, approve it through
/// `verification_uri_complete` in the same browser, and see the device get its tokens.
async fn device_journey(b: &Client, playground: &Playground) -> anyhow::Result<()> {
    let urls = &playground.urls;
    b.goto(&format!("{}device", urls.dashboard)).await?;
    let scope = wait_for(b, "input[name='scope']")
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    let device_id = scope
        .split(' ')
        .find_map(|s| s.strip_prefix("urn:matrix:client:device:"))
        .ok_or_else(|| anyhow!("the form's scope asks for a device ({scope})"))?
        .to_owned();
    wait_for(b, "form[action='/device'] button")
        .await?
        .click()
        .await?;

    // The grant's page: the user code, the link with it, and its QR code. The page refreshes
    // itself while it waits, so each read is retried until one lands between two refreshes.
    wait_for(b, ".user-code").await?;
    let grant_page = b.current_url().await?;
    ensure!(
        grant_page.path().starts_with("/device/"),
        "the panel shows the grant ({grant_page})"
    );
    let (user_code, complete, qr) = eventually(WAIT, || async move {
        let user_code = b
            .find(Locator::Css(".user-code"))
            .await?
            .text()
            .await?
            .trim()
            .to_owned();
        let complete = b
            .find(Locator::XPath(
                "//a[normalize-space()='the link with the code']",
            ))
            .await?
            .attr("href")
            .await?
            .unwrap_or_default();
        let qr = b.find(Locator::Css("img.qr")).await?;
        let loaded = b
            .execute(
                "const img = arguments[0]; return img.complete && img.naturalWidth > 0;",
                vec![serde_json::to_value(&qr)?],
            )
            .await?;
        ensure!(loaded == json!(true), "the QR code image has loaded");
        let src = qr.prop("src").await?.unwrap_or_default();
        Ok((user_code, complete, src))
    })
    .await?;
    ensure!(
        user_code.len() == 9 && user_code.chars().nth(4) == Some('-'),
        "the panel shows a user code like XXXX-XXXX ({user_code})"
    );
    let complete = url::Url::parse(&complete).context("verification_uri_complete")?;
    ensure!(
        complete
            .as_str()
            .starts_with(&format!("{}link", urls.issuer))
            && complete
                .query_pairs()
                .any(|(k, v)| k == "code" && v == user_code),
        "verification_uri_complete is the provider's link page with the code ({complete})"
    );

    // The QR code is an SVG picture of that link.
    b.goto(&qr).await?;
    let svg = wait_for(b, "svg").await?;
    ensure!(
        svg.find_all(Locator::Css("rect, path")).await?.len() >= 2,
        "the QR code is drawn"
    );

    // Approve on the provider's pages (the client journey signed out: sign in again).
    b.goto(complete.as_str()).await?;
    sign_in(b, "alice", &password(playground, "alice")).await?;
    let code = wait_for(b, "#code").await?;
    ensure!(
        code.prop("value").await?.as_deref() == Some(user_code.as_str()),
        "the link page is filled in with the code"
    );
    wait_for(b, "form button[type='submit']")
        .await?
        .click()
        .await?;
    let allow = wait_for(b, "button[value='allow']").await?;
    let shown = text(b, "#user-code").await?;
    ensure!(
        shown == user_code,
        "the approval page shows the device's code ({shown})"
    );
    let page = text(b, "main").await?;
    ensure!(
        page.contains(&format!("Device {device_id}")),
        "the approval page names the device: {page}"
    );
    allow.click().await?;
    wait_until(
        b,
        Locator::XPath("//h1[normalize-space()='Device connected']"),
        WAIT,
    )
    .await?;

    // Back on the panel: at its next poll the device has its tokens, and whoami works.
    b.goto(grant_page.as_str()).await?;
    wait_until(b, Locator::Css("p.status.approved"), DEVICE_WAIT).await?;
    let status = text(b, "p.status").await?;
    ensure!(
        status.contains("the device has its tokens"),
        "the panel says it is approved ({status})"
    );
    let mut shown = Vec::new();
    for section in b.find_all(Locator::Css("section.step")).await? {
        shown.push(Step::read(&section).await?);
    }
    let titles: Vec<&str> = shown.iter().map(|s| s.title.as_str()).collect();
    ensure!(
        shown.len() == 3,
        "the panel shows the start, the last poll and whoami: {titles:?}"
    );
    shown[0].expect(
        "Device authorization request",
        "ok",
        &["HTTP 200", &user_code, "\"verification_uri_complete\""],
    )?;
    shown[1].expect(
        "Device access token request",
        "ok",
        &["HTTP 200", "\"access_token\"", "\"refresh_token\""],
    )?;
    shown[2].expect(
        "whoami",
        "ok",
        &[
            "HTTP 200",
            "\"user_id\": \"@alice:localhost\"",
            &format!("\"device_id\": \"{device_id}\""),
        ],
    )?;

    // The panel lists the grant as approved.
    b.goto(&format!("{}device", urls.dashboard)).await?;
    let listed = wait_until(
        b,
        Locator::XPath(&format!("//li[code[normalize-space()='{user_code}']]")),
        WAIT,
    )
    .await?
    .text()
    .await?;
    ensure!(
        listed.contains("approved"),
        "the grant is listed ({listed})"
    );
    Ok(())
}

/// The exchange log page (`/log`, live over server-sent events) shows the introspections the
/// homeserver made at the provider while the client journey called whoami: one per access token
/// it had not seen (the first and the refreshed one), the token and the shared secret elided.
async fn log_shows_introspections(b: &Client, playground: &Playground) -> anyhow::Result<()> {
    b.goto(&format!("{}log", playground.urls.dashboard)).await?;
    wait_for(b, "#filter")
        .await?
        .send_keys("/oauth2/introspect")
        .await?;
    let shown = eventually(WAIT, || async move {
        let mut shown = Vec::new();
        for entry in b
            .find_all(Locator::Css("#log details.entry:not([hidden])"))
            .await?
        {
            shown.push(entry.prop("textContent").await?.unwrap_or_default());
        }
        let introspections = shown
            .iter()
            .filter(|t| t.contains("homeserver → provider") && t.contains("POST"))
            .count();
        ensure!(
            introspections >= 2,
            "{introspections} introspections shown yet: {shown:#?}"
        );
        Ok(shown)
    })
    .await?;
    for entry in &shown {
        ensure!(
            entry.contains("/oauth2/introspect") && entry.contains("200"),
            "the filter shows introspections answered 200 only: {entry}"
        );
        ensure!(
            entry.contains("token=<elided>") && entry.contains("Bearer <elided>"),
            "the token and the shared secret are elided: {entry}"
        );
        ensure!(
            !entry.contains(playground.settings.matrix.secret.as_str()),
            "the shared secret is not shown: {entry}"
        );
    }
    Ok(())
}

/// The legacy login panel (`/legacy`): `m.login.password` through the homeserver with a refresh
/// token, then refresh and log out, each a form post the dashboard must accept as its own.
async fn legacy_journey(b: &Client, playground: &Playground) -> anyhow::Result<()> {
    b.goto(&format!("{}legacy", playground.urls.dashboard))
        .await?;
    let username = wait_for(b, "form[action='/legacy'] input[name='username']").await?;
    username.clear().await?;
    username.send_keys("bob").await?;
    b.find(Locator::Css(
        "form[action='/legacy'] input[name='password']",
    ))
    .await?
    .send_keys(&password(playground, "bob"))
    .await?;
    let refresh = b
        .find(Locator::Css(
            "form[action='/legacy'] input[name='refresh_token']",
        ))
        .await?;
    if !refresh.is_selected().await? {
        refresh.click().await?;
    }
    b.find(Locator::Css("form[action='/legacy'] button"))
        .await?
        .click()
        .await?;
    // The login and whoami steps, shown with their answers.
    let shown = main_showing(b, &["@bob:localhost", "refresh_token"]).await?;
    ensure!(
        b.find_all(Locator::Css("section.step.failed"))
            .await?
            .is_empty(),
        "a legacy step failed: {shown}"
    );
    // Refresh, then log out: both forms are the dashboard's own posts.
    wait_for(b, "form[action='/legacy/refresh'] button")
        .await?
        .click()
        .await?;
    // The refresh is a page load: wait for its page before reaching for its logout button,
    // and find the button again if the old page's went stale under us.
    eventually(WAIT, || async move {
        if b.current_url().await?.path() != "/legacy/refresh" {
            return Err(anyhow!("the refresh page is not there yet"));
        }
        b.find(Locator::Css("form[action='/legacy/logout'] button"))
            .await?
            .click()
            .await?;
        Ok(())
    })
    .await?;
    // The token is dead afterwards: the homeserver answers whoami with 401.
    let after = main_showing(b, &["whoami after logging out"]).await?;
    ensure!(
        after.contains("HTTP 200 OK") && after.contains("HTTP 401"),
        "logout answered 200 and whoami 401 afterwards: {after}"
    );
    Ok(())
}

/// Fills in and sends the provider's sign-in form.
async fn sign_in(b: &Client, username: &str, password: &str) -> anyhow::Result<()> {
    let field = wait_for(b, "#username").await?;
    field.clear().await?;
    field.send_keys(username).await?;
    b.find(Locator::Css("#password"))
        .await?
        .send_keys(password)
        .await?;
    b.find(Locator::Css("form button[type='submit']"))
        .await?
        .click()
        .await?;
    Ok(())
}

/// Clicks a button of the client page once the page has enabled it.
async fn click(b: &Client, id: &str) -> anyhow::Result<()> {
    wait_for(b, &format!("#{id}:not([disabled])"))
        .await?
        .click()
        .await
        .with_context(|| format!("clicking #{id}"))
}

/// One value of the client page's state list (`<dt>name</dt><dd>value</dd>`).
async fn fact(b: &Client, name: &str) -> anyhow::Result<String> {
    let xpath =
        &format!("//dl[@id='state']/dt[normalize-space()='{name}']/following-sibling::dd[1]");
    // The list is redrawn with every step: read again what went stale.
    eventually(WAIT, || async move {
        let value = wait_until(b, Locator::XPath(xpath), WAIT)
            .await?
            .text()
            .await?;
        Ok(value.trim().to_owned())
    })
    .await
}

async fn text(b: &Client, selector: &str) -> anyhow::Result<String> {
    Ok(wait_for(b, selector).await?.text().await?.trim().to_owned())
}

/// The element the CSS `selector` finds, once there (at most [`WAIT`]).
async fn wait_for(b: &Client, selector: &str) -> anyhow::Result<fantoccini::elements::Element> {
    wait_until(b, Locator::Css(selector), WAIT).await
}

/// The element `locator` finds, once there (at most `limit`).
async fn wait_until(
    b: &Client,
    locator: Locator<'_>,
    limit: Duration,
) -> anyhow::Result<fantoccini::elements::Element> {
    b.wait()
        .at_most(limit)
        .every(POLL)
        .for_element(locator)
        .await
        .with_context(|| format!("waiting {limit:?} for `{locator:?}`"))
}

/// The text of `<main>` once it shows each of `texts` (the page may change under the reader).
async fn main_showing(b: &Client, texts: &[&str]) -> anyhow::Result<String> {
    eventually(WAIT, || async move {
        let text = b.find(Locator::Css("main")).await?.text().await?;
        match texts.iter().find(|t| !text.contains(**t)) {
            None => Ok(text),
            Some(missing) => Err(anyhow!("`{missing}` is not shown yet")),
        }
    })
    .await
}

/// Retries `read` until it succeeds (for pages that change under the reader), at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, mut read: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match read().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("still failing after {limit:?}")))
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// One step shown on a panel: `<section class="step ok|failed|note">` with its title and the
/// request and response it shows.
#[derive(Debug)]
struct Step {
    title: String,
    kind: String,
    request: String,
    response: String,
}

impl Step {
    async fn read(section: &fantoccini::elements::Element) -> Result<Self, CmdError> {
        let class = section.attr("class").await?.unwrap_or_default();
        let kind = class
            .split_whitespace()
            .find(|c| ["ok", "failed", "note"].contains(c))
            .unwrap_or_default()
            .to_owned();
        let title = section.find(Locator::Css("h3")).await?.text().await?;
        let pre = section.find_all(Locator::Css("pre")).await?;
        let mut texts = Vec::new();
        for p in &pre {
            texts.push(p.prop("textContent").await?.unwrap_or_default());
        }
        let mut texts = texts.into_iter();
        Ok(Self {
            title,
            kind,
            request: texts.next().unwrap_or_default(),
            response: texts.next().unwrap_or_default(),
        })
    }

    /// The step is the one titled `title`, of this kind, and its response shows each of `shows`.
    fn expect(&self, title: &str, kind: &str, shows: &[&str]) -> anyhow::Result<()> {
        ensure!(
            self.title.starts_with(title),
            "expected the step `{title}…`, the page shows {self:#?}"
        );
        ensure!(
            self.kind == kind,
            "expected `{title}` to be {kind}, the page shows {self:#?}"
        );
        for expected in shows {
            ensure!(
                self.response.contains(expected),
                "expected `{title}` to show `{expected}`, the page shows {self:#?}"
            );
        }
        Ok(())
    }
}

/// The client page's steps, read one after the other as the page adds them.
#[derive(Default)]
struct Steps {
    seen: usize,
}

impl Steps {
    /// Waits for the next step to appear and reads it.
    async fn next(&mut self, b: &Client) -> anyhow::Result<Step> {
        self.seen += 1;
        let selector = &format!("#steps > section.step:nth-child({})", self.seen);
        // The page redraws every step when it adds one: read again what went stale.
        eventually(WAIT, || async move {
            let section = wait_for(b, selector).await?;
            Ok(Step::read(&section).await?)
        })
        .await
        .with_context(|| format!("step {} never appeared", self.seen))
    }

    /// No step appeared beyond those read.
    async fn none_after(&self, b: &Client) -> anyhow::Result<()> {
        let shown = b.find_all(Locator::Css("#steps > section.step")).await?;
        if shown.len() != self.seen {
            let mut extra = Vec::new();
            for section in shown.iter().skip(self.seen) {
                extra.push(Step::read(section).await?);
            }
            bail!("unexpected steps: {extra:#?}");
        }
        Ok(())
    }
}

/// The current address and what the page says, for a failure message.
async fn where_it_stopped(b: &Client) -> String {
    let url = match b.current_url().await {
        Ok(url) => url.to_string(),
        Err(e) => format!("(unknown: {e})"),
    };
    let body = match b.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_else(|e| format!("({e})")),
        Err(e) => format!("(no body: {e})"),
    };
    format!("The browser was at {url}, showing:\n{body}")
}

/// The last `n` exchanges of the playground's log, one line each.
fn last_exchanges(playground: &Playground, n: usize) -> String {
    let entries = playground.log.entries_after(0);
    entries
        .iter()
        .skip(entries.len().saturating_sub(n))
        .map(|e| {
            format!(
                "  {} → {}: {} {} → {}",
                e.from,
                e.to.as_str(),
                e.method,
                e.path,
                e.status
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A chromedriver on a free loopback port; killed when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start() -> Self {
        let http = reqwest::Client::new();
        let mut last = String::new();
        // A free port can be taken between finding it and chromedriver binding it: try again.
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let mut driver = Self {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
            match driver.ready(&http).await {
                Ok(()) => return driver,
                Err(e) => last = e,
            }
        }
        panic!("chromedriver did not become ready: {last}");
    }

    /// Polls `/status` until chromedriver says it is ready.
    async fn ready(&mut self, http: &reqwest::Client) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!("chromedriver exited: {exit}"));
            }
            if let Ok(answer) = http.get(format!("{}/status", self.url)).send().await {
                if let Ok(status) = answer.json::<Value>().await {
                    if status["value"]["ready"] == json!(true) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer at {} after {WAIT:?}", self.url));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session with its own profile directory.
async fn open_browser(driver: &Chromedriver, profile: &Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                // Nothing leaves the machine (its network is closed anyway).
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--window-size=1280,1024",
                // Scrolling is instant, so elements stay where a click aims.
                "--force-prefers-reduced-motion",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("chromedriver opens a Chromium session")
}
