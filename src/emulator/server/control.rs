//! The control API under `/_emulator/` (no auth, loopback): info, read-outs, faults,
//! analysts, connector-made incidents.

use super::*;
use crate::emulator::throttle::ThrottleConfig;

pub(super) async fn control_info(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Json<EmulatorInfo> {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse().ok());
    let addr = host.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    Json(info(&state, addr))
}

pub(super) async fn control_graph(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "value": state.lock().graph.values().cloned().collect::<Vec<_>>() }))
}

pub(super) async fn control_sentinel(State(state): State<AppState>) -> Json<Value> {
    let store = state.lock();
    let items: Vec<Value> = store
        .sentinel
        .iter()
        .map(|(name, incident)| {
            let mut incident = incident.clone();
            let comments: Vec<Value> = store
                .sentinel_comments
                .get(name)
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default();
            incident["comments"] = json!(comments);
            incident
        })
        .collect();
    Json(json!({ "value": items }))
}

pub(super) async fn control_requests(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "value": state.lock().requests }))
}

pub(super) async fn control_faults(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "value": state.faults.lock().unwrap_or_else(|p| p.into_inner()).rules }))
}

/// Body: one fault rule or an array, e.g. `{"kind": "throttle", "retry_after": 1,
/// "endpoint": "sentinel-put", "count": 2}`.
pub(super) async fn control_add_fault(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let value = json_body(&body)?;
    let rules: Result<Vec<FaultRule>, _> = if value.is_array() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|r| vec![r])
    };
    let rules = rules.map_err(|e| ApiError::bad_request(format!("Invalid fault rule: {e}")))?;
    state
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .rules
        .extend(rules);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn control_clear_faults(State(state): State<AppState>) -> StatusCode {
    state
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .rules
        .clear();
    StatusCode::NO_CONTENT
}

/// `POST /_emulator/analysts/edit[?count=N]` (or body `{"count": N}`, default 1, at most
/// 10,000): applies N analyst edits now and returns them as `{"value": [edit...]}`.
pub(super) async fn control_analyst_edit(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    use crate::emulator::analysts::Analysts;
    use std::sync::atomic::{AtomicU64, Ordering};
    // Each request gets its own analysts from a counter, so repeated calls differ while a
    // test run stays reproducible; nothing per-store needs keeping.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let count = analyst_edit_count(&query, &body)?;
    let share = |key: &str| -> Result<Option<f64>, ApiError> {
        query
            .get(key)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| (0.0..=1.0).contains(x))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("'{key}' must be a share from 0 to 1"))
                    })
            })
            .transpose()
    };
    let mix = crate::emulator::analysts::Mix {
        comments: share("comments")?,
        open: share("open")?,
    };
    let mut analysts = Analysts::with_mix(0xA11A_1757 ^ CALLS.fetch_add(1, Ordering::Relaxed), mix);
    let mut store = state.lock();
    let mut edits = Vec::new();
    for _ in 0..count {
        match analysts.try_edit_once(&mut store) {
            Ok(Some(edit)) => edits.push(edit),
            Ok(None) => break, // no incidents on either side
            Err(e) => {
                let message = format!("{}: {}", e.code, e.message);
                return Err(ApiError::new(500, "AnalystEditRefused", message));
            }
        }
    }
    Ok(Json(json!({ "value": edits })).into_response())
}

/// `count` from the query, else from a JSON body, else 1.
/// `{"scale": K}`: the services' documented rate limits, refilled `K` times faster, from
/// now on (buckets full); `{"scale": null}`: unlimited. Lets a benchmark sync a large
/// seed unthrottled, then measure under the limits.
pub(super) async fn control_throttle(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))?;
    let config = match &v["scale"] {
        Value::Null => ThrottleConfig::unlimited(),
        k => {
            let k = k
                .as_f64()
                .filter(|k| k.is_finite() && *k > 0.0)
                .ok_or_else(|| ApiError::bad_request("'scale' must be a number > 0 or null"))?;
            ThrottleConfig::default().scaled(k)
        }
    };
    *state.throttle.lock().unwrap_or_else(|p| p.into_inner()) = Throttle::new(&config);
    Ok(Json(json!({ "throttle": config })).into_response())
}

fn analyst_edit_count(query: &HashMap<String, String>, body: &[u8]) -> Result<u64, ApiError> {
    let count = if let Some(c) = query.get("count") {
        c.parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("Invalid count '{c}'")))?
    } else if body.iter().all(u8::is_ascii_whitespace) {
        1
    } else {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))?;
        match v.get("count") {
            None | Some(Value::Null) => 1,
            Some(c) => c
                .as_u64()
                .ok_or_else(|| ApiError::bad_request("'count' must be a non-negative integer"))?,
        }
    };
    if count > 10_000 {
        return Err(ApiError::bad_request("count must be at most 10000"));
    }
    Ok(count)
}

/// `POST /_emulator/connector/incidents` with `{"defenderId": "X"}`: the Sentinel
/// incident Microsoft's Defender XDR connector makes for Graph incident X (the existing
/// one if it made it already), as `{"name": ..., "incident": resource}`.
pub(super) async fn control_connector_incident(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult {
    let value = json_body(&body)?;
    let Some(id) = value["defenderId"].as_str() else {
        return Err(ApiError::bad_request("'defenderId' (a string) is required"));
    };
    let mut store = state.lock();
    let name = store
        .add_connector_incident(id)
        .map_err(ApiError::not_found)?;
    let incident = store.sentinel[&name].clone();
    Ok(Json(json!({ "name": name, "incident": incident })).into_response())
}

/// `POST /_emulator/graph/alerts`: an alert changes as it does in a tenant (see
/// [`crate::emulator::alerts`] for which stamps move):
/// `{"op": "add", "incident": id, "title": t}`, `{"op": "move", "alert": id, "to": id}`,
/// `{"op": "update", "alert": id, "set": {...}}`. Answers the alert as it is now.
pub(super) async fn control_graph_alert(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let body = json_body(&body)?;
    let text = |key: &str| {
        body[key]
            .as_str()
            .ok_or_else(|| ApiError::bad_request(format!("'{key}' (a string) is required")))
    };
    let mut store = state.lock();
    let alert = match text("op")? {
        "add" => store.graph_add_alert(
            text("incident")?,
            body["title"].as_str().unwrap_or("New alert"),
        )?,
        "move" => store.graph_move_alert(text("alert")?, text("to")?)?,
        "update" => {
            let set = body["set"]
                .as_object()
                .ok_or_else(|| ApiError::bad_request("'set' (an object) is required"))?;
            store.graph_update_alert(text("alert")?, set)?
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown op '{other}' (add, move or update)"
            )))
        }
    };
    Ok(Json(alert).into_response())
}
