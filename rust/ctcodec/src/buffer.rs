//! Output buffers for decoded tensors. Fresh anonymous memory costs one page fault per
//! 4 KiB on first write, which on virtual machines can cost more than the decoding
//! itself; for large buffers we ask the kernel for huge pages (a hint: on kernels
//! without them nothing changes). The faults then happen in the decoding threads, so
//! the kernel's page zeroing is spread over the cores too.

/// Buffers smaller than this are left to the allocator as they are.
const POPULATE_FROM: usize = 2 << 20;

/// A zero-filled buffer of `len` bytes, on huge pages when large.
pub fn zeroed(len: usize) -> Vec<u8> {
    let buf = vec![0u8; len];
    if len >= POPULATE_FROM {
        prefault(&buf);
    }
    buf
}

#[cfg(target_os = "linux")]
fn prefault(buf: &[u8]) {
    let page = 4096usize;
    let start = (buf.as_ptr() as usize).div_ceil(page) * page;
    let end = (buf.as_ptr() as usize + buf.len()) / page * page;
    if end <= start {
        return;
    }
    // SAFETY: the range lies inside `buf`, which we own; both advices only change how
    // the kernel backs these pages (the zeroed contents stay as they are).
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}

#[cfg(not(target_os = "linux"))]
fn prefault(_buf: &[u8]) {}
