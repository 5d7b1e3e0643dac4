//! The SQLite state store against real files: what is committed comes back intact,
//! survives a reopen, and a failed commit leaves nothing behind.

use rulebridge::model::Side;
use rulebridge::state::{
    AuditRow, CommentDigest, CommentPair, Commit, Counts, DeadLetter, Fields, Link, SqliteStore,
    StateError, StateStore,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    (dir, path)
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).expect("open state store")
}

fn fields(value: Value) -> Fields {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn link(defender_id: &str, swept_at: Option<&str>) -> Link {
    Link {
        defender_id: defender_id.into(),
        sentinel_id: format!("s-{defender_id}"),
        created: true,
        defender_version: Some("2024-05-01T10:00:00Z".into()),
        sentinel_version: Some("\"etag-1\"".into()),
        base_defender: fields(json!({"status": "active"})),
        base_sentinel: fields(json!({"status": "Active"})),
        synced_at: Some("2024-05-01T10:00:01Z".into()),
        swept_at: swept_at.map(String::from),
    }
}

fn audit(defender_id: &str, action: &str, field: Option<&str>) -> AuditRow {
    AuditRow {
        id: 0,
        at: "2024-05-01T10:00:01Z".into(),
        defender_id: defender_id.into(),
        sentinel_id: format!("s-{defender_id}"),
        side: Side::Sentinel,
        action: action.into(),
        field: field.map(String::from),
        old: json!("New"),
        new: json!({"value": "Active", "why": ["rule", 1, null]}),
        rule: Some("status_map".into()),
        pack_version: "pack-1".into(),
    }
}

fn comment(defender_id: &str, sentinel_comment_id: &str, key: Option<&str>) -> CommentPair {
    CommentPair {
        defender_id: defender_id.into(),
        defender_key: key.map(String::from),
        sentinel_comment_id: sentinel_comment_id.into(),
        origin: Side::Sentinel,
        text: format!("comment {sentinel_comment_id}"),
    }
}

fn letter(side: Side, id: &str, first_at: &str, reason: &str, attempts: i64) -> DeadLetter {
    DeadLetter {
        side,
        incident_id: id.into(),
        kind: "rule_error".into(),
        reason: reason.into(),
        rule: Some("map.rhai:3:7".into()),
        pack_version: "pack-1".into(),
        first_at: first_at.into(),
        last_at: first_at.into(),
        attempts,
    }
}

#[test]
fn links_round_trip_with_nested_json_bases() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    let mut stored = link("D-1", None);
    stored.base_defender = fields(json!({
        "status": "active",
        "labels": ["a", "ü ✓", {"deep": [1, 2.5, true, null]}],
        "owner": {"upn": "ana@example.com", "ids": {"aad": "x-1"}},
    }));
    stored.base_sentinel = fields(json!({"status": "Active", "labels": []}));
    store
        .commit(&Commit {
            link: Some(stored.clone()),
            ..Commit::default()
        })
        .unwrap();

    assert_eq!(store.link("D-1").unwrap(), Some(stored.clone()));
    assert_eq!(
        store.link_by_sentinel("s-D-1").unwrap(),
        Some(stored.clone())
    );
    assert_eq!(store.link("D-2").unwrap(), None);
    assert_eq!(store.link_by_sentinel("D-1").unwrap(), None);

    // A second commit replaces the link wholesale.
    let mut updated = stored.clone();
    updated.sentinel_version = Some("\"etag-2\"".into());
    updated.base_sentinel = fields(json!({"status": "Closed"}));
    updated.swept_at = Some("2024-05-02T00:00:00Z".into());
    store
        .commit(&Commit {
            link: Some(updated.clone()),
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(store.links().unwrap(), vec![updated]);
}

#[test]
fn begin_create_records_a_pending_link_and_never_clobbers() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    store.begin_create("D-1", "s-D-1").unwrap();
    let pending = store.link("D-1").unwrap().expect("pending link");
    assert!(!pending.created);
    assert_eq!(pending.sentinel_id, "s-D-1");
    assert!(pending.base_defender.is_empty() && pending.base_sentinel.is_empty());
    assert_eq!(
        (pending.defender_version, pending.sentinel_version),
        (None, None)
    );
    assert_eq!((pending.synced_at, pending.swept_at), (None, None));
    assert_eq!(store.counts().unwrap().pending_creates, 1);

    // A retried create of a pending link changes nothing, nor of a created one.
    store.begin_create("D-1", "s-D-1").unwrap();
    assert_eq!(store.links().unwrap().len(), 1);
    let created = link("D-1", None);
    store
        .commit(&Commit {
            link: Some(created.clone()),
            ..Commit::default()
        })
        .unwrap();
    store.begin_create("D-1", "s-D-1").unwrap();
    assert_eq!(store.link("D-1").unwrap(), Some(created));

    // Two Defender incidents claiming one Sentinel twin is an error, not a no-op.
    let clash = store.begin_create("D-2", "s-D-1").unwrap_err();
    assert!(
        matches!(clash, StateError::Sql { .. }) && clash.to_string().contains("D-2"),
        "{clash}"
    );
    assert_eq!(store.link("D-2").unwrap(), None);
}

#[test]
fn commit_stores_everything_and_survives_reopen() {
    let (_dir, path) = temp_db();
    {
        let store = open(&path);
        store
            .dead_letter(&letter(
                Side::Defender,
                "D-1",
                "2024-05-01T09:00:00Z",
                "boom",
                1,
            ))
            .unwrap();
        store
            .dead_letter(&letter(
                Side::Sentinel,
                "s-D-9",
                "2024-05-01T09:00:00Z",
                "x",
                1,
            ))
            .unwrap();
        let commit = Commit {
            link: Some(link("D-1", None)),
            audit: vec![
                audit("D-1", "update", Some("status")),
                audit("D-1", "comment", None),
            ],
            comments: vec![comment("D-1", "c-1", Some("k-1"))],
            resolved: vec![(Side::Defender, "D-1".into())],
        };
        store.commit(&commit).unwrap();
    }
    let store = open(&path);
    assert_eq!(store.link("D-1").unwrap(), Some(link("D-1", None)));
    let trail = store.audit_for("D-1").unwrap();
    assert_eq!(trail.len(), 2);
    assert_eq!(
        trail[0],
        AuditRow {
            id: trail[0].id,
            ..audit("D-1", "update", Some("status"))
        }
    );
    assert_eq!(trail[1].action, "comment");
    assert_eq!(trail[1].field, None);
    assert_eq!(
        store.comment_pairs("D-1").unwrap(),
        vec![comment("D-1", "c-1", Some("k-1"))]
    );
    let letters = store.dead_letters().unwrap();
    assert_eq!(letters.len(), 1, "only the resolved letter is gone");
    assert_eq!(
        (letters[0].side, letters[0].incident_id.as_str()),
        (Side::Sentinel, "s-D-9")
    );
}

#[test]
fn commit_is_atomic_when_a_later_statement_fails() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    let before = link("D-1", None);
    store
        .commit(&Commit {
            link: Some(before.clone()),
            ..Commit::default()
        })
        .unwrap();
    store
        .dead_letter(&letter(
            Side::Defender,
            "D-1",
            "2024-05-01T09:00:00Z",
            "boom",
            1,
        ))
        .unwrap();
    // Force the second audit insert to fail, after the link and first row went in.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER fail_audit BEFORE INSERT ON audit WHEN NEW.action = 'explode' \
         BEGIN SELECT RAISE(ABORT, 'forced failure'); END;",
    )
    .unwrap();

    let mut after = before.clone();
    after.sentinel_version = Some("\"etag-2\"".into());
    after.base_sentinel = fields(json!({"status": "Closed"}));
    let mut commit = Commit {
        link: Some(after.clone()),
        audit: vec![
            audit("D-1", "update", Some("status")),
            audit("D-1", "explode", None),
        ],
        comments: vec![comment("D-1", "c-1", None)],
        resolved: vec![(Side::Defender, "D-1".into())],
    };
    let err = store.commit(&commit).unwrap_err();
    assert!(
        matches!(err, StateError::Sql { .. }) && err.to_string().contains("forced failure"),
        "{err}"
    );

    assert_eq!(store.link("D-1").unwrap(), Some(before.clone()));
    assert!(store.audit_for("D-1").unwrap().is_empty());
    assert!(store.comment_pairs("D-1").unwrap().is_empty());
    assert_eq!(store.dead_letters().unwrap().len(), 1);
    drop(store);
    let store = open(&path);
    assert_eq!(store.link("D-1").unwrap(), Some(before));
    assert_eq!(store.counts().unwrap().audit_rows, 0);

    // The failed commit left no transaction open: the same store commits again.
    commit.audit.pop();
    store.commit(&commit).unwrap();
    assert_eq!(store.link("D-1").unwrap(), Some(after));
    assert_eq!(store.audit_for("D-1").unwrap().len(), 1);
    assert!(store.dead_letters().unwrap().is_empty());
}

