//! The table of finding codes: one place, so a code never changes meaning and README's
//! table can be checked against it (`tests/lint.rs`).
//!
//! Errors refuse the pack (at startup, at reload, in `check`); a static error must be
//! certain, because a false one refuses a live reload. Warnings are reported and the
//! pack is still used (`check --deny-warnings` makes them fail).

use crate::problem::Severity;

pub struct Code {
    pub code: &'static str,
    pub severity: Severity,
    pub title: &'static str,
}

const fn error(code: &'static str, title: &'static str) -> Code {
    Code {
        code,
        severity: Severity::Error,
        title,
    }
}

const fn warning(code: &'static str, title: &'static str) -> Code {
    Code {
        code,
        severity: Severity::Warning,
        title,
    }
}

pub const UNKNOWN_FUNCTION: &str = "RB001";
pub const FORBIDDEN_FUNCTION: &str = "RB002";
pub const UNKNOWN_CTX_MEMBER: &str = "RB003";
pub const UNKNOWN_PARAM: &str = "RB004";
pub const UNKNOWN_TABLE: &str = "RB005";
pub const ENTRY_ARITY: &str = "RB006";
pub const SYNTAX: &str = "RB007";
pub const BAD_PARAMS: &str = "RB008";
pub const UNKNOWN_INPUT_FIELD: &str = "RB101";
pub const UNKNOWN_PLUCK_PATH: &str = "RB102";
pub const UNKNOWN_OUTPUT_FIELD: &str = "RB103";
pub const UNUSED_VARIABLE: &str = "RB104";
pub const UNREACHABLE: &str = "RB105";

/// Every code, in order: what README's table lists.
pub const CODES: &[Code] = &[
    error(UNKNOWN_FUNCTION, "unknown function or method (did-you-mean from the sandbox's functions and the script's own)"),
    error(FORBIDDEN_FUNCTION, "a function the sandbox forbids (`sleep`, `exit`, `timestamp()`, `parse_json`, …)"),
    error(UNKNOWN_CTX_MEMBER, "unknown `ctx` member"),
    error(UNKNOWN_PARAM, "a params key the rule's params schema does not list and the manifest does not set"),
    error(UNKNOWN_TABLE, "a lookup table the manifest does not declare"),
    error(ENTRY_ARITY, "an entry point with the wrong number of parameters"),
    error(SYNTAX, "a syntax error (an unclosed `{`, `(` or `[` is reported where it opens)"),
    error(BAD_PARAMS, "a rule's params in pack.toml do not match its params schema"),
    warning(UNKNOWN_INPUT_FIELD, "an incident field the input schemas do not know"),
    warning(UNKNOWN_PLUCK_PATH, "a `pluck` path the input schemas do not know"),
    warning(UNKNOWN_OUTPUT_FIELD, "a field the output schema does not allow"),
    warning(UNUSED_VARIABLE, "a variable that is never read"),
    warning(UNREACHABLE, "code after `return`, `throw`, `break` or `continue`"),
];

pub fn severity(code: &str) -> Severity {
    CODES
        .iter()
        .find(|c| c.code == code)
        .map_or(Severity::Error, |c| c.severity)
}

/// The codes table as README shows it (Markdown).
pub fn markdown_table() -> String {
    let mut out = String::from("| code | level | finding |\n|---|---|---|\n");
    for c in CODES {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            c.code,
            c.severity.name(),
            c.title
        ));
    }
    out
}
