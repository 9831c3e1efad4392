//! The report formats: text for people at a terminal, JSON and JUnit XML for CI, and a
//! Markdown table in the style of areweoidcyet.com.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};
use test_clients::transcript::Exchange;

use crate::{rate_limit::seconds as wait, Finding, Level, Outcome, Profile, Report};

/// Longest body shown in evidence (the JSON report keeps them whole).
const BODY_LIMIT: usize = 2000;
/// Longest reason shown in a Markdown cell.
const CELL_LIMIT: usize = 200;

/// Counts over the findings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub must_failed: usize,
    pub should_failed: usize,
    pub may_failed: usize,
}

impl Summary {
    pub fn of<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Self {
        let mut s = Self::default();
        for f in findings {
            s.total += 1;
            match &f.outcome {
                Outcome::Pass => s.passed += 1,
                Outcome::Skipped(_) => s.skipped += 1,
                Outcome::Fail { .. } => {
                    s.failed += 1;
                    match f.level {
                        Level::Must => s.must_failed += 1,
                        Level::Should => s.should_failed += 1,
                        Level::May => s.may_failed += 1,
                    }
                }
            }
        }
        s
    }

    /// One line: "97 checks: 80 passed, 3 failed (2 MUST, 1 SHOULD), 14 skipped".
    pub fn line(&self) -> String {
        let mut levels = Vec::new();
        for (n, level) in [
            (self.must_failed, "MUST"),
            (self.should_failed, "SHOULD"),
            (self.may_failed, "MAY"),
        ] {
            if n > 0 {
                levels.push(format!("{n} {level}"));
            }
        }
        let detail = if levels.is_empty() {
            String::new()
        } else {
            format!(" ({})", levels.join(", "))
        };
        format!(
            "{} checks: {} passed, {} failed{detail}, {} skipped",
            self.total, self.passed, self.failed, self.skipped
        )
    }
}

fn cut(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}… ({} more bytes)", &text[..at], text.len() - at),
        None => text.to_owned(),
    }
}

/// One exchange of a failure's evidence, readable: `>` request lines, `<` response lines; bodies
/// cut to 2,000 characters (the JSON report keeps them whole).
pub fn render_exchange(e: &Exchange) -> String {
    let mut out = String::new();
    if let Some(step) = &e.step {
        let _ = writeln!(out, "== {step}");
    }
    let _ = writeln!(out, "> {} {}", e.method, e.url);
    for (name, value) in &e.request_headers {
        let _ = writeln!(out, "> {name}: {value}");
    }
    if let Some(body) = e.request_body.as_deref().filter(|b| !b.is_empty()) {
        let _ = writeln!(out, ">");
        for line in cut(body, BODY_LIMIT).lines() {
            let _ = writeln!(out, "> {line}");
        }
    }
    let _ = writeln!(out, "< HTTP {}", e.status);
    for (name, value) in &e.response_headers {
        let _ = writeln!(out, "< {name}: {value}");
    }
    if !e.response_body.is_empty() {
        let _ = writeln!(out, "<");
        for line in cut(&e.response_body, BODY_LIMIT).lines() {
            let _ = writeln!(out, "< {line}");
        }
    }
    out
}

fn render_evidence(evidence: &[Exchange]) -> String {
    evidence
        .iter()
        .map(render_exchange)
        .collect::<Vec<_>>()
        .join("\n")
}

fn header(report: &Report) -> String {
    let mut out = format!("issuer {}", report.issuer);
    if let Some(hs) = &report.homeserver {
        let _ = write!(out, ", homeserver {hs}");
    }
    let profiles: Vec<&str> = report.profiles.iter().map(|p| p.as_str()).collect();
    let _ = write!(out, "; profiles {}", profiles.join(", "));
    out
}

impl Report {
    pub fn summary(&self) -> Summary {
        Summary::of(&self.findings)
    }

