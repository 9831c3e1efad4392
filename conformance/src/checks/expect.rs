//! The judgements checks share: what an answer must look like, as `Result`s to use with `?`.

use serde_json::Value;
use test_clients::http::Reply;
use url::Url;

use crate::context::{response_params, Client, Probe, Stop};
use crate::Checked;

pub(crate) fn fail(reason: impl Into<String>) -> Stop {
    Stop::fail(reason)
}

pub(crate) fn skip(reason: impl Into<String>) -> Stop {
    Stop::skip(reason)
}

/// Passes when `condition` holds; fails with `reason` otherwise.
pub(crate) fn ensure(condition: bool, reason: impl FnOnce() -> String) -> Checked {
    if condition {
        Ok(())
    } else {
        Err(fail(reason()))
    }
}

/// A short form of a body for a reason.
pub(crate) fn short(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &body[..at]),
        None => body.to_owned(),
    }
}

/// The answer as JSON.
pub(crate) fn json(reply: &Reply, what: &str) -> Result<Value, Stop> {
    reply.json().map_err(|_| {
        fail(format!(
            "{what}: HTTP {} with a body that is not JSON: {}",
            reply.status,
            short(&reply.body)
        ))
    })
}

/// A header's value (the first), as text.
pub(crate) fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|v| v.to_str().ok())
}

fn alternatives(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(" or ")
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2): one of `statuses`, a JSON object whose `error`
/// is one of `errors`.
pub(crate) fn oauth_error(reply: &Reply, statuses: &[u16], errors: &[&str]) -> Checked {
    let body = reply.json().ok();
    let error = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str);
    if reply.status / 100 == 2 {
        return Err(fail(format!(
            "accepted (HTTP {}) instead of refused with {}: {}",
            reply.status,
            alternatives(errors.iter().map(|e| format!("`{e}`"))),
            short(&reply.body)
        )));
    }
    let Some(error) = error else {
        return Err(fail(format!(
            "refused with HTTP {} but without a JSON `error` (RFC 6749 §5.2): {}",
            reply.status,
            short(&reply.body)
        )));
    };
    ensure(errors.contains(&error), || {
        format!(
            "refused with `{error}` instead of {}",
            alternatives(errors.iter().map(|e| format!("`{e}`")))
        )
    })?;
    ensure(statuses.contains(&reply.status), || {
        format!(
            "`{error}` came with HTTP {} instead of {}",
            reply.status,
            alternatives(statuses.iter().map(u16::to_string))
        )
    })
}

/// A Matrix error answer (client-server API §"Standard error response").
pub(crate) fn matrix_error(reply: &Reply, statuses: &[u16], errcodes: &[&str]) -> Checked {
    let errcode = reply
        .json()
        .ok()
        .and_then(|b| b.get("errcode").and_then(Value::as_str).map(str::to_owned));
    let Some(errcode) = errcode else {
        return Err(fail(format!(
            "HTTP {} without a JSON `errcode`: {}",
            reply.status,
            short(&reply.body)
        )));
    };
    ensure(errcodes.contains(&errcode.as_str()), || {
        format!(
            "answered `{errcode}` (HTTP {}) instead of {}",
            reply.status,
            alternatives(errcodes.iter().map(|e| format!("`{e}`")))
        )
    })?;
    ensure(statuses.contains(&reply.status), || {
        format!(
            "`{errcode}` came with HTTP {} instead of {}",
            reply.status,
            alternatives(statuses.iter().map(u16::to_string))
        )
    })
}

/// The redirect target, when the answer is a redirect.
pub(crate) fn redirect(reply: &Reply) -> Option<Url> {
    if (300..400).contains(&reply.status) {
        reply.location()
    } else {
        None
    }
}

/// Whether `url` is `target` or below it (with a query or fragment).
pub(crate) fn starts_with(url: &Url, target: &str) -> bool {
    let url = url.as_str();
    url == target
        || url
            .strip_prefix(target)
            .is_some_and(|rest| rest.starts_with(['?', '#', '&']))
}

