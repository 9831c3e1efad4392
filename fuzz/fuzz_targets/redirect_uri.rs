//! Redirect URI matching (RFC 9700 §4.1.3, RFC 8252 §7.3): `domain::redirect_uri`.
//! Input: the registered URI, a newline, the requested one.
#![no_main]

use domain::redirect_uri::{find_match, matches};
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (registered, requested) = text.split_once('\n').unwrap_or((text, text));
    // Exact comparison always matches.
    assert!(matches(registered, registered));
    assert!(matches(requested, requested));
    let matched = matches(registered, requested);
    let list = [
        String::from("https://other.example/cb"),
        registered.to_owned(),
    ];
    assert_eq!(
        find_match(&list, requested).is_some(),
        matched || requested == list[0]
    );
    if !matched || registered == requested {
        return;
    }
    // RFC 8252 §7.3: the only inexact match is a port added to a registered portless loopback
    // http URI; nothing else (userinfo, fragment, another host or path) gets through.
    let reg = Url::parse(registered).expect("an inexact match parses");
    let req = Url::parse(requested).expect("an inexact match parses");
    assert_eq!(reg.scheme(), "http");
    assert_eq!(req.scheme(), "http");
    assert!(reg.port().is_none(), "{registered:?}");
    // A port was written (it may be the scheme's default, `:80`, which the parser drops).
    assert!(requested.len() > registered.len(), "{requested:?}");
    assert!(match reg.host() {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    });
    assert_eq!(req.host(), reg.host());
    assert!(req.fragment().is_none() && req.username().is_empty() && req.password().is_none());
    let mut without_port = req.clone();
    without_port.set_port(None).expect("http URLs have ports");
    assert_eq!(without_port.as_str(), reg.as_str());
    // Not symmetric: the registered URI (without a port) is never taken for the request.
    assert!(!matches(requested, registered));
});
