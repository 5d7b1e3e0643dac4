//! The emulator's HTTP face: one listener serving the token endpoint, the managed-identity
//! endpoints (IMDS, App Service), the Graph and the Sentinel incidents APIs and ARM's
//! permissions read under their real paths, and a control API under `/_emulator/`.
//! Handlers only parse requests and call into [`Store`]; every request is logged.
//! Layers, outermost first: loopback-only control API, gzip (when the client sends
//! `Accept-Encoding: gzip`, as both services honour), the request log, faults, and the
//! token buckets.

use super::faults::{Endpoint, FaultKind, FaultRule, Faults};
use super::graph::{self, MAX_TOP as GRAPH_MAX_TOP};
use super::identity::certs::{CertificateFiles, TEST_CLIENT_PFX_PASSWORD};
use super::identity::{Cloud, Identity, DEFAULT_FEDERATED_SUBJECT};
use super::profile::{Observed, Profile};
use super::sentinel::MAX_TOP as SENTINEL_MAX_TOP;
use super::store::Audience;
use super::store::{ApiError, RequestRecord, Store};
use super::throttle::Throttle;
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

mod auth;
mod control;
mod fault_layer;
mod graph_routes;
mod identity_routes;
mod sentinel_routes;
mod throttle_layer;

use auth::{authorize, token};
use control::*;
use fault_layer::inject_faults;
use graph_routes::*;
use identity_routes::*;
use sentinel_routes::*;
use throttle_layer::throttle;

pub const SENTINEL_API_VERSION: &str = "2024-03-01";
const WORKSPACE_PREFIX: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}";
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
    /// Observed (default) or strict behaviour; see `emulator::profile`.
    pub profile: Profile,
    /// The observed behaviour's knobs (limits, page sizes, buckets, seeding rates).
    pub observed: Observed,
    /// The cloud played: tokens are issued for its Graph and ARM only (`--cloud`).
    pub cloud: Cloud,
    /// The app's secret is past its end date: the right secret gets `AADSTS7000222`.
    pub client_secret_expired: bool,
    /// PEM certificates registered on the app besides the test ones
    /// (`--client-certificate`).
    pub client_certificates: Vec<PathBuf>,
    /// The subject of the app's federated identity credential (`--federated-subject`).
    pub federated_subject: String,
    /// The system-assigned managed identity's client id.
    pub managed_identity_client_id: String,
    /// The one user-assigned managed identity's client id.
    pub user_assigned_client_id: String,
    /// The app's (and the managed identities') Graph application roles, as consented
    /// (`--graph-roles`); empty: no consent, tokens without `roles`.
    pub graph_roles: Vec<String>,
    /// The actions of the principals' role assignments on the workspace
    /// (`--arm-actions`), `*` wildcards allowed.
    pub arm_actions: Vec<String>,
    /// Actions subtracted from them (`--arm-not-actions`).
    pub arm_not_actions: Vec<String>,
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
            profile: Profile::default(),
            observed: Observed::default(),
            cloud: Cloud::default(),
            client_secret_expired: false,
            client_certificates: Vec::new(),
            federated_subject: DEFAULT_FEDERATED_SUBJECT.into(),
            managed_identity_client_id: "00000000-0000-4000-8000-0000000000e1".into(),
            user_assigned_client_id: "00000000-0000-4000-8000-0000000000e2".into(),
            graph_roles: vec!["SecurityIncident.ReadWrite.All".into()],
            arm_actions: vec!["Microsoft.SecurityInsights/*".into()],
            arm_not_actions: Vec::new(),
        }
    }
}

impl EmulatorConfig {
    /// The default configuration with the tidy, documented-only behaviour.
    pub fn strict() -> Self {
        EmulatorConfig {
            profile: Profile::Strict,
            ..EmulatorConfig::default()
        }
    }
}

/// What a client needs to talk to this emulator (`GET /_emulator/info`). Fields added
/// after the first six default when absent, so an older emulator's line still reads.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct EmulatorInfo {
    pub token_url: String,
    pub graph_base_url: String,
    pub sentinel_incidents_url: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// "public", "usgov" or "usgov-dod".
    #[serde(default)]
    pub cloud: String,
    /// `{base}/`: a client builds `{authority_host}{tenant}/oauth2/v2.0/token`.
    #[serde(default)]
    pub authority_host: String,
    /// The cloud's Graph resource (scope: `{graph_resource}/.default`).
    #[serde(default)]
    pub graph_resource: String,
    /// The cloud's ARM resource (scope: `{arm_resource}/.default`).
    #[serde(default)]
    pub arm_resource: String,
    /// TEST key + certificate (PEM, one file) registered on the app.
    #[serde(default)]
    pub client_certificate_path: String,
    /// The same as PKCS#12.
    #[serde(default)]
    pub client_certificate_pfx_path: String,
    #[serde(default)]
    pub client_certificate_pfx_password: String,
    /// TEST key + a registered certificate past its notAfter (PEM, one file).
    #[serde(default)]
    pub expired_client_certificate_path: String,
    /// `GET` it for a federated (workload identity) token.
    #[serde(default)]
    pub federated_token_url: String,
    /// The subject the app's federated identity credential accepts.
    #[serde(default)]
    pub federated_subject: String,
    /// The IMDS token endpoint (`{base}/metadata/identity/oauth2/token`).
    #[serde(default)]
    pub imds_endpoint: String,
    /// The App Service / Container Apps `IDENTITY_ENDPOINT` (`{base}/msi/token`).
    #[serde(default)]
    pub identity_endpoint: String,
    /// Its `IDENTITY_HEADER`.
    #[serde(default)]
    pub identity_header: String,
    /// The system-assigned managed identity's client id.
    #[serde(default)]
    pub managed_identity_client_id: String,
    #[serde(default)]
    pub user_assigned_client_id: String,
    /// `/subscriptions/…/workspaces/{ws}`: the Sentinel workspace's ARM id.
    #[serde(default)]
    pub workspace_resource_id: String,
}

