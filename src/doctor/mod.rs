//! `rulebridge doctor`: the preflight a person runs before `run`. Each check is one
//! line, passed or failed, and a failed one says how to fix it. The checks follow what
//! `run` needs, in the order it needs it: a valid config, a credential, a token per
//! audience, Graph read and write permission, the Sentinel workspace and the caller's
//! allowed actions on it, Microsoft's own connector (informational), the clock, the
//! state file and the rule pack (the same acceptance as startup).
//!
//! Edge module: it talks to the services with plain reads only (`$top=1` lists, the
//! workspace's `Microsoft.Authorization/permissions`), never writes to them, and never
//! prints a token or secret: only what they prove (audience, roles, actions).

mod explain;

pub use explain::{aadsts_code, token_failure};

use crate::client::identity::jwt::unverified_claims;
use crate::client::sentinel::CONNECTOR_PROVIDERS;
use crate::client::{ClientError, Proof, TokenRetry, TokenSource};
use crate::config::{Config, Env};
use crate::snapshot::PackSnapshot;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
    /// Not run because a check it needs failed (still a failure: `run` would not work).
    pub skipped: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.checks.push(Check {
            check,
            ok: true,
            detail: detail.into(),
            fix: None,
            skipped: false,
        });
    }

    fn fail(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check {
            check,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
            skipped: false,
        });
    }

    /// A check that could not run because an earlier one failed: still a failure, since
    /// `run` would not work either.
    fn skip(&mut self, check: &'static str, because: &str) {
        self.checks.push(Check {
            check,
            ok: false,
            detail: format!("not checked: {because}"),
            fix: None,
            skipped: true,
        });
    }

    fn finish(mut self) -> Report {
        self.ok = self.checks.iter().all(|c| c.ok);
        self
    }
}

/// Knobs for tests; the defaults suit a person at a terminal.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub token_retry: TokenRetry,
    pub timeout: Duration,
    /// Clock skew beyond this fails (Entra ID's assertions allow about 5 minutes).
    pub max_skew: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            token_retry: TokenRetry {
                max_attempts: 3,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(5),
                timeout: Duration::from_secs(15),
            },
            timeout: Duration::from_secs(15),
            max_skew: Duration::from_secs(300),
        }
    }
}

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

/// Runs every check against the config at `path`, with the environment `env`.
pub async fn diagnose(path: &Path, env: &dyn Env, options: &DoctorOptions) -> Report {
    let mut report = Report::default();
    let config = match Config::load(path) {
        Ok(config) => {
            report.pass("config", format!("{} is valid", path.display()));
            config
        }
        Err(e) => {
            report.fail(
                "config",
                e.to_string(),
                "correct the configuration at the places named (a JSON pointer or line:col)",
            );
            return report.finish();
        }
    };
    let endpoints = config.endpoints(env);
    let sign_in = match &config.defender.token_url {
        Some(url) => format!("tokens from {url}"),
        None => format!("sign-in {}", endpoints.authority_host),
    };
    report.pass(
        "cloud",
        format!(
            "{}: {sign_in}, Graph {}, ARM {}",
            config.cloud(),
            config.graph_url(),
            config.arm_url()
        ),
    );
    let services = Services::check(&mut report, &config, env, options).await;
    check_clock(&mut report, &services.dates, options.max_skew);
    check_state(&mut report, &config.sync.state);
    check_pack(&mut report, &config);
    report.finish()
}

/// What the service checks learnt that later checks use.
struct Services {
    /// `Date` headers of the services' answers, against the local clock when read.
    dates: Vec<(
        &'static str,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )>,
}

impl Services {
    async fn check(
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
        let expiry = identity.certificate.as_deref().and_then(|p| match p {
            Proof::Certificate(c) => Some(c.not_after),
            _ => None,
        });
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

fn check_clock(
    report: &mut Report,
    dates: &[(
        &'static str,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )],
    max_skew: Duration,
) {
    let Some((service, theirs, ours)) = dates
        .iter()
        .max_by_key(|(_, theirs, ours)| (*ours - *theirs).num_milliseconds().abs())
    else {
        report.skip("clock", "no service answered");
        return;
    };
    // `Date` has whole seconds: a skew under 2 s is noise.
    let skew = (*ours - *theirs).num_seconds();
    if skew.unsigned_abs() > max_skew.as_secs() {
        report.fail(
            "clock",
            format!(
                "this machine's clock is {} s {} {service}'s",
                skew.abs(),
                if skew > 0 { "ahead of" } else { "behind" }
            ),
            "synchronise the clock (NTP): tokens and client assertions are checked against it",
        );
    } else {
        report.pass(
            "clock",
            format!("within {} s of Graph and ARM", skew.abs().max(1)),
        );
    }
}

fn check_state(report: &mut Report, state: &Path) {
    if state.exists() {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(state)
        {
            Ok(_) => report.pass(
                "state",
                format!("{} exists and is writable", state.display()),
            ),
            Err(e) => report.fail(
                "state",
                format!("{}: {e}", state.display()),
                "give the user rulebridge runs as write access to the state file and its folder",
            ),
        }
        return;
    }
    let folder = match state.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !folder.is_dir() {
        report.fail(
            "state",
            format!("the folder {} does not exist", folder.display()),
            "create the folder (rulebridge creates the state file, not its folder), or set sync.state",
        );
        return;
    }
    let probe = folder.join(format!(".rulebridge-doctor-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            report.pass(
                "state",
                format!(
                    "{} will be created (its folder is writable)",
                    state.display()
                ),
            );
        }
        Err(e) => report.fail(
            "state",
            format!("cannot create files in {}: {e}", folder.display()),
            "give the user rulebridge runs as write access to the folder, or set sync.state",
        ),
    }
}

fn check_pack(report: &mut Report, config: &Config) {
    let rules = &config.sync.rules;
    let accepted =
        PackSnapshot::read(rules, config.sync.schemas.as_deref()).and_then(crate::packtest::accept);
    match accepted {
        Ok(pack) => report.pass(
            "rule pack",
            format!(
                "'{}' version {} from {}: {} rules, its tests pass",
                pack.name,
                pack.version,
                rules.display(),
                pack.rules.len()
            ),
        ),
        Err(problems) => {
            let shown: Vec<String> = problems.iter().take(5).map(ToString::to_string).collect();
            let more = problems.len().saturating_sub(shown.len());
            report.fail(
                "rule pack",
                format!(
                    "{} is refused: {}{}",
                    rules.display(),
                    shown.join("; "),
                    if more > 0 { format!(" (and {more} more)") } else { String::new() }
                ),
                format!(
                    "run `rulebridge check --rules {0}` and `rulebridge test --rules {0}` and fix what they report",
                    rules.display()
                ),
            );
        }
    }
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

    #[test]
    fn the_clock_fails_beyond_the_skew_a_sign_in_allows() {
        let at = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let run = |ours: i64| {
            let mut report = Report::default();
            check_clock(
                &mut report,
                &[("Graph", at(0), at(ours))],
                Duration::from_secs(300),
            );
            report.checks.remove(0)
        };
        assert!(run(2).ok);
        let ahead = run(400);
        assert!(
            !ahead.ok && ahead.detail.contains("400 s ahead of Graph's"),
            "{ahead:?}"
        );
        assert!(run(-301).detail.contains("behind"));
        let mut report = Report::default();
        check_clock(&mut report, &[], Duration::from_secs(300));
        assert!(
            !report.checks[0].ok,
            "no answer to compare with is not a pass"
        );
    }
}
