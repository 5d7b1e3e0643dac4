//! Who may sign in to the emulator and how, as Entra ID decides it: the emulated app
//! registration (client id, its secret, its certificates, its federated identity
//! credential), the managed identities of the machine the client "runs on", the cloud,
//! and the JWT-shaped access tokens issued to all of them. The HTTP routes live in
//! `server::auth` (token endpoint) and `server::identity_routes` (managed identity,
//! federated-token issuer, ARM permissions); this module is their plain-function core.
//!
//! - `cloud`: which resources this cloud issues tokens for (`AADSTS500011` otherwise).
//! - `certs`: the committed TEST certificates, their thumbprints and public keys, and
//!   the temporary folder they are written to.
//! - `jwt`: making (HS256, RS256) and reading (RS256, PS256) compact JWTs.
//! - `assertion`: the checks of a client assertion (certificate) and of a federated
//!   token (workload identity), each failure the AADSTS code Entra ID answers.
//! - `rbac`: Graph roles and ARM actions.
//!
//! Invariants: a token is issued only after the credential passed every check; an
//! access token names the principal it was issued to (`appid`, `oid`) and carries Graph
//! roles only when its audience is Graph; keys are test keys and no secret is logged.

pub mod assertion;
pub mod certs;
pub mod cloud;
pub mod jwt;
pub mod rbac;

pub use cloud::Cloud;

use certs::{pem_blocks, RegisteredCertificate, TEST_CLIENT_PEM, TEST_EXPIRED_PEM};
use ring::rand::SecureRandom;
use ring::signature::{KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The default subject of the federated identity credential (and of the tokens
/// `/_emulator/federated-token` issues): a Kubernetes service account's, as AKS
/// workload identity presents it.
pub const DEFAULT_FEDERATED_SUBJECT: &str = "system:serviceaccount:rulebridge:rulebridge";
/// The audience Entra ID requires of a federated token.
pub const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";
/// `client_assertion_type` of both certificate and federated assertions.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A token endpoint failure as Entra ID answers it: status, `error`, and the AADSTS
/// code that starts `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AadError {
    pub status: u16,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

impl AadError {
    /// `description` without its `AADSTSnnnn: ` prefix, which is added here.
    pub fn new(status: u16, error: &'static str, code: u32, description: impl AsRef<str>) -> Self {
        AadError {
            status,
            error,
            code,
            description: format!("AADSTS{code}: {}", description.as_ref()),
        }
    }

    /// 401 `invalid_client`: what every rejected credential gets.
    pub fn invalid_client(code: u32, description: impl AsRef<str>) -> Self {
        Self::new(401, "invalid_client", code, description)
    }
}

/// How a token request proves who it is (the request log's `grant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Secret,
    Certificate,
    Federated,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Secret => "secret",
            Grant::Certificate => "certificate",
            Grant::Federated => "federated",
        }
    }
}

/// The credential of a token request's form and, for an assertion, its `jti`. A
/// certificate assertion is self-issued (`iss` = the client id) or names a certificate
/// (`x5t#S256`/`x5t`); any other assertion is a federated token. `None`: no credential.
pub fn classify(form: &HashMap<String, String>) -> Option<(Grant, Option<jwt::Jwt>)> {
    if let Some(assertion) = form.get("client_assertion") {
        let parsed = jwt::Jwt::parse(assertion);
        let grant = match &parsed {
            Some(j)
                if j.claim_str("iss") == form.get("client_id").map(String::as_str)
                    || j.header.get("x5t#S256").is_some()
                    || j.header.get("x5t").is_some() =>
            {
                Grant::Certificate
            }
            Some(_) => Grant::Federated,
            // Unreadable: judged as a certificate assertion (it fails there).
            None => Grant::Certificate,
        };
        return Some((grant, parsed));
    }
    form.contains_key("client_secret")
        .then_some((Grant::Secret, None))
}

