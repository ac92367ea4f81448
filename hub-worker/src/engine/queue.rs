//! The batching queue: one thread owns the pending entries of a model. It takes a window
//! of entries in arrival order (cut to a token budget, padding counted on CPU engines),
//! sorts it by length, cuts it into forward passes, and hands the passes, costliest first,
//! to the model's backend replicas as each one asks for work. Entries whose client went
//! away are dropped here, before they cost a forward pass. When concurrent clients are
//! about to add to a short window, it waits for them a little ([`fill_wait`]).

use super::error::EngineError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
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
    /// Whether replica 0 can run a pass "wide", on every compute thread: it then gets a
    /// lone pass when all replicas are idle, and the others wait until it is done.
    pub wide: bool,
    /// Most inputs a window may hold to run as one wide pass when every replica idles
    /// (`Backend::wide_window`; 1: single inputs only).
    pub wide_window: usize,
    /// Whether the backend runs a pass as one unpadded row when that is cheaper
    /// (`Backend::packs`): a short window is then cut by tokens, not by length.
    pub packs: bool,
    /// Longest a short window waits for the inputs of concurrent clients ([`fill_wait`];
    /// zero: never).
    pub fill_wait: Duration,
}

/// What the queue knows, when a replica is idle and inputs wait, about the inputs that
/// may still join them ([`fill_wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Inputs queued (the window about to start).
    pub pending: usize,
    /// Requests admitted whose inputs are not queued yet (being tokenized).
    pub arriving: usize,
    /// Requests admitted and not yet answered: queued, running, arriving.
    pub in_flight: usize,
    /// Most requests in flight at once lately ([`Demand`]'s window): how many clients
    /// there are. A client that is not in flight now is, in a closed loop, on its way
    /// back (reading its answer, in the gateway, in the HTTP layer).
    pub concurrency: usize,
    /// How long this window has waited already.
    pub waited: Duration,
}

/// How much longer a window of `fill.pending` inputs should wait for more before its
/// forward pass starts; `None`: start now.
///
/// It waits only when more inputs are coming: a request admitted but still being
/// tokenized, or fewer requests in flight than the recent concurrency (clients that come
/// back in a closed loop), and only while the window is smaller than both that
/// concurrency and a full pass, for at most `bound` in all. A lone sequential client
/// never waits: its one request is all the concurrency there is. At concurrency 4 through
/// a slow client the requests reach the worker spread over a few milliseconds, so without
/// the wait each pass held one or two inputs (issue 19).
pub fn fill_wait(fill: Fill, max_pass: usize, bound: Duration) -> Option<Duration> {
    let tokenizing = fill.arriving > 0;
    let returning = fill.in_flight < fill.concurrency && fill.pending < fill.concurrency;
    let room = fill.pending < max_pass.max(1);
    if fill.pending == 0 || !(tokenizing || returning) || !room || fill.waited >= bound {
        return None;
    }
    Some(bound - fill.waited)
}

/// How long [`Demand`] remembers a peak of concurrent requests.
const CONCURRENCY_WINDOW: Duration = Duration::from_millis(250);

/// Requests a model has admitted, counted at the handler's entry (admission, before
/// tokenizing): the queue's signal of inputs it cannot see yet. Shared by the encoder
/// (which counts) and the queue thread (which reads).
#[derive(Debug, Default)]
pub struct Demand {
    in_flight: AtomicUsize,
    arriving: AtomicUsize,
    /// Most requests in flight at once since the queue thread last rolled its window.
    peak: AtomicUsize,
}

