//! The checks that ask the services: a token per audience, Graph read and the write
//! role, the Sentinel workspace and its allowed actions, Microsoft's connector. Plain
//! GETs only; the `Date` of every answer is kept for the clock check.

use super::{token_failure, DoctorOptions, Report};
use crate::client::identity::jwt::unverified_claims;
use crate::client::sentinel::CONNECTOR_PROVIDERS;
use crate::client::{ClientError, TokenSource};
use crate::config::{Config, Env};
use serde_json::Value;

/// The Graph role that lets rulebridge write to Defender.
const GRAPH_WRITE_ROLE: &str = "SecurityIncident.ReadWrite.All";
const GRAPH_READ_ROLES: [&str; 2] = ["SecurityIncident.Read.All", GRAPH_WRITE_ROLE];
/// What syncing does on the Sentinel workspace.
const SENTINEL_ACTIONS: [&str; 4] = [
    "Microsoft.SecurityInsights/incidents/read",
    "Microsoft.SecurityInsights/incidents/write",
    "Microsoft.SecurityInsights/incidents/comments/read",
    "Microsoft.SecurityInsights/incidents/comments/write",
];
const SENTINEL_ROLE_FIX: &str = "assign the \"Microsoft Sentinel Responder\" role (or Contributor) to rulebridge's identity on the workspace or its resource group";

/// What the service checks learnt that later checks use.
pub(super) struct Services {
    /// `Date` headers of the services' answers, against the local clock when read.
    pub(super) dates: Vec<(
        &'static str,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )>,
}

impl Services {
    pub(super) async fn check(
        report: &mut Report,
        config: &Config,
        env: &dyn Env,
        options: &DoctorOptions,
    ) -> Services {
        let mut services = Services { dates: Vec::new() };
        let identity = match config.identity_in(env) {
            Ok(identity) => identity,
            Err(e) => {
                report.fail(
                    "credential",
                    e.to_string(),
                    "supply the credential named above (README: Running against Microsoft)",
                );
                for check in [
                    "graph token",
                    "arm token",
                    "graph read",
                    "graph write",
                    "sentinel workspace",
                    "sentinel permissions",
                    "sentinel read",
                    "connector",
                ] {
                    report.skip(check, "no credential");
                }
                return services;
            }
        };
        let mut detail = format!(
            "{} ({}): {}",
            identity.kind, identity.chosen, identity.source
        );
        let expiry = identity.certificate().map(|c| c.not_after);
        let now = chrono::Utc::now().timestamp();
        match expiry {
            Some(not_after) if not_after < now => report.fail(
                "credential",
                format!("{detail}: the certificate has expired"),
                "create a new certificate, upload its public part to the app registration and point certificate_path at it",
            ),
            Some(not_after) => {
                let days = (not_after - now) / 86_400;
                if days < 30 {
                    detail.push_str(&format!("; it expires in {days} days: renew it soon"));
                }
                report.pass("credential", detail);
            }
            None => report.pass("credential", detail),
        }
        let http = match reqwest::Client::builder()
            .user_agent(concat!("rulebridge-doctor/", env!("CARGO_PKG_VERSION")))
            .timeout(options.timeout)
            .build()
        {
            Ok(http) => http,
            Err(e) => {
                report.fail(
                    "graph token",
                    format!("no HTTP client: {e}"),
                    "report this as a bug",
                );
                return services;
            }
        };
        let endpoints = config.endpoints(env);
        let source = |sign_in, scope| {
            TokenSource::with_sign_in(http.clone(), sign_in, scope)
                .with_retry(options.token_retry.clone())
        };
        let graph_token = token(
            report,
            "graph token",
            &source(identity.graph, endpoints.graph_scope()),
        )
        .await;
        let arm_token = token(
            report,
            "arm token",
            &source(identity.arm, endpoints.arm_scope()),
        )
        .await;

        match &graph_token {
            Some(token) => services.graph(report, &http, config, token).await,
            None => {
                report.skip("graph read", "no Graph token");
                report.skip("graph write", "no Graph token");
            }
        }
        match &arm_token {
            Some(token) => services.sentinel(report, &http, config, token).await,
            None => {
                for check in [
                    "sentinel workspace",
                    "sentinel permissions",
                    "sentinel read",
                    "connector",
                ] {
                    report.skip(check, "no ARM token");
                }
            }
        }
        services
    }

