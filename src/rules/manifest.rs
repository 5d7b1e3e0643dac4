//! The rule pack manifest, `pack.toml`: which rules run in which stage, in what order,
//! with which params; which lookup tables exist; the pack's limits.
//!
//! The TOML is parsed, converted to JSON and validated against
//! `schemas/rule-pack.schema.json` before it is read into these types, so unknown keys
//! and wrong types are reported as `pack.toml: /json/pointer: message`, all at once.

use super::sandbox::Limits;
use crate::model::Stage;
use crate::problem::{line_col, Problem};
use crate::schema::{self, SchemaSet};
use crate::snapshot::{confine, PackSnapshot};
use jsonschema::Validator;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

pub const MANIFEST: &str = "pack.toml";

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub tables: BTreeMap<String, TableSpec>,
    #[serde(default)]
    pub filter: Vec<RuleSpec>,
    #[serde(default)]
    pub map: Vec<RuleSpec>,
    #[serde(default)]
    pub enrich: Vec<RuleSpec>,
    #[serde(default)]
    pub direction: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub script: String,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub params_schema: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct TableSpec {
    pub file: String,
    pub key: String,
    #[serde(default)]
    pub case_insensitive: bool,
    pub schema: String,
}

impl Manifest {
    pub fn rules(&self, stage: Stage) -> &[RuleSpec] {
        match stage {
            Stage::Filter => &self.filter,
            Stage::Map => &self.map,
            Stage::Enrich => &self.enrich,
            Stage::Direction => &self.direction,
        }
    }

