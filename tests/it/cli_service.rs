//! The service commands through the real binary: `run` against the emulator until
//! SIGTERM, then `status` and `explain` over the state it left; config errors; `demo`.

use crate::common;
use rulebridge::emulator::{seed, Emulator, EmulatorConfig, EmulatorInfo};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn rulebridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(args)
        .output()
        .unwrap()
}

/// A config for the emulator at `info`; `sync_extra` lines go into `[sync]`, `extra`
/// at the end.
fn write_config(dir: &Path, info: &EmulatorInfo, sync_extra: &str, extra: &str) -> String {
    let rules = std::env::current_dir().unwrap().join("rules");
    common::write_emulator_config(dir, info, &rules, sync_extra, extra)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_sigterm_then_status_and_explain_show_what_happened() {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    emulator.store().seed_many(seed::generate(40, 3)).unwrap();
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    // The seed is history from before the first start: asked for as a backfill.
    let config = write_config(dir.path(), &info, "backfill = \"3650d\"", "");

    let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["run", "--config", &config])
        .env("RUST_LOG", "rulebridge=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log names the ops address (the config asked for any free port).
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ops = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no ops address in the log: {log}"
        );
        let line = lines_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the ops address in the log");
        log.push_str(&line);
        log.push('\n');
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // The first cycle runs at once; wait for it to have created the twins.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while emulator.store().sentinel.len() < 30 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rulebridge_writes_total{result=\"ok\",side=\"sentinel\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rulebridge_pack_info{version=\""),
        "{metrics}"
    );
    let health = reqwest::get(format!("http://{ops}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    reader.join().unwrap();
    log.extend(lines_rx.try_iter().map(|l| l + "\n"));
    assert!(exit.success(), "{log}");
    assert!(log.contains("stopped; state committed"), "{log}");
    assert!(
        !log.contains(&info.client_secret),
        "the secret leaked into the log"
    );

    let status = rulebridge(&["status", "--config", &config, "--json"]);
    assert!(status.status.success());
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let twins = emulator.store().sentinel.len() as i64;
    assert_eq!(status["links"].as_i64(), Some(twins), "{status:#}");
    assert!(status["defender"]["cursor"].is_string(), "{status:#}");
    assert_eq!(status["pack"]["version"].as_str().map(str::len), Some(12));
    assert_eq!(status["dead_letters"].as_array().map(Vec::len), Some(0));

    let human = rulebridge(&["status", "--config", &config]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains(&format!("links          {twins}")), "{text}");

    let (defender_id, sentinel_id) = {
        let store = emulator.store();
        let (name, twin) = store.sentinel.iter().next().unwrap();
        let label = twin["properties"]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|l| {
                l["labelName"]
                    .as_str()?
                    .strip_prefix("defender-xdr:")
                    .map(str::to_string)
            })
            .unwrap();
        (label, name.clone())
    };
    for id in [&defender_id, &sentinel_id] {
        let out = rulebridge(&["explain", "--config", &config, id]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains(&format!(
                "Defender incident {defender_id} <-> Sentinel incident {sentinel_id}"
            )),
            "{text}"
        );
        assert!(
            text.contains("created") && text.contains("rule microsoft-standard @ pack"),
            "{text}"
        );
    }
    let unknown = rulebridge(&["explain", "--config", &config, "no-such-incident"]);
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn a_config_with_an_unknown_key_or_a_secret_is_refused_with_its_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let info = crate::common::unreachable_emulator("s3cr3t-value");
    let config = write_config(dir.path(), &info, "", "[reload]\nwatch = true\nbogus = 1\n");
    let out = rulebridge(&["run", "--config", &config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/reload") && err.contains("bogus"), "{err}");

    let config = write_config(dir.path(), &info, "", "");
    let with_secret = std::fs::read_to_string(&config).unwrap().replace(
        "client_secret_file = \"secret\"",
        "client_secret = \"s3cr3t-value\"",
    );
    std::fs::write(&config, with_secret).unwrap();
    let out = rulebridge(&["status", "--config", &config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/credentials") && err.contains("client_secret"),
        "{err}"
    );
    assert!(
        !err.contains("s3cr3t-value"),
        "the error repeats the secret: {err}"
    );
}

#[test]
fn demo_json_reports_a_consistent_sync() {
    let out = rulebridge(&[
        "demo",
        "--incidents",
        "40",
        "--duration",
        "2",
        "--analysts",
        "10",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["consistent"], true, "{summary:#}");
    let created = summary["created"].as_u64().unwrap();
    let filtered = summary["filtered"].as_u64().unwrap();
    assert_eq!(created + filtered, 40, "{summary:#}");
    assert_eq!(summary["dead_letters"], 0);
    assert!(summary["api_calls"].as_u64().unwrap() > created);
    assert!(summary["sync_lag_seconds"]["p95"].is_number() || summary["updates_to_sentinel"] == 0);
}
