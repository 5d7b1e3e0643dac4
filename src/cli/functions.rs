//! `rulebridge functions`: the function reference (every native, `Json` view member and
//! `ctx` member, and the Rhai features the sandbox allows and forbids), printed from
//! the same data `docs/rules.md` is generated from (`rules::reference`).

use crate::rules::reference;
use clap::{Args, ValueEnum};
use std::process::ExitCode;

#[derive(Args)]
pub struct FunctionsArgs {
    /// `text` for a terminal, `markdown` for what docs/rules.md holds.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Markdown,
}

pub fn run(args: &FunctionsArgs) -> anyhow::Result<ExitCode> {
    match args.format {
        Format::Text => print!("{}", reference::text()),
        Format::Markdown => print!("{}", reference::markdown()),
    }
    Ok(ExitCode::SUCCESS)
}
