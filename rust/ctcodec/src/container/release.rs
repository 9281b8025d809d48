//! Which byte ranges of a mapped file are finished with, so their pages can leave the
//! resident set. Finished ranges are merged with their neighbours, because a file is
//! used in an order unrelated to its layout (a compressed file keeps every module's
//! small parts in separate regions) and tiny ranges only free pages once merged. Pages
//! are dropped in runs: each drop costs a TLB flush on every core.

use std::collections::{BTreeMap, BTreeSet};

/// Bytes of newly finished data to collect before dropping pages.
pub const RELEASE_RUN: usize = 64 << 20;

#[derive(Default)]
pub struct UsedRanges {
    /// Finished, merged intervals: start -> end.
    done: BTreeMap<usize, usize>,
    /// Starts of intervals that grew since the last drop.
    changed: BTreeSet<usize>,
    pending: usize,
}

impl UsedRanges {
    /// Records [start, end) as finished. Returns the intervals whose pages to drop now,
    /// once at least `min` bytes have finished since the last drop.
    pub fn add(&mut self, start: usize, end: usize, min: usize) -> Vec<(usize, usize)> {
        if end <= start {
            return Vec::new();
        }
        let (mut lo, mut hi) = (start, end);
        // Merge with an interval that ends at or after `lo` and starts before `lo`...
        if let Some((&s, &e)) = self.done.range(..=lo).next_back() {
            if e >= lo {
                lo = s;
                hi = hi.max(e);
                self.done.remove(&s);
                self.changed.remove(&s);
            }
        }
        // ...and with every interval starting inside the new one.
        while let Some((&s, &e)) = self.done.range(lo..=hi).next() {
            hi = hi.max(e);
            self.done.remove(&s);
            self.changed.remove(&s);
        }
        self.done.insert(lo, hi);
        self.changed.insert(lo);
        self.pending += end - start;
        if self.pending < min {
            return Vec::new();
        }
        self.pending = 0;
        let starts = std::mem::take(&mut self.changed);
        starts.into_iter().map(|s| (s, self.done[&s])).collect()
    }
}

/// Drops the whole pages inside `[addr, addr + len)` of a shared or read-only file
/// mapping from this process; a page shared with unfinished bytes stays.
///
/// # Safety
/// The range must lie inside a live file mapping whose contents in that range are final
/// (the data stays in the page cache; a later access maps it again).
pub unsafe fn drop_pages(addr: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = addr.div_ceil(PAGE) * PAGE;
    let end = (addr + len) / PAGE * PAGE;
    if end > start {
        // SAFETY: upheld by the caller.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::UsedRanges;

    #[test]
    fn merges_out_of_order_ranges_and_drops_in_runs() {
        let mut used = UsedRanges::default();
        assert!(used.add(10, 20, 25).is_empty());
        assert!(used.add(30, 40, 25).is_empty()); // 20 bytes pending
        assert_eq!(used.add(20, 30, 25), vec![(10, 40)]); // bridges the two
        assert!(used.add(0, 5, 25).is_empty());
        assert!(used.add(100, 110, 25).is_empty());
        assert_eq!(used.add(5, 10, 20), vec![(0, 40), (100, 110)]); // 20 bytes since the last drop
        assert!(used.add(3, 4, 0).iter().all(|&(s, e)| s == 0 && e == 40)); // inside: no growth
    }
}
