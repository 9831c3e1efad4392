//! `--homeserver synapse`: the playground runs a real Synapse with nginx in front of it in place
//! of the fake; a legacy client logs in through nginx (the provider answers) and Synapse serves
//! its token. Without python3 or nginx the test prints one skip line and passes; with `CI` set it
//! fails instead.

mod common;

use common::{get_json, login, options, password, start, whoami};
use playground::{Homeserver, HomeserverChoice};
use synapse_harness::{prepare, Availability};

#[tokio::test]
async fn a_real_synapse_behind_nginx_serves_the_playground_accounts() {
    if let Availability::Skip(reason) = prepare().await.expect("prerequisites (CI is set)") {
        eprintln!("skipped (real Synapse): {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.homeserver = HomeserverChoice::Synapse;
    let playground = start(&options).await;
    assert!(matches!(playground.homeserver, Homeserver::Synapse(_)));
    assert!(playground.homeserver.fake().is_none());
    assert_eq!(playground.homeserver.server_name(), "localhost");
    assert!(playground.summary().contains("real Synapse"));
    let homeserver = playground.urls.homeserver.clone();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // Synapse itself answers (its version document), through nginx on the homeserver's port.
    let versions = get_json(&http, homeserver.join("_matrix/client/versions").unwrap()).await;
    assert!(versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "v1.15"));
    // It serves the provider's metadata (MSC2965), fetched from the provider.
    let metadata = get_json(
        &http,
        homeserver.join("_matrix/client/v1/auth_metadata").unwrap(),
    )
    .await;
    assert_eq!(metadata["issuer"], playground.urls.issuer.as_str());

    // The seeded account: the legacy login goes to the provider through nginx; Synapse
    // introspects the token and knows the user (the playground provisioned it at start).
    let token = login(&http, &homeserver, "alice", &password(&playground, "alice"))
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    assert_eq!(
        whoami(&http, &homeserver, &token).await.unwrap(),
        "@alice:localhost"
    );
    let refused = whoami(&http, &homeserver, "mct_not_a_token")
        .await
        .unwrap_err();
    assert_eq!(refused["errcode"], "M_UNKNOWN_TOKEN");
    playground.stop().await.unwrap();
}

#[tokio::test]
async fn tls_with_a_real_synapse_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.homeserver = HomeserverChoice::Synapse;
    options.tls = true;
    let error = playground::Playground::start(&options, provider::clock::Entropy::system())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--tls"), "{error}");
}
