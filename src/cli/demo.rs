//! `rulebridge demo`: the embedded default users run first. The emulator in-process on
//! free loopback ports, seeded; the sync with the chosen pack and a temporary SQLite
//! file; emulated analysts editing both sides; live progress; then a quiet period, a
//! consistency check of both sides and a summary. Exits 1 if the sides disagree.

use super::PackArgs;
use crate::emulator::analysts;
use crate::metrics;
use crate::snapshot::BUILT_IN_PACK_LABEL;
use crate::testbed::{Testbed, TestbedOptions};
use anyhow::Context;
use clap::Args;
use serde_json::json;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub pack: PackArgs,
    /// Defender incidents to generate.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub incidents: usize,
    /// Analyst edits per second, on either side, while the demo runs (0: none).
    #[arg(long, value_name = "RATE", default_value_t = 5.0)]
    pub analysts: f64,
    /// How long analysts edit and the sync runs before the final check.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub duration: u64,
    /// Seed of the generated data and the analysts.
    #[arg(long = "random-seed", value_name = "U64", default_value_t = 1)]
    pub random_seed: u64,
    /// Fault injection, as for `rulebridge emulate --faults`.
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<String>,
    /// The emulator's behaviour, as for `rulebridge emulate --profile`.
    #[arg(long, value_name = "PROFILE", default_value = "observed")]
    pub profile: crate::emulator::Profile,
    /// Share of Defender incidents Microsoft's Defender XDR connector has already copied
    /// to Sentinel (rulebridge links to those instead of creating twins).
    #[arg(long, value_name = "RATE", default_value_t = 0.1, value_parser = super::parse_share)]
    pub connector_incidents: f64,
    /// Share of Graph's incidents that are Sentinel's own (the unified portal lists them;
    /// rulebridge never twins them back).
    #[arg(long, value_name = "RATE", default_value_t = 0.05, value_parser = super::parse_share)]
    pub sentinel_incidents_in_graph: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !(args.analysts.is_finite() && args.analysts >= 0.0) {
        anyhow::bail!("--analysts must be a rate >= 0, got {}", args.analysts);
    }
    // Accepted as `run` accepts a pack: built, then its own tests passed.
    let pack = match args.pack.accept() {
        Ok(pack) => pack,
        Err(problems) => {
            super::print_problems(&problems);
            anyhow::bail!("the rule pack is refused (it does not load or its tests fail)");
        }
    };
    let faults = match &args.faults {
        Some(spec) => crate::emulator::faults::parse_spec(spec)
            .map_err(|e| anyhow::anyhow!("--faults: {e}"))?,
        None => Vec::new(),
    };
    let dir = tempfile::tempdir().context("creating a temporary folder for the state file")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo(
        args,
        pack,
        faults,
        dir.path().join("rulebridge-demo.db"),
    ))
}

