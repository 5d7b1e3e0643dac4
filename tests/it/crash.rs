//! Crash safety of `rulebridge run`: the real binary syncs 1,500 incidents
//! against the emulator while analysts edit both sides, and is killed with SIGKILL at
//! random points, again and again. A final run is stopped with SIGTERM (it must exit
//! cleanly), then a syncer over the same state file lets everything settle, and the two
//! sides must agree: no duplicated incident or comment, no lost update.

use rulebridge::config::Config;
use rulebridge::emulator::rng::SplitMix64;
use rulebridge::emulator::throttle::ThrottleConfig;
use rulebridge::emulator::{analysts, seed, Emulator, EmulatorConfig};
use rulebridge::metrics::Metrics;
use rulebridge::rules::PackHandle;
use rulebridge::state::{SqliteStore, StateStore};
use rulebridge::{service, testbed};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::pack;

fn spawn_run(config: &Path, dir: &Path, round: usize) -> Child {
    let log = std::fs::File::create(dir.join(format!("run-{round}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "rulebridge=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    // The services as observed (offset pages, ignored $orderby, …) but without their
    // rate limits and the large-tenant $expand failure: this test is about kills, and
    // its processes live for under a second each (those have tests of their own).
    let mut config = EmulatorConfig::default();
    config.observed.throttle = ThrottleConfig::unlimited();
    config.observed.graph_expand_filter_limit = None;
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    emulator
        .store()
        .seed_many(seed::generate(1500, 42))
        .unwrap();
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    let root = std::env::current_dir().unwrap();
    std::fs::write(dir.path().join("secret"), &info.client_secret).unwrap();
    let config_path = dir.path().join("rulebridge.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[defender]
tenant_id = "{tenant}"
graph_url = "{graph}"
token_url = "{token}"
requests_per_minute = 600000

[sentinel]
incidents_url = "{sentinel}"
token_url = "{token}"
requests_per_second = 10000

[credentials]
client_id = "{client}"
client_secret_file = "secret"

[sync]
poll_interval_secs = 5
sweep_batch = 100
# The seed is history from before the first start: the first poll reaches back to it.
start_from = 2000-01-01T00:00:00Z
state = "state.db"
rules = "{rules}"
schemas = "{schemas}"

[server]
listen = "127.0.0.1:0"
"#,
            tenant = info.tenant_id,
            graph = info.graph_base_url,
            token = info.token_url,
            sentinel = info.sentinel_incidents_url,
            client = info.client_id,
            rules = root.join("rules").display(),
            schemas = root.join("schemas").display(),
        ),
    )
    .unwrap();

    let editing = analysts::spawn(emulator.store_handle(), 40.0, 7);
    let mut rng = SplitMix64::new(2026);
    let mut links_after_kill = Vec::new();
    for round in 0..15 {
        let mut child = spawn_run(&config_path, dir.path(), round);
        let after = 20 + rng.below(800);
        tokio::time::sleep(Duration::from_millis(after)).await;
        child.kill().unwrap(); // SIGKILL on Unix: no cleanup, no final commit
        child.wait().unwrap();
        let state = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        links_after_kill.push(state.counts().unwrap().links);
    }
    editing.abort();
    eprintln!("links after each kill: {links_after_kill:?}");
    // The kills landed in the middle of work: the first sync was cut short at least once.
    let first_done = links_after_kill.iter().copied().max().unwrap();
    assert!(
        links_after_kill.iter().any(|&n| n > 0 && n < first_done),
        "no kill interrupted the initial sync: {links_after_kill:?}"
    );

    // A graceful stop: SIGTERM ends the service with success.
    let mut child = spawn_run(&config_path, dir.path(), 99);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        exit.success(),
        "SIGTERM must stop the service cleanly: {exit:?}"
    );

    // Settle with the same code over the same state file, then judge.
    let config = Config::load(&config_path).unwrap();
    let syncer = service::build_syncer(
        &config,
        Arc::new(PackHandle::new(pack())),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let cycles = testbed::quiesce(&syncer, 100).await.unwrap();
    assert!(cycles < 100, "did not settle");
    let report = testbed::consistency(&emulator, &pack(), syncer.state().as_ref());
    assert!(report.ok(), "{report:#?}");
    assert!(report.synced > 1300, "{report:#?}");
    assert_eq!(
        report.sentinel_incidents, report.synced,
        "duplicated incidents"
    );
    let counts = syncer.state().counts().unwrap();
    assert_eq!(counts.pending_creates, 0);
    assert_eq!(counts.links as usize, report.synced);
}
