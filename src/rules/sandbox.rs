//! The one place a Rhai [`Engine`] is configured.
//!
//! Rhai applies language options and disabled symbols at compile time only, so an AST
//! compiled by one engine and run by a differently configured one escapes the sandbox.
//! Every engine in rulebridge — compile, run, diagnose — therefore comes from
//! [`build_engine`], and only the module resolver differs between them.
//!
//! The sandbox is an allow-list: only the Rhai packages a rule needs are registered
//! (arithmetic, logic, math, strings, arrays, maps, iterators, function pointers, bit
//! fields), never `LanguageCorePackage` (`sleep`, `exit`, `parse_json`, reflection),
//! `BasicTimePackage` (`timestamp()`: the clock; a rule's time is `ctx.sync_time`),
//! `BasicBlobPackage` or `DebuggingPackage`. `tests` below lists every callable
//! function against `allowed-functions.txt`, so a new one cannot appear unreviewed.
//! Then: no `eval`, strict variables, imports only from the pack (resolved at compile
//! time, see `compile.rs`), bounded operations, call depth, expression depth, string,
//! array and map sizes, and per call a wall-clock deadline and a memory budget
//! enforced from `on_progress` through thread-locals (Rhai runs synchronously on the
//! calling thread; the memory counter is [`super::budget`]'s allocator).

use super::budget;
use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, BitFieldPackage, LogicPackage, MoreStringPackage,
    Package,
};
use rhai::{Dynamic, Engine, OptimizationLevel};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Resource limits for one rule call. The defaults stop a runaway script well within
/// a second; the manifest's `[limits]` table may change them up to the ceilings
/// in `schemas/rule-pack.schema.json` (`/properties/limits`), so no pack can hang the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Rhai operations per call (~50 M/s on the reference machine, so 1 M ≈ 20 ms).
    pub max_operations: u64,
    /// Wall-clock budget per call, for time spent in native helpers.
    pub timeout_ms: u64,
    pub max_call_levels: usize,
    /// Bytes (UTF-8) of any one string a script builds.
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Bytes a call may grow the heap by (strings, arrays, maps it builds, counted by
    /// the allocator) and bytes its result may hold (every string counted each time
    /// it appears, shared or not), so a rule cannot exhaust the process's memory.
    pub max_memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 1_000_000,
            timeout_ms: 250,
            // Deep enough for helpers calling helpers; shallow enough that the Rust stack
            // of a 2 MiB test thread never overflows, even in debug builds.
            max_call_levels: 24,
            max_string_size: 256 * 1024,
            max_array_size: 100_000,
            max_map_size: 10_000,
            max_memory: 16 * 1024 * 1024,
        }
    }
}

impl Limits {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

thread_local! {
    /// Deadline of the rule call running on this thread, if any.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Operations the last call stopped by `on_progress` had run, so that a re-run
    /// locating the stop can halt at the same operation.
    static STOPPED_AT_OPS: Cell<u64> = const { Cell::new(0) };
}

/// Operations the last call that `on_progress` stopped on this thread had run.
pub fn stopped_at_ops() -> u64 {
    STOPPED_AT_OPS.with(Cell::get)
}

/// The token `on_progress` aborts a call with when its deadline has passed.
pub const DEADLINE_TOKEN: &str = "rulebridge:deadline";
/// The token `on_progress` aborts a call with when it outgrew its memory budget.
pub const MEMORY_TOKEN: &str = "rulebridge:memory";

/// Runs `f` with a wall-clock deadline for every Rhai call it makes on this thread.
pub fn with_deadline<R>(timeout: Duration, f: impl FnOnce() -> R) -> R {
    with_deadline_at(Instant::now() + timeout, f)
}

/// Runs `f` with an absolute deadline (a located re-run keeps the original one).
pub fn with_deadline_at<R>(deadline: Instant, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _reset = Reset(DEADLINE.with(|d| d.replace(Some(deadline))));
    // A stop by a native's `check_deadline` records no count: never a stale one.
    STOPPED_AT_OPS.with(|s| s.set(0));
    f()
}

/// Runs `f` under both per-call limits: the wall-clock deadline and the memory budget.
pub fn with_limits<R>(limits: &Limits, f: impl FnOnce() -> R) -> R {
    let deadline = Instant::now() + limits.timeout();
    with_deadline_at(deadline, || budget::with_budget(limits.max_memory, f))
}

/// For native helpers that do real work: fails the call once its deadline has passed.
/// `on_progress` only looks at the clock every 1024 operations, and a native call is a
/// single operation however long it runs, so heavy helpers check for themselves.
pub fn check_deadline() -> Result<(), Box<rhai::EvalAltResult>> {
    let expired = DEADLINE
        .with(|d| d.get())
        .is_some_and(|deadline| Instant::now() >= deadline);
    let token = if budget::exceeded() {
        MEMORY_TOKEN
    } else if expired {
        DEADLINE_TOKEN
    } else {
        return Ok(());
    };
    Err(rhai::EvalAltResult::ErrorTerminated(Dynamic::from(token), rhai::Position::NONE).into())
}

/// The Rhai packages rules may use, built once per process (see the module doc).
fn packages() -> &'static [rhai::Shared<rhai::Module>] {
    static PACKAGES: std::sync::OnceLock<Vec<rhai::Shared<rhai::Module>>> =
        std::sync::OnceLock::new();
    PACKAGES.get_or_init(|| {
        vec![
            ArithmeticPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicStringPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
            BasicIteratorPackage::new().as_shared_module(),
            BasicFnPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
        ]
    })
}

