//! Running an encoder's engine instances: one backend thread per replica takes passes from
//! the model's queue, runs them on the compute pool and answers each input's reply channel
//! (TEI's shape). A pass that fails or panics fails its own inputs with a [`RunError`] and
//! the thread goes on.

use super::backend::{Backend, Batch};
use super::error::{EngineError, RunError};
use super::pooling::{self, PoolingMode};
use super::queue::{Entry, Queue};
use super::threads;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What the backend thread does with each batch.
#[derive(Clone)]
pub(super) enum Mode {
    /// Pool the last hidden states into one vector per input.
    Embed { pooling: Vec<PoolingMode> },
    /// Classification logits, one row per input.
    Predict,
}

/// One tiny forward pass on every session of every replica (its own, and the all-threads
/// one if it has it), so the first request does not pay for it and a broken model fails
/// at load time.
pub(super) fn warm_up(
    backends: &mut [Box<dyn Backend>],
    mode: &Mode,
    pad_id: u32,
) -> Result<(), RunError> {
    let warm = Batch::pad(&[(&[1, 2], &[0, 0])], pad_id);
    for backend in backends {
        for wide in [false, true] {
            if wide && !backend.can_run_wide() {
                continue;
            }
            backend.set_wide(wide);
            threads::compute_pool().install(|| match mode {
                Mode::Embed { .. } => backend.embed(&warm).map(|_| ()),
                Mode::Predict => backend.predict(&warm).map(|_| ()),
            })?;
        }
        backend.set_wide(false);
    }
    Ok(())
}

/// Starts one thread per backend (`backend-{name}-{i}`), each serving replica `i` of
/// `queue` until the queue shuts down.
pub(super) fn spawn_backend_threads(
    backends: Vec<Box<dyn Backend>>,
    queue: &Queue,
    mode: &Mode,
    pad_id: u32,
    name: &str,
) -> std::io::Result<()> {
    for (i, backend) in backends.into_iter().enumerate() {
        let thread_mode = mode.clone();
        let backend_queue = queue.clone();
        // Dropped after `backend`: the model's drop waits for it (see `Queue::server`).
        let server = queue.server();
        std::thread::Builder::new()
            .name(format!("backend-{name}-{i}"))
            .spawn(move || {
                backend_thread(backend, i, &backend_queue, &thread_mode, pad_id);
                drop(server);
            })?;
    }
    Ok(())
}

fn backend_thread(
    mut backend: Box<dyn Backend>,
    replica: usize,
    queue: &Queue,
    mode: &Mode,
    pad_id: u32,
) {
    while let Some(pass) = queue.next_batch(replica) {
        backend.set_wide(pass.wide);
        run_pass(backend.as_mut(), pass.entries, mode, pad_id);
    }
}

fn run_pass(backend: &mut dyn Backend, entries: Vec<Entry>, mode: &Mode, pad_id: u32) {
    let rows: Vec<(&[u32], &[u32])> = entries
        .iter()
        .map(|e| (e.ids.as_slice(), e.type_ids.as_slice()))
        .collect();
    let batch = Batch::pad(&rows, pad_id);
    let result = catch_unwind(AssertUnwindSafe(|| forward(backend, &batch, mode)))
        .unwrap_or(Err(RunError::Panicked))
        .and_then(|outputs| {
            if outputs.len() == entries.len() {
                Ok(outputs)
            } else {
                Err(RunError::RowCount {
                    rows: outputs.len(),
                    inputs: entries.len(),
                })
            }
        });
    match result {
        Ok(outputs) => {
            for (e, out) in entries.into_iter().zip(outputs) {
                let _ = e.reply.send(Ok(out));
            }
        }
        Err(err) => {
            if !matches!(err, RunError::RowCount { .. }) {
                tracing::error!(error = %err, "forward pass failed");
            }
            for e in entries {
                let _ = e.reply.send(Err(EngineError::Backend(err.clone())));
            }
        }
    }
}

/// One pass of `batch` on the compute pool: one output row per input.
fn forward(
    backend: &mut dyn Backend,
    batch: &Batch,
    mode: &Mode,
) -> Result<Vec<Vec<f32>>, RunError> {
    threads::compute_pool().install(|| match mode {
        Mode::Embed { pooling } => backend.embed(batch).map(|hidden| {
            (0..batch.size())
                .map(|i| {
                    pooling::pool(
                        hidden.row(i, batch.max_len),
                        batch.lengths[i],
                        hidden.dim,
                        pooling,
                    )
                })
                .collect()
        }),
        Mode::Predict => backend.predict(batch),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backend::HiddenStates;
    use crate::engine::queue::EntryResult;
    use tokio::sync::oneshot;

    /// A backend that fails, panics or returns too few rows, by the first token id.
    struct Faulty;

    impl Backend for Faulty {
        fn name(&self) -> &'static str {
            "faulty"
        }
        fn embed(&mut self, _batch: &Batch) -> Result<HiddenStates, RunError> {
            Err(RunError::ScalarOutput)
        }
        fn predict(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>, RunError> {
            match batch.input_ids[0] {
                1 => Err(RunError::Candle("shape mismatch".into())),
                2 => panic!("boom"),
                _ => Ok(vec![vec![0.0]]),
            }
        }
    }

    fn entry(id: u32) -> (Entry, oneshot::Receiver<EntryResult>) {
        let (reply, rx) = oneshot::channel();
        let e = Entry {
            ids: vec![id],
            type_ids: vec![0],
            reply,
        };
        (e, rx)
    }

    /// Each failure reaches every input of its pass as a typed `EngineError::Backend`.
    #[test]
    fn failed_passes_answer_every_input_with_the_typed_reason() {
        for (id, want) in [
            (1, RunError::Candle("shape mismatch".into())),
            (2, RunError::Panicked),
            (3, RunError::RowCount { rows: 1, inputs: 2 }),
        ] {
            let (a, mut ra) = entry(id);
            let (b, mut rb) = entry(id);
            run_pass(&mut Faulty, vec![a, b], &Mode::Predict, 0);
            for rx in [&mut ra, &mut rb] {
                assert_eq!(
                    rx.try_recv().unwrap(),
                    Err(EngineError::Backend(want.clone()))
                );
            }
        }
        let (a, mut ra) = entry(1);
        let pooling = vec![PoolingMode::Mean];
        run_pass(&mut Faulty, vec![a], &Mode::Embed { pooling }, 0);
        assert_eq!(
            ra.try_recv().unwrap().unwrap_err().to_string(),
            "inference failed: scalar output"
        );
    }
}
