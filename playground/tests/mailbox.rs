//! The mailbox page: a mail the provider sends (the code for an address bob adds on his account
//! page) shows there, newest first, with its code, which confirms the address.

mod common;

use common::{options, password, start};
use reqwest::redirect::Policy;
use scraper::{Html, Selector};

/// The named inputs of the form `selector` of a page, and its action.
fn form(html: &str, selector: &str) -> (String, Vec<(String, String)>) {
    let doc = Html::parse_document(html);
    let form = doc
        .select(&Selector::parse(selector).unwrap())
        .next()
        .unwrap_or_else(|| panic!("{selector} in {html}"));
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
    (form.value().attr("action").unwrap().to_owned(), fields)
}

fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.retain(|(n, _)| n != name);
    fields.push((name.to_owned(), value.to_owned()));
}

#[tokio::test]
async fn a_code_mailed_to_bob_shows_on_the_mailbox_page() {
    let dir = tempfile::tempdir().unwrap();
    let playground = start(&options(dir.path())).await;
    let issuer = playground.urls.issuer.clone();
    let dashboard = playground.urls.dashboard.clone();
    let http = reqwest::Client::new();

    let empty = http
        .get(dashboard.join("mailbox").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 200);
    let empty = empty.text().await.unwrap();
    assert!(empty.contains(r#"id="no-mail""#), "{empty}");
    assert!(
        empty.contains(r#"href="&#x2f;mailbox" aria-current="page""#),
        "the navigation links it: {empty}"
    );

    // bob signs in and adds an address on his account page.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap();
    let login = browser
        .get(issuer.join("login").unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (action, mut fields) = form(&login, "form");
    set(&mut fields, "username", "bob");
    set(&mut fields, "password", &password(&playground, "bob"));
    let signed_in = browser
        .post(issuer.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let emails = browser
        .get(issuer.join("account?action=emails").unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (action, mut fields) = form(&emails, "#add-email");
    set(&mut fields, "email", "bob@example.org");
    let added = browser
        .post(issuer.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 303);

    // The mailbox shows it, with the code standing out.
    let page = http
        .get(dashboard.join("mailbox").unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc = Html::parse_document(&page);
    let text_of = |selector: &str| {
        doc.select(&Selector::parse(selector).unwrap())
            .next()
            .map(|e| e.text().collect::<String>())
            .unwrap_or_else(|| panic!("{selector} in {page}"))
    };
    assert_eq!(text_of(".mail-to"), "bob@example.org");
    assert_eq!(
        text_of(".mail-subject"),
        format!(
            "Confirm your email address for {}",
            playground.homeserver.server_name()
        )
    );
    let code = text_of(".mail-code");
    assert_eq!(code.len(), 6, "{page}");
    let listed: serde_json::Value = http
        .get(dashboard.join("mailbox.json").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["to"], "bob@example.org");

    // The code from the page confirms the address.
    let emails = browser
        .get(issuer.join("account?action=emails").unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (action, mut fields) = form(&emails, "form[id^=verify-]");
    set(&mut fields, "code", &code);
    let confirmed = browser
        .post(issuer.join(&action).unwrap())
        .form(&fields)
        .send()
        .await
        .unwrap();
    let to = confirmed.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("done=verified"), "{to}");
    playground.stop().await.unwrap();
}
