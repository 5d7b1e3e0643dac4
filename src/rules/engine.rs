//! The one place a Rhai [`Engine`] is configured.
//!
//! Rhai applies language options and disabled symbols at compile time only, so an AST
//! compiled by one engine and run by a differently configured one escapes the sandbox.
//! Every engine in rulebridge — compile, run, diagnose — therefore comes from
//! [`build_engine`], and only the module resolver differs between them.
//!
//! The sandbox: no `eval`, strict variables, imports only from the pack (resolved at
//! compile time, see `compile.rs`), bounded operations, call depth, expression depth,
//! string, array and map sizes, and a wall-clock deadline per call enforced from
//! `on_progress` through a thread-local (Rhai runs synchronously on the calling thread).

use rhai::packages::{Package, StandardPackage};
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
}

/// The token `on_progress` aborts a call with when its deadline has passed.
pub const DEADLINE_TOKEN: &str = "rulebridge:deadline";

/// Runs `f` with a wall-clock deadline for every Rhai call it makes on this thread.
pub fn with_deadline<R>(timeout: Duration, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _reset = Reset(DEADLINE.with(|d| d.replace(Some(Instant::now() + timeout))));
    f()
}

/// For native helpers that do real work: fails the call once its deadline has passed.
/// `on_progress` only looks at the clock every 1024 operations, and a native call is a
/// single operation however long it runs, so heavy helpers check for themselves.
pub fn check_deadline() -> Result<(), Box<rhai::EvalAltResult>> {
    let expired = DEADLINE
        .with(|d| d.get())
        .is_some_and(|deadline| Instant::now() >= deadline);
    if expired {
        Err(rhai::EvalAltResult::ErrorTerminated(
            Dynamic::from(DEADLINE_TOKEN),
            rhai::Position::NONE,
        )
        .into())
    } else {
        Ok(())
    }
}

/// Builds an engine with the sandbox and every native function scripts may use.
pub fn build_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(StandardPackage::new().as_shared_module());
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

    // Checking the clock on every operation costs ~40%; every 1024th costs ~4%.
    engine.on_progress(|ops| {
        if ops & 0x3ff != 0 {
            return None;
        }
        let expired = DEADLINE
            .with(|d| d.get())
            .is_some_and(|deadline| Instant::now() >= deadline);
        expired.then(|| Dynamic::from(DEADLINE_TOKEN))
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
