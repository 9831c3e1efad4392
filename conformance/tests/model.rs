//! The registry, the report formats and the exit status, without any server.

use std::collections::HashSet;

use conformance::{Finding, Level, Options, Outcome, Profile, Report, Summary, CHECKS};
use serde_json::Value;
use test_clients::transcript::Exchange;

// ---- the registry ----

#[test]
fn ids_are_unique_and_well_formed() {
    let mut seen = HashSet::new();
    for check in CHECKS {
        assert!(seen.insert(check.id), "duplicate id {}", check.id);
        assert!(
            check
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'),
            "{}",
            check.id
        );
        assert!(check.id.split('.').count() >= 2, "{}", check.id);
    }
}

#[test]
fn every_id_names_its_profile() {
    for check in CHECKS {
        let prefix = match check.profile {
            Profile::OAuth2 => "oauth2.",
            Profile::Oidc => "oidc.",
            Profile::MatrixProvider => "matrix.",
            Profile::MatrixHomeserver => "homeserver.",
        };
        assert!(
            check.id.starts_with(prefix),
            "{} is in {}",
            check.id,
            check.profile
        );
    }
}

#[test]
fn every_check_names_its_spec_and_section() {
    for check in CHECKS {
        assert!(!check.spec.trim().is_empty(), "{}", check.id);
        // MSCs have no numbered sections; everything else cites one.
        let msc_only = check.spec.split(", ").all(|s| s.starts_with("MSC"));
        assert!(
            check.spec.contains('§') || msc_only,
            "{}: `{}` names no section",
            check.id,
            check.spec
        );
        assert!(!check.requirement.trim().is_empty(), "{}", check.id);
        assert!(!check.requirement.ends_with('.'), "{}", check.id);
    }
}

#[test]
fn at_least_80_checks_and_every_profile_has_some() {
    assert!(CHECKS.len() >= 80, "only {} checks", CHECKS.len());
    for profile in Profile::ALL {
        let n = CHECKS.iter().filter(|c| c.profile == profile).count();
        assert!(n > 0, "{profile} has no checks");
    }
    let musts = CHECKS.iter().filter(|c| c.level == Level::Must).count();
    assert!(musts >= 60, "only {musts} MUST checks");
}

#[test]
fn profiles_parse_from_their_names() {
    for profile in Profile::ALL {
        assert_eq!(profile.as_str().parse::<Profile>(), Ok(profile));
    }
    assert!("oauth".parse::<Profile>().is_err());
}

#[test]
fn selection_by_profile_and_only() {
    let mut options = Options::new("https://auth.example.org/".parse().unwrap());
    assert_eq!(conformance::select(&options).len(), CHECKS.len());

    options.profiles = vec![Profile::Oidc];
    let selected = conformance::select(&options);
    assert!(!selected.is_empty());
    assert!(selected.iter().all(|c| c.profile == Profile::Oidc));

    options.profiles = Profile::ALL.to_vec();
    options.only = vec!["oauth2.token".into(), "oidc.id_token.nonce".into()];
    let ids: Vec<&str> = conformance::select(&options).iter().map(|c| c.id).collect();
    assert!(ids.contains(&"oauth2.token.wrong_verifier"));
    assert!(ids.contains(&"oidc.id_token.nonce"));
    assert!(ids
        .iter()
        .all(|id| id.starts_with("oauth2.token.") || *id == "oidc.id_token.nonce"));
    // Registry order is kept.
    let positions: Vec<usize> = ids
        .iter()
        .map(|id| CHECKS.iter().position(|c| c.id == *id).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));

    options.only = vec!["oauth2.tok".into(), "nothing.at.all".into(), "oidc".into()];
    assert_eq!(
        conformance::unknown_selectors(&options),
        ["oauth2.tok", "nothing.at.all"]
    );
}

// ---- reports ----

fn check(id: &str) -> &'static conformance::Check {
    CHECKS.iter().find(|c| c.id == id).unwrap()
}

