//! The service configuration of `rulebridge run --config FILE`: which tenant and
//! workspace, how often to poll, where the state file and the rule pack live, where
//! `/metrics` listens, how hot reload behaves, whether the Sentinel push hook is on.
//!
//! Loading goes TOML → JSON ([`crate::toml_json`], shared with the pack manifest) →
//! `schemas/config.schema.json` (the copy built into the binary: the config is what names
//! a schemas folder, so it cannot be checked by one)
//! → typed [`Config`]. Unknown keys are errors, so a typo never silently means "the
//! default", and a secret can never be written into the file: it comes from an
//! environment variable or a file named here, and never appears in an error.
//! Relative paths are resolved against the folder of the configuration file, so a
//! config works the same from any working directory.
//!
//! This file holds the types, loading and validation; [`identity`] turns a loaded
//! config and the environment into the cloud's endpoints and the sign-in.

mod hooks;
mod identity;

pub use hooks::{HookAuth, HooksConfig};
pub use identity::{Env, Identity, ProcessEnv};

use crate::client::RateLimiter;
use crate::problem::Problem;
use crate::schema::{self, SchemaSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is in the message, so it is not also a `source()` (shown twice in a
    // chain); the typed error stays for callers that match on it.
    #[error("{path}: cannot read the configuration: {error}")]
    Read { path: String, error: std::io::Error },
    /// TOML syntax, schema violations and inconsistent settings, all located.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Problem>),
    /// A credential the configuration points to is not there. Names the variable or
    /// file, never a secret.
    #[error("{path}: credentials: {message}")]
    Credentials { path: String, message: String },
    /// The push hook is enabled without a usable secret. Names the variable or file.
    #[error("{path}: hooks: {message}")]
    Hooks { path: String, message: String },
}

impl ConfigError {
    /// The located problems, for callers that print them like `check` does.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Invalid(problems) => problems.clone(),
            ConfigError::Read { path, error } => vec![Problem::in_file(
                path,
                format!("cannot read the configuration: {error}"),
            )],
            ConfigError::Credentials { path, message } => {
                vec![Problem::in_file(path, format!("credentials: {message}"))]
            }
            ConfigError::Hooks { path, message } => {
                vec![Problem::in_file(path, format!("hooks: {message}"))]
            }
        }
    }
}

fn join_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole configuration. Every section and key is optional except `[sentinel]`'s
/// workspace; `Default` is the single source of the defaults (serde falls back to it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub defender: DefenderConfig,
    pub sentinel: SentinelConfig,
    pub cloud: CloudConfig,
    pub credentials: CredentialsConfig,
    pub sync: SyncConfig,
    pub server: ServerConfig,
    pub reload: ReloadConfig,
    pub hooks: HooksConfig,
    /// The file this was loaded from (empty for a `Default`), for messages.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefenderConfig {
    /// `None`: `AZURE_TENANT_ID`, read when credentials are resolved.
    pub tenant_id: Option<String>,
    /// `None`: the cloud's Graph, `/v1.0`.
    pub graph_url: Option<String>,
    /// `None`: the Entra ID endpoint of the tenant in the cloud.
    pub token_url: Option<String>,
    pub requests_per_minute: f64,
}

