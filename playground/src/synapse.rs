//! `--homeserver synapse`: a real Synapse (PyPI `matrix-synapse`, the release pinned by
//! `synapse-harness`) in `matrix_authentication_service` mode in place of the fake homeserver,
//! with Debian's nginx in front of it on the homeserver's port, routing as the operators'
//! example `deploy/nginx/matrix.conf` says (the legacy login API to the provider, the rest to
//! Synapse). Both run as child processes, in temporary directories: Synapse starts empty each
//! time, and the playground tells it the provider's users and sessions at start, as it does the
//! fake.

use std::net::SocketAddr;

use synapse_harness::{Availability, ReverseProxy, Synapse, SynapseOptions, Tools};
use url::Url;

use crate::Error;

/// The real Synapse and the nginx in front of it. Dropping it kills both.
#[derive(Debug)]
pub struct RealSynapse {
    synapse: Synapse,
    proxy: Option<ReverseProxy>,
}

impl RealSynapse {
    /// Finds nginx and python3 and makes Synapse's virtualenv on first use (synapse-harness
    /// prints one line when it installs), then starts Synapse on a loopback port, delegating
    /// to the provider at `provider_endpoint` with the shared `secret`; its public base URL is
    /// `public`, where nginx will listen.
    pub(crate) async fn start(
        server_name: &str,
        provider_endpoint: &Url,
        secret: &str,
        public: &Url,
    ) -> Result<Self, Error> {
        let tools = tools().await?;
        // The URL clients are given (`synapse/config/server.py`: `public_baseurl`), named in
        // Synapse's `.well-known/matrix/client` and its links.
        let options = SynapseOptions::new(server_name, provider_endpoint.clone(), secret)
            .with_public_baseurl(public);
        let synapse = Synapse::start(&tools, options)
            .await
            .map_err(|e| Error::Synapse(e.to_string()))?;
        tracing::info!(url = %synapse.url(), startup = ?synapse.startup_time(), dir = %synapse.dir().display(), "real Synapse is up");
        Ok(Self {
            synapse,
            proxy: None,
        })
    }

    /// Where the provider reaches Synapse (its own listener, for `/_synapse/mas/*`).
    pub fn synapse_url(&self) -> &Url {
        self.synapse.url()
    }

    pub fn server_name(&self) -> &str {
        self.synapse.server_name()
    }

    /// The directory holding Synapse's `homeserver.yaml` and logs.
    pub fn synapse_dir(&self) -> &std::path::Path {
        self.synapse.dir()
    }

    /// Starts nginx on `listen`, in front of Synapse and the provider at `provider_endpoint`.
    pub(crate) async fn start_proxy(
        &mut self,
        listen: SocketAddr,
        provider_endpoint: &Url,
    ) -> Result<(), Error> {
        let tools = tools().await?;
        let proxy = ReverseProxy::start_on(&tools, listen, self.synapse.url(), provider_endpoint)
            .await
            .map_err(|e| Error::Synapse(e.to_string()))?;
        tracing::info!(url = %proxy.url(), "nginx is up in front of Synapse");
        self.proxy = Some(proxy);
        Ok(())
    }

    /// Kills nginx and Synapse and waits for them.
    pub(crate) async fn stop(self) {
        if let Some(proxy) = self.proxy {
            proxy.stop().await;
        }
        self.synapse.stop().await;
    }
}

async fn tools() -> Result<Tools, Error> {
    match synapse_harness::prepare().await {
        Ok(Availability::Ready(tools)) => Ok(tools),
        Ok(Availability::Skip(reason)) => Err(Error::Synapse(format!(
            "a real Synapse can't run here: {reason}"
        ))),
        Err(e) => Err(Error::Synapse(e.to_string())),
    }
}
