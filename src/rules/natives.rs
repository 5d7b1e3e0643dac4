//! Native helpers for the heavy lifting scripts would otherwise do by hand.
//!
//! A native call counts as one Rhai operation however long it runs, so every helper
//! here is linear in its input and allocation-light: walking hundreds of alerts with
//! evidence in a script costs thousands of operations, `pluck` costs one.
//!
//! | helper | does |
//! |---|---|
//! | `pluck(view, "a.b.c")` | distinct non-null scalars at a dotted path, arrays flattened at every level |
//! | `earliest(list)`, `latest(list)` | the earliest / latest RFC 3339 timestamp in a list (others ignored) |
//! | `timestamp(s)` | `s` as an RFC 3339 UTC timestamp, or `()` if it is not one |
//! | `enum_key(s)` | `s` lower-cased without separators, for case-insensitive enum lookups |
//! | `clip(s, n)` | `s` cut to at most `n` UTF-16 code units (as Microsoft's .NET services count), ending in `…` when cut; never inside a surrogate pair or before a combining mark |
//! | `distinct(list)` | the list without repeated values, first occurrence kept |
//! | `summarize(list, n)` | up to `n` items joined with `, `, plus `(+k more)` |
//! | `summary_lines(view, spec, n)` | one `Label: a, b (+k more)` line per `[label, path, fallback path…]` of `spec` whose values are not empty |
//! | `as_labels(list)` | Sentinel labels (`#{labelName}`) from strings, without empties or repeats |
//! | `labels.add_label(name)` | appends `#{labelName: name}` unless a label of that name is there |
//! | `time_cmp(a, b)` | -1, 0 or 1 as timestamp `a` is before, equal to or after `b`; `()` (no stamp) sorts first; any other non-timestamp is an error |

use super::json::JsonView;
use super::reference::FnDoc;
use crate::schema::utf16;
use chrono::{DateTime, Utc};
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString};
use serde_json::Value;
use std::collections::HashSet;
use std::fmt::Write;

