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
//!
//! A pack is untrusted input, so the walk reads only what a pack is: regular files and
//! folders. Every folder is read once (a visited set of real paths): a link back to a
//! folder being walked is a cycle, a second link to a folder already read is refused,
//! both errors naming the link. FIFOs, sockets and devices are errors with their path,
//! judged from metadata without opening them (opening a FIFO blocks). Size, file count
//! and depth have ceilings checked before reading, so a hostile tree fails fast.

use crate::problem::Problem;
use crate::schema;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How the default pack built into the binary is named in messages.
pub const BUILT_IN_PACK_LABEL: &str = "<built-in default pack>";

/// A pack larger than this is refused: a rule pack is text, not a data store.
const MAX_PACK_BYTES: u64 = 64 * 1024 * 1024;
/// Files a pack may hold (the default pack has a few dozen).
const MAX_PACK_FILES: usize = 10_000;
/// Folder nesting a pack may have.
const MAX_PACK_DEPTH: usize = 32;

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

    /// Builds a snapshot from files held in memory (the playground's edited pack), under
    /// the same ceilings as [`PackSnapshot::read`]: file count, total size, folder depth,
    /// and only paths `read` could have produced (relative, normalised, nothing hidden).
    pub fn from_memory(
        label: String,
        files: BTreeMap<String, Vec<u8>>,
        schemas_label: String,
        schemas: BTreeMap<String, Vec<u8>>,
    ) -> Result<PackSnapshot, Vec<Problem>> {
        let mut problems = Vec::new();
        if files.len() > MAX_PACK_FILES {
            problems.push(Problem::in_file(
                &label,
                format!("pack has more than {MAX_PACK_FILES} files"),
            ));
        }
        let total: u64 = files.values().map(|b| b.len() as u64).sum();
        if total > MAX_PACK_BYTES {
            problems.push(Problem::in_file(
                &label,
                format!("pack is larger than {MAX_PACK_BYTES} bytes"),
            ));
        }
        for rel in files.keys() {
            let shown = join(&label, rel);
            let parts: Vec<&str> = rel.split('/').collect();
            if confine(rel).as_deref() != Ok(rel.as_str()) || parts.iter().any(|p| is_ignored(p)) {
                problems.push(Problem::in_file(shown, "not a path a pack file can have"));
            } else if parts.len() > MAX_PACK_DEPTH {
                problems.push(Problem::in_file(
                    shown,
                    format!("folders nested deeper than {MAX_PACK_DEPTH} levels"),
                ));
            }
        }
        if problems.is_empty() {
            Ok(PackSnapshot::from_parts(
                label,
                files,
                schemas_label,
                schemas,
            ))
        } else {
            Err(problems)
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
    // Real path of every folder read → how it was reached (relative path).
    let mut visited: HashMap<PathBuf, String> = HashMap::from([(root.clone(), String::new())]);
    // (real path, relative path, real paths of the folders above it, innermost last)
    let mut pending = vec![(root.clone(), String::new(), Vec::<PathBuf>::new())];
    while let Some((path, rel_dir, ancestors)) = pending.pop() {
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
        let mut entries: Vec<_> = entries.flatten().collect();
        // A stable order: the same tree always yields the same problems.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
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
            // `metadata` follows the link but opens nothing: a FIFO is judged, not read.
            let meta = match fs::metadata(&real) {
                Ok(meta) => meta,
                Err(e) => {
                    problems.push(Problem::in_file(shown, format!("cannot read: {e}")));
                    continue;
                }
            };
            if meta.is_dir() {
                if real == path || ancestors.contains(&real) {
                    let target = visited.get(&real).cloned().unwrap_or_default();
                    problems.push(Problem::in_file(
                        shown,
                        format!(
                            "symlink cycle: leads back to {}, which contains it",
                            join(label, &target)
                        ),
                    ));
                    continue;
                }
                if let Some(first) = visited.get(&real) {
                    problems.push(Problem::in_file(
                        shown,
                        format!(
                            "links to a folder already in the pack ({}); a folder is read once",
                            join(label, first)
                        ),
                    ));
                    continue;
                }
                if ancestors.len() + 1 >= MAX_PACK_DEPTH {
                    problems.push(Problem::in_file(
                        shown,
                        format!("folders nested deeper than {MAX_PACK_DEPTH} levels"),
                    ));
                    return files;
                }
                visited.insert(real.clone(), rel.clone());
                let mut inner = ancestors.clone();
                inner.push(path.clone());
                pending.push((real, rel, inner));
                continue;
            }
            if !meta.is_file() {
                problems.push(Problem::in_file(
                    shown,
                    format!(
                        "is a {}, not a file or folder; a pack holds only files and folders",
                        special_kind(&meta)
                    ),
                ));
                continue;
            }
            if files.len() >= MAX_PACK_FILES {
                problems.push(Problem::in_file(
                    label,
                    format!("pack has more than {MAX_PACK_FILES} files"),
                ));
                return files;
            }
            if total + meta.len() > MAX_PACK_BYTES {
                problems.push(Problem::in_file(
                    label,
                    format!("pack is larger than {MAX_PACK_BYTES} bytes (at {shown})"),
                ));
                return files;
            }
            // Read at most what is left of the ceiling: a file may grow after `metadata`.
            let read = fs::File::open(&real).and_then(|f| {
                let mut bytes = Vec::with_capacity(meta.len() as usize);
                f.take(MAX_PACK_BYTES - total + 1).read_to_end(&mut bytes)?;
                Ok(bytes)
            });
            match read {
                Ok(bytes) => {
                    total += bytes.len() as u64;
                    if total > MAX_PACK_BYTES {
                        problems.push(Problem::in_file(
                            label,
                            format!("pack is larger than {MAX_PACK_BYTES} bytes (at {shown})"),
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

/// What a non-regular file is, for messages.
fn special_kind(meta: &fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "FIFO (named pipe)";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "device";
        }
    }
    let _ = meta;
    "special file"
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
    fn from_memory_keeps_the_ceilings_and_path_rules_of_read() {
        let files = |names: &[&str]| -> Files {
            names
                .iter()
                .map(|n| (n.to_string(), b"x".to_vec()))
                .collect()
        };
        let ok = PackSnapshot::from_memory(
            "p".into(),
            files(&["pack.toml", "map/a.rhai"]),
            "s".into(),
            Files::new(),
        );
        assert!(ok.is_ok());
        for bad in [
            "../x.rhai",
            "/etc/passwd",
            "map/../a.rhai",
            ".git/config",
            "a.rhai~",
            "map//a.rhai",
        ] {
            let err =
                PackSnapshot::from_memory("p".into(), files(&[bad]), "s".into(), Files::new())
                    .err()
                    .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err[0].message.contains("not a path"), "{bad}: {err:?}");
        }
        let deep = vec!["d"; MAX_PACK_DEPTH + 1].join("/");
        assert!(
            PackSnapshot::from_memory("p".into(), files(&[&deep]), "s".into(), Files::new())
                .is_err()
        );
        let big: Files = [("t.csv".to_string(), vec![b'x'; MAX_PACK_BYTES as usize + 1])].into();
        let err = PackSnapshot::from_memory("p".into(), big, "s".into(), Files::new()).unwrap_err();
        assert!(err[0].message.contains("larger than"), "{err:?}");
    }

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
