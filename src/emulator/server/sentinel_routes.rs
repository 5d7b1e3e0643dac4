//! Handlers of the Sentinel incidents API (ARM paths, `api-version` required).

use super::*;

/// What every Sentinel request passes first: `api-version` (ARM answers a request
/// without one with 400 before anything else), the token, then the workspace.
fn arm_request(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    path: &ArmPath,
) -> Result<(), ApiError> {
    match query.get("api-version") {
        Some(v) if v == SENTINEL_API_VERSION || v == "2023-02-01" => {}
        Some(v) => {
            return Err(ApiError::new(
                400,
                "InvalidApiVersionParameter",
                format!("The api-version '{v}' is invalid."),
            ))
        }
        None => {
            return Err(ApiError::new(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ))
        }
    }
    authorize(state, headers)?;
    check_workspace(state, path)
}

type ArmPath = HashMap<String, String>;

fn arm_base(headers: &HeaderMap, path: &ArmPath) -> String {
    let _ = headers;
    SENTINEL_PREFIX
        .replace("{sub}", path.get("sub").map_or("", String::as_str))
        .replace("{rg}", path.get("rg").map_or("", String::as_str))
        .replace("{ws}", path.get("ws").map_or("", String::as_str))
}

fn check_workspace(state: &AppState, path: &ArmPath) -> Result<(), ApiError> {
    let c = &state.config;
    let ok = path.get("sub") == Some(&c.subscription)
        && path.get("rg") == Some(&c.resource_group)
        && path.get("ws") == Some(&c.workspace);
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            404,
            "ResourceNotFound",
            "The workspace was not found.",
        ))
    }
}

pub(super) async fn sentinel_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(&state, &headers, &query, &path)?;
    let top = top(&query, SENTINEL_MAX_TOP, SENTINEL_MAX_TOP)?;
    let mut store = state.lock();
    let (items, next) = if let Some(token) = query.get("$skipToken") {
        store.next_page(token, top)?
    } else {
        let since = match query.get("$filter") {
            None => None,
            Some(f) => Some(parse_sentinel_filter(f)?),
        };
        let mut items: Vec<Value> = store
            .sentinel
            .values()
            .filter(|i| {
                since
                    .as_ref()
                    .is_none_or(|(op, at)| sentinel_time_matches(i, op, at))
            })
            .cloned()
            .collect();
        let order = query
            .get("$orderby")
            .map(String::as_str)
            .unwrap_or("properties/lastModifiedTimeUtc asc");
        let (field, desc) = match order.split_once(' ') {
            Some((f, dir)) if dir == "asc" || dir == "desc" => (f, dir == "desc"),
            None => (order, false),
            _ => return Err(ApiError::bad_request(format!("Invalid $orderby '{order}'"))),
        };
        let Some(field) = field
            .strip_prefix("properties/")
            .filter(|f| ["lastModifiedTimeUtc", "createdTimeUtc"].contains(f))
        else {
            return Err(ApiError::bad_request(format!(
                "Ordering by '{field}' is not supported"
            )));
        };
        let key = |v: &Value| {
            (
                v["properties"][field]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()),
                v["name"].as_str().unwrap_or("").to_string(),
            )
        };
        items.sort_by_key(|a| key(a));
        if desc {
            items.reverse();
        }
        store.page(items, top)
    };
    let mut body = json!({ "value": items });
    if let Some(token) = next {
        body["nextLink"] = json!(format!(
            "{}{}?api-version={SENTINEL_API_VERSION}&$top={top}&$skipToken={token}",
            origin(&headers),
            arm_base(&headers, &path)
        ));
    }
    Ok(Json(body).into_response())
}

/// `properties/lastModifiedTimeUtc ge|gt <ISO>` — the one filter the sync needs.
fn parse_sentinel_filter(
    filter: &str,
) -> Result<(String, chrono::DateTime<chrono::Utc>), ApiError> {
    let parts: Vec<&str> = filter.split_whitespace().collect();
    match parts.as_slice() {
        ["properties/lastModifiedTimeUtc", op @ ("ge" | "gt" | "le" | "lt"), at] => {
            let at = chrono::DateTime::parse_from_rfc3339(at.trim_matches('\'')).map_err(|_| {
                ApiError::bad_request(format!("Invalid date-time '{at}' in $filter"))
            })?;
            Ok((op.to_string(), at.with_timezone(&chrono::Utc)))
        }
        _ => Err(ApiError::bad_request(format!(
            "Unsupported $filter '{filter}'"
        ))),
    }
}

fn sentinel_time_matches(incident: &Value, op: &str, at: &chrono::DateTime<chrono::Utc>) -> bool {
    let Some(t) = incident["properties"]["lastModifiedTimeUtc"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return false;
    };
    let t = t.with_timezone(&chrono::Utc);
    match op {
        "ge" => t >= *at,
        "gt" => t > *at,
        "le" => t <= *at,
        _ => t < *at,
    }
}

pub(super) async fn sentinel_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(&state, &headers, &query, &path)?;
    let id = path.get("id").cloned().unwrap_or_default();
    let store = state.lock();
    let incident = store
        .sentinel
        .get(&id)
        .ok_or_else(|| ApiError::new(404, "NotFound", format!("Incident '{id}' was not found")))?;
    Ok(Json(incident.clone()).into_response())
}

pub(super) async fn sentinel_put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    arm_request(&state, &headers, &query, &path)?;
    let body = json_body(&body)?;
    let id = path.get("id").cloned().unwrap_or_default();
    let header_etag = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let if_match = body["etag"].as_str().map(str::to_string).or(header_etag);
    let base = arm_base(&headers, &path);
    let (created, resource) = state
        .lock()
        .sentinel_put(&base, &id, &body, if_match.as_deref())?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(resource)).into_response())
}

pub(super) async fn sentinel_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(&state, &headers, &query, &path)?;
    let id = path.get("id").cloned().unwrap_or_default();
    let mut store = state.lock();
    store.sentinel_comments.remove(&id);
    Ok(match store.sentinel.remove(&id) {
        Some(_) => StatusCode::OK.into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

pub(super) async fn sentinel_comments_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(&state, &headers, &query, &path)?;
    let id = path.get("id").cloned().unwrap_or_default();
    let store = state.lock();
    if !store.sentinel.contains_key(&id) {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("Incident '{id}' was not found"),
        ));
    }
    let comments: Vec<Value> = store
        .sentinel_comments
        .get(&id)
        .map(|c| c.values().cloned().collect())
        .unwrap_or_default();
    Ok(Json(json!({ "value": comments })).into_response())
}

pub(super) async fn sentinel_comment_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(&state, &headers, &query, &path)?;
    let (id, comment) = (
        path.get("id").cloned().unwrap_or_default(),
        path.get("comment").cloned().unwrap_or_default(),
    );
    let store = state.lock();
    let found = store
        .sentinel_comments
        .get(&id)
        .and_then(|c| c.get(&comment));
    found
        .map(|c| Json(c.clone()).into_response())
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("Comment '{comment}' was not found"),
            )
        })
}

pub(super) async fn sentinel_comment_put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    arm_request(&state, &headers, &query, &path)?;
    let body = json_body(&body)?;
    let (id, comment) = (
        path.get("id").cloned().unwrap_or_default(),
        path.get("comment").cloned().unwrap_or_default(),
    );
    let base = arm_base(&headers, &path);
    let (created, resource) = state.lock().sentinel_comment(&base, &id, &comment, &body)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(resource)).into_response())
}
