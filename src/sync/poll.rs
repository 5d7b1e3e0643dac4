//! Incremental polls that depend on neither the order nor the stability of the
//! services' pages.
//!
//! Graph ignores `$orderby` on incidents and pages by `$skip` offsets over a live set;
//! ARM's order and skip tokens are not promised either (`reference/observed-behaviour.md`).
//! So a poll never trusts a page that has a next page. It first asks for everything
//! since `cursor − overlap`; when that fits in one page (the usual case) it is one
//! consistent answer. Otherwise it reads the time window `[cursor − overlap, now by the
//! service's clock)`: a window whose first page holds all of it (no `nextLink`) is one
//! consistent answer, and anything bigger is split into
//! narrower windows (by the service's `@odata.count` when it gives one, else in halves)
//! until each fits. Windows are processed oldest first and the cursor moves to a
//! window's end only after every incident in it is committed, so a pass cut off after
//! any request loses nothing. Stamps at or after the window's end (changes made during
//! the pass, and future-dated or skewed stamps) are read by a tail listing that never
//! moves the cursor: a stamp from next year cannot blind the poll to today's changes.
//! How one window is listed (and Graph's `$expand` fallback) is `listing`'s.

use super::reconcile::SyncError;
use super::syncer::{PassReport, Syncer};
use crate::client::ClientError;
use crate::metrics;
use crate::model::Side;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use std::collections::HashSet;

/// How far a cursor may be ahead of the estimated service clock before it is taken
/// for one poisoned by a future-dated stamp.
pub(super) const CLOCK_JITTER: TimeDelta = TimeDelta::minutes(5);

/// Windows never split below this: the services stamp with 100 ns resolution.
const MIN_WINDOW: TimeDelta = TimeDelta::microseconds(1);

/// At most this many narrower windows from one split: a count from a live set is only
/// a hint, and a wrong one costs a request per part.
const MAX_PARTS: i64 = 32;

/// Meta keys in the state store.
pub const META_FIRST_START: &str = "poll.first_start";
pub const META_EXPAND_FALLBACK: &str = "graph.expand_fallback_since";
pub const META_BACKFILL: &str = "backfill.defender";

/// Times as both services write them: UTC, at most 7 fractional digits (.NET's
/// resolution; a 9-digit literal is not a valid OData date-time there). The rules'
/// time natives already write exactly that.
pub use crate::rules::natives::{format_time as format_stamp, parse_time as parse_stamp};

/// Where a walk over windows records how far it got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Progress {
    /// The side's poll cursor.
    Cursor(Side),
    /// The Defender backfill's `done_to`.
    Backfill,
}

impl Syncer {
    /// Reads every incident of `side` changed since its cursor (minus the overlap) in
    /// windows that each fit in one page, and syncs each. Only state errors are returned
    /// as errors; API trouble ends the pass early and is reported in it.
    pub async fn poll(&self, side: Side) -> Result<PassReport, SyncError> {
        let started = super::syncer::now_rfc3339();
        let mut report = PassReport::default();
        let until = self.service_now(side, &mut report).await;
        if let Some(until) = until {
            if side == Side::Defender {
                self.refresh_alert_copies(until).await?;
            }
            let from = self.poll_start(side, until)?;
            // The usual case first: everything since `from`, future stamps included, in
            // one page. Only a bigger answer is cut into windows plus a tail.
            match self.list_window(side, Some(from), None).await {
                Err(e) => self.interrupt(side, &mut report, e),
                Ok(page) if page.next.is_none() => {
                    self.count_window(side, "listed");
                    if self.sync_items(side, page.items, &mut report).await? {
                        self.state.set_cursor(side, &format_stamp(until))?;
                    }
                }
                Ok(_) => {
                    self.count_window(side, "split");
                    let reached = self
                        .walk_windows(side, from, until, None, Progress::Cursor(side), &mut report)
                        .await?;
                    if reached == Some(until) && report.interrupted.is_none() {
                        self.tail(side, until, &mut report).await?;
                    }
                }
            }
        }
        if report.interrupted.is_none() && self.stopping() {
            report.interrupted = Some("shutting down".into());
        }
        let result = if report.interrupted.is_some() {
            "interrupted"
        } else {
            "ok"
        };
        self.metrics
            .inc(metrics::POLLS, &[("side", side.name()), ("result", result)]);
        if report.interrupted.is_none() {
            self.state.record_poll(side, &started)?;
        }
        Ok(report)
    }

