//! What each request is for, and who may spend the API budget when it runs short.
//!
//! Every API has one budget: its rate limiter (a share of the documented limit, capped
//! by the `x-ms-ratelimit-remaining-*` headers the service sends). The sync's passes
//! draw on it in a fixed priority order — writes of changes, hints, polls, comment
//! reads, the scans and the sweep, backfill last — in two ways:
//! - the urgent purposes (writes, hints, polls, comment reads of a change in hand)
//!   wait for a token, and a token goes to the most urgent request waiting (the
//!   limiter counts its waiters by purpose);
//! - the background purposes (scans, the sweep, backfill) never wait: before each
//!   request they ask [`Purpose::may_start`] whether the bucket holds more than their
//!   reserve, and end their pass for this cycle when it does not. So a background pass
//!   can never take the token a write of an analyst's change is waiting for, and never
//!   holds a cycle up. The one floor: the first half of each comment scan's share
//!   waits its turn (ranked after every urgent purpose), since on a busy tenant the
//!   bucket never holds the scan's reserve and comments would go unfound (`sync::scan`).
//!
//! A pass declares its purpose with [`with_purpose`] (a task-local, so the call sites
//! in between need not carry it); the HTTP layer labels each request with it
//! (`rulebridge_api_calls_by_purpose_total`), writes always as `write`.

use std::future::Future;

/// Why a request is sent, in priority order (first = most urgent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// A PUT, PATCH or POST carrying a change (set by the HTTP layer from the method).
    Write,
    /// An immediate reconcile asked for by a push hook: before the polls, because it is
    /// a poll of one incident changed just now (the poll that would find it later then
    /// finds it in sync, at the cost of one ARM read), and hooks come rate-limited, one
    /// at a time. A poll that has waited long outranks it (the limiter's aging), so a
    /// busy SOC's stream of hooks cannot stop the polls.
    Hint,
    /// The incremental polls and the reads of the other side a change needs.
    Poll,
    /// Listing an incident's comments because its digest moved.
    Comments,
    /// Dead letters retried with a new pack.
    Retry,
    /// The list scans that find comment-only changes (digests).
    Scan,
    /// The safety-net sweep of linked incidents.
    Sweep,
    /// History before the first start.
    Backfill,
}

impl Purpose {
    pub const ALL: [Purpose; 8] = [
        Purpose::Write,
        Purpose::Hint,
        Purpose::Poll,
        Purpose::Comments,
        Purpose::Retry,
        Purpose::Scan,
        Purpose::Sweep,
        Purpose::Backfill,
    ];

    /// Its place in [`Purpose::ALL`] (0 = most urgent).
    pub fn rank(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Purpose::Write => "write",
            Purpose::Poll => "poll",
            Purpose::Hint => "hint",
            Purpose::Comments => "comments",
            Purpose::Retry => "retry",
            Purpose::Scan => "scan",
            Purpose::Sweep => "sweep",
            Purpose::Backfill => "backfill",
        }
    }

    /// The share of a bucket a background purpose leaves untouched for the purposes
    /// before it: it starts a request only while more than this share of the burst is
    /// on hand. Urgent purposes have none (they wait instead).
    pub fn reserve(self) -> f64 {
        match self {
            Purpose::Write | Purpose::Poll | Purpose::Hint | Purpose::Comments => 0.0,
            Purpose::Retry => 0.2,
            Purpose::Scan => 0.3,
            Purpose::Sweep => 0.4,
            Purpose::Backfill => 0.5,
        }
    }

    /// Whether a background request may start now, given the tokens on hand and the
    /// bucket's burst. Always true for urgent purposes.
    pub fn may_start(self, tokens: f64, burst: f64) -> bool {
        let reserve = self.reserve();
        reserve == 0.0 || tokens >= 1.0 + reserve * burst
    }
}

tokio::task_local! {
    static PURPOSE: Purpose;
}

/// Runs `work` with every request it sends labelled `purpose`.
pub async fn with_purpose<F: Future>(purpose: Purpose, work: F) -> F::Output {
    PURPOSE.scope(purpose, work).await
}

/// The purpose of the request being sent now: the innermost [`with_purpose`], else
/// `Poll` (a read outside any pass: a command, a test).
pub fn current() -> Purpose {
    PURPOSE.try_with(|p| *p).unwrap_or(Purpose::Poll)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_purposes_keep_a_growing_reserve_in_priority_order() {
        let burst = 10.0;
        // Urgent purposes start with a single token.
        for p in [
            Purpose::Write,
            Purpose::Hint,
            Purpose::Poll,
            Purpose::Comments,
        ] {
            assert!(p.may_start(1.0, burst), "{p:?}");
        }
        // With half the bucket left only the scan and the sweep may start; with 4.5,
        // the scan alone; backfill needs six.
        assert!(Purpose::Scan.may_start(5.0, burst));
        assert!(Purpose::Sweep.may_start(5.0, burst));
        assert!(!Purpose::Backfill.may_start(5.0, burst));
        assert!(Purpose::Scan.may_start(4.5, burst));
        assert!(!Purpose::Sweep.may_start(4.5, burst));
        assert!(Purpose::Backfill.may_start(6.0, burst));
        let reserves: Vec<f64> = Purpose::ALL.iter().map(|p| p.reserve()).collect();
        assert!(reserves.windows(2).all(|w| w[0] <= w[1]), "{reserves:?}");
        // `rank` is the place in `ALL`, which is the declaration order.
        for (i, p) in Purpose::ALL.iter().enumerate() {
            assert_eq!(p.rank(), i, "{p:?}");
        }
    }

    #[tokio::test]
    async fn the_purpose_is_the_innermost_scope() {
        assert_eq!(current(), Purpose::Poll);
        let seen = with_purpose(Purpose::Sweep, async {
            let inner = with_purpose(Purpose::Comments, async { current() }).await;
            (current(), inner)
        })
        .await;
        assert_eq!(seen, (Purpose::Sweep, Purpose::Comments));
    }
}
