//! OAuth2 client credentials (Entra ID v2 token endpoint) with a token cache that
//! refreshes before expiry. Secrets come from the environment or a file, are held in
//! [`Secret`] (whose `Debug`/`Display` print `***`) and never reach logs or errors.

use super::http::ClientError;
use serde_json::Value;
use std::fmt;
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

/// Who rulebridge is, to Entra ID.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
}

impl Credentials {
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` (or
    /// `AZURE_CLIENT_SECRET_FILE`, a file holding the secret, as Kubernetes mounts it).
    pub fn from_env() -> Result<Credentials, String> {
        let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        let client_secret = match std::env::var("AZURE_CLIENT_SECRET") {
            Ok(secret) => secret,
            Err(_) => {
                let path = var("AZURE_CLIENT_SECRET_FILE").map_err(|_| {
                    "neither AZURE_CLIENT_SECRET nor AZURE_CLIENT_SECRET_FILE is set".to_string()
                })?;
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read AZURE_CLIENT_SECRET_FILE {path}: {e}"))?
                    .trim()
                    .to_string()
            }
        };
        Ok(Credentials {
            tenant_id: var("AZURE_TENANT_ID")?,
            client_id: var("AZURE_CLIENT_ID")?,
            client_secret: Secret::new(client_secret),
        })
    }
}

/// Issues bearer tokens for one scope, cached until shortly before they expire.
pub struct TokenSource {
    http: reqwest::Client,
    token_url: String,
    credentials: Credentials,
    scope: String,
    cache: Mutex<Option<(Secret, Instant)>>,
}

impl TokenSource {
    /// `token_url` is `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token` for
    /// Microsoft, the emulator's for tests; `scope` e.g. `https://graph.microsoft.com/.default`.
    pub fn new(
        http: reqwest::Client,
        token_url: String,
        credentials: Credentials,
        scope: String,
    ) -> Self {
        TokenSource {
            http,
            token_url,
            credentials,
            scope,
            cache: Mutex::new(None),
        }
    }

    /// A valid token, fetching one when the cached one is missing or about to expire.
    pub async fn token(&self) -> Result<String, ClientError> {
        let mut cache = self.cache.lock().await;
        if let Some((token, refresh_at)) = &*cache {
            if Instant::now() < *refresh_at {
                return Ok(token.expose().to_string());
            }
        }
        let (token, lifetime) = self.fetch().await?;
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

    async fn fetch(&self) -> Result<(String, Duration), ClientError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.client_secret.expose()),
            ("scope", self.scope.as_str()),
        ];
        let failed = |error: &str, description: String| ClientError::Auth {
            error: error.into(),
            description,
        };
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                failed(
                    "unreachable",
                    format!(
                        "token endpoint: {}",
                        if e.is_timeout() {
                            "timed out"
                        } else {
                            "request failed"
                        }
                    ),
                )
            })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("http_error");
            let description = body["error_description"]
                .as_str()
                .map_or_else(|| format!("HTTP {status}"), str::to_string);
            return Err(failed(error, description));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| failed("invalid_response", "no access_token in the response".into()))?;
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3599).max(1));
        Ok((token.to_string(), lifetime))
    }
}
