//! One incident's sync, decided without I/O: the atuin pattern. `reconcile` is the shell
//! around it: it reads both sides, asks [`decide`] what to write, sends those writes,
//! and hands the services' answers to [`settle`], which says what to commit (the next
//! link, its bases and versions, the audit rows) and what to count. The create of a new
//! twin has the same two halves, [`decide_create`] and [`settle_create`].
//!
//! Everything here is a function of its arguments: the pack (rule calls are CPU work the
//! sandbox bounds), the link, both incidents, the run options and the time `now`. No
//! clock, no network, no state file, so the property test drives the very sequence the
//! engine runs, rules and merges included, with generated edits.
//!
//! Invariants (each is what the property test checks): after an acknowledged write and
//! its settled bases, deciding again finds nothing to write (no echo); a write that was
//! not acknowledged keeps its old bases, so it is planned again; a version is stored only
//! when it is provably the state our write left, never one that may hide someone else's
//! change.
//!
//! Change stamps are read once, here ([`Stamps::read`]), into instants: the direction
//! rules see both in one fixed-width form (`model::stamp_text`) and lags are measured
//! from them. A stamp that is not an RFC 3339 time fails its incident
//! (`unreadable_stamp`) instead of being guessed at. The stamps as sent stay what a
//! link stores as versions: those are compared for equality with the same service's
//! next listing, where a differently written instant costs a re-read, never a skip.

use super::fields::{properties, sentinel_put_body, COUPLED};
use super::plan::{detect, merge_set, next_bases, plan, Acknowledged, Decided, Plan, Views};
use crate::model::{read_stamp, FieldChange, Flow, Side, Stage, UnreadableStamp};
use crate::problem::clip_display;
use crate::rules::{CompiledPack, RuleError, RunOptions, Verdict};
use crate::state::{AuditRow, Fields, Link};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Defender's change stamp of an incident, as sent (its version).
pub fn defender_stamp(incident: &Value) -> Option<&str> {
    incident[DEFENDER_STAMP].as_str()
}

/// Sentinel's change stamp of an incident, as sent.
pub fn sentinel_stamp(resource: &Value) -> Option<&str> {
    resource["properties"][SENTINEL_STAMP].as_str()
}

const DEFENDER_STAMP: &str = "lastUpdateDateTime";
const SENTINEL_STAMP: &str = "lastModifiedTimeUtc";

/// Why an incident cannot be synced now: it becomes a dead letter with this reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The incident the dead letter is filed under (a rule failing on the Sentinel side
    /// is filed under the Sentinel incident).
    pub side: Side,
    pub kind: &'static str,
    pub reason: String,
    pub rule: Option<String>,
}

impl Failure {
    fn rule_error(side: Side, e: RuleError) -> Self {
        Failure {
            side,
            kind: "rule_error",
            reason: e.to_string(),
            rule: e.rule.clone(),
        }
    }
}

/// Both sides' change stamps as instants, read once per decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps {
    pub defender: Option<DateTime<Utc>>,
    pub sentinel: Option<DateTime<Utc>>,
}

impl Stamps {
    /// A missing stamp stays `None` (the rules see `()`, which `time_cmp` documents as
    /// sorting before any time). One that is there but does not read is the incident's
    /// failure, filed under its side: taken as missing it would lose every conflict, and
    /// any other guess could let the older change win one.
    pub fn read(defender: &Value, sentinel: &Value) -> Result<Stamps, Failure> {
        let read = |side: Side, field: &str, value: &Value| {
            let stamp = match value {
                Value::Null => return Ok(None),
                Value::String(text) => read_stamp(text),
                // A number or an object is there, and no time either.
                other => Err(UnreadableStamp {
                    text: clip_display(other),
                }),
            };
            stamp.map(Some).map_err(|e| Failure {
                side,
                kind: "unreadable_stamp",
                reason: format!(
                    "{field} {e}: its changes cannot be ordered against the other side's"
                ),
                rule: None,
            })
        };
        Ok(Stamps {
            defender: read(Side::Defender, DEFENDER_STAMP, &defender[DEFENDER_STAMP])?,
            sentinel: read(
                Side::Sentinel,
                "properties.lastModifiedTimeUtc",
                &sentinel["properties"][SENTINEL_STAMP],
            )?,
        })
    }
}

/// What the rules made of a Defender incident: its synced fields, or why it stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    Fields(Fields),
    Filtered { rule: String },
    Failed(Failure),
}

