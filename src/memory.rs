//! The allocator, and what keeps the resident set under `memory.limit`.
//!
//! jemalloc instead of glibc malloc, for librdkafka's allocations too (it
//! replaces `malloc` itself). Every Kafka message is copied into a ~2 KiB
//! buffer on one worker and freed, once its traces are decided, on
//! another; glibc served those from locked arenas (malloc, free and futex
//! wake-ups were a fifth of the CPU) and kept freed memory in the middle of
//! its heaps. With jemalloc the null-sink benchmark used less CPU per span
//! (figures: benches/e2e/results.md, "Measurements behind the code"). The
//! binary sets it as Rust's global allocator; this module's configuration
//! and `mallctl` link it into anything that uses the library, whose
//! `malloc` it then is.

use std::time::Duration;

/// Read by jemalloc at start-up (`MALLOC_CONF` in the environment adds to
/// it). One arena per CPU: with the default four, a catch-up at a small
/// limit peaked higher. Freed pages go back to the system about a second
/// after their last use, from jemalloc's background thread; returning them
/// at once made the benchmark spend much more CPU (faults on reuse), so
/// pressure is handled by [`hold_limit`] instead. Figures:
/// benches/e2e/results.md, "Measurements behind the code".
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "malloc_conf")]
pub static MALLOC_CONF: &[u8; 80] =
    b"percpu_arena:percpu,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// How often the resident set is compared with the limit.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Above this share of `memory.limit`, freed pages are returned at once.
const PRESSURE: f64 = 0.9;

/// Returns freed pages to the system whenever the resident set passes 90 %
/// of `limit` bytes. Catching up a backlog frees and allocates tens of MiB
/// per second; within jemalloc's one-second decay those freed pages still
/// count, and bring the peak close to the limit (benches/e2e/results.md,
/// "Measurements behind the code"). Runs until dropped.
pub async fn hold_limit(limit: u64) {
    let threshold = (limit as f64 * PRESSURE) as u64;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if resident_bytes().is_some_and(|rss| rss > threshold) {
            let _ = tokio::task::spawn_blocking(purge_freed_pages).await;
            metrics::counter!("tailsift_memory_purges_total").increment(1);
        }
    }
}

/// VmRSS of this process, from /proc (None elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(not(target_env = "msvc"))]
pub fn purge_freed_pages() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages.
    let name = c"arena.4096.purge";
    // SAFETY: a void mallctl: no old or new value is read or written.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

#[cfg(target_env = "msvc")]
pub fn purge_freed_pages() {}
