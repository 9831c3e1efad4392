//! The data directory: the provider's configuration (generated once, with the demo client), the
//! SQLite database, the seeded accounts and the TLS certificate, all kept between runs.

use std::path::{Path, PathBuf};

use provider::{
    clock::Entropy,
    config::{self, GenerateOptions},
};

use crate::Error;

/// The provider's configuration file.
pub const CONFIG_FILE: &str = "provider.yaml";
/// The SQLite database (when no `--database-url` is given).
pub const DATABASE_FILE: &str = "provider.db";
/// The seeded accounts and their passwords.
pub const ACCOUNTS_FILE: &str = "accounts.json";

/// What `--fresh` removes. The TLS certificate stays, so clients and browsers that were told to
/// trust it keep trusting the playground.
const FRESH_FILES: &[&str] = &[
    CONFIG_FILE,
    DATABASE_FILE,
    "provider.db-wal",
    "provider.db-shm",
    ACCOUNTS_FILE,
];

/// The client ID of the demo client written into the configuration.
pub const DEMO_CLIENT_ID: &str = "playground-demo";

/// Where the generated configuration's clients section starts (`provider config generate`).
const GENERATED_CLIENTS_MARKER: &str = "\n# Clients known in advance";

/// The configuration file in a data directory.
pub fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONFIG_FILE)
}

/// Removes what `--fresh` starts over from.
pub fn wipe(data_dir: &Path) -> Result<(), Error> {
    for name in FRESH_FILES {
        let path = data_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::file("remove", path, e)),
        }
    }
    Ok(())
}

/// Makes sure the data directory holds a configuration with the demo client, generating it on
/// first start, and returns its text.
pub fn prepare_config(data_dir: &Path, entropy: &Entropy) -> Result<String, Error> {
    std::fs::create_dir_all(data_dir).map_err(|e| Error::file("create", data_dir, e))?;
    let path = config_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if text.contains(&demo_client_id_line()) {
                return Ok(text);
            }
            // Written by an older playground, which kept `provider config generate`'s example
            // client: put the demo client in its place.
            let Some(at) = text.find(GENERATED_CLIENTS_MARKER) else {
                return Err(Error::Corrupt {
                    path,
                    reason: format!("it has no `{DEMO_CLIENT_ID}` client"),
                });
            };
            let text = format!("{}\n{}", &text[..at], demo_client_section());
            write(&path, &text)?;
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let generated = config::generate(
                &mut entropy.rng.rng(),
                entropy.clock.as_ref(),
                &GenerateOptions::default(),
            )?;
            let text = match generated.find(GENERATED_CLIENTS_MARKER) {
                Some(at) => format!("{}\n{}", &generated[..at], demo_client_section()),
                None => format!("{generated}\n{}", demo_client_section()),
            };
            write(&path, &text)?;
            Ok(text)
        }
        Err(e) => Err(Error::file("read", path, e)),
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::file("write", path, e))
}

fn demo_client_id_line() -> String {
    format!("client_id: \"{DEMO_CLIENT_ID}\"")
}

/// The demo client: public, every grant a Matrix client uses. Its first redirect URI and first
/// post-logout redirect URI are the dashboard's pages, set by the playground on every start
/// (the dashboard's address may change); the loopback ones accept any port (RFC 8252 §7.3), for
/// command-line tools.
fn demo_client_section() -> String {
    format!(
        r#"# The playground's demo client: public (no secret), with every grant a Matrix client uses.
# The playground sets the first redirect URI and the first post-logout redirect URI to the
# dashboard's pages on every start; the loopback ones accept any port (RFC 8252 §7.3).
clients:
  - {}
    client_name: "Playground demo client"
    client_auth_method: none
    redirect_uris:
      - "http://127.0.0.1:8090/callback"
      - "http://127.0.0.1/callback"
      - "http://localhost/callback"
    post_logout_redirect_uris:
      - "http://127.0.0.1:8090/client"
    grant_types:
      - authorization_code
      - refresh_token
      - "urn:ietf:params:oauth:grant-type:device_code"
"#,
        demo_client_id_line()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_the_demo_client_and_replaces_the_example_client() {
        let dir = tempfile::tempdir().unwrap();
        let entropy = Entropy::test(1).0;
        let text = prepare_config(dir.path(), &entropy).unwrap();
        assert!(text.contains("client_id: \"playground-demo\""));
        assert!(!text.contains("Example confidential client"));
        let (_, settings) = config::parse(&text, Vec::new(), dir.path()).unwrap();
        assert_eq!(settings.clients.len(), 1);
        assert_eq!(settings.clients[0].client_id, DEMO_CLIENT_ID);
        assert_eq!(settings.clients[0].auth_method.as_str(), "none");
        assert_eq!(prepare_config(dir.path(), &entropy).unwrap(), text);

        // An older playground's file: the example client gives way to the demo client.
        let old = config::generate(
            &mut entropy.rng.rng(),
            entropy.clock.as_ref(),
            &GenerateOptions::default(),
        )
        .unwrap();
        std::fs::write(config_path(dir.path()), &old).unwrap();
        let migrated = prepare_config(dir.path(), &entropy).unwrap();
        assert!(migrated.contains("client_id: \"playground-demo\""));
        assert!(!migrated.contains("Example confidential client"));
        assert!(migrated.starts_with(&old[..old.find(GENERATED_CLIENTS_MARKER).unwrap()]));
    }
}