/// Filter → map → enrich on a Defender incident.
pub fn render_defender(pack: &CompiledPack, d: &Value, options: &RunOptions) -> Rendered {
    match pack.run_pipeline(Arc::new(d.clone()), Side::Defender, options) {
        Ok(outcome) => match outcome.verdict {
            Verdict::Synced { body } => Rendered::Fields(properties(&body)),
            Verdict::Filtered { rule } => Rendered::Filtered { rule },
        },
        Err(e) => Rendered::Failed(Failure::rule_error(Side::Defender, e)),
    }
}

/// One linked incident as read from both services.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    pub pack: &'a CompiledPack,
    pub link: &'a Link,
    /// The Graph incident.
    pub defender: &'a Value,
    /// The ARM incident resource (`name`, `etag`, `properties`).
    pub sentinel: &'a Value,
    pub options: &'a RunOptions,
}

/// What [`decide`] says about one linked incident.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Filtered { rule: String },
    Failed(Failure),
    Write(Box<Planned>),
}

/// The writes for one linked incident and what they were planned from.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The Defender incident as the rules render it (Sentinel vocabulary).
    pub defender_view: Fields,
    /// The Sentinel incident's properties.
    pub sentinel_view: Fields,
    pub changes: Vec<FieldChange>,
    pub decisions: Vec<Decided>,
    pub plan: Plan,
    /// The stamps the changes were detected with.
    pub stamps: Stamps,
}

impl Planned {
    /// The Sentinel PUT body, when the plan writes Sentinel (conditional on the etag read).
    pub fn sentinel_body(&self) -> Option<Value> {
        (!self.plan.sentinel.is_empty())
            .then(|| sentinel_put_body(&self.sentinel_view, &self.plan.sentinel))
    }

    /// The Defender PATCH body, when the plan writes Defender.
    pub fn defender_body(&self) -> Option<&Map<String, Value>> {
        (!self.plan.defender.is_empty()).then_some(&self.plan.defender)
    }

    fn views(&self) -> Views<'_> {
        Views {
            defender: &self.defender_view,
            sentinel: &self.sentinel_view,
            defender_changed_at: self.stamps.defender,
            sentinel_changed_at: self.stamps.sentinel,
        }
    }
}

/// Renders both sides, detects what changed since the bases, asks the direction rules
/// about every change, computes merges, renders the Defender form of the Sentinel side
/// when anything flows to Defender, and plans the writes.
pub fn decide(input: &Input) -> Decision {
    let Input {
        pack,
        link,
        options,
        ..
    } = *input;
    let defender_view = match render_defender(pack, input.defender, options) {
        Rendered::Fields(view) => view,
        Rendered::Filtered { rule } => return Decision::Filtered { rule },
        Rendered::Failed(failure) => return Decision::Failed(failure),
    };
    let stamps = match Stamps::read(input.defender, input.sentinel) {
        Ok(stamps) => stamps,
        Err(failure) => return Decision::Failed(failure),
    };
    let sentinel_view = properties(input.sentinel);
    let views = Views {
        defender: &defender_view,
        sentinel: &sentinel_view,
        defender_changed_at: stamps.defender,
        sentinel_changed_at: stamps.sentinel,
    };
    let changes = detect(&views, &link.base_defender, &link.base_sentinel);
    let incident = Arc::new(input.defender.clone());
    let decisions: Result<Vec<Decided>, RuleError> = changes
        .iter()
        .map(|change| {
            pack.decide(change, incident.clone(), None, options)
                .map(|decision| Decided {
                    flow: decision.flow,
                    rule: decision.rule,
                })
        })
        .collect();
    let decisions = match decisions {
        Ok(decisions) => decisions,
        Err(e) => return Decision::Failed(Failure::rule_error(Side::Defender, e)),
    };
    if let Some(failure) = split_pair(&changes, &decisions) {
        return Decision::Failed(failure);
    }
    // Merged fields: what both sides will hold. Each side's additions and removals are
    // judged against that side's own base.
    let mut merged = Fields::new();
    for (change, decided) in changes.iter().zip(&decisions) {
        if decided.flow == Flow::Merge {
            if let Some(value) = merge_set(
                &change.defender.base,
                &change.defender.value,
                &change.sentinel.value,
            ) {
                merged.insert(change.field.clone(), value);
            }
        }
    }
    // The Defender form is rendered from Sentinel as it will be after the merge.
    let form = if decisions
        .iter()
        .any(|x| matches!(x.flow, Flow::ToDefender | Flow::Merge))
    {
        let mut planned = input.sentinel.clone();
        for (field, value) in &merged {
            planned["properties"][field] = value.clone();
        }
        match pack.run_pipeline(Arc::new(planned), Side::Sentinel, options) {
            Ok(outcome) => match outcome.verdict {
                Verdict::Synced { body } => body.as_object().cloned(),
                Verdict::Filtered { .. } => None,
            },
            Err(e) => return Decision::Failed(Failure::rule_error(Side::Sentinel, e)),
        }
    } else {
        None
    };
    let plan = plan(&changes, &decisions, input.defender, form.as_ref(), &merged);
    Decision::Write(Box::new(Planned {
        defender_view,
        sentinel_view,
        changes,
        decisions,
        plan,
        stamps,
    }))
}

