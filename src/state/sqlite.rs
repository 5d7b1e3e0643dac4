//! [`StateStore`] on one embedded SQLite file.
//!
//! Layout: `links` (one row per Defender incident and its Sentinel twin, with the JSON
//! bases of the last sync), `cursors` (one row per side), `comment_pairs`,
//! `dead_letters`, `audit` (append-only, `id` is the order of decisions) and `meta`
//! (small key-value facts). JSON values are stored as text so the file stays readable
//! with the plain `sqlite3` shell; times are RFC 3339 text, which sorts chronologically
//! as long as every writer uses UTC — the engine does.
//!
//! The file runs in WAL mode with `synchronous=NORMAL`: a commit is appended to the log
//! and survives the process crashing at any point; only a power loss or OS crash can
//! drop the last few commits, never corrupt the file. WAL also lets readers (`status`,
//! a second process) proceed while the engine writes.
//!
//! The schema is versioned with `PRAGMA user_version`: [`MIGRATIONS`] is an ordered list,
//! entry `n` moves the file from version `n` to `n + 1` in its own transaction, so a
//! crash mid-upgrade leaves a consistent older version that the next start continues
//! from. A file from a newer build is refused ([`StateError::TooNew`]) rather than
//! guessed at. Migrations are only ever appended, never edited.
//!
//! Concurrency: one process owns the file, and every method is a handful of indexed
//! statements taking microseconds, run between network calls that take milliseconds.
//! A single `Mutex<Connection>` therefore costs nothing measurable, keeps every
//! transaction on one connection, and avoids a pool and its sizing questions.

