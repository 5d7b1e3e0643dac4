//! The sync's durable memory: links between Defender and Sentinel ids, the per-side
//! bases and versions of the last successful sync, cursors, comment pairs, dead letters
//! and the audit trail — behind [`StateStore`], a narrow trait so that a server database
//! can replace the embedded SQLite file (`sqlite`) when one machine is not enough.
//!
//! Invariant: a base, version or cursor is stored only after the write it covers was
//! acknowledged, and always in the same transaction as that write's audit rows
//! ([`StateStore::commit`]). Everything here is plain data; the sync engine decides.

mod lock;
mod sqlite;

pub use lock::StateLock;
pub use sqlite::SqliteStore;

use crate::model::Side;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Field values in the Sentinel vocabulary (`status`, `owner`, `labels`, …), one map
/// per side: what each side said at the last successful sync.
pub type Fields = Map<String, Value>;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {message}")]
    Open { path: String, message: String },
    #[error("state database {path} is in use by {holder}; one process per state file")]
    Locked { path: String, holder: String },
    #[error("no state database at {path} (it is created by `rulebridge run`; is this the right config?)")]
    Missing { path: String },
    /// A statement failed; the typed SQLite error is kept (disk full, busy, corrupt)
    /// and shown in the message, not also as a `source()` (a chain would show it twice).
    #[error("state database: {operation}: {error}")]
    Sql {
        operation: String,
        error: rusqlite::Error,
    },
    #[error("state database: {operation}: encoding JSON: {error}")]
    Encode {
        operation: String,
        error: serde_json::Error,
    },
    #[error("state database was written by a newer rulebridge (schema version {found}, this build knows up to {known})")]
    TooNew { found: i64, known: i64 },
}

/// One Defender incident and its Sentinel twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub defender_id: String,
    /// The Sentinel incident's name (a UUID v5 of tenant + Defender id).
    pub sentinel_id: String,
    /// False while a create was started but not yet acknowledged: after a crash the
    /// twin may or may not exist, so the engine looks before it writes.
    pub created: bool,
    /// Defender's `lastUpdateDateTime` at the last sync (skips re-seen versions).
    pub defender_version: Option<String>,
    /// Sentinel's etag at the last sync.
    pub sentinel_version: Option<String>,
    pub base_defender: Fields,
    pub base_sentinel: Fields,
    /// RFC 3339 time of the last commit for this link.
    pub synced_at: Option<String>,
    /// RFC 3339 time of the last full reconcile (both sides read, comments listed).
    pub swept_at: Option<String>,
}

/// One audited decision: a write (or a deliberate non-write) for one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Assigned by the store; 0 in rows not yet stored.
    #[serde(default)]
    pub id: i64,
    pub at: String,
    pub defender_id: String,
    pub sentinel_id: String,
    /// The side that was written.
    pub side: Side,
    /// `create`, `update`, `comment`, `skip` (a change deliberately not synced).
    pub action: String,
    /// The synced field (`status`, …); `None` for a create or a comment.
    pub field: Option<String>,
    pub old: Value,
    pub new: Value,
    /// The deciding rule, when one decided.
    pub rule: Option<String>,
    pub pack_version: String,
}

/// A comment known on both sides. A row with `defender_key = None` and `origin =
/// Sentinel` is an outbox entry: the Defender POST was started, not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommentPair {
    pub defender_id: String,
    /// Defender comments have no id: a fingerprint of author, time and text.
    pub defender_key: Option<String>,
    pub sentinel_comment_id: String,
    /// Where the comment was written by a person.
    pub origin: Side,
    /// The text rulebridge posted (outbox entries use it to recognise their comment).
    pub text: String,
}

/// An incident that could not be synced, and why. One per (side, incident id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub side: Side,
    pub incident_id: String,
    /// `rule_error`, `rejected` (a permanent HTTP error), …
    pub kind: String,
    /// Human-readable: rule, file:line:col or HTTP status and the service's message.
    pub reason: String,
    pub rule: Option<String>,
    pub pack_version: String,
    pub first_at: String,
    pub last_at: String,
    pub attempts: i64,
}

/// Everything one incident's sync stores, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The link as it stands after the acknowledged writes (upserted).
    pub link: Option<Link>,
    pub audit: Vec<AuditRow>,
    /// Upserted by (defender_id, sentinel_comment_id).
    pub comments: Vec<CommentPair>,
    /// Dead letters this sync resolves (side, incident id).
    pub resolved: Vec<(Side, String)>,
}

/// What each side's comment list looked like after the last comment sync of a link:
/// compared with what a listing carries (Graph's inline `comments`, Sentinel's
/// `additionalData.commentsCount`), it says whether comments need reading at all.
/// `None` on a side: unknown (never synced, or the service did not say), so read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentDigest {
    /// Defender's comments: their number and a fingerprint of them.
    pub defender: Option<String>,
    /// Sentinel's comment count.
    pub sentinel: Option<u64>,
}

/// A Defender incident with its alerts as last read in full, kept while Graph cannot
/// expand alerts in listings, so a listed change need not read them again
/// (`sync::alert_copies` decides when the copy may stand in).
#[derive(Debug, Clone, PartialEq)]
pub struct DefenderCopy {
    /// The incident as Graph returned it with `$expand=alerts`, fields refreshed by
    /// later listings and writes of ours; its `alerts` as read at `alerts_read_at`.
    pub incident: Value,
    /// When the alerts were read (RFC 3339, the local clock): copies age out.
    pub alerts_read_at: String,
}

/// What a list scan compares for one created link, without its bases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDigest {
    pub defender_id: String,
    pub sentinel_id: String,
    pub defender_version: Option<String>,
    pub sentinel_version: Option<String>,
    pub comments: CommentDigest,
}

