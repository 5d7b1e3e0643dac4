//! JSON Schemas: the contracts every rule input, rule output and pack file is checked
//! against before anything uses it.
//!
//! The central schemas live in `schemas/` (a copy is compiled into the binary for users
//! who run rulebridge outside a checkout). They are read from memory, never fetched:
//! `$ref`s between them resolve by `$id` through an in-memory retriever, and any other
//! reference is an error — a schema cannot make rulebridge read a file or the network.
//!
//! One custom keyword is known to every schema compiled here (central or pack-local):
//! `maxLengthUtf16`, a string's maximum length in UTF-16 code units. Microsoft's
//! services are .NET, whose string length counts UTF-16 code units, while JSON Schema's
//! `maxLength` counts code points: a description of 4,000 emoji (8,000 units) passes
//! `"maxLength": 5000` and is a 400 from Sentinel. Schemas that describe what we write
//! use `maxLengthUtf16` instead of `maxLength`.

use crate::problem::Problem;
use jsonschema::paths::Location;
use jsonschema::{Keyword, Retrieve, Uri, ValidationError, Validator};
use serde_json::{Map, Value};
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
            .with_keyword(MAX_LENGTH_UTF16, max_length_utf16)
            .with_retriever(MemoryRetriever(self.documents.clone()))
            .build(schema)
            .map_err(|e| format!("not a valid JSON Schema: {e}"))
    }

    /// The schema document with this `$id` (blame reads property names from it).
    pub fn document(&self, id: &str) -> Option<&Value> {
        self.documents.get(id.trim_end_matches('#'))
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
                // The message quotes the offending value: clipped, however large.
                message: e
                    .masked_with(crate::problem::clip_display(&**e.instance()))
                    .to_string(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    out.dedup();
    out
}

/// The custom keyword: `"maxLengthUtf16": n` — a string has at most `n` UTF-16 code
/// units (what a .NET service's `string.Length` counts). Other types pass, as with
/// `maxLength`.
pub const MAX_LENGTH_UTF16: &str = "maxLengthUtf16";

/// How much of an offending value a message quotes: values are up to tens of KB.
const QUOTED_UNITS: usize = 80;

fn max_length_utf16<'a>(
    _parent: &'a Map<String, Value>,
    value: &'a Value,
    _path: Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    match value.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(limit) => Ok(Box::new(MaxLengthUtf16 { limit })),
        None => Err(ValidationError::schema(format!(
            "{MAX_LENGTH_UTF16} must be a non-negative integer, not {value}"
        ))),
    }
}

struct MaxLengthUtf16 {
    limit: usize,
}

impl<'i> Keyword<'i> for MaxLengthUtf16 {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        match instance.as_str() {
            Some(s) if !utf16::fits(s, self.limit) => {
                let units = utf16::len(s);
                let shown = Value::String(utf16::clip(s, QUOTED_UNITS));
                Err(ValidationError::custom(format!(
                    "{shown} is {units} UTF-16 code units long, more than the limit of {} \
                     (the service counts UTF-16 code units, as .NET does; an emoji counts 2)",
                    self.limit
                )))
            }
            _ => Ok(()),
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        instance.as_str().is_none_or(|s| utf16::fits(s, self.limit))
    }
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

/// Text lengths as Microsoft's services count them: UTF-16 code units. Here, not in
/// `rules`, because the schema keyword needs them and `rules` depends on `schema`;
/// the `clip` native is [`utf16::clip`].
pub mod utf16 {
    /// The marker a clipped text ends with; one UTF-16 code unit.
    pub const MARKER: char = '…';

    /// The length of `s` as .NET's `string.Length` counts it.
    pub fn len(s: &str) -> usize {
        s.encode_utf16().count()
    }

    /// Whether `s` has at most `max` UTF-16 code units. No character takes fewer UTF-8
    /// bytes than UTF-16 units, so a string of at most `max` bytes fits without counting.
    pub fn fits(s: &str, max: usize) -> bool {
        s.len() <= max || len(s) <= max
    }