/// The reference entries for [`register`] (see `reference.rs`; a test fails when a
/// registered native has none, or an example stops giving its result).
pub const DOCS: &[FnDoc] = &[
    FnDoc { name: "pluck", signature: "pluck(view: Json, path: string) -> array", doc: "Distinct non-null scalars at a dotted path; arrays are flattened at every level; `()` gives `[]`", example: r#"pluck(incident, "alerts.evidence.deviceDnsName")"#, result: r#"["pc1.contoso.com","dc1.contoso.com"]"# },
    FnDoc { name: "earliest", signature: "earliest(list: array) -> string | ()", doc: "The earliest RFC 3339 timestamp in a list (other items ignored), `()` if none", example: r#"earliest(pluck(incident, "alerts.firstActivityDateTime"))"#, result: r#""2026-03-01T08:00:00Z""# },
    FnDoc { name: "latest", signature: "latest(list: array) -> string | ()", doc: "The latest RFC 3339 timestamp in a list (other items ignored), `()` if none", example: r#"latest(pluck(incident, "alerts.lastActivityDateTime"))"#, result: r#""2026-03-01T09:45:00Z""# },
    FnDoc { name: "timestamp", signature: "timestamp(s: string) -> string | ()", doc: "`s` as an RFC 3339 UTC timestamp (at most 7 fractional digits), `()` if it is not one", example: r#"timestamp("2026-03-01T11:00:00+01:00")"#, result: r#""2026-03-01T10:00:00Z""# },
    FnDoc { name: "enum_key", signature: "enum_key(s: string) -> string", doc: "`s` lower-cased without separators, for case-insensitive enum lookups; `()` gives `\"\"`", example: r#"enum_key("True_Positive")"#, result: r#""truepositive""# },
    FnDoc { name: "clip", signature: "clip(s: string, max: int) -> string", doc: "`s` cut to at most `max` UTF-16 code units (as .NET counts), ending in `…` when cut; never inside a character", example: r#"clip("Suspicious PowerShell", 10)"#, result: r#""Suspiciou…""# },
    FnDoc { name: "distinct", signature: "distinct(list: array) -> array", doc: "The list without repeated values, first occurrence kept", example: "distinct([1, 2, 1, 3])", result: "[1,2,3]" },
    FnDoc { name: "summarize", signature: "summarize(list: array, max: int) -> string", doc: "Up to `max` items joined with `, `, plus `(+k more)`", example: r#"summarize(["a", "b", "c"], 2)"#, result: r#""a, b (+1 more)""# },
    FnDoc { name: "summary_lines", signature: "summary_lines(view: Json, spec: Json, max: int) -> string", doc: "One `Label: a, b (+k more)` line per `[label, path, fallback path…]` of `spec` (a Json list, e.g. from params) that finds values", example: r#"summary_lines(incident.alerts, ctx.params.summary, 1)"#, result: r#""Categories: Execution (+1 more)\nAccounts: ceo@contoso.com\nDevices: pc1.contoso.com (+1 more)""# },
    FnDoc { name: "as_labels", signature: "as_labels(list: array | Json) -> array", doc: "Sentinel labels (`#{labelName}`) from strings, without empties or repeats; `()` gives `[]`", example: "as_labels(incident.customTags)", result: r#"[{"labelName":"Demo"}]"# },
    FnDoc { name: "add_label", signature: "labels.add_label(name: string)", doc: "Appends `#{labelName: name}` to a label list unless a label of that name is there", example: r#"{ let l = as_labels(["a"]); l.add_label("b"); l.add_label("a"); l }"#, result: r#"[{"labelName":"a"},{"labelName":"b"}]"# },
    FnDoc { name: "time_cmp", signature: "time_cmp(a, b) -> int", doc: "-1, 0 or 1 as timestamp `a` is before, equal to or after `b` (as instants: any offset, any number of fractional digits); `()` (no stamp) sorts first; any other value that is not an RFC 3339 timestamp is an error, never silently the older", example: r#"time_cmp("2026-03-01T10:00:00Z", "2026-03-01T11:00:00+01:00")"#, result: "0" },
];

pub fn register(engine: &mut Engine) {
    engine.register_fn("pluck", |v: &mut JsonView, path: &str| {
        let found = pluck(v, path);
        super::sandbox::check_deadline().map(|()| found)
    });
    engine.register_fn("pluck", |_: (), _: &str| Array::new());
    engine.register_fn("earliest", |list: Array| extreme(&list, false));
    engine.register_fn("latest", |list: Array| extreme(&list, true));
    engine.register_fn("timestamp", |s: &str| {
        parse_time(s).map_or(Dynamic::UNIT, |t| Dynamic::from(format_time(t)))
    });
    engine.register_fn("timestamp", |_: ()| Dynamic::UNIT);
    engine.register_fn("enum_key", |s: &str| enum_key(s));
    engine.register_fn("enum_key", |_: ()| String::new());
    // A string that fits is returned as it is (shared, not copied): descriptions are KBs.
    engine.register_fn("clip", |s: ImmutableString, max: i64| {
        let max = max.max(0) as usize;
        if fits(&s, max) {
            s
        } else {
            clip(&s, max).into()
        }
    });
    engine.register_fn("clip", |_: (), _: i64| String::new());
    engine.register_fn("distinct", |list: Array| distinct(list));
    engine.register_fn(
        "summary_lines",
        |v: &mut JsonView, spec: JsonView, max: i64| {
            let text = summary_lines(v, &spec, max.max(0) as usize);
            super::sandbox::check_deadline().map(|()| text)
        },
    );
    engine.register_fn("summary_lines", |_: (), _: JsonView, _: i64| String::new());
    engine.register_fn("as_labels", |list: Array| {
        as_labels(
            list.iter()
                .filter_map(|d| d.read_lock::<ImmutableString>().map(|s| s.to_string())),
        )
    });
    engine.register_fn("as_labels", |v: &mut JsonView| {
        as_labels(
            v.node()
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string)),
        )
    });
    engine.register_fn("as_labels", |_: ()| Array::new());
    engine.register_fn("add_label", |labels: &mut Array, name: &str| {
        add_label(labels, name)
    });
    engine.register_fn("time_cmp", |a: Dynamic, b: Dynamic| time_cmp(&a, &b));
    engine.register_fn("summarize", |list: Array, max: i64| {
        summarize(&list, max.max(0) as usize)
    });
}

/// Collects distinct scalars found at `path` below `view`.
pub fn pluck(view: &JsonView, path: &str) -> Array {
    distinct_leaves(view.node(), path)
        .into_iter()
        // SAFETY: every leaf is borrowed from `view.node()`.
        .map(|leaf| unsafe { view.wrap(leaf) })
        .collect()
}

/// The distinct non-null scalars at a dotted `path` below `node`, in document order.
/// Leaves stay borrowed from the document: nothing is converted or allocated per value
/// until a caller decides what it needs.
fn distinct_leaves<'v>(node: &'v Value, path: &str) -> Vec<&'v Value> {
    // Empty segments ("a..b", a trailing dot) are ignored.
    let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let mut leaves = DistinctLeaves::default();
    walk(node, &segments, &mut |leaf| leaves.insert(leaf));
    leaves.found
}

/// Distinct values by linear scan while there are few (the common case: a handful of
/// devices or accounts), by hash once there are many (hundreds of alerts).
#[derive(Default)]
struct DistinctLeaves<'v> {
    found: Vec<&'v Value>,
    strings: Option<HashSet<&'v str>>,
}

impl<'v> DistinctLeaves<'v> {
    const SCAN_LIMIT: usize = 32;

    fn insert(&mut self, leaf: &'v Value) {
        let new = match (leaf, &mut self.strings) {
            (Value::String(s), Some(strings)) => strings.insert(s.as_str()),
            _ => !self.found.contains(&leaf),
        };
        if !new {
            return;
        }
        self.found.push(leaf);
        if self.strings.is_none() && self.found.len() > Self::SCAN_LIMIT {
            self.strings = Some(self.found.iter().filter_map(|v| v.as_str()).collect());
        } else if let (Value::String(s), Some(strings)) = (leaf, &mut self.strings) {
            strings.insert(s.as_str());
        }
    }
}

/// Calls `emit` for every scalar at `path` below `node`; arrays are flattened at every
/// level, nulls skipped.
fn walk<'v>(node: &'v Value, path: &[&str], emit: &mut impl FnMut(&'v Value)) {
    match node {
        Value::Array(items) => items.iter().for_each(|item| walk(item, path, emit)),
        Value::Object(map) => {
            if let Some((first, rest)) = path.split_first() {
                if let Some(child) = map.get(*first) {
                    walk(child, rest, emit);
                }
            }
        }
        Value::Null => {}
        scalar if path.is_empty() => emit(scalar),
        _ => {}
    }
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// RFC 3339 in UTC with at most 7 fractional digits (.NET's resolution, what both
/// services write), trailing zeros dropped: a 9-digit stamp is not what they send, and
/// not every parser on their side takes one.
pub fn format_time(t: DateTime<Utc>) -> String {
    let ticks = t.timestamp_subsec_nanos().min(999_999_999) / 100;
    let whole = t.format("%Y-%m-%dT%H:%M:%S");
    if ticks == 0 {
        return format!("{whole}Z");
    }
    let fraction = format!("{ticks:07}");
    format!("{whole}.{}Z", fraction.trim_end_matches('0'))
}

fn extreme(list: &Array, latest: bool) -> Dynamic {
    let times = list.iter().filter_map(|d| {
        d.read_lock::<ImmutableString>()
            .and_then(|s| parse_time(&s))
    });
    let found = if latest { times.max() } else { times.min() };
    found.map_or(Dynamic::UNIT, |t| Dynamic::from(format_time(t)))
}

pub fn enum_key(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `s` has at most `max` UTF-16 code units.
fn fits(s: &str, max: usize) -> bool {
    utf16::fits(s, max)
}

/// `s` cut to at most `max` UTF-16 code units, the `…` marker included. Units, not
/// characters: the services' limits (a Sentinel description's 5,000) are .NET string
/// lengths, where an emoji counts 2. See [`utf16::clip`] for where a cut may fall.
pub fn clip(s: &str, max: usize) -> String {
    utf16::clip(s, max)
}

/// `spec` is an array of `[label, path, fallback path, …]`: the first path with values wins.
fn summary_lines(view: &JsonView, spec: &JsonView, max: usize) -> String {
    let mut out = String::new();
    for line in spec.node().as_array().into_iter().flatten() {
        let Some([label, paths @ ..]) = line.as_array().map(Vec::as_slice) else {
            continue;
        };
        let values = paths
            .iter()
            .filter_map(Value::as_str)
            .map(|path| distinct_leaves(view.node(), path))
            .find(|found| !found.is_empty());
        if let Some(values) = values {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(label.as_str().unwrap_or(""));
            out.push_str(": ");
            join_shown(&mut out, &values, max, |out, value| match value {
                Value::String(s) => out.push_str(s),
                other => {
                    let _ = write!(out, "{other}");
                }
            });
        }
    }
    out
}

/// Appends up to `max` of `items` joined with `, `, plus ` (+k more)` for the rest.
fn join_shown<T>(out: &mut String, items: &[T], max: usize, mut push: impl FnMut(&mut String, &T)) {
    for (i, item) in items.iter().take(max).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push(out, item);
    }
    if items.len() > max {
        let _ = write!(out, " (+{} more)", items.len() - max);
    }
}

fn label_name(label: &Dynamic) -> Option<ImmutableString> {
    label
        .read_lock::<rhai::Map>()?
        .get("labelName")?
        .clone()
        .into_immutable_string()
        .ok()
}

fn add_label(labels: &mut Array, name: &str) {
    if !name.is_empty()
        && !labels
            .iter()
            .any(|l| label_name(l).is_some_and(|n| n == name))
    {
        let mut label = rhai::Map::new();
        label.insert(
            "labelName".into(),
            Dynamic::from(ImmutableString::from(name)),
        );
        labels.push(Dynamic::from_map(label));
    }
}

fn as_labels(names: impl Iterator<Item = String>) -> Array {
    let mut labels = Array::new();
    for name in names {
        add_label(&mut labels, &name);
    }
    labels
}

/// A direction rule decides conflicts with this: a stamp that does not read must stop
/// the call (the incident becomes a dead letter naming the rule), not lose or win the
/// conflict by sorting first.
fn time_cmp(a: &Dynamic, b: &Dynamic) -> Result<i64, Box<EvalAltResult>> {
    let instant = |d: &Dynamic| -> Result<Option<DateTime<Utc>>, Box<EvalAltResult>> {
        if d.is_unit() {
            return Ok(None);
        }
        match d.read_lock::<ImmutableString>() {
            Some(s) => parse_time(&s).map(Some).ok_or_else(|| {
                format!(
                    "time_cmp: '{}' is not an RFC 3339 timestamp",
                    crate::problem::clip_text(&s)
                )
                .into()
            }),
            None => Err(format!("time_cmp: a {} is not a timestamp", d.type_name()).into()),
        }
    };
    Ok(instant(a)?.cmp(&instant(b)?) as i64)
}

fn distinct(list: Array) -> Array {
    let mut seen = HashSet::new();
    list.into_iter()
        .filter(|item| seen.insert(item.to_string()))
        .collect()
}

fn summarize(list: &Array, max: usize) -> String {
    let mut out = String::new();
    join_shown(&mut out, list, max, |out, item| {
        match item.read_lock::<ImmutableString>() {
            Some(s) => out.push_str(&s),
            None => {
                let _ = write!(out, "{item}");
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn pluck_flattens_arrays_and_drops_nulls_and_repeats() {
        let doc = serde_json::json!({"alerts": [
            {"evidence": [{"user": {"upn": "a@x"}}, {"user": null}, {"user": {"upn": "b@x"}}]},
            {"evidence": [{"user": {"upn": "a@x"}}]},
            {"evidence": null}
        ]});
        let got = pluck(&JsonView::new(Arc::new(doc)), "alerts.evidence.user.upn");
        let got: Vec<String> = got.into_iter().map(|d| d.to_string()).collect();
        assert_eq!(got, ["a@x", "b@x"]);
    }

    #[test]
    fn pluck_stays_distinct_past_the_linear_scan() {
        // 100 alerts naming 40 hosts and repeating them: more distinct values than the
        // linear scan handles, so later repeats are caught by the hash set.
        let alerts: Vec<serde_json::Value> = (0..100)
            .map(|i| serde_json::json!({"host": format!("h{}", i % 40), "n": i % 3}))
            .collect();
        let view = JsonView::new(Arc::new(serde_json::json!({ "alerts": alerts })));
        let hosts: Vec<String> = pluck(&view, "alerts.host")
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        let expected: Vec<String> = (0..40).map(|i| format!("h{i}")).collect();
        assert_eq!(hosts, expected);
        let numbers: Vec<i64> = pluck(&view, "..alerts..n.")
            .into_iter()
            .map(|d| d.as_int().unwrap())
            .collect();
        assert_eq!(numbers, [0, 1, 2]);
    }

    #[test]
    fn summaries_list_the_first_items_and_count_the_rest() {
        let list: Array = ["a", "b", "c"].into_iter().map(Dynamic::from).collect();
        assert_eq!(summarize(&list, 2), "a, b (+1 more)");
        assert_eq!(summarize(&list, 3), "a, b, c");
        assert_eq!(summarize(&Array::new(), 3), "");
    }

    #[test]
    fn timestamps_compare_as_instants_not_strings() {
        let list: Array = [
            "2021-04-26T07:45:50Z",
            "2021-04-26T07:45:50.116Z",
            "garbage",
            "2021-04-26T09:45:50+03:00",
        ]
        .into_iter()
        .map(Dynamic::from)
        .collect();
        assert_eq!(extreme(&list, true).to_string(), "2021-04-26T07:45:50.116Z");
        assert_eq!(extreme(&list, false).to_string(), "2021-04-26T06:45:50Z");
    }

    #[test]
    fn time_cmp_orders_instants_and_refuses_what_is_not_one() {
        let d = |s: &str| Dynamic::from(s.to_string());
        let cmp = |a: &Dynamic, b: &Dynamic| time_cmp(a, b).map_err(|e| e.to_string());
        // Seven digits as Sentinel sends, fewer as Graph does, +00:00 against Z: a
        // lexical comparison gets each of these wrong.
        for (a, b, order) in [
            ("2026-03-01T10:00:00.1234567Z", "2026-03-01T10:00:00.5Z", -1),
            ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00.0000001Z", -1),
            (
                "2026-03-01T10:00:00.5+00:00",
                "2026-03-01T10:00:00.5000000Z",
                0,
            ),
            (
                "2026-03-01T11:00:00+01:00",
                "2026-03-01T09:59:59.9999999Z",
                1,
            ),
        ] {
            assert_eq!(cmp(&d(a), &d(b)), Ok(order), "{a} vs {b}");
            assert_eq!(cmp(&d(b), &d(a)), Ok(-order), "{b} vs {a}");
        }
        assert_eq!(cmp(&Dynamic::UNIT, &d("2026-03-01T10:00:00Z")), Ok(-1));
        assert_eq!(cmp(&Dynamic::UNIT, &Dynamic::UNIT), Ok(0));
        let e = cmp(&d("2026-03-01T10:00:00Z"), &d("2026-03-01 10:00")).unwrap_err();
        assert!(
            e.contains("'2026-03-01 10:00' is not an RFC 3339 timestamp"),
            "{e}"
        );
        let e = cmp(&Dynamic::from(5_i64), &Dynamic::UNIT).unwrap_err();
        assert!(e.contains("a i64 is not a timestamp"), "{e}");
    }

    fn units(s: &str) -> usize {
        s.encode_utf16().count()
    }

    #[test]
    fn times_are_written_with_at_most_seven_fractional_digits() {
        let t = |s: &str| parse_time(s).unwrap();
        assert_eq!(
            format_time(t("2026-01-02T03:04:05.123456789Z")),
            "2026-01-02T03:04:05.1234567Z"
        );
        assert_eq!(
            format_time(t("2026-01-02T03:04:05.5533333Z")),
            "2026-01-02T03:04:05.5533333Z"
        );
        assert_eq!(
            format_time(t("2026-01-02T03:04:05.550Z")),
            "2026-01-02T03:04:05.55Z"
        );
        assert_eq!(
            format_time(t("2026-01-02T04:04:05+01:00")),
            "2026-01-02T03:04:05Z"
        );
    }

    #[test]
    fn clip_counts_utf16_units_and_marks_the_cut() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo wörld", 5), "héll…");
        assert_eq!(units(&clip("héllo wörld", 5)), 5);
        assert_eq!(clip("abc", 0), "");
        assert_eq!(clip("abc", 1), "…");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn clip_never_splits_a_surrogate_pair() {
        // 😀 is outside the BMP: 2 UTF-16 units, 1 character, 4 UTF-8 bytes.
        let emoji = "😀".repeat(10); // 20 units
        assert_eq!(clip(&emoji, 20), emoji);
        // 19 units: 9 emoji (18) + the marker (1).
        assert_eq!(clip(&emoji, 19), format!("{}…", "😀".repeat(9)));
        // 18 units: 9 emoji would leave no room for the marker; 8 emoji + … = 17.
        assert_eq!(clip(&emoji, 18), format!("{}…", "😀".repeat(8)));
        assert_eq!(clip("😀", 1), "…");
        // Mixed text: every clip of every length stays within the limit and is whole.
        let mixed = "a😀b𝄞c漢字😀😀x";
        for max in 0..=units(mixed) + 1 {
            let out = clip(mixed, max);
            assert!(units(&out) <= max, "{max}: {out}");
            let prefix = out.trim_end_matches('…');
            assert!(mixed.starts_with(prefix), "{max}: {out}");
        }
    }

    #[test]
    fn clip_counts_cjk_as_one_unit_and_supplementary_ideographs_as_two() {
        let bmp = "漢字仮名交じり文"; // 8 BMP characters: 8 units, 24 bytes
        assert_eq!(clip(bmp, 8), bmp);
        assert_eq!(clip(bmp, 5), "漢字仮名…");
        let rare = "𠀀𠀁𠀂"; // CJK Extension B: 2 units each
        assert_eq!(clip(rare, 6), rare);
        assert_eq!(clip(rare, 5), "𠀀𠀁…");
        assert_eq!(clip(rare, 4), "𠀀…");
    }

    #[test]
    fn clip_keeps_combining_marks_and_emoji_sequences_with_their_base() {
        // "e" + combining acute: cutting between them would drop the accent silently.
        let accented = "cafe\u{301} noir";
        assert_eq!(clip(accented, 5), "caf…");
        assert_eq!(clip(accented, 6), "cafe\u{301}…");
        // A family (man ZWJ woman ZWJ girl, 8 units) is kept whole or dropped whole.
        let family = "ok 👨\u{200D}👩\u{200D}👧 fine";
        for max in 4..=11 {
            assert_eq!(clip(family, max), "ok …", "{max}");
        }
        assert_eq!(clip(family, 12), "ok 👨\u{200D}👩\u{200D}👧…");
        // Skin tone and emoji presentation selectors stay with their base.
        assert_eq!(clip("hi 👍🏽!", 6), "hi …");
        assert_eq!(clip("hi ❤\u{FE0F}!", 5), "hi …");
        assert_eq!(clip("hi ❤\u{FE0F}!!", 6), "hi ❤\u{FE0F}…");
    }

    #[test]
    fn the_native_returns_a_fitting_string_as_it_is() {
        let engine = crate::rules::sandbox::build_engine(&Default::default());
        let out: String = engine.eval(r#"clip("😀😀😀", 6)"#).unwrap();
        assert_eq!(out, "😀😀😀");
        let out: String = engine.eval(r#"clip("😀😀😀", 5)"#).unwrap();
        assert_eq!(out, "😀😀…");
    }

    #[test]
    fn summary_lines_use_the_first_path_with_values_and_skip_empty_lines() {
        let alerts = JsonView::new(Arc::new(serde_json::json!([
            {"evidence": [{"userAccount": {"accountName": "SYSTEM", "userPrincipalName": null}}], "category": "Execution"},
            {"evidence": [{"userAccount": {"accountName": "svc"}}], "category": "Execution"}
        ])));
        let spec = JsonView::new(Arc::new(serde_json::json!([
            [
                "Accounts",
                "evidence.userAccount.userPrincipalName",
                "evidence.userAccount.accountName"
            ],
            ["Devices", "evidence.deviceDnsName"],
            ["Categories", "category"]
        ])));
        assert_eq!(
            summary_lines(&alerts, &spec, 1),
            "Accounts: SYSTEM (+1 more)\nCategories: Execution"
        );
    }

    #[test]
    fn labels_are_distinct_and_never_empty() {
        let mut labels = as_labels(["a", "", "b", "a"].into_iter().map(String::from));
        add_label(&mut labels, "b");
        add_label(&mut labels, "c");
        let names: Vec<String> = labels
            .iter()
            .map(|l| label_name(l).unwrap().to_string())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn enum_keys_ignore_case_and_separators() {
        assert_eq!(enum_key("TruePositive"), "truepositive");
        assert_eq!(enum_key("true_positive"), "truepositive");
        assert_eq!(enum_key("unknownFutureValue"), "unknownfuturevalue");
    }
}
