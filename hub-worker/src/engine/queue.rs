//! The batching queue: one thread owns the pending entries of a model. It takes a window
//! of entries in arrival order (cut to a token budget, padding counted on CPU engines),
//! sorts it by length, cuts it into forward passes, and hands the passes, costliest first,
//! to the model's backend replicas as each one asks for work. Entries whose client went
//! away are dropped here, before they cost a forward pass.

use super::error::EngineError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// What the backend thread sends back for one entry: a pooled embedding or logits.
pub type EntryResult = Result<Vec<f32>, EngineError>;

/// One tokenized input waiting for the backend.
#[derive(Debug)]
pub struct Entry {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub reply: oneshot::Sender<EntryResult>,
}

impl Entry {
    /// Tokens in this input.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the input has no tokens (never true for tokenizer output).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Limits for cutting batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Token budget of one batch; with `padded`, `longest × entries`.
    pub max_batch_tokens: usize,
    /// Entries per batch.
    pub max_batch_size: usize,
    /// Whether padding costs compute (true for CPU engines).
    pub padded: bool,
    /// Most inputs in one forward pass.
    pub max_pass: usize,
    /// Backend replicas taking passes from this queue.
    pub replicas: usize,
}

/// Cuts a window into forward passes: sorted by length (least padding), each pass at most
/// `max_pass` inputs. With several replicas, passes are small enough that every replica
/// gets at least two (`window / (2 × replicas)` inputs each), so the cores share a short
/// window evenly instead of one replica running it all; then handed out costliest first
/// (longest-processing-time order), so the last pass to finish is a cheap one.
pub fn cut_passes(mut window: Vec<Entry>, limits: BatchLimits) -> VecDeque<Vec<Entry>> {
    window.sort_by_key(Entry::len);
    let n = window.len();
    let max_pass = limits.max_pass.max(1);
    let size = match limits.replicas {
        0 | 1 => max_pass,
        r => (n / (2 * r)).clamp(1, max_pass),
    };
    let mut passes: Vec<Vec<Entry>> = Vec::with_capacity(n.div_ceil(size));
    let mut rest = window.into_iter().peekable();
    while rest.peek().is_some() {
        passes.push(rest.by_ref().take(size).collect());
    }
    if limits.replicas > 1 {
        let cost = |p: &Vec<Entry>| p.last().map_or(0, Entry::len) * p.len();
        passes.sort_by_key(|p| std::cmp::Reverse(cost(p)));
    }
    passes.into()
}

/// Takes the next batch from the front of `queue` within `limits`, skipping entries whose
/// receiver is gone. Returns the batch and how many entries were dropped. The first live
/// entry is always taken, even over budget, so an oversized input cannot wedge the queue.
pub fn take_batch(queue: &mut VecDeque<Entry>, limits: BatchLimits) -> (Vec<Entry>, usize) {
    let mut batch: Vec<Entry> = Vec::new();
    let mut dropped = 0;
    let mut longest = 0;
    let mut sum = 0;
    while let Some(front) = queue.front() {
        if front.reply.is_closed() {
            queue.pop_front();
            dropped += 1;
            continue;
        }
        if batch.len() >= limits.max_batch_size.max(1) {
            break;
        }
        let len = front.len();
        let cost = if limits.padded {
            longest.max(len) * (batch.len() + 1)
        } else {
            sum + len
        };
        if !batch.is_empty() && cost > limits.max_batch_tokens {
            break;
        }
        longest = longest.max(len);
        sum += len;
        batch.extend(queue.pop_front());
    }
    (batch, dropped)
}

enum Cmd {
    Append(Vec<Entry>),
    NextBatch(mpsc::Sender<Option<Vec<Entry>>>),
    Shutdown,
}

/// Counters the queue thread keeps for heartbeats and tests.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Entries waiting (not yet handed to the backend).
    pub depth: AtomicUsize,
    /// Entries dropped because their client went away.
    pub dropped: AtomicU64,
    /// Batches handed to the backend.
    pub batches: AtomicU64,
}

/// Handle to a model's queue thread. Cloning shares the thread; each backend replica
/// calls [`Queue::next_batch`] from its own thread.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Cmd>,
    stats: Arc<QueueStats>,
}

impl Queue {
    /// Starts the queue thread.
    pub fn start(limits: BatchLimits, name: &str) -> std::io::Result<Queue> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(QueueStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name(format!("queue-{name}"))
            .spawn(move || queue_thread(rx, limits, &thread_stats))?;
        Ok(Queue { tx, stats })
    }

