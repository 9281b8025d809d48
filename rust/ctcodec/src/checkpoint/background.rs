//! One thread writes the output file while the rayon pool encodes. Concurrent positioned
//! writes into one file serialize on the inode lock, and the waiting thread spins
//! instead of encoding; a single writer fed by a short queue keeps both cores busy and
//! bounds memory to a couple of tensors in flight.

use std::borrow::Cow;
use std::sync::mpsc::{sync_channel, SyncSender};

use crate::container::AtomicWriter;
use crate::error::{CodecError, Result};

/// Work to run on the writer thread once a batch is on disk (release input pages,
/// report progress).
pub type Done<'a> = Box<dyn FnOnce() + Send + 'a>;

/// Tensors to write, by output name, and what to do afterwards.
pub struct Batch<'a> {
    pub parts: Vec<(String, Cow<'a, [u8]>)>,
    pub done: Option<Done<'a>>,
}

/// The sending side handed to producers.
pub struct Queue<'q, 'a>(&'q SyncSender<Batch<'a>>);

impl<'a> Queue<'_, 'a> {
    pub fn send(&self, batch: Batch<'a>) -> Result<()> {
        self.0
            .send(batch)
            .map_err(|_| CodecError::Invalid("the output writer stopped".into()))
    }
}

/// Runs `produce` with a queue whose batches a dedicated thread writes through `writer`.
/// A write error wins over the producer's "writer stopped" error.
pub fn write_in_background<'a, R, F>(writer: &'a AtomicWriter, produce: F) -> Result<R>
where
    R: Send,
    F: FnOnce(&Queue<'_, 'a>) -> Result<R> + Send,
{
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Batch<'a>>(2);
        let consumer = scope.spawn(move || -> Result<()> {
            for batch in rx {
                for (name, bytes) in &batch.parts {
                    writer.write(name, bytes)?;
                }
                if let Some(done) = batch.done {
                    done();
                }
            }
            Ok(())
        });
        let produced = produce(&Queue(&tx));
        drop(tx);
        let written = match consumer.join() {
            Ok(w) => w,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        written?;
        produced
    })
}
