//! Mail over SMTP to a real SMTP server started by the test (see `smtp_sink`): plain to a
//! loopback relay with `AUTH`, STARTTLS and implicit TLS with a private certificate authority,
//! and the failures that must not lose anything (an untrusted certificate, a relay without
//! STARTTLS when it is required). And the checks of the `email` section.

mod smtp_sink;
mod support;

use provider::{
    backend_tests,
    config::{self, GenerateOptions},
    test_harness::{TestDb, TestProvider},
};
use smtp_sink::{Received, Security, SmtpSink};
use support::{add_user, browser, get_text, location, param, text};

const PASSWORD: &str = "correct horse battery staple";
const RELAY_USER: &str = "provider";
const RELAY_PASSWORD: &str = "relay secret 42";

/// A provider sending through `sink` (`mode`, `hostname`), with the relay credentials and
/// `extra` overrides.
async fn provider_for(
    db: &TestDb,
    sink: &SmtpSink,
    mode: &str,
    hostname: &str,
    extra: &[(&str, &str)],
) -> TestProvider {
    let port = sink.addr.port().to_string();
    let mut overrides = vec![
        ("PROVIDER__EMAIL__TRANSPORT", "smtp"),
        ("PROVIDER__EMAIL__HOSTNAME", hostname),
        ("PROVIDER__EMAIL__PORT", port.as_str()),
        ("PROVIDER__EMAIL__MODE", mode),
        ("PROVIDER__EMAIL__USERNAME", RELAY_USER),
        ("PROVIDER__EMAIL__PASSWORD", RELAY_PASSWORD),
        ("PROVIDER__EMAIL__FROM", "Matrix <noreply@example.org>"),
    ];
    overrides.extend_from_slice(extra);
    TestProvider::start_with(db, &overrides).await
}

