//! The planner: pure functions from what both sides say now, what they said at the last
//! sync (the per-side bases) and the rules' decisions, to the writes to make and the
//! bases to store once they are acknowledged. No I/O, no clock, no rule calls: the
//! engine asks the rules and passes their answers in, so every case is unit-tested here.
//!
//! Fields are compared in the Sentinel vocabulary: the Defender side as the map stage
//! renders it, the Sentinel side as stored. Each side is compared only with its own base,
//! so a mapping that is not exactly reversible (an owner's display name exists only in
//! Sentinel) never looks like a change, and our own writes never come back as changes:
//! the base becomes exactly what the write left behind.

use super::fields::{defender_keys, COUPLED, SENTINEL_WRITABLE};
use crate::model::{stamp_text, FieldChange, Flow, Side, SideValue};
use crate::state::Fields;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// Both sides of one linked incident, now.
#[derive(Debug, Clone, Copy)]
pub struct Views<'a> {
    /// The map stage's rendering of the Defender incident (Sentinel vocabulary).
    pub defender: &'a Fields,
    /// The Sentinel incident's properties.
    pub sentinel: &'a Fields,
    /// The sides' change stamps, read once by the step (`Stamps::read`).
    pub defender_changed_at: Option<DateTime<Utc>>,
    pub sentinel_changed_at: Option<DateTime<Utc>>,
}

/// The synced fields: what the map stage produces, every writable Sentinel property the
/// Sentinel side holds (an analyst may set one the Defender rendering lacks, such as a
/// classification), and anything a base still holds (a field that disappeared is
/// compared once more). The direction rules decide what each of them does.
pub fn synced_fields(views: &Views, base_defender: &Fields) -> Vec<String> {
    let mut fields: Vec<String> = views
        .defender
        .keys()
        .chain(base_defender.keys())
        .chain(
            views
                .sentinel
                .keys()
                .filter(|k| SENTINEL_WRITABLE.contains(&k.as_str())),
        )
        .cloned()
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

fn get<'a>(map: &'a Fields, key: &str) -> &'a Value {
    map.get(key).unwrap_or(&Value::Null)
}

/// Three-way change detection: every synced field that changed on either side since its
/// base. Fields neither side changed are not returned (nothing to decide, nothing to write).
///
/// A coupled pair ([`COUPLED`]) changed on both sides, in any of its members, is a
/// conflict of the whole pair: each of its changed members is marked changed on both
/// sides, so the direction rules decide every member from the same facts. An analyst
/// who closes in Sentinel with a new reason and the classification the incident already
/// had has still chosen the pair; read field by field, Defender's classification would
/// win unopposed while Sentinel's reason won its conflict, and the pair written back
/// would be one nobody chose (and one Sentinel may refuse).
pub fn detect(views: &Views, base_defender: &Fields, base_sentinel: &Fields) -> Vec<FieldChange> {
    let mut changes = detect_fields(views, base_defender, base_sentinel);
    for group in COUPLED {
        let members = |c: &&mut FieldChange| group.contains(&c.field.as_str());
        let on = |side: fn(&FieldChange) -> bool| {
            changes
                .iter()
                .any(|c| group.contains(&c.field.as_str()) && side(c))
        };
        if on(|c| c.defender.changed) && on(|c| c.sentinel.changed) {
            for change in changes.iter_mut().filter(members) {
                change.defender.changed = true;
                change.sentinel.changed = true;
            }
        }
    }
    changes
}

fn detect_fields(
    views: &Views,
    base_defender: &Fields,
    base_sentinel: &Fields,
) -> Vec<FieldChange> {
    synced_fields(views, base_defender)
        .into_iter()
        .filter_map(|field| {
            let d = get(views.defender, &field);
            let s = get(views.sentinel, &field);
            let d_changed = d != get(base_defender, &field);
            let s_changed = s != get(base_sentinel, &field);
            (d_changed || s_changed).then(|| FieldChange {
                base: get(base_defender, &field).clone(),
                defender: SideValue {
                    value: d.clone(),
                    base: get(base_defender, &field).clone(),
                    changed: d_changed,
                    changed_at: views.defender_changed_at.map(stamp_text),
                },
                sentinel: SideValue {
                    value: s.clone(),
                    base: get(base_sentinel, &field).clone(),
                    changed: s_changed,
                    changed_at: views.sentinel_changed_at.map(stamp_text),
                },
                field,
            })
        })
        .collect()
}

