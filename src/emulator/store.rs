//! The emulator's state: both sides' incidents, comments, issued tokens (with their
//! audience, principal and roles), paging
//! snapshots and a log of every request. Plain data behind one mutex; the HTTP layer
//! (`server.rs`) only translates requests into calls on it. The store knows its
//! [`Profile`]: stamps, etags and Sentinel names are written as that profile's service
//! writes them.

use super::identity::Principal;
use super::profile::{Observed, Profile};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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
    /// The JSON body; `None` for token requests and bodies over [`MAX_LOGGED_BODY`].
    pub body: Option<Value>,
    /// Size of the body as received.
    pub body_bytes: usize,
    pub status: u16,
    /// Token requests: how the client proved who it is ("secret", "certificate",
    /// "federated"); their bodies (credentials) are never kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Token requests with an assertion: the assertion's `jti` (which token file the
    /// client read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Requests the log keeps: the last ones. A long demo or soak test must not grow the
/// emulator without bound (twenty 15 MB PUTs were 300 MB of log).
pub const MAX_LOGGED_REQUESTS: usize = 20_000;
/// Bodies larger than this are logged by size only.
pub const MAX_LOGGED_BODY: usize = 64 * 1024;

impl Store {
    /// Appends to the request log, dropping the oldest entries beyond
    /// [`MAX_LOGGED_REQUESTS`] (a tenth at a time, so appending stays cheap).
    pub fn log_request(&mut self, mut record: RequestRecord) {
        if record.body_bytes > MAX_LOGGED_BODY {
            record.body = None;
        }
        if self.requests.len() >= MAX_LOGGED_REQUESTS {
            self.requests.drain(..MAX_LOGGED_REQUESTS / 10);
        }
        self.requests.push(record);
    }
}

/// A list walk frozen at its first page, so every page of it comes from one snapshot:
/// no incident is skipped or repeated while others are updated during the walk. A page
/// token names the snapshot and an offset, so a client may fetch the same page again
/// (after a dropped connection) and get the same items.
pub struct Snapshot {
    pub items: Arc<Vec<Value>>,
    /// When the walk started, for evicting the oldest walks first.
    pub started: u64,
}

/// Walks kept at once; the oldest are evicted beyond this (their tokens then expire).
const MAX_SNAPSHOTS: usize = 1_000;

/// The API a token was issued for (its audience), from the requested resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    Graph,
    Arm,
}

