//! The pass on small scripts, without a pack (the corpus in `tests/lint/` covers the
//! whole path through `check`).

use super::*;
use serde_json::json;

fn docs() -> Documents {
    Documents::new(|name| {
        crate::schema::BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.to_string())
    })
}

fn codes_of(stage: Stage, source: &str) -> Vec<(String, usize, usize)> {
    let docs = docs();
    let schema = json!({"type": "object", "additionalProperties": false,
        "properties": {"title_contains": {"type": "array"}, "table": {"type": "string"}}});
    let params = json!({"title_contains": [], "table": "vip"});
    let tables = vec!["vip".to_string()];
    let rule = Rule {
        name: "r",
        stage,
        path: "r.rhai",
        source,
        params: &params,
        params_schema: Some(&schema),
        tables: &tables,
        docs: &docs,
    };
    lint_rule(&lint_engine(&Limits::default()), &rule)
        .into_iter()
        .map(|p| (p.code.unwrap().to_string(), p.line.unwrap(), p.col.unwrap()))
        .collect()
}

#[test]
fn a_clean_rule_has_no_findings() {
    let src = "fn filter(incident, ctx) {\n  let p = ctx.params;\n  for t in p.title_contains { if incident.displayName.contains(t) { return false; } }\n  if ctx.in_table(p.table, incident.assignedTo ?? \"\") { return true; }\n  let n = pluck(incident, \"alerts.evidence.deviceDnsName\");\n  n.len() > 0 || helper(p)\n}\nfn helper(q) { q.table == \"vip\" }\n";
    assert_eq!(codes_of(Stage::Filter, src), vec![]);
}

#[test]
fn each_mistake_has_its_code_and_place() {
    let src = "fn filter(incident, ctx) {\n  let p = ctx.parms;\n  let s = enum_kye(incident.severty);\n  sleep(1);\n  ctx.lookup(\"vips\", \"a\");\n  let q = ctx.params;\n  q.title_contain;\n  let unused = 1;\n  pluck(incident, \"alerts.evidence.deviceDnsname\");\n  return s;\n  s\n}\n";
    let got = codes_of(Stage::Filter, src);
    let want: Vec<(String, usize, usize)> = [
        // p holds nothing (ctx.parms fails) and is never read either.
        ("RB104", 2, 7),
        ("RB003", 2, 15),
        ("RB001", 3, 11),
        ("RB101", 3, 29),
        ("RB002", 4, 3),
        ("RB005", 5, 14),
        ("RB004", 7, 5),
        ("RB104", 8, 7),
        ("RB102", 9, 36),
        ("RB105", 11, 3),
    ]
    .iter()
    .map(|(c, l, k)| (c.to_string(), *l, *k))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn what_the_walk_cannot_follow_is_not_judged() {
    // Reassigned ctx, a function pointer in a variable and in a map, an index.
    let src = "fn filter(incident, ctx) {\n  let f = |x| x + 1;\n  let o = #{ go: |y| y };\n  let r = f(1) + o.go(2);\n  let c = ctx; c = #{}; c.parms;\n  incident[\"severty\"];\n  r > 0\n}\n";
    assert_eq!(codes_of(Stage::Filter, src), vec![]);
}

#[test]
fn output_fields_are_checked_against_the_output_schemas() {
    let src = "fn enrich(target, ctx) {\n  target.lables.add_label(\"VIP\");\n  target.severity = \"High\";\n  target\n}\n";
    assert_eq!(
        codes_of(Stage::Enrich, src),
        vec![("RB103".to_string(), 2, 10)]
    );
}

#[test]
fn the_scripts_own_functions_and_pointers_are_never_unknown() {
    // A top-level pointer called by name, a script `fn sleep` shadowing the forbidden
    // one, and a helper called both with ctx and as a method with something else.
    let src = "let twice = |x| x * 2;\nlet four = twice(2);\nfn sleep(n) { n }\nfn h(a) { a.parms }\nfn filter(incident, ctx) {\n  sleep(1);\n  h(ctx);\n  #{}.h(1);\n  1.h();\n  true\n}\n";
    assert_eq!(codes_of(Stage::Filter, src), vec![]);
}
