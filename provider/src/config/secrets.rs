//! The `secrets` section: the key that encrypts secrets at rest, and the ID token signing keys.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::keys::{Keystore, PrivateKey, SigningKey};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretsConfig {
    /// 32 bytes as 64 hex characters: encrypts client and upstream secrets at rest.
    pub encryption: String,
    pub keys: Vec<KeyConfig>,
    /// The pepper of imported bcrypt password hashes: Synapse's `password_config.pepper`,
    /// appended to the password before bcrypt (`provider syn2mas` imports them as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_pepper: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyConfig {
    /// Key ID; defaults to the RFC 7638 thumbprint.
    #[serde(default)]
    pub kid: Option<String>,
    /// The PEM key inline...
    #[serde(default)]
    pub key: Option<String>,
    /// ...or a path to it (relative to the config file).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl SecretsConfig {
    /// `secrets.encryption`: 32 bytes in hex.
    pub(super) fn resolve_encryption(&self, p: &mut Vec<Problem>) -> Option<[u8; 32]> {
        match hex::decode(&self.encryption) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                Some(key)
            }
            _ => {
                p.push(Problem::new(
                    "secrets.encryption",
                    "must be 32 bytes written as 64 hex characters",
                ));
                None
            }
        }
    }

    /// `secrets.keys`: every key read (inline or from `key_file`, relative to `base_dir`) and
    /// parsed, then the keystore they make.
    pub(super) fn resolve_keys(&self, p: &mut Vec<Problem>, base_dir: &Path) -> Option<Keystore> {
        if self.keys.is_empty() {
            p.push(Problem::new(
                "secrets.keys",
                "at least one RSA signing key is required",
            ));
            return None;
        }
        let mut keys = Vec::new();
        for (i, entry) in self.keys.iter().enumerate() {
            let path = format!("secrets.keys[{i}]");
            let pem = match (&entry.key, &entry.key_file) {
                (Some(pem), None) => pem.clone(),
                (None, Some(file)) => {
                    let file = base_dir.join(file);
                    match std::fs::read_to_string(&file) {
                        Ok(pem) => pem,
                        Err(e) => {
                            p.push(Problem::new(
                                format!("{path}.key_file"),
                                format!("can't read {}: {e}", file.display()),
                            ));
                            continue;
                        }
                    }
                }
                _ => {
                    p.push(Problem::new(
                        path,
                        "needs exactly one of `key` or `key_file`",
                    ));
                    continue;
                }
            };
            match PrivateKey::from_pem(&pem) {
                Ok(key) => keys.push(SigningKey::new(key, entry.kid.clone())),
                Err(e) => p.push(Problem::new(path, e.to_string())),
            }
        }
        if keys.len() != self.keys.len() {
            return None;
        }
        Keystore::new(keys)
            .map_err(|e| p.push(Problem::new("secrets.keys", e.to_string())))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse, test_support::generated};

    fn problems(env: &[(&str, &str)]) -> Vec<String> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        parse(&generated(), env, Path::new("."))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_encryption_key_is_32_bytes_of_hex() {
        assert_eq!(
            problems(&[("PROVIDER__SECRETS__ENCRYPTION", "abcd")]),
            ["secrets.encryption: must be 32 bytes written as 64 hex characters"]
        );
    }

    #[test]
    fn signing_keys_are_required_and_read() {
        assert_eq!(
            problems(&[("PROVIDER__SECRETS__KEYS", "[]")]),
            ["secrets.keys: at least one RSA signing key is required"]
        );
        let p = problems(&[
            ("PROVIDER__SECRETS__KEYS__0__KEY", "garbage"),
            (
                "PROVIDER__SECRETS__KEYS__1__KEY_FILE",
                "/nonexistent/key.pem",
            ),
        ]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("secrets.keys[0]: "), "{p:?}");
        assert_eq!(
            p[1],
            "secrets.keys[1]: needs exactly one of `key` or `key_file`"
        );
    }
}
