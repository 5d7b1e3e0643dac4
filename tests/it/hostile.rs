//! The hostile-pack corpus (`tests/hostile/<case>/`, data: a pack plus `expect.toml`),
//! run through the real binary: `rulebridge check`, `rulebridge eval`, and one live
//! `rulebridge run` against the emulator that hot-reloads every case in turn.
//!
//! Each case must be contained: the command exits as expected within its limits (a
//! timed case within `timeout_ms` + 250 ms beyond a good pack's run; a snapshot case
//! within `max_ms`), its peak RSS (VmHWM from /proc) under `max_rss_mb`, its error
//! located and clipped; and the live service rejects it (or reports it stuck), keeps
//! its RSS under 256 MB and syncing with the last good pack, refuses a second `run` on
//! its state file, picks up a later good save and exits within 10 s of SIGTERM while a
//! reload is stuck. Links and FIFOs cannot be committed portably, so the runner makes
//! them from each case's `[[make]]` entries.

use crate::common;
use rulebridge::emulator::{seed, Emulator, EmulatorConfig, EmulatorInfo};
use serde::Deserialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CORPUS: &str = "tests/hostile";
/// The service's RSS ceiling while it reloads hostile packs.
const LIVE_RSS_MB: u64 = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// The row (or the contained attack) this case stands for.
    row: String,
    /// Wall-clock ceiling of `check` and `eval` (snapshot cases).
    max_ms: Option<u64>,
    /// Peak RSS ceiling of `check` and `eval`.
    max_rss_mb: Option<u64>,
    max_output_bytes: Option<usize>,
    /// `eval` must end within the pack's timeout_ms + 250 ms (beyond a good pack's eval).
    #[serde(default)]
    timed: bool,
    #[serde(default)]
    make: Vec<Make>,
    check: Option<Step>,
    eval: Option<EvalStep>,
    live: Option<Live>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Make {
    symlink: Option<String>,
    target: Option<String>,
    fifo: Option<String>,
    /// A sparse file of `bytes` (no disk used): a pack far over the size ceiling.
    sparse: Option<String>,
    bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    exit: i32,
    #[serde(default)]
    contains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalStep {
    exit: i32,
    #[serde(default)]
    contains: Vec<String>,
    /// Replace this field of the probe incident with a value of `input_bytes`.
    input_field: Option<String>,
    input_bytes: Option<usize>,
    /// `string` (default) or `array` (an array of one huge string).
    input_json_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Live {
    /// `rejected` or `stuck`.
    result: String,
}

struct Case {
    name: String,
    dir: PathBuf,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(CORPUS)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("expect.toml").is_file())
        .map(|e| {
            let dir = e.path();
            let text = std::fs::read_to_string(dir.join("expect.toml")).unwrap();
            let expect: Expect =
                toml::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
            Case {
                name: e.file_name().to_string_lossy().into_owned(),
                dir,
                expect,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(cases.len() >= 15, "the corpus went missing");
    cases
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "expect.toml" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// The case as a pack folder at `dest`, with its links and FIFOs made.
fn materialize(case: &Case, dest: &Path) {
    copy_tree(&case.dir, dest);
    for make in &case.expect.make {
        if let (Some(link), Some(target)) = (&make.symlink, &make.target) {
            let at = dest.join(link);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, &at).unwrap();
        }
        if let (Some(file), Some(bytes)) = (&make.sparse, make.bytes) {
            let f = std::fs::File::create(dest.join(file)).unwrap();
            f.set_len(bytes).unwrap();
        }
        if let Some(fifo) = &make.fifo {
            let at = dest.join(fifo);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            let made = Command::new("mkfifo").arg(&at).status().unwrap();
            assert!(made.success(), "mkfifo {}", at.display());
        }
    }
}

struct Run {
    code: Option<i32>,
    /// Standard output and error, in that order (`check` prints problems on stdout).
    stderr: String,
    elapsed: Duration,
    peak_rss_kb: u64,
}

/// Peak resident set size (VmHWM) of a live process, in kB.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmHWM:")
}

fn rss_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS:")
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the binary to the end (killing it after 60 s: a hang is a failure, not a
/// stuck test), sampling its peak RSS from /proc while it runs.
fn run(args: &[&str]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let read_all = |mut from: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut from, &mut text).unwrap();
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let mut peak = 0;
    let code = loop {
        if let Some(kb) = peak_rss_kb(pid) {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("rulebridge {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    Run {
        code,
        stderr: out.join().unwrap() + err.join().unwrap().as_str(),
        elapsed,
        peak_rss_kb: peak,
    }
}

fn timeout_ms(pack: &Path) -> u64 {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(pack.join("pack.toml")).unwrap()).unwrap();
    manifest
        .get("limits")
        .and_then(|l| l.get("timeout_ms"))
        .and_then(|t| t.as_integer())
        .map_or(250, |t| t as u64)
}

fn probe(dir: &Path, step: &EvalStep) -> PathBuf {
    let mut incident: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CORPUS).join("incident.json")).unwrap(),
    )
    .unwrap();
    if let (Some(field), Some(bytes)) = (&step.input_field, step.input_bytes) {
        let huge = serde_json::Value::String("A".repeat(bytes));
        incident[field] = match step.input_json_type.as_deref() {
            Some("array") => serde_json::Value::Array(vec![huge]),
            _ => huge,
        };
    }
    let path = dir.join("probe.json");
    std::fs::write(&path, serde_json::to_vec(&incident).unwrap()).unwrap();
    path
}

fn assert_contains(case: &str, what: &str, text: &str, wanted: &[String]) {
    for w in wanted {
        assert!(
            text.contains(w.as_str()),
            "{case}: {what} lacks {w:?}:\n{}",
            clip(text)
        );
    }
}

fn clip(text: &str) -> String {
    if text.len() <= 4000 {
        text.to_string()
    } else {
        let mut end = 4000;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &text[..end], text.len())
    }
}

