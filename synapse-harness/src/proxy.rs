//! Debian's nginx as the reverse proxy in front of the homeserver, run as a local instance
//! (everything in a temporary directory, no system service), with the operators' example
//! configuration `deploy/nginx/matrix.conf` rendered as is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};
use url::Url;

use crate::process::{
    free_port, kill, log_tails, on_a_free_port, wait_until_answering, wait_until_exists,
};
use crate::{Error, Tools};

/// The operators' example site (`deploy/nginx/matrix.conf`), with `{{…}}` placeholders.
pub const NGINX_SITE_TEMPLATE: &str = include_str!("../../deploy/nginx/matrix.conf");

/// How long nginx may take to answer.
const START_LIMIT: Duration = Duration::from_secs(10);

/// The values for the template's placeholders.
#[derive(Debug, Clone)]
pub struct SiteVars {
    /// What follows `listen`, e.g. `127.0.0.1:8448`.
    pub listen: String,
    pub server_name: String,
    /// Synapse's base URL; it must have no path beyond `/`.
    pub synapse: Url,
    /// The provider's base URL; it must have no path beyond `/`.
    pub provider: Url,
}

/// An upstream for `proxy_pass`: `scheme://host:port`, no path, so nginx passes the request
/// URI unchanged (a regex `location` forbids a URI part anyway).
fn upstream(url: &Url, what: &str) -> Result<String, Error> {
    if !matches!(url.scheme(), "http" | "https")
        || url.path() != "/"
        || url.query().is_some()
        || url.host_str().is_none()
    {
        return Err(Error::Options(format!(
            "the {what} URL must be http(s)://host[:port]/ without a path: {url}"
        )));
    }
    let mut origin = url.origin().ascii_serialization();
    if origin == "null" {
        origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    }
    Ok(origin)
}

/// Fills the template's placeholders; a value with characters that would break out of the
/// nginx directive (`;`, `{`, `}`, quotes, whitespace in names) is refused.
pub fn render_site(template: &str, vars: &SiteVars) -> Result<String, Error> {
    let synapse = upstream(&vars.synapse, "Synapse")?;
    let provider = upstream(&vars.provider, "provider")?;
    for (name, value) in [("listen", &vars.listen), ("server_name", &vars.server_name)] {
        if value.is_empty() || value.contains([';', '{', '}', '"', '\'', '\n', '$']) {
            return Err(Error::Options(format!("invalid {name}: {value:?}")));
        }
    }
    let rendered = template
        .replace("{{listen}}", &vars.listen)
        .replace("{{server_name}}", &vars.server_name)
        .replace("{{synapse}}", &synapse)
        .replace("{{provider}}", &provider);
    if let Some(at) = rendered.find("{{") {
        let rest: String = rendered[at..].chars().take(30).collect();
        return Err(Error::Options(format!("unknown placeholder: {rest}")));
    }
    Ok(rendered)
}

/// A running nginx. Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct ReverseProxy {
    child: Option<Child>,
    url: Url,
    dir: TempDir,
}

impl ReverseProxy {
    /// Starts nginx on a free 127.0.0.1 port: `nginx -p <dir> -e <dir>/error.log -c <dir>/nginx.conf
    /// -g 'daemon off; master_process off;'` (one process, so killing it leaves nothing behind),
    /// routing per `deploy/nginx/matrix.conf`. Waits until it answers.
    /// A port taken by another process between [`free_port`] and nginx's bind is not a failure:
    /// nginx starts again on another port (three tries).
    pub async fn start(tools: &Tools, synapse: &Url, provider: &Url) -> Result<Self, Error> {
        on_a_free_port("nginx", || async {
            let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            Self::start_on(tools, listen, synapse, provider).await
        })
        .await
    }

    /// [`ReverseProxy::start`] on a given address (e.g. the port clients already know; the
    /// playground's `--homeserver synapse`). A wildcard address is answered on loopback.
    pub async fn start_on(
        tools: &Tools,
        listen: SocketAddr,
        synapse: &Url,
        provider: &Url,
    ) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("nginx-")
            .tempdir()
            .map_err(Error::io("creating nginx's directory"))?;
        let site = render_site(
            NGINX_SITE_TEMPLATE,
            &SiteVars {
                // `[::1]:8008` for IPv6, as nginx's `listen` wants it.
                listen: listen.to_string(),
                server_name: "localhost".into(),
                synapse: synapse.clone(),
                provider: provider.clone(),
            },
        )?;
        std::fs::write(dir.path().join("site.conf"), site)
            .map_err(Error::io("writing site.conf"))?;
        std::fs::write(dir.path().join("nginx.conf"), main_config(dir.path()))
            .map_err(Error::io("writing nginx.conf"))?;

        let mut child = Command::new(&tools.nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("starting {}", tools.nginx.display())))?;
        let host = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let url = Url::parse(&format!("http://{}/", SocketAddr::new(host, listen.port())))
            .map_err(|e| Error::Options(e.to_string()))?;
        // nginx writes its pid file once it holds its port (it retries a taken port for a few
        // seconds first, while whoever holds it answers): only then is an answer nginx's.
        let pid_file = dir.path().join("nginx.pid");
        let started = match wait_until_exists(&mut child, &pid_file, START_LIMIT).await {
            Ok(()) => wait_until_answering(&mut child, &url, None, START_LIMIT).await,
            Err(reason) => Err(reason),
        };
        if let Err(reason) = started {
            kill(&mut child).await;
            return Err(Error::Start {
                what: "nginx",
                reason,
                log_tail: log_tails(&[&dir.path().join("error.log")], 30),
            });
        }
        Ok(Self {
            child: Some(child),
            url,
            dir,
        })
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The last `n` lines of the access and error logs.
    pub fn log_tail(&self, n: usize) -> String {
        log_tails(
            &[
                &self.dir.path().join("access.log"),
                &self.dir.path().join("error.log"),
            ],
            n,
        )
    }

    /// Kills nginx and waits for it to exit.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child).await;
        }
    }
}

impl Drop for ReverseProxy {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// The main configuration around the site: pid file, logs and every temp path inside `dir`, so
/// nothing under /var is touched and no root privileges are needed.
fn main_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         \x20   access_log {d}/access.log;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   include {d}/site.conf;\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> SiteVars {
        SiteVars {
            listen: "127.0.0.1:8448".into(),
            server_name: "matrix.example.com".into(),
            synapse: Url::parse("http://127.0.0.1:8008/").unwrap(),
            provider: Url::parse("http://127.0.0.1:8080").unwrap(),
        }
    }

    #[test]
    fn the_shipped_example_renders_completely() {
        let site = render_site(NGINX_SITE_TEMPLATE, &vars()).unwrap();
        assert!(site.contains("listen 127.0.0.1:8448;"));
        assert!(site.contains("proxy_pass http://127.0.0.1:8080;"));
        assert!(site.contains("proxy_pass http://127.0.0.1:8008;"));
        assert!(!site.contains("{{"));
    }

    #[test]
    fn upstreams_with_a_path_or_bad_names_are_refused() {
        let mut v = vars();
        v.provider = Url::parse("http://127.0.0.1:8080/auth/").unwrap();
        assert!(render_site(NGINX_SITE_TEMPLATE, &v).is_err());
        let mut v = vars();
        v.server_name = "x; include /etc/passwd".into();
        assert!(render_site(NGINX_SITE_TEMPLATE, &v).is_err());
        assert!(render_site("{{other}}", &vars()).is_err());
    }
}