use super::{
    AuditRow, CommentDigest, CommentPair, Commit, Counts, DeadLetter, DefenderCopy, Link,
    LinkDigest, StateError, StateStore,
};
use crate::model::Side;
use rusqlite::types::Type;
use rusqlite::{params, Connection, Params, Row, TransactionBehavior};
use serde::de::value::StrDeserializer;
use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Schema migrations; entry `n` upgrades `user_version` `n` to `n + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema. No foreign keys between tables on purpose: an outbox
    // comment pair or a dead letter may exist for an incident that has no link yet.
    // AUTOINCREMENT on `audit.id`: ids are never reused, so `audit_since` readers
    // that remember the last id they saw can never skip a row.
    r#"
    CREATE TABLE links (
        defender_id TEXT PRIMARY KEY NOT NULL, sentinel_id TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL CHECK (created IN (0, 1)),
        defender_version TEXT, sentinel_version TEXT,
        base_defender TEXT NOT NULL, base_sentinel TEXT NOT NULL,
        synced_at TEXT, swept_at TEXT);
    CREATE TABLE cursors (
        side TEXT PRIMARY KEY NOT NULL CHECK (side IN ('defender', 'sentinel')),
        position TEXT, last_poll TEXT);
    CREATE TABLE comment_pairs (
        defender_id TEXT NOT NULL, sentinel_comment_id TEXT NOT NULL, defender_key TEXT,
        origin TEXT NOT NULL CHECK (origin IN ('defender', 'sentinel')), text TEXT NOT NULL,
        PRIMARY KEY (defender_id, sentinel_comment_id));
    CREATE INDEX comment_pairs_by_key ON comment_pairs (defender_id, defender_key);
    CREATE TABLE dead_letters (
        side TEXT NOT NULL CHECK (side IN ('defender', 'sentinel')), incident_id TEXT NOT NULL,
        kind TEXT NOT NULL, reason TEXT NOT NULL, rule TEXT, pack_version TEXT NOT NULL,
        first_at TEXT NOT NULL, last_at TEXT NOT NULL, attempts INTEGER NOT NULL,
        PRIMARY KEY (side, incident_id));
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
        defender_id TEXT NOT NULL, sentinel_id TEXT NOT NULL,
        side TEXT NOT NULL CHECK (side IN ('defender', 'sentinel')), action TEXT NOT NULL,
        field TEXT, old TEXT NOT NULL, new TEXT NOT NULL, rule TEXT,
        pack_version TEXT NOT NULL);
    CREATE INDEX audit_by_defender ON audit (defender_id);
    CREATE INDEX audit_by_sentinel ON audit (sentinel_id);
    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
    "#,
    // 2: comment digests (what each side's comment list looked like after the last
    // comment sync), so listings tell which incidents need their comments read.
    r#"
    CREATE TABLE comment_digests (
        defender_id TEXT PRIMARY KEY NOT NULL, defender TEXT, sentinel INTEGER);
    "#,
    // 3: the Sentinel incident as the last sync left it, so a Defender change can be
    // written with the stored etag instead of a read first (`StateStore::sentinel_copy`).
    r#"
    CREATE TABLE sentinel_copies (defender_id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL);
    "#,
    // 4: the Defender incident with its alerts as last read, while Graph cannot expand
    // alerts in listings (`StateStore::defender_copy`), and the incident each of its
    // alerts sits in, so a changed or moved alert finds the copy it makes stale.
    r#"
    CREATE TABLE defender_copies (
        defender_id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL, alerts_read_at TEXT NOT NULL);
    CREATE TABLE alert_homes (alert_id TEXT PRIMARY KEY NOT NULL, defender_id TEXT NOT NULL);
    CREATE INDEX alert_homes_by_incident ON alert_homes (defender_id);
    "#,
];

/// The links the sweep visits, `?2` the retirement time (NULL: retire none): not
/// those closed in Sentinel at their last sync and not synced since `?2`.
const SWEEPABLE: &str = "(?2 IS NULL OR NOT (json_extract(base_sentinel, '$.status') = 'Closed' \
     AND (synced_at IS NULL OR synced_at < ?2)))";

const LINK_COLUMNS: &str = "defender_id, sentinel_id, created, defender_version, \
     sentinel_version, base_defender, base_sentinel, synced_at, swept_at";
const AUDIT_COLUMNS: &str = "id, at, defender_id, sentinel_id, side, action, field, old, new, \
     rule, pack_version";
const COMMENT_COLUMNS: &str = "defender_id, sentinel_comment_id, defender_key, origin, text";
const DEAD_LETTER_COLUMNS: &str = "side, incident_id, kind, reason, rule, pack_version, \
     first_at, last_at, attempts";

/// The embedded SQLite state store. `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// The schema version this build writes (the number of known migrations).
    pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

    /// Opens (creating if needed) the state file at `path` and brings its schema up to
    /// [`Self::SCHEMA_VERSION`]. A new file is created 0600: it holds incident content.
    /// (SQLite gives its `-wal` and `-shm` files the database file's permissions.)
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        create_private(path)?;
        Self::open_existing(path)
    }

    /// Opens the state file at `path` only if it exists (`status`, `explain`, `retry`
    /// must never leave an empty database behind a mistyped path).
    pub fn open_existing(path: &Path) -> Result<SqliteStore, StateError> {
        let open_err = |message: String| open_error(path, message);
        if !path.exists() {
            return Err(StateError::Missing {
                path: path.display().to_string(),
            });
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|e| open_err(e.to_string()))?;
        // Another process (`status`, a backup) may hold the write lock briefly; waiting a
        // few seconds beats failing a sync over it.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| open_err(format!("setting busy_timeout: {e}")))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| open_err(format!("enabling WAL: {e}")))?;
        // synchronous=NORMAL is only crash-safe in WAL mode, so a file system that
        // cannot do WAL (some network shares) is refused instead of silently risked.
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "could not enable WAL journaling (journal_mode is {mode:?})"
            )));
        }
        // NORMAL skips the fsync per commit; in WAL mode a commit is still durable
        // against a crash of this process (the OS holds the log), which is the failure
        // the sync must survive. FULL would only add power-loss durability, per commit.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| open_err(format!("setting pragmas: {e}")))?;
        // Every statement is prepared once and reused; the default 16 would churn.
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn, path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held cannot have left half a transaction behind:
        // rusqlite rolls back an unfinished `Transaction` when it is dropped during
        // unwinding, and the connection holds no other state worth distrusting.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Applies the missing migrations, one transaction each. Each step re-reads the version
/// inside an IMMEDIATE transaction, so two processes starting at once cannot both apply
/// the same migration.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let known = SqliteStore::SCHEMA_VERSION;
    let open_err = |message: String| open_error(path, message);
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| open_err(format!("starting migration: {e}")))?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| open_err(format!("reading schema version: {e}")))?;
        if found > known {
            return Err(StateError::TooNew { found, known });
        }
        if found < 0 {
            return Err(open_err(format!("invalid schema version {found}")));
        }
        if found == known {
            return Ok(());
        }
        let target = found + 1;
        let step = |e: rusqlite::Error| open_err(format!("migration to version {target}: {e}"));
        tx.execute_batch(MIGRATIONS[found as usize]).map_err(step)?;
        tx.pragma_update(None, "user_version", target)
            .map_err(step)?;
        tx.commit().map_err(step)?;
    }
}

