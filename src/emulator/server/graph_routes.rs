//! Handlers of the Graph security incidents API (`/v1.0/security/incidents`).

use super::*;

pub(super) async fn graph_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    authorize(&state, &headers)?;
    // Graph's default page size for incidents is unconfirmed; 50 is the most it allows.
    let top = top(&query, GRAPH_MAX_TOP, GRAPH_MAX_TOP)?;
    let base = format!("{}/v1.0/security/incidents", origin(&headers));
    let mut store = state.lock();
    let (items, next) = if let Some(token) = query.get("$skiptoken") {
        store.next_page(token, top)?
    } else {
        let clauses = query
            .get("$filter")
            .map(|f| graph::parse_filter(f))
            .transpose()?
            .unwrap_or_default();
        let expand = match query.get("$expand").map(String::as_str) {
            None => false,
            Some("alerts") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Could not find a property named '{other}' to expand"
                )))
            }
        };
        let mut items: Vec<Value> = store
            .graph
            .values()
            .filter(|i| graph::matches(i, &clauses))
            .map(|i| graph::render(i, expand))
            .collect();
        let order = query
            .get("$orderby")
            .map(String::as_str)
            .unwrap_or("lastUpdateDateTime desc");
        let (field, desc) = match order.split_once(' ') {
            Some((f, dir)) if dir == "asc" || dir == "desc" => (f, dir == "desc"),
            None => (order, false),
            _ => return Err(ApiError::bad_request(format!("Invalid $orderby '{order}'"))),
        };
        if !["lastUpdateDateTime", "createdDateTime", "id"].contains(&field) {
            return Err(ApiError::bad_request(format!(
                "Ordering by '{field}' is not supported"
            )));
        }
        let key = |v: &Value| {
            (
                v[field]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()),
                v["id"].as_str().unwrap_or("").to_string(),
            )
        };
        items.sort_by_key(|a| key(a));
        if desc {
            items.reverse();
        }
        store.page(items, top)
    };
    let mut body = json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#security/incidents", "value": items });
    if let Some(token) = next {
        body["@odata.nextLink"] = json!(format!("{base}?$top={top}&$skiptoken={token}"));
    }
    Ok(Json(body).into_response())
}

pub(super) async fn graph_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    authorize(&state, &headers)?;
    let store = state.lock();
    let incident = store
        .graph
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("Incident {id} was not found")))?;
    Ok(Json(graph::render(
        incident,
        query.get("$expand").is_some_and(|e| e == "alerts"),
    ))
    .into_response())
}

pub(super) async fn graph_patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    authorize(&state, &headers)?;
    let body = json_body(&body)?;
    let changes = graph::check_patch(&body)?;
    let mut store = state.lock();
    let client = store.client_id.clone();
    let updated = store.graph_patch(&id, changes, &client)?;
    Ok(Json(graph::render(&updated, false)).into_response())
}

pub(super) async fn graph_comment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    authorize(&state, &headers)?;
    let body = json_body(&body)?;
    let mut store = state.lock();
    let client = store.client_id.clone();
    Ok(Json(store.graph_comment(&id, &body, &client)?).into_response())
}
