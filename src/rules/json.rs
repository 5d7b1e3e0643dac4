//! A read-only, zero-copy view of JSON data for scripts.
//!
//! Incidents are 3–4 KB documents of which a rule reads a dozen fields. Converting the
//! whole document into Rhai values costs more than running the rule, so scripts get a
//! [`JsonView`] instead: a handle into an `Arc<serde_json::Value>` that converts only
//! the scalars a script actually touches. Objects and arrays come back as further views.
//! Views are immutable; a script that wants a mutable copy calls `to_map()` /
//! `to_array()`.
//!
//! Invariant: the `Value` behind the `Arc` is never mutated while views exist, which is
//! what makes the pointer inside a view valid (see [`JsonView::node`]).

use super::reference::FnDoc;
use rhai::{Array, Dynamic, Engine, ImmutableString, Map};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

/// A handle to one node inside a shared JSON document.
#[derive(Clone)]
pub struct JsonView {
    root: Arc<Value>,
    node: NonNull<Value>,
}

// SAFETY: `node` points into the allocation owned by `root`, which is shared and never
// mutated (nothing hands out `&mut Value` from the `Arc`), so the view is as thread-safe
// as `Arc<Value>` itself.
unsafe impl Send for JsonView {}
unsafe impl Sync for JsonView {}

impl JsonView {
    pub fn new(root: Arc<Value>) -> Self {
        let node = NonNull::from(&*root);
        JsonView { root, node }
    }

    /// The node this view stands for.
    pub fn node(&self) -> &Value {
        // SAFETY: `node` was derived from `&*self.root` (or a descendant of it) and the
        // document is immutable and kept alive by `self.root`.
        unsafe { self.node.as_ref() }
    }

    /// # Safety
    /// `value` must be a node of the document behind `self.root`: the view keeps only
    /// that document alive, so a pointer anywhere else could dangle.
    unsafe fn child(&self, value: &Value) -> Self {
        JsonView {
            root: self.root.clone(),
            node: NonNull::from(value),
        }
    }

    /// Converts a child node for a script: scalars become Rhai values, containers views.
    ///
    /// # Safety
    /// `value` must be a node of this view's document (borrowed from [`Self::node`] or
    /// below it). Crate-private: safe code outside could otherwise build a view of a
    /// value that is dropped while the view lives.
    pub(crate) unsafe fn wrap(&self, value: &Value) -> Dynamic {
        match value {
            Value::Null => Dynamic::UNIT,
            Value::Bool(b) => Dynamic::from_bool(*b),
            Value::Number(n) => number_to_dynamic(n),
            Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
            // SAFETY: the caller guarantees `value` is in this document.
            Value::Array(_) | Value::Object(_) => Dynamic::from(unsafe { self.child(value) }),
        }
    }

    pub fn get(&self, key: &str) -> Dynamic {
        match self.node() {
            // SAFETY (here and below): every value wrapped is borrowed from `self.node()`.
            Value::Object(map) => map
                .get(key)
                .map_or(Dynamic::UNIT, |v| unsafe { self.wrap(v) }),
            _ => Dynamic::UNIT,
        }
    }

    pub fn index(&self, index: i64) -> Dynamic {
        match self.node() {
            Value::Array(items) => {
                // Negative indices count from the end, as for Rhai arrays.
                let len = items.len() as i64;
                let i = if index < 0 { len + index } else { index };
                if (0..len).contains(&i) {
                    unsafe { self.wrap(&items[i as usize]) }
                } else {
                    Dynamic::UNIT
                }
            }
            _ => Dynamic::UNIT,
        }
    }

    pub fn len(&self) -> usize {
        match self.node() {
            Value::Array(items) => items.len(),
            Value::Object(map) => map.len(),
            Value::String(s) => s.chars().count(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of an array view (values of an object view), as script values.
    pub fn items(&self) -> Vec<Dynamic> {
        match self.node() {
            Value::Array(items) => items.iter().map(|v| unsafe { self.wrap(v) }).collect(),
            Value::Object(map) => map.values().map(|v| unsafe { self.wrap(v) }).collect(),
            _ => Vec::new(),
        }
    }
}

fn number_to_dynamic(n: &serde_json::Number) -> Dynamic {
    if let Some(i) = n.as_i64() {
        Dynamic::from_int(i)
    } else {
        // u64 above i64::MAX and fractions: floats, as `rhai::serde` does.
        Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Deep conversion of JSON into Rhai values (used for `to_map()` and script params).
pub fn value_to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => number_to_dynamic(n),
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(value_to_dynamic).collect()),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.as_str().into(), value_to_dynamic(v));
            }
            Dynamic::from_map(out)
        }
    }
}

