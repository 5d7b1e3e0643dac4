//! Rate limiting as Azure Resource Manager and Microsoft Graph do it: a token bucket per
//! API (ARM reads, ARM writes, Graph). Each request takes one token; an empty bucket is a
//! 429 with `Retry-After`. ARM tells every caller what is left in
//! `x-ms-ratelimit-remaining-subscription-reads` / `-writes`, so a client can slow down
//! before it is refused.
//!
//! Defaults follow the documented figures: ARM's current model (reads 250 burst, 25 per
//! second; writes 200 burst, 10 per second, per subscription and principal) and Graph's
//! nearest documented limit for the security API (150 requests per minute per app and
//! tenant: a burst of 150 refilled at 2.5 per second). Applied in the observed profile
//! only.

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// A bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub burst: f64,
    pub per_second: f64,
}

/// The three buckets; `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ThrottleConfig {
    pub arm_reads: Option<Bucket>,
    pub arm_writes: Option<Bucket>,
    pub graph: Option<Bucket>,
    /// Send `Retry-After` as an HTTP date (RFC 7231 IMF-fixdate) rather than seconds;
    /// both forms are allowed by HTTP and ARM documents that either may come.
    pub retry_after_http_date: bool,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            arm_reads: Some(Bucket {
                burst: 250.0,
                per_second: 25.0,
            }),
            arm_writes: Some(Bucket {
                burst: 200.0,
                per_second: 10.0,
            }),
            graph: Some(Bucket {
                burst: 150.0,
                per_second: 2.5,
            }),
            retry_after_http_date: false,
        }
    }
}

impl ThrottleConfig {
    /// Every bucket refilled `k` times faster (a compressed clock); bursts unchanged.
    pub fn scaled(mut self, k: f64) -> Self {
        for bucket in [&mut self.arm_reads, &mut self.arm_writes, &mut self.graph]
            .into_iter()
            .flatten()
        {
            bucket.per_second *= k;
        }
        self
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        ThrottleConfig {
            arm_reads: None,
            arm_writes: None,
            graph: None,
            retry_after_http_date: false,
        }
    }
}

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ArmRead,
    ArmWrite,
    Graph,
}

impl Api {
    /// The ARM header that reports this bucket's remaining tokens (none for Graph).
    pub fn remaining_header(self) -> Option<&'static str> {
        match self {
            Api::ArmRead => Some("x-ms-ratelimit-remaining-subscription-reads"),
            Api::ArmWrite => Some("x-ms-ratelimit-remaining-subscription-writes"),
            Api::Graph => None,
        }
    }
}

#[derive(Debug)]
struct State {
    config: Bucket,
    tokens: f64,
    last: Instant,
}

impl State {
    fn new(config: Bucket) -> State {
        State {
            config,
            tokens: config.burst,
            last: Instant::now(),
        }
    }

    /// Takes a token: `Ok(whole tokens left)` or `Err(seconds until one is back)`.
    fn take(&mut self, now: Instant) -> Result<u64, u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.config.per_second).min(self.config.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.tokens.floor() as u64)
        } else if self.config.per_second <= 0.0 {
            Err(60)
        } else {
            // Whole seconds, at least one: a Retry-After of 0 invites a busy loop.
            Err((((1.0 - self.tokens) / self.config.per_second).ceil() as u64).max(1))
        }
    }
}

/// The buckets of one emulator.
#[derive(Debug)]
pub struct Throttle {
    arm_reads: Option<State>,
    arm_writes: Option<State>,
    graph: Option<State>,
    pub retry_after_http_date: bool,
}

/// What a request gets: go ahead (with what is left, for the header) or wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `Some(n)` whole tokens remain (`None` when the API is unlimited).
    Allowed(Option<u64>),
    /// Refused; retry after this many seconds.
    Throttled(u64),
}

impl Throttle {
    pub fn new(config: &ThrottleConfig) -> Throttle {
        Throttle {
            arm_reads: config.arm_reads.map(State::new),
            arm_writes: config.arm_writes.map(State::new),
            graph: config.graph.map(State::new),
            retry_after_http_date: config.retry_after_http_date,
        }
    }

    pub fn take(&mut self, api: Api) -> Verdict {
        let bucket = match api {
            Api::ArmRead => &mut self.arm_reads,
            Api::ArmWrite => &mut self.arm_writes,
            Api::Graph => &mut self.graph,
        };
        match bucket {
            None => Verdict::Allowed(None),
            Some(state) => match state.take(Instant::now()) {
                Ok(left) => Verdict::Allowed(Some(left)),
                Err(wait) => Verdict::Throttled(wait),
            },
        }
    }
}

/// `Retry-After` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) at least `seconds`
/// from now: the date has whole seconds, so it is rounded up.
pub fn http_date_after(seconds: u64) -> String {
    let now = chrono::Utc::now().timestamp();
    let at = chrono::DateTime::from_timestamp(now + seconds as i64 + 1, 0)
        .unwrap_or_else(chrono::Utc::now);
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_counts_down_refuses_when_empty_and_refills() {
        let mut state = State::new(Bucket {
            burst: 3.0,
            per_second: 2.0,
        });
        let t0 = state.last;
        assert_eq!(state.take(t0), Ok(2));
        assert_eq!(state.take(t0), Ok(1));
        assert_eq!(state.take(t0), Ok(0));
        assert_eq!(state.take(t0), Err(1));
        assert_eq!(state.take(t0 + Duration::from_millis(600)), Ok(0));
        // Never above the burst, however long the pause.
        assert_eq!(state.take(t0 + Duration::from_secs(100)), Ok(2));
    }

    #[test]
    fn http_dates_are_imf_fixdate() {
        let date = http_date_after(5);
        let parsed = chrono::NaiveDateTime::parse_from_str(&date, "%a, %d %b %Y %H:%M:%S GMT")
            .unwrap()
            .and_utc();
        let ahead = parsed - chrono::Utc::now();
        assert!(ahead.num_milliseconds() >= 4_900, "{date}");
        assert!(ahead.num_seconds() <= 6, "{date}");
    }
}
