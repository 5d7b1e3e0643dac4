//! The checks of a `client_assertion`: a certificate-signed one (the app proves it holds
//! a registered certificate's key) and a federated token (workload identity: a token
//! from a trusted issuer stands in for a secret). Each failure is the 401
//! `invalid_client` with the AADSTS code Entra ID answers; where the real code or text
//! is unknown the choice is marked "assumed" and is a rejection all the same.
//! Order: what identifies the key (thumbprint / issuer) first, then the signature,
//! then the claims, so a forged token never learns which claim was wrong.

use super::certs::RegisteredCertificate;
use super::jwt::{b64url_decode, Jwt};
use super::{AadError, FEDERATED_AUDIENCE};
use serde_json::Value;

/// Clock skew Entra ID tolerates on `exp` and `nbf`.
pub const SKEW_SECS: i64 = 300;

/// What an assertion is judged against.
pub struct Expect<'a> {
    pub client_id: &'a str,
    /// `{base}/{tenant}/oauth2/v2.0/token`: the only `aud` a certificate assertion may
    /// name (Entra ID also takes its v1 endpoint and issuer forms; the emulator is
    /// stricter and takes the endpoint the request was sent to).
    pub token_endpoint: &'a str,
    /// `{base}/oidc`: the emulator's OIDC issuer.
    pub issuer: &'a str,
    /// The registered federated credential's subject.
    pub federated_subject: &'a str,
    pub now: i64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Whether a JWT `aud` (a string or an array of strings) names `wanted`.
fn audience_has(aud: Option<&Value>, wanted: &str) -> bool {
    match aud {
        Some(Value::String(s)) => s == wanted,
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(wanted)),
        _ => false,
    }
}

fn aud_text(jwt: &Jwt) -> String {
    match jwt.claims.get("aud") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// `exp` in the past or `nbf` in the future, beyond the skew (a missing `exp` too:
/// Entra ID requires one).
fn check_time(jwt: &Jwt, now: i64) -> Result<(), AadError> {
    let exp = jwt.claim_time("exp");
    let nbf = jwt.claim_time("nbf");
    let live = exp.is_some_and(|e| e + SKEW_SECS > now) && nbf.is_none_or(|n| n - SKEW_SECS <= now);
    if live {
        return Ok(());
    }
    Err(AadError::invalid_client(
        700024,
        format!(
            "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {}, expiry time of assertion {}.",
            nbf.map_or("-".into(), |n| n.to_string()),
            exp.map_or("-".into(), |e| e.to_string())
        ),
    ))
}

fn signature_failed(reason: &str) -> AadError {
    AadError::invalid_client(
        700027,
        format!("Client assertion failed signature validation. [Reason - {reason}]"),
    )
}

/// A certificate-signed client assertion (`alg` RS256 or PS256, `x5t#S256` or `x5t`).
pub fn check_certificate(
    jwt: Option<&Jwt>,
    expect: &Expect<'_>,
    certificates: &[RegisteredCertificate],
) -> Result<(), AadError> {
    let Some(jwt) = jwt else {
        return Err(AadError::invalid_client(
            50027,
            "JWT token is invalid or malformed.",
        ));
    };
    if !matches!(jwt.header_str("alg"), Some("RS256" | "PS256")) {
        // Assumed text; Entra ID accepts only RSA signatures for app certificates.
        return Err(signature_failed(&format!(
            "The algorithm '{}' is not supported.",
            jwt.header_str("alg").unwrap_or("")
        )));
    }
    let (thumbprint, found) = if let Some(t) = jwt.header_str("x5t#S256") {
        let t = b64url_decode(t).unwrap_or_default();
        let found = certificates.iter().find(|c| c.sha256 == t);
        (t, found)
    } else if let Some(t) = jwt.header_str("x5t") {
        let t = b64url_decode(t).unwrap_or_default();
        let found = certificates.iter().find(|c| c.sha1 == t);
        (t, found)
    } else {
        (Vec::new(), None)
    };
    let Some(certificate) = found else {
        return Err(signature_failed(&format!(
            "The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.",
            hex(&thumbprint),
            expect.client_id
        )));
    };
    if certificate.not_after <= expect.now {
        return Err(signature_failed(&format!(
            "The key used is expired., Thumbprint of key used by client: '{}', Configured keys: [Key0:Start=..., End={}, Thumbprint={}]",
            hex(&thumbprint),
            chrono::DateTime::from_timestamp(certificate.not_after, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            hex(&thumbprint)
        )));
    }
    if !jwt.verifies_rsa(&certificate.rsa_public_key) {
        return Err(AadError::invalid_client(
            700027,
            "Client assertion failed signature validation. [Reason - Client assertion contains an invalid signature.]",
        ));
    }
    if jwt.claim_str("iss") != Some(expect.client_id)
        || jwt.claim_str("sub") != Some(expect.client_id)
    {
        // Code and text assumed: the assertion's issuer and subject must be the app.
        return Err(AadError::invalid_client(
            700021,
            format!(
                "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials . (iss '{}', sub '{}', client_id '{}')",
                jwt.claim_str("iss").unwrap_or(""),
                jwt.claim_str("sub").unwrap_or(""),
                expect.client_id
            ),
        ));
    }
    if !audience_has(jwt.claims.get("aud"), expect.token_endpoint) {
        // Code and text assumed (700212 is the federated audience code; the certificate
        // case's real code is unconfirmed).
        return Err(AadError::invalid_client(
            700212,
            format!(
                "Client assertion audience claim '{}' does not match the token endpoint '{}'.",
                aud_text(jwt),
                expect.token_endpoint
            ),
        ));
    }
    check_time(jwt, expect.now)
}

/// A federated token (workload identity) presented as the app's client assertion.
pub fn check_federated(
    jwt: &Jwt,
    expect: &Expect<'_>,
    issuer_public_key: &[u8],
) -> Result<(), AadError> {
    let iss = jwt.claim_str("iss").unwrap_or("");
    if iss != expect.issuer {
        return Err(AadError::invalid_client(
            700211,
            format!("No matching federated identity record found for presented assertion issuer '{iss}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
        ));
    }
    if jwt.header_str("alg") != Some("RS256") || !jwt.verifies_rsa(issuer_public_key) {
        // Code assumed (the certificate case's code; Entra ID checks the issuer's
        // published keys the same way).
        return Err(AadError::invalid_client(
            700027,
            "Client assertion failed signature validation. [Reason - Client assertion contains an invalid signature.]",
        ));
    }
    check_time(jwt, expect.now)?;
    let sub = jwt.claim_str("sub").unwrap_or("");
    if sub != expect.federated_subject {
        return Err(AadError::invalid_client(
            700213,
            format!("No matching federated identity record found for presented assertion subject '{sub}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"),
        ));
    }
    if !audience_has(jwt.claims.get("aud"), FEDERATED_AUDIENCE) {
        return Err(AadError::invalid_client(
            700212,
            format!("No matching federated identity record found for presented assertion audience '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", aud_text(jwt)),
        ));
    }
    Ok(())
}
