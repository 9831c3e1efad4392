//! The client's IP address, for per-IP limits: the peer of the connection, or, when the peer is a
//! reverse proxy the configuration trusts (`http.trusted_proxies`), the right-most
//! `X-Forwarded-For` address that is not a trusted proxy.
//!
//! Only the right end of `X-Forwarded-For` can be believed: each trusted proxy appends the
//! address it received the request from, and everything left of the first address a trusted
//! proxy did not write is whatever the client chose to send. Walking from the right and stopping
//! at the first untrusted address gives the client, however many proxies are chained.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use axum::http::HeaderMap;

/// `X-Forwarded-For` (de facto standard; RFC 7239 `Forwarded` is not read: proxies in front of
/// this provider set this one).
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// A network: an address and a prefix length (`10.0.0.0/8`, `fd00::/8`; a bare address is a
/// single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr = IpAddr::from_str(addr)
            .map_err(|_| format!("`{s}` is not an IP address or a network like 10.0.0.0/8"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed (`http.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client of a request that came from `peer`: `peer` itself unless it is a trusted
    /// proxy; else the right-most `X-Forwarded-For` address that is not a trusted proxy (all of
    /// them trusted: the left-most). An entry that is not an address ends the walk at the last
    /// hop known (a trusted proxy wrote garbage or nothing: it is the best we know, and it can't
    /// be spoofed).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        // Several headers are one list, in order (RFC 9110 §5.3).
        let entries: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`, as some proxies write it).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    IpAddr::from_str(entry)
        .ok()
        .or_else(|| SocketAddr::from_str(entry).ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        let host: IpNet = "192.0.2.1".parse().unwrap();
        assert!(host.contains(ip("192.0.2.1")) && !host.contains(ip("192.0.2.2")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "::/129", "example.org", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_peer_unless_it_is_a_trusted_proxy() {
        let none = TrustedProxies::default();
        let spoofed = forwarded(&["198.51.100.1"]);
        assert_eq!(
            none.client_ip(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
        let trusted = proxies(&["10.0.0.0/8"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            trusted.client_ip(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
        // Through a trusted proxy: the address it saw.
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), &spoofed),
            ip("198.51.100.1")
        );
        // No header: the proxy itself.
        assert_eq!(
            trusted.client_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_right_most_untrusted_forwarded_address() {
        let trusted = proxies(&["10.0.0.0/8", "2001:db8:ff::/48"]);
        let peer = ip("10.0.0.2");
        // The client's own claims (left) are not believed past the first untrusted address.
        let chain = forwarded(&["1.1.1.1, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(trusted.client_ip(peer, &chain), ip("198.51.100.7"));
        // Every hop trusted: the left-most.
        let chain = forwarded(&["10.9.9.9, 10.1.1.1"]);
        assert_eq!(trusted.client_ip(peer, &chain), ip("10.9.9.9"));
        // Ports and IPv6, mapped addresses.
        let chain = forwarded(&["[2001:db8::5]:4711, 2001:db8:ff::1"]);
        assert_eq!(trusted.client_ip(peer, &chain), ip("2001:db8::5"));
        let chain = forwarded(&["198.51.100.8:80"]);
        assert_eq!(trusted.client_ip(peer, &chain), ip("198.51.100.8"));
        assert_eq!(
            trusted.client_ip(ip("::ffff:10.0.0.2"), &forwarded(&["::ffff:198.51.100.9"])),
            ip("198.51.100.9")
        );
        // Garbage ends the walk at the last hop known.
        let chain = forwarded(&["198.51.100.1, unknown, 10.1.1.1"]);
        assert_eq!(trusted.client_ip(peer, &chain), ip("10.1.1.1"));
    }
}
