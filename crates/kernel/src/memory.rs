//! The process's live heap, counted, so the built-in kernel can stop a cell once the kernel
//! holds more than its memory limit. Rhai's own size limits apply to one value at a time;
//! variables kept across cells, or held by deep recursion, add up past any of them.
//!
//! A binary opts in by installing [`CountingAllocator`] as its global allocator (both
//! `kernelgate` and `kernelgate-kernel` do); without it [`live_bytes`] stays 0 and the limit
//! never fires. The count covers Rust allocations only (libzmq's own buffers are not in it)
//! and costs one relaxed atomic add per allocation.
#![allow(unsafe_code)] // A global allocator is unsafe by definition; this one only forwards.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes it has handed out and not yet been given back.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to `System`, which upholds GlobalAlloc's contract;
// the counter is only arithmetic on the sizes of successful calls.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are passed on as they are.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (that is, from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is the caller's, unchanged.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

/// Heap bytes allocated through [`CountingAllocator`] and not yet freed (0 when the binary did
/// not install it).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}
