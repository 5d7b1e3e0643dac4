//! The command-line layer: argument parsing, output formatting, exit codes. The only
//! module that uses `anyhow` and installs a `tracing` subscriber; everything it does
//! is a thin call into the library.

mod check;
mod demo;
mod doctor;
mod emulate;
mod eval;
mod functions;
mod logging;
mod playground;
mod repl;
mod service;
mod test_cmd;

use crate::packtest;
use crate::problem::Problem;
use crate::rules::CompiledPack;
use crate::snapshot::{default_rules_dir, PackSnapshot, BUILT_IN_PACK_LABEL};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rulebridge",
    version,
    about = "Keeps incidents in sync between Microsoft Defender XDR and Microsoft Sentinel, every decision a Rhai rule"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text or as one JSON object per line (README "Log fields").
    #[arg(
        long,
        global = true,
        value_enum,
        env = "RULEBRIDGE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Accept a rule pack as `run` and a reload would (validate, compile, check statically,
    /// run its tests); print every finding with its source line (or --format short|json);
    /// exit 1 on errors.
    Check(check::CheckArgs),
    /// Run the rule pack's own tests (files under tests/ in the pack).
    Test(test_cmd::TestArgs),
    /// Run filter -> map -> enrich on one incident and print the request body.
    Eval(eval::EvalArgs),
    /// Evaluate expressions against an incident with the pack's natives, params and tables.
    Repl(repl::ReplArgs),
    /// The function reference: every native, ctx member and allowed Rhai feature.
    Functions(functions::FunctionsArgs),
    /// Run the local Graph + Sentinel API emulator until Ctrl-C (prints its info JSON first).
    Emulate(emulate::EmulateArgs),
    /// The sync service: poll both sides and keep them in sync until SIGINT/SIGTERM.
    Run(service::RunArgs),
    /// Everything in one go, locally: emulator, sync, analysts, then a consistency check.
    Demo(demo::DemoArgs),
    /// Preflight before `run`: config, credential, tokens, permissions, workspace, clock,
    /// state file and rule pack, one line each with the fix; exit 0 only if all pass.
    Doctor(doctor::DoctorArgs),
    /// Links, cursors, last polls, dead letters and the active rule pack.
    Status(service::StatusArgs),
    /// One incident's audit trail: every change, its direction, rule and pack version.
    Explain(service::ExplainArgs),
    /// Retry every dead-lettered incident with the current rule pack.
    Retry(service::RunArgs),
    /// A local page to edit the rule pack and see each edit's output, steps and problems.
    Playground(playground::PlaygroundArgs),
}

/// Where the rule pack and the schemas it is judged by are.
#[derive(Args, Clone)]
pub struct PackArgs {
    /// Rule pack folder [default: rules/ if it exists, else the default pack built into rulebridge]
    #[arg(long, value_name = "DIR")]
    pub(crate) rules: Option<PathBuf>,
    /// Schemas folder [default: schemas/ if it exists, else the schemas built into rulebridge]
    #[arg(long, value_name = "DIR")]
    pub(crate) schemas: Option<PathBuf>,
}

impl PackArgs {
    pub(crate) fn schemas_dir(&self) -> Option<PathBuf> {
        self.schemas.clone().or_else(|| {
            let local = PathBuf::from("schemas");
            local
                .join(crate::schema::RULE_PACK)
                .is_file()
                .then_some(local)
        })
    }

    /// The pack folder, or `None` for the default pack built into the binary (no
    /// `--rules` and no `rules/` here). A `rules/` that exists is always used, broken or
    /// not: falling back silently would run rules the user did not write.
    pub(crate) fn rules_dir(&self) -> Option<PathBuf> {
        self.rules.clone().or_else(|| {
            let local = default_rules_dir();
            local.exists().then_some(local)
        })
    }

    /// The pack as messages name it.
    pub(crate) fn rules_label(&self) -> String {
        self.rules_dir().map_or_else(
            || BUILT_IN_PACK_LABEL.to_string(),
            |dir| dir.display().to_string(),
        )
    }

    /// Captures the pack's files (from its folder, or the built-in default pack).
    pub fn snapshot(&self) -> Result<PackSnapshot, Vec<Problem>> {
        let schemas = self.schemas_dir();
        match self.rules_dir() {
            Some(dir) => PackSnapshot::read(&dir, schemas.as_deref()),
            None => PackSnapshot::built_in(schemas.as_deref()),
        }
    }

    /// Reads and builds the pack, or returns its problems.
    pub fn load(&self) -> Result<CompiledPack, Vec<Problem>> {
        CompiledPack::build(self.snapshot()?)
    }

    /// Reads the pack and accepts it as a reload would (build, then its own tests):
    /// what a service runs.
    pub fn accept(&self) -> Result<CompiledPack, Vec<Problem>> {
        packtest::accept(self.snapshot()?)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service's log is its record of what it synced; elsewhere only warnings.
    let default_filter = match cli.command {
        Command::Run(_) => "warn,rulebridge=info",
        _ => "warn",
    };
    let json_log = cli.log_format == logging::LogFormat::Json;
    logging::install(cli.log_format, default_filter);
    let result = match cli.command {
        Command::Check(args) if args.watch => check::watch(&args.pack),
        Command::Check(args) => check::check(&args),
        Command::Test(args) => test_cmd::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Repl(args) => repl::run(&args),
        Command::Functions(args) => functions::run(&args),
        Command::Emulate(args) => emulate::run(&args),
        Command::Run(args) => service::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Status(args) => service::status(&args),
        Command::Explain(args) => service::explain(&args),
        Command::Retry(args) => service::retry(&args),
        Command::Playground(args) => playground::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) if json_log => {
            // Every stderr line of a JSON log parses, the last one too.
            tracing::error!(event = "command.failed", error = %format!("{err:#}"), "{err:#}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A share of incidents, 0 to 1 (`--connector-incidents`, `--sentinel-incidents-in-graph`).
fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("must be a share between 0 and 1, got {text}")),
    }
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        println!("{p}");
    }
    println!(
        "{} problem{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
}

fn describe(pack: &CompiledPack) -> String {
    let tables = pack.tables.names().count();
    format!(
        "rule pack '{}' version {}: {} rule{}, {} table{}",
        pack.name,
        pack.version,
        pack.rules.len(),
        if pack.rules.len() == 1 { "" } else { "s" },
        tables,
        if tables == 1 { "" } else { "s" }
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
