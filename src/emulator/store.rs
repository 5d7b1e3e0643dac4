//! The emulator's state: both sides' incidents, comments, issued tokens, paging
//! snapshots and a log of every request. Plain data behind one mutex; the HTTP layer
//! (`server.rs`) only translates requests into calls on it.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// An API error as the service returns it: the status and its error body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NotFound", message)
    }
    /// Both APIs wrap errors as `{"error": {"code", "message"}}` (Graph's OData error and
    /// ARM's CloudError have that shape in common).
    pub fn body(&self) -> Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

/// One request the emulator received, for tests and the control API.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
    pub status: u16,
}

/// A list walk frozen at its first page, so every page of it comes from one snapshot:
/// no incident is skipped or repeated while others are updated during the walk.
pub struct Snapshot {
    pub items: Vec<Value>,
}

pub struct Store {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// Graph incidents by id.
    pub graph: BTreeMap<String, Value>,
    /// Sentinel incident resources by name (the caller-chosen id).
    pub sentinel: BTreeMap<String, Value>,
    /// Sentinel comments: incident name → comment name → resource.
    pub sentinel_comments: BTreeMap<String, BTreeMap<String, Value>>,
    pub tokens: HashMap<String, DateTime<Utc>>,
    pub snapshots: HashMap<String, Snapshot>,
    pub requests: Vec<RequestRecord>,
    pub token_lifetime: Duration,
    last_tick: DateTime<Utc>,
    counter: u64,
}

impl Store {
    pub fn new(tenant: &str, client_id: &str, client_secret: &str) -> Store {
        Store {
            tenant: tenant.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            graph: BTreeMap::new(),
            sentinel: BTreeMap::new(),
            sentinel_comments: BTreeMap::new(),
            tokens: HashMap::new(),
            snapshots: HashMap::new(),
            requests: Vec::new(),
            token_lifetime: Duration::seconds(3599),
            last_tick: DateTime::<Utc>::MIN_UTC,
            counter: 0,
        }
    }

    /// The time of a write: now, but strictly after the previous write, so two changes
    /// within the same second (or tick) always have different, ordered stamps.
    pub fn tick(&mut self) -> String {
        let now = Utc::now().max(self.last_tick + Duration::microseconds(1));
        self.last_tick = now;
        now.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// A fresh opaque identifier (tokens, etags, skip tokens).
    pub fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!(
            "{prefix}{:016x}{:08x}",
            Utc::now().timestamp_nanos_opt().unwrap_or(0),
            self.counter
        )
    }

    /// Adds or replaces a Graph incident (seed data). Missing stamps are filled in.
    pub fn seed_graph(&mut self, mut incident: Value) -> Result<(), String> {
        let id = incident["id"]
            .as_str()
            .ok_or("a Graph incident needs a string id")?
            .to_string();
        let now = self.tick();
        let map = incident
            .as_object_mut()
            .ok_or("a Graph incident is a JSON object")?;
        map.remove("@odata.context");
        for stamp in ["createdDateTime", "lastUpdateDateTime"] {
            if !map.get(stamp).is_some_and(Value::is_string) {
                map.insert(stamp.into(), json!(now));
            }
        }
        map.entry("status").or_insert(json!("active"));
        map.entry("severity").or_insert(json!("medium"));
        self.graph.insert(id, incident);
        Ok(())
    }

    /// Starts a paged walk over `items`; returns the first page and the token of the rest.
    pub fn page(&mut self, items: Vec<Value>, top: usize) -> (Vec<Value>, Option<String>) {
        if items.len() <= top {
            return (items, None);
        }
        let mut items = items;
        let rest = items.split_off(top);
        let token = self.next_id("s");
        self.snapshots
            .insert(token.clone(), Snapshot { items: rest });
        // Walks that are never finished must not grow memory without bound.
        if self.snapshots.len() > 10_000 {
            let oldest: Vec<String> = self.snapshots.keys().take(1_000).cloned().collect();
            oldest.iter().for_each(|k| {
                self.snapshots.remove(k);
            });
        }
        (items, Some(token))
    }

    /// The next page of a walk started by [`Store::page`].
    pub fn next_page(
        &mut self,
        token: &str,
        top: usize,
    ) -> Result<(Vec<Value>, Option<String>), ApiError> {
        let snapshot = self
            .snapshots
            .remove(token)
            .ok_or_else(|| ApiError::bad_request("The skip token is invalid or has expired"))?;
        Ok(self.page(snapshot.items, top))
    }
}
