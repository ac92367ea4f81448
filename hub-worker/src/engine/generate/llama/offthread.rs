//! Constrained sampling off the scheduler thread.
//!
//! A grammar (`response_format` `json_object` / `json_schema`, a forced tool call) makes
//! sampling cost what llama.cpp's grammar engine needs for it: microseconds to check the
//! chain's choice, and, when that choice is refused, a pass over every candidate of the
//! vocabulary (262,144 for Gemma 3) for each of the grammar's live stacks. A schema whose
//! alternatives start alike keeps many stacks alive at once (nested `anyOf`s of arrays:
//! their product), and a 1.4 MB schema measured here needed 54 s for one token. On the
//! scheduler thread that stalled every stream of the model for as long.
//!
//! So a constrained request samples on a thread of its own ([`OffThread`], started at
//! submit, holding the request's samplers): after a decode the scheduler hands it a copy of
//! the slot's logits and goes on; the slot sits out the following steps until its token
//! comes back ([`Sampled`], through the scheduler's one result channel). The scheduler
//! waits a moment for a token that has been quick before (so a cheap grammar keeps its
//! stream in step with the others), never for one that has not. A token that takes longer
//! than the limit (`--gen-grammar-token-ms`) fails its request with
//! [`EngineError::Grammar`](crate::engine::EngineError::Grammar).
//!
//! The thread of a request that went away (failed, cancelled, finished) is told to stop:
//! masking the vocabulary reads the flag between chunks of [`super::sampler::MASK_CHUNK`]
//! candidates, but one call of llama.cpp (a chunk, checking one token, accepting one) cannot
//! be interrupted. While more than [`MAX_ABANDONED`] such threads are still inside a call,
//! new constrained requests are refused ([`crate::engine::EngineError::GrammarBusy`]), so
//! hostile grammars cannot pile up threads that each burn a core.

use super::sampler::Sampling;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Threads still inside a grammar call after their request went away (process-wide).
static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// Abandoned threads beyond which constrained requests are refused.
pub(super) const MAX_ABANDONED: usize = 2;

/// How many abandoned grammar threads are still computing.
pub(super) fn abandoned() -> usize {
    ABANDONED.load(Ordering::Acquire)
}

/// A token sampled off the scheduler thread.
pub(super) struct Sampled {
    /// The request's ticket ([`OffThread::ticket`]).
    pub ticket: u64,
    pub token: LlamaToken,
    /// The logits it was sampled from, handed back (log-probabilities are computed from
    /// them, and the buffer is reused).
    pub logits: Vec<f32>,
    /// Time the sampling took on its thread.
    pub took: Duration,
}

#[derive(Default)]
struct State {
    /// Inside a sampling call.
    busy: bool,
    /// The request went away.
    dropped: bool,
    /// Counted in [`ABANDONED`].
    counted: bool,
}

/// The sampling thread of one constrained request; dropping it stops the thread.
pub(super) struct OffThread {
    jobs: Option<Sender<Vec<f32>>>,
    cancel: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    /// Identifies this request's results.
    pub ticket: u64,
}

impl OffThread {
    /// Starts the thread with the request's samplers. `model` is kept alive by the thread
    /// (a grammar reads the model's vocabulary), which can outlive the request and the
    /// scheduler.
    pub fn start(
        mut sampling: Sampling,
        model: Arc<LlamaModel>,
        ticket: u64,
        results: Sender<Sampled>,
    ) -> std::io::Result<OffThread> {
        let (mut buf, mut chunk) = (Vec::new(), Vec::new());
        OffThread::spawn(ticket, results, move |logits, stop| {
            let _vocabulary = &model;
            sampling.sample_unless(logits, &mut buf, &mut chunk, stop)
        })
    }

    /// The thread around `sample` (which gives up, `None`, when its flag is set).
    fn spawn(
        ticket: u64,
        results: Sender<Sampled>,
        mut sample: impl FnMut(&[f32], &AtomicBool) -> Option<LlamaToken> + Send + 'static,
    ) -> std::io::Result<OffThread> {
        let (jobs, rx) = channel::<Vec<f32>>();
        let cancel = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, st) = (cancel.clone(), state.clone());
        std::thread::Builder::new()
            .name("gen-grammar".into())
            .spawn(move || {
                while let Ok(logits) = rx.recv() {
                    {
                        let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                        if s.dropped {
                            break;
                        }
                        s.busy = true;
                    }
                    let started = Instant::now();
                    let token = sample(&logits, &stop);
                    let took = started.elapsed();
                    {
                        let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                        s.busy = false;
                        if s.counted {
                            s.counted = false;
                            ABANDONED.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    let Some(token) = token else { break };
                    let done = Sampled {
                        ticket,
                        token,
                        logits,
                        took,
                    };
                    if results.send(done).is_err() {
                        break;
                    }
                }
            })?;
        Ok(OffThread {
            jobs: Some(jobs),
            cancel,
            state,
            ticket,
        })
    }

    /// Hands the thread the logits of the next token; `false` if it is gone.
    pub fn send(&self, logits: Vec<f32>) -> bool {
        self.jobs.as_ref().is_some_and(|j| j.send(logits).is_ok())
    }
}

impl Drop for OffThread {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        // Closing the channel ends an idle thread at once.
        self.jobs.take();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.dropped = true;
        if s.busy && !s.counted {
            s.counted = true;
            ABANDONED.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    /// A thread whose request goes away in the middle of a call counts as abandoned until
    /// the call returns; one that is idle, or that finished its call, does not. (The only
    /// test in this process that starts these threads: the count is process-wide.)
    #[test]
    fn abandoned_while_busy_counts_until_the_call_returns() {
        let (results, got) = channel();
        // Each call blocks until the test lets it go, and reports that it started.
        let (started_tx, started) = sync_channel::<()>(4);
        let (release, released) = channel::<()>();
        let released = Mutex::new(released);
        let t = OffThread::spawn(7, results, move |logits, stop| {
            started_tx.send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
            (!stop.load(Ordering::Relaxed)).then_some(LlamaToken(logits.len() as i32))
        })
        .unwrap();
        assert_eq!(abandoned(), 0);

        // A call that returns: its token comes back with its ticket and logits.
        assert!(t.send(vec![0.0; 3]));
        started.recv().unwrap();
        release.send(()).unwrap();
        let r = got.recv().unwrap();
        assert_eq!((r.ticket, r.token, r.logits.len()), (7, LlamaToken(3), 3));
        assert_eq!(abandoned(), 0);

        // Dropped in the middle of a call: abandoned until the call returns, and the
        // cancelled call sends nothing.
        assert!(t.send(vec![0.0; 5]));
        started.recv().unwrap();
        drop(t);
        assert_eq!(abandoned(), 1);
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while abandoned() != 0 {
            assert!(
                Instant::now() < deadline,
                "still counted after its call returned"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(got.recv_timeout(Duration::from_millis(100)).is_err());

        // Dropped while idle: never counted, and the thread ends.
        let (results, got) = channel();
        let idle = OffThread::spawn(8, results, |_, _| Some(LlamaToken(0))).unwrap();
        drop(idle);
        assert_eq!(abandoned(), 0);
        assert!(
            got.recv_timeout(Duration::from_secs(5)).is_err(),
            "the thread ended"
        );
    }
}