/// How deep script results may nest; deeper ones are refused before any recursion
/// over them could exhaust the stack.
pub const MAX_RESULT_DEPTH: usize = 64;

/// Bytes a result stands for as JSON: every string counted each time it appears
/// (shared or not), plus a little per element. `Err` with a description once it
/// passes `limit` (the walk stops there) or nests deeper than [`MAX_RESULT_DEPTH`].
pub fn result_bytes(value: &Dynamic, limit: usize) -> Result<usize, String> {
    let mut total = 0usize;
    measure(value, 0, limit, &mut total)?;
    Ok(total)
}

fn measure(value: &Dynamic, depth: usize, limit: usize, total: &mut usize) -> Result<(), String> {
    if depth > MAX_RESULT_DEPTH {
        return Err(format!("data nested deeper than {MAX_RESULT_DEPTH} levels"));
    }
    let over = |total: usize| -> Result<(), String> {
        if total > limit {
            Err(format!("more than {limit} bytes"))
        } else {
            Ok(())
        }
    };
    if let Some(s) = value.read_lock::<ImmutableString>() {
        *total += s.len() + 8;
        return over(*total);
    }
    if let Some(array) = value.read_lock::<Array>() {
        for item in array.iter() {
            *total += 8;
            measure(item, depth + 1, limit, total)?;
        }
        return over(*total);
    }
    if let Some(map) = value.read_lock::<Map>() {
        for (k, item) in map.iter() {
            *total += k.len() + 8;
            measure(item, depth + 1, limit, total)?;
        }
        return over(*total);
    }
    if let Some(view) = value.read_lock::<JsonView>() {
        measure_json(view.node(), limit, total);
        return over(*total);
    }
    *total += 8;
    over(*total)
}

/// The same for a viewed document (which is a tree the engine parsed: not deep).
fn measure_json(value: &Value, limit: usize, total: &mut usize) {
    if *total > limit {
        return;
    }
    match value {
        Value::String(s) => *total += s.len() + 8,
        Value::Array(items) => items.iter().for_each(|v| {
            *total += 8;
            measure_json(v, limit, total)
        }),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            *total += k.len() + 8;
            measure_json(v, limit, total)
        }),
        _ => *total += 8,
    }
}

/// Why a script value could not become JSON.
#[derive(Debug, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct ToJsonError {
    pub pointer: String,
    pub message: String,
}

/// Converts a script result back into JSON. Views are copied as the JSON they stand for.
pub fn dynamic_to_value(value: &Dynamic) -> Result<Value, ToJsonError> {
    to_value(value).map_err(|(mut segments, message)| {
        segments.reverse();
        let pointer = if segments.is_empty() {
            "/".to_string()
        } else {
            segments.concat()
        };
        ToJsonError { pointer, message }
    })
}

