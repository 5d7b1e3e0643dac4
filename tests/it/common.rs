//! Helpers shared by the integration tests.

use rulebridge::emulator::sentinel::WRITABLE;
use rulebridge::emulator::{Emulator, EmulatorInfo};
use rulebridge::rules::CompiledPack;
use rulebridge::snapshot::PackSnapshot;
use serde_json::{json, Map, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The default pack (`rules/`, judged by `schemas/`), built; a problem fails the test.
pub fn pack() -> CompiledPack {
    pack_at(Path::new("rules"))
}

/// The pack in `dir`, judged by `schemas/`, built; a problem fails the test.
pub fn pack_at(dir: &Path) -> CompiledPack {
    let snapshot = PackSnapshot::read(dir, Some(Path::new("schemas"))).unwrap();
    CompiledPack::build(snapshot).unwrap_or_else(|p| panic!("{p:#?}"))
}

/// An emulator nobody listens at (port 1): for configs `run` must refuse before it
/// makes a request.
pub fn unreachable_emulator(client_secret: &str) -> EmulatorInfo {
    EmulatorInfo {
        token_url: "http://127.0.0.1:1/t/oauth2/v2.0/token".into(),
        graph_base_url: "http://127.0.0.1:1/v1.0".into(),
        sentinel_incidents_url: "http://127.0.0.1:1/x/incidents?api-version=2024-03-01".into(),
        tenant_id: "t".into(),
        client_id: "c".into(),
        client_secret: client_secret.into(),
        ..EmulatorInfo::default()
    }
}

/// Copies a folder tree (a rule pack) so a test can edit the copy.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Adds a user label to Sentinel properties (an analyst's label, inside `sentinel_edit`).
pub fn add_label(props: &mut Map<String, Value>, name: &str) {
    let labels = props.entry("labels").or_insert_with(|| json!([]));
    labels
        .as_array_mut()
        .unwrap()
        .push(json!({ "labelName": name, "labelType": "User" }));
}

/// An analyst's edit of Sentinel incident `name`, through the emulator's own PUT path
/// (stamp and etag move as in the service): `edit` changes its writable properties.
pub fn sentinel_edit(emulator: &Emulator, name: &str, edit: impl FnOnce(&mut Map<String, Value>)) {
    let mut store = emulator.store();
    let resource = store.sentinel[name].clone();
    let base_id = resource["id"]
        .as_str()
        .unwrap()
        .strip_suffix(&format!("/{name}"))
        .unwrap()
        .to_string();
    let mut props: Map<String, Value> = resource["properties"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| WRITABLE.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    edit(&mut props);
    store
        .sentinel_put(
            &base_id,
            name,
            &json!({ "properties": props }),
            resource["etag"].as_str(),
        )
        .unwrap();
}

/// Writes `dir/rulebridge.toml`, a service config for the emulator at `info`: its URLs,
/// the secret in `dir/secret`, the pack at `rules`, ops on a free loopback port;
/// `sync_extra` lines go into `[sync]`, `tail` at the end.
pub fn write_emulator_config(
    dir: &Path,
    info: &EmulatorInfo,
    rules: &Path,
    sync_extra: &str,
    tail: &str,
) -> PathBuf {
    std::fs::write(dir.join("secret"), &info.client_secret).unwrap();
    let path = dir.join("rulebridge.toml");
    std::fs::write(
        &path,
        format!(
            r#"[defender]
tenant_id = "{}"
graph_url = "{}"
token_url = "{}"
requests_per_minute = 60000
[sentinel]
incidents_url = "{}"
token_url = "{}"
requests_per_second = 1000
[credentials]
client_id = "{}"
client_secret_file = "secret"
[sync]
poll_interval_secs = 5
state = "state.db"
rules = "{}"
{sync_extra}
[server]
listen = "127.0.0.1:0"
{tail}"#,
            info.tenant_id,
            info.graph_base_url,
            info.token_url,
            info.sentinel_incidents_url,
            info.token_url,
            info.client_id,
            rules.display()
        ),
    )
    .unwrap();
    path
}

/// `rulebridge run` with a JSON log; its stderr lines arrive on a channel.
pub struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub ops: String,
}

impl Run {
    pub fn start(config: &Path) -> Run {
        Run::start_with(config, &[])
    }

    /// [`Run::start`] with `env` set for the process.
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Run {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", "rulebridge=debug")
            .env_remove("RULEBRIDGE_LOG_FORMAT")
            .env_remove("AZURE_CLIENT_SECRET")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut run = Run {
            child,
            lines,
            log: Vec::new(),
            reader: Some(reader),
            ops: String::new(),
        };
        let listening = run.wait_for(|e| e["event"] == "ops.listening", "the ops address");
        run.ops = listening["addr"].as_str().unwrap().to_string();
        run
    }

    /// The first event so far that `want` accepts, else [`Run::wait_for`] it.
    pub fn seen(&mut self, want: impl Fn(&Value) -> bool, what: &str) -> Value {
        let earlier = self
            .log
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| want(e));
        earlier.unwrap_or_else(|| self.wait_for(want, what))
    }

    /// Reads log lines until one parses to an event `want` accepts (20 s at most).
    pub fn wait_for(&mut self, want: impl Fn(&Value) -> bool, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            self.log.push(line.clone());
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                if want(&event) {
                    return event;
                }
            }
        }
        panic!("no {what} in the log:\n{}", self.log.join("\n"));
    }

    /// SIGTERM, then the whole log (the exit must be clean).
    pub fn stop(mut self) -> Vec<String> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let exit = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        self.log.extend(self.lines.try_iter());
        assert!(exit.success(), "{exit}: {}", self.log.join("\n"));
        std::mem::take(&mut self.log)
    }
}

/// A Graph incident the default pack syncs (no alerts needed), as the tests seed it.
pub fn graph_incident(id: &str, severity: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.security.incident",
        "id": id,
        "tenantId": "00000000-0000-4000-8000-000000000001",
        "displayName": format!("Suspicious sign-in activity {id}"),
        "description": "Seeded by a test.",
        "incidentWebUrl": format!("https://security.microsoft.com/incidents/{id}"),
        "status": "active",
        "severity": severity,
        "assignedTo": null,
        "classification": "unknown",
        "determination": "unknown",
        "customTags": ["Demo"],
        "systemTags": [],
        "redirectIncidentId": null,
        "createdDateTime": "2026-01-01T08:00:00.0000000Z",
        "comments": [],
        "alerts": [],
    })
}