/// One field's fate in a plan (what the audit trail records).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedField {
    pub field: String,
    pub flow: Flow,
    /// The rule that decided, if any did.
    pub rule: Option<String>,
    /// The side written, or `None` when nothing needed writing.
    pub written: Option<Side>,
    pub old: Value,
    pub new: Value,
    pub conflict: bool,
    /// Why nothing was written although the flow asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The writes for one incident. Empty maps mean no request at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Sentinel properties to change (applied over the current ones in one PUT).
    pub sentinel: Map<String, Value>,
    /// The Defender PATCH body: only properties whose value differs.
    pub defender: Map<String, Value>,
    pub fields: Vec<PlannedField>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.sentinel.is_empty() && self.defender.is_empty()
    }
}

/// A direction decision, as the engine got it from the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub flow: Flow,
    pub rule: Option<String>,
}

/// Turns changes and their decisions into writes. `defender_now` is the Defender incident
/// as read; `defender_form` is the map stage's rendering of the Sentinel incident (with
/// `merged` applied) as a Defender PATCH body (`None` when no field flows to Defender or
/// the Sentinel side was filtered out); `merged` holds the merged value of every field
/// decided `merge` (see [`merge_set`]). A write is planned only where the target differs
/// from the source, so a change both sides already agree on costs no request.
pub fn plan(
    changes: &[FieldChange],
    decisions: &[Decided],
    defender_now: &Value,
    defender_form: Option<&Map<String, Value>>,
    merged: &Fields,
) -> Plan {
    let mut out = Plan::default();
    for (change, decided) in changes.iter().zip(decisions) {
        let mut entry = PlannedField {
            field: change.field.clone(),
            flow: decided.flow,
            rule: decided.rule.clone(),
            written: None,
            old: Value::Null,
            new: Value::Null,
            conflict: change.is_conflict(),
            note: None,
        };
        match decided.flow {
            Flow::Skip => {}
            Flow::ToSentinel => to_sentinel(
                &mut entry,
                &change.sentinel.value,
                &change.defender.value,
                &mut out,
            ),
            Flow::ToDefender => to_defender(&mut entry, defender_now, defender_form, &mut out),
            Flow::Merge => match merged.get(&change.field) {
                Some(value) => {
                    // Two entries, one per side written: the audit shows both.
                    let mut other = entry.clone();
                    to_sentinel(&mut entry, &change.sentinel.value, value, &mut out);
                    to_defender(&mut other, defender_now, defender_form, &mut out);
                    if other.written.is_some() {
                        out.fields.push(other);
                    }
                }
                None => entry.note = Some(format!("`{}` is not a set; not merged", change.field)),
            },
        }
        out.fields.push(entry);
    }
    out
}

fn to_sentinel(entry: &mut PlannedField, current: &Value, value: &Value, out: &mut Plan) {
    if current != value {
        entry.written = Some(Side::Sentinel);
        entry.old = current.clone();
        entry.new = value.clone();
        out.sentinel.insert(entry.field.clone(), value.clone());
    }
}

fn to_defender(
    entry: &mut PlannedField,
    defender_now: &Value,
    defender_form: Option<&Map<String, Value>>,
    out: &mut Plan,
) {
    let keys = defender_keys(&entry.field);
    if keys.is_empty() {
        entry.note = Some(format!(
            "`{}` has no Defender counterpart; not written",
            entry.field
        ));
        return;
    }
    let Some(form) = defender_form else {
        entry.note = Some("the Sentinel incident was filtered out".into());
        return;
    };
    let mut old = Map::new();
    let mut new = Map::new();
    for key in keys {
        let Some(value) = form.get(*key) else {
            continue;
        };
        let current = defender_now.get(*key).unwrap_or(&Value::Null);
        if current != value {
            old.insert((*key).into(), current.clone());
            new.insert((*key).into(), value.clone());
            out.defender.insert((*key).into(), value.clone());
        }
    }
    if !new.is_empty() {
        entry.written = Some(Side::Defender);
        entry.old = Value::Object(old);
        entry.new = Value::Object(new);
    }
}

