//! `rulebridge eval`: one incident (or every incident of a list response) through
//! filter → map → enrich, printed as the request body the sync would send; or, with
//! `--to direction --change FILE`, the direction stage's decision for changed fields.
//!
//! `--explain` always explains: a failing run prints the steps up to and including the
//! failing one (JSON on stdout) before the error (stderr, exit 1), so the author sees
//! what each rule did to the document on the way to the failure.

use super::PackArgs;
use crate::model::{FieldChange, Side};
use crate::rules::{CompiledPack, RunOptions, Verdict};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pack: PackArgs,
    /// The incident: a JSON file (a Graph incident, a Sentinel incident, or a list
    /// response with `value`). `-` reads standard input. For `--to direction`, the
    /// incident the rules see as `ctx.incident` (optional).
    #[arg(long, value_name = "FILE", required_unless_present = "change")]
    input: Option<PathBuf>,
    /// Which side the output is for: `sentinel` reads a Defender incident and prints the
    /// Sentinel PUT body; `defender` reads a Sentinel incident and prints the PATCH body;
    /// `direction` decides where each change of `--change` flows.
    #[arg(long, value_enum, default_value_t = To::Sentinel)]
    to: To,
    /// For `--to direction`: a field change (as in a pack test's `input`: field, base,
    /// defender and sentinel with value, changed, changed_at), a list of them, or a
    /// pack test file of `run: direction`.
    #[arg(long, value_name = "FILE")]
    change: Option<PathBuf>,
    /// Print every rule's step as JSON: the document after it and each field's old and
    /// new value (for direction: each rule's input and answer). Also on failure.
    #[arg(long)]
    explain: bool,
    /// Treat the incident as already linked to its twin (`ctx.linked`).
    #[arg(long)]
    linked: bool,
    /// Who made the twin (`ctx.twin`): rulebridge, or Microsoft's Defender XDR connector.
    #[arg(long, value_parser = ["rulebridge", "connector"], default_value = "rulebridge")]
    twin: String,
    /// The sync time rules see (`ctx.sync_time`) [default: now]
    #[arg(long, value_name = "RFC3339")]
    sync_time: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum To {
    Sentinel,
    Defender,
    Direction,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let pack = match args.pack.load() {
        Ok(pack) => pack,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            bail!(
                "the rule pack at {} does not load ({} problems)",
                args.pack.rules_label(),
                problems.len()
            );
        }
    };
    let opts = options(args)?;
    if args.to == To::Direction {
        return direction(args, &pack, &opts);
    }
    let Some(input) = &args.input else {
        bail!("--input FILE is required (the incident to evaluate)");
    };
    if args.change.is_some() {
        bail!("--change is for --to direction");
    }
    let doc = read_json(input)?;
    let incidents = match doc {
        // Azure's REST API example files wrap the payload: say where it is.
        Value::Object(map) if map.contains_key("responses") && map.contains_key("parameters") => {
            bail!(
                "{} is an Azure REST API example file, not a payload; its responses.<status>.body is one",
                input.display()
            )
        }
        Value::Object(mut map) if map.get("value").is_some_and(Value::is_array) => {
            match map.remove("value") {
                Some(Value::Array(items)) => items,
                _ => unreachable!("checked is_array"),
            }
        }
        Value::Object(_) => vec![doc],
        _ => bail!(
            "{}: expected an incident object or a list response with `value`",
            input.display()
        ),
    };
    let source = match args.to {
        To::Defender => Side::Sentinel,
        _ => Side::Defender,
    };

    let mut failed = false;
    for incident in incidents {
        let id = incident_id(&incident);
        if args.explain {
            let explained = pack.explain_pipeline(Arc::new(incident), source, &opts);
            println!("{}", serde_json::to_string_pretty(&explained)?);
            match (&explained.verdict, &explained.error) {
                (_, Some(err)) => {
                    failed = true;
                    eprintln!("incident {id}: error: {err}");
                }
                (Some(Verdict::Filtered { rule }), None) => {
                    eprintln!("incident {id}: filtered out by rule '{rule}' (not synced)")
                }
                _ => {}
            }
            continue;
        }
        match pack.run_pipeline(Arc::new(incident), source, &opts) {
            Ok(outcome) => match outcome.verdict {
                Verdict::Synced { body } => println!("{}", serde_json::to_string_pretty(&body)?),
                Verdict::Filtered { rule } => {
                    eprintln!("incident {id}: filtered out by rule '{rule}' (not synced)")
                }
            },
            Err(err) => {
                failed = true;
                eprintln!("incident {id}: error: {err}");
            }
        }
    }
    Ok(exit(failed))
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn read_json(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn options(args: &EvalArgs) -> anyhow::Result<RunOptions> {
    let sync_time = match &args.sync_time {
        Some(t) => crate::rules::natives::parse_time(t)
            .map(crate::rules::natives::format_time)
            .with_context(|| format!("--sync-time {t} is not an RFC 3339 time"))?,
        None => crate::rules::natives::format_time(chrono::Utc::now()),
    };
    Ok(RunOptions {
        sync_time,
        linked: args.linked,
        twin: if args.twin == "connector" {
            crate::rules::Twin::Connector
        } else {
            crate::rules::Twin::Rulebridge
        },
        explain: args.explain,
    })
}

/// `--to direction`: each change of `--change` through the direction rules.
fn direction(args: &EvalArgs, pack: &CompiledPack, opts: &RunOptions) -> anyhow::Result<ExitCode> {
    let Some(path) = &args.change else {
        bail!("--to direction needs --change FILE (a field change, a list of them, or a direction pack test)");
    };
    let doc = read_json(path)?;
    let changes = match doc {
        Value::Array(items) => items,
        // A pack test of the direction stage: its input is the change.
        Value::Object(ref map) if map.get("run").and_then(Value::as_str) == Some("direction") => {
            vec![map.get("input").cloned().unwrap_or(Value::Null)]
        }
        other => vec![other],
    };
    let incident = match &args.input {
        Some(input) => crate::packtest::first_incident(read_json(input)?),
        None => Value::Object(Default::default()),
    };
    let incident = Arc::new(incident);
    let mut failed = false;
    for (i, change) in changes.into_iter().enumerate() {
        let change: FieldChange = serde_json::from_value(change).with_context(|| {
            format!(
                "{} (change {}): not a field change (field, base, defender and sentinel with value, changed, changed_at)",
                path.display(),
                i + 1
            )
        })?;
        let mut steps = Vec::new();
        let result = pack.decide_steps(&change, incident.clone(), None, opts, &mut steps);
        if args.explain {
            let shown = serde_json::json!({
                "field": change.field,
                "change": change.to_script_value(),
                "ctx": {"linked": opts.linked, "twin": opts.twin.name(), "sync_time": opts.sync_time},
                "steps": steps,
                "decision": result.as_ref().ok().map(|d| d.flow.name()),
                "rule": result.as_ref().ok().and_then(|d| d.rule.clone()),
                "error": result.as_ref().err(),
            });
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        match result {
            Ok(decision) if !args.explain => println!(
                "{}: {} ({})",
                change.field,
                decision.flow.name(),
                decision
                    .rule
                    .map_or("no rule decided".to_string(), |r| format!("rule '{r}'"))
            ),
            Ok(_) => {}
            Err(err) => {
                failed = true;
                eprintln!("{}: error: {err}", change.field);
            }
        }
    }
    Ok(exit(failed))
}

fn incident_id(incident: &Value) -> String {
    match incident.get("id").or_else(|| incident.get("name")) {
        Some(Value::String(id)) => id.clone(),
        // A malformed id is still how the user finds the incident in the file.
        Some(other) if !other.is_null() => other.to_string(),
        _ => "(no id)".to_string(),
    }
}
