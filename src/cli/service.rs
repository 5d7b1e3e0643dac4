//! `rulebridge run`, `status`, `explain` and `retry`: the service and its inspection
//! commands, all driven by one config file.

use super::PackArgs;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rules::PackHandle;
use crate::service;
use anyhow::Context;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct RunArgs {
    /// The service configuration (TOML, validated against schemas/config.schema.json).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Rule pack folder [default: the config's sync.rules]
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Schemas folder [default: the config's sync.schemas, else the built-in schemas]
    #[arg(long, value_name = "DIR")]
    pub schemas: Option<PathBuf>,
    /// Also sync Defender incidents changed this long before the first start (30d, 12h,
    /// 90m) [default: the config's sync.backfill]
    #[arg(long, value_name = "SPAN", value_parser = parse_backfill)]
    pub backfill: Option<String>,
}

fn parse_backfill(text: &str) -> Result<String, String> {
    crate::config::parse_span(text).map(|_| text.trim().to_string())
}

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ExplainArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// A Defender incident id or a Sentinel incident name.
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn pack_args(config: &Config, args: &RunArgs) -> PackArgs {
    PackArgs {
        // A service always runs a pack folder (the config names one): that is what it
        // hot-reloads.
        rules: Some(
            args.rules
                .clone()
                .unwrap_or_else(|| config.sync.rules.clone()),
        ),
        schemas: args.schemas.clone().or_else(|| config.sync.schemas.clone()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves on SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = load_config(&args.config)?;
    if let Some(span) = &args.backfill {
        config.sync.backfill = Some(span.clone());
    }
    let pack = match pack_args(&config, args).accept() {
        Ok(pack) => pack,
        Err(problems) => {
            super::print_problems(&problems);
            anyhow::bail!(
                "the rule pack is refused (it does not load or its tests fail); nothing was synced"
            );
        }
    };
    tracing::info!(event = "pack.loaded", pack_version = %pack.version, "{}", super::describe(&pack));
    // Before anything else touches the state: one process per state file.
    let _lock = crate::state::StateLock::acquire(&config.sync.state)?;
    let metrics = Arc::new(Metrics::new());
    let pack = Arc::new(PackHandle::new(pack));
    let syncer = Arc::new(service::build_syncer(
        &config,
        pack.clone(),
        metrics.clone(),
    )?);
    service::announce_pack(syncer.state().as_ref(), &metrics, &pack.current())?;
    let runtime = runtime()?;
    let pack_args = pack_args(&config, args);
    let result = runtime.block_on(async {
        // Inside the runtime: the reload hooks wake the poll loop through tokio.
        let reloading = service::Reloading::start(
            pack_args
                .rules_dir()
                .expect("pack_args always names a folder"),
            pack_args.schemas_dir(),
            &config.reload,
            &syncer,
            metrics.clone(),
        )?;
        let reloading = Some(Arc::new(reloading));
        let bar = backfill_bar(&config, syncer.clone());
        let result = service::run(&config, syncer, metrics, reloading, shutdown_signal()).await;
        if let Some(bar) = bar {
            bar.abort();
        }
        result
    });
    // Shutdown always wins: a blocking task still busy (a reload stuck on a hung
    // mount) is left behind rather than waited for; the process exits anyway.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result?;
    Ok(ExitCode::SUCCESS)
}

pub fn retry(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let pack = match pack_args(&config, args).accept() {
        Ok(pack) => pack,
        Err(problems) => {
            super::print_problems(&problems);
            anyhow::bail!(
                "the rule pack is refused (it does not load or its tests fail); nothing was retried"
            );
        }
    };
    // `retry` writes to both services: never next to a running service, never on a
    // database that does not exist yet.
    if !config.sync.state.exists() {
        return Err(crate::state::StateError::Missing {
            path: config.sync.state.display().to_string(),
        }
        .into());
    }
    let _lock = crate::state::StateLock::acquire(&config.sync.state)?;
    let metrics = Arc::new(Metrics::new());
    let syncer = service::build_syncer(&config, Arc::new(PackHandle::new(pack)), metrics)?;
    let before = syncer.state().counts()?.dead_letters;
    let report = runtime()?.block_on(syncer.retry_dead_letters())?;
    let after = syncer.state().counts()?.dead_letters;
    println!(
        "retried {} dead letters: {} resolved, {} remain",
        report.seen,
        before - after,
        after
    );
    if let Some(reason) = report.interrupted {
        println!("stopped early: {reason}");
    }
    Ok(if after == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A backfill's progress bar with its ETA while `run` works through history, on a
/// terminal only (elsewhere the backfill logs a plain line per step).
fn backfill_bar(
    config: &crate::config::Config,
    syncer: Arc<crate::sync::Syncer>,
) -> Option<tokio::task::JoinHandle<()>> {
    use std::io::IsTerminal;
    if config.sync.backfill.is_none() || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("backfill [{bar:30}] {percent:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        loop {
            if let Ok(Some(status)) = syncer.backfill_status() {
                bar.set_position((status.progress() * 1000.0) as u64);
                let eta = syncer
                    .state()
                    .meta(crate::sync::META_BACKFILL_ETA)
                    .ok()
                    .flatten()
                    .and_then(|e| e.parse::<f64>().ok());
                bar.set_message(match eta {
                    Some(eta) => format!(
                        "through {}, about {} to go",
                        status.done_to,
                        human_secs(eta)
                    ),
                    None => format!("through {}", status.done_to),
                });
                if status.complete() {
                    bar.finish_with_message("complete");
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }))
}

/// `95 s`, `12 min`, `3.4 h`, `2.1 d`.
fn human_secs(secs: f64) -> String {
    match secs {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let state = service::open_existing_state(&config)?;
    let counts = state.counts()?;
    let letters = state.dead_letters()?;
    let meta = |k: &str| state.meta(k).ok().flatten();
    let side = |s: crate::model::Side| -> anyhow::Result<serde_json::Value> {
        Ok(json!({
            "cursor": state.cursor(s)?,
            "last_poll": state.last_poll(s)?,
            "first_start": meta(&format!("{}.{}", crate::sync::poll::META_FIRST_START, s.name())),
        }))
    };
    let expand_fallback_since =
        meta(crate::sync::poll::META_EXPAND_FALLBACK).filter(|s| !s.is_empty());
    let backfill = meta(crate::sync::poll::META_BACKFILL)
        .and_then(|j| serde_json::from_str::<crate::sync::BackfillStatus>(&j).ok());
    let sweep = meta(crate::sync::META_SWEEP)
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok());
    let report = json!({
        "state": config.sync.state,
        "links": counts.links,
        "pending_creates": counts.pending_creates,
        "comment_pairs": counts.comment_pairs,
        "audit_rows": counts.audit_rows,
        "defender": side(crate::model::Side::Defender)?,
        "sentinel": side(crate::model::Side::Sentinel)?,
        "pack": {
            "version": meta("pack_version"),
            "loaded_at": meta("pack_loaded_at"),
            "last_failed_reload": meta("reload_failed_at"),
            "last_failed_version": meta("reload_failed_version"),
            "last_failed_problems": meta("reload_problems"),
            "reload_stuck_since": meta("reload_stuck_at").filter(|s| !s.is_empty()),
            "last_shadow": meta("last_shadow").and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok()),
        },
        "graph_listing": {
            "expand_alerts": expand_fallback_since.is_none(),
            "alerts_per_incident_since": expand_fallback_since,
            "alerts_vouched_to": meta(crate::sync::META_ALERTS_CURSOR).filter(|s| !s.is_empty()),
            "alert_copies_max_age": config.sync.alert_copies_max_age,
        },
        "backfill": backfill.as_ref().map(|b| json!({
            "from": b.from, "to": b.to, "done_to": b.done_to, "progress": b.progress(),
            "eta_secs": meta(crate::sync::META_BACKFILL_ETA).and_then(|e| e.parse::<f64>().ok()),
        })),
        "sweep": sweep,
        "dead_letters": letters,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("state file     {}", config.sync.state.display());
    println!(
        "links          {} ({} creates pending)",
        counts.links, counts.pending_creates
    );
    println!("comment pairs  {}", counts.comment_pairs);
    println!("audit rows     {}", counts.audit_rows);
    for (name, s) in [
        ("defender", &report["defender"]),
        ("sentinel", &report["sentinel"]),
    ] {
        println!(
            "{name:<14} cursor {}, last poll {}",
            s["cursor"].as_str().unwrap_or("none"),
            s["last_poll"].as_str().unwrap_or("never")
        );
    }
    if let Some(since) = &expand_fallback_since {
        println!(
            "graph listing  without $expand since {since} (Graph failed $expand=alerts with $filter; expanded listing retried hourly)"
        );
        let vouched = report["graph_listing"]["alerts_vouched_to"].as_str();
        match (config.sync.alert_copies_max_age.as_str(), vouched) {
            ("off", _) => println!("kept alerts    off: alerts read per changed incident"),
            (age, Some(to)) => println!(
                "kept alerts    alert changes applied up to {to}; a changed incident's alerts are read when they changed, or after {age}"
            ),
            (_, None) => println!("kept alerts    not started: alerts read per changed incident"),
        }
    }
    if let Some(b) = &backfill {
        let eta = report["backfill"]["eta_secs"]
            .as_f64()
            .filter(|_| !b.complete())
            .map(|e| format!(", about {} to go", human_secs(e)))
            .unwrap_or_default();
        println!(
            "backfill       {:.0}% of {} .. {} (through {}){eta}",
            b.progress() * 100.0,
            b.from,
            b.to,
            b.done_to
        );
    }
    if let Some(sweep) = &sweep {
        let full = sweep["full_sweep_secs"]
            .as_f64()
            .map_or_else(|| "never (no budget share)".to_string(), human_secs);
        println!(
            "sweep          {} links ({} per cycle; closed, quiet ones retired): a full sweep takes {full}",
            sweep["links"], sweep["per_cycle"]
        );
    }
    println!(
        "rule pack      {} (loaded {})",
        meta("pack_version").unwrap_or_else(|| "unknown".into()),
        meta("pack_loaded_at").unwrap_or_else(|| "?".into())
    );
    if let Some(at) = meta("reload_stuck_at").filter(|s| !s.is_empty()) {
        println!(
            "reload stuck   since {at}: an attempt ran past reload.stuck_after_secs ({} s) and was abandoned; the running pack stays",
            meta("reload_stuck_after_secs").unwrap_or_else(|| "?".into())
        );
    }
    if let Some(at) = meta("reload_failed_at") {
        println!(
            "last failed reload at {at} (candidate {}):",
            meta("reload_failed_version")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "unreadable".into())
        );
        for line in meta("reload_problems").unwrap_or_default().lines() {
            println!("    {line}");
        }
    }
    if let Some(shadow) = report["pack"]["last_shadow"].as_object() {
        println!(
            "last shadow run: {} of {} recent incidents would be decided differently",
            shadow.get("changed").and_then(|v| v.as_u64()).unwrap_or(0),
            shadow
                .get("incidents")
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        );
        let rules = shadow.get("per_rule").and_then(|v| v.as_object());
        for (rule, r) in rules.into_iter().flatten() {
            println!("    {rule}: {} changed", r["changed"]);
            for example in r["examples"].as_array().into_iter().flatten() {
                println!("        {}", example.as_str().unwrap_or(""));
            }
        }
    }
    println!("dead letters   {}", letters.len());
    for l in &letters {
        println!(
            "  {} {} [{}] x{} since {}: {}",
            l.side, l.incident_id, l.kind, l.attempts, l.first_at, l.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let state = service::open_existing_state(&config)?;
    let rows = state.audit_for(&args.id)?;
    let link = match state.link(&args.id)? {
        Some(link) => Some(link),
        None => state.link_by_sentinel(&args.id)?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "link": link, "audit": rows }))?
        );
        return Ok(if link.is_some() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let Some(link) = link else {
        println!("no incident {} in {}", args.id, config.sync.state.display());
        return Ok(ExitCode::FAILURE);
    };
    println!(
        "Defender incident {} <-> Sentinel incident {}",
        link.defender_id, link.sentinel_id
    );
    println!(
        "last synced {}; versions: Defender {}, Sentinel {}",
        link.synced_at.as_deref().unwrap_or("never"),
        link.defender_version.as_deref().unwrap_or("-"),
        link.sentinel_version.as_deref().unwrap_or("-")
    );
    for r in &rows {
        let what = match (&r.action[..], &r.field) {
            ("create", _) => "created".to_string(),
            ("comment", _) => format!("comment: {}", short(&r.new)),
            (_, Some(field)) => format!("{field}: {} -> {}", short(&r.old), short(&r.new)),
            (action, None) => action.to_string(),
        };
        let verb = if r.action == "skip" {
            format!("not synced (change on {})", r.side)
        } else {
            format!("-> {}", r.side)
        };
        println!(
            "{}  {verb:<12} {what}  [rule {} @ pack {}]",
            r.at,
            r.rule.as_deref().unwrap_or("-"),
            r.pack_version
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn short(v: &serde_json::Value) -> String {
    crate::rules::natives::clip(&v.to_string(), 120)
}
