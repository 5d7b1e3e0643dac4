//! One log event per incident outcome, with stable field names (README "Log fields"):
//! `event = "incident.synced" | "incident.filtered" | "incident.dead_lettered" |
//! "incident.gone" | "incident.deferred" | "incident.failed"` at info or above, and
//! `"incident.unchanged" | "incident.not_ours"` at debug (a sweep sees many of those).
//!
//! Why a task-local note: only the outermost call knows the outcome and the duration,
//! while what was written, by which rule, under which pack is learnt deep inside
//! `reconcile` on one of a dozen return paths. Each step adds what it learns with
//! [`note`]; [`observe`] wraps an incident's whole sync (listing read, alerts read,
//! reconcile, comments), and emits the one event when it ends. Nested `observe`s (a
//! sweep's read wrapping `from_defender`) collapse into the outermost, so an incident
//! is one event however it was reached. Incidents synced concurrently (a page, eight
//! at a time) each have their own note: the scope travels with each future.
//!
//! No secret or token can reach these fields: they are ids, field names, rule names,
//! versions and the reasons of dead letters, which the clients already keep free of
//! credentials (their errors never carry a token).

use super::reconcile::{Outcome, SyncError};
use crate::model::Side;
use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static NOTE: RefCell<Note>;
}

/// What the steps of one incident's sync learnt, for its event.
#[derive(Debug, Default)]
pub(super) struct Note {
    pub defender_id: Option<String>,
    pub sentinel_name: Option<String>,
    /// `create` (a twin was made) or `update`.
    pub action: Option<&'static str>,
    /// `connector` when linked to the incident Microsoft's connector made.
    pub twin: Option<&'static str>,
    pub to_sentinel: Vec<String>,
    pub to_defender: Vec<String>,
    pub comments: usize,
    /// The rules that decided (map rules of a create, direction rules of the fields
    /// written, the filter that dropped it, the rule that failed).
    pub rules: Vec<String>,
    pub pack_version: Option<String>,
    /// A dead letter's kind (`rule_error`, `rejected`, `gone`, `twin_missing`,
    /// `unreadable_stamp`, `split_pair`) and why, or why a built-in filter dropped it.
    pub kind: Option<&'static str>,
    pub reason: Option<String>,
}

impl Note {
    pub fn rule(&mut self, rule: &str) {
        if !rule.is_empty() && !self.rules.iter().any(|r| r == rule) {
            self.rules.push(rule.to_string());
        }
    }
}

/// Adds to the note of the incident being synced; `false` outside [`observe`] (a
/// caller that logs by itself then).
pub(super) fn note(f: impl FnOnce(&mut Note)) -> bool {
    NOTE.try_with(|n| f(&mut n.borrow_mut())).is_ok()
}

/// Runs one incident's sync and emits its event (unless an outer `observe` will).
pub(super) async fn observe<F>(side: Side, start: Note, sync: F) -> Result<Outcome, SyncError>
where
    F: Future<Output = Result<Outcome, SyncError>>,
{
    if NOTE.try_with(|_| ()).is_ok() {
        return sync.await;
    }
    let started = Instant::now();
    let (result, note) = NOTE
        .scope(RefCell::new(start), async {
            let result = sync.await;
            (result, NOTE.with(|n| n.take()))
        })
        .await;
    emit(side, &result, &note, started.elapsed());
    result
}

fn joined(items: &[String]) -> Option<String> {
    (!items.is_empty()).then(|| items.join(","))
}

/// Milliseconds with microsecond precision: readable, and sums well in a SIEM.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `to_sentinel`, `to_defender`, `both` or `none`: where this sync wrote fields.
fn direction(note: &Note) -> &'static str {
    match (note.to_sentinel.is_empty(), note.to_defender.is_empty()) {
        (false, true) => "to_sentinel",
        (true, false) => "to_defender",
        (false, false) => "both",
        (true, true) => "none",
    }
}

