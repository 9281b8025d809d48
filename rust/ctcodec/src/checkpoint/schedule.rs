//! How the tensors of a file are spread over cores with bounded memory: runs of small
//! tensors go in parallel, one tensor per core with no parallelism inside; a large
//! tensor is split over rows on all cores on its own. Nesting the two would let rayon
//! start new tensors while waiting on rows, holding any number of outputs at once.

use rayon::prelude::*;

use crate::error::Result;

/// A tensor at least this large (dense bytes) is worth splitting over rows.
pub const LARGE_TENSOR: usize = 8 << 20;

/// Calls `work(i, split_rows)` for every index, in order of results, keeping at most one
/// large tensor or one small tensor per core in flight.
pub fn for_each_tensor<T, F>(sizes: &[usize], work: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, bool) -> Result<T> + Sync,
{
    let mut out = Vec::with_capacity(sizes.len());
    let mut i = 0;
    while i < sizes.len() {
        if sizes[i] >= LARGE_TENSOR {
            out.push(work(i, true)?);
            i += 1;
            continue;
        }
        let end = (i..sizes.len())
            .find(|&k| sizes[k] >= LARGE_TENSOR)
            .unwrap_or(sizes.len());
        let run: Vec<T> = (i..end)
            .into_par_iter()
            .map(|k| work(k, false))
            .collect::<Result<_>>()?;
        out.extend(run);
        i = end;
    }
    Ok(out)
}