impl Default for DefenderConfig {
    fn default() -> Self {
        DefenderConfig {
            tenant_id: None,
            graph_url: None,
            token_url: None,
            // The documented figure for Graph /security alerts; see client::graph_rate_limiter.
            requests_per_minute: 150.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelConfig {
    /// The full collection URL with `?api-version=`; the alternative to the three
    /// workspace coordinates below.
    pub incidents_url: Option<String>,
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub workspace: Option<String>,
    /// `None`: the cloud's ARM.
    pub arm_url: Option<String>,
    pub api_version: String,
    pub token_url: Option<String>,
    pub requests_per_second: f64,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        SentinelConfig {
            incidents_url: None,
            subscription_id: None,
            resource_group: None,
            workspace: None,
            arm_url: None,
            api_version: "2024-03-01".into(),
            token_url: None,
            requests_per_second: 10.0,
        }
    }
}

/// `[cloud]`: the name sets every host; explicit hosts win over it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    /// Checked by the schema against [`Cloud::NAMES`]; `china` is refused when loading.
    pub name: String,
    pub authority_host: Option<String>,
    pub graph_resource: Option<String>,
    pub arm_resource: Option<String>,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            name: "public".into(),
            authority_host: None,
            graph_resource: None,
            arm_resource: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialsConfig {
    /// `None`: what the environment implies (see [`Config::identity`]).
    pub kind: Option<String>,
    /// `None`: `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// The name of the variable holding the secret, not the secret.
    pub client_secret_env: String,
    /// Wins over `client_secret_env` when set; `None`: `AZURE_CLIENT_SECRET_FILE`.
    pub client_secret_file: Option<PathBuf>,
    /// PEM (key + certificate) or PKCS#12; `None`: `AZURE_CLIENT_CERTIFICATE_PATH`.
    pub certificate_path: Option<PathBuf>,
    /// The name of the variable holding the PKCS#12 password.
    pub certificate_password_env: String,
    /// `None`: `AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig {
            kind: None,
            client_id: None,
            client_secret_env: "AZURE_CLIENT_SECRET".into(),
            client_secret_file: None,
            certificate_path: None,
            certificate_password_env: "AZURE_CLIENT_CERTIFICATE_PASSWORD".into(),
            federated_token_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    pub poll_interval_secs: u64,
    /// How far before the cursor each incremental poll starts, for clock skew.
    pub overlap_secs: u64,
    /// The most linked incidents fully reconciled per cycle (the safety net behind the
    /// polls and the list scans).
    pub sweep_batch: usize,
    /// The share of each API's per-cycle budget the sweep may spend.
    pub sweep_share: f64,
    /// The share of each API's per-cycle budget the comment scans may spend.
    pub scan_share: f64,
    /// Closed incidents quiet this long leave the sweep (`7d`, `12h`, `30m`, `45s`, or
    /// `never`); a change the polls see brings them back.
    pub retire_closed_after: String,
    /// How long a Defender incident's alerts, kept while Graph cannot expand them in
    /// listings, may stand in for a read (`1h`, `30m`, or `off`).
    pub alert_copies_max_age: String,
    pub state: PathBuf,
    pub rules: PathBuf,
    /// `None`: the schemas built into the binary.
    pub schemas: Option<PathBuf>,
    /// RFC 3339 (checked by the schema); `None`: from the first start on.
    pub start_from: Option<String>,
    /// History to sync besides: `30d`, `12h`, `90m` (checked by the schema).
    pub backfill: Option<String>,
    /// Time windows of history the backfill processes per cycle (each at most a page),
    /// so the polls keep their place in the API budget.
    pub backfill_windows_per_cycle: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            poll_interval_secs: 30,
            overlap_secs: 5,
            sweep_batch: 20,
            sweep_share: 0.1,
            scan_share: 0.25,
            retire_closed_after: "7d".into(),
            alert_copies_max_age: "1h".into(),
            state: "rulebridge.db".into(),
            rules: "rules".into(),
            schemas: None,
            start_from: None,
            backfill: None,
            backfill_windows_per_cycle: 4,
        }
    }
}

impl SyncConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs)
    }

    pub fn overlap(&self) -> Duration {
        Duration::from_secs(self.overlap_secs)
    }

    /// `backfill` as a span of time.
    pub fn backfill_span(&self) -> Result<Option<chrono::TimeDelta>, String> {
        self.backfill.as_deref().map(parse_span).transpose()
    }

    /// `retire_closed_after` as a span of time; `None`: never.
    pub fn retire_span(&self) -> Result<Option<chrono::TimeDelta>, String> {
        match self.retire_closed_after.trim() {
            "never" => Ok(None),
            span => parse_span(span).map(Some),
        }
    }

    /// `alert_copies_max_age` as a span of time; `None`: off.
    pub fn alert_copies_span(&self) -> Result<Option<chrono::TimeDelta>, String> {
        match self.alert_copies_max_age.trim() {
            "off" => Ok(None),
            span => parse_span(span).map(Some),
        }
    }
}