async fn demo(
    args: &DemoArgs,
    pack: crate::rules::CompiledPack,
    faults: Vec<crate::emulator::faults::FaultRule>,
    state_path: std::path::PathBuf,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let pack_version = pack.version.clone();
    let mut options = TestbedOptions::new(args.incidents, state_path);
    options.seed = args.random_seed;
    options.faults = faults;
    options.profile = args.profile;
    options.observed.connector_incidents = args.connector_incidents;
    options.observed.sentinel_incidents_in_graph = args.sentinel_incidents_in_graph;
    let mut tb = Testbed::start(pack, options).await?;
    let log = |line: String| {
        if !args.json {
            eprintln!("{line}");
        }
    };
    log(format!(
        "emulator on http://{}: {} Defender incidents; rule pack {pack_version}; analysts {} edits/s for {} s",
        tb.emulator.addr, args.incidents, args.analysts, args.duration
    ));
    // Rules hot-reload here as in `run`: edit the pack while the demo runs. The pack
    // built into the binary has no folder to edit, so it is not watched.
    let reloading = match args.pack.rules_dir() {
        Some(rules) => Some(crate::service::Reloading::start(
            rules,
            args.pack.schemas_dir(),
            &crate::config::ReloadConfig::default(),
            &tb.syncer,
            tb.metrics.clone(),
        )?),
        None => {
            log(format!(
                "rules: the {BUILT_IN_PACK_LABEL} (no rules/ here; pass --rules DIR to edit rules live)"
            ));
            None
        }
    };
    if let (Some(reloading), false) = (&reloading, args.json) {
        reloading
            .reloader
            .on_outcome(Box::new(|outcome| match outcome {
                crate::reload::ReloadOutcome::Swapped { from, to } => {
                    eprintln!("rule pack reloaded: {from} -> {to}")
                }
                crate::reload::ReloadOutcome::Rejected { problems, .. } => {
                    eprintln!("rule pack change rejected; the running pack stays:");
                    for p in problems {
                        eprintln!("    {p}");
                    }
                }
                crate::reload::ReloadOutcome::Stuck { after_secs } => {
                    eprintln!("rule pack reload stuck after {after_secs} s; abandoned, the running pack stays")
                }
                crate::reload::ReloadOutcome::Unchanged { .. } => {}
            }));
    }
    let progress = Progress::new(!args.json && std::io::stderr().is_terminal());
    let analysts = analysts::spawn(
        tb.emulator.store_handle(),
        args.analysts,
        args.random_seed ^ 0xA11A_1757,
    );
    // `run`'s own loop over the emulator: the same polls, ops server, health, reload
    // wake-ups and dead-letter retries, stopped after --duration (or by Ctrl-C/SIGTERM).
    let mut config = crate::testbed::service_config(&tb.info, tb.options());
    // Faster than a config file may poll (5 s at least: the services' budget), so a
    // short demo shows many cycles.
    config.sync.poll_interval_secs = 1;
    let interrupted = Arc::new(AtomicBool::new(false));
    let shutdown = {
        let (interrupted, duration) = (interrupted.clone(), Duration::from_secs(args.duration));
        async move {
            tokio::select! {
                _ = tokio::time::sleep(duration) => {}
                _ = super::service::shutdown_signal() => interrupted.store(true, Ordering::SeqCst),
            }
        }
    };
    let service = crate::service::run(
        &config,
        tb.syncer.clone(),
        tb.metrics.clone(),
        reloading.map(Arc::new),
        shutdown,
    );
    tokio::pin!(service);
    loop {
        tokio::select! {
            result = &mut service => { result?; break; }
            _ = tokio::time::sleep(Duration::from_millis(200)) => progress.show(&tb.syncer.stats(), started, &log),
        }
    }
    analysts.abort();
    let ran = tb.syncer.stats();
    let loop_cycles = cycles_of(&tb.metrics);
    if interrupted.load(Ordering::SeqCst) {
        progress.finish();
        eprintln!("interrupted; the state was committed, no final check");
        return Ok(ExitCode::FAILURE);
    }
    // The final check is a restart: a fresh syncer over the same state file syncs until
    // calm, as the next `run` would.
    tb.restart()?;
    let calm_cycles = tb.quiesce(200).await?;
    progress.finish();
    let consistency = tb.consistency();
    let stats = ran.plus(&tb.syncer.stats());
    let counts = tb.syncer.state().counts()?;
    let requests = tb
        .emulator
        .store()
        .requests
        .iter()
        .filter(|r| !r.path.contains("oauth2") && !r.path.starts_with("/_emulator"))
        .count();
    let lag = |q| tb.metrics.quantile(metrics::SYNC_LAG, q);
    let summary = json!({
        "incidents": args.incidents,
        "seconds": started.elapsed().as_secs_f64(),
        "cycles": loop_cycles as u64 + calm_cycles as u64,
        "pack_version": pack_version,
        "created": stats.created,
        "linked_to_connector": stats.linked_to_connector,
        "filtered": consistency.filtered,
        "updates_to_sentinel": stats.updates_to_sentinel,
        "updates_to_defender": stats.updates_to_defender,
        "fields_to_sentinel": stats.fields_to_sentinel,
        "fields_to_defender": stats.fields_to_defender,
        "comments_to_sentinel": stats.comments_to_sentinel,
        "comments_to_defender": stats.comments_to_defender,
        "conflicts": { "total": stats.conflicts, "to_sentinel": stats.conflicts_to_sentinel,
                       "to_defender": stats.conflicts_to_defender, "merged": stats.conflicts_merged, "skipped": stats.conflicts_skipped },
        "etag_retries": stats.etag_retries,
        "dead_letters": counts.dead_letters,
        "api_calls": requests,
        "sync_lag_seconds": { "p50": lag(0.5), "p95": lag(0.95) },
        "consistent": consistency.ok(),
        "consistency": consistency,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if consistency.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(s: &serde_json::Value) {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let secs = |v: &serde_json::Value| v.as_f64().map_or("n/a".into(), |x| format!("{x:.2} s"));
    println!(
        "rulebridge demo: {} incidents in {:.1} s ({} cycles), rule pack {}",
        n(&s["incidents"]),
        s["seconds"].as_f64().unwrap_or(0.0),
        n(&s["cycles"]),
        s["pack_version"].as_str().unwrap_or("")
    );
    println!(
        "  created in Sentinel      {} ({} filtered out by the rules)",
        n(&s["created"]),
        n(&s["filtered"])
    );
    println!(
        "  linked, not created      {} (incidents Microsoft's connector had made)",
        n(&s["linked_to_connector"])
    );
    println!(
        "  updates to Sentinel      {} incidents, {} fields",
        n(&s["updates_to_sentinel"]),
        n(&s["fields_to_sentinel"])
    );
    println!(
        "  updates to Defender      {} incidents, {} fields",
        n(&s["updates_to_defender"]),
        n(&s["fields_to_defender"])
    );
    println!(
        "  comments                 {} to Sentinel, {} to Defender",
        n(&s["comments_to_sentinel"]),
        n(&s["comments_to_defender"])
    );
    let c = &s["conflicts"];
    println!(
        "  conflicts                {} ({} Defender won, {} Sentinel won, {} merged, {} skipped)",
        n(&c["total"]),
        n(&c["to_sentinel"]),
        n(&c["to_defender"]),
        n(&c["merged"]),
        n(&c["skipped"])
    );
    println!("  etag races re-planned    {}", n(&s["etag_retries"]));
    println!("  dead letters             {}", n(&s["dead_letters"]));
    println!("  API calls                {}", n(&s["api_calls"]));
    println!(
        "  sync lag                 p50 {}, p95 {}",
        secs(&s["sync_lag_seconds"]["p50"]),
        secs(&s["sync_lag_seconds"]["p95"])
    );
    let k = &s["consistency"];
    if s["consistent"].as_bool() == Some(true) {
        println!("  consistency              OK: {} twins agree field by field, comments complete, no strays", n(&k["synced"]));
    } else {
        println!("  consistency              FAILED");
        for key in [
            "missing",
            "disagreements",
            "comment_gaps",
            "duplicate_comments",
        ] {
            for item in k[key].as_array().into_iter().flatten().take(20) {
                println!("    {key}: {}", item.as_str().unwrap_or(""));
            }
        }
        println!("    strays: {}", n(&k["strays"]));
    }
}

/// Live progress: a spinner line on a terminal, a plain line every few seconds elsewhere.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    fn show(&self, s: &crate::sync::Stats, started: Instant, log: &dyn Fn(String)) {
        let line = format!(
            "{:>5.1} s: {} seen, {} created, {} -> Sentinel, {} -> Defender, {} comments, {} conflicts",
            started.elapsed().as_secs_f64(),
            s.incidents_seen,
            s.created,
            s.updates_to_sentinel,
            s.updates_to_defender,
            s.comments_to_sentinel + s.comments_to_defender,
            s.conflicts
        );
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if self.last_line.get().elapsed() >= Duration::from_secs(5) => {
                self.last_line.set(Instant::now());
                log(line);
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The poll cycles `run`'s loop finished: one Defender poll each.
fn cycles_of(metrics: &crate::metrics::Metrics) -> f64 {
    ["ok", "interrupted"]
        .iter()
        .filter_map(|r| metrics.value(metrics::POLLS, &[("side", "defender"), ("result", r)]))
        .sum()
}
