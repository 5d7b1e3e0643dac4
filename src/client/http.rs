//! The request loop both API clients share: bearer token, per-API rate limit (adapted to
//! the `x-ms-ratelimit-remaining-*` headers the services send), timeout, retries that
//! honour `Retry-After` in both its forms (else exponential backoff with jitter,
//! bounded), the service's clock (from `Date`), and errors that carry the service's code
//! and message but never a token or secret. Every wait ends at once when the API is
//! cancelled (shutdown): a retry sleep must never hold a stopping process for minutes.

use super::budget::{self, Purpose};
use super::identity::TokenSource;
use super::limiter::RateLimiter;
use crate::metrics::{self, Metrics};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// A 4xx the request cannot recover from (other than 404, 409, 429).
    #[error("{operation}: HTTP {status} {code}: {message}")]
    Permanent {
        operation: String,
        status: u16,
        code: String,
        message: String,
    },
    /// 409: the resource changed since it was read (Sentinel etag) — re-read, re-plan.
    #[error("{operation}: conflict: {message}")]
    Conflict { operation: String, message: String },
    #[error("{operation}: not found")]
    NotFound { operation: String },
    /// Retries used up on 429 / 5xx / transport failures.
    #[error("{operation}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        operation: String,
        attempts: u32,
        last: String,
        /// The HTTP status of the last attempt, when it got one.
        last_status: Option<u16>,
    },
    /// The process is stopping: a wait (throttling, a retry delay) was cut short and
    /// the request was not (re)sent.
    #[error("{operation}: cancelled (shutting down)")]
    Cancelled { operation: String },
    /// A non-idempotent request failed in a way that leaves unknown whether the
    /// service applied it; the caller must check before repeating it.
    #[error("{operation}: outcome unknown: {last}")]
    Ambiguous { operation: String, last: String },
    /// The token endpoint refused the credentials.
    #[error("token request failed: {error}: {description}")]
    Auth { error: String, description: String },
}

/// How hard to try. Defaults suit the real services; tests shorten the delays.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Per attempt, connection to last byte.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }
}

/// One API (Graph or Sentinel): its HTTP client, token source, limiter and policy.
pub struct Api {
    pub http: reqwest::Client,
    pub tokens: Arc<TokenSource>,
    pub limiter: RateLimiter,
    pub retry: RetryPolicy,
    jitter: std::sync::Mutex<u64>,
    /// Headers sent with every request of this API (Graph's `Prefer`).
    headers: reqwest::header::HeaderMap,
    /// The service's clock minus ours, from the last response's `Date` header.
    clock_offset: std::sync::Mutex<Option<chrono::TimeDelta>>,
    /// Set once by [`Api::cancel`]; every wait selects on it.
    cancelled: tokio::sync::watch::Sender<bool>,
    /// The last `x-ms-ratelimit-remaining-*` value seen (for status and metrics).
    remaining: std::sync::atomic::AtomicI64,
    /// Where this API's requests are counted, once set: here, where each request goes
    /// on the wire, so no call site can forget one (retries and pages included).
    meter: std::sync::OnceLock<Meter>,
}

struct Meter {
    metrics: Arc<Metrics>,
    side: &'static str,
}

/// Requests the service still allows in its current window below which the client
/// slows down: ARM's buckets refill within seconds, so a small reserve is enough to
/// leave room for other clients of the same principal without provoking a 429.
const REMAINING_RESERVE: u64 = 10;

/// Whether repeating a request is safe when its outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    Yes,
    /// POST of a comment: repeated only when the service said it did not process it.
    No,
}

