//! The per-API token bucket: a sustained rate and a burst, capped by what the service
//! says is left (`x-ms-ratelimit-remaining-*`), paused by a 429's `Retry-After`, and
//! handing a short bucket's tokens to the most urgent request waiting
//! ([`Purpose`] order, with aging). Keeps a client under the documented limits instead of
//! provoking 429s. No I/O: a clock and a mutex.

use super::budget::{self, Purpose};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A token bucket: `per_second` sustained, `burst` at once. Keeps a client under the
/// documented limits instead of provoking 429s. When the bucket runs short, a token
/// goes to the most urgent request waiting ([`Purpose`] order): a write or a hint never
/// queues behind a poll's reads.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
    /// Requests waiting for a token, by purpose (index: [`Purpose::rank`]).
    waiting: [AtomicUsize; Purpose::ALL.len()],
}

/// One waiting request, counted under its current rank while it waits (also when its
/// future is dropped).
struct Waiting<'a> {
    counts: &'a [AtomicUsize; Purpose::ALL.len()],
    rank: usize,
}

impl<'a> Waiting<'a> {
    fn new(counts: &'a [AtomicUsize; Purpose::ALL.len()], rank: usize) -> Self {
        counts[rank].fetch_add(1, AtomicOrdering::SeqCst);
        Waiting { counts, rank }
    }

    fn promote_to(&mut self, rank: usize) {
        self.counts[rank].fetch_add(1, AtomicOrdering::SeqCst);
        self.counts[self.rank].fetch_sub(1, AtomicOrdering::SeqCst);
        self.rank = rank;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.counts[self.rank].fetch_sub(1, AtomicOrdering::SeqCst);
    }
}

/// How many refills a request waits before it outranks every purpose: priorities
/// order the requests of a short bucket, but a steady stream of more urgent ones (a
/// busy SOC's hints) must not stop the polls and comment reads. At Graph's 2.5/s that
/// is 3.2 s. Chosen by the scale bench at a Graph budget spent to the last call
/// (README, Performance): 4 refills let polls crowd hints out (hook p95 8.7 s), 20 or
/// none starved the polls (field lag p95 330–350 s), 8 gave 3.9–4.9 s and 170–186 s.
const AGE_AFTER_REFILLS: f64 = 8.0;

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
            waiting: Default::default(),
        }
    }

    /// Caps the tokens on hand to what the service says is left, less `reserve`: the
    /// service's count covers every client of the same principal (other replicas, other
    /// tools), ours only this process. Below zero, the next request waits for refills.
    pub async fn observe_remaining(&self, remaining: u64, reserve: u64) {
        let mut state = self.state.lock().await;
        let allowed = remaining as f64 - reserve as f64;
        if state.0 > allowed {
            // Never more than a burst's worth in debt: a wildly low header must slow the
            // client down, not stop it for minutes.
            state.0 = allowed.max(-self.burst);
        }
    }

    /// Tokens on hand now (may be negative: in debt after a throttling signal).
    pub async fn available(&self) -> f64 {
        let mut state = self.state.lock().await;
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        *tokens
    }

    /// The bucket's size.
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Requests per second it refills.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// The service said "not for `delay`" (a 429's `Retry-After`): every request of this
    /// API waits it out, not only the refused one, so concurrent requests do not each
    /// provoke their own 429.
    pub async fn pause_for(&self, delay: Duration) {
        let mut state = self.state.lock().await;
        let debt = -(delay.as_secs_f64() * self.per_second);
        if state.0 > debt {
            state.0 = debt;
        }
    }

    /// Waits for a token, as a request of the current purpose ([`budget::current`]).
    pub async fn acquire(&self) {
        self.acquire_as(budget::current()).await
    }

    /// Waits for a token; while a more urgent request waits too, it goes first. A
    /// request that has waited [`AGE_AFTER_REFILLS`] refills is outranked by none.
    pub async fn acquire_as(&self, purpose: Purpose) {
        let mut waiting = Waiting::new(&self.waiting, purpose.rank());
        let started = Instant::now();
        let age_after = Duration::from_secs_f64(AGE_AFTER_REFILLS / self.per_second);
        loop {
            if waiting.rank > 0 && started.elapsed() >= age_after {
                waiting.promote_to(0);
            }
            let rank = waiting.rank;
            let wait = {
                let mut state = self.state.lock().await;
                let (tokens, last) = &mut *state;
                let now = Instant::now();
                *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second)
                    .min(self.burst);
                *last = now;
                let outranked = self.waiting[..rank]
                    .iter()
                    .any(|w| w.load(AtomicOrdering::SeqCst) > 0);
                if *tokens >= 1.0 && !outranked {
                    *tokens -= 1.0;
                    return;
                }
                if *tokens >= 1.0 {
                    // The token is the more urgent request's, which wakes for it now;
                    // look again after about one refill.
                    Duration::from_secs_f64((1.0 / self.per_second).clamp(0.001, 0.05))
                } else {
                    Duration::from_secs_f64((1.0 - *tokens) / self.per_second)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_low_remaining_count_slows_the_limiter_down() {
        let limiter = RateLimiter::new(20.0, 50);
        // The service says 12 requests are left; with a reserve of 10, two go at once
        // and the third waits for a refill (1/20 s).
        limiter.observe_remaining(12, 10).await;
        let started = Instant::now();
        for _ in 0..4 {
            limiter.acquire().await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_token_on_hand_waits_for_a_more_urgent_request_until_it_has_aged() {
        let limiter = RateLimiter::new(20.0, 5);
        // A write is waiting (registered, not yet woken for its token).
        limiter.waiting[Purpose::Write.rank()].fetch_add(1, AtomicOrdering::SeqCst);
        // A full bucket, and still a poll does not take a token before it.
        let poll = tokio::time::timeout(
            Duration::from_millis(100),
            limiter.acquire_as(Purpose::Poll),
        )
        .await;
        assert!(poll.is_err(), "a poll went before a waiting write");
        // Eight refills (0.4 s) later it has aged: outranked by none, it goes.
        tokio::time::timeout(Duration::from_secs(2), limiter.acquire_as(Purpose::Poll))
            .await
            .expect("an aged poll still waits for the write");
        // Another write is not outranked by it; and with the write served, the poll goes.
        tokio::time::timeout(
            Duration::from_millis(100),
            limiter.acquire_as(Purpose::Write),
        )
        .await
        .expect("a write waited for a write");
        limiter.waiting[Purpose::Write.rank()].fetch_sub(1, AtomicOrdering::SeqCst);
        tokio::time::timeout(
            Duration::from_millis(100),
            limiter.acquire_as(Purpose::Poll),
        )
        .await
        .expect("the poll still waits");
        // The timed-out poll left the waiting count as it found it.
        assert!(limiter
            .waiting
            .iter()
            .all(|w| w.load(AtomicOrdering::SeqCst) == 0));
    }

    #[tokio::test]
    async fn the_limiter_holds_the_sustained_rate_after_a_burst() {
        let limiter = RateLimiter::new(20.0, 5);
        let started = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        for _ in 0..10 {
            limiter.acquire().await;
        }
        // 10 more at 20/s cannot take less than half a second.
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
    }
}
