//! Row kernels for the bitmask format: one row of `cols` elements, each `W` bytes wide,
//! against its mask of `ceil(cols / 8)` bytes (bit `c % 8` of byte `c / 8`, LSB first).

/// Loads one little-endian element of `W` bytes as a u64.
#[inline(always)]
fn load<const W: usize>(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word[..W].copy_from_slice(&bytes[..W]);
    u64::from_le_bytes(word)
}

/// Number of elements of a dense row that are not zero under `zero_mask`.
pub fn count_nonzero<const W: usize>(row: &[u8], zero_mask: u64) -> usize {
    row.chunks_exact(W)
        .filter(|e| load::<W>(e) & zero_mask != 0)
        .count()
}

/// Packs one dense row: writes its mask bytes and its non-zeros in order, and returns
/// how many non-zeros the row has (values beyond the room in `values` are not written).
pub fn encode_row<const W: usize>(
    row: &[u8],
    zero_mask: u64,
    mask: &mut [u8],
    values: &mut [u8],
) -> usize {
    let mut written = 0usize;
    for (group, mask_byte) in row.chunks(8 * W).zip(mask.iter_mut()) {
        let mut bits = 0u8;
        for (j, elem) in group.chunks_exact(W).enumerate() {
            bits |= ((load::<W>(elem) & zero_mask != 0) as u8) << j;
        }
        *mask_byte = bits;
        let mut rest = bits;
        while rest != 0 {
            let j = rest.trailing_zeros() as usize;
            if let Some(slot) = values.get_mut(written * W..(written + 1) * W) {
                slot.copy_from_slice(&group[j * W..(j + 1) * W]);
            }
            written += 1;
            rest &= rest - 1;
        }
    }
    written
}

/// Bits of the last mask byte that stand for real columns; padding bits are ignored,
/// as numpy's `unpackbits(count=cols)` ignores them.
#[inline]
pub fn last_byte_mask(cols: usize) -> u8 {
    match cols % 8 {
        0 => 0xff,
        r => (1u8 << r) - 1,
    }
}

/// Number of set bits standing for real columns in one row's mask.
pub fn count_mask_bits(mask: &[u8], cols: usize) -> usize {
    let Some((last, body)) = mask.split_last() else {
        return 0;
    };
    let mut n = (last & last_byte_mask(cols)).count_ones() as usize;
    let mut words = body.chunks_exact(8);
    for w in &mut words {
        n += u64::from_le_bytes(w.try_into().expect("8 bytes")).count_ones() as usize;
    }
    n + words
        .remainder()
        .iter()
        .map(|b| b.count_ones() as usize)
        .sum::<usize>()
}

/// Scatters one row's values into `out` (already zeroed) at the columns its mask marks.
/// Returns how many values were consumed.
pub fn decode_row<const W: usize>(
    mask: &[u8],
    cols: usize,
    values: &[u8],
    out: &mut [u8],
) -> usize {
    let mut taken = 0usize;
    let full_words = (cols / 64).min(mask.len() / 8);
    for w in 0..full_words {
        let mut bits = u64::from_le_bytes(mask[w * 8..w * 8 + 8].try_into().expect("8 bytes"));
        let base = w * 64;
        while bits != 0 {
            let c = base + bits.trailing_zeros() as usize;
            out[c * W..(c + 1) * W].copy_from_slice(&values[taken * W..(taken + 1) * W]);
            taken += 1;
            bits &= bits - 1;
        }
    }
    for (b, &byte) in mask.iter().enumerate().skip(full_words * 8) {
        let mut bits = if b + 1 == mask.len() {
            byte & last_byte_mask(cols)
        } else {
            byte
        };
        while bits != 0 {
            let c = b * 8 + bits.trailing_zeros() as usize;
            out[c * W..(c + 1) * W].copy_from_slice(&values[taken * W..(taken + 1) * W]);
            taken += 1;
            bits &= bits - 1;
        }
    }
    taken
}

/// Scalar tail of a row's decode, from column `start` on (any column; padding bits of
/// the last mask byte ignored). Returns how many values were consumed.
pub fn decode_row_from<const W: usize>(
    mask: &[u8],
    start: usize,
    cols: usize,
    values: &[u8],
    out: &mut [u8],
) -> usize {
    let mut taken = 0usize;
    for c in start..cols {
        if mask[c / 8] >> (c % 8) & 1 == 1 {
            out[c * W..(c + 1) * W].copy_from_slice(&values[taken * W..(taken + 1) * W]);
            taken += 1;
        }
    }
    taken
}

/// Scalar tail of a row's encode, from column `start` on; ORs bits into `mask` (which
/// must be zero there). Returns how many values were written.
pub fn encode_row_from<const W: usize>(
    row: &[u8],
    start: usize,
    zero_mask: u64,
    mask: &mut [u8],
    values: &mut [u8],
) -> usize {
    let mut written = 0usize;
    for c in start..row.len() / W {
        let elem = &row[c * W..(c + 1) * W];
        if load::<W>(elem) & zero_mask != 0 {
            mask[c / 8] |= 1 << (c % 8);
            if let Some(slot) = values.get_mut(written * W..(written + 1) * W) {
                slot.copy_from_slice(elem);
            }
            written += 1;
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_little_endian_like_numpy() {
        // numpy.packbits([1,0,1,1,0,0,0,0,1,1], bitorder="little") == [13, 3]
        let row: Vec<u8> = [1u8, 0, 1, 1, 0, 0, 0, 0, 1, 1].to_vec();
        let mut mask = [0u8; 2];
        let mut values = [0u8; 5];
        assert_eq!(encode_row::<1>(&row, 0xff, &mut mask, &mut values), 5);
        assert_eq!(mask, [13, 3]);
        assert_eq!(values, [1, 1, 1, 1, 1]);
    }

    #[test]
    fn padding_bits_are_ignored() {
        let mask = [0xffu8, 0xff];
        assert_eq!(count_mask_bits(&mask, 10), 10);
        let values = [7u8; 10];
        let mut out = [0u8; 10];
        assert_eq!(decode_row::<1>(&mask, 10, &values, &mut out), 10);
    }

    #[test]
    fn negative_zero_is_zero_for_floats() {
        let row = [0x00u8, 0x80, 0x01, 0x00]; // bf16 -0.0 then a tiny positive
        assert_eq!(count_nonzero::<2>(&row, 0x7fff), 1);
    }
}