/// The common fields of every incident event; one macro because a `tracing` level and
/// field names must be constants at each call site.
macro_rules! incident_event {
    ($level:expr, $event:literal, $side:expr, $note:expr, $ms:expr, $($extra:tt)*) => {
        tracing::event!(
            $level,
            event = $event,
            side = $side.name(),
            defender_id = $note.defender_id.as_deref(),
            sentinel_name = $note.sentinel_name.as_deref(),
            rule = joined(&$note.rules).as_deref(),
            pack_version = $note.pack_version.as_deref(),
            duration_ms = $ms,
            $($extra)*
        )
    };
}

fn emit(side: Side, result: &Result<Outcome, SyncError>, note: &Note, elapsed: Duration) {
    use tracing::Level;
    let ms = millis(elapsed);
    let to_sentinel = joined(&note.to_sentinel);
    let to_defender = joined(&note.to_defender);
    match result {
        Ok(Outcome::Synced { writes }) => incident_event!(
            Level::INFO,
            "incident.synced",
            side,
            note,
            ms,
            action = note.action.unwrap_or("update"),
            twin = note.twin,
            direction = direction(note),
            fields_to_sentinel = to_sentinel.as_deref(),
            fields_to_defender = to_defender.as_deref(),
            comments = note.comments,
            writes = *writes,
            "incident synced"
        ),
        Ok(Outcome::Filtered) => incident_event!(
            Level::INFO,
            "incident.filtered",
            side,
            note,
            ms,
            reason = note.reason.as_deref(),
            "incident filtered out; not synced"
        ),
        Ok(Outcome::DeadLettered) => incident_event!(
            Level::WARN,
            "incident.dead_lettered",
            side,
            note,
            ms,
            kind = note.kind,
            reason = note.reason.as_deref(),
            "incident dead-lettered"
        ),
        Ok(Outcome::Gone) => incident_event!(
            Level::INFO,
            "incident.gone",
            side,
            note,
            ms,
            "incident no longer exists"
        ),
        Ok(Outcome::Unchanged) => incident_event!(
            Level::DEBUG,
            "incident.unchanged",
            side,
            note,
            ms,
            direction = direction(note),
            "incident unchanged"
        ),
        Ok(Outcome::NotOurs) => incident_event!(
            Level::DEBUG,
            "incident.not_ours",
            side,
            note,
            ms,
            "a Sentinel incident rulebridge does not sync"
        ),
        Err(SyncError::Transient(e)) => incident_event!(
            Level::WARN,
            "incident.deferred",
            side,
            note,
            ms,
            error = %e,
            "incident not finished (a transient failure); retried next cycle"
        ),
        Err(SyncError::State(e)) => incident_event!(
            Level::ERROR,
            "incident.failed",
            side,
            note,
            ms,
            error = %e,
            "incident not committed: the state file failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_names_where_fields_went() {
        let mut n = Note::default();
        assert_eq!(direction(&n), "none");
        n.to_sentinel.push("status".into());
        assert_eq!(direction(&n), "to_sentinel");
        n.to_defender.push("classification".into());
        assert_eq!(direction(&n), "both");
        n.to_sentinel.clear();
        assert_eq!(direction(&n), "to_defender");
    }

    #[test]
    fn rules_are_listed_once_in_order() {
        let mut n = Note::default();
        for r in ["b", "a", "b", ""] {
            n.rule(r);
        }
        assert_eq!(joined(&n.rules).as_deref(), Some("b,a"));
        assert_eq!(millis(Duration::from_micros(1500)), 1.5);
    }

    #[tokio::test]
    async fn nested_observes_make_one_note() {
        let outcome = observe(Side::Defender, Note::default(), async {
            assert!(note(|n| n.comments = 1));
            observe(Side::Defender, Note::default(), async {
                assert!(note(|n| n.comments += 1));
                Ok(Outcome::Unchanged)
            })
            .await
        })
        .await;
        assert_eq!(outcome.unwrap(), Outcome::Unchanged);
        assert!(!note(|_| ()), "no note outside observe");
    }
}
