//! What `/healthz` (liveness) and `/readyz` (readiness) say about `rulebridge run`.
//!
//! Liveness answers "is the process loop turning?": 503 only when neither a loop turn
//! nor a finished incident has been seen for `server.stuck_after_secs`, the one case a
//! restart helps. A failing API is not a reason to restart, so it never fails liveness.
//!
//! Readiness answers "is this instance doing its job?": 200 once both sides have been
//! polled successfully with the pack loaded; 503 with a JSON reason while a side has
//! failed for longer than `server.unready_after_secs`, the last reload of the pack was
//! rejected (the files on disk are not what runs) or is stuck, or the state file could
//! not be written. Every condition recovers by itself when its cause goes away.
//!
//! Pure bookkeeping (std only, clock passed in): the service records what happens,
//! the ops server asks on each request, and unit tests drive it with made-up instants.

use crate::model::Side;
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The thresholds (from `[server]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct HealthOptions {
    /// Liveness fails after this long without progress.
    pub stuck_after: Duration,
    /// Readiness fails once a side has been failing this long.
    pub unready_after: Duration,
}

#[derive(Debug, Default, Clone)]
struct SideHealth {
    /// RFC 3339 of the last successful poll.
    ok_at: Option<String>,
    failing_since: Option<Instant>,
    error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    last_progress: Instant,
    progress_mark: u64,
    sides: [SideHealth; 2],
    state_error: Option<String>,
}

/// The running pack and, when the last reload was rejected, the candidate refused.
#[derive(Debug, Clone, Default)]
pub struct PackHealth {
    pub version: String,
    /// `(candidate version, problems)` of a rejected last reload.
    pub rejected: Option<(Option<String>, Vec<String>)>,
    /// RFC 3339: a reload attempt has been stuck (and abandoned) since then.
    pub stuck_since: Option<String>,
}

/// Shared between the poll loop (writer) and the ops server (reader).
#[derive(Debug)]
pub struct Health {
    options: HealthOptions,
    inner: Mutex<Inner>,
}

fn index(side: Side) -> usize {
    match side {
        Side::Defender => 0,
        Side::Sentinel => 1,
    }
}

impl Health {
    pub fn new(options: HealthOptions, now: Instant) -> Health {
        Health {
            options,
            inner: Mutex::new(Inner {
                last_progress: now,
                progress_mark: 0,
                sides: Default::default(),
                state_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loop turned (a cycle started or ended).
    pub fn beat(&self, now: Instant) {
        self.lock().last_progress = now;
    }

    /// Progress inside a long cycle: `mark` is a counter that grows with the work done
    /// (incidents finished); a change counts as a beat.
    pub fn progress(&self, mark: u64, now: Instant) {
        let mut inner = self.lock();
        if mark != inner.progress_mark {
            inner.progress_mark = mark;
            inner.last_progress = now;
        }
    }

    /// A side's poll pass ended: `Ok` when complete, else the error that stopped it.
    pub fn polled(&self, side: Side, result: Result<(), String>, now: Instant) {
        let mut inner = self.lock();
        let s = &mut inner.sides[index(side)];
        match result {
            Ok(()) => {
                s.ok_at = Some(chrono::Utc::now().to_rfc3339());
                s.failing_since = None;
                s.error = None;
            }
            Err(e) => {
                s.failing_since.get_or_insert(now);
                s.error = Some(e);
            }
        }
    }

    /// The state file took a write (`Ok`) or refused one.
    pub fn state_written(&self, result: Result<(), String>) {
        self.lock().state_error = result.err();
    }

    /// `(alive, message)` for `/healthz`.
    pub fn liveness(&self, now: Instant) -> (bool, String) {
        let idle = now.saturating_duration_since(self.lock().last_progress);
        if idle > self.options.stuck_after {
            (
                false,
                format!(
                    "stuck: no loop turn and no incident finished for {}s (limit {}s)",
                    idle.as_secs(),
                    self.options.stuck_after.as_secs()
                ),
            )
        } else {
            (true, format!("loop turned {}s ago", idle.as_secs()))
        }
    }

    /// `(ready, body)` for `/readyz`: the body names every check and, when not ready,
    /// the reasons (`reason` joins them for a one-line view).
    pub fn readiness(&self, pack: &PackHealth, now: Instant) -> (bool, Value) {
        let inner = self.lock();
        let mut reasons = Vec::new();
        let mut checks = serde_json::Map::new();
        for side in [Side::Defender, Side::Sentinel] {
            let s = &inner.sides[index(side)];
            let failing_for = s
                .failing_since
                .map(|t| now.saturating_duration_since(t).as_secs());
            let ok = match (&s.ok_at, failing_for) {
                (None, _) => {
                    reasons.push(match &s.error {
                        Some(e) => format!("{}: not polled successfully yet: {e}", side.name()),
                        None => format!("{}: not polled successfully yet", side.name()),
                    });
                    false
                }
                (Some(_), Some(secs)) if secs >= self.options.unready_after.as_secs() => {
                    reasons.push(format!(
                        "{}: polls failing for {secs}s (limit {}s): {}",
                        side.name(),
                        self.options.unready_after.as_secs(),
                        s.error.as_deref().unwrap_or("")
                    ));
                    false
                }
                _ => true,
            };
            checks.insert(
                side.name().to_string(),
                json!({
                    "ok": ok,
                    "last_success": s.ok_at,
                    "failing_for_secs": failing_for,
                    "error": s.error,
                }),
            );
        }
        let pack_ok = pack.rejected.is_none();
        if let Some((candidate, problems)) = &pack.rejected {
            reasons.push(format!(
                "pack: the last reload was rejected (candidate {}, {} problem{}); pack {} still runs",
                candidate.as_deref().unwrap_or("unreadable"),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                pack.version
            ));
        }
        if let Some(since) = &pack.stuck_since {
            reasons.push(format!(
                "pack: a reload has been stuck since {since} (abandoned); pack {} still runs",
                pack.version
            ));
        }
        let pack_ok = pack_ok && pack.stuck_since.is_none();
        checks.insert(
            "pack".into(),
            json!({
                "ok": pack_ok,
                "reload_stuck_since": pack.stuck_since,
                "version": pack.version,
                "rejected_candidate": pack.rejected.as_ref().map(|(v, _)| v),
                "problems": pack.rejected.as_ref().map(|(_, p)| p),
            }),
        );
        if let Some(e) = &inner.state_error {
            reasons.push(format!("state: not writable: {e}"));
        }
        checks.insert(
            "state".into(),
            json!({ "ok": inner.state_error.is_none(), "error": inner.state_error }),
        );
        let ready = reasons.is_empty();
        let body = json!({
            "ready": ready,
            "reason": (!ready).then(|| reasons.join("; ")),
            "reasons": reasons,
            "checks": checks,
        });
        (ready, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: HealthOptions = HealthOptions {
        stuck_after: Duration::from_secs(600),
        unready_after: Duration::from_secs(120),
    };

    fn pack() -> PackHealth {
        PackHealth {
            version: "abc".into(),
            ..PackHealth::default()
        }
    }

    #[test]
    fn ready_only_after_both_sides_polled() {
        let t0 = Instant::now();
        let h = Health::new(OPTS, t0);
        let (ready, body) = h.readiness(&pack(), t0);
        assert!(!ready);
        assert_eq!(body["reasons"].as_array().unwrap().len(), 2, "{body}");
        h.polled(Side::Defender, Ok(()), t0);
        assert!(!h.readiness(&pack(), t0).0);
        h.polled(Side::Sentinel, Ok(()), t0);
        let (ready, body) = h.readiness(&pack(), t0);
        assert!(ready, "{body}");
        assert_eq!(body["reason"], Value::Null);
    }

    #[test]
    fn a_failing_side_is_tolerated_until_the_limit() {
        let t0 = Instant::now();
        let h = Health::new(OPTS, t0);
        h.polled(Side::Defender, Ok(()), t0);
        h.polled(Side::Sentinel, Ok(()), t0);
        h.polled(Side::Sentinel, Err("503".into()), t0);
        h.polled(
            Side::Sentinel,
            Err("503 again".into()),
            t0 + Duration::from_secs(60),
        );
        assert!(h.readiness(&pack(), t0 + Duration::from_secs(119)).0);
        let (ready, body) = h.readiness(&pack(), t0 + Duration::from_secs(121));
        assert!(!ready);
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("sentinel: polls failing for 121s"),
            "{reason}"
        );
        assert!(reason.ends_with("503 again"), "{reason}");
        h.polled(Side::Sentinel, Ok(()), t0 + Duration::from_secs(130));
        assert!(h.readiness(&pack(), t0 + Duration::from_secs(130)).0);
    }

    #[test]
    fn a_rejected_reload_and_an_unwritable_state_are_not_ready() {
        let t0 = Instant::now();
        let h = Health::new(OPTS, t0);
        h.polled(Side::Defender, Ok(()), t0);
        h.polled(Side::Sentinel, Ok(()), t0);
        let rejected = PackHealth {
            version: "abc".into(),
            rejected: Some((Some("def".into()), vec!["a.rhai:1:1: bad".into()])),
            stuck_since: None,
        };
        let (ready, body) = h.readiness(&rejected, t0);
        assert!(!ready);
        assert_eq!(body["checks"]["pack"]["rejected_candidate"], "def");
        let stuck = PackHealth {
            stuck_since: Some("2026-12-04T20:00:00Z".into()),
            ..pack()
        };
        let (ready, body) = h.readiness(&stuck, t0);
        assert!(!ready);
        assert!(
            body["reason"].as_str().unwrap().contains("stuck since"),
            "{body}"
        );
        h.state_written(Err("database is locked".into()));
        let (_, body) = h.readiness(&pack(), t0);
        assert_eq!(body["reason"], "state: not writable: database is locked");
        h.state_written(Ok(()));
        assert!(h.readiness(&pack(), t0).0);
    }

    #[test]
    fn liveness_fails_only_without_progress() {
        let t0 = Instant::now();
        let h = Health::new(OPTS, t0);
        assert!(h.liveness(t0 + Duration::from_secs(600)).0);
        h.progress(5, t0 + Duration::from_secs(500));
        assert!(h.liveness(t0 + Duration::from_secs(1000)).0);
        h.progress(5, t0 + Duration::from_secs(1050));
        let (alive, message) = h.liveness(t0 + Duration::from_secs(1101));
        assert!(!alive);
        assert!(message.starts_with("stuck: "), "{message}");
        h.beat(t0 + Duration::from_secs(1102));
        assert!(h.liveness(t0 + Duration::from_secs(1103)).0);
    }
}
