//! One process per state file: an exclusive `flock` on `<state>.lock`, held for the
//! life of `run` (and `retry`).
//!
//! Two services on one state file would both poll and write (double API traffic) and
//! race each other's etags and cursors. SQLite's own locking only serialises single
//! transactions, so the process takes an advisory lock on a sibling file first and
//! writes its pid into it; a second process fails at once, naming that pid. The kernel
//! drops the lock when the holder exits in any way (SIGKILL included), so a stale lock
//! file never blocks a restart.

use super::StateError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// The lock file of a state file: `<state>.lock`.
    pub fn path_for(state: &Path) -> PathBuf {
        let mut name = state.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock for `state`, or says which process holds it.
    pub fn acquire(state: &Path) -> Result<StateLock, StateError> {
        let path = Self::path_for(state);
        let fail = |message: String| StateError::Open {
            path: path.display().to_string(),
            message,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(|e| fail(e.to_string()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another rulebridge process".to_string()
                } else {
                    format!("another rulebridge process (pid {holder})")
                };
                return Err(StateError::Locked {
                    path: state.display().to_string(),
                    holder: who,
                });
            }
            Err(TryLockError::Error(e)) => return Err(fail(format!("cannot lock: {e}"))),
        }
        // Ours now: record who holds it, for the next process's message.
        let write = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        write.map_err(|e| fail(format!("cannot write the pid: {e}")))?;
        Ok(StateLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