    /// The findings grouped by profile, in registry order; profiles without findings left out.
    pub fn by_profile(&self) -> impl Iterator<Item = (Profile, Vec<&Finding>)> {
        Profile::ALL.into_iter().filter_map(|profile| {
            let findings: Vec<&Finding> = self
                .findings
                .iter()
                .filter(|f| f.profile == profile)
                .collect();
            (!findings.is_empty()).then_some((profile, findings))
        })
    }

    /// "every MUST holds" or "a MUST failed".
    pub fn verdict(&self) -> &'static str {
        if self.passed_all_musts() {
            "every MUST holds"
        } else {
            "a MUST failed"
        }
    }

    /// One line per check (`PASS`/`FAIL`/`SKIP`, id, level, spec, requirement); failures are
    /// followed by their reason and evidence, skips by why.
    pub fn render_text(&self) -> String {
        let mut out = format!("Conformance: {}\n", header(self));
        if let Some(why) = &self.unreachable {
            let _ = writeln!(out, "UNREACHABLE: {why}");
        }
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{} {} [{}] {}: {}",
                f.outcome.label(),
                f.id,
                f.level,
                f.spec,
                f.requirement
            );
            match &f.outcome {
                Outcome::Pass => {}
                Outcome::Skipped(why) => {
                    let _ = writeln!(out, "     skipped: {why}");
                }
                Outcome::Fail { reason, evidence } => {
                    let _ = writeln!(out, "     reason: {reason}");
                    if !evidence.is_empty() {
                        let _ = writeln!(out, "     evidence:");
                        for line in render_evidence(evidence).lines() {
                            let _ = writeln!(out, "       {line}");
                        }
                    }
                }
            }
            for note in &f.notes {
                let _ = writeln!(out, "     note: {note}");
            }
        }
        for line in self.rate_limit_lines() {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "{}; {}", self.summary().line(), self.verdict());
        out
    }

    /// When rate limits slowed the run down: a line of totals, then one per check that met
    /// them (and one for the metadata fetched before the checks). Nothing when none did.
    pub fn rate_limit_lines(&self) -> Vec<String> {
        let limits = &self.rate_limits;
        if limits.is_empty() {
            return Vec::new();
        }
        let mut lines = vec![format!("Rate limits: {}", limits.line())];
        let before: Vec<_> = limits.events.iter().filter(|e| e.check.is_none()).collect();
        if !before.is_empty() {
            let waited = before.iter().map(|e| e.waited_millis).sum();
            lines.push(format!(
                "  (metadata, before the checks): {} × 429, waited {}",
                before.len(),
                wait(waited)
            ));
        }
        for id in limits.checks() {
            let (n, waited) = limits.of_check(id);
            let first = limits
                .events
                .iter()
                .find(|e| e.check == Some(id))
                .map_or(0, |e| e.at_millis);
            let gave_up = limits
                .events
                .iter()
                .any(|e| e.check == Some(id) && e.gave_up.is_some());
            lines.push(format!(
                "  {id}: {n} × 429 from {} into the run, waited {}{}",
                wait(first),
                wait(waited),
                if gave_up {
                    "; then gave up (skipped)"
                } else {
                    ""
                }
            ));
        }
        lines
    }

    /// `{"issuer", "homeserver", "profiles", "unreachable", "findings": [...], "summary"}`.
    pub fn render_json(&self) -> String {
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                let mut v = json!({
                    "id": f.id,
                    "spec": f.spec,
                    "level": f.level,
                    "profile": f.profile,
                    "requirement": f.requirement,
                    "result": match f.outcome {
                        Outcome::Pass => "pass",
                        Outcome::Fail { .. } => "fail",
                        Outcome::Skipped(_) => "skipped",
                    },
                    "notes": f.notes,
                    "millis": f.millis,
                });
                match &f.outcome {
                    Outcome::Pass => {}
                    Outcome::Skipped(why) => v["reason"] = json!(why),
                    Outcome::Fail { reason, evidence } => {
                        v["reason"] = json!(reason);
                        v["evidence"] = json!(evidence);
                    }
                }
                v
            })
            .collect();
        let document = json!({
            "issuer": self.issuer,
            "homeserver": self.homeserver,
            "profiles": self.profiles,
            "unreachable": self.unreachable,
            "passed_all_musts": self.passed_all_musts(),
            "summary": self.summary(),
            "rate_limits": {
                "responses": self.rate_limits.responses,
                "waited_millis": self.rate_limits.waited_millis,
                "max_wait_millis": self.rate_limits.max_wait_millis,
                "budget_millis": self.rate_limits.budget_millis,
                "checks": self.rate_limits.checks(),
                "events": self.rate_limits.events,
            },
            "findings": findings,
        });
        serde_json::to_string_pretty(&document).unwrap_or_else(|_| document.to_string())
    }

    /// JUnit XML: a `<testsuite>` per profile, a `<testcase>` per check; failures carry the
    /// reason in `message` and the evidence in CDATA; the level is the failure's `type`.
    pub fn render_junit(&self) -> String {
        let all = self.summary();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"conformance\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
            all.total,
            all.failed,
            all.skipped,
            seconds(self.findings.iter().map(|f| f.millis).sum())
        );
        // JUnit has no place for run-wide facts: the rate limits go in a comment, and in
        // properties and system-out of the suites and cases they slowed down.
        if !self.rate_limits.is_empty() {
            let _ = writeln!(
                out,
                "  <!-- {} -->",
                self.rate_limit_lines().join("; ").replace("--", "- -")
            );
        }
        for (profile, findings) in self.by_profile() {
            let s = Summary::of(findings.iter().copied());
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
                xml_attr(profile.as_str()),
                s.total,
                s.failed,
                s.skipped,
                seconds(findings.iter().map(|f| f.millis).sum())
            );
            let (limited, waited) = findings
                .iter()
                .map(|f| self.rate_limits.of_check(f.id))
                .fold((0, 0), |(n, ms), (fn_, fms)| (n + fn_, ms + fms));
            if limited > 0 {
                let _ = writeln!(
                    out,
                    "    <properties>\n      <property name=\"rate_limited_responses\" value=\"{limited}\"/>\n      <property name=\"rate_limit_wait\" value=\"{}\"/>\n    </properties>",
                    seconds(waited)
                );
            }
            for f in findings {
                let (limited, waited) = self.rate_limits.of_check(f.id);
                let system_out = (limited > 0).then(|| {
                    format!(
                        "\n      <system-out>{}</system-out>",
                        cdata(&format!(
                            "slowed down by rate limits: {limited} × 429, waited {}",
                            wait(waited)
                        ))
                    )
                });
                let system_out = system_out.unwrap_or_default();
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                    xml_attr(&format!("conformance.{}", profile.as_str())),
                    xml_attr(&format!(
                        "{} [{}] {}: {}",
                        f.id, f.level, f.spec, f.requirement
                    )),
                    seconds(f.millis)
                );
                match &f.outcome {
                    Outcome::Pass if system_out.is_empty() => out.push_str("/>\n"),
                    Outcome::Pass => {
                        let _ = writeln!(out, ">{system_out}\n    </testcase>");
                    }
                    Outcome::Skipped(why) => {
                        let _ = writeln!(
                            out,
                            ">\n      <skipped message=\"{}\"/>{system_out}\n    </testcase>",
                            xml_attr(why)
                        );
                    }
                    Outcome::Fail { reason, evidence } => {
                        let mut body = format!(
                            "{} [{}] {}\n{}\n\nreason: {reason}\n",
                            f.id, f.level, f.spec, f.requirement
                        );
                        for note in &f.notes {
                            let _ = writeln!(body, "note: {note}");
                        }
                        if !evidence.is_empty() {
                            let _ = write!(body, "\nevidence:\n{}", render_evidence(evidence));
                        }
                        let _ = writeln!(
                            out,
                            ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>{system_out}\n    </testcase>",
                            xml_attr(reason),
                            f.level,
                            cdata(&body)
                        );
                    }
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }

    /// Markdown, like the tables of areweoidcyet.com: one table per profile,
    /// `| Requirement | Spec | Level | Result |`, then a summary line.
    pub fn render_markdown(&self) -> String {
        let mut out = format!("# Conformance report\n\n{}\n", md_cell(&header(self)));
        if let Some(why) = &self.unreachable {
            let _ = writeln!(out, "\n**Unreachable:** {}", md_cell(why));
        }
        for (profile, findings) in self.by_profile() {
            let _ = writeln!(out, "\n## {}\n", profile.as_str());
            out.push_str("| Requirement | Spec | Level | Result |\n");
            out.push_str("|---|---|---|---|\n");
            for f in findings {
                let result = match &f.outcome {
                    Outcome::Pass => "✅".to_owned(),
                    Outcome::Fail { reason, .. } => {
                        format!("❌ {}", md_cell(&cut(reason, CELL_LIMIT)))
                    }
                    Outcome::Skipped(why) => format!("⏭️ {}", md_cell(&cut(why, CELL_LIMIT))),
                };
                let _ = writeln!(
                    out,
                    "| {} (`{}`) | {} | {} | {} |",
                    md_cell(f.requirement),
                    f.id,
                    md_cell(f.spec),
                    f.level,
                    result
                );
            }
        }
        let s = self.summary();
        let verdict = if self.passed_all_musts() {
            self.verdict().to_owned()
        } else {
            format!("**{}**", self.verdict())
        };
        let limits = &self.rate_limits;
        if !limits.is_empty() {
            let _ = writeln!(out, "\n## Rate limits\n\n{}.\n", md_cell(&limits.line()));
            out.push_str("| Check | 429 answers | First, into the run | Waited | Gave up |\n");
            out.push_str("|---|---|---|---|---|\n");
            let mut rows: Vec<Option<&str>> = Vec::new();
            if limits.events.iter().any(|e| e.check.is_none()) {
                rows.push(None);
            }
            rows.extend(limits.checks().into_iter().map(Some));
            for row in rows {
                let events: Vec<_> = limits.events.iter().filter(|e| e.check == row).collect();
                let waited = events.iter().map(|e| e.waited_millis).sum();
                let gave_up = events
                    .iter()
                    .find_map(|e| e.gave_up.as_deref())
                    .map_or_else(|| "no".to_owned(), |why| md_cell(&cut(why, CELL_LIMIT)));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    row.map_or_else(
                        || "(metadata, before the checks)".to_owned(),
                        |id| format!("`{id}`")
                    ),
                    events.len(),
                    wait(events.first().map_or(0, |e| e.at_millis)),
                    wait(waited),
                    gave_up
                );
            }
        }
        let _ = writeln!(
            out,
            "\n**Summary:** {} checks: ✅ {} passed, ❌ {} failed ({} MUST), ⏭️ {} skipped; {verdict}.",
            s.total, s.passed, s.failed, s.must_failed, s.skipped
        );
        out
    }
}

fn seconds(millis: u64) -> String {
    format!("{}.{:03}", millis / 1000, millis % 1000)
}

/// Characters XML 1.0 allows (§2.2); others are replaced.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// An attribute value: markup escaped, line breaks kept as character references.
pub(crate) fn xml_attr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// A CDATA section holding `text` (a `]]>` inside is split across two sections).
pub(crate) fn cdata(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if xml_char(c) { c } else { '\u{FFFD}' })
        .collect();
    format!("<![CDATA[{}]]>", clean.replace("]]>", "]]]]><![CDATA[>"))
}

/// A Markdown table cell: no line breaks, `|` escaped, no raw HTML.
pub(crate) fn md_cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escaping() {
        assert_eq!(
            xml_attr("a<b & \"c\" 'd'>\n\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;&#10;\u{FFFD}"
        );
        assert_eq!(cdata("x]]>y"), "<![CDATA[x]]]]><![CDATA[>y]]>");
        assert_eq!(md_cell("a|b\nc<d>"), "a\\|b c&lt;d&gt;");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let text = "é".repeat(10);
        let cut = cut(&text, 3);
        assert!(cut.starts_with("ééé…"), "{cut}");
    }
}
