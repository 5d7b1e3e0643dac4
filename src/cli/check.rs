//! `check` and `check --watch`: what a rule author reads.
//!
//! `check` prints every finding like rustc does — the source line, carets under the
//! span, the hint — through codespan-reporting (colours only on a terminal), or one
//! GCC-style line each (`--format short`), or one JSON array (`--format json`, stable
//! fields for editors and CI). Exit 1 on any error, 0 with warnings only, unless
//! `--deny-warnings`. `check` and `check --watch` judge a pack with `packtest::accept`
//! (build, static pass, the pack's own tests), exactly what startup and a hot reload
//! run; `--watch` prints only what changed since the previous save.

use super::{indent, PackArgs};
use crate::packtest;
use crate::problem::{Problem, Severity};
use crate::snapshot::PackSnapshot;
use clap::{Args, ValueEnum};
use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub pack: PackArgs,
    /// Keep watching the pack and schemas; judge every save as a hot reload would (build,
    /// then the pack's tests) and print what changed.
    #[arg(long)]
    pub watch: bool,
    /// How findings are printed.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Fail (exit 1) on warnings too, for CI.
    #[arg(long)]
    pub deny_warnings: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Source lines with carets, like rustc.
    Human,
    /// One `path:line:col: message [CODE]` line each, like GCC.
    Short,
    /// One JSON array of findings.
    Json,
}

/// A finding as `--format json` prints it. The field names are a contract with editors
/// and CI scripts: add fields, never rename them.
#[derive(Serialize)]
struct JsonFinding<'p> {
    code: Option<&'p str>,
    severity: Severity,
    file: &'p str,
    line: Option<usize>,
    col: Option<usize>,
    end_line: Option<usize>,
    end_col: Option<usize>,
    pointer: Option<&'p str>,
    message: &'p str,
    hint: Option<&'p str>,
}

impl<'p> From<&'p Problem> for JsonFinding<'p> {
    fn from(p: &'p Problem) -> Self {
        JsonFinding {
            code: p.code,
            severity: p.severity,
            file: &p.file,
            line: p.line,
            col: p.col,
            end_line: p.end_line,
            end_col: p.end_col,
            pointer: p.pointer.as_deref(),
            message: &p.message,
            hint: p.hint.as_deref(),
        }
    }
}

pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let (snapshot, result) = match args.pack.snapshot() {
        Ok(snapshot) => {
            // What run, a reload, demo and the playground accept: built, then its tests.
            let result = packtest::accept(snapshot.clone());
            (Some(snapshot), result)
        }
        Err(problems) => (None, Err(problems)),
    };
    let (findings, pack) = match result {
        Ok(pack) => (pack.warnings.clone(), Some(pack)),
        Err(problems) => (problems, None),
    };
    let errors = findings.iter().filter(|p| p.is_error()).count();
    let warnings = findings.len() - errors;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json(&findings))?),
        Format::Short => {
            for p in &findings {
                println!("{p}");
            }
        }
        Format::Human => {
            let color = std::io::stdout().is_terminal();
            print!("{}", render(&findings, snapshot.as_ref(), color));
        }
    }
    if args.format != Format::Json {
        match &pack {
            Some(pack) if warnings == 0 => println!("{}: ok", super::describe(pack)),
            Some(pack) => println!(
                "{}: ok, {}",
                super::describe(pack),
                count(warnings, "warning")
            ),
            // The last line counts problems, as it always has (scripts read it).
            None => println!("{}", count(findings.len(), "problem")),
        }
    }
    let failed = errors > 0 || (args.deny_warnings && warnings > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn json(findings: &[Problem]) -> Vec<JsonFinding<'_>> {
    findings.iter().map(JsonFinding::from).collect()
}

/// The findings as rustc shows its diagnostics: every located one with its source line
/// and carets; the others (a file, a JSON pointer) as a header and a note.
pub fn render(findings: &[Problem], snapshot: Option<&PackSnapshot>, color: bool) -> String {
    let mut files = SimpleFiles::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    if let Some(s) = snapshot {
        for (rel, bytes) in &s.files {
            if let Ok(text) = std::str::from_utf8(bytes) {
                ids.insert(
                    s.display_path(rel),
                    files.add(s.display_path(rel), text.to_string()),
                );
            }
        }
    }
    let mut out = termcolor::Buffer::no_color();
    if color {
        out = termcolor::Buffer::ansi();
    }
    let config = term::Config::default();
    for p in findings {
        let located = ids
            .get(&p.file)
            .and_then(|&id| span(files.get(id).ok()?.source(), p).map(|r| (id, r)));
        // Without a source line to show, the header names the place (GCC style).
        let header = match (&located, &p.pointer) {
            (Some(_), Some(pointer)) => format!("{pointer}: {}", p.message),
            (Some(_), None) => p.message.clone(),
            (None, _) => {
                let mut plain = p.clone();
                plain.code = None;
                plain.severity = Severity::Error;
                plain.to_string()
            }
        };
        let mut d = match p.severity {
            Severity::Error => Diagnostic::error(),
            Severity::Warning => Diagnostic::warning(),
        }
        .with_message(header);
        if let Some(code) = p.code {
            d = d.with_code(code);
        }
        let mut notes = Vec::new();
        match located {
            Some((id, range)) => {
                let label = Label::primary(id, range);
                d = d.with_labels(vec![match &p.hint {
                    Some(h) if h.len() <= 80 => label.with_message(h),
                    _ => label,
                }]);
                if let Some(h) = p.hint.as_ref().filter(|h| h.len() > 80) {
                    notes.push(format!("hint: {h}"));
                }
            }
            None => {
                if let Some(h) = &p.hint {
                    notes.push(format!("hint: {h}"));
                }
            }
        }
        d = d.with_notes(notes);
        // A rendering failure (a span past the file) falls back to the one-line form.
        if term::emit_to_write_style(&mut out, &config, &files, &d).is_err() {
            let _ = std::io::Write::write_all(&mut out, format!("{p}\n").as_bytes());
        }
    }
    String::from_utf8_lossy(out.as_slice()).into_owned()
}

