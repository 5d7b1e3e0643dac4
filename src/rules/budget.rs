//! The per-call memory budget: a counting global allocator and the thread-local limit
//! `on_progress` checks.
//!
//! Rhai's own size limits look at one value at a time and not at every write (a map
//! filled by `m[key] = value` is never size-checked), so they cannot bound what a call
//! allocates in total. The allocator keeps, per thread, the bytes allocated minus the
//! bytes freed; a call records that figure when it starts, and the call is over budget
//! once the heap it grew (on its own thread: Rhai runs synchronously) passes
//! `limits.max_memory`. The check is two thread-local reads, so `on_progress` makes it
//! on every operation and a runaway stops within one operation's allocation.
//!
//! The counter is a `const`-initialised `Cell` without a destructor: reading it never
//! allocates (which an allocator must not do) and works during thread teardown.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting live bytes per thread.
pub struct CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (may go negative: a value made
    /// on another thread can be freed here).
    static LIVE: Cell<i64> = const { Cell::new(0) };
    /// While a call runs: the `LIVE` figure it may not exceed.
    static CEILING: Cell<Option<i64>> = const { Cell::new(None) };
}

fn add(bytes: i64) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_add(bytes)));
}

// SAFETY: every method forwards to `System` unchanged; the counting only touches a
// thread-local `Cell` that never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            add(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            add(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

/// Bytes this thread has allocated and not freed.
pub fn live_bytes() -> i64 {
    LIVE.try_with(Cell::get).unwrap_or(0)
}

/// Runs `f` with a budget of `bytes` of heap growth on this thread. Nested budgets
/// keep the tighter ceiling.
pub fn with_budget<R>(bytes: usize, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<i64>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CEILING.with(|c| c.set(self.0));
        }
    }
    let ceiling = live_bytes().saturating_add(bytes.min(i64::MAX as usize) as i64);
    let previous = CEILING.with(Cell::get);
    let ceiling = previous.map_or(ceiling, |p| p.min(ceiling));
    let _reset = Reset(CEILING.with(|c| c.replace(Some(ceiling))));
    f()
}

/// Whether the running call has grown the heap past its budget.
pub fn exceeded() -> bool {
    CEILING
        .try_with(Cell::get)
        .ok()
        .flatten()
        .is_some_and(|ceiling| live_bytes() > ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_what_this_thread_keeps_allocated() {
        with_budget(1 << 20, || {
            assert!(!exceeded());
            let small = vec![0u8; 1 << 19];
            assert!(!exceeded());
            let big = vec![0u8; 1 << 20];
            assert!(exceeded());
            drop(big);
            assert!(!exceeded());
            drop(small);
        });
        assert!(!exceeded(), "no budget outside a call");
    }
}
