//! The comment scans: finding comments from what listings already carry, since no
//! change stamp announces them (a comment moves neither Graph's `lastUpdateDateTime` nor
//! Sentinel's `lastModifiedTimeUtc` or etag: unknown for the real services, modelled as
//! the harder case).
//!
//! - **Sentinel**: a listing of every incident, 1,000 a page, carries
//!   `additionalData.commentsCount`. A linked incident whose count differs from its
//!   stored digest (or whose etag moved past a missed poll) is reconciled from the
//!   listed copy (its Defender twin read, comments listed) — no Sentinel read.
//! - **Defender**: listings of the open incidents (`status eq '…'` for each open status;
//!   `eq` is the filter form Graph documents) and of the resolved ones updated within
//!   `retire_closed_after`, 50 a page, carry their `comments` inline. A linked incident
//!   whose comments differ from its digest has them copied (Sentinel's comments listed,
//!   the new ones PUT). Resolved incidents quiet for longer are not scanned, as they
//!   are not swept: Graph pages hold 50 incidents, and a tenant's history is mostly
//!   closed. (A comment on such an incident is found when anything moves its stamp.)
//!
//! Both walk their listings a few pages per cycle, within `scan_share` of the API's
//! per-cycle budget and of the cycle's time (half each); the first half of those pages
//! wait their turn in the budget, the rest start only while the budget is above the
//! scan's reserve (`client::budget`), resuming where they stopped (the next link is kept in memory; a
//! restart starts the walk again). A walk over a live set may skip or repeat an item;
//! repeats cost nothing (digests match), skips are met by the next walk or the sweep.

use super::comment_plan::{defender_digest, sentinel_comment_count};
use super::reconcile::SyncError;
use super::syncer::{PassReport, Syncer};
use crate::client::{with_purpose, ClientError, Purpose};
use crate::model::Side;
use crate::state::LinkDigest;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The Graph statuses scanned, each listed on its own: the open ones, then resolved
/// (only those updated since the retirement time, unless none retire).
pub(super) const SCANNED_STATUSES: [&str; 4] =
    ["active", "inProgress", "awaitingAction", "resolved"];

/// The pages of a cycle's scan that wait their turn in the budget (ranked after every
/// urgent purpose) instead of starting only from spare tokens: half the scan's share.
/// Without a floor a busy tenant's bucket never holds the scan's reserve and a comment
/// waits for the walk to come round for many cycles; with half the share, a walk of
/// that many pages ends each cycle whatever the load.
fn guaranteed(pages: usize) -> usize {
    pages.div_ceil(2)
}

/// Where each walk stands between cycles.
#[derive(Debug, Default)]
pub(super) struct ScanPlace {
    /// The Sentinel listing's next page, mid-walk.
    sentinel_next: Option<String>,
    /// The Graph walk: which open status, and that listing's next page.
    graph_status: usize,
    graph_next: Option<String>,
    /// Full walks finished (for tests and status).
    pub(super) sentinel_walks: u64,
    pub(super) graph_walks: u64,
}

impl Syncer {
    /// One cycle's share of both scans.
    pub(super) async fn scan(&self) -> Result<PassReport, SyncError> {
        let mut report = PassReport::default();
        if !self.opts.digests || self.opts.scan_share <= 0.0 {
            return Ok(report);
        }
        let digests: HashMap<String, LinkDigest> = self
            .state
            .link_digests()?
            .into_iter()
            .map(|l| (l.sentinel_id.to_ascii_lowercase(), l))
            .collect();
        if digests.is_empty() {
            return Ok(report);
        }
        let arm_pages = (self.opts.cycle_budget.arm * self.opts.scan_share).floor() as usize;
        let graph_pages = (self.opts.cycle_budget.graph * self.opts.scan_share).floor() as usize;
        // The scans also share the cycle's time, half each: a listing page takes as long
        // as the service needs to render it, and the next poll must not wait for them.
        let slot = Duration::from_secs_f64(
            (self.opts.cycle_budget.interval_secs * self.opts.scan_share / 2.0).max(0.0),
        );
        let deadline = Instant::now() + slot;
        with_purpose(
            Purpose::Scan,
            self.scan_sentinel(&digests, arm_pages.max(1), deadline, &mut report),
        )
        .await?;
        let deadline = Instant::now().max(deadline) + slot;
        if report.interrupted.is_none() && !self.stopping() {
            let by_defender: HashMap<&str, &LinkDigest> = digests
                .values()
                .map(|l| (l.defender_id.as_str(), l))
                .collect();
            with_purpose(
                Purpose::Scan,
                self.scan_defender(&by_defender, graph_pages.max(1), deadline, &mut report),
            )
            .await?;
        }
        Ok(report)
    }