#[test]
fn audit_ids_are_assigned_by_the_store() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    let mut row = audit("D-1", "update", Some("status"));
    row.id = 42;
    store
        .commit(&Commit {
            audit: vec![row.clone(), row],
            ..Commit::default()
        })
        .unwrap();
    let ids: Vec<i64> = store
        .audit_for("D-1")
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn comment_pairs_upsert_by_incident_and_sentinel_comment() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    // Outbox entry first (no Defender key yet), then the acknowledged pair.
    store
        .put_comment_pair(&comment("D-1", "c-2", None))
        .unwrap();
    store
        .put_comment_pair(&comment("D-1", "c-1", None))
        .unwrap();
    store
        .put_comment_pair(&comment("D-2", "c-2", Some("k-other")))
        .unwrap();
    let mut acked = comment("D-1", "c-2", Some("k-2"));
    acked.origin = Side::Defender;
    store
        .commit(&Commit {
            comments: vec![acked.clone()],
            ..Commit::default()
        })
        .unwrap();

    let pairs = store.comment_pairs("D-1").unwrap();
    assert_eq!(
        pairs,
        vec![acked, comment("D-1", "c-1", None)],
        "insertion order, one row per pair"
    );
    assert_eq!(store.comment_pairs("D-2").unwrap().len(), 1);
    assert!(store.comment_pairs("D-3").unwrap().is_empty());
    assert_eq!(store.counts().unwrap().comment_pairs, 3);
}

