//! What the playground does, without HTTP: list and read the pack's files, evaluate an
//! edited pack on a sample incident, and save one file only if the pack it makes
//! passes the same acceptance as a hot reload.
//!
//! Invariants: an edited pack is judged exactly as a pack read from disk is (a
//! [`PackSnapshot`] under the reader's ceilings, [`CompiledPack::build`], the
//! pipeline's sandbox limits, [`packtest::accept`] for a save); edits name only files
//! the pack already has; nothing is written unless the whole resulting pack is
//! accepted, and then atomically. Saves are serialised so two cannot interleave
//! their check and write.

use super::files::{self, PathError};
use crate::model::Side;
use crate::packtest;
use crate::problem::Problem;
use crate::rules::{CompiledPack, PipelineResult, RuleError, RunOptions, Twin};
use crate::snapshot::PackSnapshot;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Seeds the page may ask the generator for: any, but one incident at a time.
const SAMPLE_FOLDER: &str = "samples/";

#[derive(Debug, thiserror::Error)]
pub enum PlaygroundError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("'{0}' is not UTF-8 text")]
    NotText(String),
    #[error("the pack on disk does not read: {}", first(.0))]
    Unreadable(Vec<Problem>),
    // The cause is in the message, not also a `source()` (a chain would show it twice).
    #[error("writing {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

fn first(problems: &[Problem]) -> String {
    problems.first().map_or_else(String::new, |p| p.to_string())
}

/// The pack folder the playground edits and the schemas it is judged by.
pub struct Playground {
    rules_dir: PathBuf,
    schemas_dir: Option<PathBuf>,
    save_lock: Mutex<()>,
}

/// Edited files: pack-relative path → the editor's text.
pub type Edits = BTreeMap<String, String>;

/// Where the incident comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sample {
    /// A JSON file of the pack under `samples/` (as edited).
    Pack(String),
    /// The emulator's generator, one incident from this seed.
    Generated(u64),
    /// JSON pasted into the page.
    Pasted(String),
}

#[derive(Debug, Deserialize)]
pub struct EvalRequest {
    #[serde(default)]
    pub edits: Edits,
    pub sample: Sample,
    #[serde(default)]
    pub linked: bool,
    /// `ctx.sync_time` [default: now].
    #[serde(default)]
    pub sync_time: Option<String>,
}

/// A problem as the page shows it: every field the [`Problem`] serializes (so fields it
/// gains appear without a change here), the pack-relative file to open, and whether it
/// came from building the pack or from running it on the sample.
#[derive(Debug, Serialize)]
pub struct Finding {
    #[serde(flatten)]
    pub problem: Problem,
    /// The file in the editor's terms (`map/x.rhai`), when the problem is in the pack.
    pub rel: Option<String>,
    pub origin: &'static str,
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// The edited pack's content hash.
    pub version: Option<String>,
    pub built: bool,
    pub findings: Vec<Finding>,
    /// Which side the sample was read as.
    pub source: Option<Side>,
    pub outcome: Option<PipelineResult>,
    /// The pipeline's failure on this sample (also a finding when it has a place).
    pub error: Option<RuleError>,
    /// Why there is no sample to run (bad JSON, unknown sample file).
    pub sample_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SaveReport {
    pub saved: bool,
    pub path: String,
    /// The pack version on disk after the save (unchanged when refused).
    pub version: Option<String>,
    /// Why the save was refused: the acceptance's problems.
    pub findings: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub label: String,
    pub version: String,
    pub files: Vec<FileEntry>,
    pub samples: Vec<String>,
}

impl Playground {
    pub fn new(rules_dir: PathBuf, schemas_dir: Option<PathBuf>) -> Playground {
        Playground {
            rules_dir,
            schemas_dir,
            save_lock: Mutex::new(()),
        }
    }

    /// The pack as it is on disk now (read fresh: it may be edited outside the page too).
    fn disk(&self) -> Result<PackSnapshot, PlaygroundError> {
        PackSnapshot::read(&self.rules_dir, self.schemas_dir.as_deref())
            .map_err(PlaygroundError::Unreadable)
    }

    pub fn list(&self) -> Result<Listing, PlaygroundError> {
        let disk = self.disk()?;
        let files: Vec<FileEntry> = disk
            .files
            .iter()
            .filter(|(rel, _)| files::check_rel(rel).is_ok())
            .map(|(rel, bytes)| FileEntry {
                path: rel.clone(),
                bytes: bytes.len(),
            })
            .collect();
        let samples = files
            .iter()
            .filter(|f| f.path.starts_with(SAMPLE_FOLDER) && f.path.ends_with(".json"))
            .map(|f| f.path.clone())
            .collect();
        Ok(Listing {
            label: disk.label,
            version: disk.version,
            files,
            samples,
        })
    }

    pub fn read(&self, rel: &str) -> Result<String, PlaygroundError> {
        let rel = files::check_rel(rel)?;
        let disk = self.disk()?;
        let bytes = disk
            .files
            .get(rel)
            .ok_or_else(|| PathError::NotInPack(rel.to_string()))?;
        String::from_utf8(bytes.clone()).map_err(|_| PlaygroundError::NotText(rel.to_string()))
    }

    /// The disk pack with `edits` laid over it, under the snapshot reader's ceilings.
    fn edited(&self, disk: PackSnapshot, edits: &Edits) -> Result<PackSnapshot, PlaygroundError> {
        let mut map = disk.files;
        for (rel, text) in edits {
            let rel = files::check_rel(rel)?;
            let slot = map
                .get_mut(rel)
                .ok_or_else(|| PathError::NotInPack(rel.to_string()))?;
            *slot = text.as_bytes().to_vec();
        }
        PackSnapshot::from_memory(disk.label, map, disk.schemas_label, disk.schemas)
            .map_err(PlaygroundError::Unreadable)
    }

