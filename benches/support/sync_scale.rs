//! The scale scenario of `cargo bench --bench sync` (issue 12): a tenant of N linked
//! incidents (30% open) under the services' real rate limits, analysts editing both
//! sides, `run`'s own loop (`service::run`) syncing — on a compressed clock.
//!
//! The clock runs `K` = 10 times fast, and everything that is a rate runs with it: the
//! emulator's token buckets refill 10× faster (`POST /_emulator/throttle {"scale":10}`;
//! bursts unchanged), the client's limits are 10× the production defaults, polls come
//! every 3 s instead of 30 s, analysts make 20 edits/s instead of 2. One real minute is
//! ten minutes of the tenant; lags are reported ×K, in the tenant's seconds.
//! `SYNC_BENCH_SCALE_K` sets another compression (1 runs on the tenant's own clock).
//! `SYNC_BENCH_SCALE_OPEN` is the share of edits made on open incidents (0.9; 1.0 takes
//! the closed, retired incidents out of the comment lags, to tell their tail apart).
//!
//! Each scenario runs in its own process (this binary, re-executed with
//! `SYNC_BENCH_SCALE_RUN`), so its peak RSS is its own: the syncing process, with the
//! emulator in yet another process (`rulebridge emulate`). The initial sync of the seed
//! runs unthrottled first (it is history, not what is measured).

use rulebridge::metrics::{self, Metrics};
use rulebridge::rules::PackHandle;
use rulebridge::service::{build_syncer_tuned, Tuning};
use rulebridge::testbed::{emulator_env, service_config, TestbedOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much faster than the tenant's clock the run goes, unless `SYNC_BENCH_SCALE_K`
/// says otherwise (1 is the tenant's own clock).
const K: f64 = 10.0;

fn default_compression() -> f64 {
    K
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub incidents: usize,
    /// The sweep-only change detection of earlier versions.
    pub sweep_only: bool,
    /// Simulated seconds measured.
    pub simulated_secs: u64,
    /// Every Sentinel edit is followed by a push hook (an automation rule's Logic App).
    #[serde(default)]
    pub hook: bool,
    /// The clock's compression (see [`K`]).
    #[serde(default = "default_compression")]
    pub compression: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub spec: Spec,
    pub links: usize,
    pub edits: usize,
    pub comment_edits: usize,
    pub api_calls: f64,
    pub calls_per_edit: f64,
    pub field_lag_p50: Option<f64>,
    pub field_lag_p95: Option<f64>,
    pub comment_lag_p50: Option<f64>,
    pub comment_lag_p95: Option<f64>,
    /// Comment copies made while the analysts worked, and in all (after the drain).
    pub comments_in_window: usize,
    pub cycles: f64,
    pub cycles_due: f64,
    /// Comment edits on linked incidents (the others are not the pack's to sync).
    pub comments_expected: usize,
    pub comments_copied: usize,
    pub throttled_429: f64,
    pub retry_after_waits: f64,
    pub peak_rss_mib: f64,
    pub by_purpose: Vec<(String, f64)>,
    /// From a hook's arrival to its reconcile's end, in real seconds (not compressed:
    /// it is round trips and queueing, not budget).
    pub hook_lag_p50: Option<f64>,
    pub hook_lag_p95: Option<f64>,
    pub hooks_accepted: f64,
    /// What the accepted hooks led to (`rulebridge_hook_syncs_total` by outcome): a hook
    /// lag is only measured for the `synced` ones.
    #[serde(default)]
    pub hook_outcomes: Vec<(String, f64)>,
    /// Listed Defender changes completed with kept alerts instead of a read.
    #[serde(default)]
    pub alert_reads_saved: u64,
}

/// Whole seconds, or `n/a` when nothing was observed.
fn secs(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |s| format!("{s:.0} s"))
}

