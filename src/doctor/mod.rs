//! `rulebridge doctor`: the preflight a person runs before `run`. Each check is one
//! line, passed or failed, and a failed one says how to fix it. The checks follow what
//! `run` needs, in the order it needs it: a valid config, a credential, a token per
//! audience, Graph read and write permission, the Sentinel workspace and the caller's
//! allowed actions on it, Microsoft's own connector (informational), the clock, the
//! state file, the rule pack (the same acceptance as startup) and, when it is on, the
//! push hook's secret.
//!
//! Edge module: it talks to the services with plain reads only (`$top=1` lists, the
//! workspace's `Microsoft.Authorization/permissions`), never writes to them, and never
//! prints a token or secret: only what they prove (audience, roles, actions).

mod explain;
mod services;

pub use explain::{aadsts_code, token_failure};

pub use services::allowed;

use crate::client::TokenRetry;
use crate::config::{Config, Env};
use crate::snapshot::PackSnapshot;
use serde::Serialize;
use services::Services;
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
    check_hooks(&mut report, &config, env);
    report.finish()
}

/// The push hook, when it is on: its secret found as `run` looks for it (the same
/// call, so the same refusal), named by where it came from, never shown.
fn check_hooks(report: &mut Report, config: &Config, env: &dyn Env) {
    if !config.hooks.enabled {
        return;
    }
    let at = match config.hooks.listen {
        Some(addr) => format!("its own listener {addr}"),
        None => format!("{} beside /metrics", crate::hooks::PATH),
    };
    match config.hook_secret_in(env) {
        Ok(Some((_, from))) => report.pass(
            "push hook",
            format!(
                "on ({:?} auth) at {at}, its secret from {from}",
                config.hooks.auth
            ),
        ),
        Ok(None) => report.pass("push hook", "off"),
        Err(e) => report.fail(
            "push hook",
            e.to_string(),
            "put the shared secret in the file hooks.secret_file names, or in the \
             variable hooks.secret_env names (the same secret the Logic App sends)",
        ),
    }
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
