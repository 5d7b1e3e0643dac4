//! `rulebridge doctor --config FILE [--json]`: prints the preflight report, one line per
//! check (✓ or ✗, and the fix under a failed one), and exits 0 only when every check
//! passed, i.e. when `run` would work.

use crate::config::ProcessEnv;
use crate::doctor::{self, DoctorOptions, Report};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The service configuration `run` would use.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// One JSON object ({"ok": bool, "checks": [{"check", "ok", "detail", "fix", "skipped"}]}) for automation.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(doctor::diagnose(
        &args.config,
        &ProcessEnv,
        &DoctorOptions::default(),
    ));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The report as a person reads it.
pub fn render(report: &Report) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for check in &report.checks {
        let mark = if check.ok { "✓" } else { "✗" };
        out.push_str(&format!(
            "{mark} {:width$}  {}\n",
            check.check, check.detail
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("  {:width$}  fix: {fix}\n", ""));
        }
    }
    let failed = report.checks.iter().filter(|c| !c.ok && !c.skipped).count();
    let skipped = report.checks.iter().filter(|c| c.skipped).count();
    out.push_str(&match (failed, skipped) {
        (0, 0) => "all checks passed: `rulebridge run` has what it needs\n".to_string(),
        (failed, 0) => format!("{failed} check{} failed\n", plural(failed)),
        (failed, skipped) => format!(
            "{failed} check{} failed, {skipped} not checked because of them\n",
            plural(failed)
        ),
    });
    out
}