impl Api {
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<TokenSource>,
        limiter: RateLimiter,
        retry: RetryPolicy,
    ) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Api {
            http,
            tokens,
            limiter,
            retry,
            jitter: std::sync::Mutex::new(seed),
            headers: reqwest::header::HeaderMap::new(),
            clock_offset: std::sync::Mutex::new(None),
            cancelled: tokio::sync::watch::channel(false).0,
            remaining: std::sync::atomic::AtomicI64::new(-1),
            meter: std::sync::OnceLock::new(),
        }
    }

    /// Counts every request of this API in `metrics` under `side` (`rulebridge_api_calls_total`)
    /// and its rate-limit headers (`rulebridge_ratelimit_remaining`). The first call wins:
    /// an API is one side's, for good.
    pub fn count_into(&self, metrics: Arc<Metrics>, side: &'static str) {
        let _ = self.meter.set(Meter { metrics, side });
    }

    /// What a request is for: a write by its method, a read by its pass.
    fn purpose_of(method: &Method) -> Purpose {
        if method == Method::GET {
            budget::current()
        } else {
            Purpose::Write
        }
    }

    /// One request that went out: its method and the status it got (`none` when no
    /// response came back).
    fn count(&self, method: &Method, status: Option<StatusCode>) {
        if let Some(meter) = self.meter.get() {
            let purpose = Self::purpose_of(method);
            meter.metrics.inc(
                metrics::API_CALLS_BY_PURPOSE,
                &[("side", meter.side), ("purpose", purpose.name())],
            );
            let status = status.map_or_else(|| "none".to_string(), |s| s.as_u16().to_string());
            meter.metrics.inc(
                metrics::API_CALLS,
                &[
                    ("side", meter.side),
                    ("method", method.as_str()),
                    ("status", &status),
                ],
            );
        }
    }

    /// Sends `name: value` with every request.
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers
            .insert(name, reqwest::header::HeaderValue::from_static(value));
        self
    }

    /// Ends every current and future wait of this API: requests not yet sent fail with
    /// [`ClientError::Cancelled`], and so does a read (GET) on the wire. A write already
    /// on the wire is not interrupted.
    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Sleeps `delay`, or less if the API is cancelled meanwhile (then `Err`).
    async fn wait(&self, operation: &str, delay: Duration) -> Result<(), ClientError> {
        let mut cancelled = self.cancelled.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = cancelled.wait_for(|c| *c) => Err(ClientError::Cancelled { operation: operation.into() }),
        }
    }

    /// A bearer token, unless the API is cancelled first: the token source retries a
    /// throttled endpoint, and a stopping process must not wait for it.
    async fn token(&self, operation: &str) -> Result<String, ClientError> {
        let mut cancelled = self.cancelled.subscribe();
        if *cancelled.borrow() {
            return Err(ClientError::Cancelled {
                operation: operation.into(),
            });
        }
        tokio::select! {
            token = self.tokens.token() => token,
            _ = cancelled.wait_for(|c| *c) => Err(ClientError::Cancelled { operation: operation.into() }),
        }
    }

    /// The limiter's token, unless the API is cancelled first.
    async fn acquire(&self, operation: &str, purpose: Purpose) -> Result<(), ClientError> {
        let mut cancelled = self.cancelled.subscribe();
        if *cancelled.borrow() {
            return Err(ClientError::Cancelled {
                operation: operation.into(),
            });
        }
        let started = Instant::now();
        tokio::select! {
            _ = self.limiter.acquire_as(purpose) => {}
            _ = cancelled.wait_for(|c| *c) => return Err(ClientError::Cancelled { operation: operation.into() }),
        }
        // A wait of a millisecond or more was the budget holding the request back.
        let waited = started.elapsed();
        if waited >= Duration::from_millis(1) {
            self.count_wait("budget", waited);
        }
        Ok(())
    }

    /// A wait the budget or the service imposed (`cause` = budget|retry_after).
    fn count_wait(&self, cause: &'static str, waited: Duration) {
        if let Some(meter) = self.meter.get() {
            let labels = [("side", meter.side), ("cause", cause)];
            meter.metrics.inc(metrics::THROTTLED_WAITS, &labels);
            meter.metrics.add(
                metrics::THROTTLED_WAIT_SECONDS,
                &labels,
                waited.as_secs_f64(),
            );
        }
    }

    /// Whether a background pass may send a request of `purpose` now (see
    /// [`budget`]): never when the budget is below that purpose's reserve. Records the
    /// tokens on hand (`rulebridge_budget_tokens`) and a refusal
    /// (`rulebridge_budget_deferred_total`).
    pub async fn may_start(&self, purpose: Purpose) -> bool {
        let tokens = self.limiter.available().await;
        let allowed = purpose.may_start(tokens, self.limiter.burst());
        if let Some(meter) = self.meter.get() {
            meter
                .metrics
                .set_gauge(metrics::BUDGET_TOKENS, &[("side", meter.side)], tokens);
            if !allowed {
                meter.metrics.inc(
                    metrics::BUDGET_DEFERRED,
                    &[("side", meter.side), ("purpose", purpose.name())],
                );
            }
        }
        allowed
    }

    /// The service's current time as its last response's `Date` header implied it, or
    /// `None` before any response. `Date` has whole seconds and is stamped before the
    /// response reached us, so this errs early, never late: a window that ends here
    /// never reaches past what the service had already stamped.
    pub fn service_now(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let offset = *self.clock_offset.lock().unwrap_or_else(|p| p.into_inner());
        offset.map(|o| chrono::Utc::now() + o)
    }

    /// The last `x-ms-ratelimit-remaining-*` the service sent, if any.
    pub fn remaining_requests(&self) -> Option<u64> {
        u64::try_from(self.remaining.load(std::sync::atomic::Ordering::Relaxed)).ok()
    }

    /// Learns from a response's headers: the service's clock and its rate-limit count.
    async fn observe(&self, headers: &reqwest::header::HeaderMap) {
        if let Some(date) = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
        {
            *self.clock_offset.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(date - chrono::Utc::now());
        }
        // ARM sends one per kind of request (reads, writes, deletes, resource-requests):
        // the smallest is the one about to bite.
        let remaining = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-ms-ratelimit-remaining-"))
            .filter_map(|(_, v)| v.to_str().ok()?.trim().parse::<u64>().ok())
            .min();
        if let Some(remaining) = remaining {
            self.remaining.store(
                i64::try_from(remaining).unwrap_or(i64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
            if let Some(meter) = self.meter.get() {
                meter.metrics.set_gauge(
                    metrics::RATELIMIT_REMAINING,
                    &[("side", meter.side)],
                    remaining as f64,
                );
            }
            self.limiter
                .observe_remaining(remaining, REMAINING_RESERVE)
                .await;
        }
    }

    /// Sends a request until it succeeds or fails for good; returns status and JSON
    /// body (`Null` for an empty body).
    pub async fn send(
        &self,
        operation: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<(StatusCode, Value), ClientError> {
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            self.acquire(operation, Self::purpose_of(&method)).await?;
            let token = self.token(operation).await?;
            let mut request = self
                .http
                .request(method.clone(), url)
                .headers(self.headers.clone())
                .bearer_auth(&token)
                .timeout(self.retry.timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            // (why it failed, may it be repeated, server-requested delay, status)
            let sent = if method == Method::GET {
                // A read on the wire is dropped on a stop (nothing depends on its
                // answer), so a hung listing cannot hold SIGTERM up; a write is let
                // finish, since its outcome would otherwise be unknown.
                let mut cancelled = self.cancelled.subscribe();
                tokio::select! {
                    sent = request.send() => sent,
                    _ = cancelled.wait_for(|c| *c) => {
                        self.count(&method, None);
                        return Err(ClientError::Cancelled { operation: operation.into() });
                    }
                }
            } else {
                request.send().await
            };
            // A connection refused never reached the service; anything else did.
            match &sent {
                Ok(response) => self.count(&method, Some(response.status())),
                Err(e) if !e.is_connect() => self.count(&method, None),
                Err(_) => {}
            }
            let failure: (String, bool, Option<Duration>, Option<u16>) = match sent {
                Err(e) => (
                    transport(&e),
                    idempotent == Idempotent::Yes || e.is_connect(),
                    None,
                    None,
                ),
                Ok(response) => {
                    let status = response.status();
                    self.observe(response.headers()).await;
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    match response.bytes().await {
                        Err(e) => (transport(&e), idempotent == Idempotent::Yes, None, None),
                        Ok(bytes) => {
                            let json: Value = if bytes.is_empty() {
                                Value::Null
                            } else {
                                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                            };
                            let (code, message) = error_parts(&json);
                            match status.as_u16() {
                                200..=299 => return Ok((status, json)),
                                401 if !refreshed => {
                                    // A token revoked or expired early: fetch a new one once.
                                    refreshed = true;
                                    self.tokens.invalidate().await;
                                    attempt -= 1;
                                    continue;
                                }
                                404 => {
                                    return Err(ClientError::NotFound {
                                        operation: operation.into(),
                                    })
                                }
                                409 => {
                                    return Err(ClientError::Conflict {
                                        operation: operation.into(),
                                        message,
                                    })
                                }
                                429 | 503 => (
                                    format!("HTTP {} {code}", status.as_u16()),
                                    true,
                                    retry_after,
                                    Some(status.as_u16()),
                                ),
                                500..=599 => (
                                    format!("HTTP {} {code}", status.as_u16()),
                                    idempotent == Idempotent::Yes,
                                    retry_after,
                                    Some(status.as_u16()),
                                ),
                                s => {
                                    return Err(ClientError::Permanent {
                                        operation: operation.into(),
                                        status: s,
                                        code,
                                        message,
                                    });
                                }
                            }
                        }
                    }
                }
            };
            let (last, repeatable, server_delay, last_status) = failure;
            if !repeatable {
                return Err(ClientError::Ambiguous {
                    operation: operation.into(),
                    last,
                });
            }
            if attempt >= self.retry.max_attempts {
                return Err(ClientError::Exhausted {
                    operation: operation.into(),
                    attempts: attempt,
                    last,
                    last_status,
                });
            }
            let delay = server_delay
                .unwrap_or_else(|| self.backoff(attempt))
                .min(self.retry.max_delay);
            tracing::debug!(operation, attempt, ?delay, "retrying after {last}");
            if server_delay.is_some() {
                // Honoured by every request of this API, never retried at once.
                self.limiter.pause_for(delay).await;
                self.count_wait("retry_after", delay);
            }
            self.wait(operation, delay).await?;
        }
    }

    /// GETs one resource; a 404 is `None`.
    pub async fn get_optional(
        &self,
        operation: &str,
        url: &str,
    ) -> Result<Option<Value>, ClientError> {
        match self
            .send(operation, Method::GET, url, None, Idempotent::Yes)
            .await
        {
            Ok((_, body)) => Ok(Some(body)),
            Err(ClientError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A paged listing read one page at a time, so a caller can process and commit each
    /// page before asking for the next (memory stays one page, whatever the total).
    pub fn pages<'a>(&'a self, operation: &'a str, url: String, next_field: &'a str) -> Pages<'a> {
        Pages {
            api: self,
            operation,
            next: Some(url),
            next_field,
        }
    }

    /// GETs `url` and every page after it (the link in `next_field` of each page, passed
    /// on opaque), returning the `value` items of all pages in order.
    pub async fn list_all(
        &self,
        operation: &str,
        url: String,
        next_field: &str,
    ) -> Result<Vec<Value>, ClientError> {
        let mut url = url;
        let mut items = Vec::new();
        loop {
            let (_, body) = self
                .send(operation, Method::GET, &url, None, Idempotent::Yes)
                .await?;
            items.extend(body["value"].as_array().cloned().unwrap_or_default());
            match body[next_field].as_str() {
                Some(next) => url = next.to_string(),
                None => return Ok(items),
            }
        }
    }

    /// Exponential backoff with full jitter: uniform in [base·2^(n-1) / 2, base·2^(n-1)].
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry
            .base_delay
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.retry.max_delay);
        let mut state = self.jitter.lock().unwrap_or_else(|p| p.into_inner());
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let unit = (*state >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(0.5 + unit / 2.0)
    }
}

/// One page of a listing: its items, the link to the next page (passed on opaque) and
/// the total the service counted, when asked (`$count=true`).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<Value>,
    pub next: Option<String>,
    pub count: Option<u64>,
}

impl Api {
    /// GETs one page of a listing at `url`.
    pub async fn page(
        &self,
        operation: &str,
        url: &str,
        next_field: &str,
    ) -> Result<Page, ClientError> {
        let (_, mut body) = self
            .send(operation, Method::GET, url, None, Idempotent::Yes)
            .await?;
        let items = match body.get_mut("value").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Ok(Page {
            items,
            next: body[next_field].as_str().map(str::to_string),
            count: body["@odata.count"].as_u64(),
        })
    }
}

/// `from <= field < until` as a URL-encoded OData `$filter` value (either bound may be
/// absent; `None` when both are). `+` in an offset would read as a space: encoded.
pub fn time_window_filter(field: &str, from: Option<&str>, until: Option<&str>) -> Option<String> {
    let literal = |stamp: &str| stamp.replace('+', "%2B");
    let clauses: Vec<String> = [
        from.map(|f| format!("{field}%20ge%20{}", literal(f))),
        until.map(|u| format!("{field}%20lt%20{}", literal(u))),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!clauses.is_empty()).then(|| clauses.join("%20and%20"))
}

/// `base` with `segments` appended as path segments, each percent-encoded: an incident
/// id holding `/`, `?`, `#` or `..` stays one segment of the resource it names and
/// cannot reach another. A `base` that is not a URL is returned as it is, and the
/// request then fails to build with reqwest's own error.
pub fn with_segments(base: &str, segments: &[&str]) -> String {
    let Ok(mut url) = reqwest::Url::parse(base) else {
        return base.to_string();
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url.to_string()
}

/// `Retry-After`: delay-seconds, or an HTTP-date (RFC 9110 10.2.3), as a delay from now
/// (a date in the past is no delay).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    Some((at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// An HTTP-date in its preferred IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`);
/// the obsolete forms are not sent by Microsoft's front ends and are not accepted.
pub fn parse_http_date(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::NaiveDateTime::parse_from_str(value.trim(), "%a, %d %b %Y %H:%M:%S GMT")
        .ok()
        .map(|t| t.and_utc())
}

/// Describes a transport failure without the URL's query or any header (no secrets).
fn transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "connection closed while reading the response"
    } else {
        "request failed"
    };
    kind.to_string()
}

