//! The walk over one script's AST: scopes, what each variable holds (`ctx`, its params,
//! an incident of a known schema), and the findings.
//!
//! The walk is flow-insensitive where it must be to stay certain: a variable assigned
//! anywhere in a function is of unknown kind everywhere in it, a helper's parameters
//! take a kind only when every call site passes the same one and nothing names the
//! helper as a function pointer, and a chain the walker cannot follow (an index, a
//! module function) ends the checks on it. Errors come only from facts the engine
//! would meet on every run that reaches the code.

mod calls;
mod members;

use super::codes;
use super::fields::Shape;
use super::known::{known, Known};
use super::{Finding, Rule};
use crate::model::Stage;
use rhai::{Expr, Position, Stmt, AST};
use std::collections::{HashMap, HashSet};

/// What an expression is known to hold.
#[derive(Clone, Copy)]
pub enum Kind<'d> {
    Unknown,
    Ctx,
    Params,
    /// An incident of one of these shapes (two: a filter sees either side);
    /// `output` when it is what the rule returns (RB103 instead of RB101).
    Shapes {
        shapes: [Option<Shape<'d>>; 2],
        output: bool,
    },
}

impl<'d> Kind<'d> {
    fn shapes(a: Shape<'d>, b: Option<Shape<'d>>, output: bool) -> Kind<'d> {
        Kind::Shapes {
            shapes: [Some(a), b],
            output,
        }
    }

    fn same(&self, other: &Kind<'d>) -> bool {
        match (self, other) {
            (Kind::Ctx, Kind::Ctx) | (Kind::Params, Kind::Params) => true,
            (
                Kind::Shapes {
                    shapes: a,
                    output: x,
                },
                Kind::Shapes {
                    shapes: b,
                    output: y,
                },
            ) => {
                x == y
                    && a.iter().zip(b).all(|(a, b)| match (a, b) {
                        (Some(a), Some(b)) => a.same(b),
                        (None, None) => true,
                        _ => false,
                    })
            }
            _ => false,
        }
    }
}

struct Var<'d> {
    name: String,
    kind: Kind<'d>,
    used: bool,
    /// A `let`/`const` inside a function: reported when never read.
    tracked: bool,
    pos: Position,
}

pub struct Walker<'a, 'd> {
    rule: &'a Rule<'a>,
    known: &'static Known,
    /// Script functions: name -> parameter counts.
    script_fns: HashMap<String, HashSet<usize>>,
    /// Names that may be function pointers stored in map properties (`obj.f()`).
    map_keys: HashSet<String>,
    /// Functions named as pointers (`Fn("x")`) or in strings: never given kinds.
    pointed: HashSet<String>,
    /// Per function being walked: names assigned anywhere, names declared anywhere.
    assigned: HashSet<String>,
    declared: HashSet<String>,
    scopes: Vec<Vec<Var<'d>>>,
    /// Kinds seen at call sites of script functions: (name, arity) -> per argument.
    calls: HashMap<(String, usize), Vec<Vec<Kind<'d>>>>,
    /// Inside an index or another chain the walker cannot follow: no member checks.
    opaque: usize,
    in_fn: bool,
    pub findings: Vec<Finding>,
}

fn root_statements(ast: &AST) -> Vec<Stmt> {
    let mut out = Vec::new();
    ast.walk(&mut |nodes: &[rhai::ASTNode]| {
        if let [rhai::ASTNode::Stmt(stmt)] = nodes {
            out.push((*stmt).clone());
        }
        true
    });
    out
}

fn is_ident(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && !name.contains('$')
}

