//! Handlers of the Sentinel incidents API (ARM paths, `api-version` required).
//!
//! Observed profile: lists of 50 without `$top`, newest first unless `$orderby` says
//! otherwise, and `nextLink`s whose opaque `$skipToken` holds an offset into the live
//! set and the original query; comments paged the same way. Strict profile: lists of
//! up to 1,000 ordered by modification time, walks served from a snapshot, comments on
//! one page. Names are looked up as the store keys them (observed: any casing).

use super::*;
use crate::emulator::paging::{page_at, SkipToken};
use crate::emulator::sentinel::DEFAULT_TOP as SENTINEL_DEFAULT_TOP;
use crate::emulator::sentinel_query::{self, Order, NEWEST_FIRST};

/// What every Sentinel request passes first: `api-version` (ARM answers a request
/// without one with 400 before anything else), the token, the workspace (404s), then
/// the caller's permission for `action` on the requested resource (403).
fn arm_request(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    path: &ArmPath,
    action: &str,
) -> Result<(), ApiError> {
    check_api_version(query, &[SENTINEL_API_VERSION, "2023-02-01"])?;
    let token = authorize(state, headers, Audience::Arm)?;
    check_workspace(state, path)?;
    // The scope ARM names is the resource addressed (the collection for a list).
    let mut scope = arm_base(headers, path);
    if let Some(id) = path.get("id") {
        scope.push('/');
        scope.push_str(id);
        if action.contains("/comments/") {
            scope.push_str("/comments");
        }
    }
    if let Some(comment) = path.get("comment") {
        scope.push('/');
        scope.push_str(comment);
    }
    check_action(state, &token, action, &scope)
}

/// ARM's `api-version` check, before anything else.
pub(super) fn check_api_version(
    query: &HashMap<String, String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match query.get("api-version") {
        Some(v) if known.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(ApiError::new(
            400,
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid."),
        )),
        None => Err(ApiError::new(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
    }
}

/// RBAC: the principal's actions (the same for every principal of the emulator) must
/// allow `action`, else ARM's `AuthorizationFailed`.
pub(super) fn check_action(
    state: &AppState,
    token: &crate::emulator::store::IssuedToken,
    action: &str,
    scope: &str,
) -> Result<(), ApiError> {
    let c = &state.config;
    if crate::emulator::identity::rbac::allowed(&c.arm_actions, &c.arm_not_actions, action) {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            token.principal.client_id, token.principal.object_id
        ),
    ))
}

pub(super) type ArmPath = HashMap<String, String>;

fn arm_base(headers: &HeaderMap, path: &ArmPath) -> String {
    let _ = headers;
    SENTINEL_PREFIX
        .replace("{sub}", path.get("sub").map_or("", String::as_str))
        .replace("{rg}", path.get("rg").map_or("", String::as_str))
        .replace("{ws}", path.get("ws").map_or("", String::as_str))
}

/// The subscription, resource group and workspace must be the emulator's, each miss
/// the 404 ARM answers for it. ARM names are case-insensitive.
pub(super) fn check_workspace(state: &AppState, path: &ArmPath) -> Result<(), ApiError> {
    let c = &state.config;
    let part = |k: &str| path.get(k).map_or("", String::as_str);
    let (sub, rg, ws) = (part("sub"), part("rg"), part("ws"));
    if !sub.eq_ignore_ascii_case(&c.subscription) {
        return Err(ApiError::new(
            404,
            "SubscriptionNotFound",
            format!("The subscription '{sub}' could not be found."),
        ));
    }
    if !rg.eq_ignore_ascii_case(&c.resource_group) {
        return Err(ApiError::new(
            404,
            "ResourceGroupNotFound",
            format!("Resource group '{rg}' could not be found."),
        ));
    }
    if !ws.eq_ignore_ascii_case(&c.workspace) {
        return Err(ApiError::new(
            404,
            "ResourceNotFound",
            format!("The Resource 'Microsoft.OperationalInsights/workspaces/{ws}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"),
        ));
    }
    Ok(())
}

/// The live list: the query re-run against the store, one page of it at `offset`.
fn list_page(
    store: &Store,
    query: &HashMap<String, String>,
    offset: usize,
    top: usize,
    default_order: Order,
) -> Result<(Vec<Value>, Option<usize>), ApiError> {
    let clauses = query
        .get("$filter")
        .map(|f| sentinel_query::parse_filter(f))
        .transpose()?
        .unwrap_or_default();
    let order =
        sentinel_query::parse_orderby(query.get("$orderby").map(String::as_str), default_order)?;
    let items = sentinel_query::select(store.sentinel.values(), &clauses, order);
    Ok(page_at(&items, offset, top))
}

/// A list's `nextLink` (observed): only `api-version` and the opaque `$skipToken`, as
/// recorded from the real service.
fn next_link(headers: &HeaderMap, path: &ArmPath, suffix: &str, token: &SkipToken) -> String {
    format!(
        "{}{}{suffix}?api-version={SENTINEL_API_VERSION}&$skipToken={}",
        origin(headers),
        arm_base(headers, path),
        token.encode()
    )
}

