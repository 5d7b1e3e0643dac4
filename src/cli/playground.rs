//! `rulebridge playground`: serves the rule playground page on loopback until Ctrl-C.
//!
//! The URL is printed on standard output as the first line (`playground on
//! http://127.0.0.1:PORT/`), after the port is bound, so a script or test that passed
//! `--listen 127.0.0.1:0` reads the port from it.

use super::PackArgs;
use crate::playground::{check_listen, serve, Playground};
use anyhow::{bail, Context};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct PlaygroundArgs {
    #[command(flatten)]
    pack: PackArgs,
    /// Address to serve the page on (port 0: any free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:4747")]
    listen: SocketAddr,
    /// Allow a non-loopback --listen address. Anyone who can reach it can edit and save
    /// the rule pack: use only on a network you trust.
    #[arg(long)]
    allow_non_loopback: bool,
}

pub fn run(args: &PlaygroundArgs) -> anyhow::Result<ExitCode> {
    check_listen(args.listen, args.allow_non_loopback)?;
    let Some(rules) = args.pack.rules_dir() else {
        bail!("the playground edits a rule pack folder, and there is no rules/ here: pass --rules DIR");
    };
    // Fail before listening if the pack cannot even be read (a broken pack that reads is
    // fine: fixing it is what the page is for).
    if let Err(problems) = args.pack.snapshot() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!("the rule pack at {} cannot be read", rules.display());
    }
    let playground = Arc::new(Playground::new(rules, args.pack.schemas_dir()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "playground on http://{addr}/")?;
        stdout.flush()?;
        drop(stdout);
        eprintln!(
            "editing {} (saves only what passes its checks and tests); Ctrl-C stops",
            args.pack.rules_label()
        );
        serve(listener, playground, super::service::shutdown_signal())
            .await
            .context("serving the playground")?;
        Ok(ExitCode::SUCCESS)
    })
}