    /// `s` cut to at most `max` UTF-16 code units, ending in `…` (counted) when cut.
    ///
    /// Cuts fall between characters, so a surrogate pair (an emoji, a rare CJK
    /// ideograph) is never split. A character is also never separated from the marks
    /// that extend it (combining accents, variation selectors, skin tones, the joiners of
    /// an emoji sequence): the cut moves back before the whole cluster instead, so a
    /// clipped text never ends in a stray accent or half a family emoji.
    pub fn clip(s: &str, max: usize) -> String {
        if fits(s, max) {
            return s.to_string();
        }
        if max == 0 {
            return String::new();
        }
        let budget = max - MARKER.len_utf16();
        let mut units = 0;
        let mut end = 0;
        for (i, c) in s.char_indices() {
            units += c.len_utf16();
            if units > budget {
                break;
            }
            end = i + c.len_utf8();
        }
        // Back off while the cut would split a cluster: the next character extends the
        // last kept one, or the last kept one is a joiner waiting for its partner.
        // Each step drops one character, so this is linear however long the cluster.
        loop {
            let next = s[end..].chars().next();
            let last = s[..end].chars().next_back();
            match (last, next) {
                (Some(l), _) if l == ZWJ => end -= l.len_utf8(),
                (Some(l), Some(n)) if extends(n) => end -= l.len_utf8(),
                _ => break,
            }
        }
        let mut out = String::with_capacity(end + MARKER.len_utf8());
        out.push_str(&s[..end]);
        out.push(MARKER);
        out
    }

    const ZWJ: char = '\u{200D}';

    /// Characters that belong to the character before them: combining marks of the
    /// common blocks, variation selectors, emoji skin tones and tags, and the zero-width
    /// joiner. Not the full Unicode grapheme rules (no dependency for them), which is
    /// enough for a cut that only has to look tidy; lengths are right either way.
    fn extends(c: char) -> bool {
        matches!(c,
            '\u{0300}'..='\u{036F}'     // combining diacritical marks
            | '\u{0483}'..='\u{0489}'   // Cyrillic
            | '\u{0591}'..='\u{05BD}'   // Hebrew points
            | '\u{064B}'..='\u{065F}'   // Arabic harakat
            | '\u{0900}'..='\u{0903}'   // Devanagari signs
            | '\u{093A}'..='\u{094F}'
            | '\u{1AB0}'..='\u{1AFF}'   // combining marks extended
            | '\u{1DC0}'..='\u{1DFF}'   // combining marks supplement
            | '\u{200C}'..='\u{200D}'   // zero-width non-joiner, joiner
            | '\u{20D0}'..='\u{20FF}'   // combining marks for symbols (keycaps)
            | '\u{3099}'..='\u{309A}'   // kana voicing marks
            | '\u{FE00}'..='\u{FE0F}'   // variation selectors (emoji presentation)
            | '\u{FE20}'..='\u{FE2F}'   // combining half marks
            | '\u{1F3FB}'..='\u{1F3FF}' // emoji skin tones
            | '\u{E0020}'..='\u{E007F}' // tags (subdivision flags)
            | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn max_length_utf16_needs_a_non_negative_integer() {
        let set = SchemaSet::built_in();
        for bad in [json!(-1), json!(1.5), json!("10"), json!(null)] {
            let err = set.compile(&json!({"maxLengthUtf16": bad})).unwrap_err();
            assert!(
                err.contains("maxLengthUtf16 must be a non-negative integer"),
                "{err}"
            );
        }
        let v = set.compile(&json!({"maxLengthUtf16": 3})).unwrap();
        assert!(v.is_valid(&json!("a😀")));
        assert!(!v.is_valid(&json!("ab😀")));
        assert!(v.is_valid(&json!(12345)), "only strings are measured");
    }

    #[test]
    fn a_violation_quotes_at_most_the_start_of_the_value() {
        let set = SchemaSet::built_in();
        let v = set.compile(&json!({"maxLengthUtf16": 10})).unwrap();
        let long = "é".repeat(10_000);
        let got = violations(&v, &json!(long));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pointer, "/");
        assert!(got[0].message.len() < 400, "{}", got[0].message);
        assert!(
            got[0].message.contains("10000 UTF-16 code units"),
            "{}",
            got[0].message
        );
    }
}
