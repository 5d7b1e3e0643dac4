//! Which of the two services' faces the emulator shows. `Observed` (the default) is how
//! Microsoft's services are seen to behave on real tenants
//! (`../shared/reference/observed-behaviour.md`): Graph ignores `$orderby` and pages by
//! offsets over the live set, `$expand` + `$filter` fails on large tenants, newer enum
//! members hide behind `Prefer`, ARM lowercases names, returns owners of nulls and 7-digit
//! stamps, pages 50 at a time and throttles with token buckets. `Strict` is the tidy
//! reading of the docs (ordered lists, snapshot paging, no throttling) that tests may ask
//! for when they check something else.
//!
//! What both profiles share: every write rule (required fields, closing rules, etags,
//! lengths in UTF-16 units, 100 comments per incident), token audiences, gzip, and the
//! seeding knobs (`sentinel_incidents_in_graph`, `connector_incidents`), which shape
//! data rather than protocol.

use super::throttle::ThrottleConfig;
use serde::{Deserialize, Serialize};

/// The emulator's behaviour as a whole; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// As the services are observed to behave (the default).
    #[default]
    Observed,
    /// The tidy reading of the documentation.
    Strict,
}

impl Profile {
    pub fn is_observed(self) -> bool {
        self == Profile::Observed
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        match s.to_ascii_lowercase().as_str() {
            "observed" => Ok(Profile::Observed),
            "strict" => Ok(Profile::Strict),
            other => Err(format!("unknown profile '{other}' (observed, strict)")),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Observed => "observed",
            Profile::Strict => "strict",
        })
    }
}

/// The knobs of the observed behaviour. Protocol knobs (paging, throttling, the
/// expand failure) apply in the `Observed` profile only; the seeding rates in both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observed {
    /// Graph answers `$expand=alerts` together with `$filter` with a 500 when the tenant
    /// holds more incidents than this (elastic/integrations#18144 saw it on every
    /// request of a ~45k-user tenant; the threshold itself is unknown). `None` or 0:
    /// never.
    pub graph_expand_filter_limit: Option<usize>,
    /// Share (0–1) of seeded Graph incidents that came from Sentinel, as the unified
    /// portal lists them: alerts with `serviceSource`/`detectionSource`
    /// `microsoftSentinel`; the workspace holds them too (as `Microsoft XDR`).
    pub sentinel_incidents_in_graph: f64,
    /// Share (0–1) of seeded Graph incidents that Microsoft's Defender XDR connector has
    /// already copied to Sentinel (`providerName` "Microsoft XDR").
    pub connector_incidents: f64,
    /// Comments per page of a Sentinel comments list. The real size is unknown; smaller
    /// is stricter (a client reading only the first page loses more).
    pub sentinel_comments_page: usize,
    /// Token buckets of ARM and Graph (429 + `Retry-After` when empty).
    pub throttle: ThrottleConfig,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            graph_expand_filter_limit: Some(1000),
            sentinel_incidents_in_graph: 0.0,
            connector_incidents: 0.0,
            sentinel_comments_page: 20,
            throttle: ThrottleConfig::default(),
        }
    }
}

impl Observed {
    /// Whether `$expand` + `$filter` fails on a tenant of `incidents` incidents.
    pub fn expand_filter_fails(&self, incidents: usize) -> bool {
        self.graph_expand_filter_limit
            .is_some_and(|limit| limit > 0 && incidents > limit)
    }
}