    /// Appends entries (in order). Fails only when the queue has shut down.
    pub fn append(&self, entries: Vec<Entry>) -> Result<(), EngineError> {
        self.tx
            .send(Cmd::Append(entries))
            .map_err(|_| EngineError::Unavailable)
    }

    /// Blocks until a forward pass is ready (length-sorted); `None` once the queue shuts down.
    pub fn next_batch(&self) -> Option<Vec<Entry>> {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Cmd::NextBatch(tx)).ok()?;
        rx.recv().ok().flatten()
    }

    /// Stops the thread; waiting entries fail with `Unavailable`.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Cmd::Shutdown);
    }

    /// Counters.
    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }
}

fn queue_thread(rx: mpsc::Receiver<Cmd>, limits: BatchLimits, stats: &QueueStats) {
    let mut pending: VecDeque<Entry> = VecDeque::new();
    // Passes cut from the current window, not yet handed out.
    let mut ready: VecDeque<Vec<Entry>> = VecDeque::new();
    // Replicas waiting for work, in the order they asked.
    let mut waiters: VecDeque<mpsc::Sender<Option<Vec<Entry>>>> = VecDeque::new();
    loop {
        let cmd = rx.recv().unwrap_or(Cmd::Shutdown);
        match cmd {
            Cmd::Append(entries) => pending.extend(entries),
            Cmd::NextBatch(w) => waiters.push_back(w),
            Cmd::Shutdown => {
                for w in waiters.drain(..) {
                    let _ = w.send(None);
                }
                stats.depth.store(0, Ordering::Relaxed);
                return;
            }
        }
        while !waiters.is_empty() {
            if ready.is_empty() {
                let (window, dropped) = take_batch(&mut pending, limits);
                stats.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
                if window.is_empty() {
                    break;
                }
                ready = cut_passes(window, limits);
            }
            let Some(mut pass) = ready.pop_front() else {
                break;
            };
            let before = pass.len();
            pass.retain(|e| !e.reply.is_closed());
            stats
                .dropped
                .fetch_add((before - pass.len()) as u64, Ordering::Relaxed);
            if pass.is_empty() {
                continue;
            }
            let Some(w) = waiters.pop_front() else {
                ready.push_front(pass);
                break;
            };
            stats.batches.fetch_add(1, Ordering::Relaxed);
            if let Err(mpsc::SendError(Some(pass))) = w.send(Some(pass)) {
                // That replica is gone: the pass goes to the next one (or waits).
                ready.push_front(pass);
            }
        }
        let queued = pending.len() + ready.iter().map(Vec::len).sum::<usize>();
        stats.depth.store(queued, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize) -> (Entry, oneshot::Receiver<EntryResult>) {
        let (tx, rx) = oneshot::channel();
        (
            Entry {
                ids: vec![1; len],
                type_ids: vec![0; len],
                reply: tx,
            },
            rx,
        )
    }

    fn queue_of(lens: &[usize]) -> (VecDeque<Entry>, Vec<oneshot::Receiver<EntryResult>>) {
        let mut q = VecDeque::new();
        let mut rxs = Vec::new();
        for l in lens {
            let (e, rx) = entry(*l);
            q.push_back(e);
            rxs.push(rx);
        }
        (q, rxs)
    }

    const PADDED: BatchLimits = BatchLimits {
        max_batch_tokens: 100,
        max_batch_size: 8,
        padded: true,
        max_pass: 8,
        replicas: 1,
    };

    #[test]
    fn padded_budget_counts_the_longest_row() {
        let (mut q, _rx) = queue_of(&[10, 40, 10, 10]);
        // 10 → 10; 40 → 80; 10 → 40*3 = 120 > 100: stop before the third.
        let (b, dropped) = take_batch(&mut q, PADDED);
        assert_eq!(b.iter().map(Entry::len).collect::<Vec<_>>(), vec![10, 40]);
        assert_eq!(dropped, 0);
        assert_eq!(q.len(), 2);
        // Unpadded budget sums lengths: 10 + 40 + 10 + 10 = 70 fits.
        let (mut q, _rx) = queue_of(&[10, 40, 10, 10]);
        let (b, _) = take_batch(
            &mut q,
            BatchLimits {
                padded: false,
                ..PADDED
            },
        );
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn size_limit_and_oversized_entries() {
        let (mut q, _rx) = queue_of(&[1; 10]);
        let (b, _) = take_batch(&mut q, PADDED);
        assert_eq!(b.len(), 8);
        // One entry over the whole budget still goes, alone.
        let (mut q, _rx) = queue_of(&[500, 1]);
        let (b, _) = take_batch(&mut q, PADDED);
        assert_eq!(b.len(), 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn dropped_clients_are_skipped() {
        let (mut q, mut rxs) = queue_of(&[5, 5, 5, 5]);
        // Clients 0 and 2 went away.
        drop(rxs.remove(2));
        drop(rxs.remove(0));
        let (b, dropped) = take_batch(&mut q, PADDED);
        assert_eq!(dropped, 2);
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|e| !e.reply.is_closed()));
        assert!(q.is_empty());
    }

    #[test]
    fn thread_hands_out_batches_and_shuts_down() {
        let queue = Queue::start(PADDED, "t").unwrap();
        let (e1, rx1) = entry(3);
        let (e2, rx2) = entry(3);
        let (e3, _) = entry(3); // receiver dropped at once: never reaches the backend
        queue.append(vec![e1, e3, e2]).unwrap();
        let batch = queue.next_batch().unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(queue.stats().batches.load(Ordering::Relaxed), 1);
        for e in batch {
            e.reply.send(Ok(vec![1.0])).unwrap();
        }
        assert_eq!(rx1.blocking_recv().unwrap(), Ok(vec![1.0]));
        assert_eq!(rx2.blocking_recv().unwrap(), Ok(vec![1.0]));
        assert_eq!(queue.stats().dropped.load(Ordering::Relaxed), 1);
        // A waiting backend is released on shutdown.
        let q2 = queue.clone();
        let waiter = std::thread::spawn(move || q2.next_batch());
        std::thread::sleep(std::time::Duration::from_millis(50));
        queue.shutdown();
        assert!(waiter.join().unwrap().is_none());
        let (e, rx) = entry(1);
        let _ = queue.append(vec![e]);
        assert!(rx.blocking_recv().is_err());
    }

    fn lens(passes: &VecDeque<Vec<Entry>>) -> Vec<Vec<usize>> {
        passes
            .iter()
            .map(|p| p.iter().map(Entry::len).collect())
            .collect()
    }

    #[test]
    fn one_replica_gets_sorted_passes_of_max_pass() {
        let (q, _rx) = queue_of(&[9, 3, 7, 1, 5, 2, 8]);
        let limits = BatchLimits {
            max_pass: 3,
            ..PADDED
        };
        let passes = cut_passes(q.into(), limits);
        assert_eq!(lens(&passes), vec![vec![1, 2, 3], vec![5, 7, 8], vec![9]]);
        assert!(cut_passes(Vec::new(), limits).is_empty());
    }

    #[test]
    fn replicas_share_a_window_costliest_pass_first() {
        let two = BatchLimits {
            max_pass: 4,
            replicas: 2,
            ..PADDED
        };
        // Four inputs, two replicas: one input per pass, longest first.
        let (q, _rx) = queue_of(&[5, 30, 10, 20]);
        assert_eq!(
            lens(&cut_passes(q.into(), two)),
            vec![vec![30], vec![20], vec![10], vec![5]]
        );
        // Sixteen inputs: passes of four (16 / (2 × 2)), sorted, costliest first.
        let sizes: Vec<usize> = (1..=16).rev().collect();
        let (q, _rx) = queue_of(&sizes);
        let passes = cut_passes(q.into(), two);
        assert_eq!(
            lens(&passes),
            vec![
                vec![13, 14, 15, 16],
                vec![9, 10, 11, 12],
                vec![5, 6, 7, 8],
                vec![1, 2, 3, 4]
            ]
        );
        // A big window never exceeds max_pass.
        let (q, _rx) = queue_of(&[7; 64]);
        assert!(cut_passes(q.into(), two).iter().all(|p| p.len() == 4));
    }

    #[test]
    fn waiting_replicas_each_get_a_pass() {
        let limits = BatchLimits {
            max_pass: 4,
            replicas: 2,
            ..PADDED
        };
        let queue = Queue::start(limits, "r").unwrap();
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let q = queue.clone();
            waiters.push(std::thread::spawn(move || q.next_batch()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (entries, _rx): (Vec<_>, Vec<_>) = [4, 8].into_iter().map(entry).unzip();
        queue.append(entries).unwrap();
        let mut got: Vec<Vec<usize>> = waiters
            .into_iter()
            .map(|w| w.join().unwrap().unwrap().iter().map(Entry::len).collect())
            .collect();
        got.sort();
        assert_eq!(got, vec![vec![4], vec![8]]);
        assert_eq!(queue.stats().batches.load(Ordering::Relaxed), 2);
        queue.shutdown();
    }
}
