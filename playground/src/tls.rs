//! `--tls`: a self-signed certificate made at first start and kept in the data directory, and
//! a listener that serves HTTPS with it.
//!
//! The certificate names `localhost`, `127.0.0.1` and `::1` (and the `--host` address when it is
//! another one), has the `serverAuth` extended key usage and is not a CA (rustls-based clients
//! refuse a CA certificate used as a server certificate). It is valid for 800 days (Apple
//! platforms refuse server certificates valid longer than 825), and replaced when that is
//! nearly over.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Datelike as _, Utc};
use provider::clock::Entropy;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
        ServerConfig,
    },
    server::TlsStream,
    TlsAcceptor,
};

use crate::Error;

/// The certificate (PEM) in the data directory.
pub const CERT_FILE: &str = "tls-cert.pem";
/// Its private key (PEM, PKCS#8).
pub const KEY_FILE: &str = "tls-key.pem";

/// How long a new certificate is valid.
const VALID_DAYS: i64 = 800;
/// A certificate this old is replaced at start.
const RENEW_AFTER_DAYS: i64 = 780;
/// A client that hasn't finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate the playground serves with.
#[derive(Clone)]
pub struct Tls {
    /// Where the certificate is (absolute when it could be resolved).
    pub cert_path: PathBuf,
    /// The certificate, PEM: what clients are told to trust.
    pub cert_pem: String,
    /// SHA-256 of the certificate (DER), as colon-separated upper-case hex pairs.
    pub fingerprint: String,
    /// Made at this start (rather than read from the data directory).
    pub created: bool,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_path", &self.cert_path)
            .field("fingerprint", &self.fingerprint)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate from the data directory, or makes one (also when the one there is
    /// nearly expired).
    pub fn load_or_create(data_dir: &Path, host: IpAddr, entropy: &Entropy) -> Result<Self, Error> {
        let cert_path = data_dir.join(CERT_FILE);
        let key_path = data_dir.join(KEY_FILE);
        let now = entropy.clock.now();
        let existing = match (
            std::fs::read_to_string(&cert_path),
            std::fs::read_to_string(&key_path),
        ) {
            (Ok(cert), Ok(key)) if !is_old(&cert_path, now) => Some((cert, key)),
            (Ok(_), Ok(_)) => {
                tracing::warn!(path = %cert_path.display(), "the TLS certificate is nearly expired: making a new one (clients must trust it again)");
                None
            }
            (Err(e), _) | (_, Err(e)) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::file("read", &cert_path, e))
            }
            _ => None,
        };
        let created = existing.is_none();
        let (cert_pem, key_pem) = match existing {
            Some(pair) => pair,
            None => {
                let (cert, key) = generate(host, now, entropy)?;
                std::fs::write(&cert_path, &cert)
                    .map_err(|e| Error::file("write", &cert_path, e))?;
                write_private(&key_path, &key)?;
                (cert, key)
            }
        };
        let bad = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt {
            path: cert_path.clone(),
            reason: format!("{what}: {e}"),
        };
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad("no PEM certificate", &e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad("no PEM private key beside it", &e))?;
        let fingerprint = fingerprint(&cert);
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Tls(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .map_err(|e| bad("unusable certificate or key", &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert_path: std::fs::canonicalize(&cert_path).unwrap_or(cert_path),
            cert_pem,
            fingerprint,
            created,
            config: Arc::new(config),
        })
    }

    /// Serves TLS on an already bound listener.
    pub fn listener(&self, listener: TcpListener) -> io::Result<TlsListener> {
        TlsListener::new(listener, TlsAcceptor::from(self.config.clone()))
    }
}

/// Is the certificate file old enough to be replaced? (Its age is its file's age: the
/// playground writes it once.)
fn is_old(path: &Path, now: DateTime<Utc>) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|modified| {
            now - DateTime::<Utc>::from(modified) > chrono::Duration::days(RENEW_AFTER_DAYS)
        })
        .unwrap_or(false)
}

/// A new self-signed certificate and key, PEM.
fn generate(
    host: IpAddr,
    now: DateTime<Utc>,
    entropy: &Entropy,
) -> Result<(String, String), Error> {
    let tls = |e: rcgen::Error| Error::Tls(format!("can't make a certificate: {e}"));
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !host.is_loopback() && !host.is_unspecified() {
        names.push(host.to_string());
    }
    let mut params = rcgen::CertificateParams::new(names).map_err(tls)?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        rcgen::DnType::CommonName,
        "Matrix OAuth playground (localhost)",
    );
    params.distinguished_name = name;
    let day = |t: DateTime<Utc>| {
        rcgen::date_time_ymd(
            t.year(),
            u8::try_from(t.month()).unwrap_or(1),
            u8::try_from(t.day()).unwrap_or(1),
        )
    };
    params.not_before = day(now - chrono::Duration::days(1));
    params.not_after = day(now + chrono::Duration::days(VALID_DAYS));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let mut serial = [0u8; 16];
    entropy.rng.rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from(serial.to_vec()));
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let cert = params.self_signed(&key).map_err(tls)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes the private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::file("write", path, e))
}

/// `AB:CD:…`: how browsers and `openssl x509 -fingerprint -sha256` show it.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts TCP connections and hands over those that completed a TLS handshake. Handshakes run
/// in their own tasks, so a slow or silent client holds up nobody.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, incoming) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = tokio::select! {
                    // The server stopped: stop accepting, and free the port.
                    () = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            tracing::warn!(%error, "can't accept a connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, addr)).await;
                        }
                        Ok(Err(error)) => tracing::info!(
                            %addr, %error,
                            "TLS handshake failed (does the client trust the playground's certificate?)"
                        ),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            incoming,
            local_addr,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accepting task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_certificate_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let entropy = Entropy::test(9).0;
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let first = Tls::load_or_create(dir.path(), host, &entropy).unwrap();
        assert!(first.created);
        assert!(first.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let second = Tls::load_or_create(dir.path(), host, &entropy).unwrap();
        assert!(!second.created);
        assert_eq!(first.fingerprint, second.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
    }
}
