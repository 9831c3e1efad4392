//! A real SMTP server for the mail tests, in-process on a loopback port: the protocol is the
//! `mailin` crate's server state machine (RFC 5321 commands, `DATA` with dot-stuffing,
//! `STARTTLS`, `AUTH PLAIN`/`LOGIN`), the I/O is tokio, TLS is rustls with a self-signed
//! certificate for `localhost` (STARTTLS, RFC 3207, or implicit TLS, RFC 8314 §3.3). Every
//! message it accepts is kept: envelope, data, whether it came over TLS and who authenticated.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader},
    net::TcpListener,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    },
    TlsAcceptor,
};

/// How the server secures connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain SMTP, no STARTTLS offered.
    Plain,
    /// STARTTLS offered (and AUTH only after it).
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent after `DATA` (headers and body, CRLF line ends).
    pub data: String,
    /// Did it come over TLS?
    pub tls: bool,
    /// `(username, password)` of an `AUTH` in the session.
    pub auth: Option<(String, String)>,
}

impl Received {
    /// A header's value (unfolded, RFC 5322 §2.2.3), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.split("\r\n").find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// A running server.
pub struct SmtpSink {
    pub addr: SocketAddr,
    /// The PEM certificate clients must trust (with TLS).
    pub cert_pem: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Starts a server on a loopback port; `credentials` makes it offer `AUTH` and accept only
    /// these.
    pub async fn start(security: Security, credentials: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_pem = cert.pem();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let mut builder = SessionBuilder::new("sink.localhost");
        if security == Security::StartTls {
            builder.enable_start_tls();
        }
        if credentials.is_some() {
            builder
                .enable_auth(AuthMechanism::Plain)
                .enable_auth(AuthMechanism::Login);
            if security == Security::Plain {
                builder.insecure_enable_plaintext_auth();
            }
        }
        let credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                let builder = builder.clone();
                let acceptor = acceptor.clone();
                let kept = kept.clone();
                let credentials = credentials.clone();
                tokio::spawn(async move {
                    let stream: Box<dyn Stream> = if security == Security::Implicit {
                        match acceptor.accept(tcp).await {
                            Ok(tls) => Box::new(tls),
                            Err(_) => return,
                        }
                    } else {
                        Box::new(tcp)
                    };
                    let tls = Arc::new(AtomicBool::new(security == Security::Implicit));
                    let handler = Collect {
                        kept,
                        tls: tls.clone(),
                        credentials,
                        auth: None,
                        from: String::new(),
                        to: Vec::new(),
                        data: Vec::new(),
                    };
                    let _ = serve(stream, builder, handler, peer.ip(), acceptor, tls).await;
                });
            }
        });
        Self {
            addr,
            cert_pem,
            received,
            task,
        }
    }

    /// Every message accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One SMTP session: the greeting, then a response per line, TLS when STARTTLS asks for it.
async fn serve(
    stream: Box<dyn Stream>,
    builder: SessionBuilder,
    handler: Collect,
    peer: IpAddr,
    acceptor: TlsAcceptor,
    tls: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let mut session = builder.build(peer, handler);
    if tls.load(Ordering::SeqCst) {
        // Implicit TLS: the session is secure from the start (AUTH may be offered).
        session.tls_active();
    }
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(&session.greeting().buffer()?)
        .await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let response: Response = session.process(&line);
        match response.action {
            Action::NoReply => {}
            Action::Reply => reader.get_mut().write_all(&response.buffer()?).await?,
            Action::Close => {
                reader.get_mut().write_all(&response.buffer()?).await?;
                return Ok(());
            }
            Action::UpgradeTls => {
                reader.get_mut().write_all(&response.buffer()?).await?;
                let plain = reader.into_inner();
                let upgraded = acceptor.accept(plain).await?;
                tls.store(true, Ordering::SeqCst);
                session.tls_active();
                reader = BufReader::new(Box::new(upgraded));
            }
        }
    }
}

/// Keeps each message at the end of its `DATA`.
struct Collect {
    kept: Arc<Mutex<Vec<Received>>>,
    tls: Arc<AtomicBool>,
    credentials: Option<(String, String)>,
    auth: Option<(String, String)>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Collect {
    fn login(&mut self, username: &str, password: &str) -> Response {
        match &self.credentials {
            Some((u, p)) if u == username && p == password => {
                self.auth = Some((username.to_owned(), password.to_owned()));
                mailin::response::AUTH_OK
            }
            _ => mailin::response::INVALID_CREDENTIALS,
        }
    }
}

impl Handler for Collect {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        if self.credentials.is_some() && self.auth.is_none() {
            return mailin::response::AUTHENTICATION_REQUIRED;
        }
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        self.kept.lock().unwrap().push(Received {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned(),
            tls: self.tls.load(Ordering::SeqCst),
            auth: self.auth.clone(),
        });
        mailin::response::OK
    }

    fn auth_plain(&mut self, _authz: &str, username: &str, password: &str) -> Response {
        self.login(username, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.login(username, password)
    }
}
