//! Running rulebridge in production (issue 16), through the real binary against the
//! in-process emulator over 127.0.0.1: `--log-format json` (every line parses, incident
//! and reload events carry the documented fields, no secret or token), `/healthz` and
//! `/readyz` through API faults, a locked state file and a rejected reload, the
//! Kubernetes example's ConfigMap `..data` swap as a live hot reload, and the deployment
//! examples themselves (YAML parsed here always; `kubectl kustomize` and `systemd-analyze
//! verify` when those tools are installed).

use crate::common::{self, Run};
use rulebridge::emulator::throttle::ThrottleConfig;
use rulebridge::emulator::{Emulator, EmulatorConfig, EmulatorInfo};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

async fn start_emulator() -> Emulator {
    let mut config = EmulatorConfig::default();
    config.observed.throttle = ThrottleConfig::unlimited();
    Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

use crate::common::graph_incident as incident;

/// The service config: the emulator's URLs, the secret in a file, `server` lines.
fn write_config(dir: &Path, info: &EmulatorInfo, rules: &Path, server: &str) -> PathBuf {
    let tail = format!("{server}\n[reload]\ndebounce_ms = 50\n");
    common::write_emulator_config(dir, info, rules, "backfill = \"3650d\"", &tail)
}

async fn get(url: String) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn readyz(ops: &str) -> (u16, Value) {
    let (status, body) = get(format!("http://{ops}/readyz")).await;
    (status, serde_json::from_str(&body).unwrap())
}

/// Polls `/readyz` until its status is `want` (20 s at most).
async fn readyz_becomes(ops: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readyz(ops).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pack laid out as the kubelet projects a ConfigMap volume with `items` (as
/// examples/kubernetes/deployment.yaml mounts it): the files in a timestamped hidden
/// folder, `..data` linking to it, and one top-level link per first path component
/// into `..data`. `swap` replaces the content as the kubelet does: a new folder, a new
/// link renamed over `..data` (atomic), the old folder removed.
struct ProjectedPack {
    dir: PathBuf,
    generation: u32,
}

impl ProjectedPack {
    fn new(dir: PathBuf, files: &[(String, Vec<u8>)]) -> ProjectedPack {
        std::fs::create_dir_all(&dir).unwrap();
        let mut pack = ProjectedPack { dir, generation: 0 };
        pack.swap(files);
        pack
    }

    fn swap(&mut self, files: &[(String, Vec<u8>)]) {
        self.generation += 1;
        let name = format!(
            "..2026_12_04_20_00_{:02}.{}",
            self.generation, self.generation
        );
        let folder = self.dir.join(&name);
        for (path, bytes) in files {
            let target = folder.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(target, bytes).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let mut tops: Vec<&str> = files
            .iter()
            .map(|(p, _)| p.split('/').next().unwrap())
            .collect();
        tops.dedup();
        for top in tops {
            let link = self.dir.join(top);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{top}"), link).unwrap();
            }
        }
        if self.generation > 1 {
            let old = format!(
                "..2026_12_04_20_00_{:02}.{}",
                self.generation - 1,
                self.generation - 1
            );
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

/// The default pack's files, with `edit` applied to the file at `path`.
fn default_pack_with(path: &str, edit: impl Fn(&str) -> String) -> Vec<(String, Vec<u8>)> {
    rulebridge::default_pack::DEFAULT_PACK
        .iter()
        .map(|(p, bytes)| {
            let bytes = if *p == path {
                edit(std::str::from_utf8(bytes).unwrap()).into_bytes()
            } else {
                bytes.to_vec()
            };
            (p.to_string(), bytes)
        })
        .collect()
}

/// The map script with a throw for one incident (a rule error: a dead letter).
fn throwing_for(id: &str) -> Vec<(String, Vec<u8>)> {
    default_pack_with("map/microsoft-standard.rhai", |text| {
        text.replace(
            "fn to_sentinel(incident, ctx) {\n",
            &format!(
                "fn to_sentinel(incident, ctx) {{\n    if incident.id == \"{id}\" {{ throw \"cannot map incident {id}\"; }}\n"
            ),
        )
    })
}

fn events<'a>(log: &'a [Value], name: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["event"] == name).collect()
}

fn of<'a>(list: &[&'a Value], id: &str) -> Vec<&'a Value> {
    list.iter()
        .copied()
        .filter(|e| e["defender_id"] == id)
        .collect()
}

fn has_str(event: &Value, field: &str) -> bool {
    event[field].as_str().is_some_and(|s| !s.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_of_a_run_through_a_configmap_swap_documents_every_outcome() {
    let emulator = start_emulator().await;
    emulator
        .store()
        .seed_many(vec![
            incident("600001", "medium"),
            incident("600002", "high"),
            incident("600003", "informational"),
            incident("600004", "medium"),
        ])
        .unwrap();
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    let mut pack = ProjectedPack::new(rules.clone(), &throwing_for("600004"));
    let config = write_config(dir.path(), &info, &rules, "");
    let mut run = Run::start(&config);

    // The first cycle: two twins, one filtered, one dead letter; then ready.
    let loaded = run.seen(|e| e["event"] == "pack.loaded", "pack.loaded");
    let first_version = loaded["pack_version"].as_str().unwrap().to_string();
    run.seen(|e| e["event"] == "incident.dead_lettered", "a dead letter");
    let ready = readyz_becomes(&run.ops, 200).await;
    assert_eq!(ready["checks"]["pack"]["version"], first_version.as_str());
    let (status, health) = get(format!("http://{}/healthz", run.ops)).await;
    assert_eq!(status, 200, "{health}");
    assert!(health.starts_with("ok loop turned"), "{health}");

    // A broken candidate through the ConfigMap's ..data swap: refused, the pack on disk
    // is not the one running, so not ready (but alive).
    pack.swap(&default_pack_with("pack.toml", |t| {
        format!("{t}\nnot_a_key = 1\n")
    }));
    let rejected = run.wait_for(|e| e["event"] == "reload.rejected", "reload.rejected");
    let body = readyz_becomes(&run.ops, 503).await;
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("pack: the last reload was rejected"),
        "{body:#}"
    );
    assert_eq!(
        body["checks"]["pack"]["rejected_candidate"],
        rejected["candidate_version"]
    );
    assert_eq!(get(format!("http://{}/healthz", run.ops)).await.0, 200);

    // The fixed pack (without the throw): swapped in, ready again, the dead letter
    // retried with it and synced.
    pack.swap(&default_pack_with("pack.toml", |t| t.to_string()));
    let swapped = run.wait_for(|e| e["event"] == "reload.swapped", "reload.swapped");
    run.wait_for(
        |e| e["event"] == "incident.synced" && e["defender_id"] == "600004",
        "the dead letter synced after the swap",
    );
    readyz_becomes(&run.ops, 200).await;
    let metrics = get(format!("http://{}/metrics", run.ops)).await.1;
    assert!(
        metrics.contains("rulebridge_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rulebridge_reloads_total{result=\"swapped\"} 1"),
        "{metrics}"
    );
    let lines = run.stop();

    // Every line is one JSON object with the common fields.
    let log: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    for e in &log {
        assert!(has_str(e, "timestamp") && has_str(e, "level"), "{e}");
        assert!(has_str(e, "target") && e["message"].is_string(), "{e}");
        assert!(chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).is_ok());
    }
    // No secret and no token (a JWT starts `eyJ`), even at debug level.
    let text = lines.join("\n");
    assert!(!text.contains(&info.client_secret), "the secret was logged");
    assert!(!text.contains("eyJ"), "a token was logged");

    let synced = events(&log, "incident.synced");
    for id in ["600001", "600002"] {
        let created = of(&synced, id);
        let e = created
            .iter()
            .find(|e| e["action"] == "create")
            .unwrap_or_else(|| panic!("no create of {id}: {synced:#?}"));
        assert_eq!(e["side"], "defender", "{e}");
        assert_eq!(e["direction"], "to_sentinel", "{e}");
        assert_eq!(e["pack_version"], first_version.as_str(), "{e}");
        assert!(has_str(e, "sentinel_name"), "{e}");
        let fields = e["fields_to_sentinel"].as_str().unwrap();
        assert!(fields.split(',').any(|f| f == "severity"), "{e}");
        assert!(
            e["rule"].as_str().unwrap().contains("microsoft-standard"),
            "{e}"
        );
        assert!(e["duration_ms"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["writes"].as_u64().unwrap() >= 1, "{e}");
        assert!(e["comments"].is_u64(), "{e}");
    }
    let filtered = of(&events(&log, "incident.filtered"), "600003");
    assert!(!filtered.is_empty(), "{log:#?}");
    assert_eq!(filtered[0]["rule"], "skip-noise", "{}", filtered[0]);
    assert!(filtered[0]["duration_ms"].is_f64());
    let dead = of(&events(&log, "incident.dead_lettered"), "600004");
    let dead = dead.first().expect("600004 dead-lettered");
    assert_eq!(dead["level"], "WARN");
    assert_eq!(dead["kind"], "rule_error", "{dead}");
    assert_eq!(dead["rule"], "microsoft-standard", "{dead}");
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .contains("cannot map incident 600004"),
        "{dead}"
    );
    assert_eq!(dead["pack_version"], first_version.as_str());
    let retried = of(&synced, "600004");
    assert_eq!(
        retried[0]["pack_version"], swapped["pack_version"],
        "{retried:#?}"
    );

    // Reload events: the candidate version and its problems.
    assert_eq!(rejected["level"], "WARN");
    assert_eq!(rejected["pack_version"], first_version.as_str());
    assert!(has_str(&rejected, "candidate_version"), "{rejected}");
    assert_eq!(rejected["problem_count"], 1, "{rejected}");
    assert!(
        rejected["problems"].as_str().unwrap().contains("not_a_key"),
        "{rejected}"
    );
    assert_eq!(swapped["previous_version"], first_version.as_str());
    assert_eq!(swapped["candidate_version"], swapped["pack_version"]);
    assert_ne!(swapped["pack_version"], first_version.as_str());
    assert!(swapped["duration_ms"].is_u64(), "{swapped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_failing_polls_while_healthz_stays_ok() {
    let emulator = start_emulator().await;
    emulator
        .store()
        .seed_many(vec![incident("610001", "medium")])
        .unwrap();
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    ProjectedPack::new(rules.clone(), &default_pack_with("pack.toml", |t| t.into()));
    // Not ready as soon as a side fails (the default waits five minutes).
    let config = write_config(dir.path(), &info, &rules, "unready_after_secs = 0");
    let run = Run::start(&config);
    let ops = run.ops.clone();

    let ready = readyz_becomes(&ops, 200).await;
    assert_eq!(ready["ready"], true);
    assert!(
        ready["checks"]["defender"]["last_success"].is_string(),
        "{ready:#}"
    );
    assert_eq!(ready["reasons"], json!([]));

    // Sentinel's list answers 429 with no wait, until the client gives up: not ready,
    // the reason names the side; alive all along (a failing API is no reason to restart).
    let base = info.graph_base_url.trim_end_matches("/v1.0").to_string();
    let http = reqwest::Client::new();
    let fault =
        json!({"kind": "throttle", "retry_after": 0, "endpoint": "sentinel-list", "rate": 1.0});
    let added = http
        .post(format!("{base}/_emulator/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success());
    let body = readyz_becomes(&ops, 503).await;
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("sentinel: polls failing for"),
        "{body:#}"
    );
    assert_eq!(body["checks"]["defender"]["ok"], true, "{body:#}");
    assert_eq!(get(format!("http://{ops}/healthz")).await.0, 200);
    http.delete(format!("{base}/_emulator/faults"))
        .send()
        .await
        .unwrap();
    readyz_becomes(&ops, 200).await;
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_when_the_state_file_refuses_writes_and_syncing_resumes() {
    let emulator = start_emulator().await;
    emulator
        .store()
        .seed_many(vec![incident("620001", "medium")])
        .unwrap();
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    ProjectedPack::new(rules.clone(), &default_pack_with("pack.toml", |t| t.into()));
    let config = write_config(dir.path(), &info, &rules, "");
    let mut run = Run::start(&config);
    let ops = run.ops.clone();
    readyz_becomes(&ops, 200).await;

    // Another process holds the state file's write lock (a second replica on a shared
    // volume, a backup tool): syncing pauses, not ready, still alive; released, ready.
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = readyz_becomes(&ops, 503).await;
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("state: not writable"),
        "{body:#}"
    );
    assert_eq!(get(format!("http://{ops}/healthz")).await.0, 200);
    // An incident raised meanwhile is synced once the file takes writes again.
    emulator
        .store()
        .seed_many(vec![incident("620002", "high")])
        .unwrap();
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    readyz_becomes(&ops, 200).await;
    run.wait_for(
        |e| e["event"] == "incident.synced" && e["defender_id"] == "620002",
        "the incident raised while the state was locked, synced",
    );
    let log = run.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("\"event\":\"state.unwritable\"")),
        "{log:#?}"
    );
}

// ------------------------------------------------------------ the deployment examples

fn yaml_documents(path: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn yaml(path: &str) -> serde_yaml::Value {
    let mut docs = yaml_documents(path);
    assert_eq!(docs.len(), 1, "{path}");
    docs.remove(0)
}

fn s(v: &serde_yaml::Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// What `deployment.yaml` must say, checked on the parsed file (no kubectl needed) and
/// on kubectl's rendering of the kustomization.
fn check_deployment(d: &serde_yaml::Value) {
    assert_eq!(d["kind"], "Deployment");
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1, "one writer of the state file");
    assert_eq!(s(&spec["strategy"]["type"]), "Recreate");
    let pod = &spec["template"]["spec"];
    assert_eq!(
        spec["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert_eq!(s(&pod["serviceAccountName"]), "rulebridge");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    let port = &c["ports"][0];
    assert_eq!(
        (s(&port["name"]), &port["containerPort"]),
        ("ops", &9464.into())
    );
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["path"]), "/healthz");
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), "/readyz");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(s(&c[probe]["httpGet"]["port"]), "ops", "{probe}");
    }
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(s).collect();
    assert_eq!(
        args,
        ["run", "--config", "/etc/rulebridge/config/rulebridge.toml"]
    );
    let env = c["env"].as_sequence().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "RULEBRIDGE_LOG_FORMAT" && e["value"] == "json"));
    let mounts: Vec<(&str, &str)> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (s(&m["name"]), s(&m["mountPath"])))
        .collect();
    for want in [
        ("state", "/var/lib/rulebridge"),
        ("config", "/etc/rulebridge/config"),
        ("rules", "/etc/rulebridge/rules"),
    ] {
        assert!(mounts.contains(&want), "{want:?} not in {mounts:?}");
    }
    assert!(
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|m| m.get("subPath").is_none()),
        "a subPath mount never sees a ConfigMap update (no hot reload)"
    );
    let volumes = pod["volumes"].as_sequence().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(
        s(&volume("state")["persistentVolumeClaim"]["claimName"]),
        "rulebridge-state"
    );
    // Every file of the default pack is mounted at its path, and nothing else.
    let rules = &volume("rules")["configMap"];
    assert!(s(&rules["name"]).starts_with("rulebridge-rules"));
    let mut items: Vec<(&str, &str)> = rules["items"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| (s(&i["key"]), s(&i["path"])))
        .collect();
    items.sort();
    let mut want: Vec<(String, &str)> = rulebridge::default_pack::DEFAULT_PACK
        .iter()
        .map(|(p, _)| (p.replace('/', "__"), *p))
        .collect();
    want.sort();
    let want: Vec<(&str, &str)> = want.iter().map(|(k, p)| (k.as_str(), *p)).collect();
    assert_eq!(
        items, want,
        "deployment.yaml's rules items and rules/ differ"
    );
}

