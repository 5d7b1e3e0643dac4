//! Signing in: every way an Azure workload gets a token, behind one [`TokenSource`] per
//! audience (Graph, ARM) that caches its token, refreshes it early, fetches it once for
//! all waiting callers, and retries a throttled or failing token endpoint.
//!
//! The ways ([`SignIn`]): client credentials at Entra ID's token endpoint proven by a
//! secret, by an assertion signed with a certificate, or by a federated token file
//! (Kubernetes workload identity, re-read at every fetch because the kubelet rotates it);
//! or a managed identity's local endpoint (IMDS, App Service). They are written here,
//! not taken from the `azure_identity` crate, because its certificate credential needs
//! OpenSSL (a system library; this project is pure Rust) and its endpoints cannot all be
//! pointed at the emulator (ARCHITECTURE.md).
//!
//! Edge module (reqwest, tokio). Invariant: no secret, assertion or token appears in an
//! error, a log line or a `Debug` output ([`Secret`] prints `***`).

pub mod certificate;
pub mod jwt;
pub mod managed;

pub use certificate::{CertificateError, ClientCertificate};
pub use managed::{ManagedEndpoint, ManagedIdentity};

use super::http::ClientError;
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A secret string that does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An app registration with a client secret (the simplest sign-in, kept for callers
/// that only have one).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
}

/// The four kinds of credential, as `[credentials] kind` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Secret,
    Certificate,
    WorkloadIdentity,
    ManagedIdentity,
}

impl CredentialKind {
    pub const NAMES: [&'static str; 4] = [
        "secret",
        "certificate",
        "workload_identity",
        "managed_identity",
    ];

    pub fn name(self) -> &'static str {
        match self {
            CredentialKind::Secret => "secret",
            CredentialKind::Certificate => "certificate",
            CredentialKind::WorkloadIdentity => "workload_identity",
            CredentialKind::ManagedIdentity => "managed_identity",
        }
    }

    pub fn parse(name: &str) -> Option<CredentialKind> {
        CredentialKind::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| {
                [
                    CredentialKind::Secret,
                    CredentialKind::Certificate,
                    CredentialKind::WorkloadIdentity,
                    CredentialKind::ManagedIdentity,
                ][i]
            })
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What proves an app registration's identity at the token endpoint.
#[derive(Debug)]
pub enum Proof {
    Secret(Secret),
    Certificate(Box<ClientCertificate>),
    /// A file holding a token from a trusted issuer (a Kubernetes service-account token),
    /// read again at every fetch.
    FederatedTokenFile(PathBuf),
}

/// How one audience's tokens are obtained.
#[derive(Debug, Clone)]
pub enum SignIn {
    /// Client credentials at Entra ID's token endpoint.
    App {
        token_url: String,
        client_id: String,
        proof: Arc<Proof>,
    },
    Managed(Arc<ManagedIdentity>),
}

impl SignIn {
    pub fn kind(&self) -> CredentialKind {
        match self {
            SignIn::App { proof, .. } => match **proof {
                Proof::Secret(_) => CredentialKind::Secret,
                Proof::Certificate(_) => CredentialKind::Certificate,
                Proof::FederatedTokenFile(_) => CredentialKind::WorkloadIdentity,
            },
            SignIn::Managed(_) => CredentialKind::ManagedIdentity,
        }
    }
}

/// How hard to try for a token. A token endpoint that throttles (429) or fails (5xx,
/// IMDS's 404/410 while an identity is being assigned) usually recovers in seconds; one
/// attempt would stall the whole sync until the next cycle.
#[derive(Debug, Clone)]
pub struct TokenRetry {
    pub max_attempts: u32,
    pub base_delay: Duration,
    /// A `Retry-After` longer than this is cut to it.
    pub max_delay: Duration,
    pub timeout: Duration,
}

