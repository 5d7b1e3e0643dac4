//! Reading a rule pack from disk into one in-memory snapshot.
//!
//! This is the only module that reads rule-pack files. Everything after it (manifest,
//! schemas, compilation, tests) works on the bytes captured here, so a pack is always
//! judged as one consistent set of files even while an editor is saving, and the
//! content hash names exactly what was judged.
//!
//! Walking rules: hidden entries (`.git`, editor swap files, the timestamped folders of a
//! Kubernetes ConfigMap) are skipped; symlinks are followed only when they resolve inside
//! the pack (which is how a ConfigMap's `file -> ..data/file` links resolve).

use crate::problem::Problem;
use crate::schema;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// How the default pack built into the binary is named in messages.
pub const BUILT_IN_PACK_LABEL: &str = "<built-in default pack>";

/// A pack larger than this is refused: a rule pack is text, not a data store.
const MAX_PACK_BYTES: u64 = 64 * 1024 * 1024;

/// The files of a rule pack and of the schemas it is judged by, as bytes.
#[derive(Debug, Clone)]
pub struct PackSnapshot {
    /// The pack folder as the user named it, for messages (`rules`, `./my-pack`).
    pub label: String,
    /// Relative path (with `/`) → content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The schemas folder as named, or `<built-in schemas>`.
    pub schemas_label: String,
    /// Schema file name → content.
    pub schemas: BTreeMap<String, Vec<u8>>,
    /// Content hash of both: the pack version.
    pub version: String,
}

impl PackSnapshot {
    /// Reads `rules_dir`, and `schemas_dir` or else the schemas built into the binary.
    pub fn read(
        rules_dir: &Path,
        schemas_dir: Option<&Path>,
    ) -> Result<PackSnapshot, Vec<Problem>> {
        let label = display_dir(rules_dir);
        let mut problems = Vec::new();
        let files = read_tree(rules_dir, &label, &mut problems);
        let (schemas_label, schemas) = match read_schemas(schemas_dir) {
            Ok(schemas) if problems.is_empty() => schemas,
            Ok(_) => return Err(problems),
            Err(mut more) => {
                problems.append(&mut more);
                return Err(problems);
            }
        };
        Ok(PackSnapshot::from_parts(
            label,
            files,
            schemas_label,
            schemas,
        ))
    }

    /// The default pack built into the binary (the project's `rules/` at build time),
    /// judged by `schemas_dir` or else the built-in schemas.
    pub fn built_in(schemas_dir: Option<&Path>) -> Result<PackSnapshot, Vec<Problem>> {
        let files = crate::default_pack::DEFAULT_PACK
            .iter()
            .map(|(rel, bytes)| (rel.to_string(), bytes.to_vec()))
            .collect();
        let (schemas_label, schemas) = read_schemas(schemas_dir)?;
        Ok(PackSnapshot::from_parts(
            BUILT_IN_PACK_LABEL.to_string(),
            files,
            schemas_label,
            schemas,
        ))
    }

    /// Builds a snapshot from files already in memory (tests, embedded packs).
    pub fn from_parts(
        label: String,
        files: BTreeMap<String, Vec<u8>>,
        schemas_label: String,
        schemas: BTreeMap<String, Vec<u8>>,
    ) -> PackSnapshot {
        let mut hasher = Sha256::new();
        for (prefix, set) in [("pack/", &files), ("schemas/", &schemas)] {
            for (name, bytes) in set {
                hasher.update(prefix.as_bytes());
                hasher.update(name.as_bytes());
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
        }
        let digest = hasher.finalize();
        let version = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        PackSnapshot {
            label,
            files,
            schemas_label,
            schemas,
            version,
        }
    }

    /// The path of a pack file as users should see it in messages.
    pub fn display_path(&self, rel: &str) -> String {
        format!("{}/{}", self.label, rel)
    }

    pub fn text(&self, rel: &str) -> Option<Result<&str, Problem>> {
        self.files.get(rel).map(|bytes| {
            std::str::from_utf8(bytes).map_err(|e| {
                Problem::in_file(
                    self.display_path(rel),
                    format!("not UTF-8 text (byte {})", e.valid_up_to()),
                )
            })
        })
    }
}

/// Relative path → content.
type Files = BTreeMap<String, Vec<u8>>;

/// The schemas in `schemas_dir` (top level only), or else the ones built into the binary.
fn read_schemas(schemas_dir: Option<&Path>) -> Result<(String, Files), Vec<Problem>> {
    let Some(dir) = schemas_dir else {
        let built_in = schema::BUILT_IN
            .iter()
            .map(|(n, s)| (n.to_string(), s.as_bytes().to_vec()))
            .collect();
        return Ok(("<built-in schemas>".to_string(), built_in));
    };
    let label = display_dir(dir);
    let mut problems = Vec::new();
    let schemas = read_tree(dir, &label, &mut problems)
        .into_iter()
        .filter(|(name, _)| !name.contains('/'))
        .collect();
    if problems.is_empty() {
        Ok((label, schemas))
    } else {
        Err(problems)
    }
}

fn display_dir(dir: &Path) -> String {
    let s = dir.to_string_lossy();
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    }
}