pub(super) async fn sentinel_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(
        &state,
        &headers,
        &query,
        &path,
        "Microsoft.SecurityInsights/incidents/read",
    )?;
    if state.config.profile.is_observed() {
        let (query, offset) = match query.get("$skipToken") {
            Some(token) => {
                let token = SkipToken::decode(token)?;
                (token.query, token.offset)
            }
            None => (query, 0),
        };
        let top = top(&query, SENTINEL_MAX_TOP, SENTINEL_DEFAULT_TOP)?;
        let (items, next) = list_page(&state.lock(), &query, offset, top, NEWEST_FIRST)?;
        let mut body = json!({ "value": items });
        if let Some(offset) = next {
            let kept = ["$filter", "$orderby", "$top"]
                .iter()
                .filter_map(|k| query.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect();
            body["nextLink"] = json!(next_link(
                &headers,
                &path,
                "",
                &SkipToken {
                    offset,
                    query: kept
                }
            ));
        }
        return Ok(Json(body).into_response());
    }
    let top = top(&query, SENTINEL_MAX_TOP, SENTINEL_MAX_TOP)?;
    let mut store = state.lock();
    let (items, next) = if let Some(token) = query.get("$skipToken") {
        store.next_page(token, top)?
    } else {
        let oldest_change_first = Order {
            field: "lastModifiedTimeUtc",
            desc: false,
        };
        let (items, _) = list_page(&store, &query, 0, usize::MAX, oldest_change_first)?;
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

pub(super) async fn sentinel_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(
        &state,
        &headers,
        &query,
        &path,
        "Microsoft.SecurityInsights/incidents/read",
    )?;
    let store = state.lock();
    let id = store.sentinel_key(path.get("id").map_or("", String::as_str));
    let incident = store
        .sentinel
        .get(&id)
        .ok_or_else(|| ApiError::new(404, "NotFound", format!("Resource '{id}' does not exist")))?;
    Ok(Json(incident.clone()).into_response())
}

pub(super) async fn sentinel_put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    arm_request(
        &state,
        &headers,
        &query,
        &path,
        "Microsoft.SecurityInsights/incidents/write",
    )?;
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
    arm_request(
        &state,
        &headers,
        &query,
        &path,
        "Microsoft.SecurityInsights/incidents/delete",
    )?;
    let id = path.get("id").cloned().unwrap_or_default();
    let existed = state.lock().sentinel_delete(&id);
    Ok(match (existed, state.config.profile.is_observed()) {
        // Recorded: 200 with a body of `{}`.
        (true, true) => Json(json!({})).into_response(),
        (true, false) => StatusCode::OK.into_response(),
        (false, _) => StatusCode::NO_CONTENT.into_response(),
    })
}

pub(super) async fn sentinel_comments_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(
        &state,
        &headers,
        &query,
        &path,
        "Microsoft.SecurityInsights/incidents/comments/read",
    )?;
    let store = state.lock();
    let id = store.sentinel_key(path.get("id").map_or("", String::as_str));
    if !store.sentinel.contains_key(&id) {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!("Resource '{id}' does not exist"),
        ));
    }
    let mut comments: Vec<Value> = store
        .sentinel_comments
        .get(&id)
        .map(|c| c.values().cloned().collect())
        .unwrap_or_default();
    if !state.config.profile.is_observed() {
        return Ok(Json(json!({ "value": comments })).into_response());
    }
    // Oldest first (creation, then name), so offsets stay put while comments are added.
    comments.sort_by_cached_key(|c| {
        (
            c["properties"]["createdTimeUtc"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            c["name"].as_str().unwrap_or("").to_string(),
        )
    });
    let (offset, asked) = match query.get("$skipToken") {
        Some(token) => {
            let token = SkipToken::decode(token)?;
            (token.offset, token.query.get("$top").cloned())
        }
        None => (0, query.get("$top").cloned()),
    };
    // The page is the smaller of the service's size and the caller's `$top`.
    let page_size = state.config.observed.sentinel_comments_page.max(1);
    let top = match &asked {
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid $top value '{t}'")))?
            .min(page_size),
        None => page_size,
    };
    let (page, next) = page_at(&comments, offset, top);
    let mut body = json!({ "value": page });
    if let Some(offset) = next {
        let kept = asked.map(|t| ("$top".to_string(), t)).into_iter().collect();
        let suffix = format!("/{}/comments", path.get("id").map_or("", String::as_str));
        body["nextLink"] = json!(next_link(
            &headers,
            &path,
            &suffix,
            &SkipToken {
                offset,
                query: kept
            }
        ));
    }
    Ok(Json(body).into_response())
}

pub(super) async fn sentinel_comment_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    arm_request(
        &state,
        &headers,
        &query,
        &path,
        "Microsoft.SecurityInsights/incidents/comments/read",
    )?;
    let store = state.lock();
    let (id, comment) = (
        store.sentinel_key(path.get("id").map_or("", String::as_str)),
        store.sentinel_key(path.get("comment").map_or("", String::as_str)),
    );
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
                format!("Resource '{comment}' does not exist"),
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
    arm_request(
        &state,
        &headers,
        &query,
        &path,
        "Microsoft.SecurityInsights/incidents/comments/write",
    )?;
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
