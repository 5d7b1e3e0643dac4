//! Which Azure cloud the emulator plays, and which resources its token endpoint and its
//! managed-identity endpoints issue tokens for. Entra ID in one cloud knows only that
//! cloud's resource principals: a token for GCC High's Graph asked from the public
//! cloud's sign-in host is `AADSTS500011` (resource principal not found), which is the
//! mistake issue 11 is about (a hard-coded `graph.microsoft.com` scope against a
//! government tenant). Invariant: every token the emulator issues is for a resource of
//! its own cloud; the Graph application id URI form is Graph in every cloud.

use crate::emulator::store::Audience;
use serde::{Deserialize, Serialize};

/// The Graph application's id: a resource name Entra ID knows in every cloud.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// The clouds the emulator can play (`--cloud`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Cloud {
    /// Azure public cloud (the default).
    #[default]
    #[serde(rename = "public")]
    Public,
    /// Azure Government (GCC High's Graph).
    #[serde(rename = "usgov")]
    UsGov,
    /// Azure Government, Department of Defense.
    #[serde(rename = "usgov-dod")]
    UsGovDod,
}

/// Why a requested resource gets no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceError {
    /// A resource of a cloud Entra ID knows, but not this one: `AADSTS500011`.
    OtherCloud(String),
    /// Nothing Entra ID knows anywhere (the token endpoint: `invalid_scope` 70011).
    Unknown(String),
}

/// Graph and ARM resource names of clouds the emulator does not play, so a request for
/// them is "another cloud's resource" (500011) rather than an unknown scope.
const FOREIGN: &[&str] = &[
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    "https://management.azure.com",
    "https://management.core.windows.net",
    "https://management.usgovcloudapi.net",
    "https://management.core.usgovcloudapi.net",
    "https://management.chinacloudapi.cn",
    "https://management.core.chinacloudapi.cn",
];

impl Cloud {
    /// This cloud's Graph resource (no trailing slash).
    pub fn graph_resource(self) -> &'static str {
        match self {
            Cloud::Public => "https://graph.microsoft.com",
            Cloud::UsGov => "https://graph.microsoft.us",
            Cloud::UsGovDod => "https://dod-graph.microsoft.us",
        }
    }

    /// This cloud's ARM resource (no trailing slash).
    pub fn arm_resource(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com",
            Cloud::UsGov | Cloud::UsGovDod => "https://management.usgovcloudapi.net",
        }
    }

    /// The older ARM resource name this cloud also accepts (`management.core…`).
    /// DoD shares Azure Government's ARM; the contract lists no legacy name for it, so
    /// the stricter reading is none.
    fn arm_legacy(self) -> Option<&'static str> {
        match self {
            Cloud::Public => Some("https://management.core.windows.net"),
            Cloud::UsGov => Some("https://management.core.usgovcloudapi.net"),
            Cloud::UsGovDod => None,
        }
    }

    /// The audience of `resource` (a resource name without `/.default`; a trailing
    /// slash and letter case do not matter, as Entra ID resolves them).
    pub fn resolve(self, resource: &str) -> Result<Audience, ResourceError> {
        let wanted = resource.trim_end_matches('/').to_ascii_lowercase();
        if wanted == GRAPH_APP_ID || wanted == self.graph_resource() {
            return Ok(Audience::Graph);
        }
        if wanted == self.arm_resource() || Some(wanted.as_str()) == self.arm_legacy() {
            return Ok(Audience::Arm);
        }
        if FOREIGN.contains(&wanted.as_str()) {
            Err(ResourceError::OtherCloud(resource.to_string()))
        } else {
            Err(ResourceError::Unknown(resource.to_string()))
        }
    }

    /// The audience of a client-credentials `scope` (its first `…/.default` item) and
    /// the resource as requested (the token's `aud`).
    pub fn resolve_scope(self, scope: &str) -> Result<(Audience, String), ResourceError> {
        let resource = scope
            .split_whitespace()
            .find_map(|s| s.strip_suffix("/.default"))
            .ok_or_else(|| ResourceError::Unknown(scope.to_string()))?;
        let audience = self.resolve(resource)?;
        Ok((audience, resource.to_string()))
    }
}

impl std::str::FromStr for Cloud {
    type Err = String;
    fn from_str(s: &str) -> Result<Cloud, String> {
        match s.to_ascii_lowercase().as_str() {
            "public" => Ok(Cloud::Public),
            "usgov" => Ok(Cloud::UsGov),
            "usgov-dod" => Ok(Cloud::UsGovDod),
            other => Err(format!(
                "unknown cloud '{other}' (public, usgov, usgov-dod)"
            )),
        }
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cloud::Public => "public",
            Cloud::UsGov => "usgov",
            Cloud::UsGovDod => "usgov-dod",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cloud_issues_for_its_own_resources_only() {
        let gov = Cloud::UsGov;
        assert_eq!(
            gov.resolve("https://graph.microsoft.us/"),
            Ok(Audience::Graph)
        );
        assert_eq!(gov.resolve(GRAPH_APP_ID), Ok(Audience::Graph));
        assert_eq!(
            gov.resolve("https://management.core.usgovcloudapi.net/"),
            Ok(Audience::Arm)
        );
        assert!(matches!(
            gov.resolve("https://graph.microsoft.com"),
            Err(ResourceError::OtherCloud(_))
        ));
        assert!(matches!(
            Cloud::UsGovDod.resolve("https://graph.microsoft.us"),
            Err(ResourceError::OtherCloud(_))
        ));
        assert_eq!(
            Cloud::Public.resolve_scope("https://management.azure.com/.default"),
            Ok((Audience::Arm, "https://management.azure.com".into()))
        );
        assert!(matches!(
            Cloud::Public.resolve_scope("https://example.com/.default"),
            Err(ResourceError::Unknown(_))
        ));
        assert!(matches!(
            Cloud::Public.resolve_scope("https://graph.microsoft.com"),
            Err(ResourceError::Unknown(_))
        ));
        assert_eq!("usgov-dod".parse::<Cloud>(), Ok(Cloud::UsGovDod));
    }
}