#[test]
fn every_hostile_pack_is_contained_by_check_and_eval() {
    let work = tempfile::tempdir().unwrap();
    // What a good pack's eval costs (process start, load, one incident): the timed
    // cases are judged on what they add to it.
    let good = work.path().join("_good");
    copy_tree(&Path::new(CORPUS).join("_good"), &good);
    let incident = Path::new(CORPUS).join("incident.json");
    let baseline = (0..3)
        .map(|_| {
            let r = run(&[
                "eval",
                "--rules",
                good.to_str().unwrap(),
                "--input",
                incident.to_str().unwrap(),
            ]);
            assert_eq!(r.code, Some(0), "the good pack: {}", r.stderr);
            r.elapsed
        })
        .min()
        .unwrap();
    eprintln!(
        "baseline: a good pack's eval takes {} ms",
        baseline.as_millis()
    );
    eprintln!(
        "{:<18} {:>8} {:>8} {:>9} {:>9}  row",
        "case", "check ms", "eval ms", "limit ms", "peak MB"
    );
    for case in cases() {
        let pack = work.path().join(&case.name);
        materialize(&case, &pack);
        let rules = pack.to_str().unwrap();
        let e = &case.expect;
        let mut check_ms = String::from("-");
        let mut eval_ms = String::from("-");
        let mut limit = String::from("-");
        let mut peak_mb = 0;
        if let Some(step) = &e.check {
            let r = run(&["check", "--rules", rules]);
            assert_eq!(
                r.code,
                Some(step.exit),
                "{}: check:\n{}",
                case.name,
                clip(&r.stderr)
            );
            assert_contains(&case.name, "check's output", &r.stderr, &step.contains);
            if let Some(max) = e.max_ms {
                assert!(
                    r.elapsed <= Duration::from_millis(max),
                    "{}: check took {:?}",
                    case.name,
                    r.elapsed
                );
            }
            if e.timed {
                let allowed = Duration::from_millis(timeout_ms(&pack) + 250);
                let added = r.elapsed.saturating_sub(baseline);
                assert!(
                    added <= allowed,
                    "{}: check took {:?} beyond a good pack's eval, more than {allowed:?}",
                    case.name,
                    added
                );
                limit = allowed.as_millis().to_string();
            }
            check_ms = r.elapsed.as_millis().to_string();
            peak_mb = peak_mb.max(r.peak_rss_kb / 1024);
            check_rss(&case, &r);
        }
        if let Some(step) = &e.eval {
            let input = probe(work.path(), step);
            let r = run(&["eval", "--rules", rules, "--input", input.to_str().unwrap()]);
            assert_eq!(
                r.code,
                Some(step.exit),
                "{}: eval:\n{}",
                case.name,
                clip(&r.stderr)
            );
            assert_contains(&case.name, "eval's output", &r.stderr, &step.contains);
            if e.timed {
                let allowed = Duration::from_millis(timeout_ms(&pack) + 250);
                let added = r.elapsed.saturating_sub(baseline);
                assert!(
                    added <= allowed,
                    "{}: eval took {:?} beyond the good pack's, more than {allowed:?}",
                    case.name,
                    added
                );
                limit = allowed.as_millis().to_string();
            }
            if let Some(max) = e.max_ms {
                assert!(
                    r.elapsed <= Duration::from_millis(max),
                    "{}: eval took {:?}",
                    case.name,
                    r.elapsed
                );
                limit = max.to_string();
            }
            if let Some(max) = e.max_output_bytes {
                assert!(
                    r.stderr.len() <= max,
                    "{}: {} bytes of output:\n{}",
                    case.name,
                    r.stderr.len(),
                    clip(&r.stderr)
                );
            }
            eval_ms = r.elapsed.as_millis().to_string();
            peak_mb = peak_mb.max(r.peak_rss_kb / 1024);
            check_rss(&case, &r);
        }
        eprintln!(
            "{:<18} {check_ms:>8} {eval_ms:>8} {limit:>9} {peak_mb:>9}  {}",
            case.name, e.row
        );
    }
}

