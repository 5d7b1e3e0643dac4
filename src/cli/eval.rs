//! `rulebridge eval`: one incident (or every incident of a list response) through
//! filter → map → enrich, printed as the request body the sync would send.

use super::PackArgs;
use crate::model::Side;
use crate::rules::{RunOptions, Verdict};
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
    /// response with `value`). `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Which side the output is for: `sentinel` reads a Defender incident and prints the
    /// Sentinel PUT body; `defender` reads a Sentinel incident and prints the PATCH body.
    #[arg(long, value_enum, default_value_t = To::Sentinel)]
    to: To,
    /// Print every rule's step and the document after it, as JSON.
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

#[derive(Clone, Copy, ValueEnum)]
enum To {
    Sentinel,
    Defender,
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
    let text = if args.input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("reading {}", args.input.display()))?
    };
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", args.input.display()))?;
    let incidents = match doc {
        // Azure's REST API example files wrap the payload: say where it is.
        Value::Object(map) if map.contains_key("responses") && map.contains_key("parameters") => {
            bail!(
                "{} is an Azure REST API example file, not a payload; its responses.<status>.body is one",
                args.input.display()
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
            args.input.display()
        ),
    };
    let source = match args.to {
        To::Sentinel => Side::Defender,
        To::Defender => Side::Sentinel,
    };
    let sync_time = match &args.sync_time {
        Some(t) => crate::rules::natives::parse_time(t)
            .map(crate::rules::natives::format_time)
            .with_context(|| format!("--sync-time {t} is not an RFC 3339 time"))?,
        None => crate::rules::natives::format_time(chrono::Utc::now()),
    };
    let opts = RunOptions {
        sync_time,
        linked: args.linked,
        twin: if args.twin == "connector" {
            crate::rules::Twin::Connector
        } else {
            crate::rules::Twin::Rulebridge
        },
        explain: args.explain,
    };

    let mut failed = false;
    for incident in incidents {
        let id = incident_id(&incident);
        match pack.run_pipeline(Arc::new(incident), source, &opts) {
            Ok(outcome) => {
                if args.explain {
                    println!("{}", serde_json::to_string_pretty(&outcome)?);
                }
                match outcome.verdict {
                    Verdict::Synced { body } if !args.explain => {
                        println!("{}", serde_json::to_string_pretty(&body)?)
                    }
                    Verdict::Synced { .. } => {}
                    Verdict::Filtered { rule } => {
                        eprintln!("incident {id}: filtered out by rule '{rule}' (not synced)")
                    }
                }
            }
            Err(err) => {
                failed = true;
                eprintln!("incident {id}: error: {err}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn incident_id(incident: &Value) -> String {
    match incident.get("id").or_else(|| incident.get("name")) {
        Some(Value::String(id)) => id.clone(),
        // A malformed id is still how the user finds the incident in the file.
        Some(other) if !other.is_null() => other.to_string(),
        _ => "(no id)".to_string(),
    }
}