/// A coupled pair ([`COUPLED`]) whose members the direction rules send different ways
/// would be written half from each side: a pair no analyst chose, or one Sentinel
/// refuses. That is the incident's failure, naming both decisions, rather than a write.
/// Members both sides already agree on are left out: their flow writes nothing.
fn split_pair(changes: &[FieldChange], decisions: &[Decided]) -> Option<Failure> {
    for group in COUPLED {
        let mut members = changes
            .iter()
            .zip(decisions)
            .filter(|(c, _)| group.contains(&c.field.as_str()))
            .filter(|(c, _)| c.defender.value != c.sentinel.value);
        let Some((first, first_decided)) = members.next() else {
            continue;
        };
        if let Some((other, other_decided)) = members.find(|(_, d)| d.flow != first_decided.flow) {
            let by = |d: &Decided| d.rule.as_deref().unwrap_or("no rule").to_string();
            return Some(Failure {
                side: Side::Defender,
                kind: "split_pair",
                reason: format!(
                    "the direction rules send `{}` {} ({}) but `{}` {} ({}): both services hold {} \
                     as one pair, so its members must flow the same way",
                    first.field,
                    first_decided.flow.name(),
                    by(first_decided),
                    other.field,
                    other_decided.flow.name(),
                    by(other_decided),
                    group.join(" + "),
                ),
                rule: other_decided
                    .rule
                    .clone()
                    .or_else(|| first_decided.rule.clone()),
            });
        }
    }
    None
}

/// How Graph answered the PATCH, if one was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefenderAnswer<'a> {
    NotSent,
    /// Acknowledged, with the incident's changed properties.
    Patched(&'a Value),
    /// Acknowledged without a body (`204`): nothing to learn the new version from.
    NoContent,
    /// Not acknowledged: the writes are planned again next time.
    Failed,
}

/// What the services answered to a [`Planned`]'s writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answers<'a> {
    /// The Sentinel resource after an acknowledged PUT; `None`: not sent, or failed.
    pub sentinel: Option<&'a Value>,
    pub defender: DefenderAnswer<'a>,
}

/// What one settled sync commits and counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The link to store (bases, versions, `synced_at`).
    pub link: Link,
    pub audit: Vec<AuditRow>,
    /// The Defender incident after an acknowledged PATCH (the response over the read).
    pub defender_after: Option<Value>,
    /// Our PATCH alone changed the incident, but it changed how a field we did not
    /// write renders (a note derived from the classification): deciding again from
    /// `defender_after` now syncs that field, instead of the next poll re-reading the
    /// incident for it. False when anyone else may have changed it too.
    pub derived_pending: bool,
    pub tally: Tally,
}

/// The counters and log fields a settled sync adds (the shell applies them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Field writes acknowledged.
    pub writes: usize,
    /// The flow of every conflicted field, once per field (a merge plans both sides).
    pub conflicts: Vec<Flow>,
    pub to_sentinel: Vec<String>,
    pub to_defender: Vec<String>,
    /// The rules behind the acknowledged writes, in plan order.
    pub rules: Vec<String>,
    /// Seconds from each written change on its source side to `now` (a link without
    /// bases records none: its stamps can be years old).
    pub lags: Vec<f64>,
    pub sentinel_updated: bool,
    pub defender_updated: bool,
    pub fields_to_sentinel: u64,
    pub fields_to_defender: u64,
}

