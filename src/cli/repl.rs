//! `rulebridge repl`: evaluate expressions against one incident with the pack's
//! natives, tables and field getters, and a chosen rule's params, `ctx` and helper
//! functions (`:rule NAME`), through [`crate::rules::session::Session`] — every
//! evaluation bounded by the pack's limits, as a rule call is.
//!
//! On a terminal, lines are read with rustyline (editing, history); otherwise plain
//! lines from stdin, without prompts, so scripts and tests can pipe a session in. An
//! unfinished expression (an open bracket or string) continues on the next line.

use super::PackArgs;
use crate::model::Side;
use crate::rules::session::{is_incomplete, show, Session};
use anyhow::{bail, Context};
use clap::Args;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ReplArgs {
    #[command(flatten)]
    pack: PackArgs,
    /// The incident the expressions see as `incident` and `ctx.incident` (a Graph or
    /// Sentinel incident, or a list response: its first incident).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Start with this rule's params, `ctx.rule` and functions (`:rule NAME` changes it).
    #[arg(long, value_name = "NAME")]
    rule: Option<String>,
    /// Which side the incident comes from (`ctx.source`).
    #[arg(long, value_parser = ["defender", "sentinel"], default_value = "defender")]
    from: String,
}

const HELP: &str =
    "expressions and statements are evaluated against the incident; `let` variables persist.
in scope: incident, ctx (ctx.params, ctx.lookup(table, key), ...), params (= ctx.params)
:rule NAME   use that rule's params, ctx.rule and functions
:rules       list the pack's rules
:help        this text
:quit        leave (or Ctrl-D)";

pub fn run(args: &ReplArgs) -> anyhow::Result<ExitCode> {
    let pack = match args.pack.load() {
        Ok(pack) => pack,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            bail!("the rule pack at {} does not load", args.pack.rules_label());
        }
    };
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let incident = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", args.input.display()))?;
    let incident = crate::packtest::first_incident(incident);
    let source = if args.from == "sentinel" {
        Side::Sentinel
    } else {
        Side::Defender
    };
    let now = crate::rules::natives::format_time(chrono::Utc::now());
    let mut session = Session::new(&pack, incident, source, &now);
    if let Some(rule) = &args.rule {
        session.use_rule(rule).map_err(anyhow::Error::msg)?;
    }
    let mut input = Lines::new()?;
    if input.interactive() {
        println!(
            "rulebridge repl: {} (:help for help)",
            super::describe(&pack)
        );
    }
    let mut pending = String::new();
    loop {
        let prompt = match (pending.is_empty(), session.rule()) {
            (false, _) => "...> ".to_string(),
            (true, Some(rule)) => format!("{rule}> "),
            (true, None) => "rb> ".to_string(),
        };
        let Some(line) = input.next(&prompt)? else {
            break;
        };
        if pending.is_empty() {
            match line.trim() {
                "" => continue,
                ":quit" | ":q" => break,
                ":help" => {
                    println!("{HELP}");
                    continue;
                }
                ":rules" => {
                    for r in &pack.rules {
                        println!("{} ({}) {}", r.name, r.stage.name(), r.path);
                    }
                    continue;
                }
                cmd if cmd.starts_with(":rule") => {
                    match session.use_rule(cmd.trim_start_matches(":rule").trim()) {
                        Ok(()) => println!("using rule '{}'", session.rule().unwrap_or("")),
                        Err(e) => println!("error: {e}"),
                    }
                    continue;
                }
                cmd if cmd.starts_with(':') => {
                    println!("error: unknown command {cmd} (:help lists them)");
                    continue;
                }
                _ => {}
            }
        }
        pending.push_str(&line);
        pending.push('\n');
        if is_incomplete(&pending) {
            continue;
        }
        let code = std::mem::take(&mut pending);
        input.remember(code.trim_end());
        match session.eval(&code) {
            Ok(value) => println!("{}", show(&value)),
            Err(e) => println!("error: {e}"),
        }
    }
    if !pending.trim().is_empty() {
        println!("error: unfinished input at the end: {}", pending.trim());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where lines come from: a line editor on a terminal, plain stdin otherwise.
enum Lines {
    Editor(Box<rustyline::DefaultEditor>),
    Plain(std::io::StdinLock<'static>),
}

impl Lines {
    fn new() -> anyhow::Result<Lines> {
        if std::io::stdin().is_terminal() {
            let editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
            Ok(Lines::Editor(Box::new(editor)))
        } else {
            Ok(Lines::Plain(std::io::stdin().lock()))
        }
    }

    fn interactive(&self) -> bool {
        matches!(self, Lines::Editor(_))
    }

    fn next(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        match self {
            Lines::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => Ok(Some(line)),
                Err(rustyline::error::ReadlineError::Eof) => Ok(None),
                // Ctrl-C drops the current line, as shells do; Ctrl-D leaves.
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Some(String::new())),
                Err(e) => Err(e).context("reading a line"),
            },
            Lines::Plain(stdin) => {
                let mut line = String::new();
                if stdin
                    .read_line(&mut line)
                    .context("reading standard input")?
                    == 0
                {
                    return Ok(None);
                }
                Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }

    /// Adds a whole (possibly multi-line) entry to the editor's history.
    fn remember(&mut self, entry: &str) {
        if let Lines::Editor(editor) = self {
            let _ = editor.add_history_entry(entry);
        }
    }
}
