//! Which pack files the playground may read and write, and how it writes them.
//!
//! The page is driven by requests, so every path in one is untrusted. A path is taken
//! only if it is relative, normalised (no `.`/`..`/empty segments, no backslashes),
//! not hidden, of a kind a pack holds (`.rhai`, `.toml`, `.json`, `.csv`) and already a
//! file of the pack as the snapshot reader saw it. Before a write the real path is
//! resolved again (a link may have been re-pointed since) and must still lie inside the
//! pack folder. Writes are atomic: a temporary file beside the target, then a rename,
//! so the hot reload watching the same folder never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Extensions of the files a rule pack is made of (scripts, manifest, schemas and
/// tests, tables).
pub const PACK_FILE_KINDS: [&str; 4] = ["rhai", "toml", "json", "csv"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("'{0}' is not a relative path inside the pack (no '..', no absolute paths)")]
    Escapes(String),
    #[error("'{0}' is not a kind of file a pack holds (.rhai, .toml, .json, .csv)")]
    Kind(String),
    #[error("'{0}' is not a file of the pack")]
    NotInPack(String),
    #[error("'{0}' resolves outside the pack folder")]
    LinkEscapes(String),
}

/// Checks the shape of a requested path (not yet whether the pack has it).
pub fn check_rel(rel: &str) -> Result<&str, PathError> {
    let escapes = || PathError::Escapes(clip(rel));
    if rel.is_empty() || rel.starts_with('/') || rel.contains('\\') || rel.contains(':') {
        return Err(escapes());
    }
    if rel
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == ".." || part.starts_with('.'))
    {
        return Err(escapes());
    }
    let kind_ok = rel
        .rsplit_once('.')
        .is_some_and(|(_, ext)| PACK_FILE_KINDS.contains(&ext));
    if !kind_ok {
        return Err(PathError::Kind(clip(rel)));
    }
    Ok(rel)
}

/// Where `rel` really is, if it is inside `root` (both resolved through links).
pub fn resolve_inside(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    check_rel(rel)?;
    let root = root
        .canonicalize()
        .map_err(|_| PathError::NotInPack(clip(rel)))?;
    let real = root
        .join(rel)
        .canonicalize()
        .map_err(|_| PathError::NotInPack(clip(rel)))?;
    if !real.starts_with(&root) {
        return Err(PathError::LinkEscapes(clip(rel)));
    }
    if !real.is_file() {
        return Err(PathError::NotInPack(clip(rel)));
    }
    Ok(real)
}

/// Replaces `path` with `bytes` atomically (temporary file in the same folder, fsync,
/// rename). The file keeps its permissions.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // A dot name: the snapshot reader and the watcher's reload skip hidden entries, so a
    // crash between write and rename leaves nothing a reload would take for pack content.
    let mut tmp = tempfile::Builder::new()
        .prefix(".playground-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A requested path quoted in an error: clipped, it came from the request.
fn clip(rel: &str) -> String {
    crate::problem::clip_text(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_are_not_plain_pack_files() {
        assert_eq!(check_rel("map/a.rhai"), Ok("map/a.rhai"));
        assert_eq!(check_rel("pack.toml"), Ok("pack.toml"));
        for bad in [
            "../a.rhai",
            "map/../../a.rhai",
            "/etc/passwd.toml",
            "map//a.rhai",
            "./a.rhai",
            "map\\a.rhai",
            ".git/config.toml",
            "C:/a.rhai",
            "",
        ] {
            assert!(
                matches!(check_rel(bad), Err(PathError::Escapes(_))),
                "{bad}"
            );
        }
        assert!(matches!(check_rel("run.sh"), Err(PathError::Kind(_))));
        assert!(matches!(check_rel("map/a"), Err(PathError::Kind(_))));
    }

    #[test]
    fn a_link_out_of_the_pack_is_refused_and_writes_are_whole() {
        let outside = tempfile::tempdir().unwrap();
        let pack = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.rhai"), "x").unwrap();
        std::fs::write(pack.path().join("a.rhai"), "old").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(
                outside.path().join("secret.rhai"),
                pack.path().join("link.rhai"),
            )
            .unwrap();
            assert!(matches!(
                resolve_inside(pack.path(), "link.rhai"),
                Err(PathError::LinkEscapes(_))
            ));
        }
        assert!(matches!(
            resolve_inside(pack.path(), "missing.rhai"),
            Err(PathError::NotInPack(_))
        ));
        let real = resolve_inside(pack.path(), "a.rhai").unwrap();
        write_atomic(&real, b"new").unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // Nothing left beside it: the temporary file was renamed, not copied.
        let names: Vec<_> = std::fs::read_dir(pack.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
