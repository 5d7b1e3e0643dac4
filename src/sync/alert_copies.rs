//! Kept alerts: while Graph cannot expand alerts in incident listings (large tenants
//! answer `$expand=alerts` with `$filter` with a 500, see `listing`), each listed change
//! would cost a read of the incident with its alerts — at 10,000 incidents about half of
//! Graph's budget. So each incident's alerts are kept as last read (a
//! [`DefenderCopy`]), and a listed change is completed from the copy instead of a read
//! when the copy is provably current:
//!
//! - **Every alert change up to the vouch has been applied.** Before each Defender poll,
//!   one `alerts_v2` listing of the alerts with `lastUpdateDateTime` in
//!   `[cursor − overlap, now)` drops the copies of the incidents those alerts sit in now
//!   and sat in when copied. The listing must be complete (all pages, as many distinct
//!   alerts as the service counted); otherwise, or when the cursor is missing or older
//!   than a copy may be, every copy is dropped. A failed listing vouches for nothing.
//! - **The incident's change is one its own fields explain.** A stamp that moved while
//!   every field (but comments, which do not move it) stayed as copied can only be an
//!   alert arriving, leaving or changing — perhaps one whose own stamp did not move
//!   (whether `moveAlerts` moves it is undocumented): read.
//! - **The change precedes the vouch** (the listing's end by the service's clock, less
//!   the poll overlap: the clock skew the polls allow between the `Date` header and the
//!   stamps), the copy is younger than `alert_copies_max_age`, and no incident listed
//!   as merged into it (redirected) is on the same page.
//!
//! A stale copy can only hold the alerts the last sync used, whose mapped values are
//! already the base: nothing is written from them, a change of alerts is late, not
//! wrong. Sweeps, hints and retries always read, and their reads refresh the copies.

use super::poll::{format_stamp, parse_stamp};
use super::reconcile::SyncError;
use super::syncer::Syncer;
use crate::client::ClientError;
use crate::state::DefenderCopy;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use std::collections::HashSet;

/// Where the alerts listing stands (the end of the last complete one).
pub const META_ALERTS_CURSOR: &str = "graph.alerts_cursor";

/// Pages one alerts listing may take (50 alerts each) before every copy is dropped
/// instead: past that, reading the changed incidents again is the cheaper way.
const MAX_PAGES: usize = 20;

/// Fields a listing and a copy are compared without: the stamp that moved, the alerts a
/// listing lacks, comments (which move no stamp), and OData annotations.
fn explains_a_change(key: &str) -> bool {
    !matches!(key, "alerts" | "lastUpdateDateTime" | "comments") && !key.starts_with('@')
}

impl Syncer {
    /// Whether copies are kept now: Graph's listings lack alerts and copies are on.
    pub(super) fn keeps_alert_copies(&self) -> bool {
        self.opts.alert_copies_max_age.is_some() && !self.expand_alerts()
    }

    /// Before a Defender poll: applies the alert changes since the last listing to the
    /// copies and vouches for them up to `until` (see the module doc). Only state errors
    /// are errors; a failed listing leaves the vouch unset and the copies unused.
    pub(super) async fn refresh_alert_copies(&self, until: DateTime<Utc>) -> Result<(), SyncError> {
        self.set_vouch(None);
        if !self.keeps_alert_copies() {
            return Ok(());
        }
        let max_age = self.opts.alert_copies_max_age.unwrap_or_default();
        let cursor = self
            .state
            .meta(META_ALERTS_CURSOR)?
            .as_deref()
            .and_then(parse_stamp)
            // The clock is re-estimated from every response's `Date` header, so a cursor
            // can be a little ahead of this poll's `until`: the poll's own tolerance.
            .filter(|c| *c <= until + super::poll::CLOCK_JITTER && until - *c <= max_age)
            .map(|c| c.min(until));
        let Some(cursor) = cursor else {
            // No continuous record of alert changes: no copy can be trusted.
            self.state.forget_all_defender_copies()?;
            return self.vouch(until);
        };
        let from = format_stamp(cursor - TimeDelta::seconds(self.opts.overlap_secs));
        match self.changed_alerts(&from, &format_stamp(until)).await {
            Ok(Some(changed)) => {
                let (incidents, alerts): (Vec<String>, Vec<String>) = changed
                    .iter()
                    .map(|a| {
                        let incident = a["incidentId"].as_str().unwrap_or_default();
                        let alert = a["id"].as_str().unwrap_or_default();
                        (incident.to_string(), alert.to_string())
                    })
                    .unzip();
                let dropped = self.state.forget_defender_copies(&incidents, &alerts)?;
                if dropped > 0 {
                    self.metrics.add(
                        crate::metrics::KEPT_ALERTS,
                        &[("result", "dropped")],
                        dropped as f64,
                    );
                    tracing::debug!(
                        dropped,
                        alerts = alerts.len(),
                        "alerts changed; their incidents' copies dropped"
                    );
                }
            }
            Ok(None) => {
                tracing::info!("too many alerts changed to list them; every kept copy dropped");
                self.state.forget_all_defender_copies()?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing changed alerts failed; changed incidents are read in full this cycle");
                return Ok(());
            }
        }
        self.vouch(until)
    }

