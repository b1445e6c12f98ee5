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

    /// Trims when the last trim is [`TRIM_EVERY`] old; returns whether it did.
    pub fn maybe_trim(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + TRIM_EVERY;
        release_free_heap();
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_at_most_once_per_period() {
        let start = Instant::now();
        let mut trimmer = HeapTrimmer::new(start);
        assert!(!trimmer.maybe_trim(start));
        assert!(!trimmer.maybe_trim(start + TRIM_EVERY - Duration::from_millis(1)));
        assert!(trimmer.maybe_trim(start + TRIM_EVERY));
        assert!(!trimmer.maybe_trim(start + TRIM_EVERY + Duration::from_secs(1)));
        // A late call trims once and starts the next period from itself.
        let late = start + TRIM_EVERY * 5;
        assert!(trimmer.maybe_trim(late));
        assert!(!trimmer.maybe_trim(late + TRIM_EVERY - Duration::from_millis(1)));
        assert!(trimmer.maybe_trim(late + TRIM_EVERY));
    }
}
