//! Azure clouds: where a tenant signs in, where its Graph and ARM live, and the token
//! audiences (`.default` scopes) derived from them. Pure data, no I/O.
//!
//! A token is issued for one resource, and each service accepts only its own cloud's:
//! a token for `https://graph.microsoft.com` is a 401 at `graph.microsoft.us`. So the
//! scopes are never hard-coded: they follow the cloud, and a URL that names another
//! cloud's service is a configuration error, not a silent 401 on every call.

use std::fmt;

/// The clouds rulebridge can sync in, and the one it cannot (named so that choosing it
/// is a clear error rather than an unknown value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Azure commercial (global).
    Public,
    /// Azure Government, GCC High (Microsoft 365 L4).
    UsGov,
    /// Azure Government, DoD (Microsoft 365 L5).
    UsGovDod,
    /// Azure operated by 21Vianet. The Graph security incidents API is not offered there
    /// (Graph national cloud deployments; the incidents API's cloud table).
    China,
}

/// The hosts and audiences of one cloud. Hosts carry their scheme, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    /// Entra ID's sign-in host: the token endpoint is `{authority_host}/{tenant}/oauth2/v2.0/token`.
    pub authority_host: String,
    /// Graph's resource identifier, also its host; the API base is `{graph}/v1.0`.
    pub graph_resource: String,
    /// ARM's resource identifier, also its host.
    pub arm_resource: String,
}

impl CloudEndpoints {
    /// The client-credentials scope of Graph in this cloud.
    pub fn graph_scope(&self) -> String {
        scope_of(&self.graph_resource)
    }

    /// The client-credentials scope of ARM in this cloud.
    pub fn arm_scope(&self) -> String {
        scope_of(&self.arm_resource)
    }

    /// `{authority_host}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!(
            "{}/{tenant}/oauth2/v2.0/token",
            self.authority_host.trim_end_matches('/')
        )
    }
}

/// `{resource}/.default`, the form the client-credentials flow asks for.
pub fn scope_of(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

/// A scope's resource: `https://graph.microsoft.com/.default` → `https://graph.microsoft.com`
/// (what managed-identity endpoints take).
pub fn resource_of(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

impl Cloud {
    pub const NAMES: [&'static str; 4] = ["public", "usgov", "usgov-dod", "china"];

    pub fn parse(name: &str) -> Option<Cloud> {
        match name {
            "public" => Some(Cloud::Public),
            "usgov" => Some(Cloud::UsGov),
            "usgov-dod" => Some(Cloud::UsGovDod),
            "china" => Some(Cloud::China),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cloud::Public => "public",
            Cloud::UsGov => "usgov",
            Cloud::UsGovDod => "usgov-dod",
            Cloud::China => "china",
        }
    }

    /// Whether Graph's security incidents API exists in this cloud.
    pub fn has_graph_incidents(self) -> bool {
        self != Cloud::China
    }

    pub fn endpoints(self) -> CloudEndpoints {
        let (authority, graph, arm) = match self {
            Cloud::Public => (
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
                "https://management.azure.com",
            ),
            Cloud::UsGov => (
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
                "https://management.usgovcloudapi.net",
            ),
            Cloud::UsGovDod => (
                "https://login.microsoftonline.us",
                "https://dod-graph.microsoft.us",
                "https://management.usgovcloudapi.net",
            ),
            Cloud::China => (
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
                "https://management.chinacloudapi.cn",
            ),
        };
        CloudEndpoints {
            authority_host: authority.into(),
            graph_resource: graph.into(),
            arm_resource: arm.into(),
        }
    }

    /// The cloud whose Graph is at `host` (a bare host name, any case), if it is one
    /// of the known Graph hosts.
    pub fn of_graph_host(host: &str) -> Option<Cloud> {
        let host = host.to_ascii_lowercase();
        Self::all()
            .into_iter()
            .find(|c| host_of(&c.endpoints().graph_resource).is_some_and(|h| h == host))
    }

    /// The cloud whose ARM is at `host`, if it is a known ARM host. `usgov` and
    /// `usgov-dod` share theirs, so this answers `usgov` for both; compare with
    /// [`Cloud::arm_host_matches`] instead.
    pub fn of_arm_host(host: &str) -> Option<Cloud> {
        let host = host.to_ascii_lowercase();
        Self::all().into_iter().find(|c| c.arm_host_matches(&host))
    }

    /// Whether `host` is this cloud's ARM host.
    pub fn arm_host_matches(self, host: &str) -> bool {
        host_of(&self.endpoints().arm_resource).is_some_and(|h| h.eq_ignore_ascii_case(host))
    }

    fn all() -> [Cloud; 4] {
        [Cloud::Public, Cloud::UsGov, Cloud::UsGovDod, Cloud::China]
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The host of an absolute `http(s)://host[:port]/...` URL, lowercased; `None` when
/// the text is not such a URL.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `scheme://host[:port]` of an absolute URL (its origin), for deriving a resource
/// identifier from an explicit host.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then(|| format!("{}://{}", scheme.to_ascii_lowercase(), authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cloud_has_its_own_scopes() {
        let cases = [
            (
                Cloud::Public,
                "https://graph.microsoft.com/.default",
                "https://management.azure.com/.default",
                "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            ),
            (
                Cloud::UsGov,
                "https://graph.microsoft.us/.default",
                "https://management.usgovcloudapi.net/.default",
                "https://login.microsoftonline.us/t/oauth2/v2.0/token",
            ),
            (
                Cloud::UsGovDod,
                "https://dod-graph.microsoft.us/.default",
                "https://management.usgovcloudapi.net/.default",
                "https://login.microsoftonline.us/t/oauth2/v2.0/token",
            ),
        ];
        for (cloud, graph, arm, token) in cases {
            let e = cloud.endpoints();
            assert_eq!(
                (e.graph_scope().as_str(), e.arm_scope().as_str()),
                (graph, arm)
            );
            assert_eq!(e.token_url("t"), token);
            assert_eq!(Cloud::parse(cloud.name()), Some(cloud));
        }
        assert!(!Cloud::China.has_graph_incidents());
        assert_eq!(Cloud::parse("azurechina"), None);
    }

    #[test]
    fn hosts_name_their_cloud() {
        assert_eq!(
            Cloud::of_graph_host("GRAPH.microsoft.us"),
            Some(Cloud::UsGov)
        );
        assert_eq!(
            Cloud::of_graph_host("dod-graph.microsoft.us"),
            Some(Cloud::UsGovDod)
        );
        assert_eq!(Cloud::of_graph_host("127.0.0.1"), None);
        assert_eq!(
            Cloud::of_arm_host("management.usgovcloudapi.net"),
            Some(Cloud::UsGov)
        );
        assert!(Cloud::UsGovDod.arm_host_matches("management.usgovcloudapi.net"));
        assert_eq!(
            host_of("https://graph.microsoft.us/v1.0"),
            Some("graph.microsoft.us".into())
        );
        assert_eq!(
            host_of("http://127.0.0.1:8943/v1.0?x"),
            Some("127.0.0.1".into())
        );
        assert_eq!(host_of("http://[::1]:80/"), Some("::1".into()));
        assert_eq!(host_of("graph.microsoft.com"), None);
        assert_eq!(
            origin_of("https://Graph.example:444/v1.0").as_deref(),
            Some("https://Graph.example:444")
        );
        assert_eq!(
            resource_of("https://graph.microsoft.us/.default"),
            "https://graph.microsoft.us"
        );
    }
}