impl Default for TokenRetry {
    fn default() -> Self {
        TokenRetry {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Issues bearer tokens for one scope, cached until shortly before they expire.
pub struct TokenSource {
    http: reqwest::Client,
    sign_in: SignIn,
    scope: String,
    retry: TokenRetry,
    /// Held across a fetch: concurrent callers wait for the one fetch (single flight).
    cache: Mutex<Option<(Secret, Instant)>>,
}

/// One failed fetch: the error to report, and whether and when to try again.
struct Failure {
    error: ClientError,
    retry: bool,
    retry_after: Option<Duration>,
}

impl TokenSource {
    /// Client credentials with a secret. `token_url` is
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token` for Microsoft, the
    /// emulator's in tests; `scope` e.g. `https://graph.microsoft.com/.default`.
    pub fn new(
        http: reqwest::Client,
        token_url: String,
        credentials: Credentials,
        scope: String,
    ) -> Self {
        let sign_in = SignIn::App {
            token_url,
            client_id: credentials.client_id,
            proof: Arc::new(Proof::Secret(credentials.client_secret)),
        };
        TokenSource::with_sign_in(http, sign_in, scope)
    }

    pub fn with_sign_in(http: reqwest::Client, sign_in: SignIn, scope: String) -> Self {
        TokenSource {
            http,
            sign_in,
            scope,
            retry: TokenRetry::default(),
            cache: Mutex::new(None),
        }
    }

    pub fn with_retry(mut self, retry: TokenRetry) -> Self {
        self.retry = retry;
        self
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn kind(&self) -> CredentialKind {
        self.sign_in.kind()
    }

    /// A valid token, fetching one when the cached one is missing or about to expire.
    pub async fn token(&self) -> Result<String, ClientError> {
        let mut cache = self.cache.lock().await;
        if let Some((token, refresh_at)) = &*cache {
            if Instant::now() < *refresh_at {
                return Ok(token.expose().to_string());
            }
        }
        let (token, lifetime) = self.fetch_with_retries().await?;
        // Refresh 5 minutes early, or at half-life for short-lived tokens.
        let margin = Duration::from_secs(300).min(lifetime / 2);
        *cache = Some((
            Secret::new(token.clone()),
            Instant::now() + lifetime - margin,
        ));
        Ok(token)
    }

    /// Forgets the cached token (after a 401).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch_with_retries(&self) -> Result<(String, Duration), ClientError> {
        let mut attempt = 1;
        loop {
            let failure = match self.fetch().await {
                Ok(token) => return Ok(token),
                Err(failure) => failure,
            };
            if !failure.retry || attempt >= self.retry.max_attempts {
                return Err(failure.error);
            }
            let delay = failure
                .retry_after
                .unwrap_or_else(|| backoff(self.retry.base_delay, attempt))
                .min(self.retry.max_delay);
            tracing::warn!(
                scope = %self.scope,
                attempt,
                ?delay,
                "token request failed, retrying: {}",
                failure.error
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn fetch(&self) -> Result<(String, Duration), Failure> {
        let (request, endpoint) = match &self.sign_in {
            SignIn::App {
                token_url,
                client_id,
                proof,
            } => {
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", "client_credentials".into()),
                    ("client_id", client_id.clone()),
                    ("scope", self.scope.clone()),
                ];
                match &**proof {
                    Proof::Secret(secret) => {
                        form.push(("client_secret", secret.expose().to_string()))
                    }
                    Proof::Certificate(certificate) => {
                        let now = chrono::Utc::now().timestamp();
                        form.push(("client_assertion_type", JWT_BEARER.into()));
                        form.push((
                            "client_assertion",
                            certificate.client_assertion(client_id, token_url, now),
                        ));
                    }
                    Proof::FederatedTokenFile(path) => {
                        form.push(("client_assertion_type", JWT_BEARER.into()));
                        form.push(("client_assertion", read_federated_token(path)?));
                    }
                }
                (self.http.post(token_url).form(&form), "token endpoint")
            }
            SignIn::Managed(identity) => (
                identity.request(&self.http, super::cloud::resource_of(&self.scope)),
                "managed identity endpoint",
            ),
        };
        let response = request
            .timeout(self.retry.timeout)
            .send()
            .await
            .map_err(|e| Failure {
                error: auth_error(
                    "unreachable",
                    format!(
                        "{endpoint}: {}",
                        if e.is_timeout() {
                            "timed out"
                        } else {
                            "request failed"
                        }
                    ),
                ),
                retry: true,
                retry_after: None,
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(super::http::parse_retry_after);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let error = body["error"].as_str().unwrap_or("http_error");
            let description = body["error_description"]
                .as_str()
                .or_else(|| body["message"].as_str())
                .or_else(|| body["Message"].as_str())
                .map_or_else(
                    || format!("{endpoint}: HTTP {status}"),
                    |d| format!("{d} (HTTP {status})"),
                );
            // IMDS answers 404 while an identity is still being assigned and 410 while
            // it updates; Microsoft's guidance is to retry both.
            let managed = matches!(self.sign_in, SignIn::Managed(_));
            let retry = status == 429
                || status >= 500
                || status == 408
                || (managed && matches!(status, 404 | 410));
            return Err(Failure {
                error: auth_error(error, description),
                retry,
                retry_after,
            });
        }
        let invalid = |message: &str| Failure {
            error: auth_error("invalid_response", format!("{endpoint}: {message}")),
            retry: false,
            retry_after: None,
        };
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| invalid("no access_token in the response"))?;
        let lifetime = match &self.sign_in {
            SignIn::App { .. } => body["expires_in"].as_u64().unwrap_or(3599).max(1),
            SignIn::Managed(_) => managed::lifetime(&body, chrono::Utc::now().timestamp())
                .ok_or_else(|| invalid("no usable expires_in or expires_on in the response"))?
                .as_secs()
                .max(1),
        };
        Ok((token.to_string(), Duration::from_secs(lifetime)))
    }
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn auth_error(error: &str, description: String) -> ClientError {
    ClientError::Auth {
        error: error.into(),
        description,
    }
}

/// The federated token, read now: the kubelet rewrites the file before the token in it
/// expires, so a copy kept from the start would be refused within the hour.
fn read_federated_token(path: &std::path::Path) -> Result<String, Failure> {
    let fail = |description: String| Failure {
        error: auth_error("federated_token_file", description),
        // A file being swapped (the kubelet writes it by rename) can be missing for an
        // instant.
        retry: true,
        retry_after: None,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "cannot read the federated token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(format!(
            "the federated token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// Exponential backoff with jitter: uniform in [d/2, d] for d = base·2^(attempt-1).
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << (attempt - 1).min(10));
    let mut byte = [0u8; 1];
    let unit = match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0,
        Err(_) => 1.0,
    };
    ceiling.mul_f64(0.5 + unit / 2.0)
}