    /// Where this poll starts: the cursor less the overlap. A cursor well ahead of the
    /// service's clock can only come from a future-dated stamp (earlier versions took
    /// cursors from stamps): it would hide every change until that date, so the poll
    /// goes back to the start of the last completed poll instead. (A second or so ahead
    /// is normal: the clock is estimated from whole-second `Date` headers.)
    fn poll_start(&self, side: Side, until: DateTime<Utc>) -> Result<DateTime<Utc>, SyncError> {
        let overlap = TimeDelta::seconds(self.opts.overlap_secs);
        let Some(cursor) = self.state.cursor(side)? else {
            return self.first_start(side, until);
        };
        match parse_stamp(&cursor) {
            Some(c) if c <= until + CLOCK_JITTER => Ok(c.min(until) - overlap),
            _ => {
                let fallback = self
                    .state
                    .last_poll(side)?
                    .as_deref()
                    .and_then(parse_stamp)
                    .map_or(until, |t| t.min(until));
                tracing::warn!(
                    side = side.name(),
                    %cursor,
                    from = %format_stamp(fallback - overlap),
                    "the cursor is ahead of the service's clock (a future-dated stamp?); polling from the last completed poll instead"
                );
                Ok(fallback - overlap)
            }
        }
    }

    /// Where a side's first poll starts: `sync.start_from` when configured, else the
    /// moment rulebridge first polled it (stored, so a restart does not move it), as
    /// Microsoft's connector starts from the moment it is connected. History is a
    /// backfill, asked for explicitly.
    pub(super) fn first_start(
        &self,
        side: Side,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, SyncError> {
        if let Some(from) = self.opts.start_from.as_deref().and_then(parse_stamp) {
            return Ok(from);
        }
        let key = format!("{META_FIRST_START}.{}", side.name());
        if let Some(stored) = self.state.meta(&key)?.as_deref().and_then(parse_stamp) {
            return Ok(stored);
        }
        self.state.set_meta(&key, &format_stamp(now))?;
        tracing::info!(
            side = side.name(),
            from = %format_stamp(now),
            "first start: syncing changes from now on (history only by an explicit backfill)"
        );
        Ok(now)
    }

    /// The service's clock, learned from a response's `Date` header; one small request
    /// when this process has not heard from the service yet. Never ahead of the
    /// service: a window must not end past what it has stamped.
    pub(super) async fn service_now(
        &self,
        side: Side,
        report: &mut PassReport,
    ) -> Option<DateTime<Utc>> {
        let api = match side {
            Side::Defender => self.graph.api(),
            Side::Sentinel => self.sentinel.api(),
        };
        if api.service_now().is_none() {
            let probe = match side {
                Side::Defender => self.graph.probe().await,
                Side::Sentinel => self.sentinel.probe().await,
            };
            if let Err(e) = probe {
                tracing::warn!(side = side.name(), error = %e, "poll failed; retrying next cycle");
                report.interrupted = Some(e.to_string());
                return None;
            }
        }
        // Without a Date header (a proxy stripped it), our own clock, a second early.
        let now = api
            .service_now()
            .unwrap_or_else(|| Utc::now() - TimeDelta::seconds(1));
        parse_stamp(&format_stamp(now))
    }

    /// Syncs every incident changed in `[from, until)`, window by window, oldest first,
    /// recording progress after each window; stops after `max_windows` windows when
    /// given. Returns how far it got.
    pub(super) async fn walk_windows(
        &self,
        side: Side,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        max_windows: Option<usize>,
        progress: Progress,
        report: &mut PassReport,
    ) -> Result<Option<DateTime<Utc>>, SyncError> {
        let mut reached = None;
        let mut windows = vec![(from, until)];
        let mut done = 0;
        while let Some((a, b)) = windows.pop() {
            if self.stopping() || max_windows.is_some_and(|max| done >= max) {
                break;
            }
            let page = match self.list_window(side, Some(a), Some(b)).await {
                Ok(page) => page,
                Err(e) => {
                    self.interrupt(side, report, e);
                    break;
                }
            };
            let items = if page.next.is_none() {
                self.count_window(side, "listed");
                page.items
            } else if b - a > MIN_WINDOW {
                self.count_window(side, "split");
                windows.extend(split(a, b, page.count, page_size(side)).into_iter().rev());
                continue;
            } else {
                self.count_window(side, "walked");
                match self.walk_narrow(side, a, b).await {
                    Ok(items) => items,
                    Err(e) => {
                        self.interrupt(side, report, e);
                        break;
                    }
                }
            };
            if !self.sync_items(side, items, report).await? {
                break;
            }
            match progress {
                Progress::Cursor(side) => self.state.set_cursor(side, &format_stamp(b))?,
                Progress::Backfill => self.record_backfill_progress(b)?,
            }
            reached = Some(b);
            done += 1;
        }
        Ok(reached)
    }

    /// Incidents stamped at or after `until`: changed during this pass, or stamped in
    /// the future. Synced, but the cursor stays: their stamps say nothing about what
    /// else has been read.
    async fn tail(
        &self,
        side: Side,
        until: DateTime<Utc>,
        report: &mut PassReport,
    ) -> Result<(), SyncError> {
        let from = format_stamp(until);
        let mut pages = self.pages(side, Some(&from), None);
        let mut seen = HashSet::new();
        loop {
            let page = match pages.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.interrupt(side, report, e);
                    return Ok(());
                }
            };
            // Offset pages over a live set may repeat an item: once is enough.
            let fresh: Vec<Value> = page
                .into_iter()
                .filter(|i| seen.insert(incident_key(side, i)))
                .collect();
            let skewed = fresh
                .iter()
                .filter(|i| {
                    stamp(side, i)
                        .and_then(parse_stamp)
                        .is_some_and(|t| t > until + TimeDelta::minutes(5))
                })
                .count();
            if skewed > 0 {
                tracing::warn!(
                    side = side.name(),
                    incidents = skewed,
                    "incidents stamped more than 5 minutes in the future (clock skew at the service?); synced without moving the cursor"
                );
            }
            if !self.sync_items(side, fresh, report).await? {
                return Ok(());
            }
        }
    }

    /// A window too narrow to split that still spans more than a page: its offset
    /// pages are walked until a walk finds nothing new (items that changed meanwhile
    /// leave the window, which can shift later pages past unread items).
    async fn walk_narrow(
        &self,
        side: Side,
        a: DateTime<Utc>,
        b: DateTime<Utc>,
    ) -> Result<Vec<Value>, ClientError> {
        let (from, until) = (format_stamp(a), format_stamp(b));
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for _ in 0..5 {
            let mut fresh = 0;
            let mut pages = self.pages(side, Some(&from), Some(&until));
            while let Some(page) = pages.next_page().await? {
                for item in page {
                    if seen.insert(incident_key(side, &item)) {
                        fresh += 1;
                        items.push(item);
                    }
                }
            }
            if fresh == 0 {
                break;
            }
        }
        Ok(items)
    }

    fn interrupt(&self, side: Side, report: &mut PassReport, e: ClientError) {
        tracing::warn!(side = side.name(), error = %e, "poll failed; retrying next cycle");
        report.interrupted = Some(e.to_string());
    }

    fn count_window(&self, side: Side, result: &str) {
        self.metrics.inc(
            metrics::POLL_WINDOWS,
            &[("side", side.name()), ("result", result)],
        );
    }
}

