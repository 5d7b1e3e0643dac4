//! Helpers shared by the integration tests.

use rulebridge::rules::CompiledPack;
use rulebridge::snapshot::PackSnapshot;
use std::path::Path;

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
