//! The sync engine: keeps every Defender incident mirrored into Sentinel and the
//! fields and comments the rules choose in sync both ways.
//!
//! - `fields`: fixed facts of the two APIs (twin ids, writable properties, the Defender
//!   properties behind each synced field, comment identity). Pure.
//! - `plan`: 3-way change detection, the planner and the bases to store. Pure.
//! - `comment_plan`: which comments to copy, crash-safe without markers, and the digests
//!   of a comment list. Pure.
//! - `syncer`: `Syncer`, the cycle, the reconcile sweep, dead-letter retries (async edge).
//! - `poll`: incremental polls in time windows that each fit in one page, robust to
//!   ignored `$orderby`, offset pages over a live set and future-dated stamps (async edge).
//! - `listing`: one window's first page or every page, Graph's `$expand` fallback, and a
//!   page's incidents synced a few at a time (async edge).
//! - `alert_copies`: while Graph cannot expand alerts in listings, each incident's alerts
//!   as last read, vouched for by one `alerts_v2` listing per poll, so a listed change
//!   needs no read of them (async edge).
//! - `backfill`: history before the first start, window by window behind the polls.
//! - `step`: one incident's sync decided and settled without I/O (rules, plan, next
//!   link, audit rows). Pure.
//! - `reconcile`: the I/O shell around `step`: reads, writes, commit (async edge).
//! - `sentinel_copy`: the twin as the last sync left it, so a Defender change needs no
//!   Sentinel read (its etag makes the PUT conditional).
//! - `comment_copy`: one incident's comment copies through the outbox, skipped when the
//!   stored comment digest says nothing moved (async edge).
//! - `scan`: the comment scans — listings whose comment counts or inline comments
//!   differ from the stored digests (async edge).
//! - `events`: the one log event per incident outcome (README "Log fields").
//! - `hints`: the reconcile of one Sentinel incident a push hook asks for (async edge).
//! - `inflight`: one sync per incident at a time, and which listed copies a hint may
//!   have made stale (hints run beside the cycle).

mod alert_copies;
mod backfill;
mod comment_copy;
pub mod comment_plan;
mod events;
pub mod fields;
mod hints;
mod inflight;
mod listing;
pub mod plan;
pub mod poll;
mod reconcile;
mod scan;
mod sentinel_copy;
pub mod step;
mod syncer;

pub use alert_copies::META_ALERTS_CURSOR;
pub use backfill::{BackfillStatus, META_BACKFILL_ETA};
pub use reconcile::{Outcome, SyncError};
pub use syncer::{
    CycleBudget, PassReport, Stats, SyncOptions, Syncer, COMMENT_RETRY_GRACE, META_SWEEP,
};
