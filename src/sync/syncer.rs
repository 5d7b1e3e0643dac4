//! The sync engine's outer loop: incremental polls of both sides with cursors, the
//! reconcile sweep, dead-letter retries. Per-incident work is in `reconcile`.
//!
//! Invariant: a side's cursor moves only past incidents whose outcome is committed
//! (synced, unchanged, filtered or dead-lettered). A transient failure (throttling
//! that outlasted the retries, a network outage) stops the pass where it is; the next
//! poll starts from the last committed position, and re-reading is harmless because an
//! unchanged incident costs no write.

use super::events::{self, Note};
use super::reconcile::{Outcome, SyncError};
use crate::client::{with_purpose, ClientError, GraphClient, Purpose, SentinelClient};
use crate::metrics::{self, Metrics};
use crate::model::Side;
use crate::rules::PackHandle;
use crate::state::StateStore;
use chrono::{SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the engine needs besides its clients and state.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The Defender tenant id: part of every Sentinel twin's deterministic id.
    pub tenant: String,
    /// How far before the cursor a poll starts again (clock skew between replicas).
    pub overlap_secs: i64,
    /// Linked incidents fully reconciled per cycle (comments, missed changes).
    pub sweep_batch: usize,
    /// Where the first poll of each side starts; `None`: the moment of the first start
    /// (stored in the state), as Microsoft's connector does.
    pub start_from: Option<String>,
    /// Also sync Defender incidents changed this long before the first start (or before
    /// now, if less), paced behind the polls; `None`: no history.
    pub backfill: Option<TimeDelta>,
    /// Time windows a cycle's backfill step processes at most (each holds at most one
    /// page), so polls keep their place in the API budget.
    pub backfill_windows_per_cycle: usize,
    /// How long a comment POST whose outcome is unknown is given to show up in Defender
    /// before it is sent again (a service may process a request after the client gave
    /// up on it). Longer than the client's request timeout.
    pub comment_retry_grace: std::time::Duration,
    /// Find comment-only changes from the listings (per-link digests and the list scans).
    /// `false` is the sweep-only behaviour of earlier versions, kept so the benchmark
    /// can show both side by side: every reconcile reads comments, no scans run, the
    /// sweep takes `sweep_batch` links whatever the budget and never retires one.
    pub digests: bool,
    /// Shares of each API's per-cycle budget for the sweep and for the scans.
    pub sweep_share: f64,
    pub scan_share: f64,
    /// Closed incidents quiet this long leave the sweep; `None`: never.
    pub retire_closed_after: Option<TimeDelta>,
    /// How long kept alerts may stand in for a read while Graph cannot expand them in
    /// listings (`alert_copies`); `None`: no copies, every changed incident is read.
    pub alert_copies_max_age: Option<TimeDelta>,
    /// Requests each API allows per cycle at the configured rates (rate × interval).
    pub cycle_budget: CycleBudget,
}

/// Requests per cycle each API's configured rate allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CycleBudget {
    pub graph: f64,
    pub arm: f64,
    /// The poll interval in seconds (for how long a full sweep takes).
    pub interval_secs: f64,
}

impl CycleBudget {
    /// `share` of the smaller budget, in requests (at least one when `share > 0`).
    pub fn share(&self, share: f64) -> usize {
        let calls = (self.graph.min(self.arm) * share).floor();
        if share > 0.0 {
            (calls as usize).max(1)
        } else {
            0
        }
    }
}

/// The state's meta key for the sweep's size and pace (`status`).
pub const META_SWEEP: &str = "sweep";

/// How long an ambiguous comment POST is given to show up before it is sent again:
/// longer than the client's request timeout.
pub const COMMENT_RETRY_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

impl SyncOptions {
    /// Every option from the configuration (the one place their defaults live, as
    /// `Config::default()`), for `tenant`.
    pub fn from_config(
        config: &crate::config::Config,
        tenant: impl Into<String>,
    ) -> Result<Self, String> {
        let sync = &config.sync;
        Ok(SyncOptions {
            tenant: tenant.into(),
            overlap_secs: i64::try_from(sync.overlap_secs).unwrap_or(i64::MAX),
            sweep_batch: sync.sweep_batch,
            start_from: sync.start_from.clone(),
            backfill: sync.backfill_span()?,
            backfill_windows_per_cycle: sync.backfill_windows_per_cycle,
            comment_retry_grace: COMMENT_RETRY_GRACE,
            digests: true,
            sweep_share: sync.sweep_share,
            scan_share: sync.scan_share,
            retire_closed_after: sync.retire_span()?,
            alert_copies_max_age: sync.alert_copies_span()?,
            cycle_budget: CycleBudget {
                graph: config.defender.requests_per_minute / 60.0 * sync.poll_interval_secs as f64,
                arm: config.sentinel.requests_per_second * sync.poll_interval_secs as f64,
                interval_secs: sync.poll_interval_secs as f64,
            },
        })
    }

