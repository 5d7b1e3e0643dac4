//! Watching the rule pack and schemas folders and running an action (a reload, or
//! `check --watch`'s checks) once the files have settled.
//!
//! Folders are watched, never single files: an editor that saves by renaming a temp
//! file over the original, `git checkout`, and a Kubernetes ConfigMap update (a new
//! timestamped folder and the `..data` symlink renamed over the old one) all replace
//! inodes, and a watch on a file dies with its first inode (engine-notes §3). Each folder
//! is watched recursively, and its parent non-recursively so that the folder itself
//! being replaced or re-pointed (a symlinked pack, `..data` one level up) is seen too;
//! the folder's watch is then renewed. Event names are not filtered beyond reads: a
//! ConfigMap swap announces itself only through hidden names, and a spurious trigger
//! costs one snapshot read, because an unchanged content hash ends the attempt.
//!
//! Debouncing is trailing-edge (`debounce` of quiet) with a ceiling (`max_delay` after
//! the first event), so a folder that never goes quiet still reloads. The native watcher
//! is replaced by notify's `PollWatcher` when it cannot be created or when it reports
//! lost events (queue overflow, rescan, errors). The action runs on this module's own
//! thread: a reload is CPU work and must stay off the async runtime.

use super::{ReloadError, Reloader};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher as _};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Use notify's `PollWatcher` from the start (NFS, SMB, some container mounts).
    pub polling: bool,
    /// Quiet time after the last event before the action runs.
    pub debounce: Duration,
    /// Longest wait after the first event of a burst, however busy the folder stays.
    pub max_delay: Duration,
    /// How often the `PollWatcher` scans (it compares contents, so a small pack only).
    pub poll_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            polling: false,
            debounce: Duration::from_millis(300),
            max_delay: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
        }
    }
}

enum Msg {
    Fs(notify::Result<Event>),
    /// Run the action now (SIGHUP, an admin request).
    Now,
    Stop,
}

/// The running watch. Dropping it stops the thread: at once when it is idle, and when
/// an action is in progress after at most [`STOP_WAIT`] (then it is left to finish on
/// its own: a stuck action must never hold up a shutdown).
pub struct Watcher {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    /// Closed (sender dropped) when the thread ends.
    ended: std::sync::Mutex<mpsc::Receiver<()>>,
    polling: Arc<AtomicBool>,
}

/// How long dropping a [`Watcher`] waits for an action in progress.
pub const STOP_WAIT: Duration = Duration::from_secs(2);

impl Watcher {
    /// Runs the action as soon as the thread is free, without waiting for a debounce.
    /// What SIGHUP should call.
    pub fn trigger(&self) {
        let _ = self.tx.send(Msg::Now);
    }

    /// Whether the polling fallback is in use (by configuration or after a failure).
    pub fn is_polling(&self) -> bool {
        self.polling.load(Ordering::SeqCst)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        match ended.recv_timeout(STOP_WAIT) {
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!("the reload thread is still busy; not waiting for it");
            }
            _ => {
                let _ = thread.join();
            }
        }
    }
}

/// Watches the reloader's rules and schemas folders and reloads on changes. One
/// attempt runs right away, so a change made before the watch began is not missed.
pub fn watch(reloader: Arc<Reloader>, options: WatchOptions) -> Result<Watcher, ReloadError> {
    let mut dirs = vec![reloader.rules_dir().to_path_buf()];
    dirs.extend(reloader.schemas_dir().map(Path::to_path_buf));
    watch_paths(&dirs, options, move || {
        reloader.try_reload();
    })
}

