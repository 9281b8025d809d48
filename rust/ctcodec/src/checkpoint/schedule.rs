//! How the tensors of a file are spread over cores with bounded memory: runs of small
//! tensors go in parallel, one tensor per core with no parallelism inside; a large
//! tensor is split over rows on all cores on its own. Nesting the two would let rayon
//! start new tensors while waiting on rows, holding any number of outputs at once.

use rayon::prelude::*;

use crate::error::Result;

/// A tensor at least this large (dense bytes) is worth splitting over rows.
pub const LARGE_TENSOR: usize = 8 << 20;

/// Calls `work(i, split_rows)` for every index, results in index order, keeping at most
/// one large tensor or one small tensor per core in flight.
pub fn for_each_tensor<T, F>(sizes: &[usize], work: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, bool) -> Result<T> + Sync,
{
    for_each_job((0..sizes.len()).collect(), |&i| sizes[i], work)
}

/// The same schedule over owned jobs (e.g. each carrying its own output slice).
pub fn for_each_job<J, T, S, F>(jobs: Vec<J>, size: S, work: F) -> Result<Vec<T>>
where
    J: Send,
    T: Send,
    S: Fn(&J) -> usize,
    F: Fn(J, bool) -> Result<T> + Sync,
{
    let mut out = Vec::with_capacity(jobs.len());
    let mut run: Vec<J> = Vec::new();
    let flush = |run: &mut Vec<J>, out: &mut Vec<T>| -> Result<()> {
        let jobs = std::mem::take(run);
        let done: Vec<T> = if crate::parallel::enabled() {
            jobs.into_par_iter()
                .map(|j| work(j, false))
                .collect::<Result<_>>()?
        } else {
            jobs.into_iter()
                .map(|j| work(j, false))
                .collect::<Result<_>>()?
        };
        out.extend(done);
        Ok(())
    };
    for job in jobs {
        if size(&job) >= LARGE_TENSOR {
            flush(&mut run, &mut out)?;
            out.push(work(job, true)?);
        } else {
            run.push(job);
        }
    }
    flush(&mut run, &mut out)?;
    Ok(out)
}
