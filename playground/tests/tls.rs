//! `--tls`: the provider, the homeserver and the dashboard serve https with a certificate made
//! at first start and kept; clients that trust it can do everything, others can't connect.

mod common;

use common::{get_json, login, options, password, start, whoami};

#[tokio::test]
async fn serves_https_with_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.tls = true;
    let playground = start(&options).await;
    let urls = playground.urls.clone();
    assert_eq!(
        urls.issuer.as_str(),
        format!("https://localhost:{}/", playground.provider_addr.port())
    );
    assert_eq!(urls.homeserver.scheme(), "https");
    assert_eq!(urls.dashboard.scheme(), "https");
    let tls = playground.tls.clone().unwrap();
    assert!(tls.created);
    let summary = playground.summary();
    assert!(summary.contains(&tls.fingerprint), "{summary}");
    assert!(
        summary.contains(&tls.cert_path.display().to_string()),
        "{summary}"
    );

    let pem = std::fs::read(dir.path().join(playground::CERT_FILE)).unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let discovery = get_json(
        &trusting,
        urls.issuer
            .join(".well-known/openid-configuration")
            .unwrap(),
    )
    .await;
    assert_eq!(discovery["issuer"], urls.issuer.as_str());
    assert!(discovery["revocation_endpoint"]
        .as_str()
        .unwrap()
        .starts_with("https://localhost:"));
    // Through the homeserver (which reaches the provider on its internal port).
    let metadata = get_json(
        &trusting,
        urls.homeserver
            .join("_matrix/client/v1/auth_metadata")
            .unwrap(),
    )
    .await;
    assert_eq!(metadata, discovery);
    let well_known = get_json(
        &trusting,
        urls.homeserver.join(".well-known/matrix/client").unwrap(),
    )
    .await;
    assert_eq!(
        well_known["m.homeserver"]["base_url"],
        urls.homeserver.as_str()
    );
    // A login through the homeserver's proxy, and a token the homeserver introspects.
    let token = login(
        &trusting,
        &urls.homeserver,
        "alice",
        &password(&playground, "alice"),
    )
    .await
    .unwrap();
    assert_eq!(
        whoami(&trusting, &urls.homeserver, &token).await.unwrap(),
        "@alice:localhost"
    );
    // The dashboard, and the certificate to download from it.
    let downloaded = trusting
        .get(urls.dashboard.join("certificate.pem").unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(downloaded.as_ref(), pem.as_slice());

    // The dashboard's panels call the provider and the homeserver over https too.
    let started = trusting
        .post(urls.dashboard.join("device").unwrap())
        .form(&[(
            "scope",
            "openid urn:matrix:client:api:* urn:matrix:client:device:TLSDEVICE1",
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200, "followed to the grant's page");
    let page = started.text().await.unwrap();
    assert!(page.contains("class=\"user-code\""), "{page}");
    let page = trusting
        .post(urls.dashboard.join("legacy").unwrap())
        .form(&[
            ("username", "bob"),
            ("password", password(&playground, "bob").as_str()),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("@bob:localhost"), "{page}");

    // A client that doesn't trust it gets nowhere.
    let untrusting = reqwest::Client::new();
    assert!(untrusting.get(urls.issuer.clone()).send().await.is_err());
    playground.stop().await.unwrap();

    // The certificate is kept, also by --fresh.
    options.fresh = true;
    let again = start(&options).await;
    let kept = again.tls.clone().unwrap();
    assert!(!kept.created);
    assert_eq!(kept.fingerprint, tls.fingerprint);
    again.stop().await.unwrap();
}