/// Where the test certificates were written (empty in router unit tests, which write
/// none).
#[derive(Debug, Clone, Default)]
struct CertificatePaths {
    client_pem: String,
    client_pfx: String,
    expired_pem: String,
}

type Shared = Arc<Mutex<Store>>;

#[derive(Clone)]
struct AppState {
    store: Shared,
    config: Arc<EmulatorConfig>,
    faults: Arc<Mutex<Faults>>,
    throttle: Arc<Mutex<Throttle>>,
    identity: Arc<Identity>,
    certificate_paths: Arc<CertificatePaths>,
}

impl AppState {
    fn new(config: EmulatorConfig, fault_seed: u64, identity: Identity) -> AppState {
        let mut store = Store::new(&config.tenant, &config.client_id, &config.client_secret);
        store.profile = config.profile;
        store.observed = config.observed.clone();
        store.sentinel_base = sentinel_base(&config);
        AppState {
            store: Arc::new(Mutex::new(store)),
            faults: Arc::new(Mutex::new(Faults::new(config.faults.clone(), fault_seed))),
            throttle: Arc::new(Mutex::new(Throttle::new(&config.observed.throttle))),
            config: Arc::new(config),
            identity: Arc::new(identity),
            certificate_paths: Arc::new(CertificatePaths::default()),
        }
    }
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
    /// The test certificates on disk, removed when the emulator is dropped.
    _certificate_files: CertificateFiles,
}