#[test]
fn dead_letters_count_attempts_and_keep_first_at() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    // The passed attempt count is ignored: a new letter starts at 1.
    store
        .dead_letter(&letter(
            Side::Defender,
            "D-1",
            "2024-05-01T09:00:00Z",
            "first",
            7,
        ))
        .unwrap();
    let mut again = letter(Side::Defender, "D-1", "2024-05-02T09:00:00Z", "second", 1);
    again.kind = "rejected".into();
    again.rule = None;
    again.pack_version = "pack-2".into();
    again.last_at = "2024-05-02T09:30:00Z".into();
    store.dead_letter(&again).unwrap();
    store.dead_letter(&again).unwrap();
    // Same incident id on the other side is a different letter.
    store
        .dead_letter(&letter(
            Side::Sentinel,
            "D-1",
            "2024-04-30T00:00:00Z",
            "other",
            5,
        ))
        .unwrap();

    let letters = store.dead_letters().unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(
        letters[0],
        letter(Side::Sentinel, "D-1", "2024-04-30T00:00:00Z", "other", 1)
    );
    let expected = DeadLetter {
        first_at: "2024-05-01T09:00:00Z".into(),
        attempts: 3,
        ..again
    };
    assert_eq!(letters[1], expected);
    assert_eq!(store.counts().unwrap().dead_letters, 2);
}

#[test]
fn cursors_and_last_poll_are_independent_and_durable() {
    let (_dir, path) = temp_db();
    {
        let store = open(&path);
        assert_eq!(store.cursor(Side::Defender).unwrap(), None);
        assert_eq!(store.last_poll(Side::Defender).unwrap(), None);
        store
            .set_cursor(Side::Defender, "2024-05-01T00:00:00Z")
            .unwrap();
        assert_eq!(
            store.last_poll(Side::Defender).unwrap(),
            None,
            "cursor alone"
        );
        store
            .record_poll(Side::Defender, "2024-05-01T00:05:00Z")
            .unwrap();
        store
            .set_cursor(Side::Defender, "2024-05-01T00:04:00Z")
            .unwrap();
        store
            .record_poll(Side::Sentinel, "2024-05-01T00:06:00Z")
            .unwrap();
    }
    let store = open(&path);
    assert_eq!(
        store.cursor(Side::Defender).unwrap().as_deref(),
        Some("2024-05-01T00:04:00Z")
    );
    assert_eq!(
        store.last_poll(Side::Defender).unwrap().as_deref(),
        Some("2024-05-01T00:05:00Z")
    );
    assert_eq!(store.cursor(Side::Sentinel).unwrap(), None);
    assert_eq!(
        store.last_poll(Side::Sentinel).unwrap().as_deref(),
        Some("2024-05-01T00:06:00Z")
    );
}

