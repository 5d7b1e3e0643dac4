//! The function reference: every native a rule can call, every `ctx` member and the
//! Rhai features the sandbox allows and forbids, as data.
//!
//! The entries live next to their registration (`DOCS` in `natives.rs`, `json.rs`,
//! `context.rs`); this module gathers and renders them for `rulebridge functions` and
//! `docs/rules.md`. Tests keep the data honest: every function the engine registers
//! beyond Rhai's own packages must have an entry (and every entry a registered
//! function), every example is evaluated in the sandbox and must give its shown result,
//! and the committed `docs/rules.md` must equal [`markdown`]'s output (regenerate with
//! `RULEBRIDGE_BLESS=1 cargo test --release --lib rules::reference`).

use std::fmt::Write;

/// One documented function or `ctx` member.
#[derive(Debug, Clone, Copy)]
pub struct FnDoc {
    /// The name the engine registers (`pluck`; `get$params` for the getter
    /// `ctx.params`; `index$get$` for `view[key]`).
    pub name: &'static str,
    /// How a script calls it, with types.
    pub signature: &'static str,
    /// One line: what it does.
    pub doc: &'static str,
    /// A real expression, evaluated by the tests against [`EXAMPLE_INCIDENT`] as
    /// `incident` and the default pack's `microsoft-standard` rule as `ctx`.
    pub example: &'static str,
    /// What `example` evaluates to, as JSON (`()` for unit).
    pub result: &'static str,
}

/// The incident examples read (`incident` in scope).
pub const EXAMPLE_INCIDENT: &str = r#"{
  "id": "29",
  "displayName": "Multi-stage incident",
  "status": "active",
  "severity": "high",
  "createdDateTime": "2026-03-01T10:00:00Z",
  "customTags": ["Demo", "", "Demo"],
  "alerts": [
    {"title": "Suspicious PowerShell", "category": "Execution",
     "firstActivityDateTime": "2026-03-01T09:00:00Z", "lastActivityDateTime": "2026-03-01T09:30:00Z",
     "evidence": [{"deviceDnsName": "pc1.contoso.com"}, {"userAccount": {"userPrincipalName": "ceo@contoso.com"}}]},
    {"title": "Credential theft", "category": "CredentialAccess",
     "firstActivityDateTime": "2026-03-01T08:00:00Z", "lastActivityDateTime": "2026-03-01T09:45:00Z",
     "evidence": [{"deviceDnsName": "pc1.contoso.com"}, {"deviceDnsName": "dc1.contoso.com"}]}
  ]
}"#;

/// The rule whose `ctx` examples see (in the default pack).
pub const EXAMPLE_RULE: &str = "microsoft-standard";

/// What to know about views before calling their methods.
pub const JSON_NOTE: &str = "Read-only; a missing field reads as `()`. Call a method on a variable, \
not at the end of a property chain: `incident.alerts.len()` fails (Rhai writes a method's receiver \
back to `incident.alerts`, and views are read-only), `let alerts = incident.alerts; alerts.len()` works.";

/// Rhai features rules may use.
pub const ALLOWED: &[&str] = &[
    "`let`, `const`, `if`/`else`, `switch`, `while`, `loop`, `for … in`, `break`, `continue`, `return`",
    "functions (`fn name(a, b) { … }`), closures and function pointers (`|x| x + 1`, `Fn(\"name\")`)",
    "integers, floats, booleans, strings (`\"…\"`, backtick templates with `${…}`), characters, arrays `[…]`, object maps `#{…}`, ranges `0..n`",
    "`??` (null coalescing: missing fields read as `()`), `?.`, `in`, arithmetic, comparison, logic and bit operators",
    "Rhai's packages for arithmetic, logic, bit fields, math, strings, arrays, maps, iterators and function pointers",
    "`import \"lib/name\" as m;` of `.rhai` files inside the pack (resolved when the pack is compiled)",
    "`throw` (a rule error for that incident), `print` and `debug` (to the log, never stdout)",
];

/// Rhai features the sandbox removes, and why.
pub const FORBIDDEN: &[&str] = &[
    "`eval` (disabled symbol): code from data escapes review",
    "the clock (`timestamp()`, `elapsed`): a rule's time is `ctx.sync_time`, so decisions replay",
    "`sleep`, `exit`, `parse_json`, reflection (`get_fn_metadata_list`), BLOBs, the debugging package",
    "files and the network: no module outside the pack, no I/O function at all",
    "undeclared variables (strict variables): a typo is a compile error, not `()`",
    "unbounded work: per call at most `limits.max_operations` operations, `timeout_ms` of wall time, `max_memory` bytes, `max_call_levels` calls deep, and bounded string, array and map sizes (`[limits]` in pack.toml)",
];

/// Every documented entry, in reference order: natives, `Json` views, `ctx`.
pub fn all() -> impl Iterator<Item = (&'static str, &'static FnDoc)> {
    let sections: [(&'static str, &'static [FnDoc]); 3] = [
        ("natives", super::natives::DOCS),
        ("json", super::json::DOCS),
        ("ctx", super::context::DOCS),
    ];
    sections
        .into_iter()
        .flat_map(|(section, docs)| docs.iter().map(move |d| (section, d)))
}

