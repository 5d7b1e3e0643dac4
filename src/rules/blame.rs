//! Who is to blame for an output that fails its schema, and what exactly is wrong.
//!
//! The pipeline's target document is built by several rules (map rules contribute
//! fields, enrich rules change them), so a schema failure at a field is the fault of
//! the rule that *last wrote that field*, at any depth: found by comparing the value at
//! the failing pointer in the document after each step. The same answer comes out
//! whichever way the pipeline ran (with or without `explain`), because the pipeline
//! re-runs a failing incident with per-step documents before blaming (rules are pure,
//! so the re-run sees the same values).
//!
//! The violation itself is described from the schema error's kind, not from
//! jsonschema's display text: the pointer goes down to the offending field (an
//! unexpected or missing property is named, not its parent object), and an enum
//! failure lists every allowed value (jsonschema's text stops after two).

use super::pipeline::ExplainStep;
use crate::model::Stage;
use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::Value;

/// One schema violation of an output body, described for a rule author.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputViolation {
    /// JSON pointer into the body, down to the offending field.
    pub pointer: String,
    pub message: String,
}

/// The first violation of `body` (in document order), or `None` if it is valid.
/// `schema` is the schema document, for the property names an unexpected field is
/// compared with.
/// With `values_only`, only violations of a value itself count (a wrong type, a value
/// not in an enum, an unknown field), not a missing field or a rule across fields: what
/// an intermediate document, which later rules complete, must already get right.
pub fn first_violation(
    validator: &Validator,
    schema: Option<&Value>,
    body: &Value,
    values_only: bool,
) -> Option<OutputViolation> {
    if validator.is_valid(body) {
        return None;
    }
    let mut found: Vec<OutputViolation> = validator
        .iter_errors(body)
        .filter(|e| {
            !values_only || {
                let path = e.schema_path().to_string();
                !matches!(e.kind(), ValidationErrorKind::Required { .. })
                    && ![
                        "/allOf", "/anyOf", "/oneOf", "/if", "/then", "/else", "/not",
                    ]
                    .iter()
                    .any(|k| path.contains(k))
            }
        })
        .map(|e| {
            describe(
                e.kind(),
                &e.instance_path().to_string(),
                &e.schema_path().to_string(),
                e.instance(),
                schema,
                &e.to_string(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    found.into_iter().next()
}

fn describe(
    kind: &ValidationErrorKind,
    at: &str,
    schema_path: &str,
    instance: &Value,
    schema: Option<&Value>,
    fallback: &str,
) -> OutputViolation {
    let shown = crate::problem::clip_display(instance);
    match kind {
        ValidationErrorKind::Enum { options } => {
            let allowed = options
                .as_array()
                .map(|o| {
                    o.iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| options.to_string());
            OutputViolation {
                pointer: at.to_string(),
                message: format!("{shown} is not one of {allowed}"),
            }
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let name = unexpected.first().cloned().unwrap_or_default();
            // The parent schema of `…/additionalProperties` lists the fields it knows.
            let known: Vec<String> = schema
                .and_then(|s| s.pointer(schema_path.trim_end_matches("/additionalProperties")))
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            let hint = match closest(&name, &known) {
                Some(near) => format!("; did you mean '{near}'?"),
                None if !known.is_empty() => format!("; fields here: {}", known.join(", ")),
                None => String::new(),
            };
            let more = if unexpected.len() > 1 {
                format!(
                    " (and {} more: {})",
                    unexpected.len() - 1,
                    unexpected[1..].join(", ")
                )
            } else {
                String::new()
            };
            OutputViolation {
                pointer: format!("{}/{}", at.trim_end_matches('/'), escape(&name)),
                message: format!("'{name}' is not a field the schema allows here{more}{hint}"),
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            OutputViolation {
                pointer: format!("{}/{}", at.trim_end_matches('/'), escape(&name)),
                message: format!("required field '{name}' is missing"),
            }
        }
        _ => OutputViolation {
            pointer: if at.is_empty() {
                "/".into()
            } else {
                at.to_string()
            },
            message: fallback.to_string(),
        },
    }
}

/// A JSON pointer token for `name` (RFC 6901).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The known name within edit distance 2 of `name` (the closest), for did-you-mean.
pub fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2 && *d < name.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance over characters (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The step that last wrote the target at `pointer` (relative to the target, e.g.
/// `/labels/0/labelName`), judged from the documents the steps kept. A field nobody
/// wrote (a missing required one) walks up to its nearest written parent; failing
/// that, the first map rule is to blame (map rules are the ones that set fields).
pub fn culprit<'s>(steps: &'s [ExplainStep], pointer: &str) -> Option<&'s ExplainStep> {
    let writers: Vec<&ExplainStep> = steps
        .iter()
        .filter(|s| matches!(s.stage, Stage::Map | Stage::Enrich))
        .collect();
    let mut at = pointer.to_string();
    loop {
        if let Some(step) = last_writer(&writers, &at) {
            return Some(step);
        }
        match at.rfind('/') {
            Some(cut) if !at.is_empty() => at.truncate(cut),
            _ => break,
        }
    }
    writers.into_iter().find(|s| s.stage == Stage::Map)
}

/// The last step after which the value at `pointer` differs from the one before it.
/// Without documents (not kept), the top-level field names the steps changed decide.
fn last_writer<'s>(writers: &[&'s ExplainStep], pointer: &str) -> Option<&'s ExplainStep> {
    if pointer.is_empty() {
        return None;
    }
    if writers.iter().any(|s| s.document.is_none()) {
        let field = pointer
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        let field = field.replace("~1", "/").replace("~0", "~");
        return writers
            .iter()
            .rev()
            .find(|s| s.changed.contains(&field))
            .copied();
    }
    let mut before: Option<&Value> = None;
    let mut found = None;
    for step in writers {
        let now = step.document.as_ref().and_then(|d| d.pointer(pointer));
        // A map rule's document accumulates; an enrich rule's replaces it.
        if now != before {
            found = Some(*step);
        }
        before = now;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_are_suggested_and_far_ones_are_not() {
        let known: Vec<String> = ["labels", "title", "severity"].map(String::from).to_vec();
        assert_eq!(closest("lables", &known), Some("labels"));
        assert_eq!(closest("severty", &known), Some("severity"));
        assert_eq!(closest("owner", &known), None);
    }
}
