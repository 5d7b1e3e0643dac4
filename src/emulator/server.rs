//! The emulator's HTTP face: one listener serving the token endpoint, the Graph and the
//! Sentinel incidents APIs under their real paths, and a control API under `/_emulator/`.
//! Handlers only parse requests and call into [`Store`]; every request is logged.

use super::faults::{Endpoint, FaultKind, FaultRule, Faults};
use super::graph::{self, MAX_TOP as GRAPH_MAX_TOP};
use super::sentinel::MAX_TOP as SENTINEL_MAX_TOP;
use super::store::{ApiError, RequestRecord, Store};
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

pub const SENTINEL_API_VERSION: &str = "2024-03-01";
const SENTINEL_PREFIX: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}/providers/Microsoft.SecurityInsights/incidents";

/// Where the emulator's workspace lives and which credentials it accepts.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub subscription: String,
    pub resource_group: String,
    pub workspace: String,
    /// Faults active from the start (`--faults`).
    pub faults: Vec<FaultRule>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            tenant: "00000000-0000-4000-8000-000000000001".into(),
            client_id: "00000000-0000-4000-8000-0000000000c1".into(),
            client_secret: "emulator-secret".into(),
            subscription: "00000000-0000-4000-8000-0000000000a1".into(),
            resource_group: "rulebridge-emulator".into(),
            workspace: "rulebridge-workspace".into(),
            faults: Vec::new(),
        }
    }
}

/// What a client needs to talk to this emulator (`GET /_emulator/info`).
#[derive(Debug, Clone, Serialize)]
pub struct EmulatorInfo {
    pub token_url: String,
    pub graph_base_url: String,
    pub sentinel_incidents_url: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
}

type Shared = Arc<Mutex<Store>>;

#[derive(Clone)]
struct AppState {
    store: Shared,
    config: Arc<EmulatorConfig>,
    faults: Arc<Mutex<Faults>>,
}

impl AppState {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running emulator; dropped, it stops.
pub struct Emulator {
    pub addr: SocketAddr,
    state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Emulator {
    /// Binds `listen` (use port 0 for a free port) and serves in the background.
    pub async fn start(listen: SocketAddr, config: EmulatorConfig) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let store = Store::new(&config.tenant, &config.client_id, &config.client_secret);
        let faults = Arc::new(Mutex::new(Faults::new(config.faults.clone(), 0x5eed)));
        let state = AppState {
            store: Arc::new(Mutex::new(store)),
            config: Arc::new(config),
            faults,
        };
        let app = router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = served.await {
                tracing::error!("emulator stopped: {e}");
            }
        });
        Ok(Emulator {
            addr,
            state,
            shutdown: Some(tx),
        })
    }

    pub fn info(&self) -> EmulatorInfo {
        info(&self.state.config, self.addr)
    }

    /// Adds a fault rule (e.g. "the next 2 Sentinel PUTs get a 503").
    pub fn add_fault(&self, rule: FaultRule) {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rules
            .push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rules
            .clear();
    }

    /// Direct access to the state, for seeding and for tests' assertions.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.state.lock()
    }

    /// The shared store itself, for background tasks (emulated analysts) that lock it
    /// per edit and outlive any one borrow of the emulator.
    pub fn store_handle(&self) -> Arc<Mutex<Store>> {
        self.state.store.clone()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn info(config: &EmulatorConfig, addr: SocketAddr) -> EmulatorInfo {
    let base = format!("http://{addr}");
    EmulatorInfo {
        token_url: format!("{base}/{}/oauth2/v2.0/token", config.tenant),
        graph_base_url: format!("{base}/v1.0"),
        sentinel_incidents_url: format!(
            "{base}{}?api-version={SENTINEL_API_VERSION}",
            sentinel_base(config)
        ),
        tenant_id: config.tenant.clone(),
        client_id: config.client_id.clone(),
        client_secret: config.client_secret.clone(),
    }
}

fn sentinel_base(config: &EmulatorConfig) -> String {
    SENTINEL_PREFIX
        .replace("{sub}", &config.subscription)
        .replace("{rg}", &config.resource_group)
        .replace("{ws}", &config.workspace)
}

fn router(state: AppState) -> Router {
    let sentinel = Router::new()
        .route("/", get(sentinel_list))
        .route(
            "/{id}",
            get(sentinel_get).put(sentinel_put).delete(sentinel_delete),
        )
        .route("/{id}/comments", get(sentinel_comments_list))
        .route(
            "/{id}/comments/{comment}",
            get(sentinel_comment_get).put(sentinel_comment_put),
        );
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/security/incidents", get(graph_list))
        .route(
            "/v1.0/security/incidents/{id}",
            get(graph_get).patch(graph_patch),
        )
        .route(
            "/v1.0/security/incidents/{id}/comments",
            post(graph_comment),
        )
        .nest(SENTINEL_PREFIX, sentinel)
        .route("/_emulator/info", get(control_info))
        .route("/_emulator/graph/incidents", get(control_graph))
        .route("/_emulator/sentinel/incidents", get(control_sentinel))
        .route("/_emulator/requests", get(control_requests))
        .route("/_emulator/analysts/edit", post(control_analyst_edit))
        .route(
            "/_emulator/faults",
            get(control_faults)
                .post(control_add_fault)
                .delete(control_clear_faults),
        )
        .layer(middleware::from_fn_with_state(state.clone(), inject_faults))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Logs every request with its body and the status it got.
async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let body_json = serde_json::from_slice::<Value>(&bytes).ok();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    // Like a real service, a request is processed to the end even when the client has
    // given up on it (a timeout): its write still lands, and it is still logged.
    let work = tokio::spawn(async move {
        let response = next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
        if !path.starts_with("/_emulator/") {
            // Token requests carry the secret: logged without their body.
            let body = if path.ends_with("/oauth2/v2.0/token") {
                None
            } else {
                body_json
            };
            let status = response.status().as_u16();
            state.lock().requests.push(RequestRecord {
                method,
                path,
                query,
                body,
                status,
            });
        }
        response
    });
    work.await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Applies the fault (if any) that the rules pick for this request.
async fn inject_faults(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
        Some(FaultKind::Throttle { retry_after }) => {
            let body = ApiError::new(
                429,
                "TooManyRequests",
                "Rate limit is exceeded. Try again later.",
            )
            .body();
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            response.headers_mut().insert(
                "retry-after",
                retry_after.to_string().parse().expect("digits"),
            );
            response
        }
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
                let now = store.tick();
                let etag = format!("\"{}\"", store.next_id(""));
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

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(401, "InvalidAuthenticationToken", "Access token is empty.")
        })?;
    let store = state.lock();
    match store.tokens.get(token) {
        Some(expires) if *expires > chrono::Utc::now() => Ok(()),
        Some(_) => Err(ApiError::new(
            401,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        )),
        None => Err(ApiError::new(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        )),
    }
}

