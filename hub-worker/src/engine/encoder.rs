//! The encoder family: a loaded encoder model and its inference API (embed, compare,
//! classify). Per model: tokenizer threads, a batching queue and one backend thread per
//! replica ([`super::run`]), behind a semaphore that refuses work with
//! [`EngineError::Overloaded`] instead of queueing without bound. Loading is in
//! [`super::load`].

use super::error::EngineError;
use super::model::{ModelInfo, ModelStats};
use super::options::{ClassifyOptions, EmbedOptions};
use super::pooling;
use super::queue::{Admitted, Arriving, Entry, EntryResult, Queue};
use super::spec::ScoreFn;
use super::task::Task;
use super::tokenize::{Encoded, TextInput, TokenizerPool};
use std::sync::{Arc, RwLock, Weak};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Most inputs one request may carry.
pub const MAX_INPUTS_PER_REQUEST: usize = 256;

/// A request admitted: its input permits, and its place in the queue's count of
/// requests in flight (the fill wait's signal, `queue::fill_wait`).
struct Admission {
    _permit: OwnedSemaphorePermit,
    _in_flight: Admitted,
    /// Until its inputs are handed to the queue.
    arriving: Option<Arriving>,
}

/// Batching counters of an encoder's current queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchStats {
    /// Forward passes handed to the backend.
    pub passes: u64,
    /// Inputs in those passes.
    pub inputs: u64,
    /// Windows that waited for the inputs of concurrent clients.
    pub fill_waits: u64,
}

/// Embeddings of a request, in input order, with the tokens they cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

/// One label and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// Classification results: per input, labels sorted by descending score.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifications {
    pub labels: Vec<Vec<LabelScore>>,
    pub prompt_tokens: usize,
}

/// A loaded encoder. Cheap to clone; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct EncoderModel {
    inner: Arc<Inner>,
}

struct Inner {
    /// What it serves; the engine and replica count change once, on a switch.
    info: RwLock<ModelInfo>,
    tokenizers: TokenizerPool,
    /// The queue whose backend threads serve new requests (replaced on a switch).
    queue: RwLock<Queue>,
    admission: Arc<Semaphore>,
    max_concurrent: usize,
    /// Dropped with the model, after its backend threads stopped (`keep_alive`: the
    /// cache pin on its files).
    kept: std::sync::Mutex<Vec<Box<dyn Send + Sync>>>,
}

/// Longest an unload waits for its backend threads to free their engines.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Inner {
    /// Stops the backend threads and waits (at most [`STOP_WAIT`]: one pass in flight)
    /// until they have freed their engines, so an unload's memory is free again when it
    /// returns (the next load's memory check counts on it), and no engine (OpenVINO,
    /// ONNX Runtime: C++ libraries with process-wide state that `exit` tears down) is
    /// still being freed on a detached thread when the process exits.
    fn drop(&mut self) {
        let queue = self.queue.read().unwrap_or_else(|e| e.into_inner());
        queue.shutdown();
        if !queue.wait_for_servers(STOP_WAIT) {
            tracing::warn!(
                wait_ms = STOP_WAIT.as_millis() as u64,
                "backend threads still running after unload"
            );
        }
    }
}

/// A handle on a model that does not keep it loaded: a background engine switch holds
/// one, so a model unloaded while its next engine compiles is simply dropped.
#[derive(Clone)]
pub(super) struct WeakEncoder(Weak<Inner>);

impl WeakEncoder {
    pub(super) fn upgrade(&self) -> Option<EncoderModel> {
        self.0.upgrade().map(|inner| EncoderModel { inner })
    }
}

impl EncoderModel {
    /// A model serving `info` from its started tokenizer pool and queue (whose backend
    /// threads run), admitting at most `max_concurrent` inputs at once.
    pub(super) fn new(
        info: ModelInfo,
        tokenizers: TokenizerPool,
        queue: Queue,
        max_concurrent: usize,
    ) -> EncoderModel {
        let max_concurrent = max_concurrent.max(1);
        EncoderModel {
            inner: Arc::new(Inner {
                info: RwLock::new(info),
                tokenizers,
                queue: RwLock::new(queue),
                admission: Arc::new(Semaphore::new(max_concurrent)),
                max_concurrent,
                kept: Default::default(),
            }),
        }
    }

    /// Keeps `item` until the last clone of this model is dropped and its backend threads
    /// have stopped.
    pub fn keep_alive(&self, item: Box<dyn Send + Sync>) {
        self.inner
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
    }

    /// What this model serves (now: the engine changes once after a fast start).
    pub fn info(&self) -> ModelInfo {
        self.inner.info.read().expect("info lock").clone()
    }