fn table(out: &mut String, docs: &[FnDoc]) {
    out.push_str("| call | does | example | gives |\n|---|---|---|---|\n");
    for d in docs {
        let _ = writeln!(
            out,
            "| `{}` | {} | `{}` | `{}` |",
            d.signature.replace('|', "\\|"),
            d.doc.replace('|', "\\|"),
            d.example.replace('|', "\\|"),
            d.result.replace('|', "\\|")
        );
    }
}

/// The whole reference as Markdown: what `docs/rules.md` holds.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Rule function reference\n\n\
         Generated from the code by `rulebridge functions --format markdown` (source: the `DOCS` \
         tables beside each registration in `src/rules/`); a test fails when this file drifts. \
         Every example below is evaluated by a test in the sandbox, against this incident as \
         `incident` and the default pack's `microsoft-standard` rule as `ctx`:\n\n```json\n",
    );
    out.push_str(EXAMPLE_INCIDENT);
    out.push_str(
        "\n```\n\n## Native helpers\n\nEach counts as one operation however much it does.\n\n",
    );
    table(&mut out, super::natives::DOCS);
    out.push_str("\n## Json views (`incident`, `ctx.params`, `ctx.incident`, table rows)\n\n");
    out.push_str(JSON_NOTE);
    out.push_str("\n\n");
    table(&mut out, super::json::DOCS);
    out.push_str("\n## `ctx`, the second argument of every rule function\n\n");
    table(&mut out, super::context::DOCS);
    out.push_str("\n## Rhai in the sandbox\n\nAllowed:\n\n");
    for line in ALLOWED {
        let _ = writeln!(out, "- {line}");
    }
    out.push_str("\nForbidden:\n\n");
    for line in FORBIDDEN {
        let _ = writeln!(out, "- {line}");
    }
    out.push_str("\nThe full list of callable functions, Rhai's included, is `src/rules/allowed-functions.txt`.\n");
    out
}

/// The reference as plain text for a terminal: one block per entry.
pub fn text() -> String {
    let mut out = String::new();
    let mut last = "";
    for (section, d) in all() {
        if section != last {
            let title = match section {
                "natives" => "Native helpers",
                "json" => "Json views (incident, ctx.params, ctx.incident, table rows)",
                _ => "ctx members",
            };
            let _ = writeln!(out, "{}{title}\n", if last.is_empty() { "" } else { "\n" });
            if section == "json" {
                let _ = writeln!(out, "  {}\n", JSON_NOTE.replace('`', ""));
            }
            last = section;
        }
        let _ = writeln!(
            out,
            "  {}\n      {}\n      e.g. {}  =>  {}",
            d.signature, d.doc, d.example, d.result
        );
    }
    out.push_str("\nRhai allowed:\n");
    for line in ALLOWED {
        let _ = writeln!(out, "  - {}", line.replace('`', ""));
    }
    out.push_str("\nRhai forbidden:\n");
    for line in FORBIDDEN {
        let _ = writeln!(out, "  - {}", line.replace('`', ""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::sandbox::{build_engine, Limits};
    use crate::rules::session::{show, Session};
    use crate::rules::CompiledPack;
    use crate::snapshot::PackSnapshot;
    use std::collections::BTreeSet;

    /// The registered name a reference entry stands for (field getters are one entry).
    fn documented_name(signature: &str) -> String {
        let name = signature.split('(').next().unwrap_or(signature);
        // `get$<field>(_: &mut Json)`: one of the known or pack field names.
        if name.starts_with("get$") && signature.contains("(_: &mut Json)") {
            return "get$".into();
        }
        name.to_string()
    }

    #[test]
    fn every_registered_native_is_documented_and_every_entry_is_registered() {
        let engine = build_engine(&Limits::default());
        // Without Rhai's standard packages: exactly what rulebridge registers itself.
        let registered: BTreeSet<String> = engine
            .gen_fn_signatures(false)
            .iter()
            .map(|s| documented_name(s))
            .collect();
        let documented: BTreeSet<String> = all().map(|(_, d)| d.name.to_string()).collect();
        let missing: Vec<&String> = registered.difference(&documented).collect();
        let stale: Vec<&String> = documented.difference(&registered).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "add a DOCS entry beside the registration for {missing:?}; remove {stale:?}"
        );
    }

    #[test]
    fn every_example_gives_its_shown_result_in_the_sandbox() {
        let pack = CompiledPack::build(PackSnapshot::built_in(None).unwrap()).unwrap();
        let incident: serde_json::Value = serde_json::from_str(EXAMPLE_INCIDENT).unwrap();
        let mut wrong = Vec::new();
        for (_, d) in all() {
            let mut session = Session::new(
                &pack,
                incident.clone(),
                crate::model::Side::Defender,
                crate::packtest::DEFAULT_SYNC_TIME,
            );
            session.use_rule(EXAMPLE_RULE).unwrap();
            let got = session.eval(d.example).map(|v| show(&v));
            if got.as_deref() != Ok(d.result) {
                wrong.push(format!(
                    "{}: `{}` gave {got:?}, shown as {}",
                    d.name, d.example, d.result
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn docs_rules_md_is_generated_from_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/rules.md");
        let want = markdown();
        if std::env::var_os("RULEBRIDGE_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
            return;
        }
        let got = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            got == want,
            "docs/rules.md is out of date: regenerate with RULEBRIDGE_BLESS=1 cargo test --release --lib rules::reference"
        );
    }
}
