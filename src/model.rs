//! The vocabulary shared by rules, the planner and the sync engine.
//!
//! Incidents themselves stay `serde_json::Value`: rules read them as the APIs send them,
//! quirks included, and schemas (not Rust types) define what is valid. This module names
//! the things around them. Pure data; no I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the two systems rulebridge keeps in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Defender,
    Sentinel,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Defender => "defender",
            Side::Sentinel => "sentinel",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Defender => Side::Sentinel,
            Side::Sentinel => Side::Defender,
        }
    }

    /// The map entry point that turns an incident from this side into the other's form.
    pub fn map_function(self) -> &'static str {
        match self {
            Side::Defender => "to_sentinel",
            Side::Sentinel => "to_defender",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stages of a rule pack, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Filter,
    Map,
    Enrich,
    Direction,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Filter, Stage::Map, Stage::Enrich, Stage::Direction];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Filter => "filter",
            Stage::Map => "map",
            Stage::Enrich => "enrich",
            Stage::Direction => "direction",
        }
    }

    /// Entry points a script of this stage may define; `map` needs at least one of its
    /// two, every other stage exactly its one. All take two parameters.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Stage::Filter => &["filter"],
            Stage::Map => &["to_sentinel", "to_defender"],
            Stage::Enrich => &["enrich"],
            Stage::Direction => &["direction"],
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a synced field should flow, as the `direction` stage decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    ToSentinel,
    ToDefender,
    Skip,
    /// For a set-like field (labels) both sides changed: keep both sides' additions and
    /// removals, and write the union to both.
    Merge,
}

impl Flow {
    pub fn parse(s: &str) -> Option<Flow> {
        match s {
            "to_sentinel" => Some(Flow::ToSentinel),
            "to_defender" => Some(Flow::ToDefender),
            "skip" => Some(Flow::Skip),
            "merge" => Some(Flow::Merge),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flow::ToSentinel => "to_sentinel",
            Flow::ToDefender => "to_defender",
            Flow::Skip => "skip",
            Flow::Merge => "merge",
        }
    }
}

/// One synced field that changed since the last sync, as the `direction` stage sees it.
/// Values are in the Sentinel vocabulary (the map stage's output), so both sides compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    /// The synced field: `status`, `owner`, `classification`, `labels`, `title`, …
    pub field: String,
    /// The Defender side's base: the Defender rendering at the last successful sync
    /// (`null` before the first). Each side's own base is `defender.base` and
    /// `sentinel.base`; they differ where a mapping is not exactly reversible (an owner's
    /// display name exists only in Sentinel). Kept for rules written before per-side bases.
    #[serde(default)]
    pub base: serde_json::Value,
    pub defender: SideValue,
    pub sentinel: SideValue,
}

/// A field's current value on one side and whether and when it changed there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideValue {
    #[serde(default)]
    pub value: serde_json::Value,
    /// This side's value at the last successful sync (`null` before the first).
    #[serde(default)]
    pub base: serde_json::Value,
    #[serde(default)]
    pub changed: bool,
    /// RFC 3339 time of the change on that side (its last-modified stamp).
    #[serde(default)]
    pub changed_at: Option<String>,
}

impl FieldChange {
    /// Both sides changed the field, to different values: the direction rule must choose.
    pub fn is_conflict(&self) -> bool {
        self.defender.changed && self.sentinel.changed && self.defender.value != self.sentinel.value
    }

    /// One side's value, base and stamp.
    pub fn side(&self, side: Side) -> &SideValue {
        match side {
            Side::Defender => &self.defender,
            Side::Sentinel => &self.sentinel,
        }
    }

    /// The JSON the direction rule receives as `change`.
    pub fn to_script_value(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("FieldChange is plain data");
        v["conflict"] = serde_json::Value::Bool(self.is_conflict());
        v
    }
}
