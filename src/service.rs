//! `rulebridge run` as a library: builds the clients, state store and syncer from a
//! [`Config`], serves `/metrics` and `/healthz` (and the push hook when enabled), and
//! polls until asked to stop, reconciling hinted incidents beside the cycles.
//!
//! Async edge. The CLI only loads the config and pack and turns signals into the
//! `shutdown` future; everything else, including the order of a graceful stop (finish
//! the incident in hand, commit, close the ops server), lives here.

use crate::client::{Api, GraphClient, RetryPolicy, SentinelClient, TokenSource};
use crate::config::{Config, ConfigError, Env, ProcessEnv};
use crate::health::{Health, PackHealth};
use crate::hooks::{HintQueue, Hooks};
use crate::metrics::{self, Metrics};
use crate::reload::{self, ReloadError, ReloadOutcome, Reloader, WatchOptions, Watcher};
use crate::rules::{CompiledPack, PackHandle};
use crate::state::{SqliteStore, StateError, StateStore};
use crate::sync::{SyncError, SyncOptions, Syncer};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Client(String),
    // The cause is in the message, not also a `source()` (a chain would show it twice).
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: String, error: std::io::Error },
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Reload(#[from] ReloadError),
}

/// Opens the state file a config names, creating it if missing (`run`).
pub fn open_state(config: &Config) -> Result<Arc<dyn StateStore>, ServiceError> {
    Ok(Arc::new(SqliteStore::open(&config.sync.state)?))
}

/// Opens the state file a config names only if it exists (`status`, `explain`).
pub fn open_existing_state(config: &Config) -> Result<Arc<dyn StateStore>, ServiceError> {
    Ok(Arc::new(SqliteStore::open_existing(&config.sync.state)?))
}

/// The syncer a config describes (credentials from the environment or files).
pub fn build_syncer(
    config: &Config,
    pack: Arc<PackHandle>,
    metrics: Arc<Metrics>,
) -> Result<Syncer, ServiceError> {
    build_syncer_in(config, &ProcessEnv, pack, metrics)
}

/// [`build_syncer`] with the environment read from `env`.
pub fn build_syncer_in(
    config: &Config,
    env: &dyn Env,
    pack: Arc<PackHandle>,
    metrics: Arc<Metrics>,
) -> Result<Syncer, ServiceError> {
    build_syncer_tuned(config, env, pack, metrics, &Tuning::default())
}

/// What is not configuration but a property of the client: how hard it retries and how
/// long an ambiguous comment POST is given to appear. Production values by default;
/// the testbed shortens them so tests of failures take milliseconds, not minutes.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub retry: RetryPolicy,
    pub comment_retry_grace: std::time::Duration,
    /// `false`: the sweep-only change detection of earlier versions (no comment
    /// digests, no scans), kept so benchmarks and tests can show the difference.
    pub digests: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            retry: RetryPolicy::default(),
            comment_retry_grace: crate::sync::COMMENT_RETRY_GRACE,
            digests: true,
        }
    }
}

