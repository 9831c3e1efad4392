//! A person at the provider's pages, with a browser (a cookie jar): reads each page's form,
//! fills it in as a person would (credentials on sign-in and registration forms, "allow" on
//! consent and approval forms, "continue" on confirmations), and follows redirects, until the
//! browser is sent back to the client.

use reqwest::Method;
use scraper::{ElementRef, Html, Selector};
use url::Url;

use crate::{
    http::{page_text, short_url, Http, Reply},
    Error,
};

/// A person at the provider's pages.
#[derive(Clone)]
pub enum Account {
    /// Signs in with an existing account.
    SignIn { username: String, password: String },
    /// Creates the account on the registration page.
    Register { username: String, password: String },
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, username) = match self {
            Self::SignIn { username, .. } => ("SignIn", username),
            Self::Register { username, .. } => ("Register", username),
        };
        f.debug_struct(kind)
            .field("username", username)
            .field("password", &"<elided>")
            .finish()
    }
}

impl Account {
    pub fn username(&self) -> &str {
        match self {
            Self::SignIn { username, .. } | Self::Register { username, .. } => username,
        }
    }

    pub fn password(&self) -> &str {
        match self {
            Self::SignIn { password, .. } | Self::Register { password, .. } => password,
        }
    }

    pub fn is_register(&self) -> bool {
        matches!(self, Self::Register { .. })
    }

    /// The same person signing in (once the account exists).
    pub fn to_sign_in(&self) -> Self {
        Self::SignIn {
            username: self.username().to_owned(),
            password: self.password().to_owned(),
        }
    }
}

/// The most pages and redirects one walk goes through.
const MAX_STEPS: usize = 24;

/// The values of a submit button a person picks, best first; `deny` and the like never.
const CHOICES: &[&str] = &[
    "allow", "accept", "approve", "consent", "continue", "confirm", "yes",
];

/// One form of a page.
#[derive(Debug, Clone)]
struct Form {
    action: Url,
    method: Method,
    /// Named inputs (not buttons; checkboxes and radios only when checked), textareas and
    /// selects, in document order.
    fields: Vec<(String, String)>,
    /// The names of the password inputs.
    passwords: Vec<String>,
    /// Named submit buttons: (name, value).
    buttons: Vec<(String, String)>,
}

fn selector(css: &str) -> Selector {
    // The selectors below are constants known to parse.
    Selector::parse(css).expect("a valid CSS selector")
}

fn parse_forms(page: &str, base: &Url) -> Vec<Form> {
    parse_forms_matching(page, base, &selector("form"))
}

/// The forms of a page that `forms` selects.
fn parse_forms_matching(page: &str, base: &Url, forms: &Selector) -> Vec<Form> {
    let doc = Html::parse_document(page);
    let controls = selector("input[name], textarea[name], select[name], button[name]");
    let option = selector("option");
    doc.select(forms)
        .filter_map(|form| {
            let action = match form.value().attr("action") {
                Some(a) if !a.trim().is_empty() => base.join(a.trim()).ok()?,
                _ => base.clone(),
            };
            let method = match form.value().attr("method") {
                Some(m) if m.eq_ignore_ascii_case("post") => Method::POST,
                _ => Method::GET,
            };
            let mut parsed = Form {
                action,
                method,
                fields: Vec::new(),
                passwords: Vec::new(),
                buttons: Vec::new(),
            };
            for control in form.select(&controls) {
                read_control(&mut parsed, control, &option);
            }
            Some(parsed)
        })
        .collect()
}

