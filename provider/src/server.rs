//! Starting the provider: database, migrations, config sync, listener, graceful shutdown.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::{
    app,
    clock::Entropy,
    config::Settings,
    core::{
        housekeeping,
        matrix::provisioning::Worker,
        sync::{self, SyncError},
    },
    http::AppState,
    storage::{redact_url, Storage, StorageError},
};

/// Each message carries its cause, so none is chained as a `source` (printing the chain would
/// repeat it).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("can't open the database {url}: {cause}")]
    Database { url: String, cause: StorageError },
    #[error("can't apply the database migrations: {0}")]
    Migrate(StorageError),
    #[error("can't sync the configured clients: {0}")]
    Sync(SyncError),
    #[error("can't listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Io(std::io::Error),
    #[error("invalid password settings: {0}")]
    Passwords(crate::core::passwords::PasswordConfigError),
}

impl From<SyncError> for ServeError {
    fn from(e: SyncError) -> Self {
        Self::Sync(e)
    }
}

impl From<std::io::Error> for ServeError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Opens the configured database.
pub async fn open_storage(settings: &Settings, entropy: Entropy) -> Result<Storage, ServeError> {
    Storage::connect(&settings.database_url, &settings.pool, entropy)
        .await
        .map_err(|cause| ServeError::Database {
            url: redact_url(&settings.database_url),
            cause,
        })
}

/// Migrates (unless told not to) and syncs the static clients, logging what changed.
pub async fn prepare(
    storage: &Storage,
    settings: &Settings,
    migrate: bool,
) -> Result<(), ServeError> {
    if migrate {
        let applied = storage.migrate().await.map_err(ServeError::Migrate)?;
        for m in &applied {
            tracing::info!(version = m.version, description = %m.description, "applied migration");
        }
    }
    if let Ok(true) = storage.autovacuum_off().await {
        tracing::warn!(
            "PostgreSQL's autovacuum is off: table statistics go stale and deleted rows are never \
             reclaimed; run VACUUM ANALYZE regularly, or turn autovacuum on (`provider doctor`)"
        );
    }
    let report = sync::sync_clients(storage, settings, false, false).await?;
    if report.changed() {
        tracing::info!(created = ?report.created, updated = ?report.updated, "synced static clients");
    }
    if report.upstream.changed() {
        let u = &report.upstream;
        tracing::info!(created = ?u.created, updated = ?u.updated, disabled = ?u.disabled, "synced upstream providers");
    }
    if !report.kept.is_empty() {
        tracing::warn!(clients = ?report.kept, "static clients in the database are no longer in the config; `provider config sync --prune` deletes them");
    }
    Ok(())
}

/// A bound, ready-to-run server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

/// Binds the configured address (before touching the database, so a busy port changes nothing).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| ServeError::Bind { addr, cause })
}

impl Server {
    /// Serves on a listener bound by the caller (for when the issuer must name the port).
    pub fn from_listener(
        listener: TcpListener,
        settings: Settings,
        storage: Storage,
    ) -> Result<Self, ServeError> {
        Ok(Self {
            listener,
            state: AppState::new(settings, storage).map_err(ServeError::Passwords)?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    ///
    /// The homeserver job worker runs beside the HTTP server and stops with it, and so does the
    /// housekeeping of expired rows ([`housekeeping`]: full rate-limit buckets, codes,
    /// tickets, …). Handlers get the peer address (`ConnectInfo`) for
    /// per-IP rate limits.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(Worker::new(self.state.core.clone()).run(async {
            let _ = worker_stopped.await;
        }));
        let (stop_cleanup, cleanup_stopped) = tokio::sync::oneshot::channel::<()>();
        let cleanup = tokio::spawn(housekeeping::run(self.state.storage.clone(), async {
            let _ = cleanup_stopped.await;
        }));
        let router = app::router(self.state);
        let served = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        let _ = stop_worker.send(());
        let _ = stop_cleanup.send(());
        let _ = worker.await;
        let _ = cleanup.await;
        served?;
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
