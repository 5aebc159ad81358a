//! Dropping start-up code from the resident set.
//!
//! Building the Rhai engine registers its whole standard library: that runs code spread over
//! nearly all of this binary's 4.9 MB of machine code once, and the kernel then never runs most
//! of it again, yet every page stays mapped (and counted resident) for the kernel's lifetime.
//! Once the engine is built, the binary's code pages are unmapped from this process; the ones the
//! kernel goes on using are mapped back on first use, from the page cache (a minor fault, no
//! I/O). Only code is dropped: it is read-only and never modified, so nothing is lost.

use std::ffi::c_void;

/// Unmaps this binary's code pages (`r-xp` mappings of /proc/self/exe) from the resident set.
/// Best effort: does nothing where /proc is unreadable.
pub fn drop_startup_code() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if perms != "r-xp" || fields.nth(3) != exe.to_str() {
            continue;
        }
        let Some((start, end)) = range.split_once('-').and_then(|(s, e)| {
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        }) else {
            continue;
        };
        if end > start {
            unmap_resident(start, end - start);
        }
    }
}

#[allow(unsafe_code)]
fn unmap_resident(start: usize, len: usize) {
    // SAFETY: [start, start + len) is a whole read-only, private, file-backed mapping of our
    // own executable, as /proc/self/maps lists it. MADV_DONTNEED on such a mapping only drops
    // its page-table entries: the next access maps the unmodified file page back, so the code
    // stays exactly as it was and no memory of ours is freed or changed.
    let rc = unsafe { libc::madvise(start as *mut c_void, len, libc::MADV_DONTNEED) };
    if rc != 0 {
        tracing::debug!(
            "madvise(MADV_DONTNEED) of the code pages failed: {}",
            std::io::Error::last_os_error()
        );
    }
}
