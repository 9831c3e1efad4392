//! The mailbox: every mail the provider sent (its `capture` transport keeps them in memory),
//! newest first, with the codes and links in them ready to use. Also as JSON.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
    Json,
};
use minijinja::context;
use provider::core::email::SentMail;
use serde::Serialize;

use super::Dashboard;

/// A piece of a mail's text: plain text, a link, or a code to copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "text", rename_all = "snake_case")]
enum Piece {
    Text(String),
    Link(String),
    Code(String),
}

/// A mail as the page shows it.
#[derive(Debug, Serialize)]
struct MailView {
    to: String,
    from: String,
    subject: String,
    sent_at: String,
    body: Vec<Piece>,
}

/// Is this word a code a mail asks to enter (6 digits)?
fn is_code(word: &str) -> bool {
    word.len() == 6 && word.bytes().all(|b| b.is_ascii_digit())
}

/// Splits a mail's text into pieces: `http(s)://` links and 6-digit codes stand out, the rest
/// stays text (line breaks and spacing kept: the page shows it preformatted).
fn pieces(text: &str) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let push_text = |out: &mut Vec<Piece>, s: &str| {
        if s.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(Piece::Text(t)) => t.push_str(s),
            _ => out.push(Piece::Text(s.to_owned())),
        }
    };
    let mut rest = text;
    while !rest.is_empty() {
        // The next word, with the whitespace before it.
        let start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        push_text(&mut out, &rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        if word.starts_with("https://") || word.starts_with("http://") {
            out.push(Piece::Link(word.to_owned()));
        } else if is_code(word) {
            out.push(Piece::Code(word.to_owned()));
        } else {
            push_text(&mut out, word);
        }
        rest = &rest[end..];
    }
    out
}

fn view(mail: &SentMail) -> MailView {
    MailView {
        to: mail.to.clone(),
        from: mail.from.clone(),
        subject: mail.subject.clone(),
        sent_at: mail.sent_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        body: pieces(&mail.text),
    }
}

/// The mails, newest first.
fn newest_first(d: &Dashboard) -> Vec<SentMail> {
    let mut mails = d
        .provider
        .mailer
        .mailbox()
        .map(|m| m.list())
        .unwrap_or_default();
    mails.reverse();
    mails
}

/// `GET /mailbox`.
pub async fn page(State(d): State<Dashboard>) -> Response {
    let mails: Vec<MailView> = newest_first(&d).iter().map(view).collect();
    d.render(
        "mailbox.html",
        "/mailbox",
        context! {
            mails,
            capturing => d.provider.mailer.mailbox().is_some(),
            capacity => provider::core::email::MAILBOX_CAPACITY,
            account => provider::endpoints::url(&d.urls.issuer, provider::endpoints::ACCOUNT).to_string(),
        },
    )
}

/// `GET /mailbox.json`: the mails, newest first.
pub async fn json(State(d): State<Dashboard>) -> Response {
    Json(newest_first(&d)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_codes_stand_out() {
        let text = "Hello\n\n    042137\n\nOpen https://a.example/recover/abc?x=1 now.\nnot 1234567 nor 12345";
        let got = pieces(text);
        assert_eq!(
            got,
            vec![
                Piece::Text("Hello\n\n    ".into()),
                Piece::Code("042137".into()),
                Piece::Text("\n\nOpen ".into()),
                Piece::Link("https://a.example/recover/abc?x=1".into()),
                Piece::Text(" now.\nnot 1234567 nor 12345".into()),
            ]
        );
        let joined: String = got
            .iter()
            .map(|p| match p {
                Piece::Text(t) | Piece::Link(t) | Piece::Code(t) => t.as_str(),
            })
            .collect();
        assert_eq!(joined, text, "nothing is lost");
        assert!(pieces("").is_empty());
    }
}
