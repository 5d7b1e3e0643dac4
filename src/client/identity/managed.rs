//! Managed identity: the token comes from a local endpoint of the Azure host, not from
//! Entra ID, and no secret is stored anywhere. Two endpoints exist:
//!
//! - **IMDS** (VMs, VM scale sets, AKS node identities): `GET
//!   http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=R`
//!   with `Metadata: true`. `AZURE_POD_IDENTITY_AUTHORITY_HOST` moves it, as the Azure
//!   SDKs let it be moved.
//! - **App Service, Functions, Container Apps**: `GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=R`
//!   with `X-IDENTITY-HEADER: $IDENTITY_HEADER` (the header value is a secret).
//!
//! Both take a resource (no `/.default`), an optional `client_id` for a user-assigned
//! identity, and answer numbers as strings (`"expires_in": "86399"`).

use super::Secret;
use std::time::Duration;

/// Where a managed identity's tokens come from.
#[derive(Debug, Clone)]
pub enum ManagedEndpoint {
    Imds { url: String },
    AppService { url: String, header: Secret },
}

pub const IMDS_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
pub const IMDS_PATH: &str = "/metadata/identity/oauth2/token";

#[derive(Debug, Clone)]
pub struct ManagedIdentity {
    pub endpoint: ManagedEndpoint,
    /// A user-assigned identity's client id; `None`: the system-assigned identity.
    pub client_id: Option<String>,
}

impl ManagedIdentity {
    /// The request for a token of `resource`.
    pub(super) fn request(
        &self,
        http: &reqwest::Client,
        resource: &str,
    ) -> reqwest::RequestBuilder {
        let mut query: Vec<(&str, &str)> = vec![("resource", resource)];
        if let Some(id) = &self.client_id {
            query.push(("client_id", id));
        }
        match &self.endpoint {
            ManagedEndpoint::Imds { url } => http
                .get(url)
                .query(&[("api-version", "2018-02-01")])
                .query(&query)
                .header("Metadata", "true"),
            ManagedEndpoint::AppService { url, header } => http
                .get(url)
                .query(&[("api-version", "2019-08-01")])
                .query(&query)
                .header("X-IDENTITY-HEADER", header.expose()),
        }
    }

    pub fn describe(&self) -> String {
        let who = match &self.client_id {
            Some(id) => format!("user-assigned identity {id}"),
            None => "system-assigned identity".into(),
        };
        match &self.endpoint {
            ManagedEndpoint::Imds { url } => format!("managed identity ({who}) from IMDS at {url}"),
            ManagedEndpoint::AppService { url, .. } => {
                format!("managed identity ({who}) from IDENTITY_ENDPOINT {url}")
            }
        }
    }
}

/// How long a token from a managed-identity endpoint lives: `expires_in`, else
/// `expires_on` (Unix seconds) less `now`; either may be a number or a string.
pub(super) fn lifetime(body: &serde_json::Value, now: i64) -> Option<Duration> {
    let number = |v: &serde_json::Value| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse::<i64>().ok()))
    };
    let seconds =
        number(&body["expires_in"]).or_else(|| number(&body["expires_on"]).map(|on| on - now))?;
    (seconds > 0).then(|| Duration::from_secs(seconds as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lifetimes_are_read_from_strings_or_numbers() {
        assert_eq!(
            lifetime(&json!({"expires_in": "86399"}), 0),
            Some(Duration::from_secs(86399))
        );
        assert_eq!(
            lifetime(&json!({"expires_in": 3599}), 0),
            Some(Duration::from_secs(3599))
        );
        assert_eq!(
            lifetime(&json!({"expires_on": "1700003600"}), 1_700_000_000),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(lifetime(&json!({"expires_on": "1"}), 1_700_000_000), None);
        assert_eq!(lifetime(&json!({}), 0), None);
    }
}
