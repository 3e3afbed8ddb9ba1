//! Returning freed pages (`memory.rs`), in a process of its own: the unit
//! tests running alongside in the library's test binary allocate and free
//! on other threads, which moves RSS under the measurement.

use tailsift::memory::{purge_freed_pages, resident_bytes};

#[test]
fn resident_set_is_read_and_purging_frees_dirty_pages() {
    let rss = resident_bytes().expect("VmRSS in /proc/self/status");
    assert!(rss > 1024 * 1024, "{rss}");
    // 64 MiB of fetch-sized buffers, touched and freed, stay resident as
    // dirty pages until the decay; a purge returns them.
    let buffers: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 1 << 20]).collect();
    std::hint::black_box(&buffers);
    drop(buffers);
    let before = resident_bytes().expect("VmRSS");
    purge_freed_pages();
    let after = resident_bytes().expect("VmRSS");
    assert!(
        after + (32 << 20) < before,
        "before {before}, after {after}"
    );
}
