//! `rulebridge emulate`: runs the local Graph + Sentinel emulator in the foreground,
//! seeded from files and/or the built-in generator, optionally with emulated analysts
//! and injected faults, until Ctrl-C. It behaves as the real services are observed to
//! (`--profile observed`, the default) or as the docs read (`--profile strict`). The first line on stdout is the same JSON as
//! `GET /_emulator/info`, so a script can start it and read where to connect (and,
//! for sign-in without a secret, the test certificate paths, the managed-identity
//! endpoints and the federated-token URL). `--cloud`, `--graph-roles`,
//! `--arm-actions`, `--arm-not-actions`, `--client-secret-expired`,
//! `--client-certificate` and `--federated-subject` shape what sign-in and
//! authorization allow.

use crate::emulator::{analysts, seed, Cloud, Emulator, EmulatorConfig, Profile};
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EmulateArgs {
    /// Address to listen on; port 0 picks a free port (printed in the info line).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8943")]
    pub listen: SocketAddr,
    /// Graph incidents to seed: an incident, a list response {"value": [...]}, an array,
    /// or JSONL. Repeatable; files win over generated incidents with the same id.
    #[arg(long = "seed", value_name = "FILE")]
    pub seed: Vec<PathBuf>,
    /// How many realistic Graph incidents to generate (0 for none).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub generate: usize,
    /// Seed of the generator and the analysts: the same value, the same data.
    #[arg(long = "random-seed", value_name = "U64", default_value_t = 1)]
    pub random_seed: u64,
    /// Analyst edits per second on either side (assign, start, close, comment, tag);
    /// 0 turns the analysts off.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub analysts: f64,
    /// Fault injection, comma-separated kind[:param]@endpoint=rate, e.g.
    /// 429:2@graph-list=0.1,503@any=0.05,slow:1500@sentinel-put=0.2,drop@graph-patch=0.01,etag-race@sentinel-put=0.1
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<String>,
    /// observed: as Microsoft's services behave on real tenants (ignored $orderby,
    /// offset paging over the live set, throttling, lowercased names...); strict: the
    /// tidy reading of the docs.
    #[arg(long, value_name = "PROFILE", default_value = "observed")]
    pub profile: Profile,
    /// Share (0-1) of seeded Defender incidents that Microsoft's Defender XDR connector
    /// has already copied to Sentinel (providerName "Microsoft XDR").
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = super::parse_share)]
    pub connector_incidents: f64,
    /// Share (0-1) of seeded Defender incidents that came from Sentinel, as the unified
    /// portal lists them (alerts from serviceSource microsoftSentinel).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = super::parse_share)]
    pub sentinel_incidents_in_graph: f64,
    /// Graph answers $expand=alerts together with $filter with HTTP 500 when the tenant
    /// holds more incidents than this (observed profile; 0 = never).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub graph_expand_filter_limit: usize,
    /// Serve without the services' rate limits (observed profile): for benchmarks and
    /// tools that measure rulebridge, not Microsoft's budgets.
    #[arg(long)]
    pub unthrottled: bool,
    /// The services' rate limits refilled this many times faster (a compressed clock:
    /// benchmarks that run ten minutes of a tenant in one).
    #[arg(long, value_name = "K", default_value_t = 1.0)]
    pub throttle_scale: f64,
    /// The share of generated incidents that are open (active or in progress); the
    /// generator's own mix when not given.
    #[arg(long, value_name = "SHARE", value_parser = super::parse_share)]
    pub open_share: Option<f64>,
    /// The Azure cloud played: public, usgov or usgov-dod. Tokens are issued only for
    /// its Graph and ARM resources (another cloud's: AADSTS500011).
    #[arg(long, value_name = "CLOUD", default_value = "public")]
    pub cloud: Cloud,
    /// The app's client secret is expired: the right secret gets AADSTS7000222.
    #[arg(long)]
    pub client_secret_expired: bool,
    /// Registers one more certificate (PEM) on the app, besides the test ones whose
    /// paths the info line prints. Repeatable.
    #[arg(long = "client-certificate", value_name = "PATH")]
    pub client_certificate: Vec<PathBuf>,
    /// The subject the app's federated identity credential accepts.
    #[arg(long, value_name = "SUBJECT", default_value = crate::emulator::identity::DEFAULT_FEDERATED_SUBJECT)]
    pub federated_subject: String,
    /// The Graph application roles consented to the app (comma-separated; "" for none).
    #[arg(
        long,
        value_name = "ROLES",
        default_value = "SecurityIncident.ReadWrite.All"
    )]
    pub graph_roles: String,
    /// The actions of the app's role assignment on the workspace (comma-separated, `*`
    /// wildcards; "" for none).
    #[arg(
        long,
        value_name = "ACTIONS",
        default_value = "Microsoft.SecurityInsights/*"
    )]
    pub arm_actions: String,
    /// Actions excluded from them (comma-separated).
    #[arg(long, value_name = "ACTIONS", default_value = "")]
    pub arm_not_actions: String,
}

