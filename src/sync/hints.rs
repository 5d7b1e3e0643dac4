//! The reconcile a push hook asks for: one Sentinel incident, by name, read again and
//! synced as its poll would be (comments read when their count moved). Nothing the hook
//! sent is used but the name, so a hint can only make rulebridge look sooner, never
//! change what it writes.
//!
//! A name rulebridge does not link costs no API call and writes nothing. Hints run
//! beside the service loop's cycle: the incident's claim (`inflight`) is taken before
//! either side is read, so a hint never syncs an incident the cycle has in hand and its
//! copies are never older than the cycle's writes.

use super::events::{self, Note};
use super::reconcile::{Outcome, SyncError};
use super::syncer::Syncer;
use crate::client::{with_purpose, Purpose};
use crate::metrics;
use crate::model::Side;

impl Syncer {
    /// Reconciles the Sentinel incident `name` now. Returns the outcome's label (also
    /// counted in `rulebridge_hook_syncs_total`): `synced`, `unchanged`, `filtered`,
    /// `dead_lettered`, `gone` (no longer in Sentinel), `unlinked` (not an incident
    /// rulebridge links), `deferred` (a transient failure: the polls will find the change
    /// as usual) or `failed` (the state file refused; the error is returned too).
    pub async fn sync_hint(&self, name: &str) -> Result<&'static str, SyncError> {
        // Hints draw on the API budget after writes and polls, before comments and
        // every background pass (`client::budget`).
        let result = with_purpose(Purpose::Hint, self.hint(name)).await;
        let label = match &result {
            Ok(label) => label,
            Err(SyncError::Transient(_)) => "deferred",
            Err(SyncError::State(_)) => "failed",
        };
        self.metrics.inc(metrics::HOOK_SYNCS, &[("outcome", label)]);
        match result {
            Err(SyncError::Transient(e)) => {
                tracing::debug!(sentinel_name = name, error = %e, "hinted reconcile deferred");
                Ok("deferred")
            }
            other => other,
        }
    }

    /// From a hook's arrival to the end of the reconcile it asked for, when that wrote
    /// (`rulebridge_hook_lag_seconds`).
    pub fn observe_hint_lag(&self, seconds: f64) {
        self.metrics.observe(metrics::HOOK_LAG, &[], seconds);
    }

    /// Whether the hinted incident is read on purpose (Defender, comments) even if its
    /// etag is the one the last sync left. A comment moves Sentinel's comment count but
    /// not its etag, so an unmoved etag with an unmoved count means the sync that left
    /// them (a poll that got there first, an earlier hint) has seen this version: the
    /// hint then costs one ARM read and no Graph call, which is what keeps a hook per
    /// edit within Graph's budget. Without digests (the sweep-only mode) every hint reads.
    fn hint_must_read(&self, defender_id: &str, s: &serde_json::Value) -> Result<bool, SyncError> {
        if !self.opts.digests {
            return Ok(true);
        }
        let known = self.state.comment_digest(defender_id)?;
        let count = super::comment_plan::sentinel_comment_count(s);
        Ok(count.is_none() || count != known.sentinel)
    }

    async fn hint(&self, name: &str) -> Result<&'static str, SyncError> {
        // ARM names are case-insensitive; links keep the name as it was created or listed.
        let link = match self.state.link_by_sentinel(name)? {
            Some(link) => Some(link),
            None => self.state.link_by_sentinel(&name.to_ascii_lowercase())?,
        };
        let Some(link) = link else {
            return Ok("unlinked");
        };
        let start = Note {
            sentinel_name: Some(link.sentinel_id.clone()),
            defender_id: Some(link.defender_id.clone()),
            ..Note::default()
        };
        let outcome = events::observe(Side::Sentinel, start, async {
            let claim = self.in_flight.claim(&link.defender_id, true).await;
            match self.sentinel.get(&link.sentinel_id).await {
                Ok(Some(s)) => {
                    let force = self.hint_must_read(&link.defender_id, &s)?;
                    self.sync_claimed_sentinel(s, force, &claim).await
                }
                Ok(None) => Ok(Outcome::Gone),
                Err(e) => Err(SyncError::Transient(e)),
            }
        })
        .await?;
        Ok(match outcome {
            Outcome::Synced { .. } => "synced",
            Outcome::Unchanged => "unchanged",
            Outcome::Filtered => "filtered",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Gone => "gone",
            Outcome::NotOurs => "unlinked",
        })
    }
}