fn exchange() -> Exchange {
    Exchange {
        step: Some("exchange the code".into()),
        method: "POST".into(),
        url: "https://auth.example.org/oauth2/token".into(),
        request_headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        request_body: Some("grant_type=authorization_code&code=abcd…".into()),
        status: 200,
        response_headers: vec![("content-type".into(), "application/json".into())],
        response_body: "{\"access_token\":\"mat_…\", \"odd\": \"]]> <tag> & \\\"q\\\" \u{1}\"}"
            .into(),
    }
}

fn sample() -> Report {
    let mut fail = Finding::new(
        check("oauth2.token.wrong_verifier"),
        Outcome::Fail {
            reason: "accepted (HTTP 200) instead of refused with `invalid_grant` | <b>&".into(),
            evidence: vec![exchange()],
        },
    );
    fail.notes.push("a note".into());
    fail.millis = 1234;
    Report {
        issuer: "https://auth.example.org/".into(),
        homeserver: None,
        profiles: vec![Profile::OAuth2, Profile::Oidc],
        findings: vec![
            Finding::new(check("oauth2.metadata.reachable"), Outcome::Pass),
            fail,
            Finding::new(
                check("oauth2.metadata.no_plain"),
                Outcome::Fail {
                    reason: "`code_challenge_methods_supported` offers `plain`".into(),
                    evidence: Vec::new(),
                },
            ),
            Finding::new(
                check("oidc.id_token.at_hash"),
                Outcome::Skipped("no at_hash (OPTIONAL in the code flow)".into()),
            ),
        ],
        unreachable: None,
        rate_limits: Default::default(),
    }
}

#[test]
fn summary_counts_by_level() {
    let s = sample().summary();
    assert_eq!(
        s,
        Summary {
            total: 4,
            passed: 1,
            failed: 2,
            skipped: 1,
            must_failed: 1,
            should_failed: 1,
            may_failed: 0,
        }
    );
    assert_eq!(
        s.line(),
        "4 checks: 1 passed, 2 failed (1 MUST, 1 SHOULD), 1 skipped"
    );
}

#[test]
fn text_report() {
    let text = sample().render_text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Conformance: issuer https://auth.example.org/"));
    assert!(text.contains(
        "PASS oauth2.metadata.reachable [MUST] RFC 8414 §3.2: the metadata document is served as a JSON object"
    ));
    assert!(text.contains("FAIL oauth2.token.wrong_verifier [MUST] RFC 7636 §4.6:"));
    assert!(text.contains("     reason: accepted (HTTP 200)"));
    assert!(text.contains("       > POST https://auth.example.org/oauth2/token"));
    assert!(text.contains("       < HTTP 200"));
    assert!(text.contains("     note: a note"));
    assert!(text.contains("SKIP oidc.id_token.at_hash [MUST]"));
    assert!(text.contains("     skipped: no at_hash"));
    assert!(lines.last().unwrap().ends_with("; a MUST failed"));
}

#[test]
fn json_report() {
    let doc: Value = serde_json::from_str(&sample().render_json()).unwrap();
    assert_eq!(doc["passed_all_musts"], false);
    assert_eq!(doc["summary"]["must_failed"], 1);
    assert_eq!(doc["profiles"], serde_json::json!(["oauth2", "oidc"]));
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 4);
    assert_eq!(findings[0]["result"], "pass");
    assert_eq!(findings[0]["level"], "MUST");
    assert!(findings[0].get("reason").is_none());
    assert_eq!(findings[1]["result"], "fail");
    assert_eq!(findings[1]["spec"], "RFC 7636 §4.6");
    assert_eq!(findings[1]["evidence"][0]["method"], "POST");
    assert_eq!(findings[1]["evidence"][0]["status"], 200);
    assert_eq!(findings[1]["notes"][0], "a note");
    assert_eq!(findings[3]["result"], "skipped");
    assert_eq!(findings[3]["profile"], "oidc");
}

