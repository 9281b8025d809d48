//! Magnitude pruning of a dense float weight before it is encoded: 2:4 (the 2 largest
//! of every 4 consecutive elements, row-major, survive) or unstructured (the smallest
//! fraction of the whole tensor by |x| is zeroed). Ties keep the earlier element.

use crate::codecs::quant::floats::{load_row, Compute};
use crate::dtype::Dtype;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prune {
    TwoFour,
    /// Fraction of elements to zero, in [0, 1].
    Unstructured(f32),
}

/// A pruned copy of a `dtype` tensor with rows of `cols` elements.
pub fn prune(bytes: &[u8], dtype: Dtype, how: Prune) -> Result<Vec<u8>, String> {
    let compute = Compute::of(dtype).ok_or_else(|| format!("cannot prune {dtype} weights"))?;
    let width = dtype.bits() / 8;
    let n = bytes.len() / width;
    let mut values = vec![0f32; n];
    load_row(compute, bytes, &mut values);
    let mut keep = vec![true; n];
    match how {
        Prune::TwoFour => {
            // Groups of 4 consecutive elements of the flattened tensor, as
            // compressed-tensors' 2:4 masks take them (`view(-1, 4)`).
            for (kg, vg) in keep.chunks_mut(4).zip(values.chunks(4)) {
                // Indices by |x| descending, earlier first on ties; keep the top two.
                let mut order: Vec<usize> = (0..vg.len()).collect();
                order.sort_by(|&a, &b| vg[b].abs().total_cmp(&vg[a].abs()).then(a.cmp(&b)));
                for &i in order.iter().skip(2) {
                    kg[i] = false;
                }
            }
        }
        Prune::Unstructured(frac) => {
            if !(0.0..=1.0).contains(&frac) {
                return Err(format!("sparsity {frac} is not a fraction in [0, 1]"));
            }
            let zeros = ((n as f64) * frac as f64).floor() as usize;
            let mut order: Vec<usize> = (0..n).collect();
            if zeros > 0 && zeros < n {
                order.select_nth_unstable_by(zeros - 1, |&a, &b| {
                    values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b))
                });
            }
            for &i in order.iter().take(zeros) {
                keep[i] = false;
            }
        }
    }
    let mut out = bytes.to_vec();
    for (chunk, &k) in out.chunks_exact_mut(width).zip(&keep) {
        if !k {
            chunk.fill(0);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn back(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn two_four_keeps_the_two_largest() {
        let v = [1.0, -5.0, 3.0, 0.5, 2.0, 2.0, 2.0, 2.0, 9.0];
        let out = back(&prune(&f32_bytes(&v), Dtype::F32, Prune::TwoFour).unwrap());
        assert_eq!(out, vec![0.0, -5.0, 3.0, 0.0, 2.0, 2.0, 0.0, 0.0, 9.0]);
    }

    #[test]
    fn unstructured_zeroes_the_smallest_fraction() {
        let v = [0.1, -4.0, 0.3, 2.0, -0.2, 5.0, 0.0, 1.0];
        let out = back(&prune(&f32_bytes(&v), Dtype::F32, Prune::Unstructured(0.5)).unwrap());
        assert_eq!(out, vec![0.0, -4.0, 0.0, 2.0, 0.0, 5.0, 0.0, 1.0]);
    }
}
