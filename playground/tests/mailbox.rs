//! The mailbox page: a mail the provider sends (the code for an address bob adds on his account
//! page) shows there, newest first, with its code, which confirms the address.

mod common;

use common::{browser, get_text, password, start_in_temp_dir};
use scraper::{Html, Selector};
use test_clients::pages::{form_matching, set};

#[tokio::test]
async fn a_code_mailed_to_bob_shows_on_the_mailbox_page() {
    let (_dir, playground) = start_in_temp_dir().await;
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
    let browser = browser();
    let login_page = issuer.join("login").unwrap();
    let emails_page = issuer.join("account?action=emails").unwrap();
    let login = get_text(&browser, login_page.clone()).await;
    let (action, mut fields) = form_matching(&login, &login_page, "form").unwrap();
    set(&mut fields, "username", "bob");
    set(&mut fields, "password", &password(&playground, "bob"));
    let signed_in = browser.post(action).form(&fields).send().await.unwrap();
    assert_eq!(signed_in.status(), 303);
    let emails = get_text(&browser, emails_page.clone()).await;
    let (action, mut fields) = form_matching(&emails, &emails_page, "#add-email").unwrap();
    set(&mut fields, "email", "bob@example.org");
    let added = browser.post(action).form(&fields).send().await.unwrap();
    assert_eq!(added.status(), 303);

    // The mailbox shows it, with the code standing out.
    let page = get_text(&http, dashboard.join("mailbox").unwrap()).await;
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
    let emails = get_text(&browser, emails_page.clone()).await;
    let (action, mut fields) = form_matching(&emails, &emails_page, "form[id^=verify-]").unwrap();
    set(&mut fields, "code", &code);
    let confirmed = browser.post(action).form(&fields).send().await.unwrap();
    let to = confirmed.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("done=verified"), "{to}");
    playground.stop().await.unwrap();
}
