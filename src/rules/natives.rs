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
//! | `clip(s, n)` | `s` cut to at most `n` characters, ending in `…` when cut |
//! | `distinct(list)` | the list without repeated values, first occurrence kept |
//! | `summarize(list, n)` | up to `n` items joined with `, `, plus `(+k more)` |
//! | `summary_lines(view, spec, n)` | one `Label: a, b (+k more)` line per `[label, path, fallback path…]` of `spec` whose values are not empty |
//! | `as_labels(list)` | Sentinel labels (`#{labelName}`) from strings, without empties or repeats |
//! | `labels.add_label(name)` | appends `#{labelName: name}` unless a label of that name is there |
//! | `time_cmp(a, b)` | -1, 0 or 1 as timestamp `a` is before, equal to or after `b`; `()` and non-timestamps sort first |

use super::json::JsonView;
use chrono::{DateTime, SecondsFormat, Utc};
use rhai::{Array, Dynamic, Engine, ImmutableString};
use serde_json::Value;
use std::collections::HashSet;

pub fn register(engine: &mut Engine) {
    engine.register_fn("pluck", |v: &mut JsonView, path: &str| {
        let found = pluck(v, path);
        super::engine::check_deadline().map(|()| found)
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
    engine.register_fn("clip", |s: &str, max: i64| clip(s, max.max(0) as usize));
    engine.register_fn("clip", |_: (), _: i64| String::new());
    engine.register_fn("distinct", |list: Array| distinct(list));
    engine.register_fn(
        "summary_lines",
        |v: &mut JsonView, spec: JsonView, max: i64| {
            let text = summary_lines(v, &spec, max.max(0) as usize);
            super::engine::check_deadline().map(|()| text)
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
    let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    // Leaves stay borrowed from the document, so telling them apart allocates nothing.
    let mut strings: HashSet<&str> = HashSet::new();
    let mut leaves: Vec<&Value> = Vec::new();
    walk(view.node(), &segments, &mut |leaf| match leaf {
        Value::String(s) if strings.insert(s.as_str()) => leaves.push(leaf),
        // Numbers and booleans are rare at the paths rules read: a scan is enough.
        Value::Number(_) | Value::Bool(_) if !leaves.contains(&leaf) => leaves.push(leaf),
        _ => {}
    });
    leaves.into_iter().map(|leaf| view.wrap(leaf)).collect()
}

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

pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
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

pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
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
            .map(|path| pluck(view, path))
            .find(|found| !found.is_empty());
        if let Some(values) = values {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(label.as_str().unwrap_or(""));
            out.push_str(": ");
            out.push_str(&summarize(&values, max));
        }
    }
    out
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

fn time_cmp(a: &Dynamic, b: &Dynamic) -> i64 {
    let parse = |d: &Dynamic| {
        d.read_lock::<ImmutableString>()
            .and_then(|s| parse_time(&s))
    };
    parse(a).cmp(&parse(b)) as i64
}

fn distinct(list: Array) -> Array {
    let mut seen = HashSet::new();
    list.into_iter()
        .filter(|item| seen.insert(item.to_string()))
        .collect()
}

fn summarize(list: &Array, max: usize) -> String {
    let shown: Vec<String> = list.iter().take(max).map(|d| d.to_string()).collect();
    let mut out = shown.join(", ");
    if list.len() > max {
        out.push_str(&format!(" (+{} more)", list.len() - max));
    }
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
    fn clip_counts_characters_and_marks_the_cut() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert_eq!(clip("héllo wörld", 5), "héll…");
        assert_eq!(clip("héllo", 5).chars().count(), 5);
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
