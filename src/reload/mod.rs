//! Hot reload of the rule pack: a candidate is read, checked, tested and only then
//! swapped in; anything short of that leaves the running pack deciding.
//!
//! [`Reloader::try_reload`] is one attempt: read the pack and schemas as one
//! [`PackSnapshot`] → skip if its content hash is the active version → build (manifest,
//! params, tables, scripts, entry points) → run the pack's own tests → optionally a
//! shadow run on recent incidents ([`shadow`]) → [`PackHandle::swap`]. Attempts are
//! serialised, counted in `rulebridge_reloads_total{result}` and logged; rejections list
//! every problem as `path:line:col: message`. [`watch`](watch::watch) calls it when files
//! change; SIGHUP and admin paths call it directly.
//!
//! Each attempt runs on a thread of its own, watched for [`Reloader::set_stuck_after`]
//! (`reload.stuck_after_secs`): one still running then (a hung network mount, a pack
//! whose checks take too long) is reported stuck — log, `status`, the
//! `rulebridge_reload_stuck` gauge, `/healthz` — and abandoned: it may never swap, its
//! place in the queue is given up, and the next change is attempted as usual.
//!
//! Invariant (DESIGN.md): the running pack is always one that passed every check.
//! Incidents in flight keep the `Arc` they started with, so a swap never mixes packs.

pub mod shadow;
pub mod watch;

pub use shadow::{shadow, RuleShadow, ShadowReport};
pub use watch::{watch, watch_paths, WatchOptions, Watcher};

use crate::metrics::{self, Metrics};
use crate::packtest::accept;
use crate::problem::Problem;
use crate::rules::{CompiledPack, PackHandle};
use crate::snapshot::PackSnapshot;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an attempt may run before it is reported stuck, unless configured.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(30);

/// Called after every attempt, on the thread that made it (the watch thread, usually).
pub type Hook = Box<dyn Fn(&ReloadOutcome) + Send + Sync>;
/// Supplies the incidents a candidate is shadow-run on (e.g. `Syncer::recent_incidents`).
pub type ShadowSource = Box<dyn Fn() -> Vec<Arc<Value>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    // Causes are in the messages, not also `source()`s (a chain would show them twice).
    #[error("watching {path}: {error}")]
    Watch { path: String, error: notify::Error },
    #[error("starting the reload thread: {0}")]
    Thread(std::io::Error),
}

/// What one attempt did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The files on disk are the active pack (same content hash): nothing to do.
    Unchanged { version: String },
    /// The candidate passed everything and is now active.
    Swapped { from: String, to: String },
    /// The candidate failed; the running pack stays. `version` is `None` when the files
    /// could not even be read as one snapshot.
    Rejected {
        version: Option<String>,
        problems: Vec<Problem>,
    },
    /// The attempt ran past the stuck limit and was abandoned; the running pack stays.
    Stuck { after_secs: u64 },
}

impl ReloadOutcome {
    /// The `result` label: `unchanged`, `swapped` or `rejected`.
    pub fn result(&self) -> &'static str {
        match self {
            ReloadOutcome::Unchanged { .. } => "unchanged",
            ReloadOutcome::Swapped { .. } => "swapped",
            ReloadOutcome::Rejected { .. } => "rejected",
            ReloadOutcome::Stuck { .. } => "stuck",
        }
    }
}

/// The last rejected candidate.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadFailure {
    /// RFC 3339.
    pub at: String,
    pub version: Option<String>,
    /// Each as `path:line:col: message`.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadCounts {
    pub swapped: u64,
    pub rejected: u64,
    pub unchanged: u64,
    pub stuck: u64,
}

/// What `status` shows about reloading.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub active_version: String,
    pub pack_name: String,
    /// When the active pack became active (RFC 3339).
    pub loaded_at: String,
    pub last_attempt_at: Option<String>,
    /// `unchanged`, `swapped` or `rejected`; `None` before the first attempt.
    pub last_result: Option<String>,
    pub last_failure: Option<ReloadFailure>,
    pub counts: ReloadCounts,
    /// The shadow run of the last candidate that got that far.
    pub last_shadow: Option<ShadowReport>,
    /// Since when (RFC 3339) the last attempt has been stuck; cleared by the next
    /// attempt that finishes.
    pub stuck_since: Option<String>,
}