fn page_size(side: Side) -> usize {
    match side {
        Side::Defender => crate::client::graph::PAGE_SIZE,
        Side::Sentinel => crate::client::sentinel::PAGE_SIZE,
    }
}

fn stamp(side: Side, incident: &Value) -> Option<&str> {
    match side {
        Side::Defender => super::syncer::defender_stamp(incident),
        Side::Sentinel => super::syncer::sentinel_stamp(incident),
    }
}

fn incident_key(side: Side, incident: &Value) -> String {
    let key = match side {
        Side::Defender => &incident["id"],
        Side::Sentinel => &incident["name"],
    };
    key.as_str().unwrap_or("").to_ascii_lowercase()
}

/// `[a, b)` cut into equal parts: enough for `count` items to fit three quarters of a
/// page each if they were spread evenly (they rarely are; a part still over a page is
/// split again), in halves without a count. Bounds are on the services' 100 ns grid.
pub fn split(
    a: DateTime<Utc>,
    b: DateTime<Utc>,
    count: Option<u64>,
    page: usize,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let per_part = (page as u64 * 3 / 4).max(1);
    let parts = count
        .map_or(2, |c| c.div_ceil(per_part) as i64)
        .clamp(2, MAX_PARTS);
    let span = (b - a).num_nanoseconds().unwrap_or(i64::MAX) / 100;
    let parts = parts.min(span.max(1));
    let mut bounds: Vec<DateTime<Utc>> = (0..=parts)
        .map(|i| {
            if i == parts {
                b
            } else {
                // i * span / parts in 100 ns ticks, without overflow for long spans.
                let ticks = (i128::from(i) * i128::from(span) / i128::from(parts)) as i64;
                a + TimeDelta::nanoseconds(ticks.saturating_mul(100))
            }
        })
        .collect();
    bounds.dedup();
    bounds.windows(2).map(|w| (w[0], w[1])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_stamp(s).unwrap()
    }

    #[test]
    fn a_split_covers_the_window_without_gaps_or_overlaps() {
        let (a, b) = (t("2026-01-01T00:00:00Z"), t("2026-01-01T01:00:00Z"));
        for count in [None, Some(51), Some(120), Some(10_000)] {
            let parts = split(a, b, count, 50);
            assert!(parts.len() >= 2 && parts.len() <= MAX_PARTS as usize);
            assert_eq!(parts.first().unwrap().0, a);
            assert_eq!(parts.last().unwrap().1, b);
            for w in parts.windows(2) {
                assert_eq!(w[0].1, w[1].0, "{count:?}");
                assert!(w[0].0 < w[0].1);
            }
        }
        // 120 items at 37 per part: 4 parts.
        assert_eq!(split(a, b, Some(120), 50).len(), 4);
    }

    #[test]
    fn a_window_of_a_few_ticks_splits_into_at_most_that_many_parts() {
        let a = t("2026-01-01T00:00:00Z");
        let b = a + TimeDelta::nanoseconds(300);
        let parts = split(a, b, Some(10_000), 50);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|(x, y)| x < y));
    }
}