impl Emulator {
    /// Binds `listen` (use port 0 for a free port) and serves in the background.
    /// Fails when a `client_certificates` file cannot be read or holds no RSA
    /// certificate.
    pub async fn start(listen: SocketAddr, config: EmulatorConfig) -> std::io::Result<Emulator> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let mut extra = Vec::new();
        for path in &config.client_certificates {
            let pem = std::fs::read(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("client certificate {}: {e}", path.display()),
                )
            })?;
            // Checked here so the error names the file.
            super::identity::certs::RegisteredCertificate::all_from_pem(&pem)
                .map_err(|e| invalid(format!("client certificate {}: {e}", path.display())))?;
            extra.push(pem);
        }
        let identity = Identity::new(&extra).map_err(invalid)?;
        let files = CertificateFiles::write()?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let mut state = AppState::new(config, 0x5eed, identity);
        let text = |p: &std::path::Path| p.to_string_lossy().into_owned();
        state.certificate_paths = Arc::new(CertificatePaths {
            client_pem: text(&files.client_pem),
            client_pfx: text(&files.client_pfx),
            expired_pem: text(&files.expired_pem),
        });
        let app = router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
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
            _certificate_files: files,
        })
    }

    pub fn info(&self) -> EmulatorInfo {
        info(&self.state, self.addr)
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

    /// The profile this emulator runs.
    pub fn profile(&self) -> Profile {
        self.state.config.profile
    }

    /// Adds the Sentinel incident Microsoft's Defender XDR connector would make for
    /// Graph incident `defender_id` (or finds the one it made); returns its name.
    pub fn add_connector_incident(&self, defender_id: &str) -> Result<String, String> {
        self.state.lock().add_connector_incident(defender_id)
    }

    /// Refills the rate-limit buckets (tests that seed through the API first).
    pub fn reset_throttle(&self) {
        *self
            .state
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Throttle::new(&self.state.config.observed.throttle);
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

fn info(state: &AppState, addr: SocketAddr) -> EmulatorInfo {
    let config = &state.config;
    let paths = &state.certificate_paths;
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
        cloud: config.cloud.to_string(),
        authority_host: format!("{base}/"),
        graph_resource: config.cloud.graph_resource().into(),
        arm_resource: config.cloud.arm_resource().into(),
        client_certificate_path: paths.client_pem.clone(),
        client_certificate_pfx_path: paths.client_pfx.clone(),
        client_certificate_pfx_password: TEST_CLIENT_PFX_PASSWORD.into(),
        expired_client_certificate_path: paths.expired_pem.clone(),
        federated_token_url: format!("{base}/_emulator/federated-token"),
        federated_subject: config.federated_subject.clone(),
        imds_endpoint: format!("{base}/metadata/identity/oauth2/token"),
        identity_endpoint: format!("{base}/msi/token"),
        identity_header: state.identity.identity_header.clone(),
        managed_identity_client_id: config.managed_identity_client_id.clone(),
        user_assigned_client_id: config.user_assigned_client_id.clone(),
        workspace_resource_id: workspace_id(config),
    }
}

/// The Sentinel workspace's ARM resource id for `config`.
pub(crate) fn workspace_id(config: &EmulatorConfig) -> String {
    WORKSPACE_PREFIX
        .replace("{sub}", &config.subscription)
        .replace("{rg}", &config.resource_group)
        .replace("{ws}", &config.workspace)
}

/// The Sentinel incidents collection's path for `config`'s workspace.
pub(crate) fn sentinel_base(config: &EmulatorConfig) -> String {
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
        .route("/metadata/identity/oauth2/token", get(imds_token))
        .route("/msi/token", get(app_service_token))
        .route(
            &format!("{WORKSPACE_PREFIX}/providers/Microsoft.Authorization/permissions"),
            get(arm_permissions),
        )
        .route("/v1.0/security/incidents", get(graph_list))
        .route("/v1.0/security/alerts_v2", get(graph_alerts))
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
        .route("/_emulator/federated-token", get(control_federated_token))
        .route("/_emulator/graph/incidents", get(control_graph))
        .route("/_emulator/graph/alerts", post(control_graph_alert))
        .route("/_emulator/sentinel/incidents", get(control_sentinel))
        .route("/_emulator/requests", get(control_requests))
        .route("/_emulator/analysts/edit", post(control_analyst_edit))
        .route("/_emulator/throttle", post(control_throttle))
        .route(
            "/_emulator/connector/incidents",
            post(control_connector_incident),
        )
        .route(
            "/_emulator/faults",
            get(control_faults)
                .post(control_add_fault)
                .delete(control_clear_faults),
        )
        .layer(middleware::from_fn_with_state(state.clone(), throttle))
        .layer(middleware::from_fn_with_state(state.clone(), inject_faults))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .layer(middleware::from_fn(control_from_loopback_only))
        .with_state(state)
}

/// The control API has no authentication, so it answers only clients on this machine,
/// even when the emulator listens on a public address.
async fn control_from_loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/_emulator/") && !peer.ip().is_loopback() {
        return ApiError::new(
            403,
            "Forbidden",
            "The control API answers loopback clients only.",
        )
        .into_response();
    }
    next.run(request).await
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
    let body_bytes = bytes.len();
    // Large bodies are logged by size only (see `Store::log_request`): not parsed twice.
    let body_json = if body_bytes <= super::store::MAX_LOGGED_BODY {
        serde_json::from_slice::<Value>(&bytes).ok()
    } else {
        None
    };
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let token_request = path.ends_with("/oauth2/v2.0/token");
    let (grant, jti) = if token_request {
        auth::grant_of(&bytes)
    } else {
        (None, None)
    };
    // Like a real service, a request is processed to the end even when the client has
    // given up on it (a timeout): its write still lands, and it is still logged.
    let work = tokio::spawn(async move {
        let response = next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
        if !path.starts_with("/_emulator/") {
            // Token requests carry the secret or an assertion: logged without their
            // body, with only how they signed in (and the assertion's jti).
            let body = if token_request { None } else { body_json };
            let status = response.status().as_u16();
            state.lock().log_request(RequestRecord {
                method,
                path,
                query,
                body,
                body_bytes,
                status,
                grant,
                jti,
            });
        }
        response
    });
    work.await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
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

/// Parses a request body; malformed JSON is the 400 both services answer.
fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))
}

/// `http://host:port` as the client addressed us, for links.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn app() -> Router {
        router(AppState::new(
            EmulatorConfig::default(),
            1,
            Identity::new(&[]).unwrap(),
        ))
    }

    async fn status_from(peer: &str, path: &str) -> u16 {
        let mut request = Request::builder().uri(path).body(Body::empty()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        app().oneshot(request).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn the_control_api_answers_loopback_clients_only() {
        assert_eq!(
            status_from("127.0.0.1:5000", "/_emulator/requests").await,
            200
        );
        assert_eq!(status_from("[::1]:5000", "/_emulator/requests").await, 200);
        assert_eq!(
            status_from("192.0.2.10:5000", "/_emulator/requests").await,
            403
        );
        assert_eq!(
            status_from("192.0.2.10:5000", "/_emulator/faults").await,
            403
        );
        // The APIs themselves answer anyone (with a token): here, 401 without one.
        assert_eq!(
            status_from("192.0.2.10:5000", "/v1.0/security/incidents").await,
            401
        );
    }
}