#[test]
fn kubernetes_example_manifests_say_what_production_needs() {
    let dir = "examples/kubernetes";
    check_deployment(&yaml(&format!("{dir}/deployment.yaml")));

    let sa = yaml(&format!("{dir}/serviceaccount.yaml"));
    assert_eq!(sa["kind"], "ServiceAccount");
    let client_id = s(&sa["metadata"]["annotations"]["azure.workload.identity/client-id"]);
    assert_eq!(client_id.len(), 36, "{client_id}");

    let pvc = yaml(&format!("{dir}/pvc.yaml"));
    assert_eq!(s(&pvc["metadata"]["name"]), "rulebridge-state");
    assert_eq!(pvc["spec"]["accessModes"][0], "ReadWriteOnce");

    // The kustomization: the rules ConfigMap keeps its name (updated in place: the
    // ..data swap is the hot reload) and ships every pack file under its key.
    let k = yaml(&format!("{dir}/kustomization.yaml"));
    let generators = k["configMapGenerator"].as_sequence().unwrap();
    let rules = generators
        .iter()
        .find(|g| g["name"] == "rulebridge-rules")
        .unwrap();
    assert_eq!(rules["options"]["disableNameSuffixHash"], true);
    let mut files: Vec<&str> = rules["files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    files.sort();
    let mut want: Vec<String> = rulebridge::default_pack::DEFAULT_PACK
        .iter()
        .map(|(p, _)| format!("{}=rules/{p}", p.replace('/', "__")))
        .collect();
    want.sort();
    assert_eq!(
        files, want,
        "kustomization.yaml's rules files and rules/ differ"
    );
    for resource in k["resources"].as_sequence().unwrap() {
        assert!(Path::new(dir).join(s(resource)).is_file(), "{resource:?}");
    }

    // The example's service config loads, listens where the probes knock, and keeps
    // the state on the volume and the pack in the ConfigMap folder.
    let config = rulebridge::config::Config::load(Path::new("examples/kubernetes/rulebridge.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9464");
    assert_eq!(
        config.sync.state,
        Path::new("/var/lib/rulebridge/rulebridge.db")
    );
    assert_eq!(config.sync.rules, Path::new("/etc/rulebridge/rules"));
    assert!(config.reload.watch);
}

#[test]
fn kubernetes_example_renders_with_kubectl_kustomize() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("skipped: kubectl is not installed (the manifests are still checked as YAML)");
        return;
    }
    // In this repository the pack is ../../rules (a symlink): outside the
    // kustomization's root, which kustomize refuses unless told.
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            "examples/kubernetes",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kind = |k: &'static str| docs.iter().filter(move |d| d["kind"] == k);
    let deployment = kind("Deployment").next().expect("a Deployment");
    check_deployment(deployment);
    assert_eq!(deployment["metadata"]["namespace"], "rulebridge");
    // The rules ConfigMap holds the pack's bytes under the keys the items name.
    let rules = kind("ConfigMap")
        .find(|c| c["metadata"]["name"] == "rulebridge-rules")
        .expect("the rules ConfigMap, unhashed");
    for (path, bytes) in rulebridge::default_pack::DEFAULT_PACK {
        let key = path.replace('/', "__");
        assert_eq!(
            rules["data"][key.as_str()].as_str().map(str::as_bytes),
            Some(*bytes),
            "{path}"
        );
    }
    // The config ConfigMap is hashed, and the Deployment refers to the hashed name.
    let config = kind("ConfigMap")
        .find(|c| s(&c["metadata"]["name"]).starts_with("rulebridge-config-"))
        .expect("the config ConfigMap, hashed");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    assert!(volumes
        .iter()
        .any(|v| v["configMap"]["name"] == config["metadata"]["name"]));
    assert!(
        kind("ServiceAccount").next().is_some() && kind("PersistentVolumeClaim").next().is_some()
    );
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = std::fs::read_to_string("examples/systemd/rulebridge.service").unwrap();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "DynamicUser=yes",
        "StateDirectory=rulebridge",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LoadCredential=client-secret:/etc/rulebridge/client-secret",
        "Environment=AZURE_CLIENT_SECRET_FILE=%d/client-secret",
        "Environment=RULEBRIDGE_LOG_FORMAT=json",
    ] {
        assert!(has(line), "no `{line}` in the unit");
    }
    let systemd_analyze = Command::new("systemd-analyze").arg("--version").output();
    if systemd_analyze.is_err() {
        eprintln!("skipped: systemd-analyze is not installed (the unit's lines are still checked)");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rulebridge.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/rulebridge",
            env!("CARGO_BIN_EXE_rulebridge"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn dockerfile_ships_the_binary_pack_and_schemas_as_non_root() {
    let text = std::fs::read_to_string("Dockerfile").unwrap();
    assert_eq!(
        text.matches("\nFROM ").count(),
        2,
        "multi-stage: build, then run"
    );
    for want in [
        "cargo build --release --locked",
        "COPY --from=build /src/target/release/rulebridge /usr/local/bin/rulebridge",
        "COPY --from=build /src/rules /usr/share/rulebridge/rules",
        "COPY --from=build /src/schemas /usr/share/rulebridge/schemas",
        "USER 65532:65532",
        "EXPOSE 9464",
    ] {
        assert!(text.contains(want), "no `{want}` in the Dockerfile");
    }
    // The build stage's toolchain is the one Cargo.toml asks for.
    let manifest = std::fs::read_to_string("Cargo.toml").unwrap();
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .unwrap()
        .trim_end_matches('"');
    assert!(text.contains(&format!("FROM rust:{version}-")), "{version}");
}
