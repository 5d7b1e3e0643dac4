//! The middleware that applies fault rules to requests (see `emulator::faults`).

use super::throttle_layer::too_many_requests;
use super::*;

/// Applies the fault (if any) that the rules pick for this request.
pub(super) async fn inject_faults(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(endpoint) = Endpoint::of(request.method().as_str(), request.uri().path()) else {
        return next.run(request).await;
    };
    let fault = state
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pick(endpoint);
    match fault {
        None => next.run(request).await,
        Some(FaultKind::Throttle { retry_after }) => too_many_requests(retry_after, false),
        Some(FaultKind::ThrottleDate { retry_after }) => too_many_requests(retry_after, true),
        Some(FaultKind::ServerError { status }) => {
            let (code, message) = if status == 503 {
                (
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                )
            } else {
                ("InternalServerError", "An internal server error occurred.")
            };
            ApiError::new(status, code, message).into_response()
        }
        Some(FaultKind::Slow { delay_ms }) => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            next.run(request).await
        }
        Some(FaultKind::Drop) => {
            // Headers promise more body than is sent, then the stream fails: the client
            // sees the connection close mid-response. Nothing was processed.
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"value\": [")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fault: drop",
                )),
            ];
            let mut response = Response::new(Body::from_stream(DropStream(chunks.into_iter())));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().expect("static"));
            response
                .headers_mut()
                .insert("content-length", "4096".parse().expect("static"));
            response
        }
        Some(FaultKind::EtagRace) => {
            // Another writer saves the incident first: its etag moves on.
            let name = request
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            {
                let mut store = state.lock();
                let name = store.sentinel_key(&name);
                let now = store.tick();
                let etag = store.new_etag();
                if let Some(incident) = store.sentinel.get_mut(&name) {
                    incident["etag"] = json!(etag);
                    incident["properties"]["lastModifiedTimeUtc"] = json!(now);
                }
            }
            next.run(request).await
        }
    }
}

/// A body stream that yields its chunks, the last one an error.
struct DropStream(std::vec::IntoIter<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for DropStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}