/// Signs alice in and adds `address` on the emails page; where the answer sends the browser.
async fn add_address(provider: &TestProvider, address: &str) -> (reqwest::Client, url::Url) {
    let base = provider.base_url.clone();
    let browser = browser();
    let login = get_text(&browser, provider.url("/login")).await;
    let signed_in = support::submit(
        &browser,
        &base,
        &login,
        &[("username", "alice"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(signed_in.status(), 303);
    let page = get_text(&browser, provider.url("/account?action=emails")).await;
    let (action, mut fields) = form_by_id(&page, "add-email");
    support::set(&mut fields, "email", address);
    let response = browser
        .post(base.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    let to = location(&response, &base);
    (browser, to)
}

/// A form of a page by its `id`: action and fields.
fn form_by_id(html: &str, id: &str) -> (String, Vec<(String, String)>) {
    let doc = scraper::Html::parse_document(html);
    let form = doc
        .select(&scraper::Selector::parse(&format!("form#{id}")).unwrap())
        .next()
        .unwrap_or_else(|| panic!("form #{id} in {html}"));
    let action = form.value().attr("action").unwrap().to_owned();
    let fields = form
        .select(&scraper::Selector::parse("input[name]").unwrap())
        .map(|i| {
            (
                i.value().attr("name").unwrap().to_owned(),
                i.value().attr("value").unwrap_or("").to_owned(),
            )
        })
        .collect();
    (action, fields)
}

/// The 6-digit code in a received message's text part.
fn code_in(message: &Received) -> String {
    message
        .data
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("a code in {}", message.data))
        .to_owned()
}

/// Enters the code on the emails page: the address is confirmed (so it was the right one).
async fn confirm_with(provider: &TestProvider, browser: &reqwest::Client, code: &str) {
    let base = provider.base_url.clone();
    let page = get_text(browser, provider.url("/account?action=emails")).await;
    let doc = scraper::Html::parse_document(&page);
    let id = doc
        .select(&scraper::Selector::parse("form[id^=verify-]").unwrap())
        .next()
        .unwrap_or_else(|| panic!("a code form in {page}"))
        .value()
        .attr("id")
        .unwrap()
        .to_owned();
    let (action, mut fields) = form_by_id(&page, &id);
    support::set(&mut fields, "code", code);
    let response = browser
        .post(base.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(
        param(&location(&response, &base), "done").as_deref(),
        Some("verified")
    );
}

/// Checks one delivered verification mail and confirms the address with its code.
async fn delivered(provider: &TestProvider, browser: &reqwest::Client, sink: &SmtpSink, tls: bool) {
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let message = &received[0];
    assert_eq!(message.to, ["alice@example.org"]);
    assert_eq!(message.from, "noreply@example.org");
    assert_eq!(message.tls, tls);
    assert_eq!(
        message.auth,
        Some((RELAY_USER.to_owned(), RELAY_PASSWORD.to_owned()))
    );
    assert_eq!(
        message.header("Subject").as_deref(),
        Some("Confirm your email address for localhost")
    );
    assert_eq!(
        message.header("From").as_deref(),
        Some("Matrix <noreply@example.org>")
    );
    assert_eq!(message.header("To").as_deref(), Some("alice@example.org"));
    assert!(message.header("Date").is_some());
    assert!(message
        .header("Message-ID")
        .is_some_and(|id| id.ends_with("@example.org>")));
    assert!(message
        .header("Content-Type")
        .is_some_and(|t| t.starts_with("multipart/alternative")));
    confirm_with(provider, browser, &code_in(message)).await;
}

/// Plain SMTP to a relay on loopback, with `AUTH`: the message arrives with the right
/// recipient, subject and code.
async fn smtp_plain_to_a_loopback_relay(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let sink = SmtpSink::start(Security::Plain, Some((RELAY_USER, RELAY_PASSWORD))).await;
    let provider = provider_for(&db, &sink, "plain", "127.0.0.1", &[]).await;
    let (browser, to) = add_address(&provider, "alice@example.org").await;
    assert_eq!(param(&to, "done").as_deref(), Some("code_sent"));
    delivered(&provider, &browser, &sink, false).await;
    provider.stop().await;
}

/// The relay's certificate authority, written where the configuration names it.
fn ca_file(sink: &SmtpSink) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &sink.cert_pem).unwrap();
    file
}

/// STARTTLS (required), the relay's certificate trusted through `ca_certificate_file`.
async fn smtp_starttls_with_a_private_ca(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let sink = SmtpSink::start(Security::StartTls, Some((RELAY_USER, RELAY_PASSWORD))).await;
    let ca = ca_file(&sink);
    let path = ca.path().display().to_string();
    let provider = provider_for(
        &db,
        &sink,
        "starttls",
        "localhost",
        &[("PROVIDER__EMAIL__CA_CERTIFICATE_FILE", &path)],
    )
    .await;
    let (browser, to) = add_address(&provider, "alice@example.org").await;
    assert_eq!(param(&to, "done").as_deref(), Some("code_sent"));
    delivered(&provider, &browser, &sink, true).await;
    provider.stop().await;
}

/// Implicit TLS (RFC 8314).
async fn smtp_implicit_tls(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let sink = SmtpSink::start(Security::Implicit, Some((RELAY_USER, RELAY_PASSWORD))).await;
    let ca = ca_file(&sink);
    let path = ca.path().display().to_string();
    let provider = provider_for(
        &db,
        &sink,
        "tls",
        "localhost",
        &[("PROVIDER__EMAIL__CA_CERTIFICATE_FILE", &path)],
    )
    .await;
    let (browser, to) = add_address(&provider, "alice@example.org").await;
    assert_eq!(param(&to, "done").as_deref(), Some("code_sent"));
    delivered(&provider, &browser, &sink, true).await;
    provider.stop().await;
}

/// A relay the provider can't trust (its certificate is not from a known authority), and one
/// that doesn't offer STARTTLS when it is required: nothing is sent (no credentials, no mail in
/// the clear), the page says the mail failed, and the address stays, ready for a new code.
async fn an_untrusted_or_plain_relay_gets_nothing(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    for security in [Security::StartTls, Security::Plain] {
        let sink = SmtpSink::start(security, Some((RELAY_USER, RELAY_PASSWORD))).await;
        let provider = provider_for(&db, &sink, "starttls", "localhost", &[]).await;
        let address = format!("alice+{security:?}@example.org").to_lowercase();
        let (browser, to) = add_address(&provider, &address).await;
        assert_eq!(
            param(&to, "done").as_deref(),
            Some("mail_failed"),
            "{security:?}"
        );
        let (status, page) = text(browser.get(to).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert!(page.contains("could not be sent right now"), "{page}");
        assert!(page.contains(&address), "the address is kept: {page}");
        assert!(sink.received().is_empty(), "{security:?}");
        provider.stop().await;
    }
}

backend_tests!(
    smtp_plain_to_a_loopback_relay,
    smtp_starttls_with_a_private_ca,
    smtp_implicit_tls,
    an_untrusted_or_plain_relay_gets_nothing,
);

/// The problems `config::parse` reports for a generated configuration with these overrides.
fn problems(overrides: &[(&str, &str)]) -> Vec<String> {
    use rand::SeedableRng as _;
    let clock = provider::clock::MockClock::default();
    let text = config::generate(
        &mut rand::rngs::StdRng::seed_from_u64(3),
        &clock,
        &GenerateOptions::default(),
    )
    .unwrap();
    let env = overrides
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    match config::parse(&text, env, std::path::Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_email_section_is_checked() {
    // The defaults: no mail, nothing that needs it.
    assert_eq!(problems(&[]), Vec::<String>::new());
    let smtp = ("PROVIDER__EMAIL__TRANSPORT", "smtp");
    for (overrides, expected) in [
        (vec![smtp], "email.hostname: required by `transport: smtp`"),
        (
            vec![
                smtp,
                ("PROVIDER__EMAIL__HOSTNAME", "smtp.example.org"),
                ("PROVIDER__EMAIL__MODE", "plain"),
            ],
            "email.mode: `plain` (no TLS) is only allowed to a relay on loopback",
        ),
        (
            vec![
                smtp,
                ("PROVIDER__EMAIL__HOSTNAME", "smtp.example.org"),
                ("PROVIDER__EMAIL__USERNAME", "me"),
            ],
            "email.password: required with `username`",
        ),
        (
            vec![
                smtp,
                ("PROVIDER__EMAIL__HOSTNAME", "smtp.example.org"),
                (
                    "PROVIDER__EMAIL__CA_CERTIFICATE_FILE",
                    "/nonexistent/ca.pem",
                ),
            ],
            "email.ca_certificate_file: can't read /nonexistent/ca.pem",
        ),
        (
            vec![
                ("PROVIDER__EMAIL__TRANSPORT", "capture"),
                ("PROVIDER__EMAIL__HOSTNAME", "smtp.example.org"),
            ],
            "email.hostname: only used by `transport: smtp`",
        ),
        (
            vec![("PROVIDER__EMAIL__FROM", "not an address")],
            "email.from: `not an address` is not a mail address",
        ),
        (
            vec![("PROVIDER__EMAIL__MODE", "ssl")],
            "email.mode: unknown variant `ssl`",
        ),
        (
            vec![("PROVIDER__ACCOUNT__PASSWORD_RECOVERY_ENABLED", "true")],
            "account.password_recovery_enabled: needs mail",
        ),
        (
            vec![(
                "PROVIDER__ACCOUNT__PASSWORD_REGISTRATION_EMAIL_REQUIRED",
                "true",
            )],
            "account.password_registration_email_required: needs mail",
        ),
    ] {
        let found = problems(&overrides);
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{overrides:?}: expected `{expected}` in {found:#?}"
        );
    }
    // Loopback relays may go without TLS; a relay with TLS may be anywhere.
    for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
        assert_eq!(
            problems(&[
                smtp,
                ("PROVIDER__EMAIL__HOSTNAME", host),
                ("PROVIDER__EMAIL__MODE", "plain"),
            ]),
            Vec::<String>::new(),
            "{host}"
        );
    }
    assert_eq!(
        problems(&[
            smtp,
            ("PROVIDER__EMAIL__HOSTNAME", "smtp.example.org"),
            ("PROVIDER__EMAIL__USERNAME", "me"),
            ("PROVIDER__EMAIL__PASSWORD", "secret"),
            ("PROVIDER__ACCOUNT__PASSWORD_RECOVERY_ENABLED", "true"),
        ]),
        Vec::<String>::new()
    );
}