#[test]
fn links_to_sweep_start_with_never_swept_then_oldest() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    for (id, swept) in [
        ("D-a", Some("2024-05-02T00:00:00Z")),
        ("D-d", None),
        ("D-c", Some("2024-05-01T00:00:00Z")),
        ("D-b", None),
    ] {
        store
            .commit(&Commit {
                link: Some(link(id, swept)),
                ..Commit::default()
            })
            .unwrap();
    }
    store.begin_create("D-0", "s-D-0").unwrap(); // pending: never swept

    let order = |limit| -> Vec<String> {
        store
            .links_to_sweep(limit, None)
            .unwrap()
            .into_iter()
            .map(|l| l.defender_id)
            .collect()
    };
    assert_eq!(order(10), ["D-b", "D-d", "D-c", "D-a"]);
    assert_eq!(order(2), ["D-b", "D-d"]);
    assert!(order(0).is_empty());

    store.mark_swept("D-b", "2024-05-03T00:00:00Z").unwrap();
    store
        .mark_swept("D-unknown", "2024-05-03T00:00:00Z")
        .unwrap();
    assert_eq!(order(10), ["D-d", "D-c", "D-a", "D-b"]);
    let swept = store.link("D-b").unwrap().unwrap().swept_at;
    assert_eq!(swept.as_deref(), Some("2024-05-03T00:00:00Z"));
    let all: Vec<String> = store
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.defender_id)
        .collect();
    assert_eq!(
        all,
        ["D-0", "D-a", "D-b", "D-c", "D-d"],
        "links() includes pending, by id"
    );
}

#[test]
fn closed_quiet_links_retire_from_the_sweep_and_return_when_synced_again() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    let closed = |id: &str, synced: &str| Link {
        base_sentinel: fields(json!({"status": "Closed"})),
        synced_at: Some(synced.into()),
        ..link(id, None)
    };
    for l in [
        link("D-open", None),
        closed("D-old", "2024-05-01T00:00:00Z"),
        closed("D-recent", "2024-05-09T00:00:00Z"),
    ] {
        store
            .commit(&Commit {
                link: Some(l),
                ..Commit::default()
            })
            .unwrap();
    }
    let ids = |before: Option<&str>| -> Vec<String> {
        let mut ids: Vec<String> = store
            .links_to_sweep(10, before)
            .unwrap()
            .into_iter()
            .map(|l| l.defender_id)
            .collect();
        ids.sort();
        ids
    };
    // No retirement: every created link.
    assert_eq!(ids(None), ["D-old", "D-open", "D-recent"]);
    assert_eq!(store.sweep_size(None).unwrap(), 3);
    // Closed and quiet since before May 5th: retired; closed but synced since: kept.
    let before = Some("2024-05-05T00:00:00Z");
    assert_eq!(ids(before), ["D-open", "D-recent"]);
    assert_eq!(store.sweep_size(before).unwrap(), 2);
    // Synced again (a poll saw it change): back in the sweep.
    store
        .commit(&Commit {
            link: Some(closed("D-old", "2024-05-10T00:00:00Z")),
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(ids(before), ["D-old", "D-open", "D-recent"]);
}

#[test]
fn comment_digests_are_stored_per_link_and_listed_with_versions() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    for id in ["D-1", "D-2"] {
        store
            .commit(&Commit {
                link: Some(link(id, None)),
                ..Commit::default()
            })
            .unwrap();
    }
    store.begin_create("D-pending", "s-D-pending").unwrap();
    assert_eq!(
        store.comment_digest("D-1").unwrap(),
        CommentDigest::default()
    );
    let digest = CommentDigest {
        defender: Some("2:abc".into()),
        sentinel: Some(3),
    };
    store.set_comment_digest("D-1", &digest).unwrap();
    assert_eq!(store.comment_digest("D-1").unwrap(), digest);
    let mut all = store.link_digests().unwrap();
    all.sort_by(|a, b| a.defender_id.cmp(&b.defender_id));
    // Pending creates are not listed; a link without a digest has an unknown one.
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].comments, digest);
    assert_eq!(all[0].sentinel_version.as_deref(), Some("\"etag-1\""));
    assert_eq!(all[1].comments, CommentDigest::default());
    // Replaced, not added.
    let next = CommentDigest {
        defender: Some("3:def".into()),
        sentinel: None,
    };
    store.set_comment_digest("D-1", &next).unwrap();
    assert_eq!(store.comment_digest("D-1").unwrap(), next);
}

