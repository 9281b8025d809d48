//! Bit packing of quantized codes: compressed-tensors' int32 words (LSB first, along a
//! row) in the dense layout of 0.18+ or the word-aligned layout of 0.17 and earlier,
//! and fp4 nibble pairs in bytes.

/// Bytes per packed row of `cols` codes of `bits` bits.
pub fn packed_row_bytes(cols: usize, bits: u32, legacy: bool) -> usize {
    4 * packed_words(cols, bits, legacy)
}

/// int32 words per packed row: `ceil(cols * bits / 32)` dense, `ceil(cols / (32 / bits))`
/// in the older layout, where a code never straddles two words.
pub fn packed_words(cols: usize, bits: u32, legacy: bool) -> usize {
    if legacy {
        cols.div_ceil((32 / bits) as usize)
    } else {
        (cols * bits as usize).div_ceil(32)
    }
}

/// Packs unsigned codes (each below `2^bits`) into little-endian int32 words; the
/// tail is zero (it unpacks as the most negative value, as compressed-tensors pads).
/// Inlined so callers built for AVX2 get a vectorized copy.
#[inline(always)]
pub fn pack_codes(codes: &[u8], bits: u32, legacy: bool, out: &mut [u8]) {
    debug_assert_eq!(out.len(), packed_row_bytes(codes.len(), bits, legacy));
    match bits {
        8 => {
            out[..codes.len()].copy_from_slice(codes);
            out[codes.len()..].fill(0);
        }
        4 => {
            let n = pack_pairs(codes, out);
            out[n..].fill(0);
        }
        _ if legacy => {
            let per = (32 / bits) as usize;
            for (w, chunk) in out.chunks_exact_mut(4).zip(codes.chunks(per)) {
                let mut word = 0u32;
                for (k, &c) in chunk.iter().enumerate() {
                    word |= (c as u32) << (k as u32 * bits);
                }
                w.copy_from_slice(&word.to_le_bytes());
            }
        }
        _ => {
            let mut acc = 0u64;
            let mut have = 0u32;
            let mut words = out.chunks_exact_mut(4);
            for &c in codes {
                acc |= (c as u64) << have;
                have += bits;
                if have >= 32 {
                    words
                        .next()
                        .expect("sized")
                        .copy_from_slice(&(acc as u32).to_le_bytes());
                    acc >>= 32;
                    have -= 32;
                }
            }
            if have > 0 {
                words
                    .next()
                    .expect("sized")
                    .copy_from_slice(&(acc as u32).to_le_bytes());
            }
            for w in words {
                w.fill(0);
            }
        }
    }
}

/// Reads `out.len()` codes back from packed words.
pub fn unpack_codes(packed: &[u8], bits: u32, legacy: bool, out: &mut [u8]) {
    debug_assert!(packed.len() >= packed_row_bytes(out.len(), bits, legacy));
    let mask = ((1u32 << bits) - 1) as u8;
    match bits {
        8 => out.copy_from_slice(&packed[..out.len()]),
        4 => unpack_nibbles(packed, out),
        _ if legacy => {
            let per = (32 / bits) as usize;
            for (j, o) in out.iter_mut().enumerate() {
                let w = j / per;
                let word = u32::from_le_bytes(packed[4 * w..4 * w + 4].try_into().expect("4"));
                *o = (word >> ((j % per) as u32 * bits)) as u8 & mask;
            }
        }
        _ => {
            // Whole blocks of 32 codes fill exactly `bits` words: copy one into a padded
            // buffer and read each code from an unaligned u64, with no bounds test per code.
            let b = bits as usize;
            let blocks = out.len() / 32;
            let mut buf = [0u8; 40];
            for (k, codes) in out.chunks_exact_mut(32).enumerate() {
                buf[..4 * b].copy_from_slice(&packed[4 * b * k..4 * b * (k + 1)]);
                for (j, o) in codes.iter_mut().enumerate() {
                    let bit = j * b;
                    let word = u64::from_le_bytes(buf[bit / 8..bit / 8 + 8].try_into().expect("8"));
                    *o = (word >> (bit % 8)) as u8 & mask;
                }
            }
            for (j, o) in out.iter_mut().enumerate().skip(32 * blocks) {
                let bit = j * b;
                let byte = bit / 8;
                // Up to 8 bits starting anywhere span at most 2 bytes.
                let lo = packed[byte] as u16;
                let hi = *packed.get(byte + 1).unwrap_or(&0) as u16;
                *o = (((hi << 8) | lo) >> (bit % 8)) as u8 & mask;
            }
        }
    }
}