/// `{"error": {"code", "message"}}` (Graph OData error and ARM CloudError).
pub fn error_parts(body: &Value) -> (String, String) {
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or("").to_string();
    let message = error["message"].as_str().unwrap_or("").to_string();
    (code, message)
}

/// The pages of one listing; see [`Api::pages`].
pub struct Pages<'a> {
    api: &'a Api,
    operation: &'a str,
    next: Option<String>,
    next_field: &'a str,
}

impl Pages<'_> {
    /// The next page's items, or `None` after the last page. A failed page can be asked
    /// for again: the link is only consumed when its page arrived.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>, ClientError> {
        let Some(url) = self.next.clone() else {
            return Ok(None);
        };
        let (_, body) = self
            .api
            .send(self.operation, Method::GET, &url, None, Idempotent::Yes)
            .await?;
        self.next = body[self.next_field].as_str().map(str::to_string);
        Ok(Some(body["value"].as_array().cloned().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_stays_one_path_segment() {
        let url = with_segments(
            "https://graph.microsoft.com/v1.0",
            &["security", "incidents", "1/../../users?$top=1#x"],
        );
        assert_eq!(
            url,
            "https://graph.microsoft.com/v1.0/security/incidents/1%2F..%2F..%2Fusers%3F$top=1%23x"
        );
        // A trailing slash on the base is not an empty segment.
        assert_eq!(
            with_segments("http://127.0.0.1:8943/v1.0/", &["a b"]),
            "http://127.0.0.1:8943/v1.0/a%20b"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let in_a_minute = (chrono::Utc::now() + chrono::TimeDelta::seconds(61))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let delay = parse_retry_after(&in_a_minute).expect("an IMF-fixdate parses");
        assert!(
            (Duration::from_secs(58)..=Duration::from_secs(61)).contains(&delay),
            "{delay:?}"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past is no delay"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").map(|t| t.timestamp()),
            Some(784_111_777)
        );
    }
}