impl Demand {
    /// Counts a request in: in flight until the first guard drops (after its answer),
    /// arriving until the second does (when its inputs reach the queue thread, see
    /// [`Queue::append_admitted`]).
    pub fn admit(self: &Arc<Self>) -> (Admitted, Arriving) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        self.arriving.fetch_add(1, Ordering::Relaxed);
        (Admitted(self.clone()), Arriving(self.clone()))
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request in flight ([`Demand::admit`]); dropping it counts the request out.
#[derive(Debug)]
pub struct Admitted(Arc<Demand>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request whose inputs are not queued yet ([`Demand::admit`]).
#[derive(Debug)]
pub struct Arriving(Arc<Demand>);

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.arriving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The queue thread's view of recent concurrency: the peak of the window before and of
/// the current one, so a peak is remembered between one and two windows.
struct Concurrency {
    previous: usize,
    since: Instant,
}

impl Concurrency {
    fn read(&mut self, demand: &Demand, now: Instant) -> usize {
        if now.duration_since(self.since) >= CONCURRENCY_WINDOW {
            self.previous = demand.peak.swap(demand.in_flight(), Ordering::Relaxed);
            self.since = now;
        }
        self.previous.max(demand.peak.load(Ordering::Relaxed))
    }
}

/// A forward pass handed to a replica.
#[derive(Debug)]
pub struct Pass {
    /// Length-sorted inputs.
    pub entries: Vec<Entry>,
    /// Run it on every compute thread (only ever given to replica 0, alone).
    pub wide: bool,
}

/// Cuts a window into forward passes: sorted by length (least padding), each pass at most
/// `max_pass` inputs. With several replicas, passes are small enough that every replica
/// gets at least two (`window / (2 × replicas)` inputs each), so the cores share a short
/// window evenly instead of one replica running it all; then handed out costliest first
/// (longest-processing-time order), so the last pass to finish is a cheap one.
///
/// With a packing backend, a short window (at most two inputs per replica) is instead
/// split into one pass per idle replica (`idle`, at least one; a busy replica takes what
/// arrives next) with equal token counts: the backend runs each as one unpadded row, which
/// beats single-input passes (measured on MiniLM, two single-threaded sessions, requests
/// of 4 in corpus order: 188 sentences/s packed in pairs against 171-177 for one input per
/// pass; `hub-worker/README.md`, Engine).
pub fn cut_passes(
    mut window: Vec<Entry>,
    limits: BatchLimits,
    idle: usize,
) -> VecDeque<Vec<Entry>> {
    window.sort_by_key(Entry::len);
    let n = window.len();
    let max_pass = limits.max_pass.max(1);
    let replicas = limits.replicas.max(1);
    // A short window while every replica idles: one pass, which the dispatcher hands to
    // replica 0 to run wide.
    if limits.wide && replicas > 1 && idle >= replicas && n <= limits.wide_window.min(max_pass) {
        return VecDeque::from([window]);
    }
    if limits.packs && n > 1 && n <= 2 * replicas {
        let count = idle.clamp(1, n).max(n.div_ceil(max_pass));
        let mut bins: Vec<(usize, Vec<Entry>)> = (0..count).map(|_| (0, Vec::new())).collect();
        // Longest first into the bin with the fewest tokens.
        for e in window.into_iter().rev() {
            let bin = bins
                .iter_mut()
                .filter(|b| b.1.len() < max_pass)
                .min_by_key(|b| b.0)
                .expect("ceil(n / max_pass) bins of max_pass inputs hold n");
            bin.0 += e.len();
            bin.1.push(e);
        }
        bins.sort_by_key(|b| std::cmp::Reverse(b.0));
        return bins
            .into_iter()
            .map(|(_, mut p)| {
                p.reverse();
                p
            })
            .collect();
    }
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
    /// Entries of one request; its `Arriving` guard drops once they are pending.
    Append(Vec<Entry>, Option<Arriving>),
    NextBatch(usize, mpsc::Sender<Option<Pass>>),
    /// Take no more entries; stop once every queued one has been handed out.
    Drain,
    /// A fill wait ran out (made by the queue thread itself).
    Tick,
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
    /// Inputs handed to the backend (over `batches`: the mean pass size).
    pub inputs: AtomicU64,
    /// Windows that waited for more inputs ([`fill_wait`]).
    pub fill_waits: AtomicU64,
}

/// Handle to a model's queue thread. Cloning shares the thread; each backend replica
/// calls [`Queue::next_batch`] from its own thread.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Cmd>,
    stats: Arc<QueueStats>,
    demand: Arc<Demand>,
    servers: Arc<Servers>,
}

/// How many backend threads still serve a queue (each holds a [`Server`]).
#[derive(Default)]
struct Servers {
    running: Mutex<usize>,
    stopped: Condvar,
}

/// Held by a backend thread for as long as it holds its engine: dropped after the engine,
/// so [`Queue::wait_for_servers`] returns once every engine is freed.
pub struct Server(Arc<Servers>);

impl Drop for Server {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        self.0.stopped.notify_all();
    }
}

