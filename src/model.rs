//! The vocabulary shared by rules, the planner and the sync engine.
//!
//! Incidents themselves stay `serde_json::Value`: rules read them as the APIs send them,
//! quirks included, and schemas (not Rust types) define what is valid. This module names
//! the things around them. Pure data; no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
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
    /// Time of the change on that side (its last-modified stamp), in the one form of
    /// [`stamp_text`]: a change read from a file (a pack test, `eval --change`) is
    /// normalised as it is read, and one that is not an RFC 3339 time is refused there.
    #[serde(default, deserialize_with = "normalised_stamp")]
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

/// A service's change stamp in the one form the direction rules see: UTC, `Z`, exactly
/// seven fractional digits (.NET's 100 ns ticks, the resolution both services stamp
/// with). The services write one instant in several forms (`…:00Z`, `…:00.1234567Z`,
/// `…:00+00:00`), and RFC 3339 strings of different forms do not sort by time (`…:00Z`
/// sorts after `…:00.5Z`: `Z` > `.`); one fixed-width form does, so even a rule that
/// compares `changed_at` strings instead of calling `time_cmp` orders them right.
pub fn stamp_text(t: DateTime<Utc>) -> String {
    let ticks = t.timestamp_subsec_nanos().min(999_999_999) / 100;
    format!("{}.{ticks:07}Z", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// Reads an RFC 3339 stamp (any offset, any number of fractional digits) as an instant.
/// Nothing else is guessed: a time without an offset names no instant.
pub fn read_stamp(text: &str) -> Result<DateTime<Utc>, UnreadableStamp> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| UnreadableStamp {
            text: crate::problem::clip_text(text),
        })
}

/// A stamp that is not an RFC 3339 time (clipped: it is untrusted input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not an RFC 3339 time")]
pub struct UnreadableStamp {
    pub text: String,
}

fn normalised_stamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| {
            read_stamp(&text)
                .map(stamp_text)
                .map_err(|e| serde::de::Error::custom(format!("changed_at: {e}")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalised(text: &str) -> String {
        stamp_text(read_stamp(text).unwrap())
    }

    #[test]
    fn stamps_of_every_precision_and_offset_read_as_one_fixed_width_form() {
        // Sentinel's seven digits, Graph's fewer, none, and offsets other than Z.
        for (text, form) in [
            (
                "2026-03-01T10:00:00.1234567Z",
                "2026-03-01T10:00:00.1234567Z",
            ),
            ("2026-03-01T10:00:00.123Z", "2026-03-01T10:00:00.1230000Z"),
            ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00.0000000Z"),
            ("2026-03-01T10:00:00+00:00", "2026-03-01T10:00:00.0000000Z"),
            (
                "2026-03-01T10:00:00.5-00:00",
                "2026-03-01T10:00:00.5000000Z",
            ),
            (
                "2026-03-01T11:00:00.1234567+01:00",
                "2026-03-01T10:00:00.1234567Z",
            ),
            ("2026-03-01t10:00:00z", "2026-03-01T10:00:00.0000000Z"),
            // Nine digits (not what the services send): cut to their 100 ns resolution.
            (
                "2026-03-01T10:00:00.123456789Z",
                "2026-03-01T10:00:00.1234567Z",
            ),
        ] {
            assert_eq!(normalised(text), form, "{text}");
        }
        assert_eq!(
            read_stamp("2026-03-01T10:00:00Z"),
            read_stamp("2026-03-01T10:00:00.0000000+00:00")
        );
    }

    #[test]
    fn the_normal_form_sorts_by_time_where_the_services_forms_do_not() {
        // Earliest first, as instants.
        let texts = [
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.0000001+00:00",
            "2026-03-01T10:00:00.5Z",
            "2026-03-01T11:00:00.6+01:00",
            "2026-03-01T10:00:01Z",
        ];
        let mut lexical = texts.to_vec();
        lexical.sort();
        assert_ne!(lexical, texts, "the raw strings sort otherwise");
        let forms: Vec<String> = texts.iter().map(|t| normalised(t)).collect();
        let mut sorted = forms.clone();
        sorted.sort();
        assert_eq!(sorted, forms);
        let instants: Vec<_> = texts.iter().map(|t| read_stamp(t).unwrap()).collect();
        assert!(instants.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn what_is_not_an_instant_is_unreadable_not_guessed() {
        for text in [
            "",
            "yesterday",
            "2026-03-01T10:00:00",
            "2026-03-01",
            "2026-13-01T10:00:00Z",
            " 2026-03-01T10:00:00Z",
        ] {
            let e = read_stamp(text).unwrap_err();
            assert_eq!(e.to_string(), format!("'{text}' is not an RFC 3339 time"));
        }
        let long = "9".repeat(100_000);
        assert!(read_stamp(&long).unwrap_err().to_string().len() < 1_000);
    }

    #[test]
    fn a_change_read_from_a_file_carries_its_stamps_normalised_or_is_refused() {
        let change = |at: &str| {
            serde_json::from_value::<FieldChange>(serde_json::json!({
                "field": "status",
                "defender": {"value": "Active", "changed": true, "changed_at": at},
                "sentinel": {"value": "New", "changed": true, "changed_at": null}
            }))
        };
        let c = change("2026-03-01T11:00:00.5+01:00").unwrap();
        assert_eq!(
            c.defender.changed_at.as_deref(),
            Some("2026-03-01T10:00:00.5000000Z")
        );
        assert_eq!(c.sentinel.changed_at, None);
        let e = change("2026-03-01 10:00").unwrap_err().to_string();
        assert!(
            e.contains("changed_at: '2026-03-01 10:00' is not an RFC 3339 time"),
            "{e}"
        );
    }
}