    /// Reads and validates `pack.toml` from the snapshot.
    pub fn load(snapshot: &PackSnapshot, schemas: &SchemaSet) -> Result<Manifest, Vec<Problem>> {
        let path = snapshot.display_path(MANIFEST);
        let text = match snapshot.text(MANIFEST) {
            None => {
                return Err(vec![Problem::in_file(
                    path,
                    "no manifest: a rule pack needs a pack.toml",
                )])
            }
            Some(Err(problem)) => return Err(vec![problem]),
            Some(Ok(text)) => text,
        };
        let json = crate::toml_json::parse(text, &path).map_err(|p| vec![p])?;
        let violations = schemas.check(schema::RULE_PACK, &json);
        if !violations.is_empty() {
            let mut problems: Vec<Problem> = violations
                .into_iter()
                .map(|v| Problem::at_pointer(&path, v.pointer, v.message))
                .collect();
            locate_in_manifest(&mut problems, &path, text, |stage, i| {
                json.pointer(&format!("/{stage}/{i}/name"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            return Err(problems);
        }
        let manifest: Manifest = serde_json::from_value(json)
            .map_err(|e| vec![Problem::in_file(&path, format!("invalid manifest: {e}"))])?;
        let mut seen = HashSet::new();
        let mut problems = Vec::new();
        for stage in Stage::ALL {
            for (i, rule) in manifest.rules(stage).iter().enumerate() {
                if !seen.insert(rule.name.as_str()) {
                    problems.push(Problem::at_pointer(
                        &path,
                        format!("/{stage}/{i}/name"),
                        format!("rule name '{}' is used twice; audit rows name rules, so names must be unique", rule.name),
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(manifest)
        } else {
            locate_in_manifest(&mut problems, &path, text, |stage, i| {
                manifest.rule_name(stage, i)
            });
            Err(problems)
        }
    }

    /// The name of the `i`th rule of a stage (by its name in pack.toml).
    pub fn rule_name(&self, stage: &str, i: usize) -> Option<String> {
        let stage = Stage::ALL.into_iter().find(|s| s.to_string() == stage)?;
        self.rules(stage).get(i).map(|r| r.name.clone())
    }
}

/// Gives every problem that points into the manifest by JSON pointer its `pack.toml`
/// line and column, and names the rule it is about (`rule 'keep' (filter): …`), so the
/// author finds it without counting `[[filter]]` tables.
pub fn locate_in_manifest(
    problems: &mut [Problem],
    manifest_path: &str,
    text: &str,
    rule_name: impl Fn(&str, usize) -> Option<String>,
) {
    for p in problems.iter_mut() {
        let Some(pointer) = p.pointer.clone() else {
            continue;
        };
        if p.file != manifest_path || p.line.is_some() {
            continue;
        }
        // An unknown key is located at the key itself.
        let key = p
            .message
            .split('\'')
            .nth(1)
            .filter(|_| p.message.ends_with("was unexpected)"));
        let target = match key {
            Some(key) => format!("{}/{key}", pointer.trim_end_matches('/')),
            None => pointer.clone(),
        };
        if target != "/" {
            if let Some(start) = toml_span(text, &target, key.is_some()) {
                let (line, col) = line_col(text, start);
                p.line = Some(line);
                p.col = Some(col);
            }
        }
        let mut parts = pointer.split('/').skip(1);
        if let (Some(stage), Some(Ok(i))) = (parts.next(), parts.next().map(str::parse::<usize>)) {
            if let Some(name) = rule_name(stage, i) {
                p.message = format!("rule '{name}' ({stage}): {}", p.message);
            }
        }
    }
}

/// A pack file the manifest names at `pointer` (`what` says what kind, for the message):
/// its confined relative path and its text.
pub fn referenced_file<'s>(
    snapshot: &'s PackSnapshot,
    manifest_path: &str,
    pointer: &str,
    what: &str,
    rel: &str,
) -> Result<(String, &'s str), Vec<Problem>> {
    let rel = confine(rel).map_err(|m| vec![Problem::at_pointer(manifest_path, pointer, m)])?;
    match snapshot.text(&rel) {
        None => Err(vec![Problem::at_pointer(
            manifest_path,
            pointer,
            format!("{what} '{}' does not exist", snapshot.display_path(&rel)),
        )]),
        Some(Err(problem)) => Err(vec![problem]),
        Some(Ok(text)) => Ok((rel, text)),
    }
}

/// A JSON Schema file the manifest names at `pointer` (a params or table-row schema),
/// compiled against the central schemas so it may `$ref` them.
pub fn referenced_schema(
    snapshot: &PackSnapshot,
    schemas: &SchemaSet,
    manifest_path: &str,
    pointer: &str,
    rel: &str,
) -> Result<Validator, Vec<Problem>> {
    let (rel, text) = referenced_file(snapshot, manifest_path, pointer, "schema", rel)?;
    let path = snapshot.display_path(&rel);
    let schema: Value = serde_json::from_str(text).map_err(|e| {
        vec![Problem::at(
            &path,
            Some(e.line()),
            Some(e.column()),
            format!("not valid JSON: {e}"),
        )]
    })?;
    schemas
        .compile(&schema)
        .map_err(|m| vec![Problem::in_file(&path, m)])
}

/// Where the value at a JSON `pointer` of the manifest is written in `pack.toml`: the
/// 1-based line and column of its TOML span (the pointer's deepest part that exists,
/// so a missing key points at its table). `None` if the text does not parse.
pub fn toml_location(text: &str, pointer: &str) -> Option<(usize, usize)> {
    toml_span(text, pointer, false).map(|start| line_col(text, start))
}

/// The byte offset where the pointer's value (or, with `at_key`, its key) starts.
fn toml_span(text: &str, pointer: &str, at_key: bool) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut span = root.span();
    let mut table: Option<&DeTable> = Some(root.get_ref());
    let mut array: Option<&[toml::Spanned<DeValue>]> = None;
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        let part = part.replace("~1", "/").replace("~0", "~");
        let (key_span, value) = if let Some(t) = table {
            match t.iter().find(|(k, _)| k.get_ref().as_ref() == part) {
                Some((k, v)) => (Some(k.span()), Some(v)),
                None => (None, None),
            }
        } else if let Some(a) = array {
            (None, part.parse::<usize>().ok().and_then(|i| a.get(i)))
        } else {
            (None, None)
        };
        let Some(value) = value else { break };
        span = match key_span {
            Some(k) if at_key => k,
            _ => value.span(),
        };
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    Some(span.start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn datetimes_in_params_are_strings_as_in_the_config() {
        let text = "name = \"p\"\n\
                    [[map]]\nname = \"m\"\nscript = \"m.rhai\"\n\
                    [[direction]]\nname = \"d\"\nscript = \"d.rhai\"\n\
                    [[filter]]\nname = \"f\"\nscript = \"f.rhai\"\nparams_schema = \"f.json\"\n\
                    [filter.params]\nsince = 2026-03-01T10:00:00.1234567Z\nholiday = 2026-12-24\nopens = 09:00:00\n";
        let files = [(MANIFEST.to_string(), text.as_bytes().to_vec())].into();
        let snapshot =
            PackSnapshot::from_memory("p".into(), files, "s".into(), Default::default()).unwrap();
        let manifest = Manifest::load(&snapshot, &SchemaSet::built_in()).unwrap();
        assert_eq!(
            manifest.filter[0].params,
            Some(json!({
                "since": "2026-03-01T10:00:00.1234567Z",
                "holiday": "2026-12-24",
                "opens": "09:00:00"
            }))
        );
    }

    #[test]
    fn finds_the_toml_line_of_a_pointer() {
        let text = "name = \"x\"\n\n[[filter]]\nname = \"a\"\n[[filter]]\nname = \"b\"\n[filter.params]\nthreshold = 5\n";
        assert_eq!(
            toml_location(text, "/filter/1/params/threshold"),
            Some((8, 13))
        );
        // A key that is not there points at the deepest part that is.
        assert_eq!(
            toml_location(text, "/filter/1/params/nope").map(|l| l.0),
            Some(7)
        );
    }
}