impl Queue {
    /// Starts the queue thread.
    pub fn start(limits: BatchLimits, name: &str) -> std::io::Result<Queue> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(QueueStats::default());
        let demand = Arc::new(Demand::default());
        let (thread_stats, thread_demand) = (stats.clone(), demand.clone());
        std::thread::Builder::new()
            .name(format!("queue-{name}"))
            .spawn(move || queue_thread(rx, limits, &thread_stats, &thread_demand))?;
        Ok(Queue {
            tx,
            stats,
            demand,
            servers: Arc::default(),
        })
    }

    /// Registers a backend thread serving this queue; it drops the guard once it has
    /// freed its engine.
    pub fn server(&self) -> Server {
        *self
            .servers
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner()) += 1;
        Server(self.servers.clone())
    }

    /// Waits until every backend thread registered with [`Queue::server`] has stopped
    /// (after [`Queue::shutdown`]), at most `timeout`; whether they all did.
    pub fn wait_for_servers(&self, timeout: Duration) -> bool {
        let running = self
            .servers
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (running, _) = self
            .servers
            .stopped
            .wait_timeout_while(running, timeout, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        *running == 0
    }

    /// Appends entries (in order). Fails only when the queue has shut down.
    pub fn append(&self, entries: Vec<Entry>) -> Result<(), EngineError> {
        self.tx
            .send(Cmd::Append(entries, None))
            .map_err(|_| EngineError::Unavailable)
    }

    /// Appends the entries of a request admitted with [`Demand::admit`]: the queue thread
    /// stops counting it as arriving once they are pending (not before, or a window could
    /// wait for the very request it already holds).
    pub fn append_admitted(
        &self,
        entries: Vec<Entry>,
        arriving: Arriving,
    ) -> Result<(), EngineError> {
        self.tx
            .send(Cmd::Append(entries, Some(arriving)))
            .map_err(|_| EngineError::Unavailable)
    }

    /// The request counts this queue's fill wait reads ([`Demand::admit`] at admission).
    pub fn demand(&self) -> &Arc<Demand> {
        &self.demand
    }

    /// Blocks until a forward pass is ready for replica `replica`; `None` once the queue
    /// shuts down.
    pub fn next_batch(&self, replica: usize) -> Option<Pass> {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Cmd::NextBatch(replica, tx)).ok()?;
        rx.recv().ok().flatten()
    }

    /// Stops the thread once every entry appended before this call has been handed to a
    /// backend (an engine switch retires the old queue this way: nothing queued on it is
    /// lost). Appends after it fail with `Unavailable`.
    pub fn drain(&self) {
        let _ = self.tx.send(Cmd::Drain);
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

fn queue_thread(rx: mpsc::Receiver<Cmd>, limits: BatchLimits, stats: &QueueStats, demand: &Demand) {
    let mut pending: VecDeque<Entry> = VecDeque::new();
    // Passes cut from the current window, not yet handed out.
    let mut ready: VecDeque<Vec<Entry>> = VecDeque::new();
    // Replicas waiting for work, in the order they asked.
    let mut waiters: VecDeque<(usize, mpsc::Sender<Option<Pass>>)> = VecDeque::new();
    // Replica 0 is running a wide pass: nobody else gets work until it asks again.
    let mut wide_running = false;
    let mut draining = false;
    let mut concurrency = Concurrency {
        previous: 0,
        since: Instant::now(),
    };
    // A short window is waiting for more inputs (since then, until the deadline).
    let mut filling: Option<(Instant, Instant)> = None;
    loop {
        let cmd = match filling {
            None => rx.recv().unwrap_or(Cmd::Shutdown),
            Some((_, deadline)) => {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(cmd) => Some(cmd),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Some(Cmd::Shutdown),
                }
                .unwrap_or(Cmd::Tick)
            }
        };
        match cmd {
            Cmd::Tick => {}
            Cmd::Append(entries, arriving) => {
                pending.extend(entries);
                drop(arriving);
            }
            Cmd::Drain => draining = true,
            Cmd::NextBatch(replica, w) => {
                if replica == 0 {
                    wide_running = false;
                }
                waiters.push_back((replica, w));
            }
            Cmd::Shutdown => {
                for (_, w) in waiters.drain(..) {
                    let _ = w.send(None);
                }
                stats.depth.store(0, Ordering::Relaxed);
                return;
            }
        }
        while !waiters.is_empty() && !wide_running {
            if ready.is_empty() {
                if !draining && !limits.fill_wait.is_zero() {
                    let now = Instant::now();
                    let fill = Fill {
                        pending: pending.len(),
                        arriving: demand.arriving.load(Ordering::Relaxed),
                        in_flight: demand.in_flight(),
                        concurrency: concurrency.read(demand, now),
                        waited: filling.map_or(Duration::ZERO, |(since, _)| now - since),
                    };
                    if let Some(more) = fill_wait(fill, limits.max_pass, limits.fill_wait) {
                        if filling.is_none() {
                            stats.fill_waits.fetch_add(1, Ordering::Relaxed);
                        }
                        filling = Some((now - fill.waited, now + more));
                        break;
                    }
                }
                filling = None;
                let (window, dropped) = take_batch(&mut pending, limits);
                stats.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
                if window.is_empty() {
                    break;
                }
                ready = cut_passes(window, limits, waiters.len());
            }
            let Some(mut entries) = ready.pop_front() else {
                break;
            };
            let before = entries.len();
            entries.retain(|e| !e.reply.is_closed());
            stats
                .dropped
                .fetch_add((before - entries.len()) as u64, Ordering::Relaxed);
            if entries.is_empty() {
                continue;
            }
            // A lone pass while every replica idles: one replica on all threads beats one
            // single-threaded replica with the other cores idle.
            let wide = limits.wide
                && limits.replicas > 1
                && ready.is_empty()
                && pending.is_empty()
                && waiters.len() == limits.replicas;
            let slot = if wide {
                waiters.iter().position(|(r, _)| *r == 0)
            } else {
                Some(0)
            };
            let Some((_, w)) = slot.and_then(|i| waiters.remove(i)) else {
                ready.push_front(entries);
                break;
            };
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats
                .inputs
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            match w.send(Some(Pass { entries, wide })) {
                Ok(()) => wide_running = wide,
                // That replica is gone: the pass goes to the next one (or waits).
                Err(mpsc::SendError(pass)) => {
                    ready.push_front(pass.map(|p| p.entries).unwrap_or_default());
                }
            }
        }
        if waiters.is_empty() || wide_running || pending.is_empty() {
            // Nothing to start: no wait to time.
            filling = None;
        }
        let queued = pending.len() + ready.iter().map(Vec::len).sum::<usize>();
        stats.depth.store(queued, Ordering::Relaxed);
        if draining && queued == 0 {
            for (_, w) in waiters.drain(..) {
                let _ = w.send(None);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_servers_returns_once_each_has_stopped() {
        let q = Queue::start(PADDED, "servers").unwrap();
        assert!(q.wait_for_servers(Duration::from_millis(1)), "none yet");
        let held = q.server();
        let leaving = q.server();
        let t = std::time::Instant::now();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(leaving);
        });
        assert!(
            !q.wait_for_servers(Duration::from_millis(50)),
            "two still run"
        );
        drop(held);
        assert!(q.wait_for_servers(Duration::from_secs(10)));
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "waited for the last"
        );
        th.join().unwrap();
        q.shutdown();
    }

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
        wide: false,
        wide_window: 1,
        packs: false,
        fill_wait: Duration::ZERO,
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
    fn drain_hands_out_what_was_queued_then_stops() {
        let queue = Queue::start(PADDED, "d").unwrap();
        let (e1, rx1) = entry(3);
        let (e2, rx2) = entry(4);
        queue.append(vec![e1, e2]).unwrap();
        queue.drain();
        let pass = queue
            .next_batch(0)
            .expect("queued entries are still handed out");
        assert_eq!(pass.entries.len(), 2);
        for e in pass.entries {
            e.reply.send(Ok(vec![2.0])).unwrap();
        }
        assert_eq!(rx1.blocking_recv().unwrap(), Ok(vec![2.0]));
        assert_eq!(rx2.blocking_recv().unwrap(), Ok(vec![2.0]));
        assert!(queue.next_batch(0).is_none(), "then the queue stops");
    }

    #[test]
    fn thread_hands_out_batches_and_shuts_down() {
        let queue = Queue::start(PADDED, "t").unwrap();
        let (e1, rx1) = entry(3);
        let (e2, rx2) = entry(3);
        let (e3, _) = entry(3); // receiver dropped at once: never reaches the backend
        queue.append(vec![e1, e3, e2]).unwrap();
        let batch = queue.next_batch(0).unwrap();
        assert!(!batch.wide);
        let batch = batch.entries;
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
        let waiter = std::thread::spawn(move || q2.next_batch(0));
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
        let passes = cut_passes(q.into(), limits, 1);
        assert_eq!(lens(&passes), vec![vec![1, 2, 3], vec![5, 7, 8], vec![9]]);
        assert!(cut_passes(Vec::new(), limits, 1).is_empty());
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
            lens(&cut_passes(q.into(), two, 2)),
            vec![vec![30], vec![20], vec![10], vec![5]]
        );
        // Sixteen inputs: passes of four (16 / (2 × 2)), sorted, costliest first.
        let sizes: Vec<usize> = (1..=16).rev().collect();
        let (q, _rx) = queue_of(&sizes);
        let passes = cut_passes(q.into(), two, 2);
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
        assert!(cut_passes(q.into(), two, 2).iter().all(|p| p.len() == 4));
    }

    #[test]
    fn packing_backends_get_one_token_balanced_pass_per_replica() {
        let two = BatchLimits {
            max_pass: 4,
            replicas: 2,
            packs: true,
            ..PADDED
        };
        // Four inputs, two replicas: two passes of equal tokens (50+10, 40+20), each
        // length-sorted, the costlier first.
        let (q, _rx) = queue_of(&[10, 50, 20, 40]);
        assert_eq!(
            lens(&cut_passes(q.into(), two, 2)),
            vec![vec![10, 50], vec![20, 40]]
        );
        // Three inputs: the longest alone, the other two together.
        let (q, _rx) = queue_of(&[30, 5, 20]);
        assert_eq!(
            lens(&cut_passes(q.into(), two, 2)),
            vec![vec![30], vec![5, 20]]
        );
        // One input is one pass; more than two per replica falls back to sorted passes.
        let (q, _rx) = queue_of(&[7]);
        assert_eq!(lens(&cut_passes(q.into(), two, 2)), vec![vec![7]]);
        let (q, _rx) = queue_of(&[6, 1, 5, 2, 4, 3]);
        assert_eq!(
            lens(&cut_passes(q.into(), two, 2)),
            vec![vec![6], vec![5], vec![4], vec![3], vec![2], vec![1]]
        );
        // One replica: a pair becomes one pass.
        let one = BatchLimits { replicas: 1, ..two };
        let (q, _rx) = queue_of(&[9, 3]);
        assert_eq!(lens(&cut_passes(q.into(), one, 1)), vec![vec![3, 9]]);
        // Two replicas, one of them busy: the idle one takes the whole short window (as
        // few passes of max_pass as it needs).
        let (q, _rx) = queue_of(&[10, 50, 20, 40]);
        assert_eq!(
            lens(&cut_passes(q.into(), two, 1)),
            vec![vec![10, 20, 40, 50]]
        );
        let pairs = BatchLimits { max_pass: 2, ..two };
        let (q, _rx) = queue_of(&[10, 50, 20]);
        assert_eq!(
            lens(&cut_passes(q.into(), pairs, 1)),
            vec![vec![50], vec![10, 20]]
        );
    }

    #[test]
    fn waiting_replicas_each_get_a_pass() {
        let limits = BatchLimits {
            max_pass: 4,
            replicas: 2,
            wide: true,
            ..PADDED
        };
        let queue = Queue::start(limits, "r").unwrap();
        let ask = |r: usize| {
            let q = queue.clone();
            std::thread::spawn(move || q.next_batch(r))
        };
        let settle = || std::thread::sleep(std::time::Duration::from_millis(50));
        let (mut keep, mut entries) = (Vec::new(), Vec::new());
        for len in [4, 8] {
            let (e, rx) = entry(len);
            entries.push(e);
            keep.push(rx);
        }
        let waiters = [ask(0), ask(1)];
        settle();
        queue.append(entries).unwrap();
        let mut got: Vec<(Vec<usize>, bool)> = waiters
            .into_iter()
            .map(|w| {
                let p = w.join().unwrap().unwrap();
                (p.entries.iter().map(Entry::len).collect(), p.wide)
            })
            .collect();
        got.sort();
        // Two passes, two idle replicas: one each, narrow.
        assert_eq!(got, vec![(vec![4], false), (vec![8], false)]);

        // One input while both replicas idle: replica 0 runs it wide, and replica 1 gets
        // nothing (even when more arrives) until replica 0 is back.
        let r1 = ask(1);
        let r0 = ask(0);
        settle();
        let (e, _rx1) = entry(5);
        queue.append(vec![e]).unwrap();
        let p = r0.join().unwrap().unwrap();
        assert!(p.wide);
        assert_eq!(p.entries.len(), 1);
        let (e, _rx2) = entry(6);
        queue.append(vec![e]).unwrap();
        settle();
        assert!(!r1.is_finished(), "replica 1 ran beside a wide pass");
        // Replica 0 asks again: both idle, one input, so replica 0 runs it wide again.
        let p = ask(0).join().unwrap().unwrap();
        assert!(p.wide);
        assert_eq!(p.entries.len(), 1);
        // With two inputs waiting, replica 1 gets one of them (narrow).
        let (e, _rx3) = entry(7);
        let (f, _rx4) = entry(9);
        let r0 = ask(0);
        settle();
        queue.append(vec![e, f]).unwrap();
        let (a, b) = (r0.join().unwrap().unwrap(), r1.join().unwrap().unwrap());
        assert!(!a.wide && !b.wide);
        assert_eq!(a.entries.len() + b.entries.len(), 2);
        assert_eq!(queue.stats().batches.load(Ordering::Relaxed), 6);
        queue.shutdown();
    }

    #[test]
    fn a_short_window_runs_wide_when_every_replica_idles() {
        let limits = BatchLimits {
            max_pass: 4,
            replicas: 2,
            wide: true,
            wide_window: 4,
            packs: true,
            ..PADDED
        };
        let window = |lens: &[usize]| -> Vec<Entry> { lens.iter().map(|&l| entry(l).0).collect() };
        // Every replica idle: up to `wide_window` inputs are one (sorted) pass.
        assert_eq!(
            lens(&cut_passes(window(&[9, 3, 5]), limits, 2)),
            vec![vec![3, 5, 9]]
        );
        // One replica busy, or more than `wide_window` inputs: split as before.
        assert_eq!(lens(&cut_passes(window(&[9, 3, 5]), limits, 1)).len(), 1);
        assert_eq!(
            lens(&cut_passes(window(&[9, 3, 5]), limits, 1))[0].len(),
            3,
            "one idle replica: one token-balanced pass"
        );
        let narrow = BatchLimits {
            wide_window: 2,
            ..limits
        };
        assert_eq!(lens(&cut_passes(window(&[9, 3, 5]), narrow, 2)).len(), 2);
        assert_eq!(
            lens(&cut_passes(window(&[9, 3]), narrow, 2)),
            vec![vec![3, 9]]
        );
        // Through the queue: both replicas asking, a window of 3 goes to replica 0, wide.
        let queue = Queue::start(limits, "w").unwrap();
        let ask = |r: usize| {
            let q = queue.clone();
            std::thread::spawn(move || q.next_batch(r))
        };
        let (r0, r1) = (ask(0), ask(1));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (mut entries, mut keep) = (Vec::new(), Vec::new());
        for len in [4, 8, 6] {
            let (e, rx) = entry(len);
            entries.push(e);
            keep.push(rx);
        }
        queue.append(entries).unwrap();
        let p = r0.join().unwrap().unwrap();
        assert!(p.wide);
        assert_eq!(
            p.entries.iter().map(Entry::len).collect::<Vec<_>>(),
            vec![4, 6, 8]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!r1.is_finished(), "replica 1 ran beside a wide pass");
        queue.shutdown();
        let _ = r1.join();
    }

    fn fill(pending: usize, arriving: usize, in_flight: usize, concurrency: usize) -> Fill {
        Fill {
            pending,
            arriving,
            in_flight,
            concurrency,
            waited: Duration::ZERO,
        }
    }

    #[test]
    fn a_sequential_client_never_waits() {
        let bound = Duration::from_millis(2);
        // One request in flight, queued: nothing else is coming.
        assert_eq!(fill_wait(fill(1, 0, 1, 1), 8, bound), None);
        // A request of 4 inputs from a lone client: its window is all there is.
        assert_eq!(fill_wait(fill(4, 0, 1, 1), 8, bound), None);
        // Nothing queued: nothing to start, nothing to wait for.
        assert_eq!(fill_wait(fill(0, 1, 2, 4), 8, bound), None);
    }

    #[test]
    fn a_short_window_waits_for_concurrent_clients_within_the_bound() {
        let bound = Duration::from_millis(2);
        // Four requests in flight, one queued, three tokenizing: wait.
        assert_eq!(fill_wait(fill(1, 3, 4, 4), 8, bound), Some(bound));
        // One queued, four clients lately, the others on their way back: wait.
        assert_eq!(fill_wait(fill(1, 0, 1, 4), 8, bound), Some(bound));
        // ... for what is left of the bound, and not once it is spent.
        let waited = Fill {
            waited: Duration::from_micros(1500),
            ..fill(2, 0, 2, 4)
        };
        assert_eq!(
            fill_wait(waited, 8, bound),
            Some(Duration::from_micros(500))
        );
        let spent = Fill {
            waited: bound,
            ..fill(2, 0, 2, 4)
        };
        assert_eq!(fill_wait(spent, 8, bound), None);
        // Every client's request is in (queued or running), none tokenizing: go.
        assert_eq!(fill_wait(fill(2, 0, 4, 4), 8, bound), None);
        // As many inputs as clients, or a full pass: go.
        assert_eq!(fill_wait(fill(4, 0, 2, 4), 8, bound), None);
        assert_eq!(fill_wait(fill(2, 0, 1, 4), 2, bound), None);
        // A request still tokenizing is waited for even past the concurrency estimate.
        assert_eq!(fill_wait(fill(1, 1, 2, 1), 8, bound), Some(bound));
    }

    #[test]
    fn concurrency_is_the_peak_of_the_last_window_or_two() {
        let demand = Arc::new(Demand::default());
        let t0 = Instant::now();
        let mut c = Concurrency {
            previous: 0,
            since: t0,
        };
        let guards: Vec<_> = (0..4).map(|_| demand.admit()).collect();
        drop(guards);
        assert_eq!(demand.in_flight(), 0);
        assert_eq!(demand.arriving.load(Ordering::Relaxed), 0);
        assert_eq!(c.read(&demand, t0), 4, "the peak, though all have left");
        // One window on, it is still remembered; two windows of a lone client, it is not.
        let (_one, _a) = demand.admit();
        assert_eq!(c.read(&demand, t0 + CONCURRENCY_WINDOW), 4);
        assert_eq!(c.read(&demand, t0 + 2 * CONCURRENCY_WINDOW), 1);
    }

    #[test]
    fn the_queue_waits_for_a_concurrent_request_but_not_for_a_lone_one() {
        let limits = BatchLimits {
            fill_wait: Duration::from_millis(400),
            ..PADDED
        };
        let queue = Queue::start(limits, "fill").unwrap();
        let ask = || {
            let q = queue.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let pass = q.next_batch(0).unwrap();
                (pass.entries.len(), t.elapsed())
            })
        };
        // A lone client: admitted, queued, handed out at once.
        let (admitted, arriving) = queue.demand().admit();
        let (e, _rx) = entry(5);
        queue.append_admitted(vec![e], arriving).unwrap();
        let (n, took) = ask().join().unwrap();
        assert_eq!(n, 1);
        assert!(
            took < Duration::from_millis(200),
            "a lone request waited {took:?}"
        );
        drop(admitted);
        assert_eq!(queue.stats().fill_waits.load(Ordering::Relaxed), 0);

        // Two clients: the second is still tokenizing when the first is queued.
        let waiter = ask();
        std::thread::sleep(Duration::from_millis(20));
        let (_a1, arriving1) = queue.demand().admit();
        let (_a2, arriving2) = queue.demand().admit();
        let (e1, _rx1) = entry(5);
        queue.append_admitted(vec![e1], arriving1).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let (e2, _rx2) = entry(6);
        queue.append_admitted(vec![e2], arriving2).unwrap();
        let (n, took) = waiter.join().unwrap();
        assert_eq!(n, 2, "the two requests share one pass");
        assert!(
            took < Duration::from_millis(400),
            "started when both were in"
        );
        assert_eq!(queue.stats().fill_waits.load(Ordering::Relaxed), 1);

        // The bound holds when the expected request never comes.
        let (_a3, arriving3) = queue.demand().admit();
        let (_a4, _never) = queue.demand().admit();
        let (e3, _rx3) = entry(5);
        let t = Instant::now();
        let waiter = ask();
        queue.append_admitted(vec![e3], arriving3).unwrap();
        let (n, _) = waiter.join().unwrap();
        assert_eq!(n, 1);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(380) && took < Duration::from_secs(5),
            "waited {took:?} for a 400 ms bound"
        );
        assert_eq!(queue.stats().inputs.load(Ordering::Relaxed), 4);
        assert_eq!(queue.stats().batches.load(Ordering::Relaxed), 3);
        queue.shutdown();
    }
}