/// Turns the services' answers into what to commit: the bases each acknowledged write
/// left behind, old bases for what was not acknowledged, the versions that may be
/// skipped next time, and an audit row per field decided.
pub fn settle(input: &Input, planned: &Planned, answers: Answers, now: &str) -> Settled {
    let Input { pack, link, .. } = *input;
    let plan = &planned.plan;
    let mut derived_pending = false;
    let (defender_after, defender_view_after, defender_version) = match answers.defender {
        DefenderAnswer::Patched(response) => {
            let merged = merge_patch_response(input.defender, response);
            let mut version = defender_stamp(input.defender).map(str::to_string);
            // A rendering that fails now leaves the write unacknowledged for the bases: the
            // next poll renders again (and dead-letters if the rules still fail).
            let view = match render_defender(pack, &merged, input.options) {
                Rendered::Fields(view) => {
                    // The new version may be skipped by the next poll only if it is
                    // provably ours alone: nobody else changed the incident, and our write
                    // changed no field we did not write (a derived field must still flow
                    // to Sentinel: from a second decision in the same reconcile when the
                    // change is ours alone, `derived_pending`, else from that poll).
                    let derived = renders_unwritten_change(plan, &view, &planned.defender_view);
                    let ours = only_ours_changed(input.defender, &merged, &plan.defender);
                    if !derived && ours {
                        version = defender_stamp(&merged).map(str::to_string);
                    }
                    derived_pending = derived && ours;
                    Some(view)
                }
                _ => None,
            };
            (Some(merged), view, version)
        }
        DefenderAnswer::NoContent | DefenderAnswer::NotSent => (
            None,
            None,
            defender_stamp(input.defender).map(str::to_string),
        ),
        DefenderAnswer::Failed => (None, None, None),
    };
    let defender_failed = answers.defender == DefenderAnswer::Failed;
    let sentinel_after_view = answers.sentinel.map(properties);
    let (base_defender, base_sentinel) = next_bases(
        &planned.views(),
        &link.base_defender,
        &link.base_sentinel,
        plan,
        Acknowledged {
            sentinel_after: sentinel_after_view.as_ref(),
            defender_after: defender_view_after.as_ref(),
        },
    );
    // A version is the poll's licence to skip an incident. While any planned write is
    // unacknowledged the changes behind it are still to be written, so neither side's
    // version may move: the next listing of either side brings the incident back.
    let all_acknowledged =
        (plan.sentinel.is_empty() || answers.sentinel.is_some()) && !defender_failed;
    let (defender_version, sentinel_version) = if all_acknowledged {
        let etag = answers
            .sentinel
            .unwrap_or(input.sentinel)
            .get("etag")
            .and_then(Value::as_str)
            .map(str::to_string);
        (defender_version, etag)
    } else {
        (link.defender_version.clone(), link.sentinel_version.clone())
    };
    let new_link = Link {
        defender_version,
        sentinel_version,
        base_defender,
        base_sentinel,
        synced_at: Some(now.to_string()),
        ..link.clone()
    };
    let first_sync = link.base_defender.is_empty() && link.base_sentinel.is_empty();
    // `now` is the engine's own clock in RFC 3339; were it unreadable, no lag is recorded
    // rather than a wrong one.
    let now_at = read_stamp(now).ok();
    let mut tally = Tally::default();
    let mut audit = Vec::new();
    let mut counted_conflicts = std::collections::HashSet::new();
    for f in &plan.fields {
        let acknowledged = match f.written {
            Some(Side::Sentinel) => answers.sentinel.is_some(),
            Some(Side::Defender) => !defender_failed,
            None => true,
        };
        if !acknowledged {
            continue;
        }
        let (side, action, old, new) = match f.written {
            Some(side) => (side, "update", f.old.clone(), f.new.clone()),
            None => {
                // A change deliberately not synced: recorded on the side it came from,
                // with that side's own base as the old value.
                let change = planned.changes.iter().find(|c| c.field == f.field);
                let from = if change.is_some_and(|c| c.defender.changed) {
                    Side::Defender
                } else {
                    Side::Sentinel
                };
                let (old, new) = change.map_or((Value::Null, Value::Null), |c| {
                    let side = c.side(from);
                    (side.base.clone(), side.value.clone())
                });
                (from, "skip", old, new)
            }
        };
        if f.conflict && counted_conflicts.insert(f.field.clone()) {
            tally.conflicts.push(f.flow);
        }
        if let Some(side) = f.written {
            tally.writes += 1;
            match side {
                Side::Sentinel => tally.to_sentinel.push(f.field.clone()),
                Side::Defender => tally.to_defender.push(f.field.clone()),
            }
            if let Some(rule) = &f.rule {
                tally.rules.push(rule.clone());
            }
            let source_stamp = match side {
                Side::Sentinel => planned.stamps.defender,
                Side::Defender => planned.stamps.sentinel,
            };
            if let Some(lag) = lag_secs(source_stamp, now_at).filter(|_| !first_sync) {
                tally.lags.push(lag);
            }
        }
        audit.push(AuditRow {
            id: 0,
            at: now.to_string(),
            defender_id: link.defender_id.clone(),
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
    let written_to = |side| {
        plan.fields
            .iter()
            .filter(|f| f.written == Some(side))
            .count() as u64
    };
    if answers.sentinel.is_some() {
        tally.sentinel_updated = true;
        tally.fields_to_sentinel = written_to(Side::Sentinel);
    }
    if !plan.defender.is_empty() && !defender_failed {
        tally.defender_updated = true;
        tally.fields_to_defender = written_to(Side::Defender);
    }
    Settled {
        link: new_link,
        audit,
        defender_after,
        derived_pending,
        tally,
    }
}

/// Seconds from a change's stamp to `now` (never negative).
fn lag_secs(changed_at: Option<DateTime<Utc>>, now: Option<DateTime<Utc>>) -> Option<f64> {
    let ms = (now? - changed_at?).num_milliseconds();
    Some((ms as f64 / 1000.0).max(0.0))
}

/// What [`decide_create`] says about a Defender incident without a twin.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateDecision {
    Filtered {
        rule: String,
    },
    /// Every alert came from Sentinel itself (the unified portal lists Sentinel's own
    /// incidents in Graph): a twin would be listed again and twinned again, without end.
    /// A hard rule, not policy.
    RaisedBySentinel,
    Failed(Failure),
    /// Create the twin with these properties.
    Create(Fields),
}

pub fn decide_create(pack: &CompiledPack, d: &Value, options: &RunOptions) -> CreateDecision {
    match render_defender(pack, d, options) {
        Rendered::Filtered { rule } => CreateDecision::Filtered { rule },
        Rendered::Failed(failure) => CreateDecision::Failed(failure),
        Rendered::Fields(_) if raised_by_sentinel(d) => CreateDecision::RaisedBySentinel,
        Rendered::Fields(view) => CreateDecision::Create(view),
    }
}

/// The link and audit row of an acknowledged create: the bases a reconcile would store
/// right after it, and the versions both sides are at.
pub fn settle_create(
    pack: &CompiledPack,
    d: &Value,
    sentinel_id: &str,
    view: &Fields,
    created: &Value,
    now: &str,
) -> (Link, AuditRow) {
    let id = d["id"].as_str().unwrap_or("").to_string();
    let after = properties(created);
    let views = Views {
        defender: view,
        sentinel: &after,
        defender_changed_at: None,
        sentinel_changed_at: None,
    };
    let (base_defender, base_sentinel) = next_bases(
        &views,
        &Fields::new(),
        &Fields::new(),
        &Plan::default(),
        Acknowledged::default(),
    );
    let link = Link {
        defender_id: id.clone(),
        sentinel_id: sentinel_id.to_string(),
        created: true,
        defender_version: defender_stamp(d).map(str::to_string),
        sentinel_version: created["etag"].as_str().map(str::to_string),
        base_defender,
        base_sentinel,
        synced_at: Some(now.to_string()),
        swept_at: None,
    };
    let audit = AuditRow {
        id: 0,
        at: now.to_string(),
        defender_id: id,
        sentinel_id: sentinel_id.to_string(),
        side: Side::Sentinel,
        action: "create".into(),
        field: None,
        old: Value::Null,
        new: Value::Object(view.clone()),
        rule: Some(map_rules(pack).join(", ")),
        pack_version: pack.version.clone(),
    };
    (link, audit)
}

/// The names of the map rules (a create's provenance).
pub fn map_rules(pack: &CompiledPack) -> Vec<String> {
    pack.stage(Stage::Map).map(|r| r.name.clone()).collect()
}

/// Whether every alert of a Defender incident came from Sentinel. An incident without
/// alerts is not.
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

/// A Defender incident with a PATCH response laid over it (the response has no alerts).
pub fn merge_patch_response(before: &Value, response: &Value) -> Value {
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
fn renders_unwritten_change(plan: &Plan, after: &Fields, before: &Fields) -> bool {
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