#[test]
fn junit_report_escapes_and_groups_by_profile() {
    let xml = sample().render_junit();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"conformance\" tests=\"4\" failures=\"2\" errors=\"0\" skipped=\"1\""));
    assert_eq!(xml.matches("<testsuite ").count(), 2);
    assert!(xml.contains(
        "<testsuite name=\"oauth2\" tests=\"3\" failures=\"2\" errors=\"0\" skipped=\"0\""
    ));
    assert!(xml.contains(
        "<testsuite name=\"oidc\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"1\""
    ));
    assert_eq!(xml.matches("<testcase ").count(), 4);
    // The reason in an attribute: markup escaped.
    assert!(xml.contains(
        "message=\"accepted (HTTP 200) instead of refused with `invalid_grant` | &lt;b&gt;&amp;\" type=\"MUST\""
    ));
    assert!(xml.contains("type=\"SHOULD\""));
    assert!(xml.contains("<skipped message=\"no at_hash (OPTIONAL in the code flow)\"/>"));
    assert!(xml.contains("time=\"1.234\""));
    // The evidence in CDATA: `]]>` split, the control character replaced.
    assert!(xml.contains("<![CDATA[oauth2.token.wrong_verifier [MUST] RFC 7636 §4.6"));
    assert!(xml.contains("]]]]><![CDATA[>"));
    assert!(!xml.contains('\u{1}'));
    // Every CDATA section is closed, and outside them there is no stray `]]>`.
    let outside: String = xml
        .split("<![CDATA[")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_owned()
            } else {
                let (_, rest) = part.split_once("]]>").expect("a closed CDATA section");
                rest.to_owned()
            }
        })
        .collect();
    assert!(!outside.contains("]]>"));
    assert!(!outside.contains("<b>"));
    assert_eq!(
        xml.matches("<testcase").count(),
        xml.matches("/>").count() + xml.matches("</testcase>").count() - 1,
        "each testcase is closed (the skipped element is the one extra `/>`)"
    );
    assert!(xml.trim_end().ends_with("</testsuites>"));
}

#[test]
fn markdown_report_is_an_areweoidcyet_table() {
    let md = sample().render_markdown();
    assert!(md.starts_with("# Conformance report\n"));
    assert!(
        md.contains("## oauth2\n\n| Requirement | Spec | Level | Result |\n|---|---|---|---|\n")
    );
    assert!(md.contains("## oidc\n"));
    assert!(md.contains(
        "| the metadata document is served as a JSON object (`oauth2.metadata.reachable`) | RFC 8414 §3.2 | MUST | ✅ |"
    ));
    assert!(md.contains(
        "| a wrong code_verifier is refused with invalid_grant (`oauth2.token.wrong_verifier`) | RFC 7636 §4.6 | MUST | ❌ accepted (HTTP 200) instead of refused with `invalid_grant` \\| &lt;b&gt;& |"
    ));
    assert!(md.contains("| MUST | ⏭️ no at_hash (OPTIONAL in the code flow) |"));
    // Every table row has exactly four cells (escaped pipes don't count).
    for line in md.lines().filter(|l| l.starts_with('|')) {
        let cells = line.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 5, "{line}");
    }
    assert!(md.contains(
        "**Summary:** 4 checks: ✅ 1 passed, ❌ 2 failed (1 MUST), ⏭️ 1 skipped; **a MUST failed**."
    ));
}

// ---- exit status ----

#[test]
fn exit_status() {
    let mut report = sample();
    assert!(!report.passed_all_musts());
    assert_eq!(report.exit_code(), 1);

    // A failed SHOULD alone does not fail the run.
    report.findings.remove(1);
    assert!(report.passed_all_musts());
    assert_eq!(report.exit_code(), 0);
    assert!(report.findings.iter().any(|f| f.outcome.is_fail()));

    // Skipped MUSTs don't fail it either.
    assert!(report
        .findings
        .iter()
        .any(|f| f.level == Level::Must && f.outcome.is_skipped()));

    report.unreachable = Some("connection refused".into());
    assert_eq!(report.exit_code(), 2);
}