    async fn scan_sentinel(
        &self,
        digests: &HashMap<String, LinkDigest>,
        pages: usize,
        deadline: Instant,
        report: &mut PassReport,
    ) -> Result<(), SyncError> {
        for walked in 0..pages {
            if self.stopping()
                || Instant::now() >= deadline
                || (walked >= guaranteed(pages)
                    && !self.sentinel.api().may_start(Purpose::Scan).await)
            {
                return Ok(());
            }
            let url = self
                .scan_place()
                .sentinel_next
                .clone()
                .unwrap_or_else(|| self.sentinel.everything_url());
            let page = match self
                .sentinel
                .api()
                .page("sentinel scan incidents", &url, "nextLink")
                .await
            {
                Ok(page) => page,
                Err(e) => return self.scan_failed(e, report),
            };
            {
                let mut place = self.scan_place();
                place.sentinel_next = page.next.clone();
                if page.next.is_none() {
                    place.sentinel_walks += 1;
                }
            }
            for s in page.items {
                if self.stopping() {
                    return Ok(());
                }
                let Some(link) = s["name"]
                    .as_str()
                    .and_then(|n| digests.get(&n.to_ascii_lowercase()))
                else {
                    continue;
                };
                let etag_moved = s["etag"].as_str() != link.sentinel_version.as_deref();
                let count = sentinel_comment_count(&s);
                let comments_moved = count.is_some() && count != link.comments.sentinel;
                if !etag_moved && !comments_moved {
                    continue;
                }
                report.seen += 1;
                // Reads on purpose when only the comments moved (the etag shortcut would
                // call it unchanged); otherwise as a poll would.
                let outcome =
                    with_purpose(Purpose::Comments, self.from_sentinel(s, comments_moved)).await;
                match outcome {
                    Ok(outcome) => report.written += outcome.writes(),
                    Err(SyncError::Transient(e)) => return self.scan_failed(e, report),
                    Err(e) => return Err(e),
                }
            }
            if page.next.is_none() {
                // One walk per cycle at most: the next starts next cycle.
                return Ok(());
            }
        }
        Ok(())
    }

    async fn scan_defender(
        &self,
        digests: &HashMap<&str, &LinkDigest>,
        pages: usize,
        deadline: Instant,
        report: &mut PassReport,
    ) -> Result<(), SyncError> {
        let mut walked = 0;
        while walked < pages {
            if self.stopping()
                || Instant::now() >= deadline
                || (walked >= guaranteed(pages) && !self.graph.api().may_start(Purpose::Scan).await)
            {
                return Ok(());
            }
            let (status, url) = {
                let place = self.scan_place();
                let status = SCANNED_STATUSES[place.graph_status % SCANNED_STATUSES.len()];
                let since = (status == "resolved")
                    .then(|| self.retired_before())
                    .flatten();
                let url = place
                    .graph_next
                    .clone()
                    .unwrap_or_else(|| self.graph.status_url(status, since.as_deref()));
                (place.graph_status, url)
            };
            walked += 1;
            let page = match self
                .graph
                .api()
                .page("graph scan incidents", &url, "@odata.nextLink")
                .await
            {
                Ok(page) => page,
                Err(e) => return self.scan_failed(e, report),
            };
            let listing_done = page.next.is_none();
            {
                let mut place = self.scan_place();
                place.graph_next = page.next.clone();
                if listing_done {
                    place.graph_status = status + 1;
                    if place.graph_status.is_multiple_of(SCANNED_STATUSES.len()) {
                        place.graph_status = 0;
                        place.graph_walks += 1;
                    }
                }
            }
            for d in page.items {
                if self.stopping() {
                    return Ok(());
                }
                if let Err(e) = self.scanned_defender(digests, d, report).await {
                    return match e {
                        SyncError::Transient(e) => self.scan_failed(e, report),
                        e => Err(e),
                    };
                }
            }
            if listing_done && self.scan_place().graph_status == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A listed open Defender incident: its comments copied if they moved.
    async fn scanned_defender(
        &self,
        digests: &HashMap<&str, &LinkDigest>,
        d: Value,
        report: &mut PassReport,
    ) -> Result<(), SyncError> {
        let Some(known) = d["id"].as_str().and_then(|id| digests.get(id)) else {
            return Ok(());
        };
        let Some(digest) = defender_digest(&d) else {
            return Ok(());
        };
        if known.comments.defender.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        let _claim = self.in_flight.claim(&known.defender_id, false).await;
        if self.in_flight.hinted_since(&known.defender_id) {
            // A hint copied its comments after this copy may have been listed; the next
            // walk compares a fresh listing with the digest the hint stored.
            return Ok(());
        }
        // The digests were loaded when the scan began; a sync since (the Sentinel scan's
        // own POST of a Sentinel comment, most often) may have stored this very digest.
        let stored = self.state.comment_digest(&known.defender_id)?;
        if stored.defender.as_deref() == Some(digest.as_str()) {
            return Ok(());
        }
        let Some(link) = self.state.link(&known.defender_id)? else {
            return Ok(());
        };
        report.seen += 1;
        let pack = self.pack.current();
        let start = super::events::Note {
            defender_id: Some(link.defender_id.clone()),
            sentinel_name: Some(link.sentinel_id.clone()),
            ..Default::default()
        };
        // Comments only: a field change of this incident is the poll's (it moved the
        // stamp), so the twin is not read. The listed copy is what the comment rules see.
        let written = super::events::observe(Side::Defender, start, async {
            self.sync_comments(&pack, &link, &d, None, None, true)
                .await
                .map(|n| super::reconcile::Outcome::Synced { writes: n })
        })
        .await?;
        report.written += written.writes();
        Ok(())
    }

    /// A transient failure ends the scan for this cycle (the place is kept).
    fn scan_failed(&self, error: ClientError, report: &mut PassReport) -> Result<(), SyncError> {
        if Self::is_transient(&error) {
            report.interrupted = Some(error.to_string());
            Ok(())
        } else {
            // A refused listing (a filter the service does not take): said once per
            // cycle, the walk starts over next cycle.
            tracing::warn!(error = %error, "a comment scan listing was refused");
            let mut place = self.scan_place();
            *place = ScanPlace {
                sentinel_walks: place.sentinel_walks,
                graph_walks: place.graph_walks,
                ..ScanPlace::default()
            };
            Ok(())
        }
    }

    fn scan_place(&self) -> std::sync::MutexGuard<'_, ScanPlace> {
        self.scan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Full walks of each scan so far (Sentinel, Defender).
    pub fn scan_walks(&self) -> (u64, u64) {
        let place = self.scan_place();
        (place.sentinel_walks, place.graph_walks)
    }
}