    pub(super) fn downgrade(&self) -> WeakEncoder {
        WeakEncoder(Arc::downgrade(&self.inner))
    }

    /// Moves new requests to `queue` (whose backend threads already run `engine` with
    /// `replicas` instances). Requests already queued on the old queue are still handed
    /// to its backend, which stops once it has answered them: no request is dropped or
    /// answered twice.
    pub(super) fn switch(&self, queue: Queue, engine: &'static str, replicas: usize) {
        let old = std::mem::replace(&mut *self.inner.queue.write().expect("queue lock"), queue);
        old.drain();
        let mut info = self.inner.info.write().expect("info lock");
        info.engine = engine;
        info.replicas = replicas;
    }

    /// Current load.
    pub fn stats(&self) -> ModelStats {
        let available = self.inner.admission.available_permits();
        ModelStats {
            in_flight: self.inner.max_concurrent.saturating_sub(available) as u32,
            queue_depth: self
                .inner
                .queue
                .read()
                .expect("queue lock")
                .stats()
                .depth
                .load(std::sync::atomic::Ordering::Relaxed) as u32,
        }
    }

    /// Batching counters of the queue serving new requests (they restart on an engine
    /// switch).
    pub fn batch_stats(&self) -> BatchStats {
        let queue = self.inner.queue.read().expect("queue lock");
        let s = queue.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        BatchStats {
            passes: load(&s.batches),
            inputs: load(&s.inputs),
            fill_waits: load(&s.fill_waits),
        }
    }

    /// Most inputs one request may carry on this model.
    pub fn max_inputs(&self) -> usize {
        MAX_INPUTS_PER_REQUEST.min(self.inner.max_concurrent)
    }

    fn admit(&self, count: usize) -> Result<Admission, EngineError> {
        if count == 0 {
            return Err(EngineError::EmptyInput);
        }
        if count > self.max_inputs() {
            return Err(EngineError::TooManyInputs {
                count,
                max: self.max_inputs(),
            });
        }
        self.permits(count)
    }

    /// `count` admission permits now, or `Overloaded`; the request counts as in flight
    /// from here on.
    fn permits(&self, count: usize) -> Result<Admission, EngineError> {
        let permit = self
            .inner
            .admission
            .clone()
            .try_acquire_many_owned(count as u32)
            .map_err(|_| EngineError::Overloaded {
                in_flight: self.stats().in_flight as usize,
                limit: self.inner.max_concurrent,
            })?;
        let (in_flight, arriving) = self
            .inner
            .queue
            .read()
            .expect("queue lock")
            .demand()
            .admit();
        Ok(Admission {
            _permit: permit,
            _in_flight: in_flight,
            arriving: Some(arriving),
        })
    }

    fn require_embedding(&self, requested: &'static str) -> Result<(), EngineError> {
        if self
            .inner
            .info
            .read()
            .expect("info lock")
            .task
            .is_embedding()
        {
            Ok(())
        } else {
            Err(EngineError::WrongTask {
                served: self.info().task.as_str(),
                requested,
            })
        }
    }

