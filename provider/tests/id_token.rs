//! ID tokens signed by the keystore verify with an independent implementation (`openidconnect`)
//! against the JWKS the provider publishes, for every algorithm it offers.

use chrono::{DateTime, Duration};
use openidconnect::{
    core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet},
    AccessToken, AccessTokenHash, ClientId, IssuerUrl, Nonce,
};
use provider::{
    clock::{Clock as _, MockClock},
    config::{self, GenerateOptions},
    domain::id_token::IdTokenClaims,
    keys::Algorithm,
};
use rand::SeedableRng as _;

const ISSUER: &str = "http://localhost:8080/";

#[test]
fn signed_id_tokens_verify_against_the_published_jwks() {
    let clock = MockClock::default();
    let text = config::generate(
        &mut rand::rngs::StdRng::seed_from_u64(3),
        &clock,
        &GenerateOptions::default(),
    )
    .unwrap();
    let (_, settings) = config::parse(&text, Vec::new(), std::path::Path::new(".")).unwrap();
    let keystore = &settings.keystore;
    let jwks: CoreJsonWebKeySet = serde_json::from_value(keystore.jwks()).unwrap();

    // `openidconnect` checks expiry against the real clock: issue the token "now".
    #[allow(clippy::disallowed_methods)]
    let now = chrono::Utc::now();
    assert!(now > clock.now());
    let access_token = "mat_0123456789abcdefghijABCDEFGHIJ_000000";

    for alg in [Algorithm::Rs256, Algorithm::Es256] {
        let mut claims =
            IdTokenClaims::new(ISSUER, "01HUSER", "client-1", now, Duration::minutes(5))
                .with_access_token(access_token);
        claims.nonce = Some("n-0S6_WzA2Mj".into());
        claims.auth_time = Some(now.timestamp() - 30);
        claims.sid = Some("01HSESSION".into());
        let jwt = keystore.sign(alg, &claims).unwrap().unwrap();

        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new("client-1".into()),
            IssuerUrl::new(ISSUER.into()).unwrap(),
            jwks.clone(),
        )
        .set_allowed_algs(vec![
            openidconnect::core::CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            openidconnect::core::CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        ]);
        let id_token: CoreIdToken = jwt.parse().unwrap();
        let verified = id_token
            .claims(&verifier, &Nonce::new("n-0S6_WzA2Mj".into()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(verified.subject().as_str(), "01HUSER");
        assert_eq!(verified.issuer().as_str(), ISSUER);
        assert_eq!(
            verified.auth_time(),
            DateTime::from_timestamp(now.timestamp() - 30, 0)
        );

        // at_hash binds the access token (OIDC Core §3.1.3.6).
        let expected = AccessTokenHash::from_token(
            &AccessToken::new(access_token.into()),
            id_token.signing_alg().unwrap(),
            id_token.signing_key(&verifier).unwrap(),
        )
        .unwrap();
        assert_eq!(verified.access_token_hash(), Some(&expected), "{alg:?}");

        // A wrong nonce or audience is refused by the verifier: the check above is real.
        assert!(id_token
            .claims(&verifier, &Nonce::new("other".into()))
            .is_err());
        let other_client = CoreIdTokenVerifier::new_public_client(
            ClientId::new("client-2".into()),
            IssuerUrl::new(ISSUER.into()).unwrap(),
            jwks.clone(),
        );
        assert!(id_token
            .claims(&other_client, &Nonce::new("n-0S6_WzA2Mj".into()))
            .is_err());
    }
}
