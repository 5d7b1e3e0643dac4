//! What a script may call: every function the sandbox registers (read from
//! `allowed-functions.txt`, which `rules::sandbox`'s test keeps equal to the engine), the
//! names Rhai handles itself, and the functions the sandbox forbids on purpose.
//!
//! Invariant: a name is "unknown" only if no registered native, no script function and
//! no built-in of that name accepts that many arguments — then the call fails at run
//! time whenever it is reached, so refusing the pack is certain, never a guess.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

const REVIEWED: &str = include_str!("../allowed-functions.txt");

/// Names Rhai's evaluator handles itself, with any number of arguments.
pub const BUILT_INS_FOR_HINTS: &[&str] = BUILT_INS;
const BUILT_INS: &[&str] = &[
    "Fn",
    "call",
    "curry",
    "type_of",
    "print",
    "debug",
    "is_def_var",
    "is_def_fn",
    "is_shared",
    "this",
];

/// Functions of Rhai's standard library that the sandbox leaves out on purpose, with
/// the reason the message gives. `timestamp` is forbidden only without arguments (the
/// clock); `timestamp(text)` is a native.
const FORBIDDEN: &[(&str, Option<usize>, &str)] = &[
    (
        "sleep",
        None,
        "it would hold the sync thread past any deadline",
    ),
    ("exit", None, "a rule cannot stop the service"),
    (
        "parse_json",
        None,
        "rules receive JSON already parsed; parsing text is unbounded",
    ),
    (
        "timestamp",
        Some(0),
        "a rule never reads the clock; its time is ctx.sync_time",
    ),
    (
        "elapsed",
        None,
        "a rule never reads the clock; its time is ctx.sync_time",
    ),
    ("eval", None, "eval is disabled"),
    ("blob", None, "blobs are not part of the sandbox"),
    (
        "back_trace",
        None,
        "debugging functions are not part of the sandbox",
    ),
    (
        "get_fn_metadata_list",
        None,
        "reflection is not part of the sandbox",
    ),
];

pub struct Known {
    /// Registered native name -> the numbers of arguments it accepts (method form counts
    /// the object).
    natives: HashMap<String, HashSet<usize>>,
    /// Property names with a getter, per type name (`Ctx` -> params, rule, ...).
    getters: HashMap<String, Vec<String>>,
}

pub fn known() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(|| Known::parse(REVIEWED))
}

impl Known {
    fn parse(text: &str) -> Known {
        let mut natives: HashMap<String, HashSet<usize>> = HashMap::new();
        let mut getters: HashMap<String, Vec<String>> = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let Some(open) = line.find('(') else { continue };
            let name = &line[..open];
            // The parameter list ends at the `)` before the return type; types such as
            // `()` and `Result<(), …>` contain brackets and commas of their own.
            // (A function returning nothing has no return type.)
            let close = line
                .rfind(") -> ")
                .or_else(|| line.ends_with(')').then(|| line.len() - 1));
            let Some(close) = close.filter(|c| *c > open) else {
                continue;
            };
            let params = line[open + 1..close].trim();
            let arity = if params.is_empty() {
                0
            } else {
                top_level_commas(params) + 1
            };
            if let Some(prop) = name.strip_prefix("get$") {
                // `get$params(_: &mut Ctx)`: the type is after the last space.
                let ty = params.rsplit(' ').next().unwrap_or("").to_string();
                getters.entry(ty).or_default().push(prop.to_string());
            } else if name
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
            {
                natives.entry(name.to_string()).or_default().insert(arity);
            }
        }
        Known { natives, getters }
    }

    pub fn is_built_in(name: &str) -> bool {
        BUILT_INS.contains(&name)
    }

    /// Whether a native of this name takes `arity` arguments.
    pub fn native_accepts(&self, name: &str, arity: usize) -> bool {
        self.natives.get(name).is_some_and(|a| a.contains(&arity))
    }

    pub fn native_arities(&self, name: &str) -> Option<Vec<usize>> {
        self.natives.get(name).map(|a| {
            let mut v: Vec<usize> = a.iter().copied().collect();
            v.sort_unstable();
            v
        })
    }

    pub fn native_names(&self) -> impl Iterator<Item = &str> {
        self.natives.keys().map(String::as_str)
    }

    /// The properties `ctx` has, sorted.
    pub fn ctx_members(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .getters
            .get("Ctx")
            .map(|g| g.iter().map(String::as_str).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Why `name` with `arity` arguments is forbidden, if it is.
    pub fn forbidden(&self, name: &str, arity: usize) -> Option<&'static str> {
        FORBIDDEN
            .iter()
            .find(|(n, a, _)| *n == name && a.is_none_or(|a| a == arity))
            .map(|(_, _, why)| *why)
            .filter(|_| !self.native_accepts(name, arity))
    }
}

fn top_level_commas(params: &str) -> usize {
    let mut depth = 0i32;
    let mut commas = 0;
    for c in params.chars() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' | '>' | ']' => depth -= 1,
            ',' if depth == 0 => commas += 1,
            _ => {}
        }
    }
    commas
}

/// The candidate closest to `name` (edit distance at most a third of its length, at
/// least 1; case differences count as small), for "did you mean".
pub fn did_you_mean<'c>(name: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .filter(|c| *c != name)
        .map(|c| {
            let d = if c.eq_ignore_ascii_case(name) {
                0
            } else {
                distance(&name.to_lowercase(), &c.to_lowercase())
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.len(), *c))
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters (names are short; quadratic is fine).
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reviewed_list() {
        let k = known();
        assert!(k.native_accepts("enum_key", 1));
        assert!(k.native_accepts("pluck", 2));
        assert!(!k.native_accepts("enum_key", 3));
        // `clip(_: (), _: i64)`: the unit type's brackets are not the list's end.
        assert_eq!(k.native_arities("clip"), Some(vec![2]));
        assert_eq!(k.native_arities("add_label"), Some(vec![2]));
        assert!(k.ctx_members().contains(&"params"));
        assert!(k.forbidden("sleep", 1).is_some());
        assert!(k.forbidden("timestamp", 0).is_some());
        assert!(k.forbidden("timestamp", 1).is_none());
    }

    #[test]
    fn suggests_near_names() {
        let names = ["enum_key", "pluck", "params"];
        assert_eq!(
            did_you_mean("enum_kye", names.into_iter()),
            Some("enum_key")
        );
        assert_eq!(did_you_mean("parms", names.into_iter()), Some("params"));
        assert_eq!(did_you_mean("zzz", names.into_iter()), None);
    }
}
