//! Copying comments between the twins of one linked incident: asks the direction
//! rules, PUTs Defender comments into Sentinel under their derived ids, and POSTs
//! Sentinel comments to Defender through the outbox (a row committed before the POST,
//! matched to the Defender comment afterwards; a POST of unknown outcome is repeated
//! only after a grace period). Which comments are new is decided by the pure
//! `comment_plan` planner.

use super::comment_plan::{defender_digest, defender_list_digest, plan_comments};
use super::plan::Decided;
use super::reconcile::SyncError;
use super::syncer::{defender_stamp, now_rfc3339, Syncer};
use crate::client::{with_purpose, ClientError, Purpose};
use crate::metrics;
use crate::model::{FieldChange, Flow, Side, SideValue};
use crate::rules::{CompiledPack, RuleError};
use crate::state::{AuditRow, CommentDigest, CommentPair, Commit, Link};
use serde_json::Value;
use std::sync::Arc;

impl Syncer {
    /// Copies new comments each way, as the direction rules allow. Returns writes made.
    ///
    /// `sentinel_count` is Sentinel's `commentsCount` on the incident in hand. Unless
    /// `always`, nothing is read when both sides' comments look as they did after the
    /// last comment sync (the stored digest) and no POST is of unknown outcome: a field
    /// change costs no comment read. `known_sentinel`: the Sentinel comments, when known
    /// (a twin just created has none).
    pub(super) async fn sync_comments(
        &self,
        pack: &CompiledPack,
        link: &Link,
        d: &Value,
        known_sentinel: Option<Vec<Value>>,
        sentinel_count: Option<u64>,
        always: bool,
    ) -> Result<usize, SyncError> {
        let id = &link.defender_id;
        let pairs = self.state.comment_pairs(id)?;
        let outbox_pending = pairs
            .iter()
            .any(|p| p.defender_key.is_none() && p.origin == Side::Sentinel);
        let seen = CommentDigest {
            defender: defender_digest(d),
            sentinel: sentinel_count,
        };
        if self.opts.digests && !always && !outbox_pending && known_sentinel.is_none() {
            let stored = self.state.comment_digest(id)?;
            if stored.defender.is_some() && stored.sentinel.is_some() && stored == seen {
                return Ok(0);
            }
        }
        let s_comments = match known_sentinel {
            Some(list) => list,
            None => match with_purpose(
                Purpose::Comments,
                self.sentinel.list_comments(&link.sentinel_id),
            )
            .await
            {
                Ok(list) => list,
                Err(ClientError::NotFound { .. }) => return Ok(0),
                Err(e) => {
                    self.client_failure(pack, Side::Defender, id, e)?;
                    return Ok(0);
                }
            },
        };
        let d_comments = d["comments"].as_array().cloned().unwrap_or_default();
        let mut cp = plan_comments(&link.sentinel_id, &d_comments, &s_comments, &pairs);
        // What both lists hold once this sync's writes are in (for the digest).
        let mut sentinel_names: std::collections::HashSet<String> = s_comments
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        let mut defender_after: Option<Vec<Value>> = None;
        if cp.is_empty() {
            self.store_digest(id, &d_comments, None, sentinel_names.len())?;
            return Ok(0);
        }
        let mut commit = Commit {
            comments: std::mem::take(&mut cp.adopted),
            ..Commit::default()
        };
        let now = now_rfc3339();
        let audit = |side: Side, text: &str| AuditRow {
            id: 0,
            at: now.clone(),
            defender_id: id.clone(),
            sentinel_id: link.sentinel_id.clone(),
            side,
            action: "comment".into(),
            field: Some("comments".into()),
            old: Value::Null,
            new: Value::String(crate::rules::natives::clip(text, 200)),
            rule: None,
            pack_version: pack.version.clone(),
        };
        let mut writes = 0;
        if !cp.to_sentinel.is_empty() {
            let texts: Vec<Value> = cp
                .to_sentinel
                .iter()
                .map(|c| Value::String(c.message.clone()))
                .collect();
            let decision = match self.decide_comments(pack, d, link, Side::Defender, texts) {
                Ok(decision) => decision,
                Err(e) => {
                    return self
                        .dead_letter(pack, Side::Defender, id, e.into())
                        .map(|_| 0)
                }
            };
            for c in &cp.to_sentinel {
                let written = decision.flow == Flow::ToSentinel;
                if written {
                    if let Err(e) = self
                        .sentinel
                        .put_comment(&link.sentinel_id, &c.comment_id, &c.message)
                        .await
                    {
                        self.state.commit(&commit)?;
                        self.client_failure(pack, Side::Defender, id, e)?;
                        return Ok(writes);
                    }
                    writes += 1;
                    sentinel_names.insert(c.comment_id.clone());
                    self.observe_comment_lag(c.created.as_deref());
                    self.count(|s| s.comments_to_sentinel += 1);
                    let mut row = audit(Side::Sentinel, &c.message);
                    row.rule = decision.rule.clone();
                    commit.audit.push(row);
                }
                commit.comments.push(CommentPair {
                    defender_id: id.clone(),
                    defender_key: Some(c.defender_key.clone()),
                    sentinel_comment_id: if written {
                        c.comment_id.clone()
                    } else {
                        format!("not-synced:{}", c.defender_key)
                    },
                    origin: Side::Defender,
                    text: String::new(),
                });
            }
        }
        if !cp.to_defender.is_empty() {
            let texts: Vec<Value> = cp
                .to_defender
                .iter()
                .map(|c| Value::String(c.text.clone()))
                .collect();
            let decision = match self.decide_comments(pack, d, link, Side::Sentinel, texts) {
                Ok(decision) => decision,
                Err(e) => {
                    return self
                        .dead_letter(pack, Side::Defender, id, e.into())
                        .map(|_| 0)
                }
            };
            for c in &cp.to_defender {
                if decision.flow != Flow::ToDefender {
                    commit.comments.push(CommentPair {
                        defender_id: id.clone(),
                        defender_key: Some(format!("not-synced:{}", c.sentinel_comment_id)),
                        sentinel_comment_id: c.sentinel_comment_id.clone(),
                        origin: Side::Sentinel,
                        text: String::new(),
                    });
                    continue;
                }
                let mut pair = CommentPair {
                    defender_id: id.clone(),
                    defender_key: None,
                    sentinel_comment_id: c.sentinel_comment_id.clone(),
                    origin: Side::Sentinel,
                    text: c.text.clone(),
                };
                // The outbox entry goes first: a POST is not idempotent, and after a crash
                // this entry is how the posted comment is recognised instead of re-posted.
                if !c.retry {
                    self.state.put_comment_pair(&pair)?;
                } else if !self.outbox_due(&c.sentinel_comment_id) {
                    // Sent not long ago (or by a process that just died): it may still
                    // land; give it the grace period before posting it again.
                    continue;
                }
                let posted = self.graph.add_comment(id, &c.text).await;
                // The grace runs from when the client stopped waiting, not from the send.
                self.outbox_attempted(&c.sentinel_comment_id);
                match posted {
                    Ok(all) => {
                        defender_after = Some(all.clone());
                        let known: std::collections::HashSet<String> = pairs
                            .iter()
                            .chain(commit.comments.iter())
                            .filter_map(|p| p.defender_key.clone())
                            .collect();
                        pair.defender_key = all
                            .iter()
                            .rev()
                            .filter(|x| x["comment"].as_str() == Some(c.text.as_str()))
                            .map(super::fields::defender_comment_key)
                            .find(|k| !known.contains(k));
                        writes += 1;
                        self.observe_comment_lag(c.created.as_deref());
                        self.count(|s| s.comments_to_defender += 1);
                        let mut row = audit(Side::Defender, &c.text);
                        row.rule = decision.rule.clone();
                        commit.audit.push(row);
                        commit.comments.push(pair);
                    }
                    Err(e) => {
                        self.state.commit(&commit)?;
                        self.client_failure(pack, Side::Defender, id, e)?;
                        return Ok(writes);
                    }
                }
            }
        }
        self.state.commit(&commit)?;
        self.store_digest(
            id,
            &d_comments,
            defender_after.as_deref(),
            sentinel_names.len(),
        )?;
        Ok(writes)
    }

