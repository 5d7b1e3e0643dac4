//! History: Defender incidents changed before rulebridge first started, synced only when
//! asked for (`sync.backfill = "30d"` or `run --backfill 30d`).
//!
//! The first start syncs changes from that moment on, as Microsoft's connector does; a
//! user who wants history names how much. The backfill walks `[now − span, first start)`
//! with the same one-page windows as the polls, a few windows per cycle after the polls
//! and the sweep (last in the budget's priority order), writes paced by the Sentinel
//! limiter, and its progress stored after every window, so a restart resumes it and
//! asking again for a span already covered costs nothing.

use super::poll::{format_stamp, parse_stamp, Progress, META_BACKFILL};
use super::reconcile::SyncError;
use super::syncer::{PassReport, Syncer};
use crate::metrics;
use crate::model::Side;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The state's meta key of the backfill's estimated seconds to go (`status`).
pub const META_BACKFILL_ETA: &str = "backfill.eta_secs";

/// How much later a backfill's start may fall and still be the one already recorded.
const SAME_REQUEST: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A backfill's range and how far it got (stored as JSON in the state's meta).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillStatus {
    pub from: String,
    pub to: String,
    pub done_to: String,
}

impl BackfillStatus {
    /// 0 to 1 through the range.
    pub fn progress(&self) -> f64 {
        let (Some(from), Some(to), Some(done)) = (
            parse_stamp(&self.from),
            parse_stamp(&self.to),
            parse_stamp(&self.done_to),
        ) else {
            return 0.0;
        };
        let total = (to - from).num_milliseconds().max(1) as f64;
        ((done - from).num_milliseconds() as f64 / total).clamp(0.0, 1.0)
    }

    pub fn complete(&self) -> bool {
        match (parse_stamp(&self.done_to), parse_stamp(&self.to)) {
            (Some(done), Some(to)) => done >= to,
            _ => true,
        }
    }
}

impl Syncer {
    /// The backfill recorded in the state, if any was ever asked for.
    pub fn backfill_status(&self) -> Result<Option<BackfillStatus>, SyncError> {
        Ok(self
            .state
            .meta(META_BACKFILL)?
            .and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Runs up to `backfill_windows_per_cycle` windows of the backfill, recording the
    /// range first if the configured span reaches further back than any before.
    pub async fn backfill_step(&self) -> Result<PassReport, SyncError> {
        let mut report = PassReport::default();
        let Some(status) = self.current_backfill(&mut report).await? else {
            return Ok(report);
        };
        if status.complete() {
            self.metrics.set_gauge(metrics::BACKFILL_PROGRESS, &[], 1.0);
            return Ok(report);
        }
        let (Some(done), Some(to)) = (parse_stamp(&status.done_to), parse_stamp(&status.to)) else {
            return Ok(report);
        };
        self.walk_windows(
            Side::Defender,
            done,
            to,
            Some(self.opts.backfill_windows_per_cycle.max(1)),
            Progress::Backfill,
            &mut report,
        )
        .await?;
        if let Some(now) = self.backfill_status()? {
            let percent = (now.progress() * 100.0).floor();
            self.metrics
                .set_gauge(metrics::BACKFILL_PROGRESS, &[], now.progress());
            let eta = self.backfill_eta(now.progress());
            if let Some(eta) = eta {
                self.metrics.set_gauge(metrics::BACKFILL_ETA, &[], eta);
                self.state
                    .set_meta(META_BACKFILL_ETA, &format!("{eta:.0}"))?;
            }
            if now.complete() {
                self.metrics.set_gauge(metrics::BACKFILL_ETA, &[], 0.0);
                self.state.set_meta(META_BACKFILL_ETA, "0")?;
                tracing::info!(from = %now.from, to = %now.to, "backfill complete");
            } else {
                tracing::info!(
                    through = %now.done_to,
                    to = %now.to,
                    eta_secs = eta.map(|e| e.round()),
                    "backfill {percent}% ({} incidents this step)",
                    report.seen
                );
            }
        }
        Ok(report)
    }

    /// Seconds until the backfill is done at the pace this process has made so far
    /// (`None` until two steps have moved it).
    fn backfill_eta(&self, progress: f64) -> Option<f64> {
        let mut pace = self.backfill_pace.lock().unwrap_or_else(|p| p.into_inner());
        let (since, from) = *pace.get_or_insert((std::time::Instant::now(), progress));
        let moved = progress - from;
        (moved > 0.0).then(|| since.elapsed().as_secs_f64() * (1.0 - progress) / moved)
    }

    /// The stored backfill, or a new one when the configured span starts earlier.
    async fn current_backfill(
        &self,
        report: &mut PassReport,
    ) -> Result<Option<BackfillStatus>, SyncError> {
        let stored = self.backfill_status()?;
        let Some(span) = self.opts.backfill else {
            return Ok(stored);
        };
        let Some(now) = self.service_now(Side::Defender, report).await else {
            return Ok(stored);
        };
        let first_start = self.first_start(Side::Defender, now)?;
        let from = now - span;
        if from >= first_start {
            // Everything since `from` is the polls' already.
            return Ok(stored);
        }
        // The service's clock is estimated from whole-second `Date` headers and can step
        // back a second: the same span asked again moments later is the same request.
        let covered = stored
            .as_ref()
            .and_then(|s| parse_stamp(&s.from))
            .is_some_and(|stored_from| stored_from <= from + SAME_REQUEST);
        if covered {
            return Ok(stored);
        }
        // An earlier start than any asked for before: walk from there to the first
        // start again (what was already read costs reads, never writes).
        let status = BackfillStatus {
            from: format_stamp(from),
            to: format_stamp(first_start),
            done_to: format_stamp(from),
        };
        self.store_backfill(&status)?;
        tracing::info!(from = %status.from, to = %status.to, "backfill requested");
        Ok(Some(status))
    }

    pub(super) fn record_backfill_progress(&self, done_to: DateTime<Utc>) -> Result<(), SyncError> {
        if let Some(mut status) = self.backfill_status()? {
            status.done_to = format_stamp(done_to);
            self.store_backfill(&status)?;
        }
        Ok(())
    }

    fn store_backfill(&self, status: &BackfillStatus) -> Result<(), SyncError> {
        let json = serde_json::to_string(status).expect("plain strings serialize");
        self.state.set_meta(META_BACKFILL, &json)?;
        Ok(())
    }
}