/// Creates an empty file with mode 0600 if none is there, for SQLite to fill.
fn create_private(path: &Path) -> Result<(), StateError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(open_error(path, format!("cannot create: {e}"))),
    }
}

fn open_error(path: &Path, message: String) -> StateError {
    let path = path.display().to_string();
    StateError::Open { path, message }
}

/// Attaches the failing operation to a SQLite error.
trait Context<T> {
    fn ctx(self, op: &str) -> Result<T, StateError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, op: &str) -> Result<T, StateError> {
        self.map_err(|error| StateError::Sql {
            operation: op.to_string(),
            error,
        })
    }
}

fn to_json(value: &impl Serialize, op: &str) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|error| StateError::Encode {
        operation: op.to_string(),
        error,
    })
}

fn json_column<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text = row.get_ref(idx)?.as_str()?;
    serde_json::from_str(text).map_err(|e| decode_error(idx, e))
}

fn side_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<Side> {
    // Through serde, so the stored spelling is by definition `Side`'s own ("defender").
    let text: StrDeserializer<'_, serde::de::value::Error> =
        row.get_ref(idx)?.as_str()?.into_deserializer();
    Side::deserialize(text).map_err(|e| decode_error(idx, e))
}

fn decode_error(idx: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e))
}

fn link_from_row(row: &Row<'_>) -> rusqlite::Result<Link> {
    Ok(Link {
        defender_id: row.get(0)?,
        sentinel_id: row.get(1)?,
        created: row.get(2)?,
        defender_version: row.get(3)?,
        sentinel_version: row.get(4)?,
        base_defender: json_column(row, 5)?,
        base_sentinel: json_column(row, 6)?,
        synced_at: row.get(7)?,
        swept_at: row.get(8)?,
    })
}

fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: row.get(0)?,
        at: row.get(1)?,
        defender_id: row.get(2)?,
        sentinel_id: row.get(3)?,
        side: side_column(row, 4)?,
        action: row.get(5)?,
        field: row.get(6)?,
        old: json_column(row, 7)?,
        new: json_column(row, 8)?,
        rule: row.get(9)?,
        pack_version: row.get(10)?,
    })
}

fn dead_letter_from_row(row: &Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        side: side_column(row, 0)?,
        incident_id: row.get(1)?,
        kind: row.get(2)?,
        reason: row.get(3)?,
        rule: row.get(4)?,
        pack_version: row.get(5)?,
        first_at: row.get(6)?,
        last_at: row.get(7)?,
        attempts: row.get(8)?,
    })
}

fn comment_from_row(row: &Row<'_>) -> rusqlite::Result<CommentPair> {
    Ok(CommentPair {
        defender_id: row.get(0)?,
        sentinel_comment_id: row.get(1)?,
        defender_key: row.get(2)?,
        origin: side_column(row, 3)?,
        text: row.get(4)?,
    })
}

/// SQLite takes a signed limit; anything beyond `i64::MAX` means "all" anyway.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Runs one write statement; cached, as the engine repeats the same few all day.
fn exec(conn: &Connection, sql: &str, args: impl Params, op: &str) -> Result<(), StateError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(args))
        .map(drop)
        .ctx(op)
}

fn upsert_link(conn: &Connection, l: &Link) -> Result<(), StateError> {
    let op = format!("storing link {}", l.defender_id);
    let base_defender = to_json(&l.base_defender, &op)?;
    let base_sentinel = to_json(&l.base_sentinel, &op)?;
    let sql = format!(
        "INSERT INTO links ({LINK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (defender_id) DO UPDATE SET sentinel_id = excluded.sentinel_id, \
         created = excluded.created, defender_version = excluded.defender_version, \
         sentinel_version = excluded.sentinel_version, base_defender = excluded.base_defender, \
         base_sentinel = excluded.base_sentinel, synced_at = excluded.synced_at, \
         swept_at = excluded.swept_at"
    );
    #[rustfmt::skip]
    let args = params![l.defender_id, l.sentinel_id, l.created, l.defender_version,
        l.sentinel_version, base_defender, base_sentinel, l.synced_at, l.swept_at];
    exec(conn, &sql, args, &op)
}

