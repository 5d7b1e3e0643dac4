//! Signing in, end to end against the emulator (which checks what Entra ID, Graph and
//! ARM check): every credential kind syncs incidents through `build_syncer`, as `run`
//! builds it; a rotated federated token file is re-read; a throttled token endpoint
//! recovers; each cloud asks for its own scopes; `doctor` passes a clean set-up and
//! names the fix for each thing broken on purpose.

use rulebridge::config::Config;
use rulebridge::emulator::faults::{Endpoint, FaultKind, FaultRule};
use rulebridge::emulator::throttle::ThrottleConfig;
use rulebridge::emulator::{seed, Emulator, EmulatorConfig, EmulatorInfo};
use rulebridge::metrics::Metrics;
use rulebridge::rules::PackHandle;
use rulebridge::snapshot::PackSnapshot;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

async fn start(config: EmulatorConfig) -> Emulator {
    let mut config = config;
    config.observed.throttle = ThrottleConfig::unlimited();
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    emulator.store().seed_many(seed::generate(4, 7)).unwrap();
    emulator
}

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A config for the emulator at `info` with `credentials` as its `[credentials]` body;
/// `extra` goes at the end (e.g. a `[cloud]` section).
fn write_config(dir: &Path, info: &EmulatorInfo, credentials: &str, extra: &str) -> PathBuf {
    let root = std::env::current_dir().unwrap();
    let path = dir.join("rulebridge.toml");
    std::fs::write(
        &path,
        format!(
            r#"[defender]
tenant_id = "{tenant}"
graph_url = "{graph}"
token_url = "{token}"
requests_per_minute = 60000
[sentinel]
incidents_url = "{incidents}"
token_url = "{token}"
requests_per_second = 1000
[credentials]
{credentials}
[sync]
state = "state.db"
rules = "{rules}"
start_from = "2000-01-01T00:00:00Z"
{extra}
"#,
            tenant = info.tenant_id,
            graph = info.graph_base_url,
            token = info.token_url,
            incidents = info.sentinel_incidents_url,
            rules = root.join("rules").display(),
        ),
    )
    .unwrap();
    path
}

fn syncer(path: &Path, vars: &HashMap<String, String>) -> rulebridge::sync::Syncer {
    let config = Config::load(path).unwrap();
    let pack = rulebridge::packtest::accept(PackSnapshot::read(&config.sync.rules, None).unwrap())
        .unwrap();
    rulebridge::service::build_syncer_in(
        &config,
        vars,
        Arc::new(PackHandle::new(pack)),
        Arc::new(Metrics::new()),
    )
    .unwrap()
}

/// One cycle; the error text when it failed or a pass was cut short (a sign-in
/// failure interrupts the passes, to be redone next cycle).
async fn cycle(syncer: &rulebridge::sync::Syncer) -> Result<(), String> {
    let reports = syncer.cycle().await.map_err(|e| e.to_string())?;
    let interrupted: Vec<String> = reports.into_iter().filter_map(|r| r.interrupted).collect();
    if interrupted.is_empty() {
        Ok(())
    } else {
        Err(interrupted.join("; "))
    }
}

fn sentinel_count(emulator: &Emulator) -> usize {
    emulator.store().sentinel.len()
}

/// The grant kinds and assertion ids of the token requests so far.
fn token_grants(emulator: &Emulator) -> Vec<(Option<String>, Option<String>)> {
    emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .map(|r| (r.grant.clone(), r.jti.clone()))
        .collect()
}