/// Watches `dirs` and runs `action` once at start and then after every settled change.
pub fn watch_paths(
    dirs: &[PathBuf],
    options: WatchOptions,
    mut action: impl FnMut() + Send + 'static,
) -> Result<Watcher, ReloadError> {
    let roots: Vec<PathBuf> = dirs
        .iter()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
        .collect();
    let (tx, rx) = mpsc::channel();
    let polling = Arc::new(AtomicBool::new(options.polling));
    let backend = Backend::start(&roots, &options, &tx, options.polling)?;
    polling.store(backend.is_polling(), Ordering::SeqCst);
    let mut state = Loop {
        roots,
        options,
        tx: tx.clone(),
        backend,
        polling: polling.clone(),
    };
    let (ended_tx, ended) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("rulebridge-reload".into())
        .spawn(move || {
            let _ended = ended_tx;
            run_guarded(&mut action);
            state.run(rx, &mut action);
        })
        .map_err(ReloadError::Thread)?;
    Ok(Watcher {
        tx,
        thread: Some(thread),
        ended: std::sync::Mutex::new(ended),
        polling,
    })
}

fn run_guarded(action: &mut impl FnMut()) {
    // A panic in one attempt (a bug, not a bad pack) must not end watching for good.
    if catch_unwind(AssertUnwindSafe(&mut *action)).is_err() {
        tracing::error!("the reload action panicked; watching goes on");
    }
}

enum Backend {
    Native(RecommendedWatcher),
    /// Held only to keep its scanning thread alive.
    Poll {
        _watcher: PollWatcher,
    },
}

impl Backend {
    fn start(
        roots: &[PathBuf],
        options: &WatchOptions,
        tx: &mpsc::Sender<Msg>,
        polling: bool,
    ) -> Result<Backend, ReloadError> {
        if !polling {
            match Self::native(roots, tx) {
                Ok(backend) => return Ok(backend),
                Err(e) => {
                    tracing::warn!(error = %e, "native file watching failed; polling instead")
                }
            }
        }
        Self::poll(roots, options, tx)
    }

    fn native(roots: &[PathBuf], tx: &mpsc::Sender<Msg>) -> Result<Backend, ReloadError> {
        let sender = tx.clone();
        let mut w = notify::recommended_watcher(move |e| {
            let _ = sender.send(Msg::Fs(e));
        })
        .map_err(|error| ReloadError::Watch {
            path: "(native watcher)".into(),
            error,
        })?;
        for root in roots {
            watch_root(&mut w, root)?;
            if let Some(parent) = root.parent() {
                // Best effort: without it only the folder's own replacement goes unseen.
                if let Err(e) = w.watch(parent, RecursiveMode::NonRecursive) {
                    tracing::debug!(path = %parent.display(), error = %e, "parent not watched");
                }
            }
        }
        Ok(Backend::Native(w))
    }

    fn poll(
        roots: &[PathBuf],
        options: &WatchOptions,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<Backend, ReloadError> {
        let sender = tx.clone();
        // Contents are compared: a same-size rewrite within one mtime tick still counts.
        // Parents are not polled: that would hash every sibling file (the state
        // database) on every scan. A scan walks from the root path anyway, so a
        // replaced folder is still seen.
        let config = notify::Config::default()
            .with_poll_interval(options.poll_interval)
            .with_compare_contents(true);
        let mut w = PollWatcher::new(
            move |e| {
                let _ = sender.send(Msg::Fs(e));
            },
            config,
        )
        .map_err(|error| ReloadError::Watch {
            path: "(poll watcher)".into(),
            error,
        })?;
        for root in roots {
            watch_root(&mut w, root)?;
        }
        Ok(Backend::Poll { _watcher: w })
    }

    fn is_polling(&self) -> bool {
        matches!(self, Backend::Poll { .. })
    }

    /// Watches `root` afresh: after it was replaced, the old watch follows the old inode.
    fn renew(&mut self, root: &Path) {
        let result = match self {
            Backend::Native(w) => {
                let _ = w.unwatch(root);
                watch_root(w, root)
            }
            // A poll scan starts from the path every time; nothing to renew.
            Backend::Poll { .. } => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "not watched yet; the parent's watch will say when it appears");
        }
    }
}

fn watch_root(w: &mut impl notify::Watcher, root: &Path) -> Result<(), ReloadError> {
    w.watch(root, RecursiveMode::Recursive)
        .map_err(|error| ReloadError::Watch {
            path: root.display().to_string(),
            error,
        })
}

