//! The running rule pack, shared by every sync task and swapped whole by a reload.
//!
//! Invariant: readers get an `Arc` to one complete [`CompiledPack`] and keep it for the
//! whole incident, so a swap in the middle of an incident cannot mix two packs; the
//! next incident takes whatever is current then.

use super::CompiledPack;
use std::sync::{Arc, RwLock};

pub struct PackHandle {
    current: RwLock<Arc<CompiledPack>>,
}

impl PackHandle {
    pub fn new(pack: CompiledPack) -> Self {
        PackHandle {
            current: RwLock::new(Arc::new(pack)),
        }
    }

    /// The pack to decide the next incident with.
    pub fn current(&self) -> Arc<CompiledPack> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes `pack` current; returns the one it replaced. In-flight incidents keep theirs.
    pub fn swap(&self, pack: CompiledPack) -> Arc<CompiledPack> {
        let mut slot = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *slot, Arc::new(pack))
    }
}