/// A 3-way merge of a set-like field (an array; objects are identified by `labelName`):
/// Sentinel's current items, plus what Defender added since its base, minus what
/// Defender removed since its base. Each side is compared with its own base, so both
/// sides' edits survive; an item one side added and the other removed is kept.
/// `None` when the values are not arrays.
pub fn merge_set(base_defender: &Value, defender: &Value, sentinel: &Value) -> Option<Value> {
    fn key(item: &Value) -> String {
        match item.get("labelName").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => item.to_string(),
        }
    }
    let empty = Vec::new();
    let items = |v: &Value| -> Option<Vec<Value>> {
        match v {
            Value::Array(a) => Some(a.clone()),
            Value::Null => Some(empty.clone()),
            _ => None,
        }
    };
    let (base, d, s) = (items(base_defender)?, items(defender)?, items(sentinel)?);
    let keys = |list: &[Value]| {
        list.iter()
            .map(key)
            .collect::<std::collections::HashSet<_>>()
    };
    let (base_keys, d_keys, s_keys) = (keys(&base), keys(&d), keys(&s));
    let removed_in_defender: std::collections::HashSet<_> =
        base_keys.difference(&d_keys).cloned().collect();
    let mut out: Vec<Value> = s
        .into_iter()
        .filter(|i| !removed_in_defender.contains(&key(i)))
        .collect();
    for item in d {
        let k = key(&item);
        if !base_keys.contains(&k) && !s_keys.contains(&k) {
            out.push(item);
        }
    }
    Some(Value::Array(out))
}

/// What the writes of a plan came to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acknowledged<'a> {
    /// The Sentinel properties after an acknowledged PUT (`None`: no PUT, or it failed).
    /// A PUT is conditional on the etag we planned from, so this is the whole truth.
    pub sentinel_after: Option<&'a Fields>,
    /// The map stage's rendering of Defender after an acknowledged PATCH.
    pub defender_after: Option<&'a Fields>,
}

/// The bases to store after a plan's writes: what each side says now, except that a
/// field takes the value a write left behind, and a field whose write was not
/// acknowledged keeps its old bases (so it is detected and planned again next time).
pub fn next_bases(
    views: &Views,
    base_defender: &Fields,
    base_sentinel: &Fields,
    plan: &Plan,
    ack: Acknowledged,
) -> (Fields, Fields) {
    let mut bd = Fields::new();
    let mut bs = Fields::new();
    for field in synced_fields(views, base_defender) {
        let entries = || plan.fields.iter().filter(|f| f.field == field);
        let to_sentinel = entries().any(|f| f.written == Some(Side::Sentinel));
        let to_defender = entries().any(|f| f.written == Some(Side::Defender));
        let unacknowledged = (to_sentinel && ack.sentinel_after.is_none())
            || (to_defender && ack.defender_after.is_none());
        let (d, s) = if unacknowledged {
            (get(base_defender, &field), get(base_sentinel, &field))
        } else {
            let d = match ack.defender_after {
                // Only written fields: an unwritten field whose rendering our write changed
                // (a note derived from the classification, say) must still flow to
                // Sentinel, so its base stays what Defender said before.
                Some(after) if to_defender => get(after, &field),
                _ => get(views.defender, &field),
            };
            let s = match ack.sentinel_after {
                Some(after) => get(after, &field),
                None => get(views.sentinel, &field),
            };
            (d, s)
        };
        bd.insert(field.clone(), d.clone());
        bs.insert(field, s.clone());
    }
    (bd, bs)
}