/// Runs every scenario, each in its own process, and prints the table.
pub fn run_all(sizes: &[usize], simulated_secs: u64) {
    let compression = std::env::var("SYNC_BENCH_SCALE_K")
        .ok()
        .and_then(|k| k.parse::<f64>().ok())
        .filter(|k| *k >= 1.0)
        .unwrap_or(K);
    let mut outcomes = Vec::new();
    let mut specs = Vec::new();
    for &incidents in sizes {
        for sweep_only in [true, false] {
            specs.push(Spec {
                incidents,
                sweep_only,
                simulated_secs,
                hook: false,
                compression,
            });
        }
    }
    if let Some(&largest) = sizes.iter().max() {
        specs.push(Spec {
            incidents: largest,
            sweep_only: false,
            simulated_secs,
            hook: true,
            compression,
        });
    }
    {
        for spec in specs {
            let output = Command::new(std::env::current_exe().unwrap())
                .env(
                    "SYNC_BENCH_SCALE_RUN",
                    serde_json::to_string(&spec).unwrap(),
                )
                .stderr(Stdio::inherit())
                .output()
                .expect("running a scale scenario");
            let text = String::from_utf8_lossy(&output.stdout);
            let line = text
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .unwrap_or_else(|| panic!("scenario {spec:?} printed no result: {text}"));
            let outcome: Outcome = serde_json::from_str(line).unwrap();
            println!("scale {}", line);
            outcomes.push(outcome);
        }
    }
    println!(
        "\n| links | detection | edits (comments) | API calls / edit | field lag p50 / p95 | comment lag p50 / p95 | comments on linked incidents: copied (in the window) of | 429s (waited out) | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {} ({}) | {:.2} | {} / {} | {} / {} | {} ({}) of {} | {} ({}) | {:.0} MiB |",
            o.links,
            match (o.spec.sweep_only, o.spec.hook) {
                (true, _) => "sweep only (before)",
                (false, false) => "digests + scans",
                (false, true) => "digests + scans + hook",
            },
            o.edits,
            o.comment_edits,
            o.calls_per_edit,
            secs(o.field_lag_p50),
            secs(o.field_lag_p95),
            secs(o.comment_lag_p50),
            secs(o.comment_lag_p95),
            o.comments_copied,
            o.comments_in_window,
            o.comments_expected,
            o.throttled_429,
            o.retry_after_waits,
            o.peak_rss_mib
        );
    }
    for o in outcomes.iter().filter(|o| o.spec.hook) {
        println!(
            "push hook, {} links: {} hooks accepted ({}); hook → Defender write p50 {}, p95 {} (real time)",
            o.links,
            o.hooks_accepted,
            o.hook_outcomes
                .iter()
                .map(|(outcome, n)| format!("{n:.0} {outcome}"))
                .collect::<Vec<_>>()
                .join(", "),
            o.hook_lag_p50.map_or("n/a".into(), |s| format!("{s:.3} s")),
            o.hook_lag_p95.map_or("n/a".into(), |s| format!("{s:.3} s"))
        );
    }
    for o in &outcomes {
        let purposes: Vec<String> = o
            .by_purpose
            .iter()
            .map(|(p, n)| format!("{p} {:.0}", n))
            .collect();
        println!(
            "calls by purpose, {} links, {}: {}",
            o.links,
            if o.spec.sweep_only {
                "sweep only"
            } else {
                "digests"
            },
            purposes.join(", ")
        );
        if o.alert_reads_saved > 0 {
            println!(
                "kept alerts, {} links: {} listed changes needed no read of their alerts",
                o.links, o.alert_reads_saved
            );
        }
    }
}

/// One scenario, in this process; prints its outcome as one JSON line.
pub fn run_one(spec: Spec) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(scenario(spec));
    println!("{}", serde_json::to_string(&outcome).unwrap());
}

