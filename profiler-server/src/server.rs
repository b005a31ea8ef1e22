//! Runs the server: opens the store, binds the HTTP and OTLP ports on one tokio runtime,
//! runs retention, and shuts everything down in order (stop accepting, finish in-flight
//! requests, drain the store's writer, checkpoint).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::ingest::otlp::Otlp;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of the database.
    pub data_dir: PathBuf,
    /// HTTP address (API, ingest, UI); port 0 picks a free port.
    pub listen: SocketAddr,
    /// OTLP/gRPC address; port 0 picks a free port.
    pub otlp_listen: SocketAddr,
    /// Data older than this is deleted.
    pub retention: Duration,
    /// How often retention runs (also once at start).
    pub retention_interval: Duration,
    /// Bearer token for `/api` and `/ingest`.
    pub auth_token: Option<String>,
    /// Largest HTTP body and gRPC message accepted.
    pub max_body_bytes: usize,
}

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    otlp_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    store: Arc<SqliteStore>,
}

impl Server {
    /// Opens the store and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let data_dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&data_dir))
            .await
            .context("store open task failed")?
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        let store = Arc::new(store);
        let dyn_store: Arc<dyn Store> = Arc::clone(&store) as Arc<dyn Store>;

        let http = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
        let otlp = TcpListener::bind(config.otlp_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--otlp-listen)", config.otlp_listen))?;
        let http_addr = http.local_addr().context("http listener address")?;
        let otlp_addr = otlp.local_addr().context("otlp listener address")?;
        let (shutdown, signal) = watch::channel(false);
        let stopped = |mut signal: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = signal.wait_for(|stop| *stop).await;
        };

        let auth_token: Option<Arc<str>> = config
            .auth_token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Arc::from);
        let state = AppState {
            store: Arc::clone(&dyn_store),
            auth_token: auth_token.clone(),
            max_body_bytes: config.max_body_bytes,
        };
        let app = api::router(state);
        let http_task = tokio::spawn({
            let signal = stopped(signal.clone());
            async move {
                axum::serve(http, app)
                    .with_graceful_shutdown(signal)
                    .await
                    .context("http server failed")
            }
        });

        let routes = Otlp::new(Arc::clone(&dyn_store)).routes(config.max_body_bytes, auth_token);
        let otlp_task = tokio::spawn({
            let signal = stopped(signal.clone());
            async move {
                tonic::transport::Server::builder()
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(otlp),
                        signal,
                    )
                    .await
                    .context("otlp server failed")
            }
        });

        let retention_task = tokio::spawn(retention(
            Arc::clone(&dyn_store),
            config.retention,
            config.retention_interval,
            signal,
        ));
        tracing::info!(
            http = %http_addr,
            otlp = %otlp_addr,
            data_dir = %config.data_dir.display(),
            retention = %humantime::format_duration(config.retention),
            auth = config.auth_token.is_some(),
            "profiler-server listening"
        );
        Ok(Self {
            http_addr,
            otlp_addr,
            shutdown,
            tasks: vec![
                ("http", http_task),
                ("otlp", otlp_task),
                ("retention", retention_task),
            ],
            store,
        })
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Bound OTLP address.
    pub fn otlp_addr(&self) -> SocketAddr {
        self.otlp_addr
    }

    /// Stops accepting, lets in-flight requests finish, then closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let mut result = Ok(());
        for (name, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => result = Err(error),
                Err(error) => result = Err(anyhow::anyhow!("{name} task panicked: {error}")),
            }
        }
        self.store.close().await;
        tracing::info!("profiler-server stopped");
        result
    }
}

/// Deletes data older than `retention` at start and then every `interval`.
async fn retention(
    store: Arc<dyn Store>,
    retention: Duration,
    interval: Duration,
    mut signal: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let retention_ns = i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = signal.wait_for(|stop| *stop) => return Ok(()),
        }
        let cutoff_ns = api::now_ns().saturating_sub(retention_ns);
        match store.delete_before(cutoff_ns).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "retention deleted old data"),
            Err(error) => {
                tracing::warn!(error = %crate::error::ApiError::from(error), "retention failed")
            }
        }
    }
}