/// Totals for `status` and the demo summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub links: i64,
    pub pending_creates: i64,
    pub comment_pairs: i64,
    pub dead_letters: i64,
    pub audit_rows: i64,
    /// Comment POSTs to Defender started but not yet seen there.
    pub comment_outbox: i64,
}

/// The state store. Methods are synchronous and short; the engine calls them between
/// network operations. Implementations are shared across tasks (`&self` everywhere).
pub trait StateStore: Send + Sync {
    fn link(&self, defender_id: &str) -> Result<Option<Link>, StateError>;
    fn link_by_sentinel(&self, sentinel_id: &str) -> Result<Option<Link>, StateError>;
    /// Records that a create is about to be sent (a link with `created = false`),
    /// unless a link for `defender_id` already exists.
    fn begin_create(&self, defender_id: &str, sentinel_id: &str) -> Result<(), StateError>;
    /// Stores one incident's outcome atomically.
    fn commit(&self, commit: &Commit) -> Result<(), StateError>;

    /// Where the next incremental poll of `side` starts (an RFC 3339 time).
    fn cursor(&self, side: Side) -> Result<Option<String>, StateError>;
    fn set_cursor(&self, side: Side, position: &str) -> Result<(), StateError>;
    /// When `side` was last polled successfully.
    fn record_poll(&self, side: Side, at: &str) -> Result<(), StateError>;
    fn last_poll(&self, side: Side) -> Result<Option<String>, StateError>;

    fn comment_pairs(&self, defender_id: &str) -> Result<Vec<CommentPair>, StateError>;
    /// Stores an outbox entry before a non-idempotent comment POST.
    fn put_comment_pair(&self, pair: &CommentPair) -> Result<(), StateError>;

    /// Adds or refreshes a dead letter (attempts + 1, `last_at`, reason replaced).
    fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StateError>;
    fn dead_letters(&self) -> Result<Vec<DeadLetter>, StateError>;

    /// The audit trail of one incident, by Defender or Sentinel id, oldest first.
    fn audit_for(&self, id: &str) -> Result<Vec<AuditRow>, StateError>;
    /// Every audit row with `id > after`, oldest first, at most `limit`.
    fn audit_since(&self, after: i64, limit: usize) -> Result<Vec<AuditRow>, StateError>;

    /// Up to `limit` created links, least recently swept first (never swept first).
    /// With `retired_before`, links whose Sentinel side was Closed at their last sync
    /// and which have not been synced since that time are left out (retired).
    fn links_to_sweep(
        &self,
        limit: usize,
        retired_before: Option<&str>,
    ) -> Result<Vec<Link>, StateError>;
    /// How many links [`StateStore::links_to_sweep`] chooses from.
    fn sweep_size(&self, retired_before: Option<&str>) -> Result<u64, StateError>;
    /// Every created link's versions and comment digest (the list scans' memory).
    fn link_digests(&self) -> Result<Vec<LinkDigest>, StateError>;
    fn comment_digest(&self, defender_id: &str) -> Result<CommentDigest, StateError>;
    /// Stored after the comment pairs it summarises are committed (a digest never
    /// claims comments that are not stored; a lost digest costs one comment read).
    fn set_comment_digest(
        &self,
        defender_id: &str,
        digest: &CommentDigest,
    ) -> Result<(), StateError>;
    /// The Sentinel incident as a sync last saw it (its etag inside), if stored. It
    /// stands for Sentinel only while its etag is the link's `sentinel_version`.
    fn sentinel_copy(&self, defender_id: &str) -> Result<Option<Value>, StateError>;
    fn put_sentinel_copy(&self, defender_id: &str, copy: &Value) -> Result<(), StateError>;
    /// The Defender incident with alerts as last read (see [`DefenderCopy`]), if kept.
    fn defender_copy(&self, defender_id: &str) -> Result<Option<DefenderCopy>, StateError>;
    /// Keeps `copy` for `defender_id`, and which incident each of its alerts sits in.
    fn put_defender_copy(&self, defender_id: &str, copy: &DefenderCopy) -> Result<(), StateError>;
    /// Replaces the fields of the kept copy of `defender_id` with `incident`'s, keeping
    /// its alerts and when they were read (no copy: nothing). A listing or a write of
    /// ours moved the fields, not the alerts: their homes stay as they are.
    fn refresh_defender_copy(&self, defender_id: &str, incident: &Value) -> Result<(), StateError>;
    /// Drops the copies of `incidents` and of the incidents holding any of `alerts`
    /// (where a changed or moved alert sat); returns how many were dropped.
    fn forget_defender_copies(
        &self,
        incidents: &[String],
        alerts: &[String],
    ) -> Result<usize, StateError>;
    /// Drops every Defender copy (when which alerts changed is no longer known).
    fn forget_all_defender_copies(&self) -> Result<(), StateError>;
    fn mark_swept(&self, defender_id: &str, at: &str) -> Result<(), StateError>;
    /// All links (for consistency checks and status; ordered by Defender id).
    fn links(&self) -> Result<Vec<Link>, StateError>;

    /// Small key-value facts: the active pack version, when it was loaded, …
    fn meta(&self, key: &str) -> Result<Option<String>, StateError>;
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError>;

    /// Every table's size, for `status` (several scans, the audit table's among them).
    fn counts(&self) -> Result<Counts, StateError>;

    /// Incidents dead-lettered now: one count of a small table, for the gauge the sync
    /// refreshes after every dead letter.
    fn dead_letter_count(&self) -> Result<u64, StateError>;
}
