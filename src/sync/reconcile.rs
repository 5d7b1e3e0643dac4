//! One incident's sync: create its twin, or compare both sides with their bases, ask
//! the rules, write what the plan says, copy new comments, and commit — or dead-letter
//! the incident with its reason and let the others go on.
//!
//! Invariants: every rule call for one incident uses the one pack taken at its start;
//! bases and versions are committed only for acknowledged writes, together with their
//! audit rows; a version is stored only when it is provably the state our write left
//! (otherwise the next poll re-reads, which costs a read, never a lost change).

use super::engine::{defender_stamp, now_rfc3339, sentinel_stamp, Syncer};
use super::events::{self, note, Note};
use super::fields::{properties, sentinel_id, sentinel_put_body};
use super::plan::{detect, merge_set, next_bases, plan, Acknowledged, Decided, Views};
use crate::client::ClientError;
use crate::metrics;
use crate::model::{FieldChange, Flow, Side};
use crate::rules::{CompiledPack, RuleError, RunOptions, Twin, Verdict};
use crate::state::{AuditRow, Commit, DeadLetter, Fields, Link, StateError};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::sync::Arc;

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

enum Step<T> {
    Go(T),
    Stop(Outcome),
}

fn lag_secs(changed_at: Option<&str>) -> Option<f64> {
    let t = DateTime::parse_from_rfc3339(changed_at?).ok()?;
    Some(((Utc::now() - t.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0).max(0.0))
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
        let pack = self.pack.current();
        match self.state.link(&id)? {
            Some(link) if link.created => {
                if !force && link.defender_version.as_deref() == defender_stamp(&d) {
                    return Ok(Outcome::Unchanged);
                }
                note(|n| n.sentinel_name = Some(link.sentinel_id.clone()));
                let s = match self.sentinel.get(&link.sentinel_id).await {
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
                self.reconcile(&pack, link, d, s, None).await
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
        events::observe(Side::Sentinel, start, self.sync_sentinel(s, force)).await
    }

    async fn sync_sentinel(&self, s: Value, force: bool) -> Result<Outcome, SyncError> {
        self.count(|st| st.incidents_seen += 1);
        let Some(name) = s["name"].as_str() else {
            return Ok(Outcome::NotOurs);
        };
        let Some(link) = self.state.link_by_sentinel(name)? else {
            return Ok(Outcome::NotOurs);
        };
        note(|n| {
            n.sentinel_name = Some(name.to_string());
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
        let d = match self.graph.get(&link.defender_id).await {
            Ok(Some(d)) => d,
            Ok(None) => return self.dead_letter_gone(&link.defender_id),
            Err(e) => return self.client_failure(&pack, Side::Sentinel, name, e),
        };
        self.reconcile(&pack, link, d, s, None).await
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

    /// Filter → map → enrich on a Defender incident: its synced fields, or a stop.
    fn render_defender(
        &self,
        pack: &CompiledPack,
        d: &Value,
        link: Option<&Link>,
    ) -> Result<Step<Fields>, SyncError> {
        let id = d["id"].as_str().unwrap_or("");
        note(|n| n.pack_version = Some(pack.version.clone()));
        match pack.run_pipeline(Arc::new(d.clone()), Side::Defender, &self.options(link)) {
            Ok(outcome) => match outcome.verdict {
                Verdict::Synced { body } => Ok(Step::Go(properties(&body))),
                Verdict::Filtered { rule } => {
                    tracing::debug!(incident = id, rule, "filtered out");
                    note(|n| {
                        n.rule(&rule);
                        n.reason = Some(format!("filter rule {rule}"));
                    });
                    self.count(|s| s.filtered += 1);
                    Ok(Step::Stop(Outcome::Filtered))
                }
            },
            Err(e) => Ok(Step::Stop(self.dead_letter(
                pack,
                Side::Defender,
                id,
                e.into(),
            )?)),
        }
    }

    async fn create(
        &self,
        pack: &CompiledPack,
        pending: Option<Link>,
        d: Value,
    ) -> Result<Outcome, SyncError> {
        let id = d["id"].as_str().unwrap_or("").to_string();
        let view = match self.render_defender(pack, &d, None)? {
            Step::Go(view) => view,
            Step::Stop(outcome) => return Ok(outcome),
        };
        if raised_by_sentinel(&d) {
            // In the unified portal Sentinel's own incidents are listed by Graph too:
            // a twin of one would be listed again, and twinned again, without end. A
            // hard rule, not policy (the default pack's filter says the same).
            tracing::debug!(incident = %id, "raised by Sentinel itself; never twinned");
            note(|n| n.reason = Some("raised by Sentinel itself; never twinned".into()));
            self.count(|s| s.filtered += 1);
            return Ok(Outcome::Filtered);
        }
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
                    return self.reconcile(pack, link, d, s, None).await;
                }
                Ok(None) => {}
                Err(e) => return self.client_failure(pack, Side::Defender, &id, e),
            }
        }
        self.state.begin_create(&id, &sid)?;
        self.metrics
            .inc(metrics::API_CALLS, &[("side", "sentinel")]);
        let s = match self
            .sentinel
            .put(&sid, &Value::Object(view.clone()), None)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.metrics.inc(
                    metrics::WRITES,
                    &[("side", "sentinel"), ("result", "error")],
                );
                return self.client_failure(pack, Side::Defender, &id, e);
            }
        };
        self.metrics
            .inc(metrics::WRITES, &[("side", "sentinel"), ("result", "ok")]);
        // The bases a reconcile would store right after this create.
        let after = properties(&s);
        let views = Views {
            defender: &view,
            sentinel: &after,
            defender_changed_at: None,
            sentinel_changed_at: None,
        };
        let (base_defender, base_sentinel) = next_bases(
            &views,
            &Fields::new(),
            &Fields::new(),
            &super::plan::Plan::default(),
            Acknowledged::default(),
        );
        let now = now_rfc3339();
        let link = Link {
            defender_id: id.clone(),
            sentinel_id: sid.clone(),
            created: true,
            defender_version: defender_stamp(&d).map(str::to_string),
            sentinel_version: s["etag"].as_str().map(str::to_string),
            base_defender,
            base_sentinel,
            synced_at: Some(now.clone()),
            swept_at: None,
        };
        let written_fields = audit_fields(&view);
        let audit = AuditRow {
            id: 0,
            at: now,
            defender_id: id.clone(),
            sentinel_id: sid,
            side: Side::Sentinel,
            action: "create".into(),
            field: None,
            old: Value::Null,
            new: Value::Object(view),
            rule: Some(map_rules(pack)),
            pack_version: pack.version.clone(),
        };
        self.state.commit(&Commit {
            link: Some(link.clone()),
            audit: vec![audit],
            comments: Vec::new(),
            resolved: vec![(Side::Defender, id)],
        })?;
        self.count(|s| s.created += 1);
        note(|n| {
            n.action = Some("create");
            n.sentinel_name = Some(link.sentinel_id.clone());
            n.to_sentinel = written_fields;
            for rule in map_rules(pack).split(", ") {
                n.rule(rule);
            }
        });
        // A new twin has no comments yet: no need to list them.
        let comments = self
            .sync_comments(pack, &link, &d, Some(Vec::new()))
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
        self.reconcile(pack, link, d, s, None).await
    }

    /// Compares both sides with their bases and writes what the rules decide. `s_comments`
    /// are the Sentinel comments when already known.
    async fn reconcile(
        &self,
        pack: &CompiledPack,
        link: Link,
        mut d: Value,
        mut s: Value,
        s_comments: Option<Vec<Value>>,
    ) -> Result<Outcome, SyncError> {
        let id = link.defender_id.clone();
        note(|n| {
            n.defender_id = Some(id.clone());
            n.sentinel_name = Some(link.sentinel_id.clone());
        });
        let dview = match self.render_defender(pack, &d, Some(&link))? {
            Step::Go(view) => view,
            Step::Stop(outcome) => return Ok(outcome),
        };
        let mut attempts = 0;
        let (written, link) = loop {
            attempts += 1;
            let sview = properties(&s);
            let views = Views {
                defender: &dview,
                sentinel: &sview,
                defender_changed_at: defender_stamp(&d),
                sentinel_changed_at: sentinel_stamp(&s),
            };
            let changes = detect(&views, &link.base_defender, &link.base_sentinel);
            let decisions = match self.decide_all(pack, &changes, &d, &link) {
                Ok(decisions) => decisions,
                Err(e) => return self.dead_letter(pack, Side::Defender, &id, e.into()),
            };
            // Merged fields: what both sides will hold; the Defender form is rendered
            // from Sentinel as it will be after the merge.
            let mut merged = Fields::new();
            for (change, decided) in changes.iter().zip(&decisions) {
                if decided.flow == Flow::Merge {
                    let base = link
                        .base_defender
                        .get(&change.field)
                        .unwrap_or(&Value::Null);
                    if let Some(value) =
                        merge_set(base, &change.defender.value, &change.sentinel.value)
                    {
                        merged.insert(change.field.clone(), value);
                    }
                }
            }
            let s_planned = if merged.is_empty() {
                s.clone()
            } else {
                let mut planned = s.clone();
                for (field, value) in &merged {
                    planned["properties"][field] = value.clone();
                }
                planned
            };
            let form = if decisions
                .iter()
                .any(|x| matches!(x.flow, Flow::ToDefender | Flow::Merge))
            {
                match pack.run_pipeline(
                    Arc::new(s_planned),
                    Side::Sentinel,
                    &self.options(Some(&link)),
                ) {
                    Ok(outcome) => match outcome.verdict {
                        Verdict::Synced { body } => body.as_object().cloned(),
                        Verdict::Filtered { .. } => None,
                    },
                    Err(e) => {
                        let name = link.sentinel_id.clone();
                        return self.dead_letter(pack, Side::Sentinel, &name, e.into());
                    }
                }
            } else {
                None
            };
            let plan = plan(&changes, &decisions, &d, form.as_ref(), &merged);

            // Sentinel first: its etag makes the write conditional on what we planned from.
            let mut s_after = None;
            if !plan.sentinel.is_empty() {
                let body = sentinel_put_body(&sview, &plan.sentinel);
                self.metrics
                    .inc(metrics::API_CALLS, &[("side", "sentinel")]);
                match self
                    .sentinel
                    .put(&link.sentinel_id, &body, s["etag"].as_str())
                    .await
                {
                    Ok(updated) => {
                        self.metrics
                            .inc(metrics::WRITES, &[("side", "sentinel"), ("result", "ok")]);
                        s_after = Some(updated);
                    }
                    Err(ClientError::Conflict { .. }) if attempts < 4 => {
                        // Someone wrote in between: re-read and plan again, never overwrite.
                        self.count(|st| st.etag_retries += 1);
                        self.metrics.inc(
                            metrics::WRITES,
                            &[("side", "sentinel"), ("result", "conflict")],
                        );
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
                        self.metrics.inc(
                            metrics::WRITES,
                            &[("side", "sentinel"), ("result", "error")],
                        );
                        return self.client_failure(pack, Side::Defender, &id, e);
                    }
                }
            }
            let mut d_after = None;
            let mut d_version = defender_stamp(&d).map(str::to_string);
            let mut failure = None;
            let mut patched = None;
            if !plan.defender.is_empty() {
                self.metrics
                    .inc(metrics::API_CALLS, &[("side", "defender")]);
                match self.graph.patch(&id, &plan.defender).await {
                    Ok(Some(response)) => {
                        self.metrics
                            .inc(metrics::WRITES, &[("side", "defender"), ("result", "ok")]);
                        let merged = merge(&d, &response);
                        if let Step::Go(view) = self.render_defender(pack, &merged, Some(&link))? {
                            // The new version may be skipped by the next poll only if it
                            // is provably ours alone: nobody else changed the incident, and
                            // our write changed no field we did not write (a derived
                            // field must still flow to Sentinel from that poll).
                            let derived = renders_unwritten_change(&plan, &view, &dview);
                            if !derived && only_ours_changed(&d, &merged, &plan.defender) {
                                d_version = defender_stamp(&merged).map(str::to_string);
                            }
                            d_after = Some(view);
                        }
                        patched = Some(merged);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics.inc(
                            metrics::WRITES,
                            &[("side", "defender"), ("result", "error")],
                        );
                        failure = Some(e);
                    }
                }
            }
            let s_after_props = s_after.as_ref().map(properties);
            let (base_defender, base_sentinel) = next_bases(
                &views,
                &link.base_defender,
                &link.base_sentinel,
                &plan,
                Acknowledged {
                    sentinel_after: s_after_props.as_ref(),
                    defender_after: d_after.as_ref(),
                },
            );
            let now = now_rfc3339();
            let new_link = Link {
                defender_version: if failure.is_some() {
                    link.defender_version.clone()
                } else {
                    d_version
                },
                sentinel_version: s_after
                    .as_ref()
                    .unwrap_or(&s)
                    .get("etag")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                base_defender,
                base_sentinel,
                synced_at: Some(now.clone()),
                ..link.clone()
            };
            let mut audit = Vec::new();
            let mut writes = 0;
            // A merge plans one entry per side; it is still one conflict.
            let mut counted_conflicts = std::collections::HashSet::new();
            for f in &plan.fields {
                let acknowledged = match f.written {
                    Some(Side::Sentinel) => s_after.is_some(),
                    Some(Side::Defender) => failure.is_none(),
                    None => true,
                };
                if !acknowledged {
                    continue;
                }
                let (side, action, old, new) = match f.written {
                    Some(side) => (side, "update", f.old.clone(), f.new.clone()),
                    None => {
                        let change = changes.iter().find(|c| c.field == f.field);
                        let from = if change.is_some_and(|c| c.defender.changed) {
                            Side::Defender
                        } else {
                            Side::Sentinel
                        };
                        let (old, new) = change.map_or((Value::Null, Value::Null), |c| {
                            (
                                c.base.clone(),
                                if from == Side::Defender {
                                    c.defender.value.clone()
                                } else {
                                    c.sentinel.value.clone()
                                },
                            )
                        });
                        (from, "skip", old, new)
                    }
                };
                if f.conflict && counted_conflicts.insert(f.field.clone()) {
                    self.count(|st| {
                        st.conflicts += 1;
                        match f.flow {
                            Flow::ToSentinel => st.conflicts_to_sentinel += 1,
                            Flow::ToDefender => st.conflicts_to_defender += 1,
                            Flow::Skip => st.conflicts_skipped += 1,
                            Flow::Merge => st.conflicts_merged += 1,
                        }
                    });
                }
                if let Some(side) = f.written {
                    writes += 1;
                    note(|n| {
                        match side {
                            Side::Sentinel => n.to_sentinel.push(f.field.clone()),
                            Side::Defender => n.to_defender.push(f.field.clone()),
                        }
                        if let Some(rule) = &f.rule {
                            n.rule(rule);
                        }
                    });
                    let source_stamp = match side {
                        Side::Sentinel => defender_stamp(&d),
                        Side::Defender => sentinel_stamp(&s),
                    };
                    // A link without bases (a twin adopted from Microsoft's connector, or
                    // after a lost create) writes no change of the moment: its stamp can
                    // be years old, and would not be a lag.
                    let first_sync = link.base_defender.is_empty() && link.base_sentinel.is_empty();
                    if let Some(lag) = lag_secs(source_stamp).filter(|_| !first_sync) {
                        self.metrics.observe(metrics::SYNC_LAG, &[], lag);
                    }
                    self.metrics
                        .inc(metrics::CHANGES, &[("side", side.other().name())]);
                }
                audit.push(AuditRow {
                    id: 0,
                    at: now.clone(),
                    defender_id: id.clone(),
                    sentinel_id: link.sentinel_id.clone(),
                    side,
                    action: action.into(),
                    field: Some(if f.conflict {
                        format!("{} (conflict)", f.field)
                    } else {
                        f.field.clone()
                    }),
                    old,
                    new,
                    rule: f.rule.clone(),
                    pack_version: pack.version.clone(),
                });
            }
            let to_s = plan
                .fields
                .iter()
                .filter(|f| f.written == Some(Side::Sentinel))
                .count() as u64;
            let to_d = plan
                .fields
                .iter()
                .filter(|f| f.written == Some(Side::Defender))
                .count() as u64;
            self.count(|st| {
                if s_after.is_some() {
                    st.updates_to_sentinel += 1;
                    st.fields_to_sentinel += to_s;
                }
                if !plan.defender.is_empty() && failure.is_none() {
                    st.updates_to_defender += 1;
                    st.fields_to_defender += to_d;
                }
            });
            let changed_link = new_link != link;
            if changed_link || !audit.is_empty() {
                self.state.commit(&Commit {
                    link: Some(new_link.clone()),
                    audit,
                    comments: Vec::new(),
                    resolved: if failure.is_none() {
                        vec![(Side::Defender, id.clone())]
                    } else {
                        Vec::new()
                    },
                })?;
            }
            if let Some(e) = failure {
                return self.client_failure(pack, Side::Defender, &id, e);
            }
            if let Some(merged) = patched {
                d = merged;
            }
            break (writes, new_link);
        };
        let comments = self.sync_comments(pack, &link, &d, s_comments).await?;
        note(|n| n.comments += comments);
        let total = written + comments;
        Ok(if total == 0 {
            Outcome::Unchanged
        } else {
            Outcome::Synced { writes: total }
        })
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

    fn decide_all(
        &self,
        pack: &CompiledPack,
        changes: &[FieldChange],
        d: &Value,
        link: &Link,
    ) -> Result<Vec<Decided>, RuleError> {
        let incident = Arc::new(d.clone());
        let opts = self.options(Some(link));
        changes
            .iter()
            .map(|change| {
                pack.decide(change, incident.clone(), None, &opts)
                    .map(|decision| Decided {
                        flow: decision.flow,
                        rule: decision.rule,
                    })
            })
            .collect()
    }
}

/// Whether every alert of a Defender incident came from Sentinel (the unified portal
/// lists Sentinel's own incidents in Graph). An incident without alerts is not.
fn raised_by_sentinel(d: &Value) -> bool {
    d["alerts"].as_array().is_some_and(|alerts| {
        !alerts.is_empty()
            && alerts.iter().all(|a| {
                a["serviceSource"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("microsoftSentinel"))
            })
    })
}

/// The fields a create wrote, sorted (for its event).
fn audit_fields(fields: &Fields) -> Vec<String> {
    let mut names: Vec<String> = fields.keys().cloned().collect();
    names.sort();
    names
}

/// The names of the map rules, for a create's audit row.
fn map_rules(pack: &CompiledPack) -> String {
    pack.stage(crate::model::Stage::Map)
        .map(|r| r.name.clone())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Defender incident with a PATCH response laid over it (the response has no alerts).
fn merge(before: &Value, response: &Value) -> Value {
    let mut merged = before.clone();
    if let (Some(target), Some(fields)) = (merged.as_object_mut(), response.as_object()) {
        for (k, v) in fields {
            if !k.starts_with("@odata") {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    merged
}

/// True when a field the plan did not write to Defender renders differently after the
/// write than before it.
fn renders_unwritten_change(plan: &super::plan::Plan, after: &Fields, before: &Fields) -> bool {
    let written = |field: &str| {
        plan.fields
            .iter()
            .any(|f| f.field == field && f.written == Some(Side::Defender))
    };
    after
        .keys()
        .chain(before.keys())
        .any(|k| !written(k) && after.get(k) != before.get(k))
}

/// True when the PATCH response differs from what we read only in what we wrote and
/// the service's own stamps: then its new version is ours alone and may be skipped
/// when the next poll returns it.
fn only_ours_changed(before: &Value, after: &Value, patch: &Map<String, Value>) -> bool {
    const STAMPS: [&str; 2] = ["lastUpdateDateTime", "lastModifiedBy"];
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return false;
    };
    a.iter()
        .all(|(k, v)| patch.contains_key(k) || STAMPS.contains(&k.as_str()) || b.get(k) == Some(v))
}