    /// Stores what both comment lists hold after a complete comment sync, unless a POST
    /// is still of unknown outcome (then the digest is cleared, so the next visit reads
    /// and settles it). Skipped without digests (the sweep-only mode).
    fn store_digest(
        &self,
        id: &str,
        d_comments: &[Value],
        defender_after: Option<&[Value]>,
        sentinel_comments: usize,
    ) -> Result<(), SyncError> {
        if !self.opts.digests {
            return Ok(());
        }
        let outbox_pending = self
            .state
            .comment_pairs(id)?
            .iter()
            .any(|p| p.defender_key.is_none() && p.origin == Side::Sentinel);
        let digest = if outbox_pending {
            CommentDigest::default()
        } else {
            CommentDigest {
                defender: defender_list_digest(defender_after.unwrap_or(d_comments)),
                sentinel: Some(sentinel_comments as u64),
            }
        };
        self.state.set_comment_digest(id, &digest)?;
        Ok(())
    }

    /// From a comment's creation (its own stamp) to its copy on the other side.
    fn observe_comment_lag(&self, created: Option<&str>) {
        let lag = created
            .and_then(crate::rules::natives::parse_time)
            .map(|t| (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0);
        if let Some(lag) = lag.filter(|l| *l >= 0.0) {
            self.metrics.observe(metrics::COMMENT_LAG, &[], lag);
        }
    }

    /// Whether an outbox comment may be POSTed again: its last attempt by this process is
    /// older than the grace period. One this process never sent (a restart) starts its
    /// grace period now.
    fn outbox_due(&self, comment_id: &str) -> bool {
        let mut attempts = self
            .outbox_attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match attempts.get(comment_id) {
            Some(at) => at.elapsed() >= self.opts.comment_retry_grace,
            None => {
                attempts.insert(comment_id.to_string(), std::time::Instant::now());
                false
            }
        }
    }

    fn outbox_attempted(&self, comment_id: &str) {
        self.outbox_attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(comment_id.to_string(), std::time::Instant::now());
    }

    /// Asks the direction rules whether new comments on `from` flow to the other side.
    fn decide_comments(
        &self,
        pack: &CompiledPack,
        d: &Value,
        link: &Link,
        from: Side,
        texts: Vec<Value>,
    ) -> Result<Decided, RuleError> {
        let stamp = defender_stamp(d).map(str::to_string);
        let new = SideValue {
            value: Value::Array(texts),
            base: Value::Array(Vec::new()),
            changed: true,
            changed_at: stamp.clone(),
        };
        let none = SideValue {
            value: Value::Array(Vec::new()),
            base: Value::Array(Vec::new()),
            changed: false,
            changed_at: stamp,
        };
        let (defender, sentinel) = match from {
            Side::Defender => (new, none),
            Side::Sentinel => (none, new),
        };
        let change = FieldChange {
            field: "comments".into(),
            base: Value::Array(Vec::new()),
            defender,
            sentinel,
        };
        let decision = pack.decide(
            &change,
            Arc::new(d.clone()),
            None,
            &self.options(Some(link)),
        )?;
        Ok(Decided {
            flow: decision.flow,
            rule: decision.rule,
        })
    }
}
