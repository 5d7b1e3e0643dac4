//! `rulebridge run` as a library: builds the clients, state store and syncer from a
//! [`Config`], serves `/metrics` and `/healthz`, and polls until asked to stop.
//!
//! Async edge. The CLI only loads the config and pack and turns signals into the
//! `shutdown` future; everything else, including the order of a graceful stop (finish
//! the incident in hand, commit, close the ops server), lives here.

use crate::client::{
    Api, GraphClient, RetryPolicy, SentinelClient, TokenSource, ARM_SCOPE, GRAPH_SCOPE,
};
use crate::config::{Config, ConfigError};
use crate::metrics::{self, Metrics};
use crate::rules::{CompiledPack, PackHandle};
use crate::state::{SqliteStore, StateError, StateStore};
use crate::sync::{SyncError, SyncOptions, Syncer};
use std::future::Future;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Client(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// Opens the state file a config names.
pub fn open_state(config: &Config) -> Result<Arc<dyn StateStore>, ServiceError> {
    Ok(Arc::new(SqliteStore::open(&config.sync.state)?))
}

/// The syncer a config describes (credentials from the environment or a file).
pub fn build_syncer(
    config: &Config,
    pack: Arc<PackHandle>,
    metrics: Arc<Metrics>,
) -> Result<Syncer, ServiceError> {
    let credentials = config.credentials()?;
    let tenant = credentials.tenant_id.clone();
    let http = reqwest::Client::builder()
        .user_agent(concat!("rulebridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ServiceError::Client(e.to_string()))?;
    let graph_tokens = Arc::new(TokenSource::new(
        http.clone(),
        config.graph_token_url()?,
        credentials.clone(),
        GRAPH_SCOPE.into(),
    ));
    let arm_tokens = Arc::new(TokenSource::new(
        http.clone(),
        config.sentinel_token_url()?,
        credentials,
        ARM_SCOPE.into(),
    ));
    let retry = RetryPolicy::default();
    let graph = GraphClient::new(
        Api::new(
            http.clone(),
            graph_tokens,
            config.graph_rate_limiter(),
            retry.clone(),
        ),
        &config.defender.graph_url,
    );
    let sentinel = SentinelClient::new(
        Api::new(http, arm_tokens, config.sentinel_rate_limiter(), retry),
        &config.sentinel_incidents_url(),
    )
    .map_err(ServiceError::Client)?;
    let state = open_state(config)?;
    Ok(Syncer::new(
        graph,
        sentinel,
        state,
        pack,
        metrics,
        SyncOptions {
            tenant,
            overlap_secs: config.sync.overlap_secs as i64,
            sweep_batch: config.sync.sweep_batch,
            start_from: config.sync.start_from.clone(),
        },
    ))
}

/// Records the running pack in the state file and the metrics (for `status`).
pub fn announce_pack(
    state: &dyn StateStore,
    metrics: &Metrics,
    pack: &CompiledPack,
) -> Result<(), StateError> {
    metrics.replace_gauge(
        metrics::PACK_INFO,
        &[("version", pack.version.as_str())],
        1.0,
    );
    if state.meta("pack_version")?.as_deref() != Some(pack.version.as_str()) {
        state.set_meta("pack_version", &pack.version)?;
        state.set_meta("pack_loaded_at", &chrono::Utc::now().to_rfc3339())?;
    }
    Ok(())
}

/// Polls both sides every `poll_interval` until `shutdown` resolves, serving the ops
/// endpoints meanwhile. On shutdown the incident in hand is finished and committed.
pub async fn run(
    config: &Config,
    syncer: Arc<Syncer>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| ServiceError::Listen {
            addr: config.server.listen.to_string(),
            source,
        })?;
    tracing::info!(addr = %config.server.listen, "serving /metrics and /healthz");
    let last_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let health = {
        let last_error = last_error.clone();
        let syncer = syncer.clone();
        Arc::new(move || {
            let version = syncer.pack().current().version.clone();
            match &*last_error.lock().unwrap_or_else(|p| p.into_inner()) {
                None => (true, format!("ok; rule pack {version}")),
                Some(e) => (
                    false,
                    format!("last sync cycle failed: {e}; rule pack {version}"),
                ),
            }
        }) as crate::ops_server::Health
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ops = tokio::spawn({
        let metrics = metrics.clone();
        let mut rx = stop_rx.clone();
        crate::ops_server::serve(listener, metrics, health, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    });
    let stopper = {
        let syncer = syncer.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing the incident in hand");
            syncer.request_stop();
            let _ = stop_tx.send(true);
        })
    };
    let interval = config.sync.poll_interval();
    let mut rx = stop_rx;
    while !syncer.stopping() {
        match syncer.cycle().await {
            Ok(reports) => {
                *last_error.lock().unwrap_or_else(|p| p.into_inner()) = reports
                    .iter()
                    .find_map(|r| r.interrupted.clone())
                    .filter(|e| e != "shutting down");
                let [d, s, sweep] = &reports;
                tracing::info!(
                    defender_seen = d.seen,
                    sentinel_seen = s.seen,
                    swept = sweep.seen,
                    writes = d.written + s.written + sweep.written,
                    "cycle done"
                );
            }
            Err(e) => {
                // State errors (disk full, a locked file) stop the service: carrying on
                // would write without being able to remember it.
                tracing::error!(error = %e, "sync cycle failed");
                syncer.request_stop();
                let _ = ops.await;
                return Err(e.into());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = rx.wait_for(|stop| *stop) => {}
        }
    }
    stopper.abort();
    let _ = ops.await;
    tracing::info!("stopped; state committed");
    Ok(())
}