/// The parameters of a redirect back to `redirect_uri`, if the answer is one.
pub(crate) fn client_redirect(reply: &Reply, redirect_uri: &str) -> Option<Vec<(String, String)>> {
    redirect(reply)
        .filter(|url| starts_with(url, redirect_uri))
        .map(|url| response_params(&url))
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A page that leads back to `redirect_uri` only by the user's choice: a link there, or a form
/// posting there (`form_post`); the parameters it carries. RFC 9700 §4.11.2: a provider that
/// doesn't trust a redirect URI (a client that registered itself) "MAY inform the user and rely
/// on the user to make the correct decision" instead of redirecting.
pub(crate) fn shown_response(reply: &Reply, redirect_uri: &str) -> Option<Vec<(String, String)>> {
    if redirect(reply).is_some() {
        return None;
    }
    // The redirect URI itself, followed by its parameters ([`starts_with`]): not a longer URI
    // that happens to begin with it.
    ["?", "#", "&", ""]
        .into_iter()
        .find_map(|then| {
            let target = format!("{redirect_uri}{then}");
            test_clients::pages::way_back_to(&reply.body, &reply.url, &target)
        })
        .filter(|url| starts_with(url, redirect_uri))
        .map(|url| response_params(&url))
}

/// RFC 6749 §4.1.2.1: a refused authorization request whose client and redirect URI are valid
/// is answered by redirecting an `error` (one of `errors`) to the redirect URI, or (RFC 9700
/// §4.11.2, [`shown_response`]) by a page leading there by the user's choice. Returns the
/// parameters of that answer.
pub(crate) fn authorize_refused(
    reply: &Reply,
    redirect_uri: &str,
    errors: &[&str],
) -> Result<Vec<(String, String)>, Stop> {
    let expected = || alternatives(errors.iter().map(|e| format!("`{e}`")));
    let answered =
        client_redirect(reply, redirect_uri).or_else(|| shown_response(reply, redirect_uri));
    if let Some(params) = answered {
        return match (param(&params, "error"), param(&params, "code")) {
            (Some(error), _) if errors.contains(&error) => Ok(params),
            (Some(error), _) => Err(fail(format!(
                "refused with `{error}` instead of {}",
                expected()
            ))),
            (None, Some(_)) => Err(fail("accepted: a code was sent to the client")),
            (None, None) => Err(fail("redirected to the client without `error` or `code`")),
        };
    }
    if reply.status >= 400 {
        return Err(fail(format!(
            "refused with an error page (HTTP {}) instead of redirecting {} to the registered \
             redirect URI (RFC 6749 §4.1.2.1)",
            reply.status,
            expected()
        )));
    }
    let whither = redirect(reply)
        .map(|u| format!("redirected to {u}"))
        .unwrap_or_else(|| format!("HTTP {}", reply.status));
    Err(fail(format!(
        "accepted: the request went on toward sign-in ({whither}) instead of being refused with {}",
        expected()
    )))
}

/// The authorization request was accepted: no error went back to the client and no error page
/// was shown (the provider went on toward sign-in).
pub(crate) fn authorize_proceeds(reply: &Reply, redirect_uri: &str) -> Checked {
    if let Some(params) = client_redirect(reply, redirect_uri) {
        if let Some(error) = param(&params, "error") {
            return Err(fail(format!(
                "refused with `{error}`: {}",
                param(&params, "error_description").unwrap_or("")
            )));
        }
        return Ok(());
    }
    ensure(reply.status < 400, || {
        format!(
            "refused with an error page (HTTP {}): {}",
            reply.status,
            short(&reply.body)
        )
    })
}

/// RFC 6749 §4.1.2.1: the user agent is not sent to `target`.
pub(crate) fn not_redirected_to(reply: &Reply, target: &str) -> Checked {
    match redirect(reply) {
        Some(url) if url.as_str().starts_with(target) => {
            Err(fail(format!("redirected to the untrusted URI: {url}")))
        }
        _ => {
            // A page that submits a form there (form_post) would be a redirect too.
            let action = format!("action=\"{target}");
            ensure(!reply.body.contains(&action), || {
                format!(
                    "the answer (HTTP {}) sends the browser to the untrusted URI",
                    reply.status
                )
            })
        }
    }
}

/// An authorization request URL for `client`: `response_type=code`, `scope=openid`, a
/// `state`, an S256 challenge; each override replaces (`Some`) or removes (`None`) a
/// parameter, or adds one.
pub(crate) fn authorize_url(
    p: &Probe,
    client: &Client,
    overrides: &[(&str, Option<&str>)],
) -> Result<Url, Stop> {
    let mut url = p.cx.endpoint("authorization_endpoint")?;
    let pkce = p.cx.pkce();
    let state = p.cx.random(12);
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client.client_id.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("scope", "openid"),
        ("state", state.as_str()),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (name, value) in overrides {
        let at = params.iter().position(|(k, _)| k == name);
        match (at, value) {
            (Some(i), Some(v)) => params[i].1 = (*v).to_owned(),
            (Some(i), None) => {
                params.remove(i);
            }
            (None, Some(v)) => params.push(((*name).to_owned(), (*v).to_owned())),
            (None, None) => {}
        }
    }
    url.query_pairs_mut().extend_pairs(params.iter());
    Ok(url)
}

/// A fixture a check depends on, or skipped.
pub(crate) async fn public_client(p: &Probe) -> Result<Client, Stop> {
    p.cx.public_client()
        .await
        .cloned()
        .map_err(|e| e.skip("the suite's registered public client"))
}

/// Whether the host of an issuer is the loopback interface (RFC 8252 §7.3 names).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str) -> Reply {
        Reply {
            status: 400,
            headers: reqwest::header::HeaderMap::new(),
            body: body.to_owned(),
            url: Url::parse("https://issuer.example/authorize?x=1").unwrap(),
        }
    }

    #[test]
    fn a_shown_response_is_a_link_or_a_form_back_to_the_redirect_uri() {
        let link = page(
            r#"<p>Refused.</p><a href="https://client.example/cb2?error=nope">no</a>
               <a href="https://client.example/cb?error=access_denied&amp;state=s">back</a>"#,
        );
        // The link to `cb2` is not the way back to `cb`.
        assert_eq!(
            shown_response(&link, "https://client.example/cb"),
            Some(vec![
                ("error".to_owned(), "access_denied".to_owned()),
                ("state".to_owned(), "s".to_owned()),
            ])
        );
        let form = page(
            r#"<form method="post" action="https://client.example/cb">
               <input type="hidden" name="error" value="invalid_scope"></form>"#,
        );
        assert_eq!(
            shown_response(&form, "https://client.example/cb"),
            Some(vec![("error".to_owned(), "invalid_scope".to_owned())])
        );
        assert_eq!(
            shown_response(&page("<p>Refused.</p>"), "https://client.example/cb"),
            None
        );
    }
}