/// The one way a syncer is built, for `run`, `retry`, `demo` and every test's testbed:
/// everything from `config` and `env`, the client's behaviour from `tuning`.
pub fn build_syncer_tuned(
    config: &Config,
    env: &dyn Env,
    pack: Arc<PackHandle>,
    metrics: Arc<Metrics>,
    tuning: &Tuning,
) -> Result<Syncer, ServiceError> {
    let identity = config.identity_in(env)?;
    // Once per process: which way it signs in and from where, never the secret.
    tracing::info!(
        kind = %identity.kind,
        chosen = identity.chosen,
        cloud = %config.cloud(),
        "signing in with {}",
        identity.source
    );
    let tenant = identity.tenant_id.clone();
    let http = reqwest::Client::builder()
        .user_agent(concat!("rulebridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ServiceError::Client(e.to_string()))?;
    let endpoints = config.endpoints(env);
    let graph_tokens = Arc::new(TokenSource::with_sign_in(
        http.clone(),
        identity.graph,
        endpoints.graph_scope(),
    ));
    let arm_tokens = Arc::new(TokenSource::with_sign_in(
        http.clone(),
        identity.arm,
        endpoints.arm_scope(),
    ));
    let graph = GraphClient::new(
        Api::new(
            http.clone(),
            graph_tokens,
            config.graph_rate_limiter(),
            tuning.retry.clone(),
        ),
        config.graph_url_in(env),
    );
    let sentinel = SentinelClient::new(
        Api::new(
            http,
            arm_tokens,
            config.sentinel_rate_limiter(),
            tuning.retry.clone(),
        ),
        &config.sentinel_incidents_url_in(env),
    )
    .map_err(ServiceError::Client)?;
    let state = open_state(config)?;
    let keep = if config.reload.shadow {
        config.reload.shadow_incidents
    } else {
        0
    };
    let options = SyncOptions {
        comment_retry_grace: tuning.comment_retry_grace,
        digests: tuning.digests,
        ..SyncOptions::from_config(config, tenant).map_err(ServiceError::Client)?
    };
    Ok(Syncer::new(graph, sentinel, state, pack, metrics, options).keep_recent(keep))
}

/// Hot reload as the service runs it: the reloader over the syncer's pack, its outcomes
/// recorded in the state file (for `status`), a swap announced to the poll loop (which
/// then retries dead letters), and the folder watcher when the config asks for one.
pub struct Reloading {
    pub reloader: Arc<Reloader>,
    watcher: Option<Arc<Watcher>>,
    swapped: Arc<tokio::sync::Notify>,
}

impl Reloading {
    pub fn start(
        rules_dir: std::path::PathBuf,
        schemas_dir: Option<std::path::PathBuf>,
        options: &crate::config::ReloadConfig,
        syncer: &Arc<Syncer>,
        metrics: Arc<Metrics>,
    ) -> Result<Reloading, ServiceError> {
        let reloader = Arc::new(Reloader::new(
            syncer.pack().clone(),
            rules_dir,
            schemas_dir,
            metrics,
        ));
        reloader.set_stuck_after(options.stuck_after());
        if options.shadow {
            let syncer = syncer.clone();
            reloader.set_shadow_source(Box::new(move || syncer.recent_incidents()));
        }
        let swapped = Arc::new(tokio::sync::Notify::new());
        {
            let swapped = swapped.clone();
            reloader.on_swap(Box::new(move |_| swapped.notify_one()));
        }
        {
            let state = syncer.state().clone();
            let status_of = Arc::downgrade(&reloader);
            reloader.on_outcome(Box::new(move |outcome| {
                let shadow = status_of.upgrade().and_then(|r| r.status().last_shadow);
                if let Err(e) = record_outcome(state.as_ref(), outcome, shadow) {
                    tracing::warn!(error = %e, "could not record the reload in the state file");
                }
            }));
        }
        let watcher = if options.watch {
            let watch = WatchOptions {
                polling: options.polling,
                debounce: options.debounce(),
                ..WatchOptions::default()
            };
            Some(Arc::new(reload::watch(reloader.clone(), watch)?))
        } else {
            None
        };
        Ok(Reloading {
            reloader,
            watcher,
            swapped,
        })
    }

    /// Reloads now (SIGHUP): through the watcher's thread when there is one, else on a
    /// blocking thread (building a pack is CPU work, kept off the runtime's threads).
    pub fn trigger(&self) {
        match &self.watcher {
            Some(watcher) => watcher.trigger(),
            None => {
                let reloader = self.reloader.clone();
                tokio::task::spawn_blocking(move || reloader.try_reload());
            }
        }
    }

    /// Resolves at the next successful swap.
    pub async fn swapped(&self) {
        self.swapped.notified().await
    }
}

/// Waits briefly for the ops server to close. A scraper's idle keep-alive connection
/// would hold a graceful HTTP shutdown open forever, and metrics are not worth a hung
/// stop: after two seconds the server is dropped with the runtime.
async fn finish_ops(ops: tokio::task::JoinHandle<std::io::Result<()>>) {
    if tokio::time::timeout(std::time::Duration::from_secs(2), ops)
        .await
        .is_err()
    {
        tracing::debug!("ops server still had open connections at shutdown; dropped");
    }
}

/// What `status` shows about reloads, kept in the state file's meta table.
fn record_outcome(
    state: &dyn StateStore,
    outcome: &ReloadOutcome,
    shadow: Option<reload::ShadowReport>,
) -> Result<(), StateError> {
    let now = chrono::Utc::now().to_rfc3339();
    match outcome {
        ReloadOutcome::Swapped { to, .. } => {
            state.set_meta("pack_version", to)?;
            state.set_meta("pack_loaded_at", &now)?;
        }
        ReloadOutcome::Rejected { version, problems } => {
            state.set_meta("reload_failed_at", &now)?;
            state.set_meta("reload_failed_version", version.as_deref().unwrap_or(""))?;
            let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            state.set_meta("reload_problems", &lines.join("\n"))?;
        }
        ReloadOutcome::Stuck { after_secs } => {
            state.set_meta("reload_stuck_at", &now)?;
            state.set_meta("reload_stuck_after_secs", &after_secs.to_string())?;
        }
        ReloadOutcome::Unchanged { .. } => {}
    }
    if !matches!(outcome, ReloadOutcome::Stuck { .. }) {
        // A finished attempt ends the stuck report.
        if state
            .meta("reload_stuck_at")?
            .is_some_and(|v| !v.is_empty())
        {
            state.set_meta("reload_stuck_at", "")?;
        }
    }
    if let Some(shadow) = shadow {
        if let Ok(json) = serde_json::to_string(&shadow) {
            state.set_meta("last_shadow", &json)?;
        }
    }
    Ok(())
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
    reloading: Option<Arc<Reloading>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    // Before anything listens: hooks enabled without a secret are a config error.
    let hook_secret = config.hook_secret_in(&ProcessEnv)?;
    let hints = Arc::new(HintQueue::new(config.hooks.queue_capacity, metrics.clone()));
    let hooks = match &hook_secret {
        Some((secret, from)) => {
            tracing::info!(event = "hooks.enabled", auth = ?config.hooks.auth, "push hook on, its secret from {from}");
            Hooks::enabled(&config.hooks, secret, hints.clone(), metrics.clone())
        }
        None => Hooks::disabled(metrics.clone()),
    };
    let own_listener = match (config.hooks.listen, hook_secret.is_some()) {
        (Some(addr), true) => Some(bind(addr).await?),
        _ => None,
    };
    let listener = bind(config.server.listen).await?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| config.server.listen.to_string(), |a| a.to_string());
    tracing::info!(event = "ops.listening", addr = %bound, "serving /metrics, /healthz and /readyz");
    let health = Arc::new(Health::new(config.server.health_options(), Instant::now()));
    let (liveness, readiness) = probes(&health, &syncer, reloading.as_ref());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let hook_server = own_listener.map(|listener| {
        let addr = listener
            .local_addr()
            .map_or_else(|_| String::new(), |a| a.to_string());
        tracing::info!(event = "hooks.listening", addr = %addr, "serving {} only", crate::hooks::PATH);
        tokio::spawn(crate::hooks::serve(listener, hooks.clone(), stopped(stop_rx.clone())))
    });
    let ops = tokio::spawn({
        let metrics = metrics.clone();
        // With a listener of its own, the hook is not also beside /metrics.
        let extra = match hook_server {
            Some(_) => axum::Router::new(),
            None => hooks.router(),
        };
        crate::ops_server::serve_with(
            listener,
            metrics,
            liveness,
            readiness,
            extra,
            stopped(stop_rx.clone()),
        )
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
    // Dead letters wait for a better pack; this one may be it (a restart is the
    // simplest reload). Cheap when there are none.
    match syncer.retry_dead_letters().await {
        Ok(report) if report.seen > 0 => {
            tracing::info!(
                retried = report.seen,
                "dead letters retried with the current pack"
            )
        }
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    #[cfg(unix)]
    let hangup = reloading.clone().map(|reloading| {
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the rule pack");
                reloading.trigger();
            }
        })
    });
    // Hints run beside the cycle, one at a time: a hint waits for nothing but the
    // incident it names (`sync::inflight` keeps the two from syncing one incident at
    // once). On a stop the hint in hand is finished; queued ones are left to the polls.
    let hint_worker = HintWorker(Some(tokio::spawn({
        let (syncer, health, hints) = (syncer.clone(), health.clone(), hints.clone());
        let mut rx = stop_rx.clone();
        async move {
            loop {
                // The watch's guard is not `Send`: dropped inside the block.
                let stopped = async {
                    let _ = rx.wait_for(|stop| *stop).await;
                };
                tokio::select! {
                    biased;
                    _ = stopped => break,
                    (name, queued_at) = hints.next() => {
                        if syncer.stopping() {
                            break;
                        }
                        reconcile_hint(&syncer, &health, &name, queued_at).await;
                    }
                }
            }
        }
    })));
    let interval = config.sync.poll_interval();
    let mut rx = stop_rx;
    let mut cycles: u64 = 0;
    while !syncer.stopping() {
        health.beat(Instant::now());
        // Cycles start every `interval` (not `interval` after the last one ended): a
        // change waits at most one interval plus the time to sync it.
        let next_cycle = tokio::time::Instant::now() + interval;
        cycles += 1;
        tracing::debug!(event = "cycle.started", cycle = cycles, "cycle started");
        let cycle = match probe_state(syncer.state().as_ref()) {
            Ok(()) => syncer.cycle().await,
            Err(e) => Err(SyncError::State(e)),
        };
        match cycle {
            Ok(reports) => {
                record_cycle(&health, &reports);
                let [d, s, sweep] = &reports;
                tracing::info!(
                    defender_seen = d.seen,
                    sentinel_seen = s.seen,
                    swept = sweep.seen,
                    writes = d.written + s.written + sweep.written,
                    "cycle done"
                );
            }
            Err(SyncError::State(e)) => {
                // A state error (disk full, a locked or read-only file) pauses syncing:
                // nothing is written that could not be remembered. The cycle is redone
                // from what was committed, as after a crash at the same point (which
                // tests/crash.rs shows loses and duplicates nothing); /readyz says why.
                tracing::error!(event = "state.unwritable", error = %e, "the state file refused a write; syncing paused until it accepts one");
                health.state_written(Err(e.to_string()));
            }
            Err(e) => {
                tracing::error!(error = %e, "sync cycle failed");
                syncer.request_stop();
                finish_ops(ops).await;
                return Err(e.into());
            }
        }
        health.beat(Instant::now());
        // Between cycles, whichever comes first: the stop, the next cycle when it is
        // due, a swapped pack (its retries, then a cycle at once).
        if !syncer.stopping() {
            let swapped = async {
                match &reloading {
                    Some(r) => r.swapped().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = rx.wait_for(|stop| *stop) => {}
                _ = tokio::time::sleep_until(next_cycle) => {}
                _ = swapped => {
                    // A new pack may sync what the old one could not.
                    let report = syncer.retry_dead_letters().await?;
                    if report.seen > 0 {
                        tracing::info!(retried = report.seen, "dead letters retried with the new pack");
                    }
                }
            }
        }
    }
    hint_worker.finish().await;
    stopper.abort();
    #[cfg(unix)]
    if let Some(hangup) = hangup {
        hangup.abort();
    }
    if let Some(hook_server) = hook_server {
        finish_ops(hook_server).await;
    }
    finish_ops(ops).await;
    tracing::info!("stopped; state committed");
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServiceError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| ServiceError::Listen {
            addr: addr.to_string(),
            error,
        })
}

/// The task that reconciles hints. Dropped on an early return (a failed cycle), it is
/// aborted rather than left running beside a service that has ended.
struct HintWorker(Option<tokio::task::JoinHandle<()>>);

impl HintWorker {
    /// Waits for the worker to finish the hint in hand (it stops on the stop signal).
    async fn finish(mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for HintWorker {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// One hinted incident, reconciled beside the cycle. A hint that fails is not retried: the
/// polls find the change as they would have without it.
async fn reconcile_hint(syncer: &Syncer, health: &Health, name: &str, queued_at: Instant) {
    match syncer.sync_hint(name).await {
        Ok(outcome) => {
            if outcome == "synced" {
                syncer.observe_hint_lag(queued_at.elapsed().as_secs_f64());
            }
            tracing::debug!(
                event = "hook.reconciled",
                sentinel_name = name,
                outcome,
                "hinted reconcile done"
            )
        }
        Err(SyncError::State(e)) => {
            tracing::error!(event = "state.unwritable", error = %e, "the state file refused a write; syncing paused until it accepts one");
            health.state_written(Err(e.to_string()));
        }
        Err(e) => tracing::warn!(sentinel_name = name, error = %e, "hinted reconcile failed"),
    }
}

/// The state meta key the loop writes each cycle: a write that proves the state file
/// still takes writes even when a quiet tenant gives the cycle nothing to commit.
const META_ALIVE_AT: &str = "service_alive_at";

fn probe_state(state: &dyn StateStore) -> Result<(), StateError> {
    state.set_meta(META_ALIVE_AT, &chrono::Utc::now().to_rfc3339())
}

/// What a finished cycle tells liveness and readiness: each side's poll pass complete
/// or the error that stopped it (a stop for shutdown is neither), and a state file that
/// took the cycle's writes.
fn record_cycle(health: &Health, reports: &[crate::sync::PassReport; 3]) {
    let now = Instant::now();
    for (side, report) in [
        (crate::model::Side::Defender, &reports[0]),
        (crate::model::Side::Sentinel, &reports[1]),
    ] {
        match report.interrupted.as_deref() {
            None => health.polled(side, Ok(()), now),
            Some("shutting down") => {}
            Some(e) => health.polled(side, Err(e.to_string()), now),
        }
    }
    health.state_written(Ok(()));
}

/// The `/healthz` and `/readyz` answers, asked per request: liveness counts finished
/// incidents as progress (a long first sync is not a hung loop), readiness adds the
/// running pack, a rejected last reload and a stuck one to what the loop recorded (a
/// stuck reload leaves the loop syncing with the running pack: a restart would not
/// help, so it is not a liveness failure).
fn probes(
    health: &Arc<Health>,
    syncer: &Arc<Syncer>,
    reloading: Option<&Arc<Reloading>>,
) -> (crate::ops_server::Health, crate::ops_server::Readiness) {
    let liveness = {
        let (health, syncer) = (health.clone(), syncer.clone());
        Arc::new(move || {
            let now = Instant::now();
            health.progress(syncer.stats().incidents_seen, now);
            let (alive, message) = health.liveness(now);
            let version = syncer.pack().current().version.clone();
            (alive, format!("{message}; rule pack {version}"))
        }) as crate::ops_server::Health
    };
    let readiness = {
        let (health, syncer) = (health.clone(), syncer.clone());
        let reloader = reloading.map(|r| r.reloader.clone());
        Arc::new(move || {
            let rejected = reloader.as_ref().and_then(|r| {
                let status = r.status();
                if status.last_result.as_deref() != Some("rejected") {
                    return None;
                }
                status.last_failure.map(|f| (f.version, f.problems))
            });
            let pack = PackHealth {
                version: syncer.pack().current().version.clone(),
                rejected,
                stuck_since: reloader.as_ref().and_then(|r| r.status().stuck_since),
            };
            health.readiness(&pack, Instant::now())
        }) as crate::ops_server::Readiness
    };
    (liveness, readiness)
}
