//! Helpers shared by the integration tests.

use rulebridge::emulator::EmulatorInfo;
use rulebridge::rules::CompiledPack;
use rulebridge::snapshot::PackSnapshot;
use std::path::{Path, PathBuf};

/// The default pack (`rules/`, judged by `schemas/`), built; a problem fails the test.
pub fn pack() -> CompiledPack {
    pack_at(Path::new("rules"))
}

/// The pack in `dir`, judged by `schemas/`, built; a problem fails the test.
pub fn pack_at(dir: &Path) -> CompiledPack {
    let snapshot = PackSnapshot::read(dir, Some(Path::new("schemas"))).unwrap();
    CompiledPack::build(snapshot).unwrap_or_else(|p| panic!("{p:#?}"))
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