#[test]
fn audit_is_found_by_either_id_and_paged_in_order() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    for (id, action) in [
        ("D-1", "create"),
        ("D-2", "create"),
        ("D-1", "update"),
        ("D-1", "skip"),
    ] {
        store
            .commit(&Commit {
                audit: vec![audit(id, action, None)],
                ..Commit::default()
            })
            .unwrap();
    }
    let by_defender = store.audit_for("D-1").unwrap();
    let actions: Vec<&str> = by_defender.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["create", "update", "skip"]);
    assert!(by_defender.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(store.audit_for("s-D-1").unwrap(), by_defender);
    assert_eq!(store.audit_for("s-D-2").unwrap().len(), 1);
    assert!(store.audit_for("D-3").unwrap().is_empty());

    let first = store.audit_since(0, 2).unwrap();
    assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
    let rest = store.audit_since(first[1].id, 100).unwrap();
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 4]);
    assert!(store.audit_since(4, 100).unwrap().is_empty());
}

#[test]
fn counts_cover_every_table() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    assert_eq!(store.counts().unwrap(), Counts::default());
    store.begin_create("D-1", "s-D-1").unwrap();
    store.begin_create("D-2", "s-D-2").unwrap();
    let commit = Commit {
        link: Some(link("D-1", None)),
        audit: vec![audit("D-1", "create", None); 3],
        comments: vec![
            comment("D-1", "c-1", None),
            comment("D-1", "c-2", Some("k-2")),
        ],
        resolved: vec![],
    };
    store.commit(&commit).unwrap();
    store
        .dead_letter(&letter(
            Side::Defender,
            "D-3",
            "2024-05-01T00:00:00Z",
            "x",
            1,
        ))
        .unwrap();
    let expected = Counts {
        links: 1,
        pending_creates: 1,
        comment_pairs: 2,
        dead_letters: 1,
        audit_rows: 3,
        comment_outbox: 1, // c-1: posted, not yet seen in Defender
    };
    assert_eq!(store.counts().unwrap(), expected);
}

#[test]
fn meta_round_trips_and_overwrites() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    assert_eq!(store.meta("pack_version").unwrap(), None);
    store.set_meta("pack_version", "pack-1").unwrap();
    store.set_meta("pack_version", "pack-2").unwrap();
    store.set_meta("loaded_at", "2024-05-01T00:00:00Z").unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(
        store.meta("pack_version").unwrap().as_deref(),
        Some("pack-2")
    );
    assert_eq!(
        store.meta("loaded_at").unwrap().as_deref(),
        Some("2024-05-01T00:00:00Z")
    );
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let (_dir, path) = temp_db();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", 999).unwrap();
    drop(raw);
    match SqliteStore::open(&path) {
        Err(StateError::TooNew { found, known }) => {
            assert_eq!(found, 999);
            assert_eq!(known, SqliteStore::SCHEMA_VERSION);
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    // Refusing must not have touched the file's version.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 999);
}

#[test]
fn migrations_are_idempotent_and_the_file_is_in_wal_mode() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    store.set_meta("k", "v").unwrap();
    drop(store);
    let store = open(&path); // a second open must not re-run migration 1
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("v"));

    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SqliteStore::SCHEMA_VERSION);
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "wal",
        "WAL is a property of the file, seen by any connection"
    );
    let sql = "SELECT name FROM sqlite_master \
               WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name";
    let mut stmt = raw.prepare(sql).unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "alert_homes",
            "audit",
            "comment_digests",
            "comment_pairs",
            "cursors",
            "dead_letters",
            "defender_copies",
            "links",
            "meta",
            "sentinel_copies"
        ]
    );
}

#[test]
fn open_failure_names_the_path() {
    let (dir, _) = temp_db();
    let path = dir.path().join("missing-dir").join("state.db");
    match SqliteStore::open(&path) {
        Err(StateError::Open {
            path: named,
            message,
        }) => {
            assert!(named.contains("missing-dir"), "{named}");
            assert!(!message.is_empty());
        }
        other => panic!("expected an open error, got {other:?}"),
    }
}