    /// Tokenizes, queues and waits for the backend. Inputs are queued shortest first so a
    /// large request batches like sentence-transformers' length-sorted `encode`.
    async fn run(
        &self,
        admission: &mut Admission,
        encoded: Vec<Encoded>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let n = encoded.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| encoded[i].ids.len());
        let mut slots: Vec<Option<Encoded>> = encoded.into_iter().map(Some).collect();
        let mut receivers: Vec<Option<oneshot::Receiver<EntryResult>>> =
            (0..n).map(|_| None).collect();
        let mut entries = Vec::with_capacity(n);
        for i in order {
            let enc = slots[i].take().expect("each index once");
            let (reply, rx) = oneshot::channel();
            receivers[i] = Some(rx);
            entries.push(Entry {
                ids: enc.ids,
                type_ids: enc.type_ids,
                reply,
            });
        }
        // Under the read lock: a switch (write lock) then drains the old queue only after
        // this append reached it.
        {
            let queue = self.inner.queue.read().expect("queue lock");
            match admission.arriving.take() {
                Some(arriving) => queue.append_admitted(entries, arriving)?,
                None => queue.append(entries)?,
            }
        }
        let mut out = Vec::with_capacity(n);
        for rx in receivers.into_iter().flatten() {
            out.push(rx.await.map_err(|_| EngineError::Unavailable)??);
        }
        Ok(out)
    }

    /// Embeds `inputs` (one vector each, input order).
    pub async fn embed(
        &self,
        inputs: Vec<String>,
        opts: EmbedOptions,
    ) -> Result<Embeddings, EngineError> {
        self.require_embedding("feature-extraction")?;
        let mut admission = self.admit(inputs.len())?;
        let dim = self.info().dim;
        if let Some(d) = opts.dimensions {
            if d == 0 || d > dim {
                return Err(EngineError::InvalidParameter {
                    name: "dimensions",
                    reason: format!("must be between 1 and {dim}"),
                });
            }
        }
        let encoded = self
            .inner
            .tokenizers
            .encode(
                inputs.into_iter().map(TextInput::Single).collect(),
                opts.truncate,
            )
            .await?;
        let prompt_tokens = encoded.iter().map(|e| e.ids.len()).sum();
        let mut vectors = self.run(&mut admission, encoded).await?;
        let normalize = opts.normalize.unwrap_or(self.info().normalize);
        for v in &mut vectors {
            if let Some(d) = opts.dimensions {
                v.truncate(d);
            }
            if normalize {
                pooling::l2_normalize(v);
            }
        }
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }

    /// Cosine similarity of `source` to each of `sentences`, and the tokens it cost.
    pub async fn similarity(
        &self,
        source: String,
        sentences: Vec<String>,
    ) -> Result<(Vec<f32>, usize), EngineError> {
        self.require_embedding("sentence-similarity")?;
        if sentences.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        // The source sentence takes a permit too.
        let max = self
            .max_inputs()
            .min(self.inner.max_concurrent.saturating_sub(1))
            .max(1);
        if sentences.len() > max {
            return Err(EngineError::TooManyInputs {
                count: sentences.len(),
                max,
            });
        }
        let mut all = Vec::with_capacity(sentences.len() + 1);
        all.push(source);
        all.extend(sentences);
        let mut admission = self.permits(all.len())?;
        let encoded = self
            .inner
            .tokenizers
            .encode(all.into_iter().map(TextInput::Single).collect(), true)
            .await?;
        let tokens = encoded.iter().map(|e| e.ids.len()).sum();
        let vectors = self.run(&mut admission, encoded).await?;
        let scores = vectors[1..]
            .iter()
            .map(|v| pooling::cosine(&vectors[0], v))
            .collect();
        Ok((scores, tokens))
    }

    /// Raw classification logits, one row per input, and the tokens they cost.
    pub async fn logits(
        &self,
        inputs: Vec<TextInput>,
        truncate: bool,
    ) -> Result<(Vec<Vec<f32>>, usize), EngineError> {
        if self.info().task != Task::TextClassification {
            return Err(EngineError::WrongTask {
                served: self.info().task.as_str(),
                requested: "text-classification",
            });
        }
        let mut admission = self.admit(inputs.len())?;
        let encoded = self.inner.tokenizers.encode(inputs, truncate).await?;
        let tokens = encoded.iter().map(|e| e.ids.len()).sum();
        Ok((self.run(&mut admission, encoded).await?, tokens))
    }

    /// Classifies `inputs`: per input, labels with scores, best first.
    pub async fn classify(
        &self,
        inputs: Vec<TextInput>,
        opts: ClassifyOptions,
    ) -> Result<Classifications, EngineError> {
        let (logits, prompt_tokens) = self.logits(inputs, opts.truncate).await?;
        let info = self.info();
        let score_fn = opts.score_fn.unwrap_or(info.score_fn);
        let labels = logits
            .iter()
            .map(|row| {
                let mut scored: Vec<LabelScore> = scores(row, score_fn)
                    .into_iter()
                    .enumerate()
                    .map(|(i, score)| LabelScore {
                        label: info
                            .labels
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("LABEL_{i}")),
                        score,
                    })
                    .collect();
                scored.sort_by(|a, b| b.score.total_cmp(&a.score));
                if let Some(k) = opts.top_k {
                    scored.truncate(k);
                }
                scored
            })
            .collect();
        Ok(Classifications {
            labels,
            prompt_tokens,
        })
    }
}

/// Applies the score function to one row of logits.
pub fn scores(logits: &[f32], f: ScoreFn) -> Vec<f32> {
    match f {
        ScoreFn::None => logits.to_vec(),
        ScoreFn::Sigmoid => logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
        ScoreFn::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_functions() {
        let s = scores(&[1.0, 1.0], ScoreFn::Softmax);
        assert_eq!(s, vec![0.5, 0.5]);
        let s = scores(&[0.0], ScoreFn::Sigmoid);
        assert_eq!(s, vec![0.5]);
        assert_eq!(scores(&[2.0, -1.0], ScoreFn::None), vec![2.0, -1.0]);
    }
}
