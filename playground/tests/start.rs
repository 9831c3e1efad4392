//! The playground starts from an empty directory, serves discovery, and keeps its keys between
//! runs unless told to start fresh.

use playground::{Options, Playground};

async fn start_and_read_jwks(options: &Options) -> (String, serde_json::Value) {
    let playground = Playground::start(options).await.unwrap();
    let issuer = playground.settings.issuer.to_string();
    assert_eq!(issuer, format!("http://{}/", playground.local_addr));
    assert!(playground.summary().contains(&issuer));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(playground.run(async {
        let _ = rx.await;
    }));
    let discovery: serde_json::Value =
        reqwest::get(format!("{issuer}.well-known/openid-configuration"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    let jwks = reqwest::get(format!("{issuer}oauth2/keys.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Registration is open in the playground.
    let register = reqwest::get(format!("{issuer}register")).await.unwrap();
    assert_eq!(register.status(), 200);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    (issuer, jwks)
}

#[tokio::test]
async fn starts_from_nothing_and_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options {
        data_dir: dir.path().join("data"),
        fresh: false,
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        database_url: None,
    };
    let (_, first) = start_and_read_jwks(&options).await;
    assert!(options.data_dir.join("provider.yaml").exists());
    assert!(options.data_dir.join("provider.db").exists());
    let (_, second) = start_and_read_jwks(&options).await;
    assert_eq!(first, second, "keys are kept between runs");
    options.fresh = true;
    let (_, third) = start_and_read_jwks(&options).await;
    assert_ne!(first, third, "--fresh starts over with new keys");
}
