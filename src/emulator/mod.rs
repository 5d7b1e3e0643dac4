//! A local emulator of the two APIs rulebridge talks to — the Microsoft Graph security
//! incidents API and the Microsoft Sentinel incidents API — with their token endpoint
//! and managed-identity endpoints, so that `demo`, the integration tests and the
//! benchmarks run against real HTTP on 127.0.0.1 without a Microsoft tenant. Sign-in is
//! checked as Entra ID, Graph and ARM check it (secrets, certificates, federated
//! tokens, managed identities, clouds, roles, RBAC; see [`identity`]). Behaviour follows
//! `../shared/reference/microsoft-apis.md` and, by default, what the services are
//! observed to do beyond it (`../shared/reference/observed-behaviour.md`; see
//! [`Profile`]); where both are unsure, the emulator is stricter than the service and
//! says so where it decides.
//!
//! Edge module: uses tokio and axum; nothing in the pure core depends on it.

pub mod alerts;
pub mod analysts;
pub mod arm;
pub mod connector;
pub mod evolvable;
pub mod faults;
pub mod graph;
pub mod identity;
pub mod paging;
pub mod profile;
pub mod rng;
pub mod seed;
pub mod sentinel;
pub mod sentinel_query;
pub mod server;
pub mod store;
pub mod throttle;

pub use identity::Cloud;
pub use profile::{Observed, Profile};
pub use server::{Emulator, EmulatorConfig, EmulatorInfo};
pub use store::{ApiError, Audience, Store};