    async fn get(
        &mut self,
        http: &reqwest::Client,
        service: &'static str,
        url: &str,
        token: &str,
    ) -> Result<(u16, Value), String> {
        let response = http
            .get(url)
            .bearer_auth(token)
            .header("Prefer", "include-unknown-enum-members")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    "cannot connect".to_string()
                }
            })?;
        if let Some(date) = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::client::http::parse_http_date)
        {
            self.dates.push((service, date, chrono::Utc::now()));
        }
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn graph(
        &mut self,
        report: &mut Report,
        http: &reqwest::Client,
        config: &Config,
        token: &str,
    ) {
        let url = format!(
            "{}/security/incidents?$top=1",
            config.graph_url().trim_end_matches('/')
        );
        match self.get(http, "Graph", &url, token).await {
            Ok((200, body)) => report.pass(
                "graph read",
                format!(
                    "listed {} incident(s) at {}",
                    body["value"].as_array().map_or(0, Vec::len),
                    config.graph_url()
                ),
            ),
            Ok((status, body)) => report.fail(
                "graph read",
                format!("HTTP {status}: {}", error_text(&body)),
                match status {
                    401 => "the token was refused: check [cloud] (the token's audience must be this Graph)".to_string(),
                    403 => format!("grant the Microsoft Graph application permission {} (or SecurityIncident.Read.All) to the app, then admin consent", GRAPH_WRITE_ROLE),
                    _ => "check defender.graph_url".to_string(),
                },
            ),
            Err(e) => report.fail("graph read", format!("{url}: {e}"), "check defender.graph_url and the network path to it"),
        }
        let roles: Vec<String> = unverified_claims(token)
            .and_then(|c| c["roles"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect();
        if roles.iter().any(|r| r == GRAPH_WRITE_ROLE) {
            report.pass(
                "graph write",
                format!("the token carries {GRAPH_WRITE_ROLE}"),
            );
        } else {
            let has_read = roles.iter().any(|r| GRAPH_READ_ROLES.contains(&r.as_str()));
            report.fail(
                "graph write",
                if roles.is_empty() {
                    "the token carries no application role: admin consent is missing".to_string()
                } else {
                    format!(
                        "the token's roles are {}: {}",
                        roles.join(", "),
                        if has_read { "Defender can be read but not written" } else { "no incident permission" }
                    )
                },
                format!("add the Microsoft Graph application permission {GRAPH_WRITE_ROLE} to the app registration and grant admin consent (rulebridge writes status, owner, classification, tags and comments back to Defender)"),
            );
        }
    }

    async fn sentinel(
        &mut self,
        report: &mut Report,
        http: &reqwest::Client,
        config: &Config,
        token: &str,
    ) {
        let incidents = config.sentinel_incidents_url();
        let Some((workspace, _)) = incidents.split_once("/providers/Microsoft.SecurityInsights/")
        else {
            report.fail(
                "sentinel workspace",
                format!("{incidents} is not a Sentinel incidents URL"),
                "check [sentinel]",
            );
            return;
        };
        let url = format!(
            "{workspace}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01"
        );
        let permissions = match self.get(http, "ARM", &url, token).await {
            Ok((200, body)) => {
                report.pass(
                    "sentinel workspace",
                    format!("found {}", workspace_name(workspace)),
                );
                body
            }
            Ok((status, body)) => {
                let code = body["error"]["code"].as_str().unwrap_or("");
                let fix = match (status, code) {
                    (404, _) => "check sentinel.subscription_id, resource_group and workspace (the Log Analytics workspace Sentinel runs on)".to_string(),
                    (401, _) => "the token was refused: check [cloud] (the token's audience must be this ARM)".to_string(),
                    (403, _) => SENTINEL_ROLE_FIX.to_string(),
                    _ => "check [sentinel]".to_string(),
                };
                report.fail(
                    "sentinel workspace",
                    format!(
                        "{}: HTTP {status}: {}",
                        workspace_name(workspace),
                        error_text(&body)
                    ),
                    fix,
                );
                for check in ["sentinel permissions", "sentinel read", "connector"] {
                    report.skip(check, "the workspace was not found");
                }
                return;
            }
            Err(e) => {
                report.fail(
                    "sentinel workspace",
                    format!("{url}: {e}"),
                    "check sentinel.arm_url and the network path to it",
                );
                for check in ["sentinel permissions", "sentinel read", "connector"] {
                    report.skip(check, "ARM did not answer");
                }
                return;
            }
        };
        let missing: Vec<&str> = SENTINEL_ACTIONS
            .into_iter()
            .filter(|action| !allowed(&permissions, action))
            .collect();
        if missing.is_empty() {
            report.pass(
                "sentinel permissions",
                "incidents and comments may be read and written",
            );
        } else {
            report.fail(
                "sentinel permissions",
                format!("not allowed: {}", missing.join(", ")),
                SENTINEL_ROLE_FIX,
            );
        }
        let list = format!("{incidents}&$top=1");
        match self.get(http, "ARM", &list, token).await {
            Ok((200, _)) => report.pass("sentinel read", "listed the workspace's incidents"),
            Ok((status, body)) => report.fail(
                "sentinel read",
                format!("HTTP {status}: {}", error_text(&body)),
                SENTINEL_ROLE_FIX,
            ),
            Err(e) => report.fail("sentinel read", e, "check sentinel.arm_url"),
        }
        let mut found = Vec::new();
        let mut unknown = None;
        for provider in CONNECTOR_PROVIDERS {
            let url = format!(
                "{incidents}&$top=1&$filter=properties/providerName%20eq%20'{}'",
                provider.replace(' ', "%20")
            );
            match self.get(http, "ARM", &url, token).await {
                Ok((200, body)) if body["value"].as_array().is_some_and(|v| !v.is_empty()) => {
                    found.push(provider)
                }
                Ok((200, _)) => {}
                Ok((status, _)) => {
                    unknown = Some(format!("HTTP {status} on a providerName filter"))
                }
                Err(e) => unknown = Some(e),
            }
        }
        report.pass(
            "connector",
            match (found.is_empty(), unknown) {
                (false, _) => format!(
                    "Microsoft's Defender XDR connector syncs this workspace (incidents from '{}'): rulebridge links its incidents instead of creating twins, and the default pack leaves the fields in connector_owns (title, severity, status, owner, classification) to it",
                    found.join("', '")
                ),
                (true, None) => "Microsoft's Defender XDR connector is not seen in this workspace: rulebridge creates the Sentinel incidents itself".to_string(),
                (true, Some(why)) => format!("could not tell whether Microsoft's Defender XDR connector runs here ({why}); rulebridge looks up a twin before each create"),
            },
        );
    }
}

async fn token(report: &mut Report, check: &'static str, source: &TokenSource) -> Option<String> {
    match source.token().await {
        Ok(token) => {
            let audience = unverified_claims(&token)
                .and_then(|c| c["aud"].as_str().map(str::to_string))
                .map_or_else(String::new, |aud| format!(", audience {aud}"));
            report.pass(check, format!("issued for {}{audience}", source.scope()));
            Some(token)
        }
        Err(ClientError::Auth { error, description }) => {
            let (meaning, fix) = token_failure(&error, &description);
            report.fail(check, format!("{meaning}: {error}: {description}"), fix);
            None
        }
        Err(e) => {
            report.fail(
                check,
                e.to_string(),
                "check the network path to the sign-in host",
            );
            None
        }
    }
}

fn error_text(body: &Value) -> String {
    let (code, message) = crate::client::http::error_parts(body);
    match (code.is_empty(), message.is_empty()) {
        (true, true) => "no error details".into(),
        (false, true) => code,
        (true, false) => message,
        (false, false) => format!("{code}: {message}"),
    }
}

fn workspace_name(workspace_url: &str) -> String {
    format!(
        "workspace {}",
        workspace_url.rsplit('/').next().unwrap_or(workspace_url)
    )
}

/// Whether ARM's effective permissions allow `action`: some entry's `actions` matches
/// it and that entry's `notActions` does not (ARM's semantics per role assignment).
pub fn allowed(permissions: &Value, action: &str) -> bool {
    let matches_any = |patterns: &Value| {
        patterns
            .as_array()
            .is_some_and(|p| p.iter().filter_map(Value::as_str).any(|p| glob(p, action)))
    };
    permissions["value"].as_array().is_some_and(|entries| {
        entries
            .iter()
            .any(|e| matches_any(&e["actions"]) && !matches_any(&e["notActions"]))
    })
}

/// ARM action patterns: case-insensitive, `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arm_permissions_follow_actions_and_not_actions() {
        let responder = json!({"value": [{"actions": ["Microsoft.SecurityInsights/*/read", "Microsoft.SecurityInsights/incidents/*"], "notActions": []}]});
        assert!(SENTINEL_ACTIONS.iter().all(|a| allowed(&responder, a)));
        let reader = json!({"value": [{"actions": ["Microsoft.SecurityInsights/*/read"], "notActions": []}]});
        assert!(allowed(
            &reader,
            "Microsoft.SecurityInsights/incidents/read"
        ));
        assert!(!allowed(
            &reader,
            "microsoft.securityinsights/incidents/write"
        ));
        let carved = json!({"value": [{"actions": ["*"], "notActions": ["Microsoft.SecurityInsights/incidents/comments/write"]}]});
        assert!(allowed(
            &carved,
            "Microsoft.SecurityInsights/incidents/write"
        ));
        assert!(!allowed(
            &carved,
            "Microsoft.SecurityInsights/incidents/comments/write"
        ));
        assert!(!allowed(&json!({}), "x"));
        assert!(glob("a*c*e", "abcde") && !glob("a*c*e", "abcd") && glob("*", ""));
    }
}
