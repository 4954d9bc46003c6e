//! Giving the heap's free memory back to the system.
//!
//! Every pass builds the resolver's input and a resolved view of the whole
//! cluster (hundreds of bytes per Port: see `benches/agent_memory.rs`),
//! and the initial LIST of every cache decodes each object through JSON
//! values; all of that is freed right after, but glibc's malloc keeps freed
//! pages resident in its arenas (one per thread that allocated, up to eight
//! per core) unless they sit at the top of a heap. So an agent's resident
//! memory would be its peak, not what it holds. After the first pass and
//! then at most every [`TRIM_EVERY`] after a pass (and once the caches
//! synced) [`release_free`] returns the free pages
//! (`malloc_trim`: `madvise(MADV_DONTNEED)` on every free page of every
//! arena), and once the loop has been idle for [`TRIM_IDLE`] after a pass
//! that did not; [`limit_arenas`] at start keeps fewer arenas to leave pages
//! in.
//! Both are no-ops off glibc.
#![allow(unsafe_code)]

/// How often at most the agent returns free pages after its passes.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long the agent's loop waits idle after a pass before returning
/// what the pass freed (when [`TRIM_EVERY`] kept the pass from it).
pub const TRIM_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Return the heap's free pages to the system (it walks every arena's
/// free chunks: the agent runs it off its loop).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// At most two malloc arenas (call before the runtime's threads start).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets a malloc parameter; called before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_kib() -> i64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_small_allocations_leave_the_resident_set() {
        // In a thread of its own (its own arena, as the agent's passes on
        // tokio's workers): 200,000 small objects (~100 MiB, below the mmap
        // threshold, as a cache's strings and views are), then one more that
        // pins the top of the heap, then the objects freed.
        let (before, after) = std::thread::spawn(|| {
            let many: Vec<Box<[u8; 512]>> = (0..200_000).map(|_| Box::new([1u8; 512])).collect();
            let pin = Box::new([2u8; 512]);
            drop(many);
            let before = rss_kib();
            release_free();
            let after = rss_kib();
            std::hint::black_box(pin);
            (before, after)
        })
        .join()
        .unwrap();
        assert!(
            before - after > 50_000,
            "freed memory stays resident: {before} KiB before, {after} KiB after release_free"
        );
    }
}