/// A signed-in principal: an app or a managed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: String,
    pub object_id: String,
}

impl Principal {
    /// The principal of `client_id`, with a stable object id derived from it (the same
    /// across emulator starts, different per principal).
    pub fn of(client_id: &str) -> Principal {
        const NAMESPACE: uuid::Uuid =
            uuid::Uuid::from_u128(0x6f1d_3c2e_9a4b_4e8f_b7c1_2d5e_8a9f_0b3c);
        Principal {
            client_id: client_id.to_string(),
            object_id: uuid::Uuid::new_v5(&NAMESPACE, client_id.as_bytes()).to_string(),
        }
    }
}

/// The emulator's identity keys and registrations.
pub struct Identity {
    token_key: ring::hmac::Key,
    issuer_key: RsaKeyPair,
    /// Every certificate registered on the app (the test ones and `--client-certificate`s).
    pub certificates: Vec<RegisteredCertificate>,
    /// The App Service `IDENTITY_HEADER` secret: random per emulator.
    pub identity_header: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Registers the test certificates plus `extra` PEM certificates' bytes.
    pub fn new(extra: &[Vec<u8>]) -> Result<Identity, String> {
        let rng = ring::rand::SystemRandom::new();
        let mut secret = [0u8; 32];
        rng.fill(&mut secret).map_err(|_| "no system randomness")?;
        let mut header = [0u8; 16];
        rng.fill(&mut header).map_err(|_| "no system randomness")?;
        let issuer_der = pem_blocks(certs::TEST_OIDC_ISSUER_KEY_PEM, "PRIVATE KEY");
        let issuer_key = RsaKeyPair::from_pkcs8(issuer_der.first().ok_or("no issuer key")?)
            .map_err(|e| format!("the test issuer key: {e}"))?;
        let mut certificates = RegisteredCertificate::all_from_pem(TEST_CLIENT_PEM)?;
        certificates.extend(RegisteredCertificate::all_from_pem(TEST_EXPIRED_PEM)?);
        for pem in extra {
            certificates.extend(RegisteredCertificate::all_from_pem(pem)?);
        }
        Ok(Identity {
            token_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            issuer_key,
            certificates,
            identity_header: header.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// The DER `RSAPublicKey` of the OIDC issuer (what federated tokens verify under).
    pub fn issuer_public_key(&self) -> &[u8] {
        self.issuer_key.public_key().as_ref()
    }

    /// An access token with these claims (HS256 under this emulator's key).
    pub fn sign_access_token(&self, claims: &Value) -> String {
        jwt::sign_hs256(&self.token_key, claims)
    }

    /// A service-account-like federated token from `issuer` (RS256, the issuer key).
    pub fn federated_token(
        &self,
        issuer: &str,
        subject: &str,
        audience: &str,
        lifetime_secs: i64,
        jti: &str,
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": issuer, "sub": subject, "aud": [audience],
            "iat": now, "nbf": now, "exp": now + lifetime_secs, "jti": jti,
        });
        jwt::sign_rs256(
            &self.issuer_key,
            json!({ "typ": "JWT", "kid": "rulebridge-emulator-test-issuer" }),
            &claims,
        )
    }
}

/// Access-token claims (Entra ID v1 shape, which both APIs accept): `roles` only on
/// Graph tokens and only when there are some (no consent: no claim).
pub fn access_token_claims(
    tenant: &str,
    principal: &Principal,
    aud: &str,
    roles: Option<&[String]>,
    lifetime_secs: i64,
    uti: &str,
) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "tid": tenant,
        "appid": principal.client_id,
        "oid": principal.object_id,
        "sub": principal.object_id,
        "idtyp": "app",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_secs,
        // Unique per token, so two tokens issued in the same second differ.
        "uti": uti,
        "ver": "1.0",
    });
    if let Some(roles) = roles.filter(|r| !r.is_empty()) {
        claims["roles"] = json!(roles);
    }
    claims
}