    /// Every alert changed in `[from, until)`; `None` when the listing is too long or
    /// incomplete (fewer distinct alerts than the service counted: offset pages over a
    /// live set skip items).
    async fn changed_alerts(
        &self,
        from: &str,
        until: &str,
    ) -> Result<Option<Vec<Value>>, ClientError> {
        let mut page = self.graph.changed_alerts(from, until, None).await?;
        let counted = page.count;
        let mut seen = HashSet::new();
        let mut alerts = Vec::new();
        for pages in 1.. {
            for alert in page.items.drain(..) {
                if seen.insert(alert["id"].as_str().unwrap_or_default().to_string()) {
                    alerts.push(alert);
                }
            }
            match page.next.take() {
                None => break,
                Some(_) if pages >= MAX_PAGES => return Ok(None),
                Some(next) => page = self.graph.changed_alerts(from, until, Some(&next)).await?,
            }
        }
        let complete = counted.is_none_or(|n| n as usize <= alerts.len());
        Ok(complete.then_some(alerts))
    }

    fn vouch(&self, until: DateTime<Utc>) -> Result<(), SyncError> {
        self.state
            .set_meta(META_ALERTS_CURSOR, &format_stamp(until))?;
        // A stamp written by a clock behind the `Date` header's may still be missing from
        // this listing: changes that close to its end are read, not vouched for.
        self.set_vouch(Some(until - TimeDelta::seconds(self.opts.overlap_secs)));
        Ok(())
    }