/// A comma-separated list; empty items (and an empty string) are dropped.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn run(args: &EmulateArgs) -> anyhow::Result<ExitCode> {
    if !(args.analysts.is_finite() && args.analysts >= 0.0) {
        anyhow::bail!("--analysts must be a rate >= 0, got {}", args.analysts);
    }
    let mut config = EmulatorConfig {
        profile: args.profile,
        cloud: args.cloud,
        client_secret_expired: args.client_secret_expired,
        client_certificates: args.client_certificate.clone(),
        federated_subject: args.federated_subject.clone(),
        graph_roles: list(&args.graph_roles),
        arm_actions: list(&args.arm_actions),
        arm_not_actions: list(&args.arm_not_actions),
        ..EmulatorConfig::default()
    };
    config.observed.connector_incidents = args.connector_incidents;
    config.observed.sentinel_incidents_in_graph = args.sentinel_incidents_in_graph;
    config.observed.graph_expand_filter_limit = Some(args.graph_expand_filter_limit);
    if !(args.throttle_scale.is_finite() && args.throttle_scale > 0.0) {
        anyhow::bail!("--throttle-scale must be > 0, got {}", args.throttle_scale);
    }
    config.observed.throttle = config.observed.throttle.scaled(args.throttle_scale);
    if args.unthrottled {
        config.observed.throttle = crate::emulator::throttle::ThrottleConfig::unlimited();
    }
    if let Some(spec) = &args.faults {
        config.faults = crate::emulator::faults::parse_spec(spec)
            .map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
    }
    // Files are read before anything listens, so a bad file fails fast and loudly.
    let mut from_files = Vec::new();
    for path in &args.seed {
        from_files.extend(seed::load_seed_file(path)?);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, config, from_files))
}

async fn serve(
    args: &EmulateArgs,
    config: EmulatorConfig,
    from_files: Vec<serde_json::Value>,
) -> anyhow::Result<ExitCode> {
    let emulator = Emulator::start(args.listen, config)
        .await
        .with_context(|| format!("starting the emulator on {}", args.listen))?;
    let (generated, files) = {
        let mut store = emulator.store();
        let generated = store
            .seed_many(match args.open_share {
                Some(open) => seed::generate_open_share(args.generate, args.random_seed, open),
                None => seed::generate(args.generate, args.random_seed),
            })
            .map_err(anyhow::Error::msg)?;
        let files = store.seed_many(from_files).map_err(anyhow::Error::msg)?;
        (generated, files)
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&emulator.info())?)?;
    stdout.flush()?;
    drop(stdout);
    eprintln!(
        "emulator on http://{} ({} profile): {generated} generated + {files} seeded Graph incidents; analysts {}; Ctrl-C stops",
        emulator.addr,
        emulator.profile(),
        if args.analysts > 0.0 {
            format!("{} edits/s", args.analysts)
        } else {
            "off".into()
        }
    );
    // A different stream than the generator's, so the analysts' choices do not mirror
    // the data's.
    let analysts = analysts::spawn(
        emulator.store_handle(),
        args.analysts,
        args.random_seed ^ 0xA11A_1757,
    );
    // SIGTERM too: the emulator's drop removes its temporary test-certificate folder.
    super::service::shutdown_signal().await;
    analysts.abort();
    drop(emulator);
    Ok(ExitCode::SUCCESS)
}
