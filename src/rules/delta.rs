//! Field-by-field differences between two versions of a target document, for
//! `eval --explain`: what one rule changed, old → new.
//!
//! Objects are compared key by key, down to the leaves that differ, so a rule that
//! sets `owner.email` shows that one field, not the whole owner. Arrays and scalars are
//! compared as whole values: a label list that gained one label shows the list before
//! and after, which reads better than index-by-index changes of a shifted list.

use super::pipeline::FieldDelta;
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
