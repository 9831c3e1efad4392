//! The conformance page: it runs the conformance suite against this deployment in the
//! background and every MUST passes; the report shows as a table and downloads as JSON, JUnit
//! XML and Markdown; an issuer that can't be reached ends in a clear report, not an error; a
//! second run against the same issuer waits its turn; posts from other sites are refused.

mod common;

use std::time::Duration;

use common::{get_text, no_redirects, start_in_temp_dir};
use reqwest::{header, StatusCode};
use serde_json::Value;
use url::Url;

/// Posts the form; the run's page, from the redirect.
async fn post_run(http: &reqwest::Client, dashboard: &Url, form: &[(&str, &str)]) -> Url {
    let started = http
        .post(dashboard.join("conformance").unwrap())
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::SEE_OTHER, "{started:?}");
    let location = started.headers()[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with("/conformance/runs/"), "{location}");
    dashboard.join(location).unwrap()
}

/// Reloads the run's page (as its meta refresh does) until the run is done; the last page.
async fn wait_for(http: &reqwest::Client, run: &Url) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let page = http.get(run.clone()).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        if !html.contains("http-equiv=\"refresh\"") {
            return html;
        }
        assert!(html.contains("Running "), "{html}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not end"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn download(http: &reqwest::Client, run: &Url, extension: &str) -> (String, String) {
    let url = Url::parse(&format!("{run}.{extension}")).unwrap();
    let answer = http.get(url).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "{extension}");
    let content_type = answer.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(answer.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    (content_type, answer.text().await.unwrap())
}

#[tokio::test]
async fn the_suite_run_from_the_page_finds_every_must_passing_here() {
    let (_dir, playground) = start_in_temp_dir().await;
    let dashboard = playground.urls.dashboard.clone();
    let http = no_redirects();

    let form = http
        .get(dashboard.join("conformance").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let csp = form.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let form = form.text().await.unwrap();
    assert!(!form.contains("<script"), "no script at all");
    let style = http
        .get(dashboard.join("static/conformance.css").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(style.status(), StatusCode::OK);
    assert_eq!(style.headers()[header::CONTENT_TYPE], "text/css");
    assert!(form.contains("action=\"/conformance\""), "{form}");
    assert!(form.contains("aria-current=\"page\">Conformance</a>"));
    for profile in ["oauth2", "oidc", "matrix-provider", "matrix-homeserver"] {
        assert!(
            form.contains(&format!("name=\"profile\" value=\"{profile}\" checked")),
            "{profile} is checked by default"
        );
    }
    let secret = playground.settings.matrix.secret.clone();
    assert!(!form.contains(&secret), "the secret is not on the page");

    let run = post_run(
        &http,
        &dashboard,
        &[
            ("target", "this"),
            ("issuer", ""),
            ("homeserver", ""),
            ("profile", "oauth2"),
            ("profile", "oidc"),
            ("profile", "matrix-provider"),
            ("profile", "matrix-homeserver"),
        ],
    )
    .await;
    // The first page shows the run going, with the downloads not ready yet.
    let early = http
        .get(Url::parse(&format!("{run}.json")).unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        [StatusCode::CONFLICT, StatusCode::OK].contains(&early.status()),
        "{early:?}"
    );
    let html = wait_for(&http, &run).await;
    assert!(!html.contains("result-fail level-must"), "{html}");
    assert!(html.contains("every MUST holds"), "{html}");
    assert!(!html.contains("Unreachable issuer"));
    assert!(html.contains("| Requirement") || html.contains("<th>Requirement</th>"));
    for heading in [
        "<h2 id=\"oauth2\">",
        "<h2 id=\"oidc\">",
        "<h2 id=\"matrix-provider\">",
        "<h2 id=\"matrix-homeserver\">",
    ] {
        assert!(html.contains(heading), "{heading}");
    }
    assert!(html.contains("result-pass level-must"));
    assert!(html.contains("oauth2.token.wrong_verifier"));
    assert!(!html.contains(&secret), "the secret is not on the page");

    let (json_type, json) = download(&http, &run, "json").await;
    assert_eq!(json_type, "application/json");
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["passed_all_musts"], true, "{json}");
    assert_eq!(report["unreachable"], Value::Null);
    assert_eq!(report["issuer"], playground.urls.issuer.as_str());
    assert_eq!(report["homeserver"], playground.urls.homeserver.as_str());
    assert!(report["findings"].as_array().unwrap().len() >= 80);
    // The homeserver-contract checks ran: the secret was given to the suite.
    let introspection_checks: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["profile"] == "matrix-homeserver")
        .collect();
    assert!(!introspection_checks.is_empty());
    // Every homeserver check ran, but the optional unstable `auth_issuer`, which the fake
    // homeserver no longer serves (Synapse 1.163 answers 404 M_UNRECOGNIZED there).
    assert!(
        introspection_checks
            .iter()
            .all(|f| f["result"] != "skipped" || f["id"] == "homeserver.auth_issuer"),
        "{introspection_checks:?}"
    );
    assert!(!json.contains(&secret), "the secret is not in the report");

    let (xml_type, xml) = download(&http, &run, "xml").await;
    assert!(xml_type.starts_with("application/xml"), "{xml_type}");
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("<testsuite name=\"oauth2\""));
    let (md_type, markdown) = download(&http, &run, "md").await;
    assert!(md_type.starts_with("text/markdown"), "{md_type}");
    assert!(markdown.contains("| Requirement | Spec | Level | Result |"));
    let unknown = http
        .get(Url::parse(&format!("{run}.pdf")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // The run is listed on the form.
    let form = get_text(&http, dashboard.join("conformance").unwrap()).await;
    assert!(form.contains(run.path()), "{form}");
    assert!(form.contains("(this deployment)"));
    let missing = http
        .get(dashboard.join("conformance/runs/0000").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    playground.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_issuer_ends_in_a_clear_report() {
    let (_dir, playground) = start_in_temp_dir().await;
    let dashboard = playground.urls.dashboard.clone();
    let http = no_redirects();
    // Nothing listens there: bind a port, then free it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let issuer = format!("http://127.0.0.1:{port}/");
    let run = post_run(
        &http,
        &dashboard,
        &[
            ("target", "url"),
            ("issuer", &issuer),
            ("homeserver", ""),
            ("profile", "oauth2"),
            ("profile", "oidc"),
        ],
    )
    .await;
    let html = wait_for(&http, &run).await;
    assert!(html.contains("Unreachable issuer"), "{html}");
    assert!(html.contains("a MUST failed"), "{html}");
    assert!(
        !html.contains("matrix-provider\">"),
        "only the profiles asked"
    );
    let (_, json) = download(&http, &run, "json").await;
    let report: Value = serde_json::from_str(&json).unwrap();
    assert!(report["unreachable"].is_string(), "{json}");
    assert_eq!(report["issuer"], issuer.as_str());
    assert_eq!(report["homeserver"], Value::Null);
    assert_eq!(report["passed_all_musts"], false);
    let secret = &playground.settings.matrix.secret;
    assert!(!json.contains(secret.as_str()));

    // Invalid forms are refused with the reason, the form kept.
    for (form, expected) in [
        (
            vec![("target", "url"), ("issuer", ""), ("profile", "oauth2")],
            "Type the URL of the issuer",
        ),
        (
            vec![
                ("target", "url"),
                ("issuer", "ftp://auth.example.org/"),
                ("profile", "oauth2"),
            ],
            "http or https",
        ),
        (
            vec![
                ("target", "url"),
                ("issuer", "https://auth.example.org/"),
                ("homeserver", "not a url"),
                ("profile", "oauth2"),
            ],
            "is not a URL",
        ),
        (vec![("target", "this")], "at least one profile"),
        (
            vec![("target", "this"), ("profile", "saml")],
            "unknown profile",
        ),
    ] {
        let answer = http
            .post(dashboard.join("conformance").unwrap())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{form:?}");
        let page = answer.text().await.unwrap();
        assert!(page.contains(expected), "{expected}: {page}");
    }
    playground.stop().await.unwrap();
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let (_dir, playground) = start_in_temp_dir().await;
    let dashboard = playground.urls.dashboard.clone();
    let http = no_redirects();
    let cross = http
        .post(dashboard.join("conformance").unwrap())
        .header(header::ORIGIN, "http://evil.example")
        .form(&[("target", "this"), ("profile", "oauth2")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    // Nothing was started.
    let form = get_text(&http, dashboard.join("conformance").unwrap()).await;
    assert!(!form.contains("/conformance/runs/"), "{form}");
    // The same form from the dashboard's own origin is accepted.
    let origin = dashboard.as_str().trim_end_matches('/').to_owned();
    let same = http
        .post(dashboard.join("conformance").unwrap())
        .header(header::ORIGIN, origin)
        .form(&[("target", "url"), ("issuer", ""), ("profile", "oauth2")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        same.status(),
        StatusCode::BAD_REQUEST,
        "validated, not refused"
    );
    playground.stop().await.unwrap();
}

#[tokio::test]
async fn one_run_at_a_time_per_issuer() {
    let (_dir, playground) = start_in_temp_dir().await;
    let dashboard = playground.urls.dashboard.clone();
    let http = no_redirects();
    // An issuer that accepts connections and never answers: the run stays in progress.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let form = [
        ("target", "url"),
        ("issuer", issuer.as_str()),
        ("profile", "oauth2"),
    ];
    let run = post_run(&http, &dashboard, &form).await;
    let page = get_text(&http, run.clone()).await;
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    assert!(page.contains("Running 72 checks"), "{page}");
    let early = http
        .get(Url::parse(&format!("{run}.json")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), StatusCode::CONFLICT, "no report yet");

    let second = http
        .post(dashboard.join("conformance").unwrap())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let page = second.text().await.unwrap();
    assert!(page.contains("already running"), "{page}");
    assert!(page.contains(run.path()), "links to the run in progress");
    // Another issuer (this deployment) may run meanwhile.
    let other = post_run(
        &http,
        &dashboard,
        &[("target", "this"), ("profile", "oidc")],
    )
    .await;
    assert_ne!(other, run);
    // Stopping the playground ends the runs in progress.
    tokio::time::timeout(Duration::from_secs(10), playground.stop())
        .await
        .expect("stops with a run in progress")
        .unwrap();
    held.abort();
}