fn check_rss(case: &Case, r: &Run) {
    if let Some(max) = case.expect.max_rss_mb {
        assert!(
            r.peak_rss_kb <= max * 1024,
            "{}: peak RSS {} MB, over {max} MB",
            case.name,
            r.peak_rss_kb / 1024
        );
    }
}

/// A config for the emulator at `info` with the rule pack at `rules`.
fn write_config(dir: &Path, info: &EmulatorInfo, rules: &Path) -> PathBuf {
    let reload = "[reload]\ndebounce_ms = 100\nstuck_after_secs = 3\n";
    common::write_emulator_config(dir, info, rules, "backfill = \"3650d\"", reload)
}

/// Points the `rules` link at a fresh copy of `case` in one rename, the way a
/// ConfigMap swaps its `..data` link: the service never sees half a pack.
fn publish(work: &Path, rules: &Path, name: &str, fill: impl FnOnce(&Path), n: usize) {
    let stage = work.join(format!("stage-{n}-{name}"));
    fill(&stage);
    let tmp = work.join("rules.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stage, &tmp).unwrap();
    std::fs::rename(&tmp, rules).unwrap();
}

struct Service {
    ops: String,
    log: Arc<Mutex<String>>,
}

impl Service {
    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.ops))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    async fn health(&self) -> (u16, String) {
        let r = reqwest::get(format!("http://{}/healthz", self.ops))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// `/readyz`: status and body (JSON with the reasons).
    async fn ready(&self) -> (u16, String) {
        let r = reqwest::get(format!("http://{}/readyz", self.ops))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits until the counter `series` reaches `at_least`.
    async fn wait_for(&self, series: &str, at_least: f64, within: Duration) {
        let until = Instant::now() + within;
        loop {
            if self.metric(series).await >= at_least {
                return;
            }
            assert!(
                Instant::now() < until,
                "{series} never reached {at_least}; log:\n{}",
                clip_tail(&self.log.lock().unwrap())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn clip_tail(text: &str) -> String {
    let start = text.len().saturating_sub(6000);
    let mut start = start;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

fn pack_version(metrics: &str) -> String {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("rulebridge_pack_info{version=\"")?
                .split('"')
                .next()
        })
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_service_survives_every_hostile_pack_and_stops_on_sigterm_while_a_reload_is_stuck() {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorConfig::default())
        .await
        .unwrap();
    emulator.store().seed_many(seed::generate(20, 7)).unwrap();
    let info = emulator.info();
    let work = tempfile::tempdir().unwrap();
    let rules = work.path().join("rules");
    let good = Path::new(CORPUS).join("_good");
    let mut n = 0;
    publish(work.path(), &rules, "good", |d| copy_tree(&good, d), n);
    let config = write_config(work.path(), &info, &rules);
    let config_arg = config.to_str().unwrap().to_string();

    // `status` on a state file that does not exist yet must not create it.
    let status = run(&["status", "--config", &config_arg]);
    assert_eq!(status.code, Some(1), "{}", status.stderr);
    assert!(
        status.stderr.contains("no state database"),
        "{}",
        status.stderr
    );
    for args in [
        vec!["explain", "--config", &config_arg, "h-1"],
        vec!["retry", "--config", &config_arg],
    ] {
        let r = run(&args);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("no state database"),
            "{args:?}: {}",
            r.stderr
        );
    }
    assert!(
        !work.path().join("state.db").exists(),
        "status, explain or retry created the state file"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["run", "--config", &config_arg])
        .env("RUST_LOG", "rulebridge=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let _ = addr_tx.send(rest.split_whitespace().next().unwrap().to_string());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let ops = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the ops address in the log");
    let service = Service {
        ops,
        log: log.clone(),
    };
    let until = Instant::now() + Duration::from_secs(30);
    while emulator.store().sentinel.len() < 15 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let twins = emulator.store().sentinel.len();
    assert!(twins >= 15, "only {twins} twins");
    let good_version = pack_version(&service.metrics().await);

    // One process per state file: a second `run` is refused, naming the holder.
    let second = run(&["run", "--config", &config_arg]);
    assert_eq!(second.code, Some(1), "{}", second.stderr);
    assert!(
        second.stderr.contains(&format!("pid {pid}")),
        "{}",
        second.stderr
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(work.path().join("state.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "state file mode {mode:o}");

    let mut peak_mb = 0;
    let stuck_case = cases()
        .into_iter()
        .find(|c| c.name == "slow-checks")
        .unwrap();
    for case in cases() {
        let Some(live) = &case.expect.live else {
            continue;
        };
        if live.result != "rejected" {
            continue;
        }
        let series = "rulebridge_reloads_total{result=\"rejected\"}";
        let before = service.metric(series).await;
        n += 1;
        let started = Instant::now();
        publish(
            work.path(),
            &rules,
            &case.name,
            |d| materialize(&case, d),
            n,
        );
        service
            .wait_for(series, before + 1.0, Duration::from_secs(20))
            .await;
        let rss = rss_kb(pid).unwrap() / 1024;
        peak_mb = peak_mb.max(peak_rss_kb(pid).unwrap() / 1024);
        eprintln!(
            "live {:<18} rejected after {:>5} ms, RSS {rss} MB",
            case.name,
            started.elapsed().as_millis()
        );
        assert!(rss <= LIVE_RSS_MB, "{}: RSS {rss} MB", case.name);
        assert_eq!(
            pack_version(&service.metrics().await),
            good_version,
            "{}",
            case.name
        );
        let (code, text) = service.health().await;
        assert_eq!(code, 200, "{}: {text}", case.name);
    }
    let peak = peak_rss_kb(pid).unwrap() / 1024;
    eprintln!("live service peak RSS (VmHWM) {peak} MB over the corpus");
    assert!(peak <= LIVE_RSS_MB, "peak RSS {peak} MB");

    // A reload that takes too long is reported stuck and abandoned…
    let stuck = "rulebridge_reloads_total{result=\"stuck\"}";
    n += 1;
    publish(
        work.path(),
        &rules,
        "slow-checks",
        |d| materialize(&stuck_case, d),
        n,
    );
    service.wait_for(stuck, 1.0, Duration::from_secs(20)).await;
    assert_eq!(service.metric("rulebridge_reload_stuck").await, 1.0);
    // Not ready, with the reason; still alive (the loop syncs on with the running
    // pack, so a restart would not help).
    let (code, text) = service.ready().await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("stuck"), "{text}");
    let (code, text) = service.health().await;
    assert_eq!(code, 200, "{text}");
    let status = run(&["status", "--config", &config_arg, "--json"]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let human = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["status", "--config", &config_arg])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("reload stuck"), "{text}");
    assert!(log.lock().unwrap().contains("rule pack reload stuck"));

    // …and a later good save is still picked up, and syncs.
    n += 1;
    publish(
        work.path(),
        &rules,
        "good-v2",
        |d| {
            copy_tree(&good, d);
            let rule = std::fs::read_to_string(d.join("rule.rhai")).unwrap();
            std::fs::write(
                d.join("rule.rhai"),
                rule.replace(
                    "incident.displayName ?? \"untitled\"",
                    "`v2: ${incident.displayName}`",
                ),
            )
            .unwrap();
        },
        n,
    );
    let swapped = "rulebridge_reloads_total{result=\"swapped\"}";
    service
        .wait_for(swapped, 1.0, Duration::from_secs(20))
        .await;
    assert_ne!(pack_version(&service.metrics().await), good_version);
    assert_eq!(
        service.health().await.0,
        200,
        "a finished reload ends the stuck report"
    );
    // Still syncing, now with the new pack: a Defender edit reaches Sentinel with its title.
    {
        let mut store = emulator.store();
        let stamp = store.tick();
        let incident = store.graph.values_mut().next().unwrap();
        incident["displayName"] = serde_json::json!("edited after the hostile corpus");
        incident["lastUpdateDateTime"] = serde_json::json!(stamp);
    }
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let synced = emulator
            .store()
            .sentinel
            .values()
            .any(|i| i["properties"]["title"] == "v2: edited after the hostile corpus");
        if synced {
            break;
        }
        assert!(
            Instant::now() < until,
            "the edit never synced; log:\n{}",
            clip_tail(&log.lock().unwrap())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No hostile pack was ever active, so no incident was dead-lettered by one.
    let out = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["status", "--config", &config_arg, "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["pack"]["reload_stuck_since"].is_null(), "{status:#}");
    assert_eq!(
        status["dead_letters"].as_array().map(Vec::len),
        Some(0),
        "{status:#}"
    );

    // A stuck reload again, and SIGTERM while it is stuck: the process ends in 10 s.
    n += 1;
    publish(
        work.path(),
        &rules,
        "slow-checks-again",
        |d| materialize(&stuck_case, d),
        n,
    );
    service.wait_for(stuck, 2.0, Duration::from_secs(20)).await;
    let dead_letters_ok = service.metrics().await;
    assert!(
        dead_letters_ok.contains("rulebridge_writes_total"),
        "the service wrote nothing"
    );
    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!(
                "still running 10 s after SIGTERM; log:\n{}",
                clip_tail(&log.lock().unwrap())
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = sent.elapsed();
    reader.join().unwrap();
    eprintln!(
        "SIGTERM during a stuck reload: exited in {} ms",
        took.as_millis()
    );
    let log = log.lock().unwrap();
    assert!(exit.success(), "{}", clip_tail(&log));
    assert!(
        log.contains("stopped; state committed"),
        "{}",
        clip_tail(&log)
    );
    assert!(!log.contains(&info.client_secret));
}
