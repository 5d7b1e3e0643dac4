//! The request loop both API clients share: bearer token, per-API rate limit, timeout,
//! retries that honour `Retry-After` (else exponential backoff with jitter, bounded),
//! and errors that carry the service's code and message but never a token or secret.

use super::auth::TokenSource;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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
    },
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

/// A token bucket: `per_second` sustained, `burst` at once. Keeps a client under the
/// documented limits instead of provoking 429s.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                let (tokens, last) = &mut *state;
                let now = Instant::now();
                *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second)
                    .min(self.burst);
                *last = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - *tokens) / self.per_second)
            };
            tokio::time::sleep(wait).await;
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
}

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
            self.limiter.acquire().await;
            let token = self.tokens.token().await?;
            let mut request = self
                .http
                .request(method.clone(), url)
                .bearer_auth(&token)
                .timeout(self.retry.timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            // (why it failed, may it be repeated, server-requested delay)
            let failure: (String, bool, Option<Duration>) = match request.send().await {
                Err(e) => (
                    transport(&e),
                    idempotent == Idempotent::Yes || e.is_connect(),
                    None,
                ),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match response.bytes().await {
                        Err(e) => (transport(&e), idempotent == Idempotent::Yes, None),
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
                                ),
                                500..=599 => (
                                    format!("HTTP {} {code}", status.as_u16()),
                                    idempotent == Idempotent::Yes,
                                    retry_after,
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
            let (last, repeatable, server_delay) = failure;
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
                });
            }
            let delay = server_delay
                .unwrap_or_else(|| self.backoff(attempt))
                .min(self.retry.max_delay);
            tracing::debug!(operation, attempt, ?delay, "retrying after {last}");
            tokio::time::sleep(delay).await;
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