/// `30d`, `12h`, `90m`, `45s`: a whole number of days, hours, minutes or seconds.
pub fn parse_span(text: &str) -> Result<chrono::TimeDelta, String> {
    let text = text.trim();
    let bad = || format!("'{text}' is not a span like 30d, 12h or 90m");
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let span = match unit {
        "d" => chrono::TimeDelta::try_days(n),
        "h" => chrono::TimeDelta::try_hours(n),
        "m" => chrono::TimeDelta::try_minutes(n),
        "s" => chrono::TimeDelta::try_seconds(n),
        _ => None,
    };
    span.filter(|s| *s > chrono::TimeDelta::zero())
        .ok_or_else(bad)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `/healthz` (liveness) fails after this long without a loop turn or a finished
    /// incident.
    pub stuck_after_secs: u64,
    /// `/readyz` (readiness) fails once a side's polls have been failing this long.
    pub unready_after_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            // The Prometheus exporter port range; loopback, since /metrics has no auth.
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            // Long enough for a throttled request's longest wait and a big first page:
            // a restart is for a hung process, not a slow one.
            stuck_after_secs: 900,
            // Ten polls at the default interval: a blip is not an outage.
            unready_after_secs: 300,
        }
    }
}

impl ServerConfig {
    pub fn health_options(&self) -> crate::health::HealthOptions {
        crate::health::HealthOptions {
            stuck_after: Duration::from_secs(self.stuck_after_secs),
            unready_after: Duration::from_secs(self.unready_after_secs),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    pub watch: bool,
    /// For file systems without change events (network mounts).
    pub polling: bool,
    pub debounce_ms: u64,
    pub shadow: bool,
    pub shadow_incidents: usize,
    /// A reload attempt running longer than this is reported stuck and abandoned.
    pub stuck_after_secs: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            polling: false,
            debounce_ms: 300,
            shadow: false,
            shadow_incidents: 100,
            stuck_after_secs: 30,
        }
    }
}

impl ReloadConfig {
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    pub fn stuck_after(&self) -> Duration {
        Duration::from_secs(self.stuck_after_secs)
    }
}