fn read_control(form: &mut Form, control: ElementRef<'_>, option: &Selector) {
    let element = control.value();
    let Some(name) = element.attr("name").map(str::to_owned) else {
        return;
    };
    let value = element.attr("value").unwrap_or_default().to_owned();
    let kind = element
        .attr("type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    match element.name() {
        "button" => {
            if matches!(kind.as_str(), "" | "submit") {
                form.buttons.push((name, value));
            }
        }
        "textarea" => form.fields.push((name, control.text().collect())),
        "select" => {
            let options: Vec<_> = control.select(option).collect();
            let chosen = options
                .iter()
                .find(|o| o.value().attr("selected").is_some())
                .or(options.first());
            if let Some(o) = chosen {
                let value = o
                    .value()
                    .attr("value")
                    .map(str::to_owned)
                    .unwrap_or_else(|| o.text().collect());
                form.fields.push((name, value));
            }
        }
        _ => match kind.as_str() {
            "submit" | "image" => form.buttons.push((name, value)),
            "button" | "reset" | "file" => {}
            "checkbox" | "radio" => {
                if element.attr("checked").is_some() {
                    let value = if value.is_empty() { "on".into() } else { value };
                    form.fields.push((name, value));
                }
            }
            "password" => {
                form.passwords.push(name.clone());
                form.fields.push((name, value));
            }
            _ => form.fields.push((name, value)),
        },
    }
}

/// The first form of an HTML page: its action (absolute, resolved against `base`) and its named
/// inputs with their values (password inputs included, empty; buttons left out).
pub fn form(page: &str, base: &Url) -> Result<(Url, Vec<(String, String)>), Error> {
    form_matching(page, base, "form")
}

/// Like [`form`], for the first form the CSS selector `css` matches (`#add-email`,
/// `form[id^=verify-]`).
pub fn form_matching(
    page: &str,
    base: &Url,
    css: &str,
) -> Result<(Url, Vec<(String, String)>), Error> {
    let forms = Selector::parse(css)
        .map_err(|e| Error::Page(format!("the selector `{css}` is not valid CSS: {e}")))?;
    parse_forms_matching(page, base, &forms)
        .into_iter()
        .next()
        .map(|f| (f.action, f.fields))
        .ok_or_else(|| {
            Error::Page(format!(
                "no `{css}` form on the page at {}: {}",
                short_url(base),
                page_text(page)
            ))
        })
}

/// The first link of a page whose path ends with `suffix`, resolved against `base`.
fn link_ending_with(page: &str, base: &Url, suffix: &str) -> Option<Url> {
    let doc = Html::parse_document(page);
    doc.select(&selector("a[href]"))
        .filter_map(|a| base.join(a.value().attr("href")?).ok())
        .find(|url| url.path().ends_with(suffix))
}

/// Sets the field `name` of a form's fields to `value` (adding it when missing).
pub fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    match fields.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value.to_owned(),
        None => fields.push((name.to_owned(), value.to_owned())),
    }
}

/// When a walk ends.
#[derive(Clone, Copy)]
enum Stop<'a> {
    /// At a redirect to (or a final page at, or a form posting to) a URL starting with this.
    At(&'a str),
    /// At the page without a form that answers an approval ("allow"): the device flow, whose
    /// result is shown, not redirected. Empty code fields are filled with the user code.
    Approved { user_code: &'a str },
}

impl Stop<'_> {
    fn reached(&self, url: &Url) -> bool {
        match self {
            Self::At(prefix) => url.as_str().starts_with(prefix),
            Self::Approved { .. } => false,
        }
    }
}

/// What the browser does next.
enum Next {
    Get(Url),
    Submit(Method, Url, Vec<(String, String)>),
}

/// Follows `url` (an authorization request, an SSO redirect, a device link, a logout request…)
/// through the provider's pages with the browser `http`: login or registration form, consent
/// ("allow"), compat SSO confirmation, device-code approval, logout confirmation; until a
/// redirect whose URL starts with `stop_at` (returned), or a page that has no form to go on with
/// (an error with its text). Also returned: a page without a form served at a URL starting with
/// `stop_at`, and, for `response_mode=form_post`, a form posting to `stop_at` (its fields as the
/// query of the returned URL), and a link (or form) to `stop_at` on any page, the way back a
/// person takes from a page that shows an error instead of redirecting it (RFC 9700 §4.11.2).
/// Any other 4xx/5xx page is an error with its text.
///
/// An [`Account::Register`] at a sign-in page follows its link to the registration page (and an
/// [`Account::SignIn`] at a registration page its link to the sign-in page).
pub async fn walk(http: &Http, url: &Url, stop_at: &str, account: &Account) -> Result<Url, Error> {
    walk_until(http, url, Stop::At(stop_at), account).await
}