    /// The configuration's defaults, for `tenant`.
    pub fn new(tenant: impl Into<String>) -> Self {
        Self::from_config(&crate::config::Config::default(), tenant)
            .expect("the default configuration's spans parse")
    }
}

/// Declares `Stats` and its field-by-field sum from one list of fields, so a new total
/// cannot be left out of `plus`.
macro_rules! totals {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// Running totals for the demo summary and `status` (the metrics carry the same).
        #[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
        pub struct Stats {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl Stats {
            /// Both totals added up (two syncers over one state file, one after the other).
            pub fn plus(&self, other: &Stats) -> Stats {
                Stats { $($field: self.$field + other.$field,)* }
            }
        }
    };
}

totals! {
    incidents_seen,
    created,
    updates_to_sentinel,
    updates_to_defender,
    fields_to_sentinel,
    fields_to_defender,
    comments_to_sentinel,
    comments_to_defender,
    conflicts,
    conflicts_to_sentinel,
    conflicts_to_defender,
    conflicts_skipped,
    conflicts_merged,
    filtered,
    /// Defender incidents linked to the twin Microsoft's connector had made.
    linked_to_connector,
    dead_lettered,
    etag_retries,
    /// Defender changes planned from the stored Sentinel copy instead of a read.
    sentinel_reads_saved,
    /// Listed Defender changes completed with kept alerts instead of a read.
    alert_reads_saved,
    transient_failures,
}

/// What one poll, sweep or retry pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    pub seen: usize,
    pub written: usize,
    /// The pass stopped early on a transient failure (it is redone next cycle).
    pub interrupted: Option<String>,
}

pub struct Syncer {
    pub(super) graph: GraphClient,
    pub(super) sentinel: SentinelClient,
    pub(super) state: Arc<dyn StateStore>,
    pub(super) pack: Arc<PackHandle>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) opts: SyncOptions,
    pub(super) stats: Mutex<Stats>,
    stopping: AtomicBool,
    /// The last Defender incidents seen (for a reload's shadow run).
    recent: Mutex<VecDeque<Arc<Value>>>,
    recent_capacity: usize,
    /// When each outbox comment was last POSTed by this process.
    pub(super) outbox_attempts: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Whether Graph listings expand alerts (see `poll`).
    pub(super) expand: Mutex<super::listing::ExpandState>,
    /// Up to when kept alerts are vouched for (`alert_copies`).
    pub(super) alerts_vouched: Mutex<Option<chrono::DateTime<Utc>>>,
    /// Sentinel refused the connector-twin lookup once (logged once).
    pub(super) connector_lookup_refused: AtomicBool,
    /// Where the comment scans stand (see `scan`).
    pub(super) scan: Mutex<super::scan::ScanPlace>,
    /// When this process first saw the backfill's progress, and how far it was then
    /// (its pace gives the ETA).
    pub(super) backfill_pace: Mutex<Option<(std::time::Instant, f64)>>,
    /// Which incidents are being synced, and which a hint synced lately (`inflight`).
    pub(super) in_flight: super::inflight::InFlight,
}

pub(super) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) use super::step::{defender_stamp, sentinel_stamp};

impl Syncer {
    pub fn new(
        graph: GraphClient,
        sentinel: SentinelClient,
        state: Arc<dyn StateStore>,
        pack: Arc<PackHandle>,
        metrics: Arc<Metrics>,
        opts: SyncOptions,
    ) -> Self {
        // Every request either client sends is counted where it is sent.
        graph
            .api()
            .count_into(metrics.clone(), Side::Defender.name());
        sentinel
            .api()
            .count_into(metrics.clone(), Side::Sentinel.name());
        Syncer {
            graph,
            sentinel,
            state,
            pack,
            metrics,
            opts,
            stats: Mutex::new(Stats::default()),
            stopping: AtomicBool::new(false),
            recent: Mutex::new(VecDeque::new()),
            recent_capacity: 100,
            outbox_attempts: Mutex::new(std::collections::HashMap::new()),
            expand: Mutex::new(super::listing::ExpandState::default()),
            alerts_vouched: Mutex::new(None),
            connector_lookup_refused: AtomicBool::new(false),
            scan: Mutex::new(super::scan::ScanPlace::default()),
            backfill_pace: Mutex::new(None),
            in_flight: Default::default(),
        }
    }

