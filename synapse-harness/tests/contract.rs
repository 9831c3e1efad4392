//! The homeserver contract suite (`synapse_harness::contract`), run against the fake homeserver
//! and against real Synapse: the same list of checks, the same expectations.

use fake_homeserver::{Config, FakeHomeserver};
use synapse_harness::contract::{provider, run_all, Ctx, Kind};
use synapse_harness::{prepare, Availability, Synapse, SynapseOptions};
use url::Url;

const SECRET: &str = "contract-s3cret";
const SERVER_NAME: &str = "hs.test";

fn report(kind: Kind, failures: &[(&str, String)]) {
    let total = synapse_harness::contract::checks().len();
    eprintln!(
        "{kind:?}: {} of {total} contract checks hold",
        total - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{kind:?} breaks the homeserver contract:\n{}",
        failures
            .iter()
            .map(|(name, why)| format!("- {name}: {why}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn the_fake_homeserver_keeps_the_contract() {
    let provider = provider().await;
    let hs = FakeHomeserver::start_on(
        Config {
            server_name: SERVER_NAME.into(),
            provider_endpoint: Url::parse(&provider.uri()).unwrap(),
            secret: SECRET.into(),
            proxy_login: false,
            public_base: None,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let ctx = Ctx::new(
        Kind::Fake,
        hs.base_url().clone(),
        SECRET,
        SERVER_NAME,
        &provider,
    );
    let failures = run_all(&ctx).await;
    hs.shutdown().await;
    report(Kind::Fake, &failures);
}

#[tokio::test]
async fn real_synapse_keeps_the_contract() {
    let tools = match prepare().await.expect("prerequisites") {
        Availability::Ready(tools) => tools,
        Availability::Skip(reason) => {
            eprintln!("skipped (real Synapse): {reason}");
            return;
        }
    };
    let provider = provider().await;
    let synapse = Synapse::start(
        &tools,
        SynapseOptions::new(SERVER_NAME, Url::parse(&provider.uri()).unwrap(), SECRET),
    )
    .await
    .unwrap();
    let ctx = Ctx::new(
        Kind::Synapse,
        synapse.url().clone(),
        SECRET,
        SERVER_NAME,
        &provider,
    );
    let failures = run_all(&ctx).await;
    if !failures.is_empty() {
        eprintln!("{}", synapse.log_tail(40));
    }
    synapse.stop().await;
    report(Kind::Synapse, &failures);
}
