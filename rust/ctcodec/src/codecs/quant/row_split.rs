//! Row-parallel loops over a weight: chunks of rows on all cores when the tensor is
//! large (`split`), in order on this thread otherwise.

use rayon::prelude::*;

/// Rows per parallel task: enough work to amortise scheduling.
fn chunk_rows(row_bytes: usize) -> usize {
    (256 * 1024 / row_bytes.max(1)).max(1)
}

/// Calls `f(first_row, rows_out)` over chunks of `out`, `row_bytes` per row.
pub fn each_row_chunk<F>(split: bool, out: &mut [u8], row_bytes: usize, f: F)
where
    F: Fn(usize, &mut [u8]) + Sync,
{
    if row_bytes == 0 {
        return;
    }
    let rows = chunk_rows(row_bytes);
    let step = rows * row_bytes;
    if split && crate::parallel::enabled() {
        out.par_chunks_mut(step)
            .enumerate()
            .for_each(|(i, c)| f(i * rows, c));
    } else {
        out.chunks_mut(step)
            .enumerate()
            .for_each(|(i, c)| f(i * rows, c));
    }
}

/// `f(row)` for every row, results in row order.
pub fn map_rows<T, F>(split: bool, rows: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync + Send,
{
    if split && crate::parallel::enabled() {
        (0..rows).into_par_iter().with_min_len(16).map(&f).collect()
    } else {
        (0..rows).map(f).collect()
    }
}