    /// How many recently seen Defender incidents to keep for shadow runs.
    pub fn keep_recent(mut self, n: usize) -> Self {
        self.recent_capacity = n;
        self
    }

    /// The last Defender incidents seen, oldest first (one entry per incident id).
    pub fn recent_incidents(&self) -> Vec<Arc<Value>> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub(super) fn remember(&self, incident: &Value) {
        if self.recent_capacity == 0 {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|i| i["id"] != incident["id"]);
        recent.push_back(Arc::new(incident.clone()));
        while recent.len() > self.recent_capacity {
            recent.pop_front();
        }
    }

    /// Asks running passes to stop after the incident in hand (graceful shutdown): it is
    /// finished and committed, nothing after it is started, cursors stay consistent.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A throttled or backing-off request must not hold the stop for minutes.
        self.graph.api().cancel();
        self.sentinel.api().cancel();
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    pub fn pack(&self) -> &Arc<PackHandle> {
        &self.pack
    }

    /// One cycle: poll Defender, poll Sentinel, the comment scans, the sweep, then a
    /// step of the backfill (if one runs) — the order in which they draw on the API
    /// budget. The scans' and the backfill's work is reported with the sweep's (their
    /// writes and interruptions; `seen` is the sweep's alone, which `quiesce` counts).
    pub async fn cycle(&self) -> Result<[PassReport; 3], SyncError> {
        self.in_flight.pass_begins();
        let defender = with_purpose(Purpose::Poll, self.poll(Side::Defender)).await?;
        let sentinel = with_purpose(Purpose::Poll, self.poll(Side::Sentinel)).await?;
        let scan = self.scan().await?;
        let mut sweep = self.sweep(self.opts.sweep_batch).await?;
        sweep.written += scan.written;
        sweep.interrupted = sweep.interrupted.or(scan.interrupted);
        if defender.interrupted.is_none()
            && !self.stopping()
            && self.graph.api().may_start(Purpose::Backfill).await
        {
            let backfill = with_purpose(Purpose::Backfill, self.backfill_step()).await?;
            sweep.written += backfill.written;
            sweep.interrupted = sweep.interrupted.or(backfill.interrupted);
        }
        Ok([defender, sentinel, sweep])
    }

