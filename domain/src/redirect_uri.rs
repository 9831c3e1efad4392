//! Redirect URI matching.
//!
//! RFC 9700 §4.1.3 / RFC 6749 §3.1.2.3: the redirect URI of a request must equal a registered one
//! by exact string comparison. The one exception is RFC 8252 §7.3 (native apps): for a registered
//! loopback redirect (`http://127.0.0.1`, `http://[::1]`, and `http://localhost`, which Matrix
//! clients use) without a port, any port is accepted at request time, since the app picks a free
//! port when it starts.

use url::{Host, Url};

/// Is this a loopback `http` URL without an explicit port (the form that accepts any port)?
fn is_portless_loopback(url: &Url) -> bool {
    url.scheme() == "http"
        && url.port().is_none()
        && match url.host() {
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            Some(Host::Domain(d)) => d == "localhost",
            None => false,
        }
}

/// Is a port written in the URI's authority? The parser drops a scheme's default port
/// (`http://127.0.0.1:80/` reads as port-less), but a registration that names one, default or
/// not, names that port: RFC 8252 §7.3's any-port rule is for registrations without a port.
fn writes_port(raw: &str) -> bool {
    let authority = raw
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '\\', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    // After an IPv6 literal's brackets, whose colons are not a port's.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    authority[host_end..].contains(':')
}

/// Is `requested` the `registered` text with a port written after its host, and nothing else
/// changed? Compared as written: the parser would also take `127.0.01` or `0x7f.1` for
/// `127.0.0.1`, and strip spaces around a URI, but RFC 9700 §4.1.3 compares strings.
fn is_registered_with_port(registered: &str, requested: &str) -> bool {
    let Some(rest) = registered.strip_prefix("http://") else {
        return false;
    };
    let host_end = "http://".len() + rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let (head, tail) = registered.split_at(host_end);
    requested
        .strip_prefix(head)
        .and_then(|r| r.strip_suffix(tail))
        .and_then(|r| r.strip_prefix(':'))
        .is_some_and(|port| {
            (1..=5).contains(&port.len())
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        })
}

/// Does the `requested` redirect URI match the `registered` one?
pub fn matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(reg), Ok(req)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    // RFC 8252 §7.3: same scheme, host, path and query; any port.
    is_portless_loopback(&reg)
        && !writes_port(registered)
        && req.scheme() == "http"
        && req.host() == reg.host()
        && req.path() == reg.path()
        && req.query() == reg.query()
        && req.fragment().is_none()
        && req.username().is_empty()
        && req.password().is_none()
        // the text must be the registered one with a port added, nothing else
        && is_registered_with_port(registered, requested)
}

/// The first registered URI that `requested` matches.
pub fn find_match<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    registered
        .iter()
        .map(String::as_str)
        .find(|r| matches(r, requested))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Regression (found by fuzzing, fuzz/fuzz_targets/redirect_uri.rs): a registered loopback
    /// URI with the default port written (`:80`, which the parser drops) is matched exactly, not
    /// as a port-less registration that accepts any port.
    #[test]
    fn a_written_default_port_is_a_port() {
        assert!(!matches("http://127.0.0.1:80/cb", "http://127.0.0.1/cb"));
        assert!(!matches(
            "http://127.0.0.1:80/cb",
            "http://127.0.0.1:8080/cb"
        ));
        assert!(!matches("http://[::1]:80/cb", "http://[::1]:1234/cb"));
        assert!(!matches("http://localhost:80", "http://localhost:5000/"));
        assert!(matches("http://127.0.0.1:80/cb", "http://127.0.0.1:80/cb"));
        // A port-less registration still takes any port, the default one written included.
        assert!(matches("http://127.0.0.1/cb", "http://127.0.0.1:80/cb"));
        assert!(matches("http://[::1]/cb", "http://[::1]:1234/cb"));
    }

    /// Regression (found by fuzzing): the URL parser reads `127.0.01` as `127.0.0.1` and strips
    /// spaces around a URI; the any-port rule compares the text as written, so neither matches.
    #[test]
    fn the_any_port_rule_compares_text() {
        assert!(!matches("http://127.0.0.1/cb", "http://127.0.01:8080/cb"));
        assert!(!matches("http://127.0.0.1/cb", "http://0x7f.0.0.1:8080/cb"));
        assert!(!matches(
            "  http://127.0.0.1/cb",
            "http://127.0.0.1:8080/cb"
        ));
        assert!(!matches("http://127.0.0.1/cb", " http://127.0.0.1:8080/cb"));
        assert!(!matches("http://localhost/cb", "http://LOCALHOST:8080/cb"));
        assert!(matches(
            "http://127.0.0.1/cb?x=1",
            "http://127.0.0.1:8080/cb?x=1"
        ));
        assert!(matches("http://localhost", "http://localhost:5000"));
    }

    #[test]
    fn exact_and_loopback_rules() {
        assert!(matches("https://app.example/cb", "https://app.example/cb"));
        assert!(!matches(
            "https://app.example/cb",
            "https://app.example/cb/"
        ));
        assert!(!matches(
            "https://app.example/cb",
            "https://app.example/cb?x=1"
        ));
        assert!(!matches(
            "https://app.example/cb",
            "https://app.example:8443/cb"
        ));
        assert!(
            !matches("https://app.example/cb", "https://APP.example/cb"),
            "exact string match"
        );
        assert!(matches("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"));
        assert!(matches("http://[::1]/cb", "http://[::1]:8080/cb"));
        assert!(matches("http://localhost/cb", "http://localhost:3000/cb"));
        assert!(!matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:51234/other"
        ));
        assert!(!matches(
            "http://127.0.0.1/cb",
            "https://127.0.0.1:51234/cb"
        ));
        assert!(!matches("http://127.0.0.1/cb", "http://127.0.0.2:51234/cb"));
        assert!(
            !matches("http://127.0.0.1:8000/cb", "http://127.0.0.1:9000/cb"),
            "a registered port is exact"
        );
        assert!(!matches("http://127.0.0.1/cb", "http://u:p@127.0.0.1:5/cb"));
        assert!(!matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5/cb#frag"
        ));
        assert!(!matches("https://app.example/cb", "not a url"));
    }

    proptest! {
        #[test]
        fn identical_strings_always_match(uri in "\\PC{0,60}") {
            prop_assert!(matches(&uri, &uri));
        }

        #[test]
        fn loopback_accepts_any_port(port in 1u16.., path in "/[a-z0-9/]{0,20}") {
            for host in ["127.0.0.1", "[::1]", "localhost"] {
                let registered = format!("http://{host}{path}");
                let requested = format!("http://{host}:{port}{path}");
                prop_assert!(matches(&registered, &requested), "{} vs {}", registered, requested);
            }
        }

        #[test]
        fn other_hosts_never_accept_a_different_port(port in 1u16.., host in "[a-z]{1,10}\\.example") {
            let registered = format!("https://{host}/cb");
            let requested = format!("https://{host}:{port}/cb");
            // 443 is the default https port and vanishes when parsed, but the strings differ.
            prop_assert!(!matches(&registered, &requested));
        }

        #[test]
        fn any_change_to_a_web_redirect_is_refused(suffix in "[a-zA-Z0-9/?=&.-]{1,10}") {
            let requested = format!("https://app.example/cb{}", suffix);
            prop_assert!(!matches("https://app.example/cb", &requested));
        }
    }
}