#[tokio::test]
async fn a_certificate_signs_in_from_pem_or_pkcs12_and_an_expired_one_is_refused() {
    let emulator = start(EmulatorConfig::default()).await;
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();

    let pem = write_config(
        dir.path(),
        &info,
        &format!(
            "kind = \"certificate\"\nclient_id = \"{}\"\ncertificate_path = \"{}\"",
            info.client_id, info.client_certificate_path
        ),
        "",
    );
    cycle(&syncer(&pem, &env(&[]))).await.unwrap();
    assert_eq!(sentinel_count(&emulator), 4, "every incident synced");
    let grants = token_grants(&emulator);
    assert!(!grants.is_empty());
    assert!(
        grants
            .iter()
            .all(|(g, _)| g.as_deref() == Some("certificate")),
        "{grants:?}"
    );

    // A .pfx from AZURE_CLIENT_CERTIFICATE_PATH, its password from the environment; no
    // kind: the environment implies it.
    let pfx = write_config(
        dir.path(),
        &info,
        &format!("client_id = \"{}\"", info.client_id),
        "",
    );
    let vars = env(&[
        (
            "AZURE_CLIENT_CERTIFICATE_PATH",
            &info.client_certificate_pfx_path,
        ),
        (
            "AZURE_CLIENT_CERTIFICATE_PASSWORD",
            &info.client_certificate_pfx_password,
        ),
    ]);
    let identity = Config::load(&pfx).unwrap().identity_in(&vars).unwrap();
    assert_eq!(identity.kind.name(), "certificate");
    assert!(!format!("{identity:?}").contains(&info.client_certificate_pfx_password));
    cycle(&syncer(&pfx, &vars)).await.unwrap();

    // A wrong password names the file, not the password.
    let wrong = env(&[
        (
            "AZURE_CLIENT_CERTIFICATE_PATH",
            &info.client_certificate_pfx_path,
        ),
        ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "not-the-password-31"),
    ]);
    let e = Config::load(&pfx)
        .unwrap()
        .identity_in(&wrong)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&info.client_certificate_pfx_path) && !e.contains("not-the-password-31"),
        "{e}"
    );

    let expired = write_config(
        dir.path(),
        &info,
        &format!(
            "kind = \"certificate\"\nclient_id = \"{}\"\ncertificate_path = \"{}\"",
            info.client_id, info.expired_client_certificate_path
        ),
        "",
    );
    let e = cycle(&syncer(&expired, &env(&[]))).await.unwrap_err();
    assert!(e.contains("AADSTS700027") && e.contains("expired"), "{e}");
}

async fn federated_token(info: &EmulatorInfo, lifetime_secs: i64) -> String {
    reqwest::get(format!(
        "{}?lifetime_secs={lifetime_secs}",
        info.federated_token_url
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap()
}

/// As the kubelet rotates a projected token: a new file renamed over the old one.
fn rotate(path: &Path, token: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, token).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test]
async fn workload_identity_rereads_the_rotated_token_file_at_each_refresh() {
    let emulator = start(EmulatorConfig::default()).await;
    // Short access tokens, so the test sees refreshes (at half-life: 1 s).
    emulator.store().token_lifetime = chrono::Duration::seconds(2);
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    rotate(&file, &federated_token(&info, -600).await);
    let config = write_config(dir.path(), &info, "", "");
    let vars = env(&[
        ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
        ("AZURE_CLIENT_ID", &info.client_id),
    ]);
    let syncer = syncer(&config, &vars);

    // The mounted token has expired: refused, and nothing was synced.
    let e = cycle(&syncer).await.unwrap_err();
    assert!(e.contains("AADSTS700024"), "{e}");
    assert_eq!(sentinel_count(&emulator), 0);

    // The kubelet writes a fresh one: the same process signs in with it.
    rotate(&file, &federated_token(&info, 3600).await);
    cycle(&syncer).await.unwrap();
    assert_eq!(sentinel_count(&emulator), 4);
    let first: Vec<String> = token_grants(&emulator)
        .into_iter()
        .filter_map(|(_, j)| j)
        .collect();

    rotate(&file, &federated_token(&info, 3600).await);
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    cycle(&syncer).await.unwrap();
    let grants = token_grants(&emulator);
    assert!(
        grants
            .iter()
            .all(|(g, _)| g.as_deref() == Some("federated")),
        "{grants:?}"
    );
    let last = grants.last().unwrap().1.clone().unwrap();
    assert!(
        !first.contains(&last),
        "the refresh sent the rotated file's token, not a copy kept from the start"
    );
}

#[tokio::test]
async fn managed_identity_signs_in_through_imds_and_app_service() {
    let emulator = start(EmulatorConfig::default()).await;
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &info, "kind = \"managed_identity\"", "");
    let host = info.authority_host.trim_end_matches('/');

    // A VM: IMDS (moved to the emulator as the Azure SDKs allow), system-assigned.
    cycle(&syncer(
        &config,
        &env(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", host)]),
    ))
    .await
    .unwrap();
    assert_eq!(sentinel_count(&emulator), 4);
    // User-assigned by client id; an identity that is not assigned is named.
    let user = env(&[
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", host),
        ("AZURE_CLIENT_ID", &info.user_assigned_client_id),
    ]);
    cycle(&syncer(&config, &user)).await.unwrap();
    let stranger = env(&[
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", host),
        ("AZURE_CLIENT_ID", "00000000-0000-4000-8000-00000000dead"),
    ]);
    let e = cycle(&syncer(&config, &stranger)).await.unwrap_err();
    assert!(e.contains("Identity not found"), "{e}");

    // App Service / Container Apps: IDENTITY_ENDPOINT + IDENTITY_HEADER imply the kind.
    let app = write_config(dir.path(), &info, "", "");
    let vars = env(&[
        ("IDENTITY_ENDPOINT", &info.identity_endpoint),
        ("IDENTITY_HEADER", &info.identity_header),
    ]);
    cycle(&syncer(&app, &vars)).await.unwrap();
    let paths: Vec<String> = emulator
        .store()
        .requests
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths.iter().any(|p| p == "/metadata/identity/oauth2/token"),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p == "/msi/token"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.ends_with("/oauth2/v2.0/token")),
        "a managed identity never goes to the token endpoint"
    );
}

