//! A rule's `params` from `pack.toml`, validated against the rule's `params_schema`.
//!
//! Params are data the author writes in the manifest, so each violation is reported
//! where the author wrote it: the `pack.toml` line and column of the offending value
//! (found by its JSON pointer), naming the rule and the schema it must match.

use super::lint::codes;
use super::manifest::{referenced_schema, toml_location, RuleSpec, MANIFEST};
use crate::problem::Problem;
use crate::schema::{violations, SchemaSet};
use crate::snapshot::PackSnapshot;
use serde_json::Value;

/// Validates a rule's params against its params schema; absent params count as `{}`.
pub fn check_params(
    snapshot: &PackSnapshot,
    schemas: &SchemaSet,
    spec: &RuleSpec,
    manifest_path: &str,
    pointer: &str,
) -> Result<Value, Vec<Problem>> {
    let params = spec
        .params
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let Some(schema_rel) = &spec.params_schema else {
        return Ok(params);
    };
    let validator = referenced_schema(
        snapshot,
        schemas,
        manifest_path,
        &format!("{pointer}/params_schema"),
        schema_rel,
    )?;
    let bad = violations(&validator, &params);
    if bad.is_empty() {
        Ok(params)
    } else {
        let text = snapshot.text(MANIFEST).and_then(Result::ok).unwrap_or("");
        Err(bad
            .into_iter()
            .map(|v| {
                let at = if v.pointer == "/" {
                    String::new()
                } else {
                    v.pointer
                };
                let full = format!("{pointer}/params{at}");
                let stage = pointer.split('/').nth(1).unwrap_or("");
                let message = format!("rule '{}' ({stage}): params{at}: {}", spec.name, v.message);
                let hint = format!(
                    "the params must match {}",
                    spec.params_schema.as_deref().unwrap_or("the params schema")
                );
                match toml_location(text, &full) {
                    Some((line, col)) => Problem::at(manifest_path, Some(line), Some(col), message),
                    None => Problem::at_pointer(manifest_path, full, message),
                }
                .with_code(codes::BAD_PARAMS)
                .with_hint(hint)
            })
            .collect())
    }
}