impl Config {
    /// Reads, validates and types the configuration at `path`, resolving its relative
    /// paths against the file's folder. Every problem is reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: label.clone(),
            error,
        })?;
        let mut config = Config::parse(&text, &label)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        config.path = path.to_path_buf();
        Ok(config)
    }

    /// Validates and types configuration text; `label` names it in problems. Paths stay
    /// as written.
    pub fn parse(text: &str, label: &str) -> Result<Config, ConfigError> {
        let json =
            crate::toml_json::parse(text, label).map_err(|p| ConfigError::Invalid(vec![p]))?;
        let violations = SchemaSet::built_in().check(schema::CONFIG, &json);
        if !violations.is_empty() {
            return Err(ConfigError::Invalid(
                violations
                    .into_iter()
                    .map(|v| Problem::at_pointer(label, v.pointer, v.message))
                    .collect(),
            ));
        }
        let problems = consistency_problems(&json, label);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        serde_json::from_value(json).map_err(|e| {
            ConfigError::Invalid(vec![Problem::in_file(
                label,
                format!("invalid configuration: {e}"),
            )])
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.sync.state);
        resolve(&mut self.sync.rules);
        if let Some(p) = &mut self.sync.schemas {
            resolve(p);
        }
        if let Some(p) = &mut self.hooks.secret_file {
            resolve(p);
        }
        for p in [
            &mut self.credentials.client_secret_file,
            &mut self.credentials.certificate_path,
            &mut self.credentials.federated_token_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
    }

    /// The push hook's secret, if hooks are enabled (see [`HooksConfig::secret_in`]).
    pub fn hook_secret_in(
        &self,
        env: &dyn Env,
    ) -> Result<Option<(crate::client::Secret, String)>, ConfigError> {
        self.hooks.secret_in(env, &self.label())
    }

    fn label(&self) -> String {
        if self.path.as_os_str().is_empty() {
            "<configuration>".into()
        } else {
            self.path.display().to_string()
        }
    }

    fn credentials_error(&self, message: String) -> ConfigError {
        ConfigError::Credentials {
            path: self.label(),
            message,
        }
    }

    /// Graph's limiter at the configured rate (burst as in [`crate::client::graph_rate_limiter`]).
    pub fn graph_rate_limiter(&self) -> RateLimiter {
        RateLimiter::new(self.defender.requests_per_minute / 60.0, 10)
    }

    /// Sentinel's limiter at the configured rate (burst as in [`crate::client::sentinel_rate_limiter`]).
    pub fn sentinel_rate_limiter(&self) -> RateLimiter {
        RateLimiter::new(self.sentinel.requests_per_second, 50)
    }
}

/// What one schema cannot say clearly: the workspace is named one way or the other,
/// and `listen` (either) is a socket address.
fn consistency_problems(json: &Value, label: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let sentinel = &json["sentinel"];
    let has = |key: &str| sentinel.get(key).is_some();
    let coordinates = ["subscription_id", "resource_group", "workspace"];
    if has("incidents_url") {
        let url = sentinel["incidents_url"].as_str().unwrap_or("");
        let query = url.split_once('?').map_or("", |(_, q)| q);
        if !query.split('&').any(|kv| {
            kv.strip_prefix("api-version=")
                .is_some_and(|v| !v.is_empty())
        }) {
            problems.push(Problem::at_pointer(
                label,
                "/sentinel/incidents_url",
                "the incidents URL needs its ?api-version= query",
            ));
        }
        for key in coordinates.into_iter().chain(["arm_url", "api_version"]) {
            if has(key) {
                problems.push(Problem::at_pointer(
                    label,
                    format!("/sentinel/{key}"),
                    "incidents_url is set, which already names the workspace; remove one of them",
                ));
            }
        }
    } else {
        let missing: Vec<&str> = coordinates.into_iter().filter(|k| !has(k)).collect();
        if !missing.is_empty() {
            problems.push(Problem::at_pointer(
                label,
                "/sentinel",
                format!(
                    "the workspace is not named: set incidents_url, or subscription_id, \
                     resource_group and workspace (missing: {})",
                    missing.join(", ")
                ),
            ));
        }
    }
    problems.extend(identity::cloud_problems(json, label));
    for pointer in ["/server/listen", "/hooks/listen"] {
        if let Some(listen) = json.pointer(pointer).and_then(Value::as_str) {
            if listen.parse::<SocketAddr>().is_err() {
                problems.push(Problem::at_pointer(
                    label,
                    pointer,
                    format!("'{listen}' is not a socket address (IP:port, e.g. 127.0.0.1:9464)"),
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str = r#"
[sentinel]
subscription_id = "sub-1"
resource_group = "rg-1"
workspace = "ws-1"
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "rb.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fill_every_key_left_out() {
        let c = parse(WORKSPACE).unwrap();
        assert_eq!(c.defender.graph_url, None);
        assert_eq!(c.graph_url(), "https://graph.microsoft.com/v1.0");
        assert_eq!(c.defender.requests_per_minute, 150.0);
        assert_eq!(c.defender.tenant_id, None);
        assert_eq!(c.sentinel.arm_url, None);
        assert_eq!(c.arm_url(), "https://management.azure.com");
        assert_eq!(c.cloud.name, "public");
        assert_eq!(c.sentinel.api_version, "2024-03-01");
        assert_eq!(c.sentinel.requests_per_second, 10.0);
        assert_eq!(c.credentials.client_secret_env, "AZURE_CLIENT_SECRET");
        assert_eq!(c.credentials.client_secret_file, None);
        assert_eq!(c.sync.poll_interval(), Duration::from_secs(30));
        assert_eq!(c.sync.overlap_secs, 5);
        assert_eq!(c.sync.sweep_batch, 20);
        assert_eq!(c.sync.state, Path::new("rulebridge.db"));
        assert_eq!(c.sync.rules, Path::new("rules"));
        assert_eq!((c.sync.schemas, c.sync.start_from), (None, None));
        assert_eq!(c.sync.backfill, None);
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9464");
        assert!(c.reload.watch && !c.reload.polling && !c.reload.shadow);
        assert_eq!(
            (c.reload.debounce_ms, c.reload.shadow_incidents),
            (300, 100)
        );
    }

    /// The schema documents the defaults; they must be the ones `Default` applies.
    #[test]
    fn schema_defaults_are_the_code_defaults() {
        let schema: Value = serde_json::from_str(
            schema::BUILT_IN
                .iter()
                .find(|(n, _)| *n == schema::CONFIG)
                .unwrap()
                .1,
        )
        .unwrap();
        let code = serde_json::to_value(Config::default()).unwrap();
        let mut checked = 0;
        for (section, spec) in schema["properties"].as_object().unwrap() {
            for (key, prop) in spec["properties"].as_object().unwrap() {
                if let Some(documented) = prop.get("default") {
                    let actual = &code[section][key];
                    let same = match (documented.as_f64(), actual.as_f64()) {
                        (Some(a), Some(b)) => a == b,
                        _ => documented == actual,
                    };
                    assert!(same, "{section}.{key}: schema {documented}, code {actual}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 31);
    }

    #[test]
    fn unknown_keys_are_errors_with_their_pointer() {
        let e = parse(&format!("{WORKSPACE}\n[sync]\npol_interval_secs = 10\n")).unwrap_err();
        assert!(e.starts_with("rb.toml: /sync: "), "{e}");
        assert!(e.contains("pol_interval_secs"), "{e}");
        let e = parse(&format!("{WORKSPACE}\n[sink]\nx = 1\n")).unwrap_err();
        assert!(e.starts_with("rb.toml: /: ") && e.contains("sink"), "{e}");
    }

    #[test]
    fn every_schema_problem_is_reported_with_its_pointer() {
        let e = parse(&format!(
            "{WORKSPACE}\n[sync]\npoll_interval_secs = 2\n[reload]\ndebounce_ms = 20000\n"
        ))
        .unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(
            lines,
            [
                "rb.toml: /reload/debounce_ms: 20000 is greater than the maximum of 10000",
                "rb.toml: /sync/poll_interval_secs: 2 is less than the minimum of 5",
            ],
            "{e}"
        );
    }

    #[test]
    fn a_secret_in_the_config_is_refused() {
        for key in ["client_secret", "secret", "password"] {
            let e = parse(&format!(
                "{WORKSPACE}\n[credentials]\nclient_id = \"c\"\n{key} = \"hunter2-9f8e\"\n"
            ))
            .unwrap_err();
            assert!(e.contains("/credentials") && e.contains(key), "{e}");
        }
        let e = parse(&format!("{WORKSPACE}client_secret = \"x\"\n")).unwrap_err();
        assert!(
            e.contains("/sentinel") && e.contains("client_secret"),
            "{e}"
        );
    }

    #[test]
    fn the_sentinel_workspace_is_named_one_way_or_the_other() {
        let e = parse("[sentinel]\nsubscription_id = \"s\"\n").unwrap_err();
        assert_eq!(
            e,
            "rb.toml: /sentinel: the workspace is not named: set incidents_url, or \
             subscription_id, resource_group and workspace (missing: resource_group, workspace)"
        );
        let e =
            parse("[sentinel]\nincidents_url = \"https://arm/x/incidents\"\nworkspace = \"w\"\n")
                .unwrap_err();
        assert!(
            e.contains("/sentinel/incidents_url: the incidents URL needs"),
            "{e}"
        );
        assert!(
            e.contains("/sentinel/workspace: incidents_url is set"),
            "{e}"
        );
        let e = parse("").unwrap_err();
        assert!(e.contains("\"sentinel\" is a required property"), "{e}");
    }

    #[test]
    fn listen_must_be_a_socket_address() {
        let e = parse(&format!(
            "{WORKSPACE}\n[server]\nlisten = \"localhost:9464\"\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("rb.toml: /server/listen: 'localhost:9464' is not"),
            "{e}"
        );
        let c = parse(&format!("{WORKSPACE}\n[server]\nlisten = \"[::1]:9000\"\n")).unwrap();
        assert_eq!(c.server.listen.port(), 9000);
    }

    #[test]
    fn start_from_is_rfc3339_quoted_or_a_toml_datetime() {
        let c = parse(&format!(
            "{WORKSPACE}\n[sync]\nstart_from = 2025-01-02T03:04:05Z\n"
        ))
        .unwrap();
        assert_eq!(c.sync.start_from.as_deref(), Some("2025-01-02T03:04:05Z"));
        let c = parse(&format!(
            "{WORKSPACE}\n[sync]\nstart_from = \"2025-01-02T03:04:05+01:00\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.sync.start_from.as_deref(),
            Some("2025-01-02T03:04:05+01:00")
        );
        let e = parse(&format!(
            "{WORKSPACE}\n[sync]\nstart_from = \"yesterday\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("/sync/start_from"), "{e}");
        // A local date-time names no instant: refused by the schema's date-time format
        // (see toml_json::datetime), not read as UTC or as the machine's zone.
        for local in ["2025-01-02T03:04:05", "2025-01-02", "03:04:05"] {
            let e = parse(&format!("{WORKSPACE}\n[sync]\nstart_from = {local}\n")).unwrap_err();
            assert!(
                e.contains("/sync/start_from") && e.contains("date-time"),
                "{local}: {e}"
            );
        }
    }

    #[test]
    fn toml_syntax_errors_are_located() {
        let e = parse("[sentinel]\nworkspace = \"w\"\nsubscription_id = = 1\n").unwrap_err();
        assert!(e.starts_with("rb.toml:3:19: invalid TOML: "), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("etc");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("rulebridge.toml");
        std::fs::write(
            &file,
            format!(
                "{WORKSPACE}\n[sync]\nrules = \"../pack\"\nschemas = \"schemas\"\nstate = \"/var/lib/rb.db\"\n\
                 [credentials]\nclient_secret_file = \"secret\"\n"
            ),
        )
        .unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.sync.rules, sub.join("../pack"));
        assert_eq!(c.sync.schemas, Some(sub.join("schemas")));
        assert_eq!(c.sync.state, Path::new("/var/lib/rb.db"));
        assert_eq!(c.credentials.client_secret_file, Some(sub.join("secret")));
        assert_eq!(c.path, file);

        std::fs::write(&file, WORKSPACE).unwrap();
        assert_eq!(
            Config::load(&file).unwrap().sync.state,
            sub.join("rulebridge.db")
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/rb.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/rb.toml: cannot read the configuration"),
            "{e}"
        );
    }

    #[test]
    fn urls_are_built_from_the_workspace_and_tenant() {
        let c = parse(&format!(
            "[defender]\ntenant_id = \"t-1\"\n{WORKSPACE}arm_url = \"http://127.0.0.1:1/\"\napi_version = \"2025-01-01\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.sentinel_incidents_url(),
            "http://127.0.0.1:1/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.OperationalInsights/workspaces/ws-1/providers/Microsoft.SecurityInsights/incidents?api-version=2025-01-01"
        );
        let entra = "https://login.microsoftonline.com/t-1/oauth2/v2.0/token";
        assert_eq!(c.graph_token_url().unwrap(), entra);
        assert_eq!(c.sentinel_token_url().unwrap(), entra);

        let c = parse(
            "[defender]\ntenant_id = \"t\"\ntoken_url = \"http://h/t/token\"\n\
             [sentinel]\nincidents_url = \"https://arm/incidents?api-version=1\"\ntoken_url = \"http://h/s/token\"\n",
        )
        .unwrap();
        assert_eq!(
            c.sentinel_incidents_url(),
            "https://arm/incidents?api-version=1"
        );
        assert_eq!(c.graph_token_url().unwrap(), "http://h/t/token");
        assert_eq!(c.sentinel_token_url().unwrap(), "http://h/s/token");
    }

    #[test]
    fn rates_are_positive_numbers() {
        let c = parse(&format!(
            "[defender]\nrequests_per_minute = 0.5\n{WORKSPACE}requests_per_second = 2.5\n"
        ))
        .unwrap();
        assert_eq!(c.defender.requests_per_minute, 0.5);
        assert_eq!(c.sentinel.requests_per_second, 2.5);
        let e = parse(&format!("[defender]\nrequests_per_minute = 0\n{WORKSPACE}")).unwrap_err();
        assert!(e.contains("/defender/requests_per_minute"), "{e}");
    }
}
