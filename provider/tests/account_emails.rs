//! The account pages' email addresses, display name and password, password recovery, and
//! registration with a required address: through the real router with a cookie-keeping
//! browser, on both databases, mail captured in memory (`email.transport: capture`), the fake
//! homeserver receiving the profile changes. Each `account` switch refusing its change, and the
//! `email` claims of the ID token.

mod support;

use std::time::Duration as StdDuration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chrono::Duration;
use provider::{
    backend_tests,
    core::email::{MailBox, SentMail},
    test_harness::{TestDb, TestProvider},
};
use scraper::{Html, Selector};
use serde_json::{json, Value};
use support::{
    add_user, authorize, authorize_url, browser, get_text, http, json_of, location, param,
    static_client, text, REDIRECT, VERIFIER,
};
use url::Url;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase";

const CAPTURE: (&str, &str) = ("PROVIDER__EMAIL__TRANSPORT", "capture");

/// The captured mails.
fn mailbox(provider: &TestProvider) -> MailBox {
    provider
        .state
        .mailer
        .mailbox()
        .expect("the capture transport")
}

/// The mails to `to`, waiting a little for those sent in the background (recovery links).
async fn mails_to(provider: &TestProvider, to: &str, count: usize) -> Vec<SentMail> {
    for _ in 0..100 {
        let mails = mailbox(provider).to(to);
        if mails.len() >= count {
            return mails;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    panic!(
        "expected {count} mails to {to}, got {:?}",
        mailbox(provider).list()
    );
}

/// The 6-digit code of a mail.
fn code_in(mail: &SentMail) -> String {
    mail.text
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("a code in {}", mail.text))
        .to_owned()
}

/// The link of a recovery mail.
fn link_in(mail: &SentMail) -> Url {
    let line = mail
        .text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http"))
        .unwrap_or_else(|| panic!("a link in {}", mail.text));
    Url::parse(line).unwrap()
}

/// A code that is not `code`.
fn wrong(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

/// Signs `username` in on the login page with `password`; the status of the answer.
async fn sign_in_with(
    browser: &reqwest::Client,
    base: &Url,
    username: &str,
    password: &str,
) -> u16 {
    let page = get_text(browser, base.join("/login").unwrap()).await;
    support::submit(
        browser,
        base,
        &page,
        &[("username", username), ("password", password)],
    )
    .await
    .status()
    .as_u16()
}

async fn sign_in(browser: &reqwest::Client, base: &Url, username: &str) {
    assert_eq!(sign_in_with(browser, base, username, PASSWORD).await, 303);
}

/// `GET /account` with a query: status and page.
async fn account(browser: &reqwest::Client, provider: &TestProvider, query: &str) -> (u16, String) {
    text(
        browser
            .get(provider.url(&format!("/account{query}")))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The form `selector` of a page: its action and its named inputs' values (passwords left
/// out).
fn form_of(html: &str, selector: &str) -> Option<(String, Vec<(String, String)>)> {
    let doc = Html::parse_document(html);
    let form = doc.select(&Selector::parse(selector).unwrap()).next()?;
    let action = form.value().attr("action").unwrap().to_owned();
    let fields = form
        .select(&Selector::parse("input[name]").unwrap())
        .filter(|i| i.value().attr("type") != Some("password"))
        .map(|i| {
            (
                i.value().attr("name").unwrap().to_owned(),
                i.value().attr("value").unwrap_or("").to_owned(),
            )
        })
        .collect();
    Some((action, fields))
}

/// Submits the form `selector` of a page with `fields` set.
async fn post_form(
    browser: &reqwest::Client,
    base: &Url,
    html: &str,
    selector: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let (action, mut form) =
        form_of(html, selector).unwrap_or_else(|| panic!("a form {selector} in {html}"));
    for (name, value) in fields {
        support::set(&mut form, name, value);
    }
    browser
        .post(base.join(&action).unwrap())
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Posts `/account` with this page's CSRF token (taken from any of its forms) and `fields`:
/// what a hand-made form would send.
async fn post_account(
    browser: &reqwest::Client,
    provider: &TestProvider,
    html: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let doc = Html::parse_document(html);
    let csrf = doc
        .select(&Selector::parse("input[name=csrf]").unwrap())
        .next()
        .unwrap_or_else(|| panic!("a CSRF token in {html}"))
        .value()
        .attr("value")
        .unwrap()
        .to_owned();
    let mut form = vec![("csrf".to_owned(), csrf)];
    form.extend(
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    browser
        .post(provider.url("/account"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// The text of the first element matching `selector`.
fn text_of(html: &str, selector: &str) -> Option<String> {
    let doc = Html::parse_document(html);
    doc.select(&Selector::parse(selector).unwrap())
        .next()
        .map(|e| e.text().collect::<String>())
}

/// The ID of the (only) address form of a kind (`verify`, `resend`, `remove`) for `email`.
fn email_form(html: &str, kind: &str, email: &str) -> String {
    let doc = Html::parse_document(html);
    let item = doc
        .select(&Selector::parse("#emails li").unwrap())
        .find(|li| li.text().collect::<String>().contains(email))
        .unwrap_or_else(|| panic!("{email} listed in {html}"));
    let id = item
        .value()
        .attr("id")
        .unwrap()
        .trim_start_matches("email-");
    format!("#{kind}-{id}")
}

/// Adds a confirmed address to a user, as an operator would.
async fn confirmed_email(db: &TestDb, username: &str, address: &str) {
    let mut repo = db.storage.begin().await.unwrap();
    let user = repo
        .users()
        .find_by_username(username)
        .await
        .unwrap()
        .unwrap();
    let email = repo.user_emails().add(user.id, address).await.unwrap();
    repo.user_emails().confirm(email.id).await.unwrap();
    repo.commit().await.unwrap();
}

/// Adds an address on the emails page; the follow-up page.
async fn add_email(
    browser: &reqwest::Client,
    provider: &TestProvider,
    address: &str,
) -> reqwest::Response {
    let (status, page) = account(browser, provider, "?action=emails").await;
    assert_eq!(status, 200, "{page}");
    post_form(
        browser,
        &provider.base_url,
        &page,
        "#add-email",
        &[("email", address)],
    )
    .await
}

/// Follows a redirect of the account pages; the page.
async fn follow(
    browser: &reqwest::Client,
    provider: &TestProvider,
    response: reqwest::Response,
) -> String {
    let to = location(&response, &provider.base_url);
    let (status, page) = text(browser.get(to).send().await.unwrap()).await;
    assert_eq!(status, 200, "{page}");
    page
}

/// Add an address, a wrong code, the right one (the homeserver gets the address), refusals
/// for a duplicate and for a malformed address, then remove it (the homeserver loses it).
async fn add_verify_and_remove_an_email(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start_with(&db, &[CAPTURE]).await;
    let base = provider.base_url.clone();
    let browser = browser();
    sign_in(&browser, &base, "alice").await;

    // The domain is compared without regard to case: stored in lower case.
    let response = add_email(&browser, &provider, "alice@EXAMPLE.org").await;
    let to = location(&response, &base);
    assert_eq!(param(&to, "action").as_deref(), Some("emails"));
    assert_eq!(param(&to, "done").as_deref(), Some("code_sent"));
    let page = follow(&browser, &provider, response).await;
    assert!(
        text_of(&page, "#account-notice")
            .unwrap()
            .contains("We mailed a code to alice@example.org"),
        "{page}"
    );
    let mails = mailbox(&provider).to("alice@example.org");
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].subject, "Confirm your email address for localhost");
    assert!(mails[0].html.contains(&code_in(&mails[0])));
    let code = code_in(&mails[0]);
    assert!(!mails[0].subject.contains(&code), "no code in the subject");

    // Listed, not confirmed, not on the homeserver.
    let (_, profile) = account(&browser, &provider, "").await;
    assert!(profile.contains("alice@example.org"), "{profile}");
    assert!(profile.contains("(not confirmed)"), "{profile}");

    let verify = email_form(&page, "verify", "alice@example.org");
    let (status, body) =
        text(post_form(&browser, &base, &page, &verify, &[("code", wrong(&code))]).await).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("Wrong code for alice@example.org. 4 tries left with this code."),
        "{body}"
    );
    // Typed with a space, as people copy it.
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let response = post_form(&browser, &base, &body, &verify, &[("code", &spaced)]).await;
    assert_eq!(
        param(&location(&response, &base), "done").as_deref(),
        Some("verified")
    );
    let page = follow(&browser, &provider, response).await;
    assert!(page.contains("alice@example.org is confirmed."), "{page}");
    assert!(
        form_of(&page, &verify).is_none(),
        "no code to enter any more"
    );
    assert_eq!(
        provider.homeserver.store().user("alice").unwrap().emails,
        ["alice@example.org"]
    );

    // The same address again; not an address at all.
    let (status, body) = text(add_email(&browser, &provider, "alice@example.org").await).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("This address is on your account already."),
        "{body}"
    );
    let (status, body) = text(add_email(&browser, &provider, "not an address").await).await;
    assert_eq!(status, 400);
    assert!(body.contains("Enter a valid email address"), "{body}");
    assert!(body.contains(r#"value="not an address""#), "kept: {body}");
    assert_eq!(mailbox(&provider).len(), 1, "no mail for refused additions");

    // Removed: gone from the homeserver too.
    let remove = email_form(&page, "remove", "alice@example.org");
    let response = post_form(&browser, &base, &page, &remove, &[]).await;
    let page = follow(&browser, &provider, response).await;
    assert!(page.contains("The address was removed."), "{page}");
    assert!(!page.contains("alice@example.org"), "{page}");
    assert!(provider
        .homeserver
        .store()
        .user("alice")
        .unwrap()
        .emails
        .is_empty());

    // Another user's address ID: unknown here.
    let (_, page) = account(&browser, &provider, "?action=emails").await;
    let (status, _) = text(
        post_account(
            &browser,
            &provider,
            &page,
            &[
                ("action", "remove_email"),
                ("email_id", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    provider.stop().await;
}

/// A code expires; a new one replaces it; five wrong codes use it up; mails to one address are
/// rate limited.
async fn codes_expire_and_wrong_ones_are_limited(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start_with(&db, &[CAPTURE]).await;
    let base = provider.base_url.clone();
    let browser = browser();
    sign_in(&browser, &base, "alice").await;

    let page = follow(
        &browser,
        &provider,
        add_email(&browser, &provider, "bob@example.org").await,
    )
    .await;
    let first = code_in(&mailbox(&provider).to("bob@example.org")[0]);
    let verify = email_form(&page, "verify", "bob@example.org");
    let resend = email_form(&page, "resend", "bob@example.org");

    db.clock.advance(Duration::minutes(16));
    let (status, body) =
        text(post_form(&browser, &base, &page, &verify, &[("code", &first)]).await).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("The code for bob@example.org has expired: send a new code."),
        "{body}"
    );

    // A new code: the old one no longer counts.
    let response = post_form(&browser, &base, &page, &resend, &[]).await;
    assert_eq!(
        param(&location(&response, &base), "done").as_deref(),
        Some("code_sent")
    );
    let mails = mails_to(&provider, "bob@example.org", 2).await;
    let second = code_in(&mails[1]);
    if second != first {
        let (status, body) =
            text(post_form(&browser, &base, &page, &verify, &[("code", &first)]).await).await;
        assert_eq!(status, 400);
        assert!(body.contains("Wrong code"), "{body}");
    }
    // Wrong codes until none is left: then even the right one is refused.
    let mut last = String::new();
    for _ in 0..5 {
        let (status, body) =
            text(post_form(&browser, &base, &page, &verify, &[("code", wrong(&second))]).await)
                .await;
        assert_eq!(status, 400);
        last = body;
    }
    assert!(
        last.contains("Too many wrong codes for bob@example.org"),
        "{last}"
    );
    let (status, body) =
        text(post_form(&browser, &base, &page, &verify, &[("code", &second)]).await).await;
    assert_eq!(status, 400);
    assert!(body.contains("Too many wrong codes"), "{body}");

    // A third code works. (A second later: codes made at one instant of the test clock tie on
    // `created_at`, and the latest would then be picked by its random ID.)
    db.clock.advance(Duration::seconds(1));
    post_form(&browser, &base, &page, &resend, &[]).await;
    let third = code_in(&mails_to(&provider, "bob@example.org", 3).await[2]);
    let response = post_form(&browser, &base, &page, &verify, &[("code", &third)]).await;
    assert_eq!(
        param(&location(&response, &base), "done").as_deref(),
        Some("verified")
    );

    // Three mails to one address, then a wait (rate_limiting.email.per_address).
    let page = follow(
        &browser,
        &provider,
        add_email(&browser, &provider, "carol@example.org").await,
    )
    .await;
    let resend = email_form(&page, "resend", "carol@example.org");
    for _ in 0..2 {
        let response = post_form(&browser, &base, &page, &resend, &[]).await;
        assert_eq!(response.status(), 303);
    }
    let response = post_form(&browser, &base, &page, &resend, &[]).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body = response.text().await.unwrap();
    assert!(
        body.contains("Too many mails were sent to this address."),
        "{body}"
    );
    assert_eq!(mailbox(&provider).to("carol@example.org").len(), 3);
    provider.stop().await;
}

/// The display name is saved and pushed to the homeserver's profile; blank or multi-line
/// names are refused.
async fn display_name_reaches_the_homeserver(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let browser = browser();
    sign_in(&browser, &base, "alice").await;
    let (_, page) = account(&browser, &provider, "").await;
    assert_eq!(
        text_of(&page, "#display-name").as_deref(),
        Some("Not set here")
    );

    for (typed, error) in [
        ("   ", "Display name: enter a display name."),
        (
            "Alice\nLiddell",
            "Display name: a display name can&#x27;t hold control characters",
        ),
    ] {
        let (status, body) = text(
            post_form(
                &browser,
                &base,
                &page,
                "#display-name-form",
                &[("display_name", typed)],
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{typed:?}");
        assert!(body.contains(error), "{body}");
    }
    let response = post_form(
        &browser,
        &base,
        &page,
        "#display-name-form",
        &[("display_name", "  Alice Liddell ")],
    )
    .await;
    assert_eq!(
        location(&response, &base).as_str(),
        provider.url("/account?done=display_name")
    );
    let page = follow(&browser, &provider, response).await;
    assert!(page.contains("Your display name was saved."), "{page}");
    assert_eq!(
        text_of(&page, "#display-name").as_deref(),
        Some("Alice Liddell")
    );
    let on_homeserver = provider.homeserver.store().user("alice").unwrap();
    assert_eq!(on_homeserver.displayname.as_deref(), Some("Alice Liddell"));
    assert!(provider
        .homeserver
        .journal()
        .iter()
        .any(|e| e.path.ends_with("provision_user")));
    provider.stop().await;
}

/// The current password is required (a wrong one refused), the policy and the confirmation
/// apply; the new password works at once and the old one no longer does.
async fn password_change(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start(&db).await;
    let base = provider.base_url.clone();
    let browser = browser();
    sign_in(&browser, &base, "alice").await;
    let (status, page) = account(&browser, &provider, "?action=password").await;
    assert_eq!(status, 200, "{page}");
    // The newest password is the one in force: the new one comes later than the first.
    db.clock.advance(Duration::seconds(1));

    for (current, new, confirm, status, error) in [
        (
            "wrong password!",
            NEW_PASSWORD,
            NEW_PASSWORD,
            403,
            "Wrong current password.",
        ),
        (
            PASSWORD,
            NEW_PASSWORD,
            "something else",
            400,
            "The two new passwords differ.",
        ),
        (PASSWORD, "short", "short", 400, "New password:"),
        (
            "",
            NEW_PASSWORD,
            NEW_PASSWORD,
            400,
            "Enter your current password.",
        ),
    ] {
        let (got, body) = text(
            post_form(
                &browser,
                &base,
                &page,
                "#password-form",
                &[
                    ("current_password", current),
                    ("new_password", new),
                    ("new_password_confirm", confirm),
                ],
            )
            .await,
        )
        .await;
        assert_eq!(got, status, "{body}");
        assert!(body.contains(error), "{error}: {body}");
    }
    let response = post_form(
        &browser,
        &base,
        &page,
        "#password-form",
        &[
            ("current_password", PASSWORD),
            ("new_password", NEW_PASSWORD),
            ("new_password_confirm", NEW_PASSWORD),
        ],
    )
    .await;
    let page = follow(&browser, &provider, response).await;
    assert!(page.contains("Your password was changed."), "{page}");
    // This browser stays signed in.
    assert_eq!(account(&browser, &provider, "").await.0, 200);
    assert_eq!(
        sign_in_with(&support::browser(), &base, "alice", PASSWORD).await,
        401
    );
    assert_eq!(
        sign_in_with(&support::browser(), &base, "alice", NEW_PASSWORD).await,
        303
    );
    provider.stop().await;
}

/// A legacy `m.login.password` login of alice on a device, through the homeserver.
async fn legacy_login(provider: &TestProvider, device_id: &str) -> String {
    let (status, _, body) = json_of(
        http()
            .post(
                provider
                    .homeserver
                    .base_url()
                    .join("_matrix/client/v3/login")
                    .unwrap(),
            )
            .json(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "alice" },
                "password": PASSWORD,
                "device_id": device_id,
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// "Forgot password?" end to end: the same answer for a known and an unknown address, the link
/// from the mail sets a new password and signs every device out, once; an expired link is
/// refused.
async fn password_recovery(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    confirmed_email(&db, "alice", "alice@example.org").await;
    let provider = TestProvider::start_with(
        &db,
        &[
            CAPTURE,
            ("PROVIDER__ACCOUNT__PASSWORD_RECOVERY_ENABLED", "true"),
        ],
    )
    .await;
    let base = provider.base_url.clone();

    // Signed in elsewhere: a browser and a legacy device.
    let elsewhere = browser();
    sign_in(&elsewhere, &base, "alice").await;
    legacy_login(&provider, "RECOVERDEV").await;
    assert!(provider
        .homeserver
        .store()
        .has_device("alice", "RECOVERDEV"));

    let browser = browser();
    let login = get_text(&browser, provider.url("/login")).await;
    let link = Html::parse_document(&login)
        .select(&Selector::parse("#forgot-password").unwrap())
        .next()
        .map(|a| a.value().attr("href").unwrap().to_owned());
    assert_eq!(link.as_deref(), Some("/recover"));

    let form = get_text(&browser, provider.url("/recover")).await;
    let ask = |address: &'static str| {
        let browser = browser.clone();
        let form = form.clone();
        let base = base.clone();
        async move { text(post_form(&browser, &base, &form, "form", &[("email", address)]).await).await }
    };
    let (status, known) = ask("alice@EXAMPLE.org").await;
    assert_eq!(status, 200);
    assert!(
        known.contains("If an account has the confirmed address"),
        "{known}"
    );
    let (status, unknown) = ask("nobody@example.org").await;
    assert_eq!(status, 200);
    assert_eq!(
        known.replace("alice@example.org", "X"),
        unknown.replace("nobody@example.org", "X"),
        "the same answer whether or not an account has the address"
    );
    let (status, body) = ask("nonsense").await;
    assert_eq!(status, 400);
    assert!(body.contains("Enter a valid email address"), "{body}");

    let mail = mails_to(&provider, "alice@example.org", 1).await.remove(0);
    assert_eq!(mail.subject, "Reset your password on localhost");
    assert!(mail.text.contains("the account alice"), "{}", mail.text);
    let link = link_in(&mail);
    assert!(
        link.as_str().starts_with(&provider.url("/recover/")),
        "{link}"
    );
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert!(mailbox(&provider).to("nobody@example.org").is_empty());

    db.clock.advance(Duration::seconds(1));
    let (status, page) = text(browser.get(link.clone()).send().await.unwrap()).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("For the account <strong>alice</strong>"),
        "{page}"
    );
    let (status, body) = text(
        post_form(
            &browser,
            &base,
            &page,
            "form",
            &[
                ("new_password", NEW_PASSWORD),
                ("new_password_confirm", "different"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("The two passwords differ."), "{body}");
    let (status, body) = text(
        post_form(
            &browser,
            &base,
            &page,
            "form",
            &[
                ("new_password", NEW_PASSWORD),
                ("new_password_confirm", NEW_PASSWORD),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Your password was changed"), "{body}");

    // Every session ended: the other browser, the legacy device.
    let response = elsewhere
        .get(provider.url("/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&response, &base).path(), "/login");
    assert!(!provider
        .homeserver
        .store()
        .has_device("alice", "RECOVERDEV"));
    assert_eq!(
        sign_in_with(&support::browser(), &base, "alice", PASSWORD).await,
        401
    );
    assert_eq!(
        sign_in_with(&support::browser(), &base, "alice", NEW_PASSWORD).await,
        303
    );

    // Once only.
    let (status, body) = text(browser.get(link.clone()).send().await.unwrap()).await;
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("was used already"), "{body}");

    // An expired link (a fresh form: setting the password signed this browser out, with a new
    // CSRF token).
    let form = get_text(&browser, provider.url("/recover")).await;
    let (status, _) = text(
        post_form(
            &browser,
            &base,
            &form,
            "form",
            &[("email", "alice@example.org")],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let late = link_in(&mails_to(&provider, "alice@example.org", 2).await[1]);
    db.clock.advance(Duration::minutes(61));
    let (status, body) = text(browser.get(late).send().await.unwrap()).await;
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("has expired"), "{body}");
    // A made-up one.
    let (status, _) = text(
        browser
            .get(provider.url("/recover/madeUpTicket1234"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    provider.stop().await;
}

/// Registration asking for an address: no account (and no username taken) until the code is
/// entered; whoever confirms a username first gets it; the account is created with the address
/// confirmed and signed in.
async fn registration_with_a_required_email(db: TestDb) {
    let provider = TestProvider::start_with(
        &db,
        &[
            CAPTURE,
            ("PROVIDER__ACCOUNT__REGISTRATION", "true"),
            (
                "PROVIDER__ACCOUNT__PASSWORD_REGISTRATION_EMAIL_REQUIRED",
                "true",
            ),
        ],
    )
    .await;
    let base = provider.base_url.clone();
    let register = |browser: reqwest::Client, username: &'static str, email: &'static str| {
        let base = base.clone();
        let url = provider.url("/register");
        async move {
            let page = get_text(&browser, url).await;
            assert!(page.contains(r#"id="email""#), "{page}");
            post_form(
                &browser,
                &base,
                &page,
                "form",
                &[
                    ("username", username),
                    ("email", email),
                    ("password", PASSWORD),
                    ("password_confirm", PASSWORD),
                ],
            )
            .await
        }
    };
    let first = browser();
    let (status, body) = text(register(first.clone(), "dave", "not-an-address").await).await;
    assert_eq!(status, 400);
    assert!(body.contains("Enter a valid email address"), "{body}");
    assert!(body.contains(r#"value="dave""#), "{body}");

    let response = register(first.clone(), "dave", "dave@example.org").await;
    let verify = location(&response, &base);
    assert!(verify.path().starts_with("/register/verify/"), "{verify}");
    let mail = &mailbox(&provider).to("dave@example.org")[0];
    assert_eq!(mail.subject, "Finish creating your account on localhost");
    let dave_code = code_in(mail);
    // Nothing exists yet.
    let mut repo = db.storage.reader().await.unwrap();
    assert_eq!(repo.users().find_by_username("dave").await.unwrap(), None);
    drop(repo);
    assert!(provider.homeserver.store().user("dave").is_none());

    let page = get_text(&first, verify.clone()).await;
    assert!(page.contains("dave@example.org"), "{page}");
    let (status, body) = text(
        post_form(
            &first,
            &base,
            &page,
            "#register-verify",
            &[("code", wrong(&dave_code))],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("Wrong code. 4 tries left with this code."),
        "{body}"
    );

    // Someone else registers "dave" meanwhile and confirms first: theirs.
    let second = browser();
    let other = location(
        &register(second.clone(), "dave", "erin@example.org").await,
        &base,
    );
    let erin_code = code_in(&mailbox(&provider).to("erin@example.org")[0]);
    let other_page = get_text(&second, other).await;
    let response = post_form(
        &second,
        &base,
        &other_page,
        "#register-verify",
        &[("code", &erin_code)],
    )
    .await;
    assert_eq!(location(&response, &base).path(), "/login");
    let (status, body) = text(
        post_form(
            &first,
            &base,
            &page,
            "#register-verify",
            &[("code", &dave_code)],
        )
        .await,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("Someone else took this username"), "{body}");

    // Start over with another username; the code expires, a new one works.
    let response = register(first.clone(), "frank", "frank@example.org").await;
    let verify = location(&response, &base);
    let page = get_text(&first, verify.clone()).await;
    let old = code_in(&mailbox(&provider).to("frank@example.org")[0]);
    db.clock.advance(Duration::minutes(16));
    let (status, body) =
        text(post_form(&first, &base, &page, "#register-verify", &[("code", &old)]).await).await;
    assert_eq!(status, 400);
    assert!(body.contains("This code has expired"), "{body}");
    let (status, body) = text(post_form(&first, &base, &page, "#register-resend", &[]).await).await;
    assert_eq!(status, 200);
    assert!(body.contains("We mailed you a new code."), "{body}");
    let new = code_in(&mailbox(&provider).to("frank@example.org")[1]);
    let response = post_form(&first, &base, &page, "#register-verify", &[("code", &new)]).await;
    assert_eq!(location(&response, &base).path(), "/login");
    let signed_in = get_text(&first, provider.url("/login")).await;
    assert!(signed_in.contains("frank"), "signed in: {signed_in}");

    let mut repo = db.storage.reader().await.unwrap();
    let frank = repo
        .users()
        .find_by_username("frank")
        .await
        .unwrap()
        .unwrap();
    let emails = repo.user_emails().list_for_user(frank.id).await.unwrap();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].email, "frank@example.org");
    assert!(emails[0].confirmed_at.is_some());
    drop(repo);
    assert_eq!(
        provider.homeserver.store().user("frank").unwrap().emails,
        ["frank@example.org"]
    );
    // The password chosen at the start is the account's.
    assert_eq!(
        sign_in_with(&support::browser(), &base, "frank", PASSWORD).await,
        303
    );
    // Used: the page is gone.
    let (status, _) = text(first.get(verify).send().await.unwrap()).await;
    assert_eq!(status, 404);
    provider.stop().await;
}

/// Every `account` switch turned off: the pages leave the changes out, and forms posted anyway
/// get a 403 page saying so; recovery is off by default.
async fn account_switches_refuse_their_changes(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    let provider = TestProvider::start_with(
        &db,
        &[
            CAPTURE,
            ("PROVIDER__ACCOUNT__DISPLAY_NAME_CHANGE_ALLOWED", "false"),
            ("PROVIDER__ACCOUNT__EMAIL_CHANGE_ALLOWED", "false"),
            ("PROVIDER__ACCOUNT__PASSWORD_CHANGE_ALLOWED", "false"),
            ("PROVIDER__ACCOUNT__ACCOUNT_DEACTIVATION_ALLOWED", "false"),
        ],
    )
    .await;
    let base = provider.base_url.clone();
    let browser = browser();
    let login = get_text(&browser, provider.url("/login")).await;
    assert!(!login.contains("forgot-password"), "{login}");
    assert_eq!(
        text(browser.get(provider.url("/recover")).send().await.unwrap())
            .await
            .0,
        404
    );
    sign_in(&browser, &base, "alice").await;

    let (_, page) = account(&browser, &provider, "").await;
    assert!(form_of(&page, "#display-name-form").is_none(), "{page}");
    // A page with a form, for the CSRF token hand-made forms need.
    let (_, with_form) = account(
        &browser,
        &provider,
        "?action=org.matrix.cross_signing_reset",
    )
    .await;
    for hidden in [
        "action=emails",
        "action=password",
        "org.matrix.account_deactivate",
    ] {
        assert!(!page.contains(hidden), "{hidden}: {page}");
    }
    for (query, says) in [
        (
            "?action=emails",
            "Email addresses can&#x27;t be added or removed",
        ),
        ("?action=password", "Passwords can&#x27;t be changed"),
        (
            "?action=org.matrix.account_deactivate",
            "Accounts can&#x27;t be deactivated",
        ),
    ] {
        let (status, body) = account(&browser, &provider, query).await;
        assert_eq!(status, 403, "{query}");
        assert!(body.contains(says), "{query}: {body}");
    }
    for (fields, says) in [
        (
            vec![("action", "set_display_name"), ("display_name", "Al")],
            "Display names can&#x27;t be changed",
        ),
        (
            vec![("action", "add_email"), ("email", "alice@example.org")],
            "Email addresses can&#x27;t be added or removed",
        ),
        (
            vec![
                ("action", "change_password"),
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_confirm", NEW_PASSWORD),
            ],
            "Passwords can&#x27;t be changed",
        ),
        (
            vec![
                ("action", "deactivate"),
                ("password", PASSWORD),
                ("confirm", "yes"),
            ],
            "Accounts can&#x27;t be deactivated",
        ),
    ] {
        let (status, body) =
            text(post_account(&browser, &provider, &with_form, &fields).await).await;
        assert_eq!(status, 403, "{fields:?}: {body}");
        assert!(body.contains(says), "{body}");
    }
    // MSC4191: deactivation is not advertised either.
    let (_, _, metadata) = json_of(
        http()
            .get(provider.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let actions = metadata["account_management_actions_supported"]
        .as_array()
        .unwrap();
    assert!(
        actions.contains(&json!("org.matrix.profile")),
        "{actions:?}"
    );
    assert!(
        !actions.contains(&json!("org.matrix.account_deactivate")),
        "{actions:?}"
    );
    // Nothing changed.
    let _ = &page;
    let mut repo = db.storage.reader().await.unwrap();
    let alice = repo
        .users()
        .find_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    assert!(alice.is_active());
    assert_eq!(alice.display_name, None);
    assert!(repo
        .user_emails()
        .list_for_user(alice.id)
        .await
        .unwrap()
        .is_empty());
    drop(repo);
    assert!(mailbox(&provider).is_empty());
    assert_eq!(
        sign_in_with(&support::browser(), &base, "alice", PASSWORD).await,
        303
    );
    provider.stop().await;
}

/// The claims of an ID token.
fn id_token_claims(tokens: &Value) -> Value {
    let jwt = tokens["id_token"].as_str().expect("an ID token");
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The tokens of the static client's code flow with `scope`.
async fn tokens_for(provider: &TestProvider, browser: &reqwest::Client, scope: &str) -> Value {
    let url = authorize_url(provider, &[("scope", scope)]);
    let back = authorize(browser, &provider.base_url, &url, PASSWORD).await;
    let code = param(&back, "code").expect("a code");
    let (client_id, secret) = static_client(provider);
    let (status, _, tokens) = json_of(
        http()
            .post(provider.url("/oauth2/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

/// OIDC Core §5.4: with the `email` scope the ID token carries `email` and `email_verified`
/// (the confirmed address, as userinfo does); without it, neither. Discovery lists both claims.
async fn id_token_email_claims(db: TestDb) {
    add_user(&db, "alice", PASSWORD).await;
    confirmed_email(&db, "alice", "alice@example.org").await;
    let provider = TestProvider::start(&db).await;
    let browser = browser();

    let tokens = tokens_for(&provider, &browser, "openid email urn:matrix:client:api:*").await;
    let claims = id_token_claims(&tokens);
    assert_eq!(claims["email"], "alice@example.org", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
    let (status, _, userinfo) = json_of(
        http()
            .get(provider.url("/oauth2/userinfo"))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(userinfo["email"], claims["email"]);

    let tokens = tokens_for(&provider, &browser, "openid urn:matrix:client:api:*").await;
    let claims = id_token_claims(&tokens);
    assert!(claims.get("email").is_none(), "{claims}");
    assert!(claims.get("email_verified").is_none(), "{claims}");

    let (_, _, metadata) = json_of(
        http()
            .get(provider.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let supported = metadata["claims_supported"].as_array().unwrap();
    for claim in ["email", "email_verified"] {
        assert!(supported.contains(&json!(claim)), "{claim}");
    }
    provider.stop().await;
}

backend_tests!(
    add_verify_and_remove_an_email,
    codes_expire_and_wrong_ones_are_limited,
    display_name_reaches_the_homeserver,
    password_change,
    password_recovery,
    registration_with_a_required_email,
    account_switches_refuse_their_changes,
    id_token_email_claims,
);
