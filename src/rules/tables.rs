//! Lookup tables: CSV or JSON files in the pack that scripts query through
//! `ctx.lookup(table, key)` / `ctx.in_table(table, key)` (VIP accounts, asset tiers, …).
//!
//! Every row is validated against the table's schema at load time and keys must be
//! unique, so a script never sees a malformed row and a lookup is one hash probe.

use super::manifest::{referenced_file, referenced_schema, TableSpec};
use crate::problem::Problem;
use crate::schema::{violations, SchemaSet};
use crate::snapshot::PackSnapshot;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Table {
    rows: HashMap<String, Arc<Value>>,
    case_insensitive: bool,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Arc<Value>> {
        if self.case_insensitive {
            self.rows.get(&key.to_lowercase())
        } else {
            self.rows.get(key)
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Tables(BTreeMap<String, Table>);

impl Tables {
    pub fn get(&self, name: &str) -> Option<&Table> {
        self.0.get(name)
    }

    /// Every row of every table.
    pub fn rows(&self) -> impl Iterator<Item = &Value> {
        self.0
            .values()
            .flat_map(|t| t.rows.values().map(|row| &**row))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Loads every table the manifest declares; all problems are reported, not the first.
    pub fn load(
        specs: &BTreeMap<String, TableSpec>,
        snapshot: &PackSnapshot,
        schemas: &SchemaSet,
        manifest_path: &str,
    ) -> Result<Tables, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut tables = BTreeMap::new();
        for (name, spec) in specs {
            match load_table(name, spec, snapshot, schemas, manifest_path) {
                Ok(table) => {
                    tables.insert(name.clone(), table);
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if problems.is_empty() {
            Ok(Tables(tables))
        } else {
            Err(problems)
        }
    }
}

fn load_table(
    name: &str,
    spec: &TableSpec,
    snapshot: &PackSnapshot,
    schemas: &SchemaSet,
    manifest_path: &str,
) -> Result<Table, Vec<Problem>> {
    let pointer = format!("/tables/{name}");
    let validator = referenced_schema(
        snapshot,
        schemas,
        manifest_path,
        &format!("{pointer}/schema"),
        &spec.schema,
    )?;
    let (file_rel, text) = referenced_file(
        snapshot,
        manifest_path,
        &format!("{pointer}/file"),
        "file",
        &spec.file,
    )?;
    let file_path = snapshot.display_path(&file_rel);
    // (row as JSON, where it is: a line number for CSV, an index for JSON)
    let rows: Vec<(Value, String)> = if file_rel.ends_with(".csv") {
        parse_csv(text, &file_path)?
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (v, format!("/{i}")))
                .collect(),
            Ok(_) => {
                return Err(vec![Problem::at_pointer(
                    &file_path,
                    "/",
                    "a JSON table must be an array of objects",
                )])
            }
            Err(e) => {
                return Err(vec![Problem::at(
                    &file_path,
                    Some(e.line()),
                    Some(e.column()),
                    format!("not valid JSON: {e}"),
                )])
            }
        }
    };

    let mut problems = Vec::new();
    let mut table = Table {
        rows: HashMap::with_capacity(rows.len()),
        case_insensitive: spec.case_insensitive,
    };
    for (row, at) in rows {
        let located = |pointer: String, message: String| {
            if let Some(line) = at.strip_prefix("line ") {
                Problem::at(&file_path, line.parse().ok(), None, message).with_pointer(pointer)
            } else {
                Problem::at_pointer(
                    &file_path,
                    format!("{at}{}", if pointer == "/" { "" } else { &pointer }),
                    message,
                )
            }
        };
        let bad = violations(&validator, &row);
        if !bad.is_empty() {
            problems.extend(bad.into_iter().map(|v| located(v.pointer, v.message)));
            continue;
        }
        let Some(key) = row.get(&spec.key).and_then(|k| {
            k.as_str()
                .map(str::to_string)
                .or_else(|| k.as_i64().map(|i| i.to_string()))
        }) else {
            problems.push(located(
                "/".into(),
                format!("row has no string key '{}'", spec.key),
            ));
            continue;
        };
        let key = if spec.case_insensitive {
            key.to_lowercase()
        } else {
            key
        };
        if table.rows.insert(key.clone(), Arc::new(row)).is_some() {
            problems.push(located(
                format!("/{}", spec.key),
                format!("key '{key}' appears more than once"),
            ));
        }
    }
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(problems)
    }
}

/// CSV with a header row; every cell is a string, empty cells are absent.
fn parse_csv(text: &str, file_path: &str) -> Result<Vec<(Value, String)>, Vec<Problem>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| {
            vec![Problem::in_file(
                file_path,
                format!("invalid CSV header: {e}"),
            )]
        })?
        .clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize);
            vec![Problem::at(
                file_path,
                line,
                None,
                format!("invalid CSV: {e}"),
            )]
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let mut row = serde_json::Map::new();
        for (header, cell) in headers.iter().zip(record.iter()) {
            if !cell.is_empty() {
                row.insert(header.to_string(), Value::String(cell.to_string()));
            }
        }
        rows.push((Value::Object(row), format!("line {line}")));
    }
    Ok(rows)
}
