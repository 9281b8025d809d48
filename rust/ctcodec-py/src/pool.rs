//! Batch buffers handed to numpy without a copy and recycled when numpy lets go of them.
//! A consumer that streams through a checkpoint (use a tensor, drop it) then decodes
//! into memory that is already paged in, instead of paying the kernel to fault in and
//! zero fresh pages for every batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use numpy::ndarray::ArrayViewMut1;
use numpy::PyArray1;
use pyo3::prelude::*;

/// Idle buffers kept for reuse, and the largest one worth keeping.
const POOL_SLOTS: usize = 2;
const POOL_MAX_BYTES: usize = 128 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static HITS: AtomicUsize = AtomicUsize::new(0);
static MISSES: AtomicUsize = AtomicUsize::new(0);

/// (buffers reused, buffers freshly allocated) since the module loaded.
#[pyfunction]
pub fn pool_stats() -> (usize, usize) {
    (HITS.load(Ordering::Relaxed), MISSES.load(Ordering::Relaxed))
}

/// A zeroed buffer of `len` bytes, recycled when one of a fitting size is idle.
pub fn take(len: usize) -> Vec<u8> {
    let recycled = {
        // try_lock, never lock: a fork while another thread held the lock would leave
        // the child waiting forever; missing the pool only costs a fresh buffer.
        let Ok(mut pool) = POOL.try_lock() else {
            return fresh(len);
        };
        let fit = pool
            .iter()
            .position(|b| b.capacity() >= len && b.capacity() <= 2 * len.max(1 << 20));
        fit.map(|i| pool.swap_remove(i))
    };
    match recycled {
        Some(mut buf) => {
            HITS.fetch_add(1, Ordering::Relaxed);
            buf.clear();
            buf.resize(len, 0);
            buf
        }
        None => fresh(len),
    }
}

fn fresh(len: usize) -> Vec<u8> {
    MISSES.fetch_add(1, Ordering::Relaxed);
    // Round large buffers up so batches of slightly different sizes can share them; the
    // extra capacity is never touched, so it costs address space only.
    let mut buf = ctcodec::buffer::zeroed(round_up(len));
    buf.truncate(len);
    buf
}

fn round_up(len: usize) -> usize {
    const STEP: usize = 16 << 20;
    if len >= STEP {
        len.div_ceil(STEP) * STEP
    } else {
        len
    }
}

fn give_back(buf: Vec<u8>) {
    if buf.capacity() > POOL_MAX_BYTES || buf.capacity() == 0 {
        return;
    }
    let Ok(mut pool) = POOL.try_lock() else {
        return;
    };
    // Keep the most recently returned: they match the batches being read now.
    pool.push(buf);
    if pool.len() > POOL_SLOTS {
        pool.remove(0);
    }
}

/// Owns a batch buffer while numpy arrays view it; returns it to the pool on drop.
#[pyclass(frozen, module = "ctcodec._native")]
pub struct BatchBuffer {
    buf: Mutex<Vec<u8>>,
}

impl Drop for BatchBuffer {
    fn drop(&mut self) {
        let buf = std::mem::take(self.buf.get_mut().unwrap_or_else(|e| e.into_inner()));
        give_back(buf);
    }
}

/// A writable 1-D uint8 numpy array over `buf`, which lives until the array is gone.
pub fn into_numpy(py: Python<'_>, buf: Vec<u8>) -> PyResult<Bound<'_, PyArray1<u8>>> {
    let owner = Bound::new(
        py,
        BatchBuffer {
            buf: Mutex::new(buf),
        },
    )?;
    let mut guard = owner.get().buf.lock().unwrap_or_else(|e| e.into_inner());
    // A mutable view: numpy and torch write through this pointer.
    let view = ArrayViewMut1::from(&mut guard[..]);
    // SAFETY: `owner` becomes the array's base object, so the Vec outlives every view;
    // nothing touches or reallocates it until `owner` is dropped (then it goes back to
    // the pool, when no array refers to it any more).
    let array = unsafe { PyArray1::borrow_from_array(&view, owner.clone().into_any()) };
    drop(guard);
    Ok(array)
}
