//! Where a Matrix client looks for the homeserver's authentication metadata (MSC2965, Matrix
//! spec v1.15), in the order it tries them.

use url::Url;

/// One place to read authentication metadata from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataSource {
    /// `GET /_matrix/client/v1/auth_metadata`: the provider's RFC 8414 metadata, verbatim.
    Stable(Url),
    /// `GET /_matrix/client/unstable/org.matrix.msc2965/auth_metadata`.
    Unstable(Url),
    /// `GET /.well-known/matrix/client`, whose `org.matrix.msc2965.authentication.issuer`
    /// names the issuer whose OIDC discovery document is then read.
    WellKnown(Url),
}

/// The sources to try for a homeserver, most preferred first.
pub fn metadata_sources(homeserver: &Url) -> Vec<MetadataSource> {
    let join = |path: &str| {
        let mut url = homeserver.clone();
        url.set_path(path);
        url.set_query(None);
        url
    };
    vec![
        MetadataSource::Stable(join("/_matrix/client/v1/auth_metadata")),
        MetadataSource::Unstable(join(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
        )),
        MetadataSource::WellKnown(join("/.well-known/matrix/client")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_first_then_unstable_then_well_known() {
        let hs = Url::parse("https://matrix.example.org/some/path?x=1").unwrap();
        let urls: Vec<String> = metadata_sources(&hs)
            .into_iter()
            .map(|s| match s {
                MetadataSource::Stable(u)
                | MetadataSource::Unstable(u)
                | MetadataSource::WellKnown(u) => u.to_string(),
            })
            .collect();
        assert_eq!(
            urls,
            [
                "https://matrix.example.org/_matrix/client/v1/auth_metadata",
                "https://matrix.example.org/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
                "https://matrix.example.org/.well-known/matrix/client",
            ]
        );
    }
}
