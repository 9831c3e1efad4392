//! The `http` section: the issuer, where the provider is reached, the listen address, and the
//! reverse proxies trusted to name the client ([`proxies`]).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use url::Url;

use self::proxies::{IpNet, TrustedProxies};
use super::{check_url, is_loopback, Problem};

pub mod proxies;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpConfig {
    /// The issuer identifier: an https URL (http only on loopback) ending with `/`.
    pub issuer: String,
    /// Where the endpoints and pages are reached from outside; defaults to the issuer.
    #[serde(default)]
    pub public_base: Option<String>,
    /// The socket address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Reverse proxies (addresses or networks like `10.0.0.0/8`) whose `X-Forwarded-For` names
    /// the client for per-IP rate limits; from anyone else the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

pub(super) fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// The `http` section checked: each value, or `None` where a problem was reported.
pub(super) struct HttpSettings {
    pub issuer: Option<Url>,
    pub public_base: Option<Url>,
    pub listen: Option<SocketAddr>,
    pub trusted_proxies: TrustedProxies,
}

impl HttpConfig {
    /// Checks the section, reporting problems at `http.…`.
    pub(super) fn resolve(&self, p: &mut Vec<Problem>) -> HttpSettings {
        // OIDC Discovery §3 / RFC 8414 §2: the issuer is an https URL with no query or
        // fragment, compared exactly by clients; plain http is accepted for loopback only.
        let issuer = check_url(p, "http.issuer", &self.issuer);
        if let Some(url) = &issuer {
            if !self.issuer.ends_with('/') {
                p.push(Problem::new("http.issuer", "must end with `/`"));
            }
            if url.query().is_some() || url.fragment().is_some() {
                p.push(Problem::new(
                    "http.issuer",
                    "must not have a query or fragment",
                ));
            }
            if url.scheme() != "https" && !is_loopback(url) {
                p.push(Problem::new(
                    "http.issuer",
                    "must use https (plain http is only allowed on localhost/loopback)",
                ));
            }
        }
        let public_base = match &self.public_base {
            Some(raw) => {
                let url = check_url(p, "http.public_base", raw);
                if url.is_some() && !raw.ends_with('/') {
                    p.push(Problem::new("http.public_base", "must end with `/`"));
                }
                url
            }
            None => issuer.clone(),
        };
        let listen = self
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                p.push(Problem::new(
                    "http.listen",
                    format!(
                        "`{}` is not a socket address like 127.0.0.1:8080",
                        self.listen
                    ),
                ))
            })
            .ok();
        let trusted_proxies = self.resolve_trusted_proxies(p);
        HttpSettings {
            issuer,
            public_base,
            listen,
            trusted_proxies,
        }
    }

    /// `http.trusted_proxies`, each an address or a network.
    fn resolve_trusted_proxies(&self, p: &mut Vec<Problem>) -> TrustedProxies {
        let mut networks = Vec::new();
        for (i, entry) in self.trusted_proxies.iter().enumerate() {
            match entry.parse::<IpNet>() {
                Ok(net) => networks.push(net),
                Err(why) => p.push(Problem::new(format!("http.trusted_proxies[{i}]"), why)),
            }
        }
        TrustedProxies::new(networks)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{
        parse,
        test_support::{generated, no_env},
    };

    #[test]
    fn http_issuer_only_on_loopback() {
        let text = generated().replace("http://localhost:8080/", "http://auth.example.com/");
        let p = parse(&text, no_env(), Path::new(".")).unwrap_err();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "http.issuer");
    }
}