fn read_tree(dir: &Path, label: &str, problems: &mut Vec<Problem>) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let root = match fs::canonicalize(dir) {
        Ok(root) if root.is_dir() => root,
        Ok(_) => {
            problems.push(Problem::in_file(label, "not a folder"));
            return files;
        }
        Err(e) => {
            problems.push(Problem::in_file(label, format!("cannot open: {e}")));
            return files;
        }
    };
    let mut total = 0u64;
    let mut pending = vec![(root.clone(), String::new())];
    while let Some((path, rel_dir)) = pending.pop() {
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push(Problem::in_file(
                    join(label, &rel_dir),
                    format!("cannot list: {e}"),
                ));
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_ignored(&name) {
                continue;
            }
            let rel = if rel_dir.is_empty() {
                name.clone()
            } else {
                format!("{rel_dir}/{name}")
            };
            let shown = join(label, &rel);
            let real = match fs::canonicalize(entry.path()) {
                Ok(real) => real,
                Err(e) => {
                    problems.push(Problem::in_file(shown, format!("cannot resolve: {e}")));
                    continue;
                }
            };
            if !real.starts_with(&root) {
                problems.push(Problem::in_file(
                    shown,
                    "symlink leads outside the pack folder",
                ));
                continue;
            }
            if real.is_dir() {
                pending.push((real, rel));
                continue;
            }
            match fs::read(&real) {
                Ok(bytes) => {
                    total += bytes.len() as u64;
                    if total > MAX_PACK_BYTES {
                        problems.push(Problem::in_file(
                            label,
                            format!("pack is larger than {MAX_PACK_BYTES} bytes"),
                        ));
                        return files;
                    }
                    files.insert(rel, bytes);
                }
                Err(e) => problems.push(Problem::in_file(shown, format!("cannot read: {e}"))),
            }
        }
    }
    files
}

/// Hidden entries and editor leftovers are not part of a pack.
fn is_ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name == "4913"
}

fn join(label: &str, rel: &str) -> String {
    if rel.is_empty() {
        label.to_string()
    } else {
        format!("{label}/{rel}")
    }
}

/// Resolves `rel` (a path written in the manifest or an import) against the pack,
/// refusing anything that would lead outside it. Returns the normalised relative path.
pub fn confine(rel: &str) -> Result<String, String> {
    let rel = rel.replace('\\', "/");
    if rel.starts_with('/') || rel.contains(':') {
        return Err(format!(
            "'{rel}' is not a path inside the pack (absolute paths are refused)"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("'{rel}' leads outside the pack"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!("'{rel}' names no file"));
    }
    Ok(parts.join("/"))
}

/// The default rule pack folder: `rules/` under the current directory.
pub fn default_rules_dir() -> PathBuf {
    PathBuf::from("rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confine_normalises_and_refuses_escapes() {
        assert_eq!(confine("lib/./util.rhai").unwrap(), "lib/util.rhai");
        assert_eq!(confine("map/../lib/util.rhai").unwrap(), "lib/util.rhai");
        assert!(confine("../secret.rhai").is_err());
        assert!(confine("lib/../../x.rhai").is_err());
        assert!(confine("/etc/passwd").is_err());
        assert!(confine("C:/x.rhai").is_err());
        assert!(confine("..\\x.rhai").is_err());
    }
}