/// Approves a device authorization request (RFC 8628 §3.3) in the browser `http`: opens the
/// verification URI (preferably `verification_uri_complete`), signs in or registers, enters
/// `user_code` when the code field is empty, and allows. Returns the URL of the result page the
/// provider shows (the device learns the answer by polling).
pub async fn approve_device(
    http: &Http,
    verification_uri: &Url,
    user_code: &str,
    account: &Account,
) -> Result<Url, Error> {
    walk_until(
        http,
        verification_uri,
        Stop::Approved { user_code },
        account,
    )
    .await
}

async fn walk_until(
    http: &Http,
    url: &Url,
    stop: Stop<'_>,
    account: &Account,
) -> Result<Url, Error> {
    let transcript = http.transcript();
    let mut next = Next::Get(url.clone());
    let mut allowed = false;
    for _ in 0..MAX_STEPS {
        let reply = match &next {
            Next::Get(url) => http.get(url.as_str()).await?,
            Next::Submit(method, url, fields) => {
                let request = if *method == Method::POST {
                    http.request(Method::POST, url.clone()).form(fields)
                } else {
                    let mut url = url.clone();
                    url.query_pairs_mut().clear().extend_pairs(fields);
                    http.request(Method::GET, url)
                };
                http.send(request).await?
            }
        };
        match reply.status {
            300..=399 => {
                let location = reply.location().ok_or_else(|| {
                    Error::Protocol(format!(
                        "{} answered HTTP {} without a Location header",
                        short_url(&reply.url),
                        reply.status
                    ))
                })?;
                if stop.reached(&location) {
                    return Ok(location);
                }
                // RFC 9110 §15.4.8/§15.4.9: 307 and 308 repeat the request as it was.
                next = match (reply.status, next) {
                    (307 | 308, Next::Submit(method, _, fields)) => {
                        Next::Submit(method, location, fields)
                    }
                    _ => Next::Get(location),
                };
            }
            200..=299 => {
                let page = reply.body.as_str();
                let Some(form) = parse_forms(page, &reply.url).into_iter().next() else {
                    if stop.reached(&reply.url)
                        || (matches!(stop, Stop::Approved { .. }) && allowed)
                    {
                        return Ok(reply.url);
                    }
                    if let Some(back) = way_back(page, &reply.url, stop) {
                        transcript.note(format!(
                            "browser: at {}, following the link back to the application",
                            reply.url.path()
                        ));
                        return Ok(back);
                    }
                    return Err(Error::Page(format!(
                        "the page at {} has no form to go on with: {}",
                        short_url(&reply.url),
                        page_text(page)
                    )));
                };
                // OAuth 2.0 Form Post Response Mode §2: the response, posted to the client.
                if stop.reached(&form.action) {
                    let mut back = form.action.clone();
                    back.query_pairs_mut().extend_pairs(&form.fields);
                    return Ok(back);
                }
                let (submit, approving) = fill(transcript, &reply, form, stop, account)?;
                allowed |= approving;
                next = submit;
            }
            // RFC 9700 §4.11.2: an error for a client the provider doesn't trust (one that
            // registered itself) may be shown on a page that leads back only by the person's
            // choice; they follow it.
            _ => match way_back(&reply.body, &reply.url, stop) {
                Some(back) => {
                    transcript.note(format!(
                        "browser: HTTP {} at {}, following the way back to the application",
                        reply.status,
                        reply.url.path()
                    ));
                    return Ok(back);
                }
                None => return Err(page_error(&reply)),
            },
        }
    }
    Err(Error::Page(format!(
        "still on the provider's pages after {MAX_STEPS} steps from {}",
        short_url(url)
    )))
}

/// The way back to the application from a page that shows an answer instead of redirecting
/// it (RFC 9700 §4.11.2): a link on `page` to a URL starting with `target`, or a form posting
/// there (its fields as the query of the returned URL). `base` (the page's URL) resolves
/// relative links and actions.
pub fn way_back_to(page: &str, base: &Url, target: &str) -> Option<Url> {
    way_back(page, base, Stop::At(target))
}

