//! Checks on the authorization server metadata document (RFC 8414, OIDC Discovery) that Matrix
//! clients rely on (MSC2965; matrix-rust-sdk refuses metadata lacking any of these).

use serde_json::Value;

use crate::{Finding, Level, Outcome};

fn has_string(doc: &Value, member: &str) -> Outcome {
    match doc.get(member) {
        Some(Value::String(s)) if !s.is_empty() => Outcome::Pass,
        Some(other) => Outcome::Fail(format!("`{member}` is {other}, not a non-empty string")),
        None => Outcome::Fail(format!("`{member}` is missing")),
    }
}

fn contains_all(doc: &Value, member: &str, wanted: &[&str]) -> Outcome {
    let Some(list) = doc.get(member).and_then(Value::as_array) else {
        return Outcome::Fail(format!("`{member}` is missing or not an array"));
    };
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| !list.iter().any(|v| v == w))
        .collect();
    if missing.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("`{member}` lacks {}", missing.join(", ")))
    }
}

/// Judges a metadata document as a Matrix client would. `expected_issuer` is the issuer the
/// document was fetched for (clients compare it exactly).
pub fn matrix_client_requirements(doc: &Value, expected_issuer: &str) -> Vec<Finding> {
    let must = |id, spec, requirement, outcome| Finding {
        id,
        spec,
        level: Level::Must,
        requirement,
        outcome,
    };
    let issuer = match doc.get("issuer").and_then(Value::as_str) {
        Some(i) if i == expected_issuer => Outcome::Pass,
        Some(i) => Outcome::Fail(format!("issuer is `{i}`, expected `{expected_issuer}`")),
        None => Outcome::Fail("`issuer` is missing".into()),
    };
    let mut findings = vec![must(
        "metadata.issuer",
        "RFC 8414 §3.3",
        "the issuer equals the one the metadata was fetched for",
        issuer,
    )];
    for (id, member) in [
        ("metadata.authorization_endpoint", "authorization_endpoint"),
        ("metadata.token_endpoint", "token_endpoint"),
        ("metadata.revocation_endpoint", "revocation_endpoint"),
        ("metadata.registration_endpoint", "registration_endpoint"),
    ] {
        findings.push(must(
            id,
            "MSC2965",
            "the endpoint is advertised",
            has_string(doc, member),
        ));
    }
    findings.push(must(
        "metadata.response_types",
        "MSC2965",
        "response_types_supported includes code",
        contains_all(doc, "response_types_supported", &["code"]),
    ));
    findings.push(must(
        "metadata.grant_types",
        "MSC2965",
        "grant_types_supported includes authorization_code and refresh_token",
        contains_all(
            doc,
            "grant_types_supported",
            &["authorization_code", "refresh_token"],
        ),
    ));
    findings.push(must(
        "metadata.response_modes",
        "MSC2965",
        "response_modes_supported includes query and fragment",
        contains_all(doc, "response_modes_supported", &["query", "fragment"]),
    ));
    findings.push(must(
        "metadata.pkce",
        "MSC2964 / RFC 7636",
        "code_challenge_methods_supported includes S256",
        contains_all(doc, "code_challenge_methods_supported", &["S256"]),
    ));
    findings
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn complete() -> Value {
        json!({
            "issuer": "https://auth.example.org/",
            "authorization_endpoint": "https://auth.example.org/authorize",
            "token_endpoint": "https://auth.example.org/oauth2/token",
            "revocation_endpoint": "https://auth.example.org/oauth2/revoke",
            "registration_endpoint": "https://auth.example.org/oauth2/registration",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "code_challenge_methods_supported": ["S256"],
        })
    }

    #[test]
    fn a_complete_document_passes() {
        let findings = matrix_client_requirements(&complete(), "https://auth.example.org/");
        assert_eq!(findings.len(), 9);
        assert!(
            findings.iter().all(|f| f.outcome == Outcome::Pass),
            "{findings:#?}"
        );
    }

    #[test]
    fn each_gap_fails_its_own_check() {
        let mut doc = complete();
        doc["code_challenge_methods_supported"] = json!(["plain"]);
        doc.as_object_mut().unwrap().remove("revocation_endpoint");
        let findings = matrix_client_requirements(&doc, "https://other.example.org/");
        let failed: Vec<&str> = findings
            .iter()
            .filter(|f| f.is_blocking())
            .map(|f| f.id)
            .collect();
        assert_eq!(
            failed,
            [
                "metadata.issuer",
                "metadata.revocation_endpoint",
                "metadata.pkce"
            ]
        );
        let pkce = findings.iter().find(|f| f.id == "metadata.pkce").unwrap();
        assert_eq!(
            pkce.outcome,
            Outcome::Fail("`code_challenge_methods_supported` lacks S256".into())
        );
    }
}
