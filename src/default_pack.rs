//! The default rule pack, compiled into the binary the way the schemas are, so `check`,
//! `test`, `eval` and `demo` work from any folder (`PackSnapshot::built_in`).
//!
//! The list is written out rather than generated so the top level stays as promised
//! (no build script). The test below fails, naming the file, when `rules/` and this
//! list differ; `tests/cli.rs` checks that both give one pack version.

macro_rules! pack_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/", $path)) as &[u8])),*]
    };
}

/// The default rule pack's files: path relative to the pack → content.
pub const DEFAULT_PACK: &[(&str, &[u8])] = pack_files![
    "direction/ownership.rhai",
    "enrich/vip-accounts.rhai",
    "filter/skip-noise.rhai",
    "map/microsoft-standard.rhai",
    "pack.toml",
    "params/microsoft-standard.schema.json",
    "params/ownership.schema.json",
    "params/skip-noise.schema.json",
    "params/vip-accounts.schema.json",
    "samples/graph-incident-29.json",
    "samples/graph-list-expand-alerts.json",
    "samples/sentinel-incident-closed.json",
    "tables/vip-account.schema.json",
    "tables/vip-accounts.csv",
    "tests/awaiting-action-and-new-sources.json",
    "tests/benign-positive-pascal-case.json",
    "tests/direction-conflict-newer-wins.json",
    "tests/direction-conflict-tie-goes-to-defender.json",
    "tests/direction-connector-twin-gets-labels.json",
    "tests/direction-connector-twin-keeps-its-fields.json",
    "tests/direction-defender-owns-severity.json",
    "tests/direction-labels-conflict-merged.json",
    "tests/direction-one-side-changed.json",
    "tests/direction-unsynced-field-skipped.json",
    "tests/emoji-alert-titles-clipped.json",
    "tests/emoji-description-clipped.json",
    "tests/false-positive-not-enough-data.json",
    "tests/graph-expand-alerts.json",
    "tests/graph-incident-29-exact.json",
    "tests/informational-alerts-not-expanded-kept.json",
    "tests/informational-without-alerts-skipped.json",
    "tests/long-title-clipped.json",
    "tests/mixed-sources-with-sentinel-kept.json",
    "tests/redirected-linked-closes-twin.json",
    "tests/redirected-unlinked-skipped.json",
    "tests/sentinel-closed-to-defender.json",
    "tests/sentinel-labels-back-to-tags.json",
    "tests/sentinel-raised-incident-skipped.json",
    "tests/unknown-future-values.json",
    "tests/vip-account-raises-severity.json",
    "tests/vip-enrich-never-lowers.json",
];

#[cfg(test)]
mod tests {
    use super::DEFAULT_PACK;
    use std::collections::BTreeSet;
    use std::path::Path;

    #[test]
    fn the_built_in_list_names_every_file_of_rules_and_no_other() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let snapshot = crate::snapshot::PackSnapshot::read(&root, None).unwrap();
        let on_disk: BTreeSet<&str> = snapshot.files.keys().map(String::as_str).collect();
        let built_in: BTreeSet<&str> = DEFAULT_PACK.iter().map(|(path, _)| *path).collect();
        let missing: Vec<_> = on_disk.difference(&built_in).collect();
        let stale: Vec<_> = built_in.difference(&on_disk).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "src/default_pack.rs is out of step with rules/: add {missing:?}, remove {stale:?}"
        );
    }
}