struct Loop {
    roots: Vec<PathBuf>,
    options: WatchOptions,
    tx: mpsc::Sender<Msg>,
    backend: Backend,
    polling: Arc<AtomicBool>,
}

/// A burst of events waiting for quiet.
struct Pending {
    first: Instant,
    last: Instant,
    renew: Vec<PathBuf>,
}

impl Loop {
    fn run(&mut self, rx: mpsc::Receiver<Msg>, action: &mut impl FnMut()) {
        let mut pending: Option<Pending> = None;
        loop {
            let msg = match &pending {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(p) => {
                    let due =
                        (p.last + self.options.debounce).min(p.first + self.options.max_delay);
                    rx.recv_timeout(due.saturating_duration_since(Instant::now()))
                }
            };
            match msg {
                Ok(Msg::Fs(event)) => {
                    let Some(renew) = self.judge(event) else {
                        continue;
                    };
                    let now = Instant::now();
                    let p = pending.get_or_insert_with(|| Pending {
                        first: now,
                        last: now,
                        renew: Vec::new(),
                    });
                    p.last = now;
                    for root in renew {
                        if !p.renew.contains(&root) {
                            p.renew.push(root);
                        }
                    }
                }
                Ok(Msg::Now) | Err(RecvTimeoutError::Timeout) => {
                    if let Some(p) = pending.take() {
                        for root in &p.renew {
                            self.backend.renew(root);
                        }
                    }
                    run_guarded(action);
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Whether an event calls for the action, and which roots must be watched afresh.
    fn judge(&mut self, event: notify::Result<Event>) -> Option<Vec<PathBuf>> {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if self.backend.is_polling() {
                    // A poll scan repeats the same error every interval (a folder gone).
                    tracing::debug!(error = %e, "poll watcher error");
                } else {
                    tracing::warn!(error = %e, "file watcher error; switching to polling");
                    self.fall_back();
                }
                return Some(Vec::new());
            }
        };
        if event.need_rescan() {
            if !self.backend.is_polling() {
                tracing::warn!("file watcher lost events (queue overflow); switching to polling");
                self.fall_back();
            }
            return Some(Vec::new());
        }
        // Our own snapshot reads open every file; only a finished write is a change.
        if let EventKind::Access(kind) = event.kind {
            if kind != AccessKind::Close(AccessMode::Write) {
                return None;
            }
        }
        let mut relevant = false;
        let mut renew = Vec::new();
        for path in &event.paths {
            for root in &self.roots {
                if replaces(root, path) {
                    relevant = true;
                    renew.push(root.clone());
                } else if path.starts_with(root) {
                    relevant = true;
                }
            }
        }
        relevant.then_some(renew)
    }

    fn fall_back(&mut self) {
        match Backend::poll(&self.roots, &self.options, &self.tx) {
            Ok(backend) => {
                self.backend = backend;
                self.polling.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::error!(error = %e, "polling fallback failed; keeping the native watcher")
            }
        }
    }
}

/// Whether an event at `path` (seen through the parent's watch) may have replaced or
/// re-pointed `root`: the root itself, or a Kubernetes `..data`-style sibling through
/// which a symlinked root resolves.
fn replaces(root: &Path, path: &Path) -> bool {
    if path == root {
        return true;
    }
    path.parent() == root.parent()
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacement_is_the_root_itself_or_a_dotdot_sibling() {
        let root = Path::new("/etc/rb/rules");
        assert!(replaces(root, Path::new("/etc/rb/rules")));
        assert!(replaces(root, Path::new("/etc/rb/..data")));
        assert!(replaces(root, Path::new("/etc/rb/..2026_01_02_03_04_05.1")));
        assert!(!replaces(root, Path::new("/etc/rb/state.db")));
        assert!(!replaces(root, Path::new("/etc/rb/rules/..data")));
        assert!(!replaces(root, Path::new("/etc/rb/.rules.swp")));
    }
}