/// Packs 4-bit codes two per byte, even column in the low nibble; returns the bytes
/// written. Read as little-endian u16 lanes, a pair is `lo | hi << 8`, and its byte is
/// `(lane | lane >> 4) & 0xff`: shifts and ors the compiler vectorizes.
#[inline(always)]
fn pack_pairs(codes: &[u8], out: &mut [u8]) -> usize {
    let pairs = codes.chunks_exact(2);
    let tail = pairs.remainder();
    let n = codes.len() / 2;
    for (o, p) in out[..n].iter_mut().zip(pairs) {
        let lane = u16::from_le_bytes([p[0] & 0xf, p[1] & 0xf]);
        *o = (lane | (lane >> 4)) as u8;
    }
    if let [last] = tail {
        out[n] = *last & 0xf;
        return n + 1;
    }
    n
}

/// Packs fp4 codes two per byte: even column in the low nibble.
#[inline(always)]
pub fn pack_nibbles(codes: &[u8], out: &mut [u8]) {
    pack_pairs(codes, out);
}

/// Reads 4-bit codes two per byte (low nibble first); an odd count ends on a low nibble.
#[inline(always)]
pub fn unpack_nibbles(packed: &[u8], out: &mut [u8]) {
    let pairs = out.len() / 2;
    for (p, o) in packed[..pairs].iter().zip(out.chunks_exact_mut(2)) {
        o[0] = p & 0xf;
        o[1] = p >> 4;
    }
    if out.len() % 2 == 1 {
        out[2 * pairs] = packed[pairs] & 0xf;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(codes: &[i32], bits: u32, legacy: bool) -> Vec<i32> {
        let off = 1 << (bits - 1);
        let c: Vec<u8> = codes.iter().map(|&v| (v + off) as u8).collect();
        let mut out = vec![0u8; packed_row_bytes(c.len(), bits, legacy)];
        pack_codes(&c, bits, legacy, &mut out);
        out.chunks_exact(4)
            .map(|w| i32::from_le_bytes(w.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn compressed_tensors_test_vectors() {
        // From compressed-tensors' own pack tests (0.14 test_pack_quant.py).
        assert_eq!(words(&[1, 2, 3, 4], 4, false), vec![52137]);
        assert_eq!(
            words(&[-8, -7, -6, -5, -4, -3, -2, -1], 4, false),
            vec![1985229328]
        );
        assert_eq!(words(&[1, 2, 3, 4], 8, false), vec![-2071756159]);
        assert_eq!(words(&[-128, -127, -126, -125], 8, false), vec![50462976]);
        assert_eq!(
            words(&[-8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4], 4, false),
            vec![1985229328, 52137]
        );
    }

    #[test]
    fn dense_three_bit_straddles_words() {
        // 11 codes of 3 bits: the 11th starts at bit 30 and spills into word 1.
        let codes = [7u8; 11];
        let mut out = vec![0u8; packed_row_bytes(11, 3, false)];
        pack_codes(&codes, 3, false, &mut out);
        assert_eq!(out.len(), 8);
        assert_eq!(u32::from_le_bytes(out[0..4].try_into().unwrap()), u32::MAX);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 1);
        let mut legacy = vec![0u8; packed_row_bytes(11, 3, true)];
        pack_codes(&codes, 3, true, &mut legacy);
        assert_eq!(
            u32::from_le_bytes(legacy[0..4].try_into().unwrap()),
            (1 << 30) - 1
        );
        assert_eq!(u32::from_le_bytes(legacy[4..8].try_into().unwrap()), 7);
    }

    #[test]
    fn round_trip_every_width() {
        for bits in 1..=8u32 {
            for legacy in [false, true] {
                for cols in [1usize, 7, 31, 32, 33, 100] {
                    let codes: Vec<u8> = (0..cols)
                        .map(|j| ((j * 37 + 5) % (1 << bits)) as u8)
                        .collect();
                    let mut packed = vec![0u8; packed_row_bytes(cols, bits, legacy)];
                    pack_codes(&codes, bits, legacy, &mut packed);
                    let mut back = vec![0u8; cols];
                    unpack_codes(&packed, bits, legacy, &mut back);
                    assert_eq!(back, codes, "bits {bits} legacy {legacy} cols {cols}");
                }
            }
        }
    }
}