    /// The links the sweep leaves out: closed in Sentinel and not synced since this
    /// time (`None`: none retire).
    pub(super) fn retired_before(&self) -> Option<String> {
        let quiet = self
            .opts
            .retire_closed_after
            .filter(|_| self.opts.digests)?;
        Some((Utc::now() - quiet).to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    /// Links a cycle's sweep may visit: at most `batch`, and within `sweep_share` of
    /// each API's per-cycle budget (a link costs one Graph read and two ARM reads).
    pub fn sweep_per_cycle(&self, batch: usize) -> usize {
        if !self.opts.digests {
            return batch;
        }
        let budget = self.opts.cycle_budget;
        let share = self.opts.sweep_share;
        let by_graph = (budget.graph * share).floor();
        let by_arm = (budget.arm * share / 2.0).floor();
        let links = by_graph
            .min(by_arm)
            .max(if share > 0.0 { 1.0 } else { 0.0 });
        batch.min(links as usize)
    }

    /// Fully reconciles up to `batch` links (within the sweep's budget share), least
    /// recently swept first, closed quiet ones retired: both sides are read and comments
    /// compared, which finds what neither a change stamp nor a digest announced.
    pub async fn sweep(&self, batch: usize) -> Result<PassReport, SyncError> {
        with_purpose(Purpose::Sweep, self.sweep_links(batch)).await
    }

    async fn sweep_links(&self, batch: usize) -> Result<PassReport, SyncError> {
        let mut report = PassReport::default();
        let retired_before = self.retired_before();
        let per_cycle = self.sweep_per_cycle(batch);
        let size = self.state.sweep_size(retired_before.as_deref())?;
        let full = if per_cycle == 0 {
            f64::INFINITY
        } else {
            (size as f64 / per_cycle as f64).ceil() * self.opts.cycle_budget.interval_secs
        };
        self.metrics
            .set_gauge(metrics::SWEEP_LINKS, &[], size as f64);
        if full.is_finite() {
            self.metrics
                .set_gauge(metrics::SWEEP_FULL_SECONDS, &[], full);
        }
        self.state.set_meta(
            META_SWEEP,
            &serde_json::json!({"links": size, "per_cycle": per_cycle,
                "full_sweep_secs": full.is_finite().then_some(full)})
            .to_string(),
        )?;
        for link in self
            .state
            .links_to_sweep(per_cycle, retired_before.as_deref())?
        {
            if self.stopping() {
                report.interrupted = Some("shutting down".into());
                break;
            }
            if self.opts.digests
                && !(self.graph.api().may_start(Purpose::Sweep).await
                    && self.sentinel.api().may_start(Purpose::Sweep).await)
            {
                // The budget is needed by what comes before the sweep: next cycle.
                break;
            }
            report.seen += 1;
            // One event for the sweep's read and the sync it leads to.
            let start = Note {
                defender_id: Some(link.defender_id.clone()),
                sentinel_name: Some(link.sentinel_id.clone()),
                ..Note::default()
            };
            let outcome = events::observe(Side::Defender, start, async {
                let defender = self.read_defender(&link.defender_id).await;
                match defender {
                    Ok(Some(d)) => self.from_defender(d, true).await,
                    Ok(None) => self.dead_letter_gone(&link.defender_id),
                    Err(e) => Err(SyncError::Transient(e)),
                }
            })
            .await;
            match outcome {
                Ok(outcome) => report.written += outcome.writes(),
                Err(SyncError::Transient(e)) => {
                    report.interrupted = Some(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            }
            self.state.mark_swept(&link.defender_id, &now_rfc3339())?;
        }
        Ok(report)
    }

    /// Retries every dead letter with the current pack (after a reload, or on request).
    pub async fn retry_dead_letters(&self) -> Result<PassReport, SyncError> {
        with_purpose(Purpose::Retry, self.retry_letters()).await
    }

    async fn retry_letters(&self) -> Result<PassReport, SyncError> {
        self.in_flight.pass_begins();
        let mut report = PassReport::default();
        for letter in self.state.dead_letters()? {
            if self.stopping() {
                report.interrupted = Some("shutting down".into());
                break;
            }
            report.seen += 1;
            let start = match letter.side {
                Side::Defender => Note {
                    defender_id: Some(letter.incident_id.clone()),
                    ..Note::default()
                },
                Side::Sentinel => Note {
                    sentinel_name: Some(letter.incident_id.clone()),
                    ..Note::default()
                },
            };
            let outcome = events::observe(letter.side, start, async {
                match letter.side {
                    Side::Defender => match self.read_defender(&letter.incident_id).await {
                        Ok(Some(d)) => self.from_defender(d, true).await,
                        Ok(None) => Ok(Outcome::Gone),
                        Err(e) => Err(SyncError::Transient(e)),
                    },
                    Side::Sentinel => match self.sentinel.get(&letter.incident_id).await {
                        Ok(Some(s)) => self.from_sentinel(s, true).await,
                        Ok(None) => Ok(Outcome::Gone),
                        Err(e) => Err(SyncError::Transient(e)),
                    },
                }
            })
            .await;
            match outcome {
                Ok(Outcome::DeadLettered) => {}
                Ok(outcome) => {
                    report.written += outcome.writes();
                    self.state.commit(&crate::state::Commit {
                        resolved: vec![(letter.side, letter.incident_id.clone())],
                        ..Default::default()
                    })?;
                }
                Err(SyncError::Transient(e)) => {
                    report.interrupted = Some(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        self.refresh_dead_letter_gauge()?;
        Ok(report)
    }

    pub(super) fn refresh_dead_letter_gauge(&self) -> Result<(), SyncError> {
        let n = self.state.dead_letter_count()?;
        self.metrics.set_gauge(metrics::DEAD_LETTERS, &[], n as f64);
        Ok(())
    }

    /// Whether `error` means "try again later" rather than "this incident is broken".
    pub(super) fn is_transient(error: &ClientError) -> bool {
        !matches!(
            error,
            ClientError::Permanent { .. } | ClientError::NotFound { .. }
        )
    }

    /// The Graph listing currently reads alerts per incident (see `poll`).
    pub fn expand_fallback(&self) -> bool {
        self.expand
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_fallback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_field_by_field() {
        let a = Stats {
            created: 2,
            comments_to_defender: 1,
            ..Stats::default()
        };
        let b = Stats {
            created: 3,
            transient_failures: 4,
            ..Stats::default()
        };
        let sum = a.plus(&b);
        assert_eq!(
            sum,
            Stats {
                created: 5,
                comments_to_defender: 1,
                transient_failures: 4,
                ..Stats::default()
            }
        );
    }
}