/// A token the token endpoint or a managed-identity endpoint issued. Which resources
/// map to which audience is the cloud's business (`emulator::identity::cloud`).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub expires: DateTime<Utc>,
    pub audience: Audience,
    /// Who signed in (the token's `appid` and `oid`).
    pub principal: Principal,
    /// The token's `roles` claim: Graph application roles, on Graph tokens only.
    pub roles: Vec<String>,
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
    pub tokens: HashMap<String, IssuedToken>,
    pub snapshots: HashMap<String, Snapshot>,
    pub requests: Vec<RequestRecord>,
    pub token_lifetime: Duration,
    /// Lifetime of managed-identity tokens (IMDS and App Service issue ~24 h ones).
    pub managed_identity_token_lifetime: Duration,
    /// Observed (the default) or strict; see `emulator::profile`.
    pub profile: Profile,
    /// The observed behaviour's knobs (seeding rates, page sizes).
    pub observed: Observed,
    /// The Sentinel incidents collection's path (`/subscriptions/…/incidents`), for
    /// incidents the store makes itself (connector-created ones).
    pub sentinel_base: String,
    /// The last Sentinel `incidentNumber` handed out: numbers only count up.
    pub sentinel_number: i64,
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
            managed_identity_token_lifetime: Duration::seconds(86399),
            profile: Profile::default(),
            observed: Observed::default(),
            sentinel_base: super::server::sentinel_base(&super::EmulatorConfig::default()),
            sentinel_number: 0,
            last_tick: DateTime::<Utc>::MIN_UTC,
            counter: 0,
        }
    }

    /// The time of a write: now, but strictly after the previous write, so two changes
    /// within the same second (or tick) always have different, ordered stamps. Observed:
    /// 7 fractional digits (.NET's 100 ns ticks, as both services write them); strict:
    /// microseconds.
    pub fn tick(&mut self) -> String {
        if self.profile.is_observed() {
            let floor = self.last_tick + Duration::nanoseconds(100);
            let now = Utc::now();
            let now = now - Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 100));
            let now = now.max(floor);
            self.last_tick = now;
            format!(
                "{}.{:07}Z",
                now.format("%Y-%m-%dT%H:%M:%S"),
                now.timestamp_subsec_nanos() / 100
            )
        } else {
            let now = Utc::now().max(self.last_tick + Duration::microseconds(1));
            self.last_tick = now;
            now.to_rfc3339_opts(SecondsFormat::Micros, true)
        }
    }

    /// A fresh Sentinel etag, quotes included (observed: in the recorded form).
    pub fn new_etag(&mut self) -> String {
        if self.profile.is_observed() {
            self.counter += 1;
            super::arm::etag(self.counter, Utc::now().timestamp())
        } else {
            format!("\"{}\"", self.next_id(""))
        }
    }

    /// The key a Sentinel incident or comment name is stored under (observed:
    /// lowercased, since ARM names are case-insensitive).
    pub fn sentinel_key(&self, name: &str) -> String {
        super::arm::name_key(self.profile, name)
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
        super::alerts::complete_seeded_alerts(map);
        self.graph.insert(id.clone(), incident);
        self.apply_seed_rates(&id);
        Ok(())
    }

    /// Starts a paged walk over `items`; returns the first page and the token of the rest.
    pub fn page(&mut self, items: Vec<Value>, top: usize) -> (Vec<Value>, Option<String>) {
        if items.len() <= top {
            return (items, None);
        }
        let id = self.next_id("s");
        self.counter += 1;
        let started = self.counter;
        if self.snapshots.len() >= MAX_SNAPSHOTS {
            let oldest = self
                .snapshots
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.snapshots.remove(&oldest);
            }
        }
        let items = Arc::new(items);
        self.snapshots.insert(
            id.clone(),
            Snapshot {
                items: items.clone(),
                started,
            },
        );
        Self::slice(&id, &items, 0, top)
    }

    /// A page of a walk started by [`Store::page`]; the same token gives the same page.
    pub fn next_page(
        &mut self,
        token: &str,
        top: usize,
    ) -> Result<(Vec<Value>, Option<String>), ApiError> {
        let expired = || ApiError::bad_request("The skip token is invalid or has expired");
        let (id, offset) = token.rsplit_once('.').ok_or_else(expired)?;
        let offset: usize = offset.parse().map_err(|_| expired())?;
        let snapshot = self.snapshots.get(id).ok_or_else(expired)?;
        Ok(Self::slice(id, &snapshot.items, offset, top))
    }

    fn slice(id: &str, items: &[Value], offset: usize, top: usize) -> (Vec<Value>, Option<String>) {
        let end = (offset + top).min(items.len());
        let page = items
            .get(offset..end)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        let next = (end < items.len()).then(|| format!("{id}.{end}"));
        (page, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body_bytes: usize) -> RequestRecord {
        RequestRecord {
            method: "PUT".into(),
            path: "/x".into(),
            query: String::new(),
            body: Some(json!({"n": body_bytes})),
            body_bytes,
            status: 200,
            grant: None,
            jti: None,
        }
    }

    #[test]
    fn the_request_log_keeps_the_last_requests_and_large_bodies_by_size() {
        let mut store = Store::new("t", "c", "s");
        store.log_request(record(15 * 1024 * 1024));
        assert_eq!(
            store.requests[0].body, None,
            "a 15 MB body is kept as its size"
        );
        assert_eq!(store.requests[0].body_bytes, 15 * 1024 * 1024);
        for i in 0..MAX_LOGGED_REQUESTS + 5 {
            store.log_request(record(i % 100));
        }
        assert!(store.requests.len() <= MAX_LOGGED_REQUESTS);
        let last = store.requests.last().unwrap();
        assert_eq!(
            last.body,
            Some(json!({"n": (MAX_LOGGED_REQUESTS + 4) % 100}))
        );
    }
}