#[tokio::test]
async fn a_throttled_token_endpoint_recovers_within_the_cycle() {
    let emulator = start(EmulatorConfig::default()).await;
    let info = emulator.info();
    emulator.add_fault(FaultRule {
        kind: FaultKind::Throttle { retry_after: 1 },
        endpoint: Endpoint::Token,
        rate: 0.0,
        count: Some(2),
        after: 0,
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), &info.client_secret).unwrap();
    let config = write_config(
        dir.path(),
        &info,
        &format!(
            "client_id = \"{}\"\nclient_secret_file = \"secret\"",
            info.client_id
        ),
        "",
    );
    cycle(&syncer(&config, &env(&[]))).await.unwrap();
    assert_eq!(sentinel_count(&emulator), 4, "synced despite two 429s");
    let statuses: Vec<u16> = emulator
        .store()
        .requests
        .iter()
        .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .map(|r| r.status)
        .collect();
    assert_eq!(&statuses[..3], [429, 429, 200], "{statuses:?}");
}

#[tokio::test]
async fn each_cloud_asks_for_its_own_scopes() {
    for (cloud, graph, arm) in [
        (
            "public",
            "https://graph.microsoft.com",
            "https://management.azure.com",
        ),
        (
            "usgov",
            "https://graph.microsoft.us",
            "https://management.usgovcloudapi.net",
        ),
        (
            "usgov-dod",
            "https://dod-graph.microsoft.us",
            "https://management.usgovcloudapi.net",
        ),
    ] {
        let emulator = start(EmulatorConfig {
            cloud: serde_json::from_value(Value::from(cloud)).unwrap(),
            ..EmulatorConfig::default()
        })
        .await;
        let info = emulator.info();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), &info.client_secret).unwrap();
        let credentials = format!(
            "client_id = \"{}\"\nclient_secret_file = \"secret\"",
            info.client_id
        );
        let config = write_config(
            dir.path(),
            &info,
            &credentials,
            &format!("[cloud]\nname = \"{cloud}\""),
        );
        let loaded = Config::load(&config).unwrap();
        let endpoints = loaded.endpoints(&env(&[]));
        assert_eq!(
            (endpoints.graph_scope(), endpoints.arm_scope()),
            (format!("{graph}/.default"), format!("{arm}/.default"))
        );
        // The emulator plays that cloud: it issues tokens for its resources only.
        cycle(&syncer(&config, &env(&[])))
            .await
            .unwrap_or_else(|e| panic!("{cloud}: {e}"));
        assert_eq!(sentinel_count(&emulator), 4, "{cloud}");

        // The public cloud's scopes are refused by a government cloud, and the other
        // way round, as Entra ID refuses another cloud's resource.
        let other = if cloud == "public" { "usgov" } else { "public" };
        let wrong = write_config(
            dir.path(),
            &info,
            &credentials,
            &format!("[cloud]\nname = \"{other}\""),
        );
        let e = cycle(&syncer(&wrong, &env(&[]))).await.unwrap_err();
        assert!(e.contains("AADSTS500011"), "{cloud} vs {other}: {e}");
    }
}

