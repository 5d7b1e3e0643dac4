//! The sign-in routes besides the token endpoint: the two managed-identity endpoints a
//! workload in Azure calls (the VM's IMDS and App Service / Container Apps'
//! `IDENTITY_ENDPOINT`), the federated-token issuer of the control API (what AKS
//! projects into `AZURE_FEDERATED_TOKEN_FILE`), and ARM's permissions read on the
//! workspace (what `doctor` checks the caller's actions with).
//! Managed identities: the system-assigned one (no `client_id`) and one user-assigned
//! one; their tokens carry the same Graph roles as the app's and the same RBAC applies.
//! Numbers in managed-identity responses are strings, as both endpoints send them.

use super::auth::{authorize, issue, resource_not_found};
use super::sentinel_routes::{check_api_version, check_workspace, ArmPath};
use super::*;
use crate::emulator::identity::cloud::ResourceError;
use crate::emulator::identity::{Principal, FEDERATED_AUDIENCE};

/// A managed-identity endpoint's error: `{"error", "error_description"}`.
fn mi_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// What both endpoints share once their own header passed: the resource of this cloud,
/// the identity (`client_id`), the token.
fn managed_identity_token(
    state: &AppState,
    query: &HashMap<String, String>,
) -> Result<(String, String, String, i64), Response> {
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return Err(mi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        ));
    };
    let config = &state.config;
    // Managed-identity endpoints take a resource, not a scope: "…/.default" is no
    // resource Entra ID knows, so it is 500011 like another cloud's.
    let audience = config.cloud.resolve(resource).map_err(|e| {
        let (ResourceError::OtherCloud(r) | ResourceError::Unknown(r)) = e;
        let e = resource_not_found(&r, &config.tenant);
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.error, "error_description": e.description, "error_codes": [e.code] })),
        )
            .into_response()
    })?;
    let client_id = match query.get("client_id").map(String::as_str) {
        None | Some("") => config.managed_identity_client_id.clone(),
        Some(c) if c.eq_ignore_ascii_case(&config.user_assigned_client_id) => {
            config.user_assigned_client_id.clone()
        }
        Some(c) if c.eq_ignore_ascii_case(&config.managed_identity_client_id) => {
            config.managed_identity_client_id.clone()
        }
        Some(_) => {
            return Err(mi_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Identity not found",
            ))
        }
    };
    let mut store = state.lock();
    let lifetime = store.managed_identity_token_lifetime;
    let principal = Principal::of(&client_id);
    let token = issue(state, &mut store, &principal, audience, resource, lifetime);
    Ok((token, client_id, resource.clone(), lifetime.num_seconds()))
}

/// `GET /metadata/identity/oauth2/token?api-version=…&resource=R[&client_id=C]` with
/// `Metadata: true` (IMDS refuses requests without it: a guard against SSRF).
pub(super) async fn imds_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !metadata {
        return mi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if !query.contains_key("api-version") {
        return mi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let (token, client_id, resource, lifetime) = match managed_identity_token(&state, &query) {
        Ok(t) => t,
        Err(response) => return response,
    };
    let now = chrono::Utc::now().timestamp();
    Json(json!({
        "access_token": token,
        "client_id": client_id,
        "expires_in": lifetime.to_string(),
        "expires_on": (now + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}

/// `GET /msi/token?api-version=2019-08-01&resource=R[&client_id=C]` with
/// `X-IDENTITY-HEADER` (App Service, Container Apps). Without the header: 400; with a
/// wrong one: 401 (statuses assumed; both refuse).
pub(super) async fn app_service_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
    {
        None => {
            return mi_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The X-IDENTITY-HEADER header is required",
            )
        }
        Some(h) if h != state.identity.identity_header => {
            return mi_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                "The X-IDENTITY-HEADER header does not match",
            )
        }
        Some(_) => {}
    }
    // 2019-08-01 is the version that takes X-IDENTITY-HEADER and `client_id`; the older
    // 2017-09-01 uses a `secret` header and `clientid` instead.
    if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return mi_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "api-version must be 2019-08-01",
        );
    }
    let (token, client_id, resource, lifetime) = match managed_identity_token(&state, &query) {
        Ok(t) => t,
        Err(response) => return response,
    };
    let now = chrono::Utc::now().timestamp();
    Json(json!({
        "access_token": token,
        "expires_on": (now + lifetime).to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": client_id,
    }))
    .into_response()
}

/// `GET /_emulator/federated-token?subject=…&audience=…&lifetime_secs=…`: a
/// service-account-like token from the emulator's OIDC issuer (`{base}/oidc`), as the
/// file AKS projects. `lifetime_secs` may be 0 or negative (an expired token).
pub(super) async fn control_federated_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let subject = query
        .get("subject")
        .cloned()
        .unwrap_or_else(|| crate::emulator::identity::DEFAULT_FEDERATED_SUBJECT.to_string());
    let audience = query
        .get("audience")
        .cloned()
        .unwrap_or_else(|| FEDERATED_AUDIENCE.to_string());
    let lifetime = match query.get("lifetime_secs") {
        None => 3600,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("Invalid lifetime_secs '{l}'")))?,
    };
    let jti = state.lock().next_id("jti-");
    let issuer = format!("{}/oidc", origin(&headers));
    let token = state
        .identity
        .federated_token(&issuer, &subject, &audience, lifetime, &jti);
    Ok(([("content-type", "text/plain; charset=utf-8")], token).into_response())
}

/// `GET {workspace}/providers/Microsoft.Authorization/permissions?api-version=…`: the
/// caller's effective actions on the workspace (ARM answers it for any principal with a
/// token; no action is needed to read one's own permissions).
pub(super) async fn arm_permissions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<ArmPath>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    check_api_version(&query, &["2022-04-01", "2018-07-01", "2015-07-01"])?;
    authorize(&state, &headers, Audience::Arm)?;
    check_workspace(&state, &path)?;
    let c = &state.config;
    Ok(Json(json!({
        "value": [{
            "actions": c.arm_actions,
            "notActions": c.arm_not_actions,
            "dataActions": [],
            "notDataActions": [],
        }]
    }))
    .into_response())
}