/// Builds an engine with the sandbox and every native function scripts may use.
pub fn build_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    for package in packages() {
        engine.register_global_module(package.clone());
    }
    engine.set_optimization_level(OptimizationLevel::Simple);

    engine.set_strict_variables(true);
    engine.disable_symbol("eval");
    engine.set_fail_on_invalid_map_property(false);

    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_variables(1_000);
    engine.set_max_functions(1_000);
    engine.set_max_modules(64);

    // Checking the clock on every operation costs ~40%; every 1024th costs ~4%. The
    // memory counter is two thread-local reads, cheap enough for every operation: one
    // operation can allocate a whole string, so 1024 of them could allocate gigabytes.
    engine.on_progress(|ops| {
        if budget::exceeded() {
            STOPPED_AT_OPS.with(|s| s.set(ops));
            return Some(Dynamic::from(MEMORY_TOKEN));
        }
        if ops & 0x3ff != 0 {
            return None;
        }
        let expired = DEADLINE
            .with(|d| d.get())
            .is_some_and(|deadline| Instant::now() >= deadline);
        expired.then(|| {
            STOPPED_AT_OPS.with(|s| s.set(ops));
            Dynamic::from(DEADLINE_TOKEN)
        })
    });

    // `print` and `debug` go to the log, never to stdout (which `eval` uses for output).
    engine.on_print(|text| tracing::info!(target: "rulebridge::script", "{text}"));
    engine.on_debug(|text, source, pos| {
        tracing::debug!(target: "rulebridge::script", source = source.unwrap_or(""), %pos, "{text}")
    });

    super::json::register(&mut engine);
    super::natives::register(&mut engine);
    super::context::register(&mut engine);
    engine
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function a rule can call, one signature a line, reviewed. A new Rhai
    /// release or a new native shows up here as a failing diff; bless a reviewed list
    /// with `RULEBRIDGE_BLESS=1 cargo test --lib every_callable_function`.
    const REVIEWED: &str = include_str!("allowed-functions.txt");

    #[test]
    fn every_callable_function_is_reviewed() {
        let engine = build_engine(&Limits::default());
        let mut got = engine.gen_fn_signatures(true);
        got.sort();
        got.dedup();
        for forbidden in [
            "sleep(",
            "exit(",
            "parse_json(",
            "timestamp()",
            "elapsed(",
            "back_trace(",
            "blob(",
            "get_fn_metadata_list(",
            "eval(",
            "take(",
        ] {
            let found: Vec<&String> = got.iter().filter(|s| s.starts_with(forbidden)).collect();
            assert!(found.is_empty(), "{forbidden} is callable: {found:?}");
        }
        let want: Vec<&str> = REVIEWED
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if std::env::var_os("RULEBRIDGE_BLESS").is_some() {
            let mut text = String::from("# Every function a rule can call (rules::sandbox tests). Review additions before blessing.\n");
            for sig in &got {
                text.push_str(sig);
                text.push('\n');
            }
            std::fs::write(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/src/rules/allowed-functions.txt"
                ),
                text,
            )
            .unwrap();
            return;
        }
        let added: Vec<&String> = got.iter().filter(|s| !want.contains(&s.as_str())).collect();
        let removed: Vec<&&str> = want
            .iter()
            .filter(|s| !got.iter().any(|g| g == **s))
            .collect();
        assert!(
            added.is_empty() && removed.is_empty(),
            "callable functions changed; review, then bless.\nnew: {added:#?}\ngone: {removed:#?}"
        );
    }
}
