//! An output file mapped into memory, split into one mutable slice per tensor, so
//! tensors are encoded straight into the file from many threads with no copy and no
//! write lock. Written pages are dropped from the resident set in long runs (they stay
//! in the page cache as dirty file pages and reach the disk as usual).

use std::collections::HashMap;
use std::sync::Mutex;

use memmap2::MmapMut;

use super::release::{drop_pages, UsedRanges, RELEASE_RUN};

pub struct MappedOutput {
    map: MmapMut,
    header_len: usize,
    slots: Vec<(String, usize, usize)>,
    released: Releaser,
}

/// Collects finished ranges of the map and drops their pages in runs.
pub struct Releaser {
    base: usize,
    used: Mutex<UsedRanges>,
}

impl MappedOutput {
    /// `slots`: (name, offset from the data start, byte length) of every tensor; the data
    /// starts after `header_len` bytes.
    pub(crate) fn new(
        map: MmapMut,
        header_len: usize,
        mut slots: Vec<(String, usize, usize)>,
    ) -> Self {
        slots.sort_by_key(|s| (s.1, s.2)); // an empty tensor sorts before one at its offset
        MappedOutput {
            map,
            header_len,
            slots,
            released: Releaser {
                base: 0,
                used: Mutex::new(UsedRanges::default()),
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
        released.base = map.as_ptr() as usize;
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

    /// Unmaps (which drops whatever is still resident); the file keeps every byte.
    pub fn finish(self) {}
}

impl Releaser {
    /// Marks a slice as written for good.
    pub fn done(&self, slot: &[u8]) {
        let start = slot.as_ptr() as usize - self.base;
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        for (from, to) in used.add(start, start + slot.len(), RELEASE_RUN) {
            // SAFETY: finished slots of our live shared mapping (see `drop_pages`).
            unsafe { drop_pages(self.base + from, to - from) };
        }
    }
}
