//! Handing freed heap back to the system.

use std::time::{Duration, Instant};

/// How often at most: a trim walks the allocator's free lists, cheap but not free.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc keeps memory freed in the middle of the heap (watch list pages, replaced snapshots and
/// caches) resident until told otherwise, so RSS would follow the peak rather than what is live.
pub struct HeapTrimmer {
    next: Instant,
}

impl HeapTrimmer {
    pub fn new(now: Instant) -> Self {
        Self {
            next: now + TRIM_EVERY,
        }
    }

    /// Trims when the last trim is [`TRIM_EVERY`] old.
    pub fn maybe_trim(&mut self, now: Instant) {
        if now < self.next {
            return;
        }
        self.next = now + TRIM_EVERY;
        release_free_heap();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_heap() {
    // SAFETY: malloc_trim takes no pointers; it only returns the allocator's own free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}
