//! Sync benchmarks (plain timing, printed; `cargo bench --bench sync`):
//!
//! 1. Initial sync: 10,000 generated Defender incidents in an emulator running as its own
//!    process (`rulebridge emulate`), synced by this process over loopback, faults off.
//!    Reports incidents/s and this process's peak RSS (the emulator's memory is not in it).
//! 2. Steady state: 1,000 incidents already synced; analysts edit both sides at a fixed
//!    rate while the sync polls every 5 s (the shortest interval the config allows).
//!    Reports p50/p95 sync lag (change on one side → acknowledged write on the other) and
//!    API calls per analyst edit.
//!
//! 3. Scale (`support/sync_scale.rs`): 1,000 and 10,000 linked incidents under the services'
//!    real rate limits on a compressed clock, both change detections side by side.
//!
//! `SYNC_BENCH_INCIDENTS` and `SYNC_BENCH_SECS` shrink the runs for a quick look;
//! `SYNC_BENCH_ONLY=initial|steady|scale` runs one; `SYNC_BENCH_SCALE_SIZES` (e.g.
//! `1000,10000`) and `SYNC_BENCH_SCALE_SECS` (simulated seconds, default 600) shape the
//! scale scenario.

#[path = "support/sync_scale.rs"]
mod scale;

use rulebridge::emulator::analysts::Analysts;
use rulebridge::emulator::EmulatorInfo;
use rulebridge::metrics::{self, Metrics};
use rulebridge::rules::{CompiledPack, PackHandle};
use rulebridge::snapshot::PackSnapshot;
use rulebridge::state::SqliteStore;
use rulebridge::sync::{SyncOptions, Syncer};
use rulebridge::testbed::{emulator_clients, Testbed, TestbedOptions};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pack() -> CompiledPack {
    let snapshot = PackSnapshot::read(Path::new("rules"), Some(Path::new("schemas"))).unwrap();
    CompiledPack::build(snapshot).unwrap_or_else(|p| panic!("{p:#?}"))
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `rulebridge emulate` on a free loopback port with `args`, and the info line it prints
/// first (the process is the caller's to kill).
pub fn spawn_emulator(args: &[&str]) -> (Child, EmulatorInfo) {
    let mut emulator = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["emulate", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rulebridge emulate");
    let mut line = String::new();
    std::io::BufReader::new(emulator.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info = serde_json::from_str(&line).expect("the emulator's info line");
    (emulator, info)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn initial_sync(incidents: usize) {
    let (mut emulator, info) = spawn_emulator(&[
        "--generate",
        &incidents.to_string(),
        // The services as observed, but for their rate limits (this measures
        // rulebridge) and the large-tenant $expand failure (its fallback reads
        // alerts per incident: a budget question, not a speed one).
        "--unthrottled",
        "--graph-expand-filter-limit",
        "0",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (graph, sentinel) =
        emulator_clients(&info, &TestbedOptions::new(0, dir.path().join("x")).retry).unwrap();
    let state = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let syncer = Syncer::new(
        graph,
        sentinel,
        state,
        Arc::new(PackHandle::new(pack())),
        Arc::new(Metrics::new()),
        SyncOptions {
            sweep_batch: 0,
            // The generated incidents are history: the first poll reaches back to it.
            start_from: Some("2000-01-01T00:00:00Z".into()),
            ..SyncOptions::new(info.tenant_id.clone())
        },
    );
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let report = syncer
        .poll(rulebridge::model::Side::Defender)
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stats = syncer.stats();
    println!(
        "initial sync: {} incidents listed, {} created, {} filtered, {} comments copied in {secs:.1} s = {:.0} incidents/s; peak RSS {:.0} MiB (before the sync {:.0} MiB)",
        report.seen, stats.created, stats.filtered, stats.comments_to_sentinel,
        report.seen as f64 / secs, peak_rss_mib(), rss_before
    );
    assert!(report.interrupted.is_none(), "{report:?}");
    let _ = emulator.kill();
    let _ = emulator.wait();
}

async fn steady_state(secs: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = TestbedOptions::new(1000, dir.path().join("state.db"));
    options.sweep_batch = 20;
    let tb = Testbed::start(pack(), options).await.unwrap();
    tb.quiesce(200).await.unwrap();
    let requests_before = api_requests(&tb);
    // Lag is measured from the steady phase only: a fresh metrics registry.
    let metrics = Arc::new(Metrics::new());
    let (graph, sentinel) = emulator_clients(
        &tb.info,
        &TestbedOptions::new(0, dir.path().join("x")).retry,
    )
    .unwrap();
    let syncer = Syncer::new(
        graph,
        sentinel,
        tb.syncer.state().clone(),
        tb.pack.clone(),
        metrics.clone(),
        SyncOptions::new(tb.info.tenant_id.clone()),
    );
    let rate = 2.0; // edits per second, both sides together
    let mut analysts = Analysts::new(11);
    let mut edits = 0usize;
    let until = Instant::now() + Duration::from_secs(secs);
    let mut next_poll = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next_poll {
            syncer.cycle().await.unwrap();
            next_poll += Duration::from_secs(5);
        }
        {
            let mut store = tb.emulator.store();
            if analysts.edit_once(&mut store).is_some() {
                edits += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
    }
    let calls = api_requests(&tb) - requests_before;
    rulebridge::testbed::quiesce(&syncer, 100).await.unwrap();
    let lag = |q| metrics.quantile(metrics::SYNC_LAG, q).unwrap_or(f64::NAN);
    let stats = syncer.stats();
    println!(
        "steady state ({secs} s, {edits} analyst edits, 5 s polls, sweep 20/cycle): sync lag p50 {:.2} s, p95 {:.2} s; {calls} API calls in the window = {:.1} per edit (sweep included); writes: {} to Sentinel, {} to Defender, {} comments",
        lag(0.5), lag(0.95), calls as f64 / edits.max(1) as f64,
        stats.updates_to_sentinel, stats.updates_to_defender,
        stats.comments_to_sentinel + stats.comments_to_defender
    );
    assert!(tb.consistency().ok());
}

fn api_requests(tb: &Testbed) -> usize {
    tb.emulator
        .store()
        .requests
        .iter()
        .filter(|r| !r.path.contains("oauth2") && !r.path.starts_with("/_emulator"))
        .count()
}

fn main() {
    // A scale scenario re-executes this binary to measure itself alone.
    if let Ok(spec) = std::env::var("SYNC_BENCH_SCALE_RUN") {
        scale::run_one(serde_json::from_str(&spec).expect("a scenario spec"));
        return;
    }
    // `cargo bench` passes --bench; a plain `cargo test --benches` run passes nothing we
    // need, so the benchmark always runs the same way.
    let only = std::env::var("SYNC_BENCH_ONLY").ok();
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if runs("initial") {
            initial_sync(env_usize("SYNC_BENCH_INCIDENTS", 10_000)).await;
        }
        if runs("steady") {
            steady_state(env_usize("SYNC_BENCH_SECS", 60) as u64).await;
        }
    });
    if runs("scale") {
        let sizes: Vec<usize> = std::env::var("SYNC_BENCH_SCALE_SIZES")
            .unwrap_or_else(|_| "1000,10000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        scale::run_all(&sizes, env_usize("SYNC_BENCH_SCALE_SECS", 600) as u64);
    }
}
