//! Unsigned bit fields packed LSB-first across little-endian bytes (the same bit order
//! as compressed-tensors' int32 code packing).

/// Reads `width` (≤ 32) bits starting at bit `pos` of `bytes`; bits past the end read 0.
#[inline(always)]
pub fn get(bytes: &[u8], pos: usize, width: u32) -> u32 {
    let at = pos / 8;
    let mut window = [0u8; 8];
    let have = bytes.len().saturating_sub(at).min(8);
    window[..have].copy_from_slice(&bytes[at..at + have]);
    let v = u64::from_le_bytes(window) >> (pos % 8);
    (v & ((1u64 << width) - 1)) as u32
}

/// ORs `value` (which must fit in `width` bits) into the field at bit `pos`.
#[inline(always)]
pub fn put(bytes: &mut [u8], pos: usize, width: u32, value: u32) {
    debug_assert!(width == 32 || value < (1u32 << width));
    let mut v = (value as u64) << (pos % 8);
    let mut at = pos / 8;
    while v != 0 {
        bytes[at] |= v as u8;
        v >>= 8;
        at += 1;
    }
}
