//! The HTTP clients rulebridge uses: Microsoft Graph security incidents and Microsoft
//! Sentinel incidents, signed in by [`identity`] in any [`cloud`]. Base URLs are configuration, so
//! the same code talks to the emulator or to Microsoft.
//!
//! Edge module (reqwest, tokio). Invariant: no token or secret appears in an error,
//! a log line or a `Debug` output.

pub mod budget;
pub mod cloud;
pub mod graph;
pub mod http;
pub mod identity;
pub mod limiter;
pub mod sentinel;

pub use budget::{with_purpose, Purpose};
pub use cloud::{Cloud, CloudEndpoints};
pub use graph::GraphClient;
pub use http::{Api, ClientError, Page, Pages, RetryPolicy};
pub use identity::{
    ClientCertificate, CredentialKind, Credentials, ManagedEndpoint, ManagedIdentity, Proof,
    Secret, SignIn, TokenRetry, TokenSource,
};
pub use limiter::RateLimiter;
pub use sentinel::SentinelClient;

/// Scopes of the two APIs in the public cloud (client-credentials flow); other clouds
/// derive theirs from [`CloudEndpoints`].
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// Rate limits that keep one tenant under the documented ceilings. Graph documents
/// 150 requests/min per app per tenant for `/security` alerts; no row names incidents,
/// so the same (stricter) figure is used. ARM refills writes at 10/s per principal.
pub fn graph_rate_limiter() -> RateLimiter {
    RateLimiter::new(150.0 / 60.0, 10)
}

pub fn sentinel_rate_limiter() -> RateLimiter {
    RateLimiter::new(10.0, 50)
}