async fn scenario(spec: Spec) -> Outcome {
    let k = spec.compression;
    let (mut emulator, info) = crate::spawn_emulator(&[
        "--generate",
        &spec.incidents.to_string(),
        "--open-share",
        "0.3",
        "--unthrottled",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let pack = Arc::new(PackHandle::new(crate::pack()));
    let tuning = Tuning {
        digests: !spec.sweep_only,
        ..Tuning::default()
    };

    // The history, unthrottled.
    let mut options = TestbedOptions::new(0, dir.path().join("state.db"));
    options.sweep_batch = 0;
    let config = service_config(&info, &options);
    let env = emulator_env(&info);
    {
        let syncer = build_syncer_tuned(
            &config,
            &env,
            pack.clone(),
            Arc::new(Metrics::new()),
            &tuning,
        )
        .unwrap();
        for _ in 0..10 {
            let reports = syncer.cycle().await.unwrap();
            if reports
                .iter()
                .all(|r| r.written == 0 && r.interrupted.is_none())
            {
                break;
            }
        }
    }
    let links = {
        let state = rulebridge::state::SqliteStore::open(&dir.path().join("state.db")).unwrap();
        use rulebridge::state::StateStore;
        state.counts().unwrap().links as usize
    };

    // The measured run: production limits and intervals, compressed by k.
    options.production_rate_limits = true;
    let mut config = service_config(&info, &options);
    config.defender.requests_per_minute *= k;
    config.sentinel.requests_per_second *= k;
    config.sync.poll_interval_secs = (30.0 / k) as u64;
    config.sync.sweep_batch = 20;
    // Five of the tenant's minutes: long enough that closed, quiet incidents have
    // retired, as they have on a tenant that has run for a while.
    config.sync.retire_closed_after = format!("{}s", (300.0 / k) as u64);
    // The poll overlap (the clock skew allowed between the `Date` header and the
    // stamps) and the age of kept alerts are times of the tenant's too. Its 5 s is
    // 0.5 s at k = 10, below the setting's whole seconds: 0 then, which the emulator
    // allows (its stamps and its `Date` header read one clock).
    config.sync.overlap_secs = (5.0 / k) as u64;
    config.sync.alert_copies_max_age = if spec.sweep_only {
        // The detection before issue 12 read every changed incident's alerts.
        "off".to_string()
    } else {
        format!("{}s", ((3600.0 / k) as u64).max(1))
    };
    let secret_file = dir.path().join("hook-secret");
    if spec.hook {
        std::fs::write(&secret_file, "bench-hook-secret-0123456789").unwrap();
        config.hooks.enabled = true;
        config.hooks.secret_file = Some(secret_file.clone());
        config.hooks.requests_per_minute = (120.0 * k) as u32;
        // A port of its own, known before `run` binds it.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        config.hooks.listen = Some(free.local_addr().unwrap());
    }
    let hook_url = config
        .hooks
        .listen
        .map(|addr| format!("http://{addr}/hooks/sentinel"));
    let http = reqwest::Client::new();
    let origin = reqwest::Url::parse(&info.graph_base_url)
        .unwrap()
        .origin()
        .ascii_serialization();
    let control = |path: &str| format!("{origin}/_emulator{path}");
    http.post(control("/throttle"))
        .json(&serde_json::json!({ "scale": k }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let syncer = Arc::new(
        build_syncer_tuned(&config, &env, pack.clone(), metrics.clone(), &tuning).unwrap(),
    );
    let real = Duration::from_secs_f64(spec.simulated_secs as f64 / k);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // `run`'s loop and the analysts side by side on this task (`run` holds a watch
    // guard across awaits, so it is not spawned).
    let service = rulebridge::service::run(&config, syncer.clone(), metrics.clone(), None, async {
        let _ = stop_rx.await;
    });
    // Analysts: 2 edits/s on the tenant's clock, a quarter of them comments, nine in
    // ten on open incidents (a SOC works its queue).
    let open_share = std::env::var("SYNC_BENCH_SCALE_OPEN")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| (0.0..=1.0).contains(v))
        .unwrap_or(0.9);
    let edit_url = control(&format!(
        "/analysts/edit?count=1&comments=0.25&open={open_share}"
    ));
    let analysts = async {
        let rate = 2.0 * k;
        let started = Instant::now();
        let (mut edits, mut comment_edits) = (0usize, Vec::new());
        let mut next = Instant::now();
        while started.elapsed() < real {
            let response: Value = http
                .post(&edit_url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for edit in response["value"].as_array().into_iter().flatten() {
                edits += 1;
                if let (Some(url), "sentinel") = (&hook_url, edit["side"].as_str().unwrap_or("")) {
                    // As an automation rule's playbook would, beside the edit.
                    let request = http
                        .post(url)
                        .header("x-rulebridge-secret", "bench-hook-secret-0123456789")
                        .json(&serde_json::json!({"incidentName": edit["incident"]}));
                    tokio::spawn(async move {
                        let _ = request.send().await;
                    });
                }
                if edit["kind"] == "comment" {
                    let side = edit["side"].as_str().unwrap_or("").to_string();
                    let incident = edit["incident"].as_str().unwrap_or("").to_string();
                    comment_edits.push((side, incident));
                }
            }
            next += Duration::from_secs_f64(1.0 / rate);
            tokio::time::sleep_until(next.into()).await;
        }
        let _ = stop_tx.send(());
        (edits, comment_edits)
    };
    let (served, (edits, comment_edits)) = tokio::join!(service, analysts);
    served.unwrap();
    let measured = syncer.stats();
    let sum = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // The window's calls; the drain below is not the tenant's steady state.
    let api_calls = sum(&metrics.render(), "rulebridge_api_calls_total{");
    // Cycles `run` started in the window (one Defender poll each), against the
    // interval's count: fewer means cycles overran the interval.
    let cycles: f64 = ["ok", "interrupted"]
        .iter()
        .filter_map(|r| metrics.value(metrics::POLLS, &[("side", "defender"), ("result", r)]))
        .sum();
    // Then until calm (still throttled): every edit must have arrived.
    for _ in 0..20 {
        let reports = syncer.cycle().await.unwrap();
        if reports
            .iter()
            .all(|r| r.written == 0 && r.interrupted.is_none())
        {
            break;
        }
    }
    let text = metrics.render();
    let lag = |name, q| metrics.quantile(name, q).map(|s| s * k);
    // By API and purpose ("defender poll"): Graph's budget is the scarce one.
    let counted = &metrics;
    let by_purpose = ["defender", "sentinel"]
        .iter()
        .flat_map(|side| {
            rulebridge::client::Purpose::ALL.iter().map(move |p| {
                let n = counted
                    .value(
                        metrics::API_CALLS_BY_PURPOSE,
                        &[("side", side), ("purpose", p.name())],
                    )
                    .unwrap_or(0.0);
                (format!("{side} {}", p.name()), n)
            })
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    // Comments on incidents the pack syncs (not filtered, not merged away), by side.
    let state = syncer.state();
    let linked = |(side, incident): &(String, String)| match side.as_str() {
        "defender" => state
            .link(incident)
            .ok()
            .flatten()
            .is_some_and(|l| l.created),
        _ => state
            .link_by_sentinel(incident)
            .ok()
            .flatten()
            .is_some_and(|l| l.created),
    };
    let comments_expected = comment_edits.iter().filter(|e| linked(e)).count();
    let comment_edits = comment_edits.len();
    let stats = syncer.stats();
    let hooks_accepted = metrics
        .value(metrics::HOOKS, &[("result", "accepted")])
        .unwrap_or(0.0);
    let hook_outcomes = [
        "synced",
        "unchanged",
        "deferred",
        "dead_lettered",
        "unlinked",
    ]
    .iter()
    .filter_map(|outcome| {
        let n = metrics.value(metrics::HOOK_SYNCS, &[("outcome", outcome)])?;
        Some((outcome.to_string(), n))
    })
    .collect();
    let outcome = Outcome {
        alert_reads_saved: stats.alert_reads_saved,
        hook_outcomes,
        hook_lag_p50: metrics.quantile(metrics::HOOK_LAG, 0.5),
        hook_lag_p95: metrics.quantile(metrics::HOOK_LAG, 0.95),
        hooks_accepted,
        cycles,
        cycles_due: spec.simulated_secs as f64 / 30.0,
        comments_expected,
        comments_in_window: (measured.comments_to_defender + measured.comments_to_sentinel)
            as usize,
        links,
        edits,
        comment_edits,
        api_calls,
        calls_per_edit: api_calls / edits.max(1) as f64,
        field_lag_p50: lag(metrics::SYNC_LAG, 0.5),
        field_lag_p95: lag(metrics::SYNC_LAG, 0.95),
        comment_lag_p50: lag(metrics::COMMENT_LAG, 0.5),
        comment_lag_p95: lag(metrics::COMMENT_LAG, 0.95),
        comments_copied: (stats.comments_to_defender + stats.comments_to_sentinel) as usize,
        throttled_429: text
            .lines()
            .filter(|l| {
                l.starts_with("rulebridge_api_calls_total{") && l.contains("status=\"429\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            // An empty float sum is -0, which would print as "-0".
            .sum::<f64>()
            + 0.0,
        retry_after_waits: ["defender", "sentinel"]
            .iter()
            .filter_map(|side| {
                metrics.value(
                    metrics::THROTTLED_WAITS,
                    &[("side", side), ("cause", "retry_after")],
                )
            })
            .sum::<f64>()
            + 0.0,
        peak_rss_mib: crate::peak_rss_mib(),
        by_purpose,
        spec,
    };
    let _ = emulator.kill();
    let _ = emulator.wait();
    outcome
}