#[test]
fn one_store_is_shared_across_threads() {
    let (_dir, path) = temp_db();
    let store = Arc::new(open(&path));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..25 {
                    let id = format!("D-{t}-{i}");
                    let commit = Commit {
                        link: Some(link(&id, None)),
                        audit: vec![audit(&id, "create", None)],
                        ..Commit::default()
                    };
                    store.commit(&commit).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let counts = store.counts().unwrap();
    assert_eq!((counts.links, counts.audit_rows), (100, 100));
    let ids: Vec<i64> = store
        .audit_since(0, 1000)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
}

#[test]
fn a_file_of_the_previous_schema_gains_the_sentinel_copies_and_keeps_its_links() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    store
        .commit(&Commit {
            link: Some(link("800001", None)),
            ..Commit::default()
        })
        .unwrap();
    drop(store);
    // The file as the release before the copies left it: schema 2, no such table.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP TABLE sentinel_copies; DROP TABLE defender_copies; DROP TABLE alert_homes; \
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(raw);
    let store = open(&path);
    assert!(store.link("800001").unwrap().is_some());
    assert_eq!(store.sentinel_copy("800001").unwrap(), None);
    let copy = json!({"name": "s-1", "etag": "\"e-1\"", "properties": {"title": "T"}});
    store.put_sentinel_copy("800001", &copy).unwrap();
    let newer = json!({"name": "s-1", "etag": "\"e-2\"", "properties": {"title": "T2"}});
    store.put_sentinel_copy("800001", &newer).unwrap();
    assert_eq!(store.sentinel_copy("800001").unwrap(), Some(newer));
}

#[test]
fn a_file_of_schema_3_gains_the_defender_copies_whose_alerts_find_them() {
    let (_dir, path) = temp_db();
    let store = open(&path);
    store
        .commit(&Commit {
            link: Some(link("800001", None)),
            ..Commit::default()
        })
        .unwrap();
    drop(store);
    // The file as the release before kept alerts left it: schema 3.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP TABLE defender_copies; DROP TABLE alert_homes; PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(raw);
    let store = open(&path);
    assert!(store.link("800001").unwrap().is_some());
    assert_eq!(store.defender_copy("800001").unwrap(), None);
    let copy = |id: &str, alerts: &[&str]| rulebridge::state::DefenderCopy {
        incident: json!({"id": id, "alerts": alerts.iter().map(|a| json!({"id": a})).collect::<Vec<_>>()}),
        alerts_read_at: "2026-12-08T00:00:00Z".into(),
    };
    store
        .put_defender_copy("1", &copy("1", &["a", "b"]))
        .unwrap();
    store.put_defender_copy("2", &copy("2", &["c"])).unwrap();
    store.put_defender_copy("3", &copy("3", &["d"])).unwrap();
    assert_eq!(
        store.defender_copy("1").unwrap(),
        Some(copy("1", &["a", "b"]))
    );
    // A refresh takes the listing's fields and keeps the alerts and when they were read.
    store
        .refresh_defender_copy("1", &json!({"id": "1", "status": "resolved"}))
        .unwrap();
    let refreshed = store.defender_copy("1").unwrap().unwrap();
    assert_eq!(refreshed.incident["status"], "resolved");
    assert_eq!(
        refreshed.incident["alerts"],
        copy("1", &["a", "b"]).incident["alerts"]
    );
    assert_eq!(refreshed.alerts_read_at, "2026-12-08T00:00:00Z");
    store
        .refresh_defender_copy("9", &json!({"id": "9"}))
        .unwrap();
    assert_eq!(
        store.defender_copy("9").unwrap(),
        None,
        "no copy, nothing kept"
    );
    // Alert b moved to 2 and was read there: 2 now holds it, 1 no longer does.
    store
        .put_defender_copy("2", &copy("2", &["b", "c"]))
        .unwrap();
    // A changed alert drops the copy it sits in; an incident id drops its own.
    assert_eq!(store.forget_defender_copies(&[], &["b".into()]).unwrap(), 1);
    assert_eq!(store.defender_copy("2").unwrap(), None);
    assert!(store.defender_copy("1").unwrap().is_some());
    assert_eq!(
        store
            .forget_defender_copies(&["1".into(), "missing".into()], &["zzz".into()])
            .unwrap(),
        1
    );
    assert_eq!(store.defender_copy("1").unwrap(), None);
    assert!(store.defender_copy("3").unwrap().is_some());
    store.forget_all_defender_copies().unwrap();
    assert_eq!(store.defender_copy("3").unwrap(), None);
    assert_eq!(store.forget_defender_copies(&[], &["d".into()]).unwrap(), 0);
}
