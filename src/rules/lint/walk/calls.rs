//! Calls and method calls: unknown and forbidden functions, lookup tables, `pluck`
//! paths (RB001, RB002, RB005, RB102).

use super::{is_ident, Kind, Walker};
use crate::rules::lint::codes;
use crate::rules::lint::known::{did_you_mean, Known, BUILT_INS_FOR_HINTS};
use rhai::{Expr, FnCallExpr, Position};

impl<'a, 'd> Walker<'a, 'd>
where
    'a: 'd,
{
    pub(super) fn arg_kinds(&mut self, call: &FnCallExpr) -> Vec<Kind<'d>> {
        call.args.iter().map(|a| self.expr(a)).collect()
    }

    pub(super) fn call(&mut self, call: &FnCallExpr, pos: Position) -> Kind<'d> {
        let kinds = self.arg_kinds(call);
        let name = call.name.as_str();
        if call.op_token.is_some()
            || !call.namespace.is_empty()
            || !is_ident(name)
            || Known::is_built_in(name)
        {
            return Kind::Unknown;
        }
        let arity = call.args.len();
        // The script's own function of that name wins over anything the sandbox lacks.
        if self
            .script_fns
            .get(name)
            .is_some_and(|a| a.contains(&arity))
        {
            self.calls
                .entry((name.to_string(), arity))
                .or_default()
                .push(kinds);
            return Kind::Unknown;
        }
        if let Some(why) = self.known.forbidden(name, arity) {
            self.forbidden(name, arity, why, pos);
            return Kind::Unknown;
        }
        if self.known.native_accepts(name, arity) {
            if name == "pluck" && arity == 2 {
                self.pluck(kinds[0], &call.args[1]);
            }
            return Kind::Unknown;
        }
        // A variable holding a function pointer is called like a function.
        if self.declared.contains(name) {
            return Kind::Unknown;
        }
        self.unknown_function(name, arity, false, pos);
        Kind::Unknown
    }

    pub(super) fn method(&mut self, base: Kind<'d>, call: &FnCallExpr, pos: Position) -> Kind<'d> {
        let kinds = self.arg_kinds(call);
        let name = call.name.as_str();
        if !is_ident(name)
            || Known::is_built_in(name)
            || self.map_keys.contains(name)
            || self.declared.contains(name)
        {
            return Kind::Unknown;
        }
        let arity = call.args.len() + 1;
        let arities = self.script_fns.get(name);
        let bound = arities.is_some_and(|a| a.contains(&call.args.len()));
        let unbound = arities.is_some_and(|a| a.contains(&arity));
        if bound || unbound {
            // A script function called as a method: its call sites' kinds are what
            // this passes (`this` bound, or the object as the first argument).
            if bound {
                self.calls
                    .entry((name.to_string(), call.args.len()))
                    .or_default()
                    .push(kinds.clone());
            }
            if unbound {
                let mut with_object = vec![base];
                with_object.extend(kinds.iter().copied());
                self.calls
                    .entry((name.to_string(), arity))
                    .or_default()
                    .push(with_object);
            }
            return Kind::Unknown;
        }
        if let Some(why) = self.known.forbidden(name, arity) {
            self.forbidden(name, arity, why, pos);
            return Kind::Unknown;
        }
        if !self.known.native_accepts(name, arity) {
            self.unknown_function(name, arity, true, pos);
            return Kind::Unknown;
        }
        if matches!(base, Kind::Ctx) && (name == "lookup" || name == "in_table") && arity == 3 {
            self.table(&call.args[0]);
        }
        if name == "pluck" && arity == 2 {
            self.pluck(base, &call.args[0]);
        }
        let _ = kinds;
        Kind::Unknown
    }

    pub(super) fn forbidden(&mut self, name: &str, arity: usize, why: &str, pos: Position) {
        let shown = if arity == 0 {
            format!("{name}()")
        } else {
            name.to_string()
        };
        self.finding(
            codes::FORBIDDEN_FUNCTION,
            pos,
            name.chars().count(),
            format!("`{shown}` is not available to rules: the sandbox forbids it ({why})"),
            Some("without this check it would fail only when the rule runs, as \"Function not found\"".to_string()),
        );
    }

    pub(super) fn unknown_function(
        &mut self,
        name: &str,
        arity: usize,
        method: bool,
        pos: Position,
    ) {
        let shown_args = if method { arity - 1 } else { arity };
        let mut candidates: Vec<&str> = self.known.native_names().collect();
        candidates.extend(
            self.script_fns
                .keys()
                .map(String::as_str)
                .filter(|n| !n.starts_with("anon$")),
        );
        candidates.extend(BUILT_INS_FOR_HINTS.iter().copied());
        let other = self.known.native_arities(name).or_else(|| {
            self.script_fns.get(name).map(|a| {
                let mut v: Vec<usize> = a.iter().copied().collect();
                v.sort_unstable();
                v
            })
        });
        let (message, hint) = match other {
            Some(arities) => {
                let shown: Vec<String> = arities
                    .iter()
                    .map(|a| if method { a.saturating_sub(1) } else { *a }.to_string())
                    .collect();
                (
                    format!(
                        "no function `{name}` takes {shown_args} argument(s){}",
                        if method { " as a method" } else { "" }
                    ),
                    format!("`{name}` takes {}", shown.join(" or ")),
                )
            }
            None => {
                let hint = match did_you_mean(name, candidates.into_iter()) {
                    Some(n) => format!("did you mean `{n}`?"),
                    None => "`rulebridge functions` lists what rules can call".to_string(),
                };
                (
                    format!(
                        "unknown {} `{name}`",
                        if method { "method" } else { "function" }
                    ),
                    hint,
                )
            }
        };
        self.finding(
            codes::UNKNOWN_FUNCTION,
            pos,
            name.chars().count(),
            message,
            Some(hint),
        );
    }

    /// `ctx.lookup(TABLE, key)`: a literal table name, or a params key whose value is one.
    pub(super) fn table(&mut self, arg: &Expr) {
        let (table, pos, len) = match arg {
            Expr::StringConstant(s, pos) => (s.to_string(), *pos, s.chars().count() + 2),
            Expr::Dot(bin, _, _) => {
                let (Expr::Variable(v, _, _), Expr::Property(p, pos)) = (&bin.lhs, &bin.rhs) else {
                    return;
                };
                if !matches!(self.peek_var(&v.1), Some(Kind::Params)) {
                    return;
                }
                match self.rule.params.get(p.2.as_str()).and_then(|v| v.as_str()) {
                    Some(t) => (t.to_string(), *pos, p.2.chars().count()),
                    None => return,
                }
            }
            _ => return,
        };
        if self.rule.tables.contains(&table) {
            return;
        }
        let list = if self.rule.tables.is_empty() {
            "the manifest declares none".to_string()
        } else {
            format!("tables: {}", self.rule.tables.join(", "))
        };
        let near = did_you_mean(&table, self.rule.tables.iter().map(String::as_str));
        let hint = match near {
            Some(n) => format!("did you mean '{n}'? {list}"),
            None => format!("declare it under [tables.{table}] in pack.toml; {list}"),
        };
        self.finding(
            codes::UNKNOWN_TABLE,
            pos,
            len,
            format!("no lookup table named '{table}' in the manifest"),
            Some(hint),
        );
    }

    pub(super) fn pluck(&mut self, base: Kind<'d>, path: &Expr) {
        let (Kind::Shapes { shapes, .. }, Expr::StringConstant(text, pos)) = (base, path) else {
            return;
        };
        let mut unknown = None;
        for shape in shapes.iter().flatten() {
            match shape.path(text) {
                None => return,
                Some(found) => unknown = unknown.or(Some(found)),
            }
        }
        let Some((offset, segment, near)) = unknown else {
            return;
        };
        // The segment inside the literal: after the quote, at its character offset.
        let chars_before = text[..offset].chars().count();
        let at = Position::new(
            pos.line().unwrap_or(1) as u16,
            (pos.position().unwrap_or(1) + 1 + chars_before) as u16,
        );
        let hint = match near {
            Some(n) => format!("did you mean `{n}`?"),
            None => "pluck finds nothing there on an incident that follows the schema".to_string(),
        };
        self.finding(
            codes::UNKNOWN_PLUCK_PATH,
            at,
            segment.chars().count(),
            format!("pluck path \"{text}\": the input schemas know no field `{segment}` there"),
            Some(hint),
        );
    }
}