fn insert_audit(conn: &Connection, r: &AuditRow) -> Result<(), StateError> {
    let op = format!("appending audit row for {}", r.defender_id);
    let (old, new) = (to_json(&r.old, &op)?, to_json(&r.new, &op)?);
    // The id is the store's to assign (AUTOINCREMENT), whatever the row carries.
    let sql = format!(
        "INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    );
    #[rustfmt::skip]
    let args = params![r.at, r.defender_id, r.sentinel_id, r.side.name(), r.action, r.field,
        old, new, r.rule, r.pack_version];
    exec(conn, &sql, args, &op)
}

fn upsert_comment(conn: &Connection, p: &CommentPair) -> Result<(), StateError> {
    let sql = format!(
        "INSERT INTO comment_pairs ({COMMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (defender_id, sentinel_comment_id) DO UPDATE SET \
         defender_key = excluded.defender_key, origin = excluded.origin, text = excluded.text"
    );
    #[rustfmt::skip]
    let args = params![p.defender_id, p.sentinel_comment_id, p.defender_key, p.origin.name(),
        p.text];
    let op = format!("storing comment pair for {}", p.defender_id);
    exec(conn, &sql, args, &op)
}

impl SqliteStore {
    fn write(&self, sql: &str, args: impl Params, op: &str) -> Result<(), StateError> {
        exec(&self.conn(), sql, args, op)
    }

    fn select<T>(
        &self,
        sql: &str,
        args: impl Params,
        decode: fn(&Row<'_>) -> rusqlite::Result<T>,
        op: &str,
    ) -> Result<Vec<T>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).ctx(op)?;
        let rows = stmt.query_map(args, decode).ctx(op)?;
        rows.collect::<rusqlite::Result<_>>().ctx(op)
    }

    fn links_where(
        &self,
        tail: &str,
        args: impl Params,
        op: &str,
    ) -> Result<Vec<Link>, StateError> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM links {tail}");
        self.select(&sql, args, link_from_row, op)
    }

    fn cursor_column(&self, side: Side, column: &str) -> Result<Option<String>, StateError> {
        let sql = format!("SELECT {column} FROM cursors WHERE side = ?1");
        let op = format!("reading {column} of {side}");
        let values = self.select(&sql, [side.name()], |row| row.get(0), &op)?;
        Ok(values.into_iter().next().flatten())
    }

    fn set_cursor_column(&self, side: Side, column: &str, value: &str) -> Result<(), StateError> {
        let sql = format!(
            "INSERT INTO cursors (side, {column}) VALUES (?1, ?2) \
             ON CONFLICT (side) DO UPDATE SET {column} = excluded.{column}"
        );
        let op = format!("storing {column} of {side}");
        self.write(&sql, [side.name(), value], &op)
    }
}

impl StateStore for SqliteStore {
    fn link(&self, defender_id: &str) -> Result<Option<Link>, StateError> {
        let op = format!("reading link {defender_id}");
        let mut found = self.links_where("WHERE defender_id = ?1", [defender_id], &op)?;
        Ok(found.pop())
    }

    fn link_by_sentinel(&self, sentinel_id: &str) -> Result<Option<Link>, StateError> {
        let op = format!("reading link by Sentinel id {sentinel_id}");
        let mut found = self.links_where("WHERE sentinel_id = ?1", [sentinel_id], &op)?;
        Ok(found.pop())
    }

    fn begin_create(&self, defender_id: &str, sentinel_id: &str) -> Result<(), StateError> {
        // Only a clash on the Defender id is expected (a retried create); a clash on the
        // Sentinel id means two incidents map to one twin, which must not pass silently
        // (as INSERT OR IGNORE would let it).
        self.write(
            "INSERT INTO links (defender_id, sentinel_id, created, base_defender, base_sentinel) \
             VALUES (?1, ?2, 0, '{}', '{}') ON CONFLICT (defender_id) DO NOTHING",
            [defender_id, sentinel_id],
            &format!("recording create of {defender_id}"),
        )
    }