/// The byte range a problem covers in `text` (its columns count characters).
fn span(text: &str, p: &Problem) -> Option<std::ops::Range<usize>> {
    let line = p.line?;
    let start_of = |line: usize| -> Option<usize> {
        if line == 1 {
            return Some(0);
        }
        text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)
    };
    let line_start = start_of(line)?;
    let line_text = text[line_start..].split('\n').next().unwrap_or("");
    let at = |base: usize, t: &str, col: usize| -> usize {
        base + t
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(t.len(), |(i, _)| i)
    };
    let Some(col) = p.col else {
        return Some(line_start..line_start + line_text.len());
    };
    let start = at(line_start, line_text, col);
    let end = match (p.end_line, p.end_col) {
        (Some(l), Some(c)) => {
            let base = start_of(l)?;
            let t = text[base..].split('\n').next().unwrap_or("");
            at(base, t, c)
        }
        _ => {
            let rest = &text[start..];
            start + rest.chars().next().map_or(0, char::len_utf8)
        }
    };
    Some(start..end.max(start))
}

/// What one `check --watch` run found: every finding's line, and whether it was accepted.
struct Round {
    findings: BTreeSet<String>,
}

const TEST_FAILED: &str = "test failed: ";

/// `check --watch`: accept now, then after every settled save, through the same
/// watcher and the same acceptance as hot reload; each run prints a timestamp and only
/// what changed since the previous one.
pub fn watch(args: &PackArgs) -> anyhow::Result<ExitCode> {
    let Some(rules) = args.rules_dir() else {
        anyhow::bail!(
            "check --watch watches a rule pack folder, and there is no rules/ here: pass --rules DIR"
        );
    };
    let mut dirs = vec![rules];
    dirs.extend(args.schemas_dir());
    let shown = dirs
        .iter()
        .map(|d| format!("{}/", d.display().to_string().trim_end_matches('/')))
        .collect::<Vec<_>>()
        .join(" and ");
    let args = args.clone();
    let mut last_version: Option<String> = None;
    let mut last: Option<Round> = None;
    let _watcher = crate::reload::watch_paths(&dirs, Default::default(), move || {
        let snapshot = args.snapshot();
        let version = snapshot.as_ref().ok().map(|s| s.version.clone());
        // Saving without changing anything (or a touch) has nothing new to report.
        if version.is_some() && version == last_version {
            return;
        }
        last_version = version;
        if last.is_some() {
            println!();
        }
        println!("[{}]", chrono::Local::now().format("%H:%M:%S"));
        let (problems, accepted) = match snapshot {
            Ok(snapshot) => match packtest::accept(snapshot) {
                Ok(pack) => (pack.warnings.clone(), Some(pack)),
                Err(problems) => (problems, None),
            },
            Err(problems) => (problems, None),
        };
        let round = Round {
            findings: problems.iter().map(|p| p.to_string()).collect(),
        };
        let before = last.as_ref().map(|r| &r.findings);
        for p in &problems {
            if before.is_some_and(|b| b.contains(&p.to_string())) {
                continue;
            }
            match p.message.strip_prefix(TEST_FAILED) {
                Some(detail) => println!("FAILED  {}\n{}", p.file, indent(detail)),
                None => println!("{p}"),
            }
        }
        if let Some(before) = before {
            for gone in before.difference(&round.findings) {
                println!("fixed: {gone}");
            }
        }
        let unchanged = problems.len()
            - problems
                .iter()
                .filter(|p| !before.is_some_and(|b| b.contains(&p.to_string())))
                .count();
        if unchanged > 0 {
            println!("({unchanged} unchanged since the last run)");
        }
        match &accepted {
            Some(pack) => {
                let tests = pack
                    .snapshot
                    .files
                    .keys()
                    .filter(|rel| rel.starts_with("tests/") && rel.ends_with(".json"))
                    .count();
                println!("{}: ok", super::describe(pack));
                println!("{tests} passed, 0 failed");
            }
            None => println!("{}", count(problems.len(), "problem")),
        }
        last = Some(round);
        println!("watching {shown} (Ctrl-C stops)");
    })?;
    // Ctrl-C ends the process; the watch thread does all the work until then.
    loop {
        std::thread::park();
    }
}