    /// Builds the edited pack and, if it builds, runs the sample through the pipeline
    /// with explain steps.
    pub fn evaluate(&self, req: &EvalRequest) -> Result<EvalReport, PlaygroundError> {
        let snapshot = self.edited(self.disk()?, &req.edits)?;
        let label = snapshot.label.clone();
        let version = snapshot.version.clone();
        let sample = sample_incident(&snapshot, &req.sample);
        let built = CompiledPack::build(snapshot);
        let mut report = EvalReport {
            version: Some(version),
            built: built.is_ok(),
            findings: findings(&label, &built),
            source: None,
            outcome: None,
            error: None,
            sample_error: None,
        };
        let (pack, incident) = match (built, sample) {
            (Ok(pack), Ok(incident)) => (pack, incident),
            (_, Err(why)) => {
                report.sample_error = Some(why);
                return Ok(report);
            }
            (Err(_), _) => return Ok(report),
        };
        // A Sentinel incident carries its fields under `properties`; a Graph one does not.
        let source = if incident.get("properties").is_some_and(Value::is_object) {
            Side::Sentinel
        } else {
            Side::Defender
        };
        report.source = Some(source);
        let opts = RunOptions {
            sync_time: sync_time(req.sync_time.as_deref()),
            linked: req.linked,
            twin: Twin::Rulebridge,
            explain: true,
        };
        match pack.run_pipeline(Arc::new(incident), source, &opts) {
            Ok(outcome) => report.outcome = Some(outcome),
            Err(err) => {
                if let Some(file) = &err.file {
                    let mut problem = Problem::at(file, err.line, err.col, err.to_string());
                    problem.pointer = err.pointer.clone();
                    report.findings.push(finding(&label, problem, "run"));
                }
                report.error = Some(err);
            }
        }
        Ok(report)
    }

    /// Writes `text` to `rel` if the pack it makes passes [`packtest::accept`]
    /// (build, then the pack's tests); otherwise writes nothing and says why.
    pub fn save(&self, rel: &str, text: &str) -> Result<SaveReport, PlaygroundError> {
        let rel = files::check_rel(rel)?;
        // One save at a time: the check and the write must see the same disk.
        let _guard = self.save_lock.lock().unwrap_or_else(|e| e.into_inner());
        let disk = self.disk()?;
        let real = files::resolve_inside(&self.rules_dir, rel)?;
        let edits = Edits::from([(rel.to_string(), text.to_string())]);
        let candidate = self.edited(disk, &edits)?;
        let label = candidate.label.clone();
        match packtest::accept(candidate) {
            Err(problems) => Ok(SaveReport {
                saved: false,
                path: rel.to_string(),
                version: None,
                findings: findings(&label, &Err(problems)),
            }),
            Ok(pack) => {
                files::write_atomic(&real, text.as_bytes()).map_err(|error| {
                    PlaygroundError::Write {
                        path: rel.to_string(),
                        error,
                    }
                })?;
                Ok(SaveReport {
                    saved: true,
                    path: rel.to_string(),
                    version: Some(pack.version.clone()),
                    findings: findings(&label, &Ok(pack)),
                })
            }
        }
    }
}

/// Every finding of one build: the one place findings are collected, so lint warnings
/// kept on a built pack join the list here.
pub fn findings(label: &str, built: &Result<CompiledPack, Vec<Problem>>) -> Vec<Finding> {
    match built {
        Ok(pack) => pack
            .warnings
            .iter()
            .map(|p| finding(label, p.clone(), "check"))
            .collect(),
        Err(problems) => problems
            .iter()
            .map(|p| finding(label, p.clone(), "build"))
            .collect(),
    }
}

fn finding(label: &str, problem: Problem, origin: &'static str) -> Finding {
    let rel = problem
        .file
        .strip_prefix(label)
        .and_then(|rest| rest.strip_prefix('/'))
        .map(str::to_string);
    Finding {
        problem,
        rel,
        origin,
    }
}

fn sample_incident(snapshot: &PackSnapshot, sample: &Sample) -> Result<Value, String> {
    let value = match sample {
        Sample::Pack(rel) => {
            if !rel.starts_with(SAMPLE_FOLDER) {
                return Err(format!("'{rel}' is not under {SAMPLE_FOLDER}"));
            }
            let bytes = snapshot
                .files
                .get(rel)
                .ok_or_else(|| format!("the pack has no sample '{rel}'"))?;
            serde_json::from_slice(bytes).map_err(|e| format!("{rel}: not JSON: {e}"))?
        }
        Sample::Generated(seed) => crate::emulator::seed::generate(1, *seed)
            .pop()
            .ok_or("the generator made no incident")?,
        Sample::Pasted(text) => {
            serde_json::from_str(text).map_err(|e| format!("pasted sample: not JSON: {e}"))?
        }
    };
    match packtest::first_incident(value) {
        Value::Object(map) => Ok(Value::Object(map)),
        _ => Err("the sample is not an incident object (or a list with one)".to_string()),
    }
}

fn sync_time(given: Option<&str>) -> String {
    use crate::rules::natives::{format_time, parse_time};
    given
        .and_then(parse_time)
        .map(format_time)
        .unwrap_or_else(|| format_time(chrono::Utc::now()))
}