#[tokio::test]
async fn an_unreachable_issuer_is_reported_as_such() {
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut options = Options::new(format!("http://127.0.0.1:{port}/").parse().unwrap());
    options.profiles = vec![Profile::OAuth2, Profile::MatrixHomeserver];
    let report = conformance::run(&options).await;
    assert!(report.unreachable.is_some());
    assert_eq!(report.exit_code(), 2);
    assert!(report
        .finding("oauth2.metadata.reachable")
        .unwrap()
        .outcome
        .is_fail());
    let homeserver = report.finding("homeserver.versions").unwrap();
    assert_eq!(homeserver.outcome.reason(), Some("no --homeserver"));
    // Nothing else can be judged without the metadata.
    for f in &report.findings {
        if f.id != "oauth2.metadata.reachable" {
            assert!(f.outcome.is_skipped(), "{}: {:?}", f.id, f.outcome);
        }
    }
}

// ---- the runner ----

async fn fine(_: conformance::Probe) -> conformance::Checked {
    Ok(())
}

async fn panics(_: conformance::Probe) -> conformance::Checked {
    panic!("something unexpected")
}

async fn hangs(_: conformance::Probe) -> conformance::Checked {
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    Ok(())
}

async fn refuses(p: conformance::Probe) -> conformance::Checked {
    p.note("looked at nothing");
    Err(conformance::Stop::fail("it does not hold"))
}

fn made_up(
    id: &'static str,
    profile: Profile,
    run: fn(conformance::Probe) -> conformance::BoxFuture<'static, conformance::Checked>,
) -> conformance::Check {
    conformance::Check {
        id,
        spec: "RFC 0000 §1",
        level: Level::Must,
        profile,
        requirement: "a made-up requirement",
        run,
    }
}

#[tokio::test]
async fn panics_and_timeouts_fail_and_order_is_kept() {
    use rand::SeedableRng as _;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut options = Options::new(format!("http://127.0.0.1:{port}/").parse().unwrap());
    options.timeout = std::time::Duration::from_millis(200);
    options.concurrency = 2;
    let checks = [
        made_up("a.hangs", Profile::OAuth2, |p| Box::pin(hangs(p))),
        made_up("b.panics", Profile::OAuth2, |p| Box::pin(panics(p))),
        made_up("c.fine", Profile::Oidc, |p| Box::pin(fine(p))),
        made_up("d.refuses", Profile::MatrixProvider, |p| {
            Box::pin(refuses(p))
        }),
        made_up("e.homeserver", Profile::MatrixHomeserver, |p| {
            Box::pin(fine(p))
        }),
    ];
    let report = conformance::run_checks(
        &options,
        &checks,
        conformance::system_clock,
        rand::rngs::StdRng::seed_from_u64(7),
    )
    .await;
    let ids: Vec<&str> = report.findings.iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        ["a.hangs", "b.panics", "c.fine", "d.refuses", "e.homeserver"]
    );
    assert_eq!(
        report.findings[0].outcome.reason(),
        Some("timed out after 200ms")
    );
    assert!(report.findings[1]
        .outcome
        .reason()
        .unwrap()
        .contains("panicked: something unexpected"));
    assert!(report.findings[2].outcome.is_pass());
    assert_eq!(
        report.findings[3].outcome.reason(),
        Some("it does not hold")
    );
    assert_eq!(report.findings[3].notes, ["looked at nothing"]);
    assert_eq!(report.findings[4].outcome.reason(), Some("no --homeserver"));
    assert!(report.findings[4].outcome.is_skipped());
    assert_eq!(report.exit_code(), 2, "the issuer is unreachable");
}
