//! JSON Schemas: the contracts every rule input, rule output and pack file is checked
//! against before anything uses it.
//!
//! The central schemas live in `schemas/` (a copy is compiled into the binary for users
//! who run rulebridge outside a checkout). They are read from memory, never fetched:
//! `$ref`s between them resolve by `$id` through an in-memory retriever, and any other
//! reference is an error — a schema cannot make rulebridge read a file or the network.

use crate::problem::Problem;
use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The schemas rulebridge itself needs, by file name.
pub const SENTINEL_INCIDENT: &str = "sentinel-incident.schema.json";
pub const DEFENDER_INCIDENT: &str = "defender-incident.schema.json";
pub const DEFENDER_UPDATE: &str = "defender-incident-update.schema.json";
pub const RULE_PACK: &str = "rule-pack.schema.json";
pub const PACK_TEST: &str = "pack-test.schema.json";
pub const CONFIG: &str = "config.schema.json";
/// Must be in a schemas folder. `CONFIG` is not: the configuration names the schemas
/// folder, so it is always checked against the built-in copy.
const REQUIRED: [&str; 5] = [
    SENTINEL_INCIDENT,
    DEFENDER_INCIDENT,
    DEFENDER_UPDATE,
    RULE_PACK,
    PACK_TEST,
];

/// The schema files shipped with rulebridge, used when no `schemas/` folder is given.
pub const BUILT_IN: [(&str, &str); 6] = [
    (
        SENTINEL_INCIDENT,
        include_str!("../schemas/sentinel-incident.schema.json"),
    ),
    (
        DEFENDER_INCIDENT,
        include_str!("../schemas/defender-incident.schema.json"),
    ),
    (
        DEFENDER_UPDATE,
        include_str!("../schemas/defender-incident-update.schema.json"),
    ),
    (RULE_PACK, include_str!("../schemas/rule-pack.schema.json")),
    (PACK_TEST, include_str!("../schemas/pack-test.schema.json")),
    (CONFIG, include_str!("../schemas/config.schema.json")),
];

/// One violation: where in the document, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

/// Compiled central schemas plus the documents, so pack-local schemas can `$ref` them.
pub struct SchemaSet {
    validators: HashMap<String, Arc<Validator>>,
    documents: Arc<HashMap<String, Value>>,
}

impl SchemaSet {
    /// Compiles every `*.schema.json` in `files` (name → bytes). `label` is the folder
    /// the files came from, for messages.
    pub fn from_files(
        files: &BTreeMap<String, Vec<u8>>,
        label: &str,
    ) -> Result<SchemaSet, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut parsed = Vec::new();
        let mut documents = HashMap::new();
        for (name, bytes) in files.iter().filter(|(n, _)| n.ends_with(".schema.json")) {
            let path = format!("{label}/{name}");
            match serde_json::from_slice::<Value>(bytes) {
                Ok(doc) => {
                    if let Some(id) = doc.get("$id").and_then(Value::as_str) {
                        documents.insert(id.trim_end_matches('#').to_string(), doc.clone());
                    }
                    parsed.push((name.clone(), path, doc));
                }
                Err(e) => problems.push(Problem::at(
                    path,
                    Some(e.line()),
                    Some(e.column()),
                    format!("not valid JSON: {e}"),
                )),
            }
        }
        let documents = Arc::new(documents);
        let mut set = SchemaSet {
            validators: HashMap::new(),
            documents,
        };
        for (name, path, doc) in parsed {
            match set.compile(&doc) {
                Ok(v) => {
                    set.validators.insert(name, Arc::new(v));
                }
                Err(message) => problems.push(Problem::in_file(path, message)),
            }
        }
        for name in REQUIRED {
            if !set.validators.contains_key(name) && !files.contains_key(name) {
                problems.push(Problem::in_file(
                    format!("{label}/{name}"),
                    "required schema is missing",
                ));
            }
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    /// The schemas compiled into the binary.
    pub fn built_in() -> SchemaSet {
        let files = BUILT_IN
            .iter()
            .map(|(n, s)| (n.to_string(), s.as_bytes().to_vec()))
            .collect();
        SchemaSet::from_files(&files, "<built-in schemas>").expect("built-in schemas are valid")
    }

    /// Compiles a schema (a central one or one from a rule pack) against this set.
    pub fn compile(&self, schema: &Value) -> Result<Validator, String> {
        jsonschema::options()
            .should_validate_formats(true)
            .with_retriever(MemoryRetriever(self.documents.clone()))
            .build(schema)
            .map_err(|e| format!("not a valid JSON Schema: {e}"))
    }

    pub fn validator(&self, name: &str) -> Option<&Arc<Validator>> {
        self.validators.get(name)
    }

    /// Validates `instance` against the named central schema.
    pub fn check(&self, name: &str, instance: &Value) -> Vec<Violation> {
        match self.validators.get(name) {
            Some(v) => violations(v, instance),
            None => vec![Violation {
                pointer: "/".into(),
                message: format!("schema {name} is not loaded"),
            }],
        }
    }
}

/// Every violation of `validator` by `instance`, in document order.
pub fn violations(validator: &Validator, instance: &Value) -> Vec<Violation> {
    // The valid case is the common one, and `is_valid` is about twice as fast.
    if validator.is_valid(instance) {
        return Vec::new();
    }
    let mut out: Vec<Violation> = validator
        .iter_errors(instance)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            Violation {
                pointer: if pointer.is_empty() {
                    "/".into()
                } else {
                    pointer
                },
                message: e.to_string(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    out.dedup();
    out
}

/// Serves `$ref`s from the loaded schema documents; anything else is refused.
struct MemoryRetriever(Arc<HashMap<String, Value>>);

impl Retrieve for MemoryRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str().trim_end_matches('#');
        self.0.get(key).cloned().ok_or_else(|| {
            format!(
                "reference to '{key}' is not one of the loaded schemas (schemas are never fetched)"
            )
            .into()
        })
    }
}
