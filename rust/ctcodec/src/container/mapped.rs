//! An output file mapped into memory, split into one mutable slice per tensor, so
//! tensors are encoded straight into the file from many threads with no copy and no
//! write lock. Written pages are dropped from the resident set in long runs (they stay
//! in the page cache as dirty file pages and reach the disk as usual).

use std::collections::HashMap;
use std::sync::Mutex;

use memmap2::MmapMut;

use super::writer::Layout;

/// Bytes of finished output to collect before dropping their pages (each drop costs a
/// TLB flush on every core).
const RELEASE_RUN: usize = 64 << 20;

pub struct MappedOutput {
    map: MmapMut,
    header_len: usize,
    slots: Vec<(String, usize, usize)>,
    released: Releaser,
}

/// Collects finished ranges of the map and drops their pages in runs.
pub struct Releaser {
    pending: Mutex<(Vec<(usize, usize)>, usize)>,
}

impl MappedOutput {
    pub(crate) fn new(map: MmapMut, layout: &Layout) -> Self {
        let mut slots: Vec<(String, usize, usize)> = layout
            .slots()
            .map(|(name, off, len)| (name.to_string(), off, len))
            .collect();
        slots.sort_by_key(|s| (s.1, s.2)); // an empty tensor sorts before one at its offset
        MappedOutput {
            map,
            header_len: layout.header_len(),
            slots,
            released: Releaser {
                pending: Mutex::new((Vec::new(), 0)),
            },
        }
    }

    /// The tensors' slices by name (disjoint, cut in offset order with `split_at_mut`),
    /// and the releaser for finished ones. The bytes start zeroed (fresh file).
    pub fn split(&mut self) -> (HashMap<String, &mut [u8]>, &Releaser) {
        let MappedOutput {
            map,
            header_len,
            slots,
            released,
        } = self;
        let mut rest: &mut [u8] = &mut map[*header_len..];
        let mut at = 0;
        let mut out = HashMap::with_capacity(slots.len());
        for (name, off, len) in slots.iter() {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(off - at);
            let (slot, tail) = tail.split_at_mut(*len);
            out.insert(name.clone(), slot);
            rest = tail;
            at = off + len;
        }
        (out, released)
    }

    /// Drops what is still resident and unmaps; the file keeps every byte.
    pub fn finish(self) {
        self.released.flush();
    }
}

impl Releaser {
    /// Marks a slice as written for good.
    pub fn done(&self, slot: &[u8]) {
        if slot.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.0.push((slot.as_ptr() as usize, slot.len()));
        pending.1 += slot.len();
        if pending.1 >= RELEASE_RUN {
            drop_ranges(&std::mem::take(&mut pending.0));
            pending.1 = 0;
        }
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        drop_ranges(&std::mem::take(&mut pending.0));
        pending.1 = 0;
    }
}

fn drop_ranges(ranges: &[(usize, usize)]) {
    const PAGE: usize = 4096;
    for &(addr, len) in ranges {
        // Only whole pages inside the range: a page shared with a neighbour that is
        // still being written stays.
        let start = addr.div_ceil(PAGE) * PAGE;
        let end = (addr + len) / PAGE * PAGE;
        if end > start {
            // SAFETY: the range lies inside a live shared file mapping whose contents are
            // final; dropping pages of a shared mapping keeps the data in the page cache,
            // and a later access would simply map it again.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}
