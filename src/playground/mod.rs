//! `rulebridge playground`: a local page to edit a rule pack and watch what it does.
//!
//! The page shows the pack's files in an editor, a sample incident (a pack sample, one
//! from the emulator's generator, or pasted), and on every edit the pipeline's output,
//! its explain steps and every finding located in the editor. The edited pack is built
//! in memory through the same path as everything else ([`crate::snapshot`] →
//! [`crate::rules::CompiledPack::build`] → the sandboxed pipeline); saving writes a file
//! only if the pack it makes passes [`crate::packtest::accept`], as a hot reload would.
//!
//! Edge module (tokio, axum). `session` is the work and knows no HTTP; `server` is the
//! HTTP and knows no rules; `files` decides which paths may be touched. Invariants: it
//! listens on loopback unless told otherwise ([`check_listen`]), answers only requests
//! addressed to it (Host/Origin), and never touches a path outside the pack.

mod files;
mod server;
mod session;

pub use files::{PathError, PACK_FILE_KINDS};
pub use server::{serve, MAX_BODY};
pub use session::{
    findings, EvalReport, EvalRequest, Finding, Playground, PlaygroundError, Sample, SaveReport,
};

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListenError {
    #[error("{0} is not a loopback address: the playground can save rule files, so it listens on 127.0.0.1 unless --allow-non-loopback says otherwise")]
    NotLoopback(SocketAddr),
    #[error("{0} is every interface: name the one address to listen on (requests must be addressed to it)")]
    Unspecified(SocketAddr),
}

/// Refuses an address the page should not be served on.
pub fn check_listen(addr: SocketAddr, allow_non_loopback: bool) -> Result<(), ListenError> {
    if addr.ip().is_unspecified() {
        return Err(ListenError::Unspecified(addr));
    }
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(ListenError::NotLoopback(addr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_loopback_unless_told() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(check_listen(at("127.0.0.1:0"), false), Ok(()));
        assert_eq!(check_listen(at("[::1]:8080"), false), Ok(()));
        assert!(matches!(
            check_listen(at("192.168.1.5:8080"), false),
            Err(ListenError::NotLoopback(_))
        ));
        assert_eq!(check_listen(at("192.168.1.5:8080"), true), Ok(()));
        assert!(matches!(
            check_listen(at("0.0.0.0:8080"), true),
            Err(ListenError::Unspecified(_))
        ));
    }
}
