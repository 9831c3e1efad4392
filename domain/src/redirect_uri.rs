//! Redirect URI matching.
//!
//! RFC 9700 §4.1.3 / RFC 6749 §3.1.2.3: the redirect URI of a request must equal a registered one
//! by exact string comparison. The one exception is RFC 8252 §7.3 (native apps): for a registered
//! loopback redirect (`http://127.0.0.1`, `http://[::1]`, and `http://localhost`, which Matrix
//! clients use) without a port, any port is accepted at request time, since the app picks a free
//! port when it starts.

/// The loopback hosts of RFC 8252 §7.3 (and `localhost`, §8.3, which Matrix clients use), as
/// they must be written: lower case, the IPv6 literal in its shortest form.
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "[::1]", "localhost"];

/// Splits a registered loopback redirect URI written without a port into the text up to and
/// including its host (`http://127.0.0.1`) and the rest (`/callback?x=1`, possibly empty);
/// `None` for any other URI. Compared as written, never parsed: the parser would lower-case
/// `HTTP://LOCALHOST`, resolve `/a/../a`, read `127.0.01` as `127.0.0.1` and drop a written
/// default port (`:80`), but RFC 9700 §4.1.3 compares strings.
fn portless_loopback(registered: &str) -> Option<(&str, &str)> {
    let rest = registered.strip_prefix("http://")?;
    let host = LOOPBACK_HOSTS.iter().find(|h| rest.starts_with(**h))?;
    let head_len = "http://".len() + host.len();
    let tail = &registered[head_len..];
    // Right after the host: the path, the query, or the end (no port, no userinfo, no
    // fragment, no longer host name such as `localhost.example`).
    (tail.is_empty() || tail.starts_with(['/', '?'])).then(|| registered.split_at(head_len))
}

/// A port as RFC 3986 §3.2.3 writes it, within `u16`: 1 to 5 digits.
fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok()
}

/// Does the `requested` redirect URI match the `registered` one? RFC 9700 §4.1.3 / RFC 6749
/// §3.1.2.3: the same string. RFC 8252 §7.3: for a registered loopback `http` URI without a
/// port, the same string with any port written after the host; nothing else may differ (not
/// the case of the scheme or host, not a dot segment, not an encoding).
pub fn matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let Some((head, tail)) = portless_loopback(registered) else {
        return false;
    };
    requested
        .strip_prefix(head)
        .and_then(|r| r.strip_suffix(tail))
        .and_then(|r| r.strip_prefix(':'))
        .is_some_and(is_port)
        && !tail.contains('#')
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

    /// Issue 14, finding 11: only the port may differ; what URL normalisation would equate
    /// does not match.
    #[test]
    fn normalised_forms_do_not_match() {
        let registered = "http://localhost/callback";
        for requested in [
            "HTTP://localhost:8080/callback",
            "http://LOCALHOST:8080/callback",
            "http://localhost:8080/callback/../callback",
            "http://localhost:8080/./callback",
            "http://localhost:8080/%63allback",
            "http://localhost:8080//callback",
            "http://localhost.:8080/callback",
            "http://localhost:08080x/callback",
            "http://localhost:99999/callback",
            "http://localhost:/callback",
        ] {
            assert!(!matches(registered, requested), "{requested}");
        }
        // A registration in another case or with dot segments is not a loopback
        // registration either: it is matched exactly.
        assert!(!matches("HTTP://localhost/cb", "HTTP://localhost:1/cb"));
        assert!(!matches("http://LOCALHOST/cb", "http://LOCALHOST:1/cb"));
        assert!(!matches(
            "http://localhost.example/cb",
            "http://localhost.example:1/cb"
        ));
        assert!(!matches("http://[::1]/cb", "http://[0:0:0:0:0:0:0:1]:1/cb"));
        assert!(matches(
            "http://localhost/a/../b",
            "http://localhost:9/a/../b"
        ));
    }

    proptest! {
        /// RFC 9700 §4.1.3 / RFC 8252 §7.3 as one property: a request matches a port-less
        /// loopback registration exactly when it is that string with `:port` after the host.
        #[test]
        fn only_the_port_may_differ(
            host in prop::sample::select(LOOPBACK_HOSTS.to_vec()),
            tail in "(/[a-zA-Z0-9._%~-]{0,8}){0,3}(\\?[a-z=&]{0,8})?",
            port in 0u32..100_000,
            mutation in 0usize..6,
        ) {
            let registered = format!("http://{host}{tail}");
            let with_port = format!("http://{host}:{port}{tail}");
            prop_assert_eq!(matches(&registered, &with_port), port <= 65535);
            let mutated = match mutation {
                0 => with_port.to_uppercase(),
                1 => with_port.replacen("http", "HTTP", 1),
                2 => format!("{with_port}/"),
                3 => format!("{with_port}#f"),
                4 => with_port.replacen(host, &host.to_uppercase(), 1),
                _ => format!("http://{host}:{port}/.{tail}"),
            };
            if mutated != with_port && mutated != registered {
                prop_assert!(!matches(&registered, &mutated), "{} vs {}", registered, mutated);
            }
        }

        /// Any text besides a port, between the registered host and the rest, is refused.
        #[test]
        fn nothing_but_a_port_may_be_inserted(inserted in "\\PC{1,8}", tail in "/[a-z]{0,8}") {
            let registered = format!("http://127.0.0.1{tail}");
            let requested = format!("http://127.0.0.1{inserted}{tail}");
            let is_port_text = inserted.strip_prefix(':').is_some_and(is_port);
            prop_assert_eq!(matches(&registered, &requested), is_port_text);
        }

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
