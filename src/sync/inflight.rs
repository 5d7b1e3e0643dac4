//! One incident is synced by one task at a time. The service loop runs its cycle (polls,
//! scans, sweep, backfill) and the push hook's hints side by side, so a hint waits for
//! nothing but the incident it names; this module is what keeps the two apart.
//!
//! Invariants:
//! - Every sync of a linked incident holds its [`Claim`] (keyed by the Defender id) from
//!   before it reads the incident's link until it has committed. Two syncs of one
//!   incident at once could post a comment twice or commit bases from a stale read.
//! - A hint reads both sides after it holds the claim, so its copies are fresh. A
//!   cycle's copies come from listings read before the claim; if a hint synced the
//!   incident since the cycle's pass began, the listed copy may predate the hint's
//!   writes, and deciding from it would undo them (an old value read as a new change).
//!   Such a copy is read again ([`InFlight::hinted_since`]). Only hints sync outside the
//!   loop's passes, which run one after another, so they are the only source of stale
//!   copies.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Default)]
pub(super) struct InFlight {
    busy: Mutex<HashSet<String>>,
    freed: Notify,
    /// When a hint's sync of each incident ended (kept for a few minutes).
    hinted: Mutex<HashMap<String, Instant>>,
    /// When the loop's current pass began (`None`: no pass has begun).
    pass_started: Mutex<Option<Instant>>,
}

/// The right to sync one incident; released when dropped.
pub(super) struct Claim<'a> {
    owner: &'a InFlight,
    id: String,
    by_hint: bool,
}

/// How long a hint's mark is kept: far longer than any pass, so no pass that began
/// before a hint can miss it.
const HINT_MEMORY: Duration = Duration::from_secs(3600);

impl InFlight {
    /// Waits until no other task syncs incident `id`, then claims it.
    pub(super) async fn claim(&self, id: &str, by_hint: bool) -> Claim<'_> {
        loop {
            // Registered before the check, so a release between the check and the
            // wait still wakes this task.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if lock(&self.busy).insert(id.to_string()) {
                return Claim {
                    owner: self,
                    id: id.to_string(),
                    by_hint,
                };
            }
            freed.await;
        }
    }

    /// A pass of the loop (a cycle, a dead-letter retry) begins: copies it lists from
    /// now on are newer than any hint that ended before.
    pub(super) fn pass_begins(&self) {
        *lock(&self.pass_started) = Some(Instant::now());
        let forget_before = Instant::now().checked_sub(HINT_MEMORY);
        if let Some(before) = forget_before {
            lock(&self.hinted).retain(|_, at| *at >= before);
        }
    }

    /// A hint synced incident `id` since the current pass began, so a copy the pass
    /// listed may be older than what that hint wrote. Without a pass begun (a caller
    /// driving passes by hand), any hint counts.
    pub(super) fn hinted_since(&self, id: &str) -> bool {
        let Some(at) = lock(&self.hinted).get(id).copied() else {
            return false;
        };
        match *lock(&self.pass_started) {
            Some(started) => at >= started,
            None => true,
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.by_hint {
            lock(&self.owner.hinted).insert(self.id.clone(), Instant::now());
        }
        lock(&self.owner.busy).remove(&self.id);
        self.owner.freed.notify_waiters();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_second_claim_of_one_incident_waits_for_the_first() {
        let flight = Arc::new(InFlight::default());
        let first = flight.claim("1", false).await;
        // Another incident is not held up.
        drop(flight.claim("2", false).await);
        let waiter = tokio::spawn({
            let flight = flight.clone();
            async move {
                let _claim = flight.claim("1", true).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second claim did not wait");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiting claim was not woken")
            .unwrap();
    }

    #[tokio::test]
    async fn a_hint_marks_copies_listed_before_it_stale_and_not_those_after() {
        let flight = InFlight::default();
        flight.pass_begins();
        assert!(!flight.hinted_since("1"));
        drop(flight.claim("1", true).await);
        drop(flight.claim("2", false).await);
        assert!(flight.hinted_since("1"), "a hint during the pass");
        assert!(!flight.hinted_since("2"), "the pass's own sync is no hint");
        tokio::time::sleep(Duration::from_millis(5)).await;
        flight.pass_begins();
        assert!(!flight.hinted_since("1"), "the hint ended before this pass");
    }
}
