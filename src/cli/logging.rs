//! Where `tracing` events go: stderr, as text for people (the default) or, with
//! `--log-format json` / `RULEBRIDGE_LOG_FORMAT=json`, one JSON object per line for log
//! collectors and SIEMs. The only place a subscriber is installed; libraries only emit.
//!
//! JSON lines carry `timestamp` (RFC 3339, UTC), `level`, `target`, `message` and the
//! event's own fields at the top level (flattened, so a collector needs no nested
//! paths); spans are left out, since rulebridge's events carry their context as fields.
//! README "Log fields" lists the stable ones.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// `RUST_LOG` when set, else `default` (a service logs its incidents at info; the
/// authoring commands only warn, so their own output stays readable).
pub fn install(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            // Colour codes only on a terminal: log files and collectors get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
