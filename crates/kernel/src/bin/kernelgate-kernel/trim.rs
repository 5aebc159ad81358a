//! Dropping unused read-only file pages from the resident set.
//!
//! Building the Rhai engine registers its whole standard library: that runs code spread over
//! nearly all of this binary's 4.9 MB of machine code once, and the kernel then never runs most
//! of it again, yet every page stays mapped (and counted resident) for the kernel's lifetime.
//! Once the engine is built, the read-only file mappings (the code and constants of this binary
//! and its shared libraries) are unmapped from this process; the pages the kernel goes on using
//! are mapped back on first use, from the page cache (a minor fault, no I/O).
//!
//! The same is done whenever the kernel has sat idle for a second after serving requests (the
//! page-cache fault-around maps 64 KiB around every fault, so serving a few requests maps back
//! megabytes that an idle kernel does not use), together with returning the allocator's free
//! memory to the system. An idle kernel, the common case on a shared host, then holds little
//! more than its live data; the first request after an idle spell costs some minor faults.
//!
//! Only mappings that are not writable and hold no anonymous (copy-on-write) page are dropped:
//! every page of such a mapping is an unmodified page of its file, so nothing is lost. Mappings
//! that relocation wrote to (RELRO) hold anonymous pages and are left alone.

use std::ffi::c_void;

/// Unmaps clean read-only file mappings from the resident set. Best effort: does nothing where
/// /proc is unreadable.
pub fn drop_startup_code() {
    for &(start, len) in clean_mappings() {
        unmap_resident(start, len);
    }
}

/// The clean read-only file mappings, found once (reading /proc/self/smaps walks every page
/// table, about half a millisecond; a thousand kernels going idle at once should not each pay
/// it again). The list stays true: a mapping that is not writable gains no anonymous page
/// unless it is made writable, which nothing does after start-up.
fn clean_mappings() -> &'static [(usize, usize)] {
    static CLEAN: std::sync::OnceLock<Vec<(usize, usize)>> = std::sync::OnceLock::new();
    CLEAN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/smaps")
            .map(|smaps| clean_read_only_mappings(&smaps))
            .unwrap_or_default()
    })
}

/// Run once the kernel has sat idle after serving requests: drops the read-only file pages
/// again and returns free heap memory to the system.
pub fn give_back_idle_memory() {
    drop_startup_code();
    release_free_heap();
}

/// One mapping of /proc/self/smaps as far as the decision needs it.
struct Mapping {
    start: usize,
    end: usize,
    droppable: bool,
    anonymous_kb: Option<u64>,
}

impl Mapping {
    /// From a header line: `start-end perms offset dev inode [path]`.
    fn parse_header(line: &str) -> Option<Mapping> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?.as_bytes();
        let path = fields.nth(3).unwrap_or("");
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        Some(Mapping {
            start,
            end,
            // Readable, never writable, private, and backed by a file (not [vdso], [stack]...).
            droppable: perms.len() == 4
                && perms.first() == Some(&b'r')
                && perms.get(1) == Some(&b'-')
                && perms.get(3) == Some(&b'p')
                && path.starts_with('/'),
            anonymous_kb: None,
        })
    }

    fn clean(&self) -> bool {
        self.droppable && self.anonymous_kb == Some(0) && self.end > self.start
    }
}

/// (start, length) of every mapping safe to drop: see the module's last paragraph.
fn clean_read_only_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        if let Some(value) = line.strip_prefix("Anonymous:") {
            if let Some(m) = current.as_mut() {
                m.anonymous_kb = value.trim().trim_end_matches("kB").trim().parse().ok();
            }
        } else if let Some(m) = Mapping::parse_header(line) {
            if let Some(done) = current.replace(m) {
                if done.clean() {
                    out.push((done.start, done.end - done.start));
                }
            }
        }
    }
    if let Some(done) = current.filter(Mapping::clean) {
        out.push((done.start, done.end - done.start));
    }
    out
}

#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn release_free_heap() {
    // SAFETY: malloc_trim only hands free memory of glibc's arenas back to the system (it may
    // MADV_DONTNEED free pages); no live allocation is moved or changed.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn release_free_heap() {}

#[allow(unsafe_code)]
fn unmap_resident(start: usize, len: usize) {
    // SAFETY: [start, start + len) is a whole private, file-backed mapping that is not writable
    // and held no anonymous page when /proc/self/smaps listed it (nor can it since, see
    // `clean_mappings`). MADV_DONTNEED on such a
    // mapping only drops page-table entries: the next access maps the unmodified file page back,
    // so its contents stay exactly as they were and no memory of ours is freed or changed.
    let rc = unsafe { libc::madvise(start as *mut c_void, len, libc::MADV_DONTNEED) };
    if rc != 0 {
        tracing::debug!(
            "madvise(MADV_DONTNEED) of a read-only mapping failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let smaps = "\
1000-3000 r-xp 00000000 fe:00 1 /usr/bin/k
Rss:                   8 kB
Anonymous:             0 kB
3000-4000 r--p 00002000 fe:00 1 /usr/bin/k
Anonymous:             4 kB
4000-5000 rw-p 00003000 fe:00 1 /usr/bin/k
Anonymous:             0 kB
5000-6000 r-xs 00000000 fe:00 2 /dev/shm/x
Anonymous:             0 kB
6000-7000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7000-8000 rw-p 00000000 00:00 0
Anonymous:             4 kB
8000-a000 r--p 00000000 fe:00 3 /usr/lib/libc.so.6
Anonymous:             0 kB
a000-b000 r--p 00000000 fe:00 3 /usr/lib/libm.so.6
";
        // The last mapping lists no Anonymous line: unknown, so kept.
        assert_eq!(
            clean_read_only_mappings(smaps),
            vec![(0x1000, 0x2000), (0x8000, 0x2000)]
        );
    }
}
