//! The exchange log shows the introspection calls the homeserver makes at the provider when a
//! client calls it with a bearer token: each with its status, secrets elided.

mod common;

use common::{get_json, login, password, start_in_temp_dir, whoami};
use serde_json::Value;

#[tokio::test]
async fn the_exchange_log_shows_the_homeservers_introspection_calls() {
    let (_dir, playground) = start_in_temp_dir().await;
    let urls = playground.urls.clone();
    let http = reqwest::Client::new();
    let alice = password(&playground, "alice");
    let token = login(&http, &urls.homeserver, "alice", &alice)
        .await
        .unwrap();
    assert_eq!(
        whoami(&http, &urls.homeserver, &token).await.unwrap(),
        "@alice:localhost"
    );
    // A token the provider doesn't know: the homeserver asks, and is told it is not active.
    let unknown = "mct_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_000000";
    assert!(whoami(&http, &urls.homeserver, unknown).await.is_err());

    let log = get_json(&http, urls.dashboard.join("log.json").unwrap()).await;
    let entries = log.as_array().unwrap();
    let text = serde_json::to_string(&log).unwrap();
    let secret = &playground.settings.matrix.secret;
    for hidden in [alice.as_str(), token.as_str(), secret.as_str(), unknown] {
        assert!(!text.contains(hidden), "`{hidden}` is elided from the log");
    }

    let introspections: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["from"] == "homeserver"
                && e["to"] == "provider"
                && e["method"] == "POST"
                && e["path"] == "/oauth2/introspect"
        })
        .collect();
    assert!(
        introspections.len() >= 2,
        "one for alice's token, one for the unknown one: {text}"
    );
    for call in &introspections {
        assert_eq!(call["status"], 200, "{call}");
        assert_eq!(call["request"]["body"]["kind"], "form");
        assert!(
            call["request"]["body"]["text"]
                .as_str()
                .unwrap()
                .contains("token=<elided>"),
            "{call}"
        );
        assert!(
            call["request"]["headers"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(["authorization", "Bearer <elided>"])),
            "the shared secret is elided: {call}"
        );
        assert_eq!(call["response"]["body"]["kind"], "json", "{call}");
    }
    let answers: Vec<Value> = introspections
        .iter()
        .map(|c| serde_json::from_str(c["response"]["body"]["text"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        answers
            .iter()
            .any(|a| a["active"] == true && a["username"] == "alice"),
        "{answers:?}"
    );
    assert!(answers.iter().any(|a| a["active"] == false), "{answers:?}");

    // Entries are numbered as their answers complete: the introspection a whoami waited for
    // comes before it.
    let whoami_entry = entries
        .iter()
        .find(|e| {
            e["from"] == "client"
                && e["to"] == "homeserver"
                && e["path"] == "/_matrix/client/v3/account/whoami"
                && e["status"] == 200
        })
        .unwrap_or_else(|| panic!("no whoami in {text}"));
    assert!(
        introspections
            .iter()
            .any(|c| c["id"].as_u64() < whoami_entry["id"].as_u64()),
        "{text}"
    );
    playground.stop().await.unwrap();
}
