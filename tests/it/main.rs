//! The integration tests, one binary: each module is a topic (its doc says what it
//! covers), `common` holds the helpers they share. One binary links rhai, axum,
//! reqwest and rusqlite once instead of once per topic, which is most of a cold
//! build's time. Data (packs, payloads, expected outputs) stays in folders under
//! `tests/`, read by the modules; paths are relative to the crate root, where cargo
//! runs tests.
//!
//! One topic is not here: `tests/credentials.rs` sets process-wide environment
//! variables, so it is its own binary with nothing running beside it.

mod alert_copies;
mod authoring;
mod change_detection;
mod cli;
mod cli_service;
mod clients;
mod common;
mod config_examples;
mod crash;
mod default_pack;
mod emulator;
mod emulator_identity;
mod emulator_observed;
mod emulator_seed;
mod fuzz_pipeline;
mod hooks;
mod hostile;
mod identity;
mod limits;
mod lint;
mod load_errors;
mod metrics_truth;
mod model;
mod one_path;
mod operations;
mod ops_server;
mod planner;
mod playground;
mod real_tenants;
mod recorded_traffic;
mod reload;
mod reload_cli;
mod reload_rig;
mod reload_sync;
mod stamps;
mod state_store;
mod step;
mod sync;
mod sync_regressions;
