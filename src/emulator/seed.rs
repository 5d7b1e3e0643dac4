//! Seed data for the emulator's Graph side: incidents loaded from files (a single
//! incident, a Graph list response `{"value": [...]}`, a JSON array, or JSONL with one
//! of those per line) and incidents made up by a deterministic generator
//! ([`generate`], in `seed/generator.rs`).
//!
//! Loading is strict about what a file *is* (a Sentinel resource or a Graph alert is
//! refused with the reason, so a wrong file is never half-seeded) and tolerant about
//! what an incident *contains*: real payloads' quirks are the point of seeding them.

mod generator;

pub(crate) use generator::ANALYSTS;
pub use generator::{generate, generate_open_share};

use super::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a seed file could not be loaded. Every variant names the file; JSONL problems
/// also name the 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    // The io error is in the message, so it is not also a `source` (which `{:#}`
    // printing would show a second time).
    #[error("{}: cannot read: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}:{column}: invalid JSON: {message}", .path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}:{line}: {message}", .path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", .path.display())]
    NotIncidents { path: PathBuf, message: String },
}

/// Reads one seed file; returns the Graph incident objects in it, in file order.
///
/// `.jsonl` / `.ndjson` files are read line by line. Other files are parsed as one JSON
/// document first and, only if that fails and the first non-empty line is a JSON
/// document on its own, as JSONL, so a pretty-printed file with a typo reports the
/// typo's position rather than "line 1 is not JSON".
pub fn load_seed_file(path: &Path) -> Result<Vec<Value>, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|error| SeedError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let jsonl_by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"));
    if !jsonl_by_name {
        match serde_json::from_str::<Value>(&text) {
            Ok(doc) => {
                return incidents_of(doc).map_err(|message| SeedError::NotIncidents {
                    path: path.to_path_buf(),
                    message,
                })
            }
            Err(e) if !looks_like_jsonl(&text) => {
                return Err(SeedError::Json {
                    path: path.to_path_buf(),
                    line: e.line(),
                    column: e.column(),
                    message: without_position(&e),
                })
            }
            Err(_) => {}
        }
    }
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_error = |message: String| SeedError::Line {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let doc = serde_json::from_str::<Value>(line).map_err(|e| {
            line_error(format!(
                "invalid JSON at column {}: {}",
                e.column(),
                without_position(&e)
            ))
        })?;
        out.extend(incidents_of(doc).map_err(line_error)?);
    }
    Ok(out)
}

/// Two or more non-empty lines, the first of which parses on its own.
fn looks_like_jsonl(text: &str) -> bool {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next();
    lines.next().is_some() && first.is_some_and(|l| serde_json::from_str::<Value>(l).is_ok())
}

/// serde_json's message without its " at line L column C" tail (the error variant
/// carries the position, in the file's terms).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&tail).unwrap_or(&text).to_string()
}

/// The incidents in one JSON document: an incident, a list response or an array.
fn incidents_of(doc: Value) -> Result<Vec<Value>, String> {
    match doc {
        Value::Object(mut map) if map.get("value").is_some_and(Value::is_array) => {
            let Some(Value::Array(items)) = map.remove("value") else {
                unreachable!("checked above")
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| check_incident(item).map_err(|m| format!("value[{i}]: {m}")))
                .collect()
        }
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| check_incident(item).map_err(|m| format!("[{i}]: {m}")))
            .collect(),
        other @ Value::Object(_) => Ok(vec![check_incident(other)?]),
        other => Err(format!(
            "expected a Graph incident, a list response {{\"value\": [...]}} or an array, found {}",
            kind_of(&other)
        )),
    }
}

/// One Graph incident: an object with a string `id`, not some other resource.
fn check_incident(item: Value) -> Result<Value, String> {
    let Value::Object(map) = &item else {
        return Err(format!(
            "expected an incident object, found {}",
            kind_of(&item)
        ));
    };
    // Refuse look-alikes explicitly: both have string ids, and seeding one would put
    // nonsense on the Graph side without any error.
    if let Some(t) = map.get("@odata.type").and_then(Value::as_str) {
        // The same rule as schemas/defender-incident.schema.json: what is seeded must be
        // what the sync accepts.
        if t.strip_prefix('#').unwrap_or(t) != "microsoft.graph.security.incident" {
            return Err(format!(
                "this is a {t}, not a microsoft.graph.security.incident"
            ));
        }
    }
    if map.get("properties").is_some_and(Value::is_object) && map.contains_key("name") {
        return Err(
            "this looks like a Sentinel incident resource; seed files hold Graph incidents".into(),
        );
    }
    match map.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(item),
        Some(other) => Err(format!(
            "the incident id must be a non-empty string, found {other}"
        )),
        None => Err("the incident has no 'id'".into()),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Store {
    /// Seeds many Graph incidents (see [`Store::seed_graph`]); returns how many. All or
    /// nothing: every incident is checked before any is stored.
    pub fn seed_many(&mut self, incidents: Vec<Value>) -> Result<usize, String> {
        if let Some((i, _)) = incidents
            .iter()
            .enumerate()
            .find(|(_, v)| !v["id"].is_string())
        {
            return Err(format!("incident {i}: a Graph incident needs a string id"));
        }
        let n = incidents.len();
        for incident in incidents {
            self.seed_graph(incident)?;
        }
        Ok(n)
    }
}
