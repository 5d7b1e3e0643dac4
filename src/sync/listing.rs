//! How one window of a side is listed and its incidents synced: the first page of a
//! window, every page of a listing, and the incidents of a page, a few at a time.
//!
//! Graph can fail `$expand=alerts` together with `$filter` on large tenants (HTTP 500 on
//! every request). Then the listing goes plain and a changed incident's alerts come from
//! its kept copy when `alert_copies` vouches for it, else from a read of the incident;
//! the switch is logged once, shown as a metric and in `status`, and the expanded query
//! is tried again hourly.

use super::poll::{format_stamp, META_EXPAND_FALLBACK};
use super::reconcile::{Outcome, SyncError};
use super::syncer::{PassReport, Syncer};
use crate::client::{ClientError, Page, Pages};
use crate::metrics;
use crate::model::Side;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Incidents of one page synced at the same time (a page holds 50 on Graph).
const PAGE_CONCURRENCY: usize = 8;

/// How long Graph's plain listing stands in for the expanded one before the expanded
/// query is tried again (the 500 is a property of the tenant's size, so rarely gone).
const EXPAND_RETRY: Duration = Duration::from_secs(3600);

/// The Graph listing mode: with alerts expanded, or without them since `since`.
#[derive(Debug, Default)]
pub(super) struct ExpandState {
    fallback_since: Option<Instant>,
    /// Whether a previous process's switch was read from the state (once): a restart
    /// must not spend a retry sequence rediscovering the 500.
    restored: bool,
}

impl ExpandState {
    pub(super) fn is_fallback(&self) -> bool {
        self.fallback_since.is_some()
    }
}

impl Syncer {
    /// The first page of a window. On Graph, the expanded listing while it works; when
    /// it fails with a server error and the plain one succeeds, the plain one from then
    /// on (tried again after [`EXPAND_RETRY`]).
    pub(super) async fn list_window(
        &self,
        side: Side,
        a: Option<DateTime<Utc>>,
        b: Option<DateTime<Utc>>,
    ) -> Result<Page, ClientError> {
        let (from, until) = (a.map(format_stamp), b.map(format_stamp));
        let (from, until) = (from.as_deref(), until.as_deref());
        if side == Side::Sentinel {
            return self.sentinel.window(from, until).await;
        }
        let expand = self.expand_alerts();
        let result = self.graph.window(from, until, expand).await;
        match result {
            Err(ClientError::Exhausted {
                last_status: Some(500 | 502 | 504),
                ..
            }) if expand => {
                let plain = self.graph.window(from, until, false).await?;
                self.enter_expand_fallback();
                Ok(plain)
            }
            Ok(page) if expand => {
                self.leave_expand_fallback();
                Ok(page)
            }
            other => other,
        }
    }

