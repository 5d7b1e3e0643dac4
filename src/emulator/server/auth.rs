//! The token endpoint (client credentials, as Entra ID answers it) and the bearer check
//! of every API route. A token is issued for one resource of the emulator's cloud, the
//! audience of the requested `.default` scope, and each API accepts only its own: a
//! Graph token is a 401 at ARM and the other way round, as the real services check
//! (both profiles). The app proves itself with its secret, a certificate-signed client
//! assertion, or a federated token (`emulator::identity` holds the checks).
//! Order of checks, as Entra ID's errors suggest: tenant, grant type, client id, the
//! credential, then the scope.

use super::*;
use crate::emulator::identity::assertion::{self, Expect};
use crate::emulator::identity::cloud::ResourceError;
use crate::emulator::identity::{
    access_token_claims, classify, AadError, Grant, Principal, JWT_BEARER,
};
use crate::emulator::store::{Audience, IssuedToken};

/// The request's bearer token must be live and issued for `audience`; returns it.
pub(super) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    audience: Audience,
) -> Result<IssuedToken, ApiError> {
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
        Some(issued) if issued.expires > chrono::Utc::now() => Ok(issued.clone()),
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

/// Issues (and remembers) an access token for `principal`: JWT-shaped, `aud` the
/// resource as requested, Graph roles on Graph tokens.
pub(super) fn issue(
    state: &AppState,
    store: &mut Store,
    principal: &Principal,
    audience: Audience,
    aud: &str,
    lifetime: chrono::Duration,
) -> String {
    let roles = match audience {
        Audience::Graph => state.config.graph_roles.clone(),
        // ARM authorizes by role assignments, not by the token.
        Audience::Arm => Vec::new(),
    };
    let uti = store.next_id("");
    let claims = access_token_claims(
        &store.tenant,
        principal,
        aud,
        Some(&roles),
        lifetime.num_seconds(),
        &uti,
    );
    let token = state.identity.sign_access_token(&claims);
    store.tokens.insert(
        token.clone(),
        IssuedToken {
            expires: chrono::Utc::now() + lifetime,
            audience,
            principal: principal.clone(),
            roles,
        },
    );
    token
}

/// `application/x-www-form-urlencoded` pairs (the request log reads token requests
/// without the extractor, before the handler runs).
fn parse_form(bytes: &[u8]) -> HashMap<String, String> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let escaped = (bytes[i] == b'%')
                .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
                .flatten();
            match (bytes[i], escaped) {
                (_, Some(b)) => {
                    out.push(b);
                    i += 2;
                }
                (b'+', _) => out.push(b' '),
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(bytes)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The request log's `grant` and `jti` of a token request's body.
pub(super) fn grant_of(body: &[u8]) -> (Option<String>, Option<String>) {
    match classify(&parse_form(body)) {
        Some((grant, jwt)) => (
            Some(grant.as_str().to_string()),
            jwt.and_then(|j| j.claim_str("jti").map(str::to_string)),
        ),
        None => (None, None),
    }
}

fn aad_response(e: AadError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(json!({
        "error": e.error, "error_description": e.description, "error_codes": [e.code],
        "timestamp": chrono::Utc::now().to_rfc3339(), "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000"
    })))
        .into_response()
}

/// `AADSTS500011` for a resource Entra ID does not know in this cloud (the token
/// endpoint and both managed-identity endpoints answer it).
pub(super) fn resource_not_found(resource: &str, tenant: &str) -> AadError {
    AadError::new(
        400,
        "invalid_resource",
        500011,
        format!("The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
    )
}

pub(super) async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let base = origin(&headers);
    match client_credentials(&state, &tenant, &form, &base) {
        Ok(body) => Json(body).into_response(),
        Err(e) => aad_response(e),
    }
}

fn client_credentials(
    state: &AppState,
    tenant: &str,
    form: &HashMap<String, String>,
    base: &str,
) -> Result<Value, AadError> {
    let config = &state.config;
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if tenant != config.tenant {
        return Err(AadError::new(
            400,
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found."),
        ));
    }
    if field("grant_type") != "client_credentials" {
        return Err(AadError::new(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    let client_id = field("client_id");
    if client_id != config.client_id {
        return Err(AadError::new(
            400,
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
        ));
    }
    let token_endpoint = format!("{base}/{tenant}/oauth2/v2.0/token");
    let issuer = format!("{base}/oidc");
    let expect = Expect {
        client_id,
        token_endpoint: &token_endpoint,
        issuer: &issuer,
        federated_subject: &config.federated_subject,
        now: chrono::Utc::now().timestamp(),
    };
    match classify(form) {
        None => {
            return Err(AadError::invalid_client(
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ))
        }
        Some((Grant::Secret, _)) => {
            if field("client_secret") != config.client_secret {
                return Err(AadError::invalid_client(
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'.".replace("{client_id}", client_id),
                ));
            }
            // Only the right secret can be known to be expired: a wrong one matches no
            // key at all (7000215 above).
            if config.client_secret_expired {
                return Err(AadError::invalid_client(
                    7000222,
                    format!("The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."),
                ));
            }
        }
        Some((kind, jwt)) => {
            if field("client_assertion_type") != JWT_BEARER {
                // Code assumed for a wrong value too (900144 is "missing parameter").
                return Err(AadError::new(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'client_assertion_type'.",
                ));
            }
            match (kind, jwt) {
                (Grant::Federated, Some(jwt)) => {
                    assertion::check_federated(&jwt, &expect, state.identity.issuer_public_key())?
                }
                (_, jwt) => {
                    assertion::check_certificate(jwt.as_ref(), &expect, &state.identity.certificates)?
                }
            }
        }
    }
    let (audience, resource) = config.cloud.resolve_scope(field("scope")).map_err(|e| match e {
        ResourceError::OtherCloud(resource) => resource_not_found(&resource, tenant),
        ResourceError::Unknown(_) => AadError::new(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided value for scope '{}' is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                field("scope")
            ),
        ),
    })?;
    let mut store = state.lock();
    let lifetime = store.token_lifetime;
    let principal = Principal::of(client_id);
    let token = issue(state, &mut store, &principal, audience, &resource, lifetime);
    Ok(
        json!({ "token_type": "Bearer", "expires_in": lifetime.num_seconds(), "ext_expires_in": lifetime.num_seconds(), "access_token": token }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_grant_comes_from_the_form_body_as_sent() {
        let form = parse_form(b"a=x%2By+z&b=%41%zz&c&d=%");
        assert_eq!(form["a"], "x+y z");
        assert_eq!(form["b"], "A%zz");
        assert_eq!(form["c"], "");
        assert_eq!(form["d"], "%");
        assert_eq!(
            grant_of(b"grant_type=client_credentials&client_secret=s"),
            (Some("secret".into()), None)
        );
        assert_eq!(grant_of(b"grant_type=client_credentials"), (None, None));
        // An unreadable assertion is judged (and logged) as a certificate one.
        assert_eq!(
            grant_of(b"client_assertion=junk"),
            (Some("certificate".into()), None)
        );
    }
}