/// `doctor --json` through the real binary; (exit code, checks by name).
fn doctor(config: &Path, vars: &[(&str, &str)]) -> (i32, HashMap<String, Value>) {
    let output = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["doctor", "--json", "--config", config.to_str().unwrap()])
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("AZURE_CLIENT_SECRET_FILE")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    assert_eq!(report["ok"], output.status.success());
    (output.status.code().unwrap(), checks)
}

fn failed(checks: &HashMap<String, Value>) -> Vec<String> {
    let mut names: Vec<String> = checks
        .iter()
        .filter(|(_, c)| c["ok"] == false)
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_clean_setup_and_names_the_fix_for_each_broken_thing() {
    let emulator = start(EmulatorConfig::default()).await;
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), &info.client_secret).unwrap();
    let credentials = format!(
        "client_id = \"{}\"\nclient_secret_file = \"secret\"",
        info.client_id
    );
    let config = write_config(dir.path(), &info, &credentials, "");

    let (code, checks) = doctor(&config, &[]);
    assert_eq!(failed(&checks), Vec::<String>::new(), "{checks:#?}");
    assert_eq!(code, 0);
    assert_eq!(checks.len(), 14, "{checks:#?}");
    let secret_shown = checks
        .values()
        .any(|c| c.to_string().contains(&info.client_secret));
    assert!(!secret_shown, "no secret in the report");

    // A wrong secret: the Entra ID code, what it means and where to find the right one.
    std::fs::write(dir.path().join("secret"), "wrong-secret-5e1").unwrap();
    let (code, checks) = doctor(&config, &[]);
    assert_eq!(code, 1);
    let token = &checks["graph token"];
    assert!(
        token["detail"]
            .as_str()
            .unwrap()
            .contains("wrong client secret")
            && token["detail"].as_str().unwrap().contains("AADSTS7000215"),
        "{token}"
    );
    assert!(
        token["fix"].as_str().unwrap().contains("Secret ID"),
        "{token}"
    );
    assert!(!checks
        .values()
        .any(|c| c.to_string().contains("wrong-secret-5e1")));
    std::fs::write(dir.path().join("secret"), &info.client_secret).unwrap();

    // The state folder missing, and a pack whose tests fail.
    let pack = dir.path().join("pack");
    copy_dir(Path::new("rules"), &pack);
    let test = std::fs::read_dir(pack.join("tests"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(&test).unwrap()).unwrap();
    break_expectation(&mut spec);
    std::fs::write(&test, spec.to_string()).unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        // /proc refuses new files even to root: an unwritable state folder.
        .replace(
            "state = \"state.db\"",
            "state = \"/proc/rulebridge-state.db\"",
        )
        .replace(
            &format!(
                "rules = \"{}\"",
                std::env::current_dir().unwrap().join("rules").display()
            ),
            "rules = \"pack\"",
        );
    let broken_config = dir.path().join("broken.toml");
    std::fs::write(&broken_config, text).unwrap();
    let (_, checks) = doctor(&broken_config, &[]);
    assert_eq!(failed(&checks), ["rule pack", "state"], "{checks:#?}");
    assert!(
        checks["state"]["detail"]
            .as_str()
            .unwrap()
            .contains("cannot create files in /proc"),
        "{}",
        checks["state"]
    );
    assert!(
        checks["rule pack"]["detail"]
            .as_str()
            .unwrap()
            .contains("test failed"),
        "{}",
        checks["rule pack"]
    );

    // A missing workspace, and a state folder that does not exist.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("rulebridge-workspace", "no-such-workspace")
        .replace(
            "state = \"state.db\"",
            "state = \"no-such-folder/state.db\"",
        );
    std::fs::write(&broken_config, text).unwrap();
    let (_, checks) = doctor(&broken_config, &[]);
    assert_eq!(
        failed(&checks),
        [
            "connector",
            "sentinel permissions",
            "sentinel read",
            "sentinel workspace",
            "state"
        ],
        "{checks:#?}"
    );
    assert!(checks["state"]["detail"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    assert!(checks["sentinel workspace"]["detail"]
        .as_str()
        .unwrap()
        .contains("404"));
    assert!(checks["sentinel workspace"]["fix"]
        .as_str()
        .unwrap()
        .contains("resource_group"));

    // The push hook on: its secret found where `run` looks, named by its source and
    // never shown; set but empty, refused (as unset) with the fix.
    let hooked = write_config(
        dir.path(),
        &info,
        &credentials,
        "[hooks]\nenabled = true\nsecret_env = \"RB_DOCTOR_HOOK_SECRET\"",
    );
    let (code, checks) = doctor(&hooked, &[("RB_DOCTOR_HOOK_SECRET", "hook-s3cret-d0c7")]);
    assert_eq!(
        (code, failed(&checks)),
        (0, Vec::<String>::new()),
        "{checks:#?}"
    );
    let hook = &checks["push hook"];
    assert!(
        hook["detail"]
            .as_str()
            .unwrap()
            .contains("RB_DOCTOR_HOOK_SECRET"),
        "{hook}"
    );
    assert!(!checks
        .values()
        .any(|c| c.to_string().contains("hook-s3cret-d0c7")));
    let (code, checks) = doctor(&hooked, &[("RB_DOCTOR_HOOK_SECRET", "")]);
    assert_eq!((code, failed(&checks)), (1, vec!["push hook".to_string()]));
    assert!(
        checks["push hook"]["detail"]
            .as_str()
            .unwrap()
            .contains("RB_DOCTOR_HOOK_SECRET is not set"),
        "{}",
        checks["push hook"]
    );
    assert!(checks["push hook"]["fix"]
        .as_str()
        .unwrap()
        .contains("hooks.secret_file"));
    drop(emulator);

    // Missing permissions: read-only Graph consent, a Sentinel reader.
    let emulator = start(EmulatorConfig {
        graph_roles: vec!["SecurityIncident.Read.All".into()],
        arm_actions: vec!["Microsoft.SecurityInsights/*/read".into()],
        ..EmulatorConfig::default()
    })
    .await;
    let info = emulator.info();
    let config = write_config(dir.path(), &info, &credentials, "");
    let (code, checks) = doctor(&config, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        failed(&checks),
        ["graph write", "sentinel permissions"],
        "{checks:#?}"
    );
    assert!(checks["graph write"]["fix"]
        .as_str()
        .unwrap()
        .contains("SecurityIncident.ReadWrite.All"));
    let sentinel = checks["sentinel permissions"]["detail"].as_str().unwrap();
    assert!(
        sentinel.contains("incidents/write") && sentinel.contains("comments/write"),
        "{sentinel}"
    );
    assert!(checks["sentinel permissions"]["fix"]
        .as_str()
        .unwrap()
        .contains("Microsoft Sentinel Responder"));
    drop(emulator);

    // No admin consent at all: the token carries no role, and Graph refuses the read.
    let emulator = start(EmulatorConfig {
        graph_roles: Vec::new(),
        ..EmulatorConfig::default()
    })
    .await;
    let info = emulator.info();
    let config = write_config(dir.path(), &info, &credentials, "");
    let (_, checks) = doctor(&config, &[]);
    assert_eq!(
        failed(&checks),
        ["graph read", "graph write"],
        "{checks:#?}"
    );
    assert!(checks["graph read"]["detail"]
        .as_str()
        .unwrap()
        .contains("403"));
    assert!(checks["graph write"]["detail"]
        .as_str()
        .unwrap()
        .contains("admin consent is missing"));

    // An expired certificate: found expired locally, and refused by the token endpoint.
    let expired = write_config(
        dir.path(),
        &info,
        &format!(
            "kind = \"certificate\"\nclient_id = \"{}\"\ncertificate_path = \"{}\"",
            info.client_id, info.expired_client_certificate_path
        ),
        "",
    );
    let (_, checks) = doctor(&expired, &[]);
    assert!(checks["credential"]["detail"]
        .as_str()
        .unwrap()
        .contains("the certificate has expired"));
    let token = checks["graph token"]["detail"].as_str().unwrap();
    assert!(
        token.starts_with("the certificate has expired") && token.contains("AADSTS700027"),
        "{token}"
    );
}

fn break_expectation(spec: &mut Value) {
    // Whatever a test expects, expect something else: a pack whose tests fail.
    let object = spec.as_object_mut().unwrap();
    let key = object
        .keys()
        .find(|k| k.starts_with("expect"))
        .cloned()
        .expect("a pack test has an expectation");
    object.insert(
        key,
        serde_json::json!({"this": "is not what the rules produce"}),
    );
}

use crate::common::copy_dir;

/// `run` as a service manager starts it, with `vars` as its only credential source,
/// until the emulator's 4 incidents are in Sentinel; its log (debug level).
async fn run_until_synced(emulator: &Emulator, config: &Path, vars: &[(&str, &str)]) -> String {
    use std::time::Duration;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulebridge"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("AZURE_CLIENT_SECRET_FILE")
        .env_remove("AZURE_CLIENT_CERTIFICATE_PATH")
        .envs(vars.iter().copied())
        .env("RUST_LOG", "rulebridge=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sentinel_count(emulator) < 4 && std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            panic!(
                "run exited early: {status}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    terminate(child.id());
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_signs_in_from_the_environment_and_never_logs_a_credential() {
    let emulator = start(EmulatorConfig::default()).await;
    let info = emulator.info();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("mounted-secret");
    std::fs::write(&secret, format!("{}\n", info.client_secret)).unwrap();
    // No credential key at all in the config: README's AZURE_CLIENT_SECRET_FILE.
    let config = write_config(
        dir.path(),
        &info,
        &format!("client_id = \"{}\"", info.client_id),
        "poll_interval_secs = 5\n[server]\nlisten = \"127.0.0.1:0\"",
    );
    let log = run_until_synced(
        &emulator,
        &config,
        &[("AZURE_CLIENT_SECRET_FILE", secret.to_str().unwrap())],
    )
    .await;
    assert_eq!(sentinel_count(&emulator), 4, "{log}");
    assert!(
        log.contains("signing in with client secret from AZURE_CLIENT_SECRET_FILE"),
        "{log}"
    );
    assert!(
        !log.contains(&info.client_secret),
        "the secret is never logged"
    );
    // No access token (a JWT: base64url of `{"`) appears either, even at debug level.
    assert!(!log.contains("eyJ"), "{log}");

    // A certificate from AZURE_CLIENT_CERTIFICATE_PATH: its key and the assertions
    // signed with it stay out of the log.
    emulator.store().sentinel.clear();
    let fresh = tempfile::tempdir().unwrap();
    let config = write_config(
        fresh.path(),
        &info,
        &format!("client_id = \"{}\"", info.client_id),
        "poll_interval_secs = 5\n[server]\nlisten = \"127.0.0.1:0\"",
    );
    let pem = std::fs::read_to_string(&info.client_certificate_path).unwrap();
    let key_line = pem
        .lines()
        .skip_while(|l| !l.contains("PRIVATE KEY"))
        .nth(1)
        .unwrap()
        .to_string();
    let log = run_until_synced(
        &emulator,
        &config,
        &[(
            "AZURE_CLIENT_CERTIFICATE_PATH",
            &info.client_certificate_path,
        )],
    )
    .await;
    assert_eq!(sentinel_count(&emulator), 4, "{log}");
    assert!(log.contains("signing in with certificate"), "{log}");
    assert!(!log.contains(&key_line) && !log.contains("eyJ"), "{log}");
}

/// SIGTERM, as a service manager stops `run`.
fn terminate(pid: u32) {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_token_request_per_audience() {
    use rulebridge::client::{Credentials, Secret, TokenSource, ARM_SCOPE, GRAPH_SCOPE};
    let emulator = start(EmulatorConfig::default()).await;
    let info = emulator.info();
    let source = |scope: &str| {
        Arc::new(TokenSource::new(
            reqwest::Client::new(),
            info.token_url.clone(),
            Credentials {
                tenant_id: info.tenant_id.clone(),
                client_id: info.client_id.clone(),
                client_secret: Secret::new(info.client_secret.clone()),
            },
            scope.into(),
        ))
    };
    let (graph, arm) = (source(GRAPH_SCOPE), source(ARM_SCOPE));
    let mut callers = Vec::new();
    for i in 0..16 {
        let tokens = if i % 2 == 0 {
            graph.clone()
        } else {
            arm.clone()
        };
        callers.push(tokio::spawn(async move { tokens.token().await.unwrap() }));
    }
    let mut tokens = Vec::new();
    for caller in callers {
        tokens.push(caller.await.unwrap());
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 2, "one token per audience");
    assert_eq!(token_grants(&emulator).len(), 2, "one request per audience");
}