/// A link on a page to where the walk stops, or a form posting there (its fields as the query
/// of the returned URL): the way back to the application a person would take.
fn way_back(page: &str, base: &Url, stop: Stop<'_>) -> Option<Url> {
    let doc = Html::parse_document(page);
    let link = doc
        .select(&selector("a[href]"))
        .filter_map(|a| base.join(a.value().attr("href")?).ok())
        .find(|url| stop.reached(url));
    link.or_else(|| {
        let form = parse_forms(page, base)
            .into_iter()
            .find(|f| stop.reached(&f.action))?;
        let mut back = form.action;
        back.query_pairs_mut().extend_pairs(&form.fields);
        Some(back)
    })
}

fn page_error(reply: &Reply) -> Error {
    let is_html = reply
        .header("content-type")
        .is_some_and(|t| t.contains("html"));
    let text = if is_html {
        page_text(&reply.body)
    } else {
        reply.quoted_body()
    };
    Error::Page(format!(
        "HTTP {} at {}: {text}",
        reply.status,
        short_url(&reply.url)
    ))
}

/// Fills in a page's form as the person would; what to do next, and whether it approves.
fn fill(
    transcript: &crate::transcript::Transcript,
    reply: &Reply,
    mut form: Form,
    stop: Stop<'_>,
    account: &Account,
) -> Result<(Next, bool), Error> {
    let note = |text: String| transcript.note(text);
    let page = reply.body.as_str();
    let path = reply.url.path().to_owned();
    let has = |name: &str| form.fields.iter().any(|(n, _)| n == name);
    let registration = form.passwords.len() >= 2 || has("password_confirm");
    let sign_in = !registration && (!form.passwords.is_empty() || has("password"));
    // The password inputs to fill: those of type password, else the one named `password`.
    let mut passwords = if form.passwords.is_empty() {
        vec!["password".to_owned()]
    } else {
        form.passwords.clone()
    };
    if registration && !passwords.iter().any(|p| p == "password_confirm") {
        passwords.push("password_confirm".to_owned());
    }

    if registration || sign_in {
        let wanted_register = account.is_register();
        if registration != wanted_register {
            // The other page of the pair: a person follows its link.
            let (suffix, what) = if wanted_register {
                ("/register", "create an account")
            } else {
                ("/login", "sign in")
            };
            return match link_ending_with(page, &reply.url, suffix) {
                Some(link) => {
                    note(format!("browser: at {path}, following the link to {what}"));
                    Ok((Next::Get(link), false))
                }
                None => Err(Error::Page(format!(
                    "the page at {} asks to {}, and has no link to {what}: {}",
                    short_url(&reply.url),
                    if registration {
                        "create an account"
                    } else {
                        "sign in"
                    },
                    page_text(page)
                ))),
            };
        }
        set(&mut form.fields, "username", account.username());
        for name in &passwords {
            set(&mut form.fields, name, account.password());
        }
        note(format!(
            "browser: {} form at {path}, as {}",
            if registration {
                "registration"
            } else {
                "sign-in"
            },
            account.username()
        ));
        return Ok((Next::Submit(form.method, form.action, form.fields), false));
    }

    // A device code entry form left empty (RFC 8628 §3.3: the user types the code).
    if let Stop::Approved { user_code } = stop {
        for (name, value) in form.fields.iter_mut() {
            if (name == "code" || name == "user_code") && value.is_empty() {
                *value = user_code.to_owned();
            }
        }
    }

    // A choice (consent, approval) or a confirmation: the button a person picks.
    let button = CHOICES.iter().find_map(|choice| {
        form.buttons
            .iter()
            .find(|(_, v)| v.eq_ignore_ascii_case(choice))
            .cloned()
    });
    let approving = button
        .as_ref()
        .is_some_and(|(_, v)| v.eq_ignore_ascii_case("allow") || v.eq_ignore_ascii_case("approve"));
    match button {
        Some((name, value)) => {
            note(format!("browser: choosing `{value}` at {path}"));
            form.fields.push((name, value));
        }
        None if form.buttons.is_empty() => {
            note(format!("browser: submitting the form at {path}"));
        }
        None => {
            return Err(Error::Page(format!(
                "the page at {} offers no choice to go on with ({}): {}",
                short_url(&reply.url),
                form.buttons
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                page_text(page)
            )))
        }
    }
    Ok((
        Next::Submit(form.method, form.action, form.fields),
        approving,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSENT: &str = r#"<!DOCTYPE html><html><head><title>Allow access · Test</title></head>
<body><main><h1>Allow Test to access your account?</h1>
<form method="post" action="/consent/01J" class="choices">
  <input type="hidden" name="csrf" value="c&amp;1">
  <button type="submit" name="action" value="allow">Allow</button>
  <button type="submit" name="action" value="deny" class="secondary">Deny</button>
</form></main></body></html>"#;

    const LOGIN: &str = r#"<html><body><main><h1>Sign in</h1>
<form method="post" action="/login">
  <input type="hidden" name="csrf" value="tok">
  <input type="hidden" name="next" value="/link?code=ABCD-EFGH">
  <input id="username" name="username" type="text" value="">
  <input id="password" name="password" type="password" required>
  <input type="checkbox" name="remember">
  <input type="checkbox" name="terms" value="yes" checked>
  <select name="lang"><option value="en">English</option><option value="fr" selected>Français</option></select>
  <textarea name="note">hello</textarea>
  <button type="submit">Sign in</button>
</form>
<p class="hint">New here? <a href="/register?next=%2Flink%3Fcode%3DABCD-EFGH">Create an account</a></p>
</main></body></html>"#;

    fn base() -> Url {
        Url::parse("https://auth.test/consent/01J?x=1").unwrap()
    }

    #[test]
    fn the_first_form_with_an_absolute_action() {
        let (action, fields) = form(CONSENT, &base()).unwrap();
        assert_eq!(action.as_str(), "https://auth.test/consent/01J");
        // Entities decoded, buttons left out.
        assert_eq!(fields, vec![("csrf".to_owned(), "c&1".to_owned())]);
        let forms = parse_forms(CONSENT, &base());
        assert_eq!(forms[0].method, Method::POST);
        assert_eq!(
            forms[0].buttons,
            vec![
                ("action".to_owned(), "allow".to_owned()),
                ("action".to_owned(), "deny".to_owned())
            ]
        );
    }

    #[test]
    fn inputs_checkboxes_selects_textareas() {
        let base = Url::parse("https://auth.test/login?next=%2Flink").unwrap();
        let (action, fields) = form(LOGIN, &base).unwrap();
        assert_eq!(action.as_str(), "https://auth.test/login");
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("csrf", "tok"),
                ("next", "/link?code=ABCD-EFGH"),
                ("username", ""),
                ("password", ""),
                ("terms", "yes"),
                ("lang", "fr"),
                ("note", "hello"),
            ]
        );
        assert_eq!(parse_forms(LOGIN, &base)[0].passwords, ["password"]);
        assert_eq!(
            link_ending_with(LOGIN, &base, "/register")
                .unwrap()
                .as_str(),
            "https://auth.test/register?next=%2Flink%3Fcode%3DABCD-EFGH"
        );
    }

    #[test]
    fn forms_without_action_or_method() {
        let page = r#"<form><input name="q" value="1"></form><form action="/second"></form>"#;
        let forms = parse_forms(page, &base());
        assert_eq!(forms.len(), 2);
        assert_eq!(forms[0].action, base());
        assert_eq!(forms[0].method, Method::GET);
        assert_eq!(forms[1].action.as_str(), "https://auth.test/second");
    }

    #[test]
    fn no_form_is_a_page_error_with_the_text() {
        let page = "<html><body><main><h1>Invalid request</h1><p>The client is unknown.</p></main></body></html>";
        let error = form(page, &base()).unwrap_err().to_string();
        assert!(
            error.contains("Invalid request The client is unknown."),
            "{error}"
        );
        assert!(!error.contains("x=1"), "no query in messages: {error}");
    }

    #[test]
    fn accounts_hide_their_password_in_debug() {
        let account = Account::Register {
            username: "bob".into(),
            password: "hunter2hunter2".into(),
        };
        let shown = format!("{account:?}");
        assert!(
            shown.contains("bob") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(!account.to_sign_in().is_register());
    }
}
