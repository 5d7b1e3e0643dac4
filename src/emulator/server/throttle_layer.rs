//! The middleware that applies the token buckets of `emulator::throttle` (observed
//! profile only): every Sentinel response reports the bucket it drew from in
//! `x-ms-ratelimit-remaining-subscription-reads` (GET) or `-writes` (PUT, DELETE); an
//! empty bucket answers 429 `TooManyRequests` with `Retry-After`.

use super::*;
use crate::emulator::throttle::{http_date_after, Api, Verdict};

fn api_of(method: &str, endpoint: Endpoint) -> Option<Api> {
    use Endpoint::*;
    match endpoint {
        Any | Token | Identity => None,
        GraphList | GraphGet | GraphPatch | GraphComment | GraphAlerts => Some(Api::Graph),
        SentinelList | SentinelGet | SentinelPut | SentinelDelete | SentinelComment => {
            Some(if method == "GET" {
                Api::ArmRead
            } else {
                Api::ArmWrite
            })
        }
    }
}

/// A 429 as both services send it, `Retry-After` in seconds or as an HTTP date.
pub(super) fn too_many_requests(retry_after: u64, http_date: bool) -> Response {
    let body = ApiError::new(
        429,
        "TooManyRequests",
        "Rate limit is exceeded. Try again later.",
    )
    .body();
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let value = if http_date {
        http_date_after(retry_after)
    } else {
        retry_after.to_string()
    };
    response
        .headers_mut()
        .insert("retry-after", value.parse().expect("ASCII"));
    response
}

pub(super) async fn throttle(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_string();
    let api = Endpoint::of(&method, request.uri().path()).and_then(|e| api_of(&method, e));
    let Some(api) = api.filter(|_| state.config.profile.is_observed()) else {
        return next.run(request).await;
    };
    let (verdict, http_date) = {
        let mut throttle = state.throttle.lock().unwrap_or_else(|p| p.into_inner());
        (throttle.take(api), throttle.retry_after_http_date)
    };
    let header = api.remaining_header();
    let (mut response, left) = match verdict {
        Verdict::Throttled(wait) => (too_many_requests(wait, http_date), Some(0)),
        Verdict::Allowed(left) => (next.run(request).await, left),
    };
    if let (Some(header), Some(left)) = (header, left) {
        response
            .headers_mut()
            .insert(header, left.to_string().parse().expect("digits"));
    }
    response
}