async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut store = state.lock();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let fail = |status: StatusCode, error: &str, description: String| {
        (status, Json(json!({
            "error": error, "error_description": description, "error_codes": [7000215],
            "timestamp": chrono::Utc::now().to_rfc3339(), "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000"
        })))
            .into_response()
    };
    if tenant != store.tenant {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != "client_credentials" {
        return fail(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.".into(),
        );
    }
    if field("client_id") != store.client_id || field("client_secret") != store.client_secret {
        return fail(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.".into(),
        );
    }
    if !field("scope").ends_with("/.default") {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided value for scope is not valid.".into(),
        );
    }
    let token = store.next_id("emu.");
    let lifetime = store.token_lifetime;
    store
        .tokens
        .insert(token.clone(), chrono::Utc::now() + lifetime);
    Json(json!({ "token_type": "Bearer", "expires_in": lifetime.num_seconds(), "ext_expires_in": lifetime.num_seconds(), "access_token": token }))
        .into_response()
}

fn top(query: &HashMap<String, String>, max: usize, default: usize) -> Result<usize, ApiError> {
    match query.get("$top") {
        None => Ok(default),
        Some(t) => match t.parse::<usize>() {
            Ok(0) => Err(ApiError::bad_request("$top must be positive")),
            Ok(n) if n > max => Err(ApiError::bad_request(format!("The limit of '{max}' for Top query has been exceeded. The value from the incoming request is '{n}'."))),
            Ok(n) => Ok(n),
            Err(_) => Err(ApiError::bad_request(format!("Invalid $top value '{t}'"))),
        },
    }
}

async fn graph_list(
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

async fn graph_get(
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

async fn graph_patch(
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

async fn graph_comment(
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

/// Parses a request body; malformed JSON is the 400 both services answer.
fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))
}

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

async fn sentinel_list(
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

async fn sentinel_get(
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

async fn sentinel_put(
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

async fn sentinel_delete(
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

async fn sentinel_comments_list(
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

async fn sentinel_comment_get(
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

async fn sentinel_comment_put(
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

/// `http://host:port` as the client addressed us, for links.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

async fn control_info(State(state): State<AppState>, headers: HeaderMap) -> Json<EmulatorInfo> {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse().ok());
    let addr = host.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    Json(info(&state.config, addr))
}

async fn control_graph(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "value": state.lock().graph.values().cloned().collect::<Vec<_>>() }))
}

async fn control_sentinel(State(state): State<AppState>) -> Json<Value> {
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

async fn control_requests(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "value": state.lock().requests }))
}

async fn control_faults(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "value": state.faults.lock().unwrap_or_else(|p| p.into_inner()).rules }))
}

/// Body: one fault rule or an array, e.g. `{"kind": "throttle", "retry_after": 1,
/// "endpoint": "sentinel-put", "count": 2}`.
async fn control_add_fault(State(state): State<AppState>, body: Bytes) -> ApiResult {
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

async fn control_clear_faults(State(state): State<AppState>) -> StatusCode {
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
async fn control_analyst_edit(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    use super::analysts::Analysts;
    use std::sync::atomic::{AtomicU64, Ordering};
    // Each request gets its own analysts from a counter, so repeated calls differ while a
    // test run stays reproducible; nothing per-store needs keeping.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let count = analyst_edit_count(&query, &body)?;
    let mut analysts = Analysts::new(0xA11A_1757 ^ CALLS.fetch_add(1, Ordering::Relaxed));
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
