//! `rulebridge test [NAME] [--update]`: run the pack's own tests (all, or one by name),
//! and with `--update` accept the current output of the failing ones: their files'
//! expectations are rewritten and the change is shown as a diff, for review.

use super::{describe, indent, print_problems, PackArgs};
use crate::packtest;
use anyhow::{bail, Context};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct TestArgs {
    #[command(flatten)]
    pack: PackArgs,
    /// Run only this test: its file name (with or without .json) or its path in the pack.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The same as NAME.
    #[arg(long = "name", value_name = "NAME", conflicts_with = "name")]
    name_flag: Option<String>,
    /// Rewrite each failing test's expectation to the current output (after review),
    /// showing what changed. Tests that expect an error are left alone.
    #[arg(long)]
    update: bool,
}

pub fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let pack = match args.pack.load() {
        Ok(pack) => pack,
        Err(problems) => {
            print_problems(&problems);
            println!("0 passed, 0 failed (the pack does not load)");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{}", describe(&pack));
    let name = args.name.as_deref().or(args.name_flag.as_deref());
    let results = packtest::run_pack_tests_named(&pack, name);
    if let (Some(name), true) = (name, results.is_empty()) {
        let known: Vec<String> = packtest::run_pack_tests(&pack)
            .into_iter()
            .map(|r| r.rel.trim_start_matches("tests/").to_string())
            .collect();
        bail!(
            "no test named '{name}' in the pack (tests: {})",
            known.join(", ")
        );
    }
    let mut all_ok = true;
    for r in &results {
        if r.passed {
            println!("ok      {}", r.name);
            continue;
        }
        println!("FAILED  {}\n{}", r.name, indent(&r.detail));
        match (&r.updated, args.update) {
            (Some(spec), true) => {
                let path = update(&args.pack, &r.rel, spec)?;
                println!("updated {}", path);
            }
            _ => all_ok = false,
        }
    }
    let updated = results.iter().filter(|r| !r.passed).count();
    if args.update && updated > 0 {
        println!(
            "{} ({updated} updated: review the diffs)",
            packtest::summary(&results)
        );
    } else {
        println!("{}", packtest::summary(&results));
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes the accepted spec over the test file and prints the diff; returns its path.
fn update(pack: &PackArgs, rel: &str, spec: &serde_json::Value) -> anyhow::Result<String> {
    let Some(dir) = pack.rules_dir() else {
        bail!("the built-in pack cannot be updated: copy it to a folder and pass --rules DIR");
    };
    let path = dir.join(rel);
    let old =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // Only the expectation is rewritten: the rest of the file keeps its order and layout.
    let new = match replace_expect(&old, &spec["expect"]) {
        Some(text) => text,
        None => serde_json::to_string_pretty(spec)? + "\n",
    };
    let diff = similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(2)
        .header(&path.display().to_string(), &path.display().to_string())
        .to_string();
    print!("{}", indent(&diff));
    println!();
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.display().to_string())
}

/// `text` (a test file) with the value of its top-level `"expect"` key replaced by
/// `expect`, pretty-printed at that depth; `None` if the key is not found.
fn replace_expect(text: &str, expect: &serde_json::Value) -> Option<String> {
    let bytes = text.as_bytes();
    let (mut depth, mut i, mut start) = (0usize, 0usize, None);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let begin = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1
                    && start.is_none()
                    && &text[begin..=i.min(bytes.len() - 1)] == "\"expect\""
                {
                    let colon = text[i + 1..].find(':')? + i + 2;
                    let value = colon + text[colon..].len() - text[colon..].trim_start().len();
                    start = Some(value);
                    i = value;
                    continue;
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if let (Some(s), 1) = (start, depth) {
                    let pretty = serde_json::to_string_pretty(expect)
                        .ok()?
                        .replace('\n', "\n  ");
                    return Some(format!("{}{}{}", &text[..s], pretty, &text[i + 1..]));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}
