//! The Sentinel copy: the twin as the last sync of a link left it (etag inside), kept
//! in the state so a Defender change is planned from it and PUT with its etag instead
//! of a read first. It stands for Sentinel only while its etag is the link's
//! `sentinel_version`; a stale one is refused by Sentinel (409), and the refusal
//! re-reads and plans again, as after any race. Off in the sweep-only mode.

use super::reconcile::SyncError;
use super::syncer::Syncer;
use crate::state::Link;
use serde_json::Value;

impl Syncer {
    /// Sentinel as the last sync left it, when nothing says it moved since: the stored
    /// copy whose etag is still the link's version. A Defender change is planned from
    /// it and PUT with that etag, which Sentinel refuses (409) if anyone wrote since;
    /// the refusal re-reads and plans again, as after any race, so the read a Defender
    /// change used to cost buys nothing the etag does not. Comments move neither the
    /// etag nor the copy: its count is the digest's, and the Sentinel scan (which
    /// lists every count) is what notices a new one.
    pub(super) fn last_synced_sentinel(&self, link: &Link) -> Result<Option<Value>, SyncError> {
        if !self.opts.digests {
            return Ok(None);
        }
        let Some(mut copy) = self.state.sentinel_copy(&link.defender_id)? else {
            return Ok(None);
        };
        if link.sentinel_version.is_none()
            || copy["etag"].as_str() != link.sentinel_version.as_deref()
        {
            return Ok(None);
        }
        let count = self.state.comment_digest(&link.defender_id)?.sentinel;
        if let Some(properties) = copy.get_mut("properties").and_then(Value::as_object_mut) {
            let data = properties
                .entry("additionalData")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(data) = data.as_object_mut() {
                match count {
                    Some(n) => data.insert("commentsCount".into(), n.into()),
                    None => data.remove("commentsCount"),
                };
            }
        }
        self.count(|st| st.sentinel_reads_saved += 1);
        Ok(Some(copy))
    }

    /// Stores `s` as the Sentinel copy of `link` when it is the version the link now
    /// records (a copy of any other version could never be used).
    pub(super) fn keep_sentinel_copy(&self, link: &Link, s: &Value) -> Result<(), SyncError> {
        if self.opts.digests
            && link.sentinel_version.is_some()
            && s["etag"].as_str() == link.sentinel_version.as_deref()
        {
            self.state.put_sentinel_copy(&link.defender_id, s)?;
        }
        Ok(())
    }
}