    fn commit(&self, commit: &Commit) -> Result<(), StateError> {
        let mut conn = self.conn();
        // IMMEDIATE takes the write lock up front: a deferred transaction that upgrades
        // later can fail with SQLITE_BUSY without the busy timeout being consulted.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting commit")?;
        // Any early return drops `tx`, which rolls the whole commit back.
        if let Some(link) = &commit.link {
            upsert_link(&tx, link)?;
        }
        for row in &commit.audit {
            insert_audit(&tx, row)?;
        }
        for pair in &commit.comments {
            upsert_comment(&tx, pair)?;
        }
        for (side, id) in &commit.resolved {
            let sql = "DELETE FROM dead_letters WHERE side = ?1 AND incident_id = ?2";
            let op = format!("resolving dead letter {side} {id}");
            exec(&tx, sql, [side.name(), id.as_str()], &op)?;
        }
        tx.commit().ctx("committing")
    }

    fn cursor(&self, side: Side) -> Result<Option<String>, StateError> {
        self.cursor_column(side, "position")
    }

    fn set_cursor(&self, side: Side, position: &str) -> Result<(), StateError> {
        self.set_cursor_column(side, "position", position)
    }

    fn record_poll(&self, side: Side, at: &str) -> Result<(), StateError> {
        self.set_cursor_column(side, "last_poll", at)
    }

    fn last_poll(&self, side: Side) -> Result<Option<String>, StateError> {
        self.cursor_column(side, "last_poll")
    }

    fn comment_pairs(&self, defender_id: &str) -> Result<Vec<CommentPair>, StateError> {
        // rowid order is insertion order: the thread in the order rulebridge saw it grow.
        let sql = format!(
            "SELECT {COMMENT_COLUMNS} FROM comment_pairs WHERE defender_id = ?1 ORDER BY rowid"
        );
        let op = format!("reading comment pairs of {defender_id}");
        self.select(&sql, [defender_id], comment_from_row, &op)
    }

    fn put_comment_pair(&self, pair: &CommentPair) -> Result<(), StateError> {
        upsert_comment(&self.conn(), pair)
    }

    fn dead_letter(&self, d: &DeadLetter) -> Result<(), StateError> {
        // The store counts attempts itself, so a caller retrying with a stale letter
        // can neither reset nor inflate the count.
        let sql = format!(
            "INSERT INTO dead_letters ({DEAD_LETTER_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1) \
             ON CONFLICT (side, incident_id) DO UPDATE SET kind = excluded.kind, \
             reason = excluded.reason, rule = excluded.rule, \
             pack_version = excluded.pack_version, last_at = excluded.last_at, \
             attempts = dead_letters.attempts + 1"
        );
        #[rustfmt::skip]
        let args = params![d.side.name(), d.incident_id, d.kind, d.reason, d.rule,
            d.pack_version, d.first_at, d.last_at];
        let op = format!("storing dead letter {} {}", d.side, d.incident_id);
        self.write(&sql, args, &op)
    }

