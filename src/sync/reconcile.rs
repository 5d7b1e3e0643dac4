//! One incident's sync, the I/O shell around the pure [`step`]: read what is needed, let
//! `step` decide, send the writes it plans, let `step` settle the answers, commit, copy
//! new comments — or dead-letter the incident with its reason and let the others go on.
//!
//! Invariants: every rule call for one incident uses the one pack taken at its start;
//! bases and versions are committed only for acknowledged writes, together with their
//! audit rows (what `step::settle` returns is committed whole or not at all); a version is
//! stored only when it is provably the state our write left (otherwise the next poll
//! re-reads, which costs a read, never a lost change).

use super::comment_plan::sentinel_comment_count;
use super::events::{self, note, Note};
use super::fields::sentinel_id;
use super::inflight::Claim;
use super::step::{self, CreateDecision, Decision, DefenderAnswer};
use super::syncer::{defender_stamp, now_rfc3339, Syncer};
use crate::client::ClientError;
use crate::metrics;
use crate::model::{Flow, Side};
use crate::rules::{CompiledPack, RuleError, RunOptions, Twin};
use crate::state::{AuditRow, Commit, DeadLetter, Fields, Link, StateError};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    State(#[from] StateError),
    /// Try again later; nothing about this incident was committed past its last commit.
    #[error("{0}")]
    Transient(ClientError),
}

/// How one incident ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing changed since the last sync (or only what we wrote ourselves).
    Unchanged,
    Filtered,
    Synced {
        writes: usize,
    },
    DeadLettered,
    /// A Sentinel incident rulebridge did not create.
    NotOurs,
    /// The incident no longer exists.
    Gone,
}

impl Outcome {
    pub fn writes(&self) -> usize {
        match self {
            Outcome::Synced { writes } => *writes,
            _ => 0,
        }
    }
}

/// A per-incident failure: becomes a dead letter, never a process error.
pub(super) struct Failure {
    kind: &'static str,
    reason: String,
    rule: Option<String>,
}

impl From<RuleError> for Failure {
    fn from(e: RuleError) -> Self {
        Failure {
            kind: "rule_error",
            reason: e.to_string(),
            rule: e.rule.clone(),
        }
    }
}

impl Syncer {
    /// What the rules are told about this incident's link (`ctx.linked`, `ctx.twin`).
    pub(super) fn options(&self, link: Option<&Link>) -> RunOptions {
        RunOptions {
            sync_time: now_rfc3339(),
            linked: link.is_some_and(|l| l.created),
            twin: link.map_or(Twin::Rulebridge, |l| self.twin_of(l)),
            explain: false,
        }
    }

    /// A link whose Sentinel name is not rulebridge's deterministic one points at an
    /// incident Microsoft's connector made (rulebridge never creates under another name).
    pub(super) fn twin_of(&self, link: &Link) -> Twin {
        if link
            .sentinel_id
            .eq_ignore_ascii_case(&sentinel_id(&self.opts.tenant, &link.defender_id))
        {
            Twin::Rulebridge
        } else {
            Twin::Connector
        }
    }

    /// Syncs a Defender incident as listed or read. `force` skips the "same version as
    /// last time" shortcut (sweeps and retries read on purpose).
    pub async fn from_defender(&self, d: Value, force: bool) -> Result<Outcome, SyncError> {
        let start = Note {
            defender_id: d["id"].as_str().map(str::to_string),
            ..Note::default()
        };
        events::observe(Side::Defender, start, self.sync_defender(d, force)).await
    }