/// Reloads one rule pack (and its schemas folder) into one [`PackHandle`].
pub struct Reloader {
    pack: Arc<PackHandle>,
    rules_dir: PathBuf,
    schemas_dir: Option<PathBuf>,
    metrics: Arc<Metrics>,
    status: Mutex<ReloadStatus>,
    hooks: Mutex<Vec<Hook>>,
    shadow_source: Mutex<Option<ShadowSource>>,
    /// The attempt holding the queue (its number), for a whole attempt: the watch
    /// thread and SIGHUP may ask at the same time, and two candidates racing to swap
    /// could leave the older one active. An abandoned holder gives its place up.
    serial: Mutex<Option<u64>>,
    serial_free: Condvar,
    /// Numbers of abandoned attempts; checked under this lock right before a swap.
    abandoned: Mutex<HashSet<u64>>,
    attempts: AtomicU64,
    stuck_after: Mutex<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking hook must not disable reloading for the life of the process.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Reloader {
    /// `schemas_dir: None` judges the pack by the schemas built into the binary, as
    /// [`PackSnapshot::read`] does. Publishes the handle's pack as the active version.
    pub fn new(
        pack: Arc<PackHandle>,
        rules_dir: impl Into<PathBuf>,
        schemas_dir: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        let active = pack.current();
        metrics.replace_gauge(metrics::PACK_INFO, &[("version", &active.version)], 1.0);
        let status = ReloadStatus {
            active_version: active.version.clone(),
            pack_name: active.name.clone(),
            loaded_at: now(),
            last_attempt_at: None,
            last_result: None,
            last_failure: None,
            counts: ReloadCounts::default(),
            last_shadow: None,
            stuck_since: None,
        };
        Reloader {
            pack,
            rules_dir: rules_dir.into(),
            schemas_dir,
            metrics,
            status: Mutex::new(status),
            hooks: Mutex::new(Vec::new()),
            shadow_source: Mutex::new(None),
            serial: Mutex::new(None),
            serial_free: Condvar::new(),
            abandoned: Mutex::new(HashSet::new()),
            attempts: AtomicU64::new(0),
            stuck_after: Mutex::new(DEFAULT_STUCK_AFTER),
        }
    }

    /// How long an attempt may run before it is reported stuck and abandoned.
    pub fn set_stuck_after(&self, limit: Duration) {
        *lock(&self.stuck_after) = limit;
    }

    pub fn rules_dir(&self) -> &Path {
        &self.rules_dir
    }

    pub fn schemas_dir(&self) -> Option<&Path> {
        self.schemas_dir.as_deref()
    }

    pub fn pack(&self) -> &Arc<PackHandle> {
        &self.pack
    }

    /// Runs `hook` after every attempt, in registration order. Hooks run while the next
    /// attempt waits: keep them short (hand work to a task) and never call
    /// [`Reloader::try_reload`] from one.
    pub fn on_outcome(&self, hook: Hook) {
        lock(&self.hooks).push(hook);
    }

    /// Runs `hook` after each successful swap only (e.g. retry dead letters).
    pub fn on_swap(&self, hook: Hook) {
        self.on_outcome(Box::new(move |outcome| {
            if matches!(outcome, ReloadOutcome::Swapped { .. }) {
                hook(outcome)
            }
        }));
    }

    /// Shadow-runs every later candidate on these incidents before it is swapped in.
    pub fn set_shadow_source(&self, source: ShadowSource) {
        *lock(&self.shadow_source) = Some(source);
    }

    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }

    /// One reload attempt; see the module doc for the steps. Returns when the attempt
    /// finished, or as `Stuck` once it ran past the stuck limit (it is then abandoned).
    pub fn try_reload(self: &Arc<Self>) -> ReloadOutcome {
        let number = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let limit = *lock(&self.stuck_after);
        let (tx, rx) = mpsc::channel();
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("rulebridge-reload-attempt".into())
            .spawn(move || {
                let outcome = me.run_attempt(number);
                let _ = tx.send(outcome);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a reload attempt thread; attempting inline");
            return self.run_attempt(number);
        }
        match rx.recv_timeout(limit) {
            Ok(outcome) => outcome,
            Err(_) => {
                self.abandon(number);
                let outcome = ReloadOutcome::Stuck {
                    after_secs: limit.as_secs(),
                };
                self.record(&outcome, limit);
                for hook in lock(&self.hooks).iter() {
                    hook(&outcome);
                }
                outcome
            }
        }
    }

    /// Whether the attempt was abandoned (it must not swap, record or call hooks).
    fn is_abandoned(&self, number: u64) -> bool {
        lock(&self.abandoned).contains(&number)
    }

    fn abandon(&self, number: u64) {
        lock(&self.abandoned).insert(number);
        // Its place in the queue goes to whoever waits.
        let _serial = lock(&self.serial);
        self.serial_free.notify_all();
    }

    fn run_attempt(&self, number: u64) -> ReloadOutcome {
        {
            let mut holder = lock(&self.serial);
            while let Some(h) = *holder {
                if self.is_abandoned(h) {
                    break;
                }
                holder = self
                    .serial_free
                    .wait(holder)
                    .unwrap_or_else(|p| p.into_inner());
            }
            *holder = Some(number);
        }
        let started = Instant::now();
        let active = self.pack.current();
        let outcome = self.attempt(&active, number);
        {
            let mut holder = lock(&self.serial);
            if *holder == Some(number) {
                *holder = None;
            }
            self.serial_free.notify_all();
        }
        if self.is_abandoned(number) {
            tracing::warn!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                result = outcome.result(),
                "an abandoned reload attempt finished late; its result is ignored"
            );
            return outcome;
        }
        self.record(&outcome, started.elapsed());
        for hook in lock(&self.hooks).iter() {
            hook(&outcome);
        }
        outcome
    }

