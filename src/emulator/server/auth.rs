//! The token endpoint (client credentials, as Entra ID answers it) and the bearer check
//! of every API route. A token is issued for one resource, the audience of the
//! requested `.default` scope, and each API accepts only its own: a Graph token is a 401
//! at ARM and the other way round, as the real services check (both profiles).

use super::*;
use crate::emulator::store::{Audience, IssuedToken};

/// The request's bearer token must be live and issued for `audience`.
pub(super) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    audience: Audience,
) -> Result<(), ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(401, "InvalidAuthenticationToken", "Access token is empty.")
        })?;
    let store = state.lock();
    match store.tokens.get(token) {
        Some(issued) if issued.audience != audience => Err(ApiError::new(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        )),
        Some(issued) if issued.expires > chrono::Utc::now() => Ok(()),
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

pub(super) async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut store = state.lock();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let fail = |status: StatusCode, error: &str, code: u32, description: String| {
        (status, Json(json!({
            "error": error, "error_description": description, "error_codes": [code],
            "timestamp": chrono::Utc::now().to_rfc3339(), "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000"
        })))
            .into_response()
    };
    if tenant != store.tenant {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != "client_credentials" {
        return fail(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "AADSTS70003: The app requested an unsupported grant type.".into(),
        );
    }
    if field("client_id") != store.client_id || field("client_secret") != store.client_secret {
        return fail(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "AADSTS7000215: Invalid client secret provided.".into(),
        );
    }
    let Some(audience) = Audience::of_scope(field("scope")) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "AADSTS70011: The provided value for scope '{}' is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                field("scope")
            ),
        );
    };
    let token = store.next_id("emu.");
    let lifetime = store.token_lifetime;
    store.tokens.insert(
        token.clone(),
        IssuedToken {
            expires: chrono::Utc::now() + lifetime,
            audience,
        },
    );
    Json(json!({ "token_type": "Bearer", "expires_in": lifetime.num_seconds(), "ext_expires_in": lifetime.num_seconds(), "access_token": token }))
        .into_response()
}