    fn set_vouch(&self, until: Option<DateTime<Utc>>) {
        *self
            .alerts_vouched
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// When Graph's listings stop expanding alerts: the record of alert changes starts
    /// now (by the service's clock, which errs early), so the alerts read from here on
    /// are kept and the next poll's alerts listing vouches for them.
    pub(super) fn start_alert_record(&self) -> Result<(), SyncError> {
        let started = self.state.meta(META_ALERTS_CURSOR)?;
        if started.as_deref().and_then(parse_stamp).is_none() {
            let now = self.graph.api().service_now().unwrap_or_else(Utc::now);
            self.state.forget_all_defender_copies()?;
            self.state
                .set_meta(META_ALERTS_CURSOR, &format_stamp(now))?;
        }
        Ok(())
    }

    /// When Graph's listings expand alerts again: copies are no longer kept current.
    pub(super) fn drop_alert_copies(&self) -> Result<(), SyncError> {
        self.set_vouch(None);
        self.state.set_meta(META_ALERTS_CURSOR, "")?;
        self.state.forget_all_defender_copies()?;
        Ok(())
    }

    /// Drops the copies of incidents merged on this page (listed as redirected) and of
    /// the incidents they were merged into: their alerts moved.
    pub(super) fn forget_merged(&self, page: &[Value]) -> Result<(), SyncError> {
        let merged: Vec<String> = page
            .iter()
            .filter(|i| i["status"] == "redirected")
            .flat_map(|i| [&i["id"], &i["redirectIncidentId"]])
            .filter_map(|id| id.as_str().map(str::to_string))
            .collect();
        if !merged.is_empty() && self.keeps_alert_copies() {
            self.state.forget_defender_copies(&merged, &[])?;
        }
        Ok(())
    }

    /// `listed` (an incident listed without alerts) completed with its copy's alerts,
    /// when the copy may stand in for a read (see the module doc).
    pub(super) fn completed_from_copy(&self, listed: &Value) -> Result<Option<Value>, SyncError> {
        let vouched = *self
            .alerts_vouched
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (Some(vouched), Some(max_age)) = (vouched, self.opts.alert_copies_max_age) else {
            return Ok(None);
        };
        let (Some(id), Some(stamp)) = (
            listed["id"].as_str(),
            listed["lastUpdateDateTime"].as_str().and_then(parse_stamp),
        ) else {
            return Ok(None);
        };
        if stamp >= vouched || !self.keeps_alert_copies() {
            return Ok(None);
        }
        let Some(mut copy) = self.state.defender_copy(id)? else {
            return Ok(None);
        };
        let read_at = parse_stamp(&copy.alerts_read_at);
        if read_at.is_none_or(|at| Utc::now() - at > max_age) || !explained(listed, &copy.incident)
        {
            return Ok(None);
        }
        // The listing's fields are the ones the next change is compared with.
        self.state.refresh_defender_copy(id, listed)?;
        let mut full = listed.clone();
        full["alerts"] = copy.incident["alerts"].take();
        Ok(Some(full))
    }

    /// Reads a Defender incident with its alerts, keeping them while copies are kept.
    pub(super) async fn read_defender(&self, id: &str) -> Result<Option<Value>, ClientError> {
        let incident = self.graph.get(id).await?;
        if let Some(full) = &incident {
            if full["alerts"].is_array() && self.keeps_alert_copies() {
                let copy = DefenderCopy {
                    incident: full.clone(),
                    alerts_read_at: super::syncer::now_rfc3339(),
                };
                if let Err(e) = self.state.put_defender_copy(id, &copy) {
                    // A copy not kept costs the next change a read, nothing else.
                    tracing::warn!(error = %e, "could not keep the alerts of {id}");
                }
            }
        }
        Ok(incident)
    }

    /// After a write of ours: the copy's fields follow the incident as it was left (so
    /// a later stamp with no field moved is still taken for an alert change).
    pub(super) fn refresh_defender_copy(&self, after: &Value) -> Result<(), SyncError> {
        let Some(id) = after["id"].as_str() else {
            return Ok(());
        };
        if !self.keeps_alert_copies() {
            return Ok(());
        }
        Ok(self.state.refresh_defender_copy(id, after)?)
    }
}

/// Whether `listed` differs from `copied` in a field that explains its stamp moving.
fn explained(listed: &Value, copied: &Value) -> bool {
    let (Some(listed), Some(copied)) = (listed.as_object(), copied.as_object()) else {
        return false;
    };
    let keys: HashSet<&String> = listed.keys().chain(copied.keys()).collect();
    keys.into_iter()
        .filter(|k| explains_a_change(k))
        .any(|k| listed.get(k.as_str()) != copied.get(k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_field_of_the_incident_explains_a_moved_stamp() {
        let copied = json!({"id": "1", "status": "active", "lastUpdateDateTime": "a",
            "alerts": [{"id": "x"}], "comments": []});
        let stamp_only = json!({"id": "1", "status": "active", "lastUpdateDateTime": "b"});
        assert!(
            !explained(&stamp_only, &copied),
            "alerts or nothing moved it: read"
        );
        let commented = json!({"id": "1", "status": "active", "lastUpdateDateTime": "b",
            "comments": [{"comment": "hi"}], "@odata.etag": "w"});
        assert!(!explained(&commented, &copied), "comments move no stamp");
        let closed = json!({"id": "1", "status": "resolved", "lastUpdateDateTime": "b"});
        assert!(explained(&closed, &copied));
        let tagged = json!({"id": "1", "status": "active", "lastUpdateDateTime": "b",
            "customTags": ["x"]});
        assert!(
            explained(&tagged, &copied),
            "a field the copy lacks counts too"
        );
    }
}
