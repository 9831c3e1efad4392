//! The `admin` section: who may use the admin API without a user.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Problem, StaticClientConfig};
use crate::domain::protocol::{ClientAuthMethod, GrantType};

/// The admin API (`/api/admin/v1`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdminConfig {
    /// The `client_id`s of confidential clients that may obtain the `urn:mas:admin` scope with
    /// the client credentials grant (RFC 6749 §4.4): automation acting on the admin API without
    /// a user. Users get the scope through the authorization code flow when they may administer
    /// (`can_request_admin`). Empty by default: no client may.
    #[serde(default)]
    pub clients: Vec<String>,
}

impl AdminConfig {
    /// The `admin` section: the admin clients, each named once; a static client named there
    /// must be able to use the client credentials grant (confidential, with the grant).
    pub(super) fn resolve(
        &self,
        clients: &[StaticClientConfig],
        p: &mut Vec<Problem>,
    ) -> Vec<String> {
        let mut seen = BTreeSet::new();
        for (i, id) in self.clients.iter().enumerate() {
            let path = format!("admin.clients[{i}]");
            if id.trim().is_empty() {
                p.push(Problem::new(path, "must be a client_id, not empty"));
                continue;
            }
            if !seen.insert(id.as_str()) {
                p.push(Problem::new(path, format!("`{id}` is listed twice")));
                continue;
            }
            if let Some(c) = clients.iter().find(|c| c.client_id == *id) {
                // RFC 6749 §4.4: the client credentials grant is for confidential clients only.
                let public = c
                    .client_auth_method
                    .parse()
                    .is_ok_and(ClientAuthMethod::is_public);
                if public {
                    p.push(Problem::new(
                        path,
                        format!(
                            "`{id}` is a public client (`none`): it can't use client credentials"
                        ),
                    ));
                } else if !c.has_grant(GrantType::ClientCredentials) {
                    p.push(Problem::new(
                        path,
                        format!(
                            "`{id}` doesn't have the client_credentials grant in its grant_types"
                        ),
                    ));
                }
            }
        }
        self.clients.clone()
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
    fn admin_clients_must_be_able_to_use_client_credentials() {
        let text = generated()
            .replace(
                "  clients: []",
                "  clients: [\"\", pub, plain, pub, elsewhere]",
            )
            .replace(
                "grant_types: [authorization_code, refresh_token]\n",
                "grant_types: [authorization_code, refresh_token]\n  \
                 - client_id: pub\n    client_auth_method: none\n    \
                 grant_types: [client_credentials]\n  \
                 - client_id: plain\n    client_auth_method: client_secret_post\n    \
                 client_secret: \"0123456789abcdefgh\"\n    grant_types: [refresh_token]\n",
            );
        let p = parse(&text, no_env(), Path::new(".")).unwrap_err();
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "admin.clients[0]: must be a client_id, not empty",
                "admin.clients[1]: `pub` is a public client (`none`): it can't use client credentials",
                "admin.clients[2]: `plain` doesn't have the client_credentials grant in its grant_types",
                "admin.clients[3]: `pub` is listed twice",
            ]
        );
    }
}
