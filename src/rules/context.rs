//! `ctx`, the second argument of every rule function.
//!
//! Scripts never read files, the network or the clock; everything they may know about
//! the world arrives here, read-only: the rule's params (validated against the rule's
//! params schema), the pack's lookup tables, the pack version, the sync time the engine
//! chose, which side the incident came from and is going to, and — for `enrich` and
//! `direction` — the source incident itself.
//!
//! | script | value |
//! |---|---|
//! | `ctx.params` | the rule's params (a read-only `Json` view) |
//! | `ctx.pack_version` | content hash of the pack that is deciding |
//! | `ctx.sync_time` | RFC 3339 time of this sync pass |
//! | `ctx.source`, `ctx.target` | `"defender"` / `"sentinel"` |
//! | `ctx.incident` | the source incident (a `Json` view) |
//! | `ctx.linked` | whether the incident is already linked to its twin |
//! | `ctx.twin` | who made the twin: `"rulebridge"`, or `"connector"` (Microsoft's Defender XDR connector, which already syncs status, owner and classification) |
//! | `ctx.rule` | the name of the running rule |
//! | `ctx.lookup(table, key)` | the table row for `key`, or `()` |
//! | `ctx.in_table(table, key)` | whether `key` is in `table` |

use super::json::JsonView;
use super::reference::FnDoc;
use super::tables::Tables;
use crate::model::Side;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Position};
use std::sync::Arc;

/// What is the same for every rule call on one incident.
pub struct CallEnv {
    pub tables: Arc<Tables>,
    pub pack_version: ImmutableString,
    pub sync_time: ImmutableString,
    pub source: Side,
    pub incident: JsonView,
    pub linked: bool,
    pub twin: Twin,
}

/// Who made an incident's Sentinel twin (`ctx.twin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Twin {
    /// rulebridge did (or will): its deterministic id.
    #[default]
    Rulebridge,
    /// Microsoft's Defender XDR connector did; rulebridge linked to it instead of
    /// creating a second one.
    Connector,
}

impl Twin {
    pub fn name(self) -> &'static str {
        match self {
            Twin::Rulebridge => "rulebridge",
            Twin::Connector => "connector",
        }
    }
}

/// `ctx` as scripts see it: the incident-wide environment plus the running rule.
#[derive(Clone)]
pub struct Ctx {
    pub env: Arc<CallEnv>,
    pub rule: ImmutableString,
    pub params: JsonView,
}

impl Ctx {
    fn lookup(&self, table: &str, key: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let table = self
            .env
            .tables
            .get(table)
            .ok_or_else(|| unknown_table(table, &self.env.tables))?;
        Ok(table.get(key).map_or(Dynamic::UNIT, |row| {
            Dynamic::from(JsonView::new(row.clone()))
        }))
    }
}

fn unknown_table(name: &str, tables: &Tables) -> Box<EvalAltResult> {
    let known: Vec<&str> = tables.names().collect();
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    EvalAltResult::ErrorRuntime(
        format!("no lookup table named '{name}' in the manifest (tables: {known})").into(),
        Position::NONE,
    )
    .into()
}

/// The reference entries for [`register`] (see `reference.rs`).
pub const DOCS: &[FnDoc] = &[
    FnDoc { name: "get$params", signature: "ctx.params -> Json", doc: "The rule's params from pack.toml, validated against its params schema", example: "ctx.params.unknown_severity", result: r#""Medium""# },
    FnDoc { name: "get$pack_version", signature: "ctx.pack_version -> string", doc: "Content hash of the pack that is deciding (recorded in audit rows)", example: "ctx.pack_version.len()", result: "12" },
    FnDoc { name: "get$sync_time", signature: "ctx.sync_time -> string", doc: "RFC 3339 time of this sync pass; rules never read the clock", example: "ctx.sync_time", result: r#""2026-01-01T00:00:00Z""# },
    FnDoc { name: "get$source", signature: "ctx.source -> string", doc: "Where the incident comes from: `\"defender\"` or `\"sentinel\"`", example: "ctx.source", result: r#""defender""# },
    FnDoc { name: "get$target", signature: "ctx.target -> string", doc: "Where the output goes: the other side", example: "ctx.target", result: r#""sentinel""# },
    FnDoc { name: "get$incident", signature: "ctx.incident -> Json", doc: "The source incident (what `enrich` and `direction` rules read it through)", example: "ctx.incident.id", result: r#""29""# },
    FnDoc { name: "get$linked", signature: "ctx.linked -> bool", doc: "Whether the incident is already linked to its twin", example: "ctx.linked", result: "false" },
    FnDoc { name: "get$twin", signature: "ctx.twin -> string", doc: "Who made the twin: `\"rulebridge\"`, or `\"connector\"` (Microsoft's Defender XDR connector)", example: "ctx.twin", result: r#""rulebridge""# },
    FnDoc { name: "get$rule", signature: "ctx.rule -> string", doc: "The name of the running rule", example: "ctx.rule", result: r#""microsoft-standard""# },
    FnDoc { name: "lookup", signature: "ctx.lookup(table: string, key: string) -> Json | ()", doc: "The row of a lookup table for `key` (`()` if none); an unknown table is an error naming the known ones", example: r#"ctx.lookup("vip_accounts", "CEO@contoso.com").tier"#, result: r#""executive""# },
    FnDoc { name: "in_table", signature: "ctx.in_table(table: string, key: string) -> bool", doc: "Whether `key` is in the table", example: r#"ctx.in_table("vip_accounts", "nobody@contoso.com")"#, result: "false" },
];

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Ctx>("Ctx");
    engine.register_get("params", |c: &mut Ctx| c.params.clone());
    engine.register_get("pack_version", |c: &mut Ctx| c.env.pack_version.clone());
    engine.register_get("sync_time", |c: &mut Ctx| c.env.sync_time.clone());
    engine.register_get("source", |c: &mut Ctx| {
        ImmutableString::from(c.env.source.name())
    });
    engine.register_get("target", |c: &mut Ctx| {
        ImmutableString::from(c.env.source.other().name())
    });
    engine.register_get("incident", |c: &mut Ctx| c.env.incident.clone());
    engine.register_get("linked", |c: &mut Ctx| c.env.linked);
    engine.register_get("twin", |c: &mut Ctx| {
        ImmutableString::from(c.env.twin.name())
    });
    engine.register_get("rule", |c: &mut Ctx| c.rule.clone());
    engine.register_fn("lookup", |c: &mut Ctx, table: &str, key: &str| {
        c.lookup(table, key)
    });
    engine.register_fn("lookup", |c: &mut Ctx, table: &str, _: ()| {
        c.lookup(table, "").map(|_| Dynamic::UNIT)
    });
    engine.register_fn("in_table", |c: &mut Ctx, table: &str, key: &str| {
        c.lookup(table, key).map(|row| !row.is_unit())
    });
    engine.register_fn("in_table", |c: &mut Ctx, table: &str, _: ()| {
        c.lookup(table, "").map(|_| false)
    });
}
