//! Field-by-field differences between two versions of a target document, for
//! `eval --explain`: what one rule changed, old → new.
//!
//! Objects are compared key by key, down to the leaves that differ, so a rule that
//! sets `owner.email` shows that one field, not the whole owner. Arrays and scalars are
//! compared as whole values: a label list that gained one label shows the list before
//! and after, which reads better than index-by-index changes of a shifted list.
//!
//! Also the cheap comparison every run makes: which top-level fields of a script
//! value an enrich rule changed ([`changed_fields`]), by structural equality.

use super::json::JsonView;
use super::pipeline::FieldDelta;
use rhai::{Dynamic, ImmutableString, Map};
use serde_json::Value;

/// Appends to `out` every change from `old` to `new` below `pointer`, in key order.
pub fn field_deltas(
    pointer: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<FieldDelta>,
) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let at = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                field_deltas(&at, a.get(key), b.get(key), out);
            }
        }
        (a, b) if a != b => out.push(FieldDelta {
            pointer: if pointer.is_empty() {
                "/".into()
            } else {
                pointer.to_string()
            },
            old: a.cloned(),
            new: b.cloned(),
        }),
        _ => {}
    }
}

/// Top-level keys whose values differ between two maps (added, removed or changed).
pub fn changed_fields(before: &Dynamic, after: &Dynamic) -> Vec<String> {
    let (Some(before), Some(after)) = (before.read_lock::<Map>(), after.read_lock::<Map>()) else {
        return Vec::new();
    };
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(k.as_str()).is_none_or(|old| !dyn_eq(old, v)))
        .map(|(k, _)| k.to_string())
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(k.as_str()))
                .map(|k| k.to_string()),
        )
        .collect();
    changed.sort();
    changed
}

/// Structural equality of script values (Rhai's `Dynamic` has none).
pub fn dyn_eq(a: &Dynamic, b: &Dynamic) -> bool {
    if a.type_id() != b.type_id() {
        return false;
    }
    // Most values are strings, and an unchanged one is still the same shared string.
    if let (Some(x), Some(y)) = (
        a.read_lock::<ImmutableString>(),
        b.read_lock::<ImmutableString>(),
    ) {
        return x.ptr_eq(&y) || *x == *y;
    }
    if a.is_unit() {
        return true;
    }
    if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.read_lock::<Map>(), b.read_lock::<Map>()) {
        return x.len() == y.len()
            && x.iter()
                .all(|(k, v)| y.get(k.as_str()).is_some_and(|w| dyn_eq(v, w)));
    }
    if let (Some(x), Some(y)) = (a.read_lock::<rhai::Array>(), b.read_lock::<rhai::Array>()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(v, w)| dyn_eq(v, w));
    }
    if let (Some(x), Some(y)) = (a.read_lock::<JsonView>(), b.read_lock::<JsonView>()) {
        return x.node() == y.node();
    }
    a.to_string() == b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_changes_are_reported_at_their_leaves() {
        let old =
            json!({"title": "a", "owner": {"email": "x@y", "ownerType": "User"}, "labels": [1]});
        let new = json!({"title": "a", "owner": {"email": "z@y", "ownerType": "User"}, "labels": [1, 2], "severity": "High"});
        let mut out = Vec::new();
        field_deltas("", Some(&old), Some(&new), &mut out);
        let shown: Vec<(String, Option<Value>, Option<Value>)> =
            out.into_iter().map(|d| (d.pointer, d.old, d.new)).collect();
        assert_eq!(
            shown,
            vec![
                ("/labels".into(), Some(json!([1])), Some(json!([1, 2]))),
                (
                    "/owner/email".into(),
                    Some(json!("x@y")),
                    Some(json!("z@y"))
                ),
                ("/severity".into(), None, Some(json!("High"))),
            ]
        );
    }
}
