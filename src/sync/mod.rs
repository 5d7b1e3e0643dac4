//! The sync engine: keeps every Defender incident mirrored into Sentinel and the
//! fields and comments the rules choose in sync both ways.
//!
//! - `fields`: fixed facts of the two APIs (twin ids, writable properties, the Defender
//!   properties behind each synced field, comment identity). Pure.
//! - `plan`: 3-way change detection, the planner and the bases to store. Pure.
//! - `comments`: which comments to copy, crash-safe without markers. Pure.
//! - `engine`: polls with cursors, the reconcile sweep, dead-letter retries (async edge).
//! - `reconcile`: one incident's create or reconcile, writes and commit (async edge).
//! - `comment_sync`: one incident's comment copies through the outbox (async edge).

mod comment_sync;
pub mod comments;
mod engine;
pub mod fields;
pub mod plan;
mod reconcile;

pub use engine::{PassReport, Stats, SyncOptions, Syncer};
pub use reconcile::{Outcome, SyncError};