    /// Every page of a listing (offsets): for the tail and narrow windows.
    pub(super) fn pages(&self, side: Side, from: Option<&str>, until: Option<&str>) -> Pages<'_> {
        match side {
            Side::Defender => self.graph.window_pages(from, until, self.expand_alerts()),
            Side::Sentinel => self.sentinel.window_pages(from, until),
        }
    }

    /// Whether Graph listings should expand alerts now.
    pub(super) fn expand_alerts(&self) -> bool {
        let mut state = self.expand.lock().unwrap_or_else(|p| p.into_inner());
        if !state.restored {
            state.restored = true;
            let since = self.state.meta(META_EXPAND_FALLBACK).ok().flatten();
            let ago = since
                .as_deref()
                .and_then(crate::rules::natives::parse_time)
                .and_then(|t| (Utc::now() - t).to_std().ok());
            state.fallback_since = ago.and_then(|ago| Instant::now().checked_sub(ago));
        }
        state
            .fallback_since
            .is_none_or(|since| since.elapsed() >= EXPAND_RETRY)
    }

    /// Status only (the meta key is for `status`): a failure to record it is logged.
    fn enter_expand_fallback(&self) {
        let mut state = self.expand.lock().unwrap_or_else(|p| p.into_inner());
        let first = state.fallback_since.is_none();
        state.fallback_since = Some(Instant::now());
        drop(state);
        if first {
            tracing::warn!(
                "Graph fails $expand=alerts together with $filter (a known limit of large tenants); listing without $expand and reading alerts per changed incident, retrying the expanded listing hourly"
            );
            self.metrics.set_gauge(metrics::EXPAND_FALLBACK, &[], 1.0);
            self.note_expand_fallback(&super::syncer::now_rfc3339());
            if let Err(e) = self.start_alert_record() {
                tracing::warn!(error = %e, "could not start the record of alert changes");
            }
        }
    }

    fn note_expand_fallback(&self, since: &str) {
        if let Err(e) = self.state.set_meta(META_EXPAND_FALLBACK, since) {
            tracing::warn!(error = %e, "could not record Graph's listing mode for status");
        }
    }

    fn leave_expand_fallback(&self) {
        let mut state = self.expand.lock().unwrap_or_else(|p| p.into_inner());
        if state.fallback_since.take().is_some() {
            drop(state);
            tracing::info!("Graph accepts $expand=alerts with $filter again");
            if let Err(e) = self.drop_alert_copies() {
                tracing::warn!(error = %e, "could not drop the kept alerts");
            }
            self.metrics.set_gauge(metrics::EXPAND_FALLBACK, &[], 0.0);
            self.note_expand_fallback("");
        }
    }

    /// Syncs the incidents of one page, a few at a time; `false` when the pass must
    /// stop (a transient failure or shutdown), with the reason in the report.
    pub(super) async fn sync_items(
        &self,
        side: Side,
        items: Vec<Value>,
        report: &mut PassReport,
    ) -> Result<bool, SyncError> {
        if side == Side::Defender {
            self.forget_merged(&items)?;
        }
        let outcomes: Vec<Option<Result<Outcome, SyncError>>> = stream::iter(items)
            .map(|incident| async move {
                if self.stopping() {
                    return None;
                }
                Some(match side {
                    Side::Defender => self.sync_listed_defender(incident).await,
                    Side::Sentinel => self.from_sentinel(incident, false).await,
                })
            })
            .buffered(PAGE_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                None => {
                    report.interrupted = Some("shutting down".into());
                    return Ok(false);
                }
                Some(Ok(outcome)) => {
                    report.seen += 1;
                    report.written += outcome.writes();
                }
                Some(Err(SyncError::Transient(e))) => {
                    report.interrupted = Some(e.to_string());
                    return Ok(false);
                }
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(true)
    }

    /// A Defender incident as listed: without alerts when the listing could not expand
    /// them, so they are taken from the kept copy or read here, but only when the
    /// incident changed since its last sync (an unchanged one needs no rule run, so no
    /// alerts).
    async fn sync_listed_defender(&self, d: Value) -> Result<Outcome, SyncError> {
        // One event for the alerts read and the sync it leads to.
        let start = super::events::Note {
            defender_id: d["id"].as_str().map(str::to_string),
            ..Default::default()
        };
        super::events::observe(Side::Defender, start, self.sync_listed_defender_now(d)).await
    }

    async fn sync_listed_defender_now(&self, d: Value) -> Result<Outcome, SyncError> {
        if d.get("alerts").is_some() {
            return self.from_defender(d, false).await;
        }
        let Some(id) = d["id"].as_str() else {
            return self.from_defender(d, false).await;
        };
        if let Some(link) = self.state.link(id)? {
            if link.created && link.defender_version.as_deref() == super::syncer::defender_stamp(&d)
            {
                self.count(|s| s.incidents_seen += 1);
                return Ok(Outcome::Unchanged);
            }
        }
        if let Some(full) = self.completed_from_copy(&d)? {
            self.count(|s| s.alert_reads_saved += 1);
            self.metrics
                .inc(metrics::KEPT_ALERTS, &[("result", "kept")]);
            return self.from_defender(full, false).await;
        }
        if self.keeps_alert_copies() {
            self.metrics
                .inc(metrics::KEPT_ALERTS, &[("result", "read")]);
        }
        match self.read_defender(id).await {
            Ok(Some(full)) => self.from_defender(full, false).await,
            // Deleted between the listing and now: nothing to sync.
            Ok(None) => Ok(Outcome::Gone),
            Err(e) => Err(SyncError::Transient(e)),
        }
    }
}