impl<'a, 'd> Walker<'a, 'd>
where
    'a: 'd,
{
    pub fn new(rule: &'a Rule<'a>, ast: &AST) -> Self {
        let mut script_fns: HashMap<String, HashSet<usize>> = HashMap::new();
        for f in ast.iter_functions() {
            script_fns
                .entry(f.name.to_string())
                .or_default()
                .insert(f.params.len());
        }
        let mut map_keys = HashSet::new();
        let mut pointed = HashSet::new();
        ast.walk(&mut |nodes: &[rhai::ASTNode]| {
            match nodes.last() {
                Some(rhai::ASTNode::Expr(Expr::Map(m, _))) => {
                    map_keys.extend(m.0.iter().map(|(k, _)| k.name.to_string()));
                }
                Some(rhai::ASTNode::Expr(Expr::Property(p, _))) => {
                    map_keys.insert(p.2.to_string());
                }
                Some(rhai::ASTNode::Expr(Expr::StringConstant(s, _))) => {
                    pointed.insert(s.to_string());
                }
                Some(rhai::ASTNode::Expr(Expr::DynamicConstant(d, _))) if d.is_fnptr() => {
                    let ptr = d.clone().cast::<rhai::FnPtr>();
                    pointed.insert(ptr.fn_name().to_string());
                }
                _ => {}
            }
            true
        });
        Walker {
            rule,
            known: known(),
            script_fns,
            map_keys,
            pointed,
            assigned: HashSet::new(),
            declared: HashSet::new(),
            scopes: Vec::new(),
            calls: HashMap::new(),
            opaque: 0,
            in_fn: false,
            findings: Vec::new(),
        }
    }

    /// Walks the top level, the entry points, then the other functions (which by then
    /// know what their callers pass).
    pub fn run(&mut self, ast: &AST) {
        self.in_fn = false;
        // The top level can call a function pointer held in one of its variables too.
        for stmt in ast.statements() {
            prescan(stmt, &mut self.assigned, &mut self.declared);
        }
        self.scopes.push(Vec::new());
        self.block(ast.statements());
        self.scopes.pop();
        let mut fns: Vec<(String, Vec<String>)> = ast
            .iter_functions()
            .map(|f| {
                (
                    f.name.to_string(),
                    f.params.iter().map(|p| p.to_string()).collect(),
                )
            })
            .collect();
        let entries = self.rule.stage.entry_points();
        fns.sort_by_key(|(name, params)| !(entries.contains(&name.as_str()) && params.len() == 2));
        for (name, params) in fns {
            let mut one = ast.clone();
            one.clear_statements();
            one.retain_functions(|_, _, n, a| n == name && a == params.len());
            let body = root_statements(&one);
            let kinds = self.param_kinds(&name, params.len());
            self.function(&params, kinds, &body);
        }
    }

    fn param_kinds(&self, name: &str, arity: usize) -> Vec<Kind<'d>> {
        let rule = self.rule;
        if arity == 2 && rule.stage.entry_points().contains(&name) {
            let docs = rule.docs;
            let first = match (rule.stage, name) {
                (Stage::Filter, _) => {
                    Kind::shapes(docs.defender_in(), Some(docs.sentinel_in()), false)
                }
                (Stage::Map, "to_sentinel") => Kind::shapes(docs.defender_in(), None, false),
                (Stage::Map, _) => Kind::shapes(docs.sentinel_in(), None, false),
                (Stage::Enrich, _) => {
                    Kind::shapes(docs.sentinel_out(), Some(docs.defender_out()), true)
                }
                _ => Kind::Unknown,
            };
            return vec![first, Kind::Ctx];
        }
        let unknown = vec![Kind::Unknown; arity];
        if self.pointed.contains(name) {
            return unknown;
        }
        let Some(sites) = self.calls.get(&(name.to_string(), arity)) else {
            return unknown;
        };
        (0..arity)
            .map(|i| {
                let first = sites[0][i];
                if sites.iter().all(|s| s[i].same(&first)) {
                    first
                } else {
                    Kind::Unknown
                }
            })
            .collect()
    }

    fn function(&mut self, params: &[String], kinds: Vec<Kind<'d>>, body: &[Stmt]) {
        self.in_fn = true;
        self.assigned.clear();
        self.declared = params.iter().cloned().collect();
        for stmt in body {
            prescan(stmt, &mut self.assigned, &mut self.declared);
        }
        let frame = params
            .iter()
            .zip(kinds)
            .map(|(name, kind)| Var {
                name: name.clone(),
                kind,
                used: true,
                tracked: false,
                pos: Position::NONE,
            })
            .collect();
        self.scopes.push(frame);
        self.block(body);
        self.scopes.pop();
    }

    fn block(&mut self, stmts: &[Stmt]) {
        self.scopes.push(Vec::new());
        let mut ended = false;
        let mut reported = false;
        for stmt in stmts {
            if ended && !reported && !stmt.is_noop() {
                reported = true;
                let pos = match stmt {
                    Stmt::Assignment(x) => x.1.lhs.start_position(),
                    other => other.position(),
                };
                self.finding(codes::UNREACHABLE, pos, 1, "unreachable code".into(), Some("nothing after a return, throw, break or continue runs; remove it or move it before".into()));
            }
            self.stmt(stmt);
            if matches!(stmt, Stmt::Return(..) | Stmt::BreakLoop(..)) {
                ended = true;
            }
        }
        self.pop_scope();
    }

    fn pop_scope(&mut self) {
        let Some(frame) = self.scopes.pop() else {
            return;
        };
        for var in frame {
            if var.tracked && !var.used && !var.name.starts_with('_') {
                let len = var.name.chars().count();
                self.finding(
                    codes::UNUSED_VARIABLE,
                    var.pos,
                    len,
                    format!("variable `{}` is never read", var.name),
                    Some(format!(
                        "remove it, or name it `_{}` if that is intended",
                        var.name
                    )),
                );
            }
        }
    }

    fn declare(&mut self, name: &str, kind: Kind<'d>, tracked: bool, pos: Position) {
        let kind = if self.assigned.contains(name) {
            Kind::Unknown
        } else {
            kind
        };
        if let Some(frame) = self.scopes.last_mut() {
            frame.push(Var {
                name: name.to_string(),
                kind,
                used: false,
                tracked: tracked && self.in_fn,
                pos,
            });
        }
    }

    fn use_var(&mut self, name: &str) -> Kind<'d> {
        for frame in self.scopes.iter_mut().rev() {
            if let Some(var) = frame.iter_mut().rev().find(|v| v.name == name) {
                var.used = true;
                return var.kind;
            }
        }
        Kind::Unknown
    }

    fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Var(x, _, _) => {
                let kind = self.expr(&x.1);
                self.declare(&x.0.name, kind, true, x.0.pos);
            }
            Stmt::Assignment(x) => {
                let (op, bin) = &**x;
                self.expr(&bin.rhs);
                match &bin.lhs {
                    Expr::Variable(v, _, _) => {
                        if op.is_op_assignment() {
                            self.use_var(&v.1);
                        }
                    }
                    lhs => {
                        self.expr(lhs);
                    }
                }
            }
            Stmt::FnCall(call, pos) => {
                self.call(call, *pos);
            }
            Stmt::Expr(e) => {
                self.expr(e);
            }
            Stmt::Block(b) => self.block(b.statements()),
            Stmt::If(fc, _) | Stmt::While(fc, _) | Stmt::Do(fc, _, _) => {
                self.expr(&fc.expr);
                self.block(fc.body.statements());
                self.block(fc.branch.statements());
            }
            Stmt::For(x, _) => {
                let (var, counter, fc) = &**x;
                let source = self.expr(&fc.expr);
                let item = match source {
                    Kind::Shapes { shapes, output } => {
                        let items = shapes.map(|s| s.and_then(Shape::items));
                        if items.iter().any(Option::is_some) {
                            Kind::Shapes {
                                shapes: items,
                                output,
                            }
                        } else {
                            Kind::Unknown
                        }
                    }
                    _ => Kind::Unknown,
                };
                self.scopes.push(Vec::new());
                self.declare(&var.name, item, false, var.pos);
                if let Some(c) = counter {
                    self.declare(&c.name, Kind::Unknown, false, c.pos);
                }
                self.block(fc.body.statements());
                self.pop_scope();
            }
            Stmt::TryCatch(fc, _) => {
                self.block(fc.body.statements());
                self.scopes.push(Vec::new());
                if let Expr::Variable(v, _, pos) = &fc.expr {
                    self.declare(&v.1, Kind::Unknown, false, *pos);
                }
                self.block(fc.branch.statements());
                self.pop_scope();
            }
            Stmt::Switch(x, _) => {
                self.expr(&x.0);
                for case in x.1.expressions.iter() {
                    self.expr(&case.lhs);
                    self.expr(&case.rhs);
                }
            }
            Stmt::BreakLoop(e, _, _) | Stmt::Return(e, _, _) => {
                if let Some(e) = e {
                    self.expr(e);
                }
            }
            Stmt::Import(x, _) => {
                self.expr(&x.0);
            }
            Stmt::Share(names) => {
                for (ident, _) in names.iter() {
                    self.use_var(&ident.name);
                }
            }
            _ => {}
        }
    }

    fn expr(&mut self, e: &Expr) -> Kind<'d> {
        match e {
            Expr::Variable(v, _, _) => {
                if v.2.is_empty() {
                    self.use_var(&v.1)
                } else {
                    Kind::Unknown
                }
            }
            Expr::Dot(bin, _, _) => {
                let base = self.expr(&bin.lhs);
                self.chain(base, &bin.rhs)
            }
            Expr::Index(bin, _, _) => {
                self.expr(&bin.lhs);
                self.opaque(&bin.rhs);
                Kind::Unknown
            }
            Expr::FnCall(call, pos) => self.call(call, *pos),
            Expr::MethodCall(call, _) => {
                for a in call.args.iter() {
                    self.expr(a);
                }
                Kind::Unknown
            }
            Expr::Stmt(block) => {
                self.block(block.statements());
                Kind::Unknown
            }
            Expr::Map(m, _) => {
                for (_, v) in m.0.iter() {
                    self.expr(v);
                }
                Kind::Unknown
            }
            Expr::Array(items, _) | Expr::InterpolatedString(items, _) => {
                for i in items.iter() {
                    self.expr(i);
                }
                Kind::Unknown
            }
            Expr::And(list, _) | Expr::Or(list, _) => {
                for i in list.iter() {
                    self.expr(i);
                }
                Kind::Unknown
            }
            Expr::Coalesce(list, _) => {
                let kinds: Vec<Kind<'d>> = list.iter().map(|i| self.expr(i)).collect();
                kinds.first().copied().unwrap_or(Kind::Unknown)
            }
            Expr::Custom(c, _) => {
                for i in c.inputs.iter() {
                    self.expr(i);
                }
                Kind::Unknown
            }
            _ => Kind::Unknown,
        }
    }

    /// Visits `e` for its calls and variable uses only.
    fn opaque(&mut self, e: &Expr) {
        self.opaque += 1;
        self.expr(e);
        self.opaque -= 1;
    }

    /// The right-hand side of a `.` on a value of kind `base`.
    fn chain(&mut self, base: Kind<'d>, rhs: &Expr) -> Kind<'d> {
        match rhs {
            Expr::Property(p, pos) => self.member(base, &p.2, *pos),
            Expr::MethodCall(call, pos) => self.method(base, call, *pos),
            Expr::Dot(bin, _, _) => {
                let next = self.chain(base, &bin.lhs);
                self.chain(next, &bin.rhs)
            }
            Expr::Index(bin, _, _) => {
                self.chain(base, &bin.lhs);
                self.opaque(&bin.rhs);
                Kind::Unknown
            }
            other => {
                self.opaque(other);
                Kind::Unknown
            }
        }
    }

    fn source_incident(&self) -> Kind<'d> {
        let docs = self.rule.docs;
        Kind::shapes(docs.defender_in(), Some(docs.sentinel_in()), false)
    }

    fn peek_var(&self, name: &str) -> Option<Kind<'d>> {
        self.scopes
            .iter()
            .rev()
            .find_map(|f| f.iter().rev().find(|v| v.name == name))
            .map(|v| v.kind)
    }

    fn finding(
        &mut self,
        code: &'static str,
        pos: Position,
        len: usize,
        message: String,
        hint: Option<String>,
    ) {
        self.findings.push(Finding {
            code,
            line: pos.line(),
            col: pos.position().or(pos.line().map(|_| 1)),
            len,
            message,
            hint,
        });
    }
}

/// Names a function assigns (`x = …`, `x += …`) and declares, anywhere in it.
fn prescan(stmt: &Stmt, assigned: &mut HashSet<String>, declared: &mut HashSet<String>) {
    let mut on = |nodes: &[rhai::ASTNode]| {
        match nodes.last() {
            Some(rhai::ASTNode::Stmt(Stmt::Assignment(x))) => {
                if let Expr::Variable(v, _, _) = &x.1.lhs {
                    assigned.insert(v.1.to_string());
                }
            }
            Some(rhai::ASTNode::Stmt(Stmt::Var(x, _, _))) => {
                declared.insert(x.0.name.to_string());
            }
            Some(rhai::ASTNode::Stmt(Stmt::For(x, _))) => {
                declared.insert(x.0.name.to_string());
                if let Some(c) = &x.1 {
                    declared.insert(c.name.to_string());
                }
            }
            _ => {}
        }
        true
    };
    stmt.walk(&mut Vec::new(), &mut on);
}
