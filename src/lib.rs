//! rulebridge keeps security incidents in sync between Microsoft Defender XDR and
//! Microsoft Sentinel; every decision (filter, mapping, enrichment, direction) is a
//! user-editable Rhai rule, validated by JSON Schemas, compiled and tested before use.
//!
//! See ARCHITECTURE.md for the code map. The pure core is [`model`], [`rules`] and
//! [`schema`]; [`snapshot`] reads rule packs from disk; [`packtest`] runs a pack's own
//! tests; [`cli`] is the command-line layer (the only place `anyhow` is used).

// `RuleError` is a plain struct of located facts (≈136 bytes). It is returned only when
// an incident fails, and boxing it would cost an allocation for nothing on that path.
#![allow(clippy::result_large_err)]

pub mod cli;
pub mod client;
pub mod config;
pub mod default_pack;
pub mod doctor;
pub mod emulator;
pub mod health;
pub mod hooks;
pub mod metrics;
pub mod model;
pub mod ops_server;
pub mod packtest;
pub mod playground;
pub mod problem;
pub mod reload;
pub mod rules;
pub mod schema;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod sync;
pub mod testbed;
pub mod toml_json;