    fn attempt(&self, active: &Arc<CompiledPack>, number: u64) -> ReloadOutcome {
        let snapshot = match PackSnapshot::read(&self.rules_dir, self.schemas_dir.as_deref()) {
            Ok(snapshot) => snapshot,
            Err(problems) => {
                return ReloadOutcome::Rejected {
                    version: None,
                    problems,
                }
            }
        };
        let version = snapshot.version.clone();
        if version == active.version {
            return ReloadOutcome::Unchanged { version };
        }
        // The same acceptance as startup (build, then the pack's own tests).
        let candidate = match accept(snapshot) {
            Ok(pack) => pack,
            Err(problems) => {
                return ReloadOutcome::Rejected {
                    version: Some(version),
                    problems,
                }
            }
        };
        self.shadow_run(active, &candidate);
        // Checked and swapped under one lock: an attempt abandoned meanwhile never swaps.
        let abandoned = lock(&self.abandoned);
        if abandoned.contains(&number) {
            return ReloadOutcome::Unchanged {
                version: active.version.clone(),
            };
        }
        let old = self.pack.swap(candidate);
        drop(abandoned);
        ReloadOutcome::Swapped {
            from: old.version.clone(),
            to: version,
        }
    }

    fn shadow_run(&self, active: &CompiledPack, candidate: &CompiledPack) {
        let incidents = match lock(&self.shadow_source).as_ref() {
            Some(source) => source(),
            None => return,
        };
        let report = shadow(active, candidate, &incidents, &now());
        tracing::info!(
            from = %active.version,
            to = %candidate.version,
            incidents = report.incidents,
            changed = report.changed,
            errors = report.errors.len(),
            "shadow run of the candidate pack"
        );
        for (rule, r) in &report.per_rule {
            tracing::info!(rule = %rule, changed = r.changed, examples = ?r.examples, "shadow run: decisions this rule would change");
        }
        for e in &report.errors {
            tracing::warn!("shadow run: {e}");
        }
        lock(&self.status).last_shadow = Some(report);
    }

    fn record(&self, outcome: &ReloadOutcome, elapsed: Duration) {
        let result = outcome.result();
        self.metrics.inc(metrics::RELOADS, &[("result", result)]);
        let at = now();
        let elapsed_ms = elapsed.as_millis() as u64;
        let mut status = lock(&self.status);
        status.last_attempt_at = Some(at.clone());
        status.last_result = Some(result.to_string());
        if !matches!(outcome, ReloadOutcome::Stuck { .. }) && status.stuck_since.is_some() {
            status.stuck_since = None;
            self.metrics.set_gauge(metrics::RELOAD_STUCK, &[], 0.0);
        }
        match outcome {
            ReloadOutcome::Stuck { after_secs } => {
                status.counts.stuck += 1;
                status.stuck_since.get_or_insert(at);
                self.metrics.set_gauge(metrics::RELOAD_STUCK, &[], 1.0);
                tracing::error!(
                    event = "reload.stuck",
                    after_secs,
                    pack_version = %status.active_version,
                    "rule pack reload stuck; abandoned (the running pack stays, later changes are still picked up)"
                );
            }
            ReloadOutcome::Unchanged { version } => {
                status.counts.unchanged += 1;
                tracing::debug!(
                    event = "reload.unchanged",
                    candidate_version = version,
                    pack_version = version,
                    duration_ms = elapsed_ms,
                    "rule pack unchanged"
                );
            }
            ReloadOutcome::Swapped { from, to } => {
                status.counts.swapped += 1;
                let active = self.pack.current();
                status.active_version = to.clone();
                status.pack_name = active.name.clone();
                status.loaded_at = at;
                self.metrics
                    .replace_gauge(metrics::PACK_INFO, &[("version", to)], 1.0);
                tracing::info!(
                    event = "reload.swapped",
                    candidate_version = to,
                    pack_version = to,
                    previous_version = from,
                    pack = %active.name,
                    rules = active.rules.len(),
                    duration_ms = elapsed_ms,
                    "rule pack reloaded"
                );
            }
            ReloadOutcome::Rejected { version, problems } => {
                status.counts.rejected += 1;
                status.last_failure = Some(ReloadFailure {
                    at,
                    version: version.clone(),
                    problems: problems.iter().map(Problem::to_string).collect(),
                });
                // One event, every problem in it (a collector keeps them together).
                let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
                tracing::warn!(
                    event = "reload.rejected",
                    candidate_version = version.as_deref().unwrap_or("unreadable"),
                    pack_version = %status.active_version,
                    problem_count = problems.len(),
                    problems = %lines.join("\n"),
                    duration_ms = elapsed_ms,
                    "rule pack change rejected; the running pack stays"
                );
            }
        }
    }
}
