//! The rule engine: compiling a rule pack and running its stages on incidents.
//!
//! Pure core: no tokio, no HTTP, no SQLite, no file reads (the pack arrives as a
//! [`PackSnapshot`](crate::snapshot::PackSnapshot)). Entry points: [`CompiledPack::build`]
//! and the stage runners in [`pipeline`].

pub mod blame;
pub mod budget;
pub mod call;
pub mod compile;
pub mod context;
pub mod delta;
pub mod direction;
pub mod handle;
pub mod json;
pub mod manifest;
pub mod natives;
pub mod params;
pub mod pipeline;
pub mod reference;
pub mod resolver;
pub mod sandbox;
pub mod session;
pub mod tables;

pub use call::{RuleError, RuleErrorKind};
pub use compile::{CompiledPack, CompiledRule};
pub use context::Twin;
pub use handle::PackHandle;
pub use pipeline::{
    Decision, ExplainStep, Explained, FieldDelta, PipelineResult, RunOptions, Verdict,
};
pub use sandbox::Limits;
pub mod lint;