    fn dead_letters(&self) -> Result<Vec<DeadLetter>, StateError> {
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY first_at, side, incident_id"
        );
        self.select(&sql, [], dead_letter_from_row, "reading dead letters")
    }

    fn audit_for(&self, id: &str) -> Result<Vec<AuditRow>, StateError> {
        // SQLite serves this OR from both single-column indexes (its OR-by-union plan).
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE defender_id = ?1 OR sentinel_id = ?1 \
             ORDER BY id"
        );
        let op = format!("reading audit of {id}");
        self.select(&sql, [id], audit_from_row, &op)
    }

    fn audit_since(&self, after: i64, limit: usize) -> Result<Vec<AuditRow>, StateError> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2");
        let args = params![after, sql_limit(limit)];
        self.select(&sql, args, audit_from_row, "reading audit trail")
    }

    fn links_to_sweep(
        &self,
        limit: usize,
        retired_before: Option<&str>,
    ) -> Result<Vec<Link>, StateError> {
        let tail = format!(
            "WHERE created = 1 AND {SWEEPABLE} ORDER BY swept_at ASC NULLS FIRST, defender_id LIMIT ?1"
        );
        let args = params![sql_limit(limit), retired_before];
        self.links_where(&tail, args, "choosing links to sweep")
    }

    fn sweep_size(&self, retired_before: Option<&str>) -> Result<u64, StateError> {
        let sql = format!("SELECT COUNT(*) FROM links WHERE created = 1 AND {SWEEPABLE}");
        // `?1` is the limit in `links_to_sweep`; unused here, bound all the same.
        let args = params![Option::<i64>::None, retired_before];
        let n: Vec<i64> = self.select(&sql, args, |r| r.get(0), "counting links to sweep")?;
        Ok(n.first().copied().unwrap_or(0).max(0) as u64)
    }

    fn link_digests(&self) -> Result<Vec<LinkDigest>, StateError> {
        let sql = "SELECT l.defender_id, l.sentinel_id, l.defender_version, l.sentinel_version, \
                   d.defender, d.sentinel FROM links l \
                   LEFT JOIN comment_digests d ON d.defender_id = l.defender_id WHERE l.created = 1";
        self.select(
            sql,
            [],
            |row| {
                Ok(LinkDigest {
                    defender_id: row.get(0)?,
                    sentinel_id: row.get(1)?,
                    defender_version: row.get(2)?,
                    sentinel_version: row.get(3)?,
                    comments: CommentDigest {
                        defender: row.get(4)?,
                        sentinel: row
                            .get::<_, Option<i64>>(5)?
                            .and_then(|n| u64::try_from(n).ok()),
                    },
                })
            },
            "reading link digests",
        )
    }

    fn comment_digest(&self, defender_id: &str) -> Result<CommentDigest, StateError> {
        let sql = "SELECT defender, sentinel FROM comment_digests WHERE defender_id = ?1";
        let op = format!("reading the comment digest of {defender_id}");
        let found = self.select(
            sql,
            [defender_id],
            |row| {
                Ok(CommentDigest {
                    defender: row.get(0)?,
                    sentinel: row
                        .get::<_, Option<i64>>(1)?
                        .and_then(|n| u64::try_from(n).ok()),
                })
            },
            &op,
        )?;
        Ok(found.into_iter().next().unwrap_or_default())
    }

    fn set_comment_digest(
        &self,
        defender_id: &str,
        digest: &CommentDigest,
    ) -> Result<(), StateError> {
        let sql =
            "INSERT INTO comment_digests (defender_id, defender, sentinel) VALUES (?1, ?2, ?3) \
                   ON CONFLICT (defender_id) DO UPDATE SET defender = excluded.defender, \
                   sentinel = excluded.sentinel";
        let op = format!("storing the comment digest of {defender_id}");
        let sentinel = digest.sentinel.and_then(|n| i64::try_from(n).ok());
        self.write(sql, params![defender_id, digest.defender, sentinel], &op)
    }

    fn sentinel_copy(&self, defender_id: &str) -> Result<Option<Value>, StateError> {
        let sql = "SELECT body FROM sentinel_copies WHERE defender_id = ?1";
        let op = format!("reading the Sentinel copy of {defender_id}");
        let found: Option<String> = self
            .select(sql, [defender_id], |row| row.get(0), &op)?
            .pop();
        // An unreadable copy is no copy: the caller reads Sentinel instead.
        Ok(found.and_then(|body| serde_json::from_str(&body).ok()))
    }

    fn put_sentinel_copy(&self, defender_id: &str, copy: &Value) -> Result<(), StateError> {
        let sql = "INSERT INTO sentinel_copies (defender_id, body) VALUES (?1, ?2) \
                   ON CONFLICT (defender_id) DO UPDATE SET body = excluded.body";
        let op = format!("storing the Sentinel copy of {defender_id}");
        let body = copy.to_string();
        self.write(sql, params![defender_id, body], &op)
    }

    fn defender_copy(&self, defender_id: &str) -> Result<Option<DefenderCopy>, StateError> {
        let sql = "SELECT body, alerts_read_at FROM defender_copies WHERE defender_id = ?1";
        let op = format!("reading the Defender copy of {defender_id}");
        let found: Option<(String, String)> = self
            .select(
                sql,
                [defender_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
                &op,
            )?
            .pop();
        // An unreadable copy is no copy: the caller reads Graph instead.
        Ok(found.and_then(|(body, alerts_read_at)| {
            let incident = serde_json::from_str(&body).ok()?;
            Some(DefenderCopy {
                incident,
                alerts_read_at,
            })
        }))
    }

    fn put_defender_copy(&self, defender_id: &str, copy: &DefenderCopy) -> Result<(), StateError> {
        let op = format!("storing the Defender copy of {defender_id}");
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(&op)?;
        exec(
            &tx,
            "INSERT INTO defender_copies (defender_id, body, alerts_read_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (defender_id) DO UPDATE SET body = excluded.body, \
             alerts_read_at = excluded.alerts_read_at",
            params![defender_id, copy.incident.to_string(), copy.alerts_read_at],
            &op,
        )?;
        exec(
            &tx,
            "DELETE FROM alert_homes WHERE defender_id = ?1",
            [defender_id],
            &op,
        )?;
        let alerts = copy.incident["alerts"].as_array().into_iter().flatten();
        for alert in alerts.filter_map(|a| a["id"].as_str()) {
            // An alert sits in one incident: a copy read later claims it from an older one.
            exec(
                &tx,
                "INSERT INTO alert_homes (alert_id, defender_id) VALUES (?1, ?2) \
                 ON CONFLICT (alert_id) DO UPDATE SET defender_id = excluded.defender_id",
                [alert, defender_id],
                &op,
            )?;
        }
        tx.commit().ctx(&op)
    }

    fn refresh_defender_copy(&self, defender_id: &str, incident: &Value) -> Result<(), StateError> {
        // `json_extract` of an array hands `json_set` JSON, not a string.
        let sql = "UPDATE defender_copies \
                   SET body = json_set(?2, '$.alerts', json_extract(body, '$.alerts')) \
                   WHERE defender_id = ?1";
        let op = format!("refreshing the Defender copy of {defender_id}");
        self.write(sql, params![defender_id, incident.to_string()], &op)
    }

    fn forget_defender_copies(
        &self,
        incidents: &[String],
        alerts: &[String],
    ) -> Result<usize, StateError> {
        let op = "dropping stale Defender copies";
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(op)?;
        let mut stale: std::collections::BTreeSet<String> = incidents.iter().cloned().collect();
        {
            let mut home = tx
                .prepare_cached("SELECT defender_id FROM alert_homes WHERE alert_id = ?1")
                .ctx(op)?;
            for alert in alerts {
                let found: Vec<String> = home
                    .query_map([alert], |row| row.get(0))
                    .ctx(op)?
                    .collect::<rusqlite::Result<_>>()
                    .ctx(op)?;
                stale.extend(found);
            }
        }
        let mut dropped = 0;
        for id in &stale {
            dropped += tx
                .execute("DELETE FROM defender_copies WHERE defender_id = ?1", [id])
                .ctx(op)?;
            exec(
                &tx,
                "DELETE FROM alert_homes WHERE defender_id = ?1",
                [id],
                op,
            )?;
        }
        tx.commit().ctx(op)?;
        Ok(dropped)
    }

    fn forget_all_defender_copies(&self) -> Result<(), StateError> {
        let op = "dropping every Defender copy";
        self.write("DELETE FROM defender_copies", [], op)?;
        self.write("DELETE FROM alert_homes", [], op)
    }

    fn mark_swept(&self, defender_id: &str, at: &str) -> Result<(), StateError> {
        let sql = "UPDATE links SET swept_at = ?2 WHERE defender_id = ?1";
        let op = format!("marking {defender_id} swept");
        self.write(sql, [defender_id, at], &op)
    }

    fn links(&self) -> Result<Vec<Link>, StateError> {
        self.links_where("ORDER BY defender_id", [], "reading links")
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let sql = "SELECT value FROM meta WHERE key = ?1";
        let op = format!("reading meta {key}");
        Ok(self.select(sql, [key], |row| row.get(0), &op)?.pop())
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        let sql = "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        self.write(sql, [key, value], &format!("storing meta {key}"))
    }

    fn counts(&self) -> Result<Counts, StateError> {
        let sql = "SELECT (SELECT count(*) FROM links WHERE created = 1), \
                          (SELECT count(*) FROM links WHERE created = 0), \
                          (SELECT count(*) FROM comment_pairs), \
                          (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM audit), \
                          (SELECT count(*) FROM comment_pairs WHERE defender_key IS NULL)";
        let decode = |row: &Row<'_>| {
            Ok(Counts {
                links: row.get(0)?,
                pending_creates: row.get(1)?,
                comment_pairs: row.get(2)?,
                dead_letters: row.get(3)?,
                audit_rows: row.get(4)?,
                comment_outbox: row.get(5)?,
            })
        };
        let mut counts = self.select(sql, [], decode, "counting")?;
        Ok(counts.pop().unwrap_or_default()) // a scalar SELECT always yields one row
    }

    fn dead_letter_count(&self) -> Result<u64, StateError> {
        let decode = |row: &Row<'_>| row.get::<_, u64>(0);
        let mut n = self.select(
            "SELECT count(*) FROM dead_letters",
            [],
            decode,
            "counting dead letters",
        )?;
        Ok(n.pop().unwrap_or_default())
    }
}