/// On failure: the path segments from the failing value up to the root, and why.
/// The pointer is only built when something fails; this runs once per incident.
fn to_value(value: &Dynamic) -> Result<Value, (Vec<String>, String)> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    // Type tests that borrow: cloning a `Dynamic` to test it would deep-copy maps.
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| (Vec::new(), format!("{f} is not a JSON number")));
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(Value::String(s.to_string()));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(array) = value.read_lock::<Array>() {
        return array
            .iter()
            .enumerate()
            .map(|(i, item)| {
                to_value(item).map_err(|(mut at, m)| {
                    at.push(format!("/{i}"));
                    (at, m)
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(map) = value.read_lock::<Map>() {
        let mut out = serde_json::Map::with_capacity(map.len());
        for (k, item) in map.iter() {
            let item = to_value(item).map_err(|(mut at, m)| {
                at.push(format!("/{}", k.replace('~', "~0").replace('/', "~1")));
                (at, m)
            })?;
            out.insert(k.to_string(), item);
        }
        return Ok(Value::Object(out));
    }
    if let Some(view) = value.read_lock::<JsonView>() {
        return Ok(view.node().clone());
    }
    Err((
        Vec::new(),
        format!(
            "a script value of type '{}' has no JSON form",
            value.type_name()
        ),
    ))
}

/// The reference entries for [`register`] (see `reference.rs`). Field getters
/// (`get$<name>`) are one entry: `view.field`.
pub const DOCS: &[FnDoc] = &[
    FnDoc { name: "get$", signature: "view.field -> Json | scalar | ()", doc: "A field of an object view; `()` when missing or null (so `view.field ?? default` works)", example: "incident.severity", result: r#""high""# },
    FnDoc { name: "index$get$", signature: "view[key: string | int] -> Json | scalar | ()", doc: "A field by name, or an array element by index (negative counts from the end); `()` when missing", example: r#"incident.alerts[-1]["title"]"#, result: r#""Credential theft""# },
    FnDoc { name: "index$set$", signature: "view[key] = value", doc: "Refused: views are read-only (copy with `to_map()` / `to_array()` to change)", example: r#"incident.to_map().status"#, result: r#""active""# },
    FnDoc { name: "len", signature: "view.len() -> int", doc: "Number of fields (object) or elements (array), 0 otherwise", example: "{ let alerts = incident.alerts; alerts.len() }", result: "2" },
    FnDoc { name: "is_empty", signature: "view.is_empty() -> bool", doc: "Whether `len()` is 0", example: "{ let alerts = incident.alerts; alerts.is_empty() }", result: "false" },
    FnDoc { name: "is_map", signature: "view.is_map() -> bool", doc: "Whether the view is a JSON object", example: "{ let first = incident.alerts[0]; first.is_map() }", result: "true" },
    FnDoc { name: "is_array", signature: "view.is_array() -> bool", doc: "Whether the view is a JSON array", example: "{ let alerts = incident.alerts; alerts.is_array() }", result: "true" },
    FnDoc { name: "keys", signature: "view.keys() -> array", doc: "The field names of an object view (`[]` otherwise)", example: "{ let e = incident.alerts[0].evidence[1]; e.keys() }", result: r#"["userAccount"]"# },
    FnDoc { name: "values", signature: "view.values() -> array", doc: "The elements of an array view, or the field values of an object view", example: "{ let tags = incident.customTags; tags.values() }", result: r#"["Demo","","Demo"]"# },
    FnDoc { name: "to_map", signature: "view.to_map() -> map", doc: "A modifiable copy (a Rhai map or array)", example: r#"{ let e = incident.alerts[1].evidence[1]; let m = e.to_map(); m.seen = true; m }"#, result: r#"{"deviceDnsName":"dc1.contoso.com","seen":true}"# },
    FnDoc { name: "to_array", signature: "view.to_array() -> array", doc: "The elements as a modifiable array", example: r#"{ let tags = incident.customTags; let a = tags.to_array(); a.push("x"); a.len() }"#, result: "4" },
    FnDoc { name: "contains", signature: "key in view", doc: "A key of an object view, or a string or integer element of an array view", example: r#""Demo" in incident.customTags"#, result: "true" },
    FnDoc { name: "to_string", signature: "view.to_string() -> string", doc: "The view as compact JSON text (also what `${view}` in a template gives)", example: "{ let tags = incident.customTags; tags.to_string() }", result: r#""[\"Demo\",\"\",\"Demo\"]""# },
    FnDoc { name: "to_debug", signature: "view.to_debug() -> string", doc: "The same JSON text, for `debug`", example: "{ let e = incident.alerts[0].evidence[0]; e.to_debug() }", result: r#""{\"deviceDnsName\":\"pc1.contoso.com\"}""# },
    FnDoc { name: "==", signature: "view == view, view != view", doc: "Structural comparison of two views", example: "incident.alerts[0].evidence[0] == incident.alerts[1].evidence[0]", result: "true" },
    FnDoc { name: "!=", signature: "view != view", doc: "Structural inequality of two views", example: "incident.alerts[0] != incident.alerts[1]", result: "true" },
];

/// Registers the `Json` type and the functions that make a view behave like a read-only
/// map or array in scripts: `v.field`, `v["field"]`, `v[0]`, `for x in v`, `"k" in v`,
/// `v.len()`, `v.keys()`, `v.to_map()`, `v.to_array()`, `v.is_map()`, `v.is_array()`.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<JsonView>("Json");
    // `view.field` on a custom type first looks for a property getter and, failing that,
    // falls back to the indexer through an error path that costs twice as much. Getters
    // for the field names incidents and changes are known to have make the common case
    // direct; any other name still works through the indexer.
    for name in known_field_names() {
        engine.register_get(name, move |v: &mut JsonView| v.get(name));
    }
    engine.register_indexer_get(|v: &mut JsonView, key: &str| v.get(key));
    engine.register_indexer_get(|v: &mut JsonView, index: i64| v.index(index));
    engine.register_iterator::<JsonView>();
    // Writing to a view is a mistake worth explaining, not just "no setter".
    engine.register_indexer_set(
        |_: &mut JsonView, key: &str, _: Dynamic| -> Result<(), Box<rhai::EvalAltResult>> {
            Err(read_only(&format!("'{key}'")))
        },
    );
    engine.register_indexer_set(
        |_: &mut JsonView, index: i64, _: Dynamic| -> Result<(), Box<rhai::EvalAltResult>> {
            Err(read_only(&format!("[{index}]")))
        },
    );
    engine.register_fn("len", |v: &mut JsonView| v.len() as i64);
    engine.register_fn("is_empty", |v: &mut JsonView| v.is_empty());
    engine.register_fn("is_map", |v: &mut JsonView| v.node().is_object());
    engine.register_fn("is_array", |v: &mut JsonView| v.node().is_array());
    engine.register_fn("keys", |v: &mut JsonView| -> Array {
        match v.node() {
            Value::Object(map) => map
                .keys()
                .map(|k| Dynamic::from(ImmutableString::from(k.as_str())))
                .collect(),
            _ => Array::new(),
        }
    });
    engine.register_fn("values", |v: &mut JsonView| -> Array { v.items() });
    engine.register_fn("to_map", |v: &mut JsonView| value_to_dynamic(v.node()));
    engine.register_fn("to_array", |v: &mut JsonView| -> Array { v.items() });
    // `x in view`: a key of an object view, or an element of an array view.
    engine.register_fn("contains", |v: &mut JsonView, key: &str| match v.node() {
        Value::Object(map) => map.contains_key(key),
        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(key)),
        _ => false,
    });
    engine.register_fn("contains", |v: &mut JsonView, needle: i64| match v.node() {
        Value::Array(items) => items.iter().any(|item| item.as_i64() == Some(needle)),
        _ => false,
    });
    engine.register_fn("to_string", |v: &mut JsonView| v.node().to_string());
    engine.register_fn("to_debug", |v: &mut JsonView| v.node().to_string());
    engine.register_fn("==", |a: JsonView, b: JsonView| a.node() == b.node());
    engine.register_fn("!=", |a: JsonView, b: JsonView| a.node() != b.node());
}

fn read_only(what: &str) -> Box<rhai::EvalAltResult> {
    rhai::EvalAltResult::ErrorRuntime(
        format!("cannot set {what}: incidents and params are read-only Json views; make a copy with to_map() or to_array()").into(),
        rhai::Position::NONE,
    )
    .into()
}

/// Property names a pack's own data uses: the keys in its params and table rows, which
/// scripts read as `p.name` / `row.name`. They get direct getters on `Json` views like
/// the built-in names; without one, a read takes Rhai's slower indexer fallback (same
/// value, about twice the cost).
#[derive(Debug, Clone, Default)]
pub struct FieldNames(Arc<Vec<String>>);

impl PartialEq for FieldNames {
    fn eq(&self, other: &Self) -> bool {
        self.is_same(other) || self.0 == other.0
    }
}

impl FieldNames {
    /// A params block may hold a big map: past this many names, reads use the fallback.
    const MAX: usize = 1_000;

    /// The keys (at any depth) of `docs` that scripts can write as properties and that
    /// have no built-in getter yet.
    pub fn collect<'a>(docs: impl IntoIterator<Item = &'a Value>) -> Self {
        let known: BTreeSet<&str> = known_field_names().iter().copied().collect();
        let mut names = BTreeSet::new();
        for doc in docs {
            collect_keys(doc, &known, &mut names);
        }
        FieldNames(Arc::new(names.into_iter().take(Self::MAX).collect()))
    }

    /// The very same list (not merely equal names).
    pub fn is_same(&self, other: &FieldNames) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn collect_keys(value: &Value, known: &BTreeSet<&str>, names: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if is_identifier(key) && !known.contains(key.as_str()) {
                    names.insert(key.clone());
                }
                collect_keys(child, known, names);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_keys(v, known, names)),
        _ => {}
    }
}

/// Only keys that are Rhai identifiers can be written as `x.key`.
fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Registers direct getters for a pack's own field names (see [`FieldNames`]).
pub fn register_field_getters(engine: &mut Engine, names: &FieldNames) {
    for name in names.0.iter() {
        let key = name.clone();
        engine.register_get(name, move |v: &mut JsonView| v.get(&key));
    }
}

/// Property names of the built-in schemas plus the Graph alert and evidence fields the
/// rules commonly read (the input schema leaves most of those open).
fn known_field_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names: BTreeSet<&'static str> = [
            "title",
            "serviceSource",
            "detectionSource",
            "category",
            "mitreTechniques",
            "evidence",
            "firstActivityDateTime",
            "lastActivityDateTime",
            "userAccount",
            "userPrincipalName",
            "accountName",
            "domainName",
            "deviceDnsName",
            "hostName",
            "ipAddress",
            "url",
            "fileDetails",
            "fileName",
            "sha256",
            "primaryAddress",
            "upn",
            "imageFile",
            "roles",
            "verdict",
            "labelName",
            "labelType",
            "value",
            "changed",
            "changed_at",
            "field",
            "base",
            "defender",
            "sentinel",
            "conflict",
            "name",
            "etag",
            "properties",
        ]
        .into_iter()
        .collect();
        for (_, text) in crate::schema::BUILT_IN {
            if let Ok(schema) = serde_json::from_str::<Value>(text) {
                collect_property_names(&schema, &mut names);
            }
        }
        names.into_iter().collect()
    })
}

fn collect_property_names(schema: &Value, names: &mut BTreeSet<&'static str>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                for key in props.keys() {
                    if !names.contains(key.as_str()) {
                        // Leaked once per process: a few hundred bytes of names.
                        names.insert(Box::leak(key.clone().into_boxed_str()));
                    }
                }
            }
            map.values().for_each(|v| collect_property_names(v, names));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_property_names(v, names)),
        _ => {}
    }
}

impl IntoIterator for JsonView {
    type Item = Dynamic;
    type IntoIter = std::vec::IntoIter<Dynamic>;
    fn into_iter(self) -> Self::IntoIter {
        self.items().into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Scope;

    #[test]
    fn pack_field_names_are_identifiers_at_any_depth_without_built_in_ones() {
        let params = serde_json::json!({
            "max_listed": 10,
            "status": {"inprogress": "Active"},
            "labels by tier": {"tier_0": "crown-jewel"},
            "summary": [["Hosts", "evidence.deviceDnsName"]]
        });
        let names = FieldNames::collect([&params]);
        // "status" and "summary" (incident fields) have built-in getters; "labels by tier"
        // cannot be written as a property.
        assert_eq!(*names.0, ["inprogress", "max_listed", "tier_0"]);
    }

    #[test]
    fn a_registered_field_getter_reads_what_the_indexer_reads() {
        let params = Arc::new(serde_json::json!({"max_listed": 10, "tiers": {"tier_0": "gold"}}));
        let mut engine = Engine::new_raw();
        register(&mut engine);
        register_field_getters(&mut engine, &FieldNames::collect([&*params]));
        let mut scope = Scope::new();
        scope.push("p", JsonView::new(params));
        let read = |script: &str| {
            engine
                .eval_with_scope::<Dynamic>(&mut scope.clone(), script)
                .unwrap()
                .to_string()
        };
        assert_eq!(read("p.max_listed"), "10");
        assert_eq!(read("p.tiers.tier_0"), read(r#"p["tiers"]["tier_0"]"#));
        assert_eq!(read("p.tiers.tier_0"), "gold");
        // Names the pack does not use still work, through the indexer.
        assert_eq!(read("p.missing"), "");
    }
}