    async fn sync_defender(&self, d: Value, force: bool) -> Result<Outcome, SyncError> {
        self.count(|s| s.incidents_seen += 1);
        let Some(id) = d["id"].as_str().map(str::to_string) else {
            tracing::warn!("a Defender incident without an id was skipped");
            note(|n| n.reason = Some("a Defender incident without an id".into()));
            return Ok(Outcome::Filtered);
        };
        note(|n| {
            n.defender_id.get_or_insert_with(|| id.clone());
        });
        self.remember(&d);
        let _claim = self.in_flight.claim(&id, false).await;
        let pack = self.pack.current();
        match self.state.link(&id)? {
            Some(link) if link.created => {
                if !force && link.defender_version.as_deref() == defender_stamp(&d) {
                    return Ok(Outcome::Unchanged);
                }
                note(|n| n.sentinel_name = Some(link.sentinel_id.clone()));
                // A hint synced it after this copy may have been read (`inflight`).
                let d = if self.in_flight.hinted_since(&id) {
                    match self.read_defender(&id).await {
                        // The hint's sync may have left exactly this version.
                        Ok(Some(fresh))
                            if !force
                                && link.defender_version.as_deref() == defender_stamp(&fresh) =>
                        {
                            return Ok(Outcome::Unchanged)
                        }
                        Ok(Some(fresh)) => fresh,
                        Ok(None) => return self.dead_letter_gone(&id),
                        Err(e) => return self.client_failure(&pack, Side::Defender, &id, e),
                    }
                } else {
                    d
                };
                let stored = if force {
                    None
                } else {
                    self.last_synced_sentinel(&link)?
                };
                let read = match stored {
                    Some(copy) => Ok(Some(copy)),
                    None => self.sentinel.get(&link.sentinel_id).await,
                };
                let s = match read {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        let failure = Failure {
                            kind: "twin_missing",
                            reason: format!(
                                "the Sentinel twin {} no longer exists (deleted in Sentinel?); not re-created",
                                link.sentinel_id
                            ),
                            rule: None,
                        };
                        return self.dead_letter(&pack, Side::Defender, &id, failure);
                    }
                    Err(e) => return self.client_failure(&pack, Side::Defender, &id, e),
                };
                self.reconcile(&pack, link, d, s, force).await
            }
            pending => self.create(&pack, pending, d).await,
        }
    }

    /// Syncs a Sentinel incident as listed or read.
    pub async fn from_sentinel(&self, s: Value, force: bool) -> Result<Outcome, SyncError> {
        let start = Note {
            sentinel_name: s["name"].as_str().map(str::to_string),
            ..Note::default()
        };
        events::observe(Side::Sentinel, start, self.sync_sentinel(s, force, false)).await
    }

    /// Syncs a Sentinel incident read while its claim was already held (a hint's), so
    /// the copy is fresh; `force` as for [`Self::from_sentinel`].
    pub(super) async fn sync_claimed_sentinel(
        &self,
        s: Value,
        force: bool,
        _claim: &Claim<'_>,
    ) -> Result<Outcome, SyncError> {
        self.sync_sentinel(s, force, true).await
    }

    async fn sync_sentinel(&self, s: Value, force: bool, held: bool) -> Result<Outcome, SyncError> {
        self.count(|st| st.incidents_seen += 1);
        let Some(name) = s["name"].as_str().map(str::to_string) else {
            return Ok(Outcome::NotOurs);
        };
        let Some(mut link) = self.state.link_by_sentinel(&name)? else {
            return Ok(Outcome::NotOurs);
        };
        let _claim = if held {
            None
        } else {
            let claim = self.in_flight.claim(&link.defender_id, false).await;
            // Read again under the claim: a sync that held it may have moved the link.
            match self.state.link_by_sentinel(&name)? {
                Some(now) => link = now,
                None => return Ok(Outcome::NotOurs),
            }
            Some(claim)
        };
        note(|n| {
            n.sentinel_name = Some(name.clone());
            n.defender_id = Some(link.defender_id.clone());
        });
        if !link.created {
            // The Defender side finishes (or repeats) the create.
            return Ok(Outcome::Unchanged);
        }
        if !force && link.sentinel_version.as_deref() == s["etag"].as_str() {
            return Ok(Outcome::Unchanged);
        }
        let pack = self.pack.current();
        // A hint synced it after this copy may have been read (`inflight`).
        let s = if !held && self.in_flight.hinted_since(&link.defender_id) {
            match self.sentinel.get(&link.sentinel_id).await {
                // The hint's sync may have left exactly this version.
                Ok(Some(fresh))
                    if !force && link.sentinel_version.as_deref() == fresh["etag"].as_str() =>
                {
                    return Ok(Outcome::Unchanged)
                }
                Ok(Some(fresh)) => fresh,
                Ok(None) => return Ok(Outcome::Gone),
                Err(e) => return self.client_failure(&pack, Side::Sentinel, &name, e),
            }
        } else {
            s
        };
        let d = match self.read_defender(&link.defender_id).await {
            Ok(Some(d)) => d,
            Ok(None) => return self.dead_letter_gone(&link.defender_id),
            Err(e) => return self.client_failure(&pack, Side::Sentinel, &name, e),
        };
        self.reconcile(&pack, link, d, s, force).await
    }

    /// Records that a linked Defender incident is gone (deleted or purged).
    pub(super) fn dead_letter_gone(&self, defender_id: &str) -> Result<Outcome, SyncError> {
        let pack = self.pack.current();
        let failure = Failure {
            kind: "gone",
            reason: format!("Defender incident {defender_id} no longer exists"),
            rule: None,
        };
        self.dead_letter(&pack, Side::Defender, defender_id, failure)
    }

    pub(super) fn dead_letter(
        &self,
        pack: &CompiledPack,
        side: Side,
        id: &str,
        failure: Failure,
    ) -> Result<Outcome, SyncError> {
        let now = now_rfc3339();
        let noted = note(|n| {
            n.kind = Some(failure.kind);
            n.reason = Some(failure.reason.clone());
            n.pack_version = Some(pack.version.clone());
            if let Some(rule) = &failure.rule {
                n.rule(rule);
            }
        });
        if !noted {
            // Outside an incident's sync (no event will say it): log it here.
            tracing::warn!(side = side.name(), incident = id, kind = failure.kind, reason = %failure.reason, "dead-lettered");
        }
        if let Some(rule) = &failure.rule {
            self.metrics.inc(metrics::RULE_ERRORS, &[("rule", rule)]);
        }
        self.state.dead_letter(&DeadLetter {
            side,
            incident_id: id.to_string(),
            kind: failure.kind.into(),
            reason: failure.reason,
            rule: failure.rule,
            pack_version: pack.version.clone(),
            first_at: now.clone(),
            last_at: now,
            attempts: 1,
        })?;
        self.count(|s| s.dead_lettered += 1);
        self.refresh_dead_letter_gauge()?;
        Ok(Outcome::DeadLettered)
    }

    /// A client error: permanent ones dead-letter the incident, the rest end the pass.
    pub(super) fn client_failure(
        &self,
        pack: &CompiledPack,
        side: Side,
        id: &str,
        error: ClientError,
    ) -> Result<Outcome, SyncError> {
        if Self::is_transient(&error) {
            self.count(|s| s.transient_failures += 1);
            return Err(SyncError::Transient(error));
        }
        let failure = Failure {
            kind: "rejected",
            reason: error.to_string(),
            rule: None,
        };
        self.dead_letter(pack, side, id, failure)
    }

    /// The dead letter for a failure the pure step reported.
    fn step_failure(
        &self,
        pack: &CompiledPack,
        link: Option<&Link>,
        defender_id: &str,
        failure: step::Failure,
    ) -> Result<Outcome, SyncError> {
        let id = match (failure.side, link) {
            (Side::Sentinel, Some(link)) => link.sentinel_id.clone(),
            _ => defender_id.to_string(),
        };
        let side = failure.side;
        self.dead_letter(
            pack,
            side,
            &id,
            Failure {
                kind: failure.kind,
                reason: failure.reason,
                rule: failure.rule,
            },
        )
    }

    fn filtered(&self, id: &str, rule: String) -> Outcome {
        tracing::debug!(incident = id, rule, "filtered out");
        note(|n| {
            n.rule(&rule);
            n.reason = Some(format!("filter rule {rule}"));
        });
        self.count(|s| s.filtered += 1);
        Outcome::Filtered
    }

    async fn create(
        &self,
        pack: &CompiledPack,
        pending: Option<Link>,
        d: Value,
    ) -> Result<Outcome, SyncError> {
        let id = d["id"].as_str().unwrap_or("").to_string();
        note(|n| n.pack_version = Some(pack.version.clone()));
        let view = match step::decide_create(pack, &d, &self.options(None)) {
            CreateDecision::Create(view) => view,
            CreateDecision::Filtered { rule } => return Ok(self.filtered(&id, rule)),
            CreateDecision::Failed(failure) => return self.step_failure(pack, None, &id, failure),
            CreateDecision::RaisedBySentinel => {
                // The default pack's filter says the same; this holds whatever the pack.
                tracing::debug!(incident = %id, "raised by Sentinel itself; never twinned");
                note(|n| n.reason = Some("raised by Sentinel itself; never twinned".into()));
                self.count(|s| s.filtered += 1);
                return Ok(Outcome::Filtered);
            }
        };
        let sid = sentinel_id(&self.opts.tenant, &id);
        if pending.is_none() {
            // Microsoft's Defender XDR connector is usually on already: its incident is
            // the twin, and a second one would split the analysts' work.
            match self.sentinel.connector_twin(&id).await {
                Ok(Some(s)) => return self.adopt_connector_twin(pack, d, s).await,
                Ok(None) => {}
                // The service refuses the lookup itself (an api-version or gateway that
                // does not filter on providerIncidentId): stopping every create would
                // lose more than a possible second incident, so create, and say so.
                Err(ClientError::Permanent {
                    status, message, ..
                }) => {
                    if !self
                        .connector_lookup_refused
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::error!(status, %message, "Sentinel refuses to look incidents up by providerIncidentId: incidents Microsoft's connector made cannot be found, so twins are created beside them");
                    }
                }
                Err(e) => return self.client_failure(pack, Side::Defender, &id, e),
            }
        }
        if let Some(pending) = pending {
            // A create was sent before a crash: if it landed, adopt the twin with no
            // bases, so every difference is a conflict the rules settle by time.
            match self.sentinel.get(&sid).await {
                Ok(Some(s)) => {
                    let link = Link {
                        created: true,
                        ..pending
                    };
                    return self.reconcile(pack, link, d, s, true).await;
                }
                Ok(None) => {}
                Err(e) => return self.client_failure(pack, Side::Defender, &id, e),
            }
        }
        self.state.begin_create(&id, &sid)?;
        let s = match self
            .sentinel
            .put(&sid, &Value::Object(view.clone()), None)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.count_write(Side::Sentinel, "error");
                return self.client_failure(pack, Side::Defender, &id, e);
            }
        };
        self.count_write(Side::Sentinel, "ok");
        let (link, audit) = step::settle_create(pack, &d, &sid, &view, &s, &now_rfc3339());
        self.state.commit(&Commit {
            link: Some(link.clone()),
            audit: vec![audit],
            comments: Vec::new(),
            resolved: vec![(Side::Defender, id)],
        })?;
        self.keep_sentinel_copy(&link, &s)?;
        self.count(|s| s.created += 1);
        self.metrics
            .inc(metrics::CHANGES, &[("side", Side::Defender.name())]);
        note(|n| {
            n.action = Some("create");
            n.sentinel_name = Some(link.sentinel_id.clone());
            n.to_sentinel = sorted_names(&view);
            for rule in step::map_rules(pack) {
                n.rule(&rule);
            }
        });
        // A new twin has no comments yet: no need to list them.
        let comments = self
            .sync_comments(pack, &link, &d, Some(Vec::new()), Some(0), true)
            .await?;
        note(|n| n.comments += comments);
        Ok(Outcome::Synced {
            writes: 1 + comments,
        })
    }

    /// Links a Defender incident to the Sentinel incident Microsoft's connector made for
    /// it, with no bases: every difference is then a conflict the direction rules settle
    /// (the default pack leaves the connector's fields to the connector).
    async fn adopt_connector_twin(
        &self,
        pack: &CompiledPack,
        d: Value,
        s: Value,
    ) -> Result<Outcome, SyncError> {
        let id = d["id"].as_str().unwrap_or("").to_string();
        let Some(name) = s["name"].as_str().map(str::to_string) else {
            let failure = Failure {
                kind: "rejected",
                reason: "Sentinel listed a connector incident without a name".into(),
                rule: None,
            };
            return self.dead_letter(pack, Side::Defender, &id, failure);
        };
        let now = now_rfc3339();
        let link = Link {
            defender_id: id.clone(),
            sentinel_id: name.clone(),
            created: true,
            defender_version: None,
            sentinel_version: None,
            base_defender: Fields::new(),
            base_sentinel: Fields::new(),
            synced_at: Some(now.clone()),
            swept_at: None,
        };
        let audit = AuditRow {
            id: 0,
            at: now,
            defender_id: id.clone(),
            sentinel_id: name.clone(),
            side: Side::Sentinel,
            action: "link".into(),
            field: None,
            old: Value::Null,
            new: serde_json::json!({
                "providerName": s["properties"]["providerName"],
                "providerIncidentId": s["properties"]["providerIncidentId"],
            }),
            rule: None,
            pack_version: pack.version.clone(),
        };
        self.state.commit(&Commit {
            link: Some(link.clone()),
            audit: vec![audit],
            comments: Vec::new(),
            resolved: vec![(Side::Defender, id.clone())],
        })?;
        tracing::info!(incident = %id, sentinel = %name, "linked to the Sentinel incident Microsoft's connector made");
        note(|n| {
            n.twin = Some("connector");
            n.sentinel_name = Some(name.clone());
        });
        self.count(|st| st.linked_to_connector += 1);
        self.reconcile(pack, link, d, s, true).await
    }

    /// Reads nothing and decides nothing itself: [`step::decide`] plans, this sends the
    /// writes (Sentinel first: its etag makes the PUT conditional on what was planned
    /// from), [`step::settle`] says what to commit. Comments are read when their digest
    /// moved, or `always` (a sweep, a retry, a hint: reads on purpose).
    async fn reconcile(
        &self,
        pack: &CompiledPack,
        mut link: Link,
        mut d: Value,
        mut s: Value,
        always: bool,
    ) -> Result<Outcome, SyncError> {
        let id = link.defender_id.clone();
        note(|n| {
            n.defender_id = Some(id.clone());
            n.sentinel_name = Some(link.sentinel_id.clone());
            n.pack_version = Some(pack.version.clone());
        });
        let options = self.options(Some(&link));
        let mut attempts = 0;
        let mut written_before = 0;
        let written = loop {
            attempts += 1;
            let input = step::Input {
                pack,
                link: &link,
                defender: &d,
                sentinel: &s,
                options: &options,
            };
            let planned = match step::decide(&input) {
                Decision::Write(planned) => planned,
                Decision::Filtered { rule } => return Ok(self.filtered(&id, rule)),
                Decision::Failed(failure) => {
                    return self.step_failure(pack, Some(&link), &id, failure)
                }
            };
            let mut s_after = None;
            if let Some(body) = planned.sentinel_body() {
                match self
                    .sentinel
                    .put(&link.sentinel_id, &body, s["etag"].as_str())
                    .await
                {
                    Ok(updated) => {
                        self.count_write(Side::Sentinel, "ok");
                        s_after = Some(updated);
                    }
                    Err(ClientError::Conflict { .. }) if attempts < 4 => {
                        // Someone wrote in between: re-read and plan again, never overwrite.
                        self.count(|st| st.etag_retries += 1);
                        self.count_write(Side::Sentinel, "conflict");
                        match self.sentinel.get(&link.sentinel_id).await {
                            Ok(Some(fresh)) => {
                                s = fresh;
                                continue;
                            }
                            Ok(None) => return self.dead_letter_twin_gone(pack, &link),
                            Err(e) => return self.client_failure(pack, Side::Defender, &id, e),
                        }
                    }
                    Err(e) => {
                        self.count_write(Side::Sentinel, "error");
                        return self.client_failure(pack, Side::Defender, &id, e);
                    }
                }
            }
            let mut failure = None;
            let patched = match planned.defender_body() {
                None => None,
                Some(body) => match self.graph.patch(&id, body).await {
                    Ok(response) => {
                        self.count_write(Side::Defender, "ok");
                        Some(response)
                    }
                    Err(e) => {
                        self.count_write(Side::Defender, "error");
                        failure = Some(e);
                        None
                    }
                },
            };
            let answers = step::Answers {
                sentinel: s_after.as_ref(),
                defender: match (&patched, &failure) {
                    (Some(Some(response)), _) => DefenderAnswer::Patched(response),
                    (Some(None), _) => DefenderAnswer::NoContent,
                    (None, Some(_)) => DefenderAnswer::Failed,
                    (None, None) => DefenderAnswer::NotSent,
                },
            };
            let settled = step::settle(&input, &planned, answers, &now_rfc3339());
            self.apply_tally(&settled.tally);
            if settled.link != link || !settled.audit.is_empty() {
                self.state.commit(&Commit {
                    link: Some(settled.link.clone()),
                    audit: settled.audit,
                    comments: Vec::new(),
                    resolved: if failure.is_none() {
                        vec![(Side::Defender, id.clone())]
                    } else {
                        Vec::new()
                    },
                })?;
            }
            self.keep_sentinel_copy(&settled.link, s_after.as_ref().unwrap_or(&s))?;
            if let Some(e) = failure {
                return self.client_failure(pack, Side::Defender, &id, e);
            }
            if let Some(after) = settled.defender_after {
                d = after;
                self.refresh_defender_copy(&d)?;
            }
            if settled.derived_pending && attempts < 4 {
                // Our PATCH changed how an unwritten field renders: decide again from
                // what it left (committed above), so the field flows now rather than
                // costing the next poll a re-read of both sides.
                written_before += settled.tally.writes;
                link = settled.link;
                if let Some(after) = s_after {
                    s = after;
                }
                continue;
            }
            break written_before + settled.tally.writes;
        };
        let count = sentinel_comment_count(&s);
        let comments = self
            .sync_comments(pack, &link, &d, None, count, always)
            .await?;
        note(|n| n.comments += comments);
        let total = written + comments;
        Ok(if total == 0 {
            Outcome::Unchanged
        } else {
            Outcome::Synced { writes: total }
        })
    }

    fn count_write(&self, side: Side, result: &str) {
        self.metrics.inc(
            metrics::WRITES,
            &[("side", side.name()), ("result", result)],
        );
    }

    /// Counters, metrics and the event's fields for what a settled sync wrote.
    fn apply_tally(&self, tally: &step::Tally) {
        self.count(|st| {
            for flow in &tally.conflicts {
                st.conflicts += 1;
                match flow {
                    Flow::ToSentinel => st.conflicts_to_sentinel += 1,
                    Flow::ToDefender => st.conflicts_to_defender += 1,
                    Flow::Skip => st.conflicts_skipped += 1,
                    Flow::Merge => st.conflicts_merged += 1,
                }
            }
            if tally.sentinel_updated {
                st.updates_to_sentinel += 1;
                st.fields_to_sentinel += tally.fields_to_sentinel;
            }
            if tally.defender_updated {
                st.updates_to_defender += 1;
                st.fields_to_defender += tally.fields_to_defender;
            }
        });
        for lag in &tally.lags {
            self.metrics.observe(metrics::SYNC_LAG, &[], *lag);
        }
        // One per incident and direction: a change read from one side and written to the
        // other, however many fields it touched.
        for (updated, from) in [
            (tally.sentinel_updated, Side::Defender),
            (tally.defender_updated, Side::Sentinel),
        ] {
            if updated {
                self.metrics.inc(metrics::CHANGES, &[("side", from.name())]);
            }
        }
        note(|n| {
            n.to_sentinel.extend(tally.to_sentinel.iter().cloned());
            n.to_defender.extend(tally.to_defender.iter().cloned());
            for rule in &tally.rules {
                n.rule(rule);
            }
        });
    }

    fn dead_letter_twin_gone(
        &self,
        pack: &CompiledPack,
        link: &Link,
    ) -> Result<Outcome, SyncError> {
        let failure = Failure {
            kind: "twin_missing",
            reason: format!(
                "the Sentinel twin {} disappeared during the sync",
                link.sentinel_id
            ),
            rule: None,
        };
        self.dead_letter(pack, Side::Defender, &link.defender_id, failure)
    }
}

/// The fields a create wrote, sorted (for its event).
fn sorted_names(fields: &Fields) -> Vec<String> {
    let mut names: Vec<String> = fields.keys().cloned().collect();
    names.sort();
    names
}
