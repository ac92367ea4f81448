//! Where log lines go: standard output, written by a thread of its own that
//! gathers the lines made within `interval` into one `write`, so a busy server
//! pays a memory copy per line instead of a system call (the gateway logs one
//! line per call; at 16 concurrent calls on 2 cores the per-line `write` was
//! measurable in its tail latency, docs/BENCHMARKS.md). Warnings and errors are
//! written at once, after every line made before them; dropping the [`Flusher`]
//! writes what is left. So a clean exit loses nothing, and a crash loses at
//! most `interval` of lines below warning (as nginx's `access_log ... flush=`).
//! An interval of zero writes each line as it is made.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// Lines held past this are written by the thread that makes the next line,
/// so a stalled output bounds memory rather than growing it.
const MAX_PENDING: usize = 1 << 20;

/// The shared state of a batched writer over `W`.
struct Shared<W> {
    pending: Mutex<Pending>,
    /// Signalled when the first line of a batch arrives, or on stop.
    wake: Condvar,
    /// Held while a batch is written, so batches and urgent lines keep the
    /// order they were made in.
    out: Mutex<W>,
    interval: Duration,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    stop: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-appended line that
    // matters more than the lines after it: keep logging.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write> Shared<W> {
    /// Writes every pending line, then `tail`.
    fn write_out(&self, tail: &[u8]) -> std::io::Result<()> {
        let mut out = lock(&self.out);
        let batch = std::mem::take(&mut lock(&self.pending).buf);
        if !batch.is_empty() {
            out.write_all(&batch)?;
        }
        if !tail.is_empty() {
            out.write_all(tail)?;
        }
        out.flush()
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        if self.interval.is_zero() {
            // Nothing is ever pending: the line goes straight out.
            let mut out = lock(&self.out);
            out.write_all(line)?;
            return out.flush();
        }
        let mut p = lock(&self.pending);
        if p.buf.len() + line.len() > MAX_PENDING {
            drop(p);
            return self.write_out(line);
        }
        let first = p.buf.is_empty();
        p.buf.extend_from_slice(line);
        drop(p);
        if first {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// A [`MakeWriter`] for the `fmt` layers: lines below warning are batched,
/// warnings and errors written through.
pub struct BatchedWriter<W> {
    shared: Arc<Shared<W>>,
}

/// Keeps the writing thread; dropping it writes the lines still pending and
/// stops the thread.
pub struct Flusher<W: Write> {
    shared: Arc<Shared<W>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<W: Write + Send + 'static> BatchedWriter<W> {
    /// A writer over `out` whose lines are written at most `interval` after
    /// they are made (zero: at once), and the guard of its thread.
    pub fn new(out: W, interval: Duration) -> std::io::Result<(Self, Flusher<W>)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            out: Mutex::new(out),
            interval,
        });
        let thread = if interval.is_zero() {
            None
        } else {
            let s = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("log-writer".into())
                    .spawn(move || run(&s))?,
            )
        };
        Ok((
            BatchedWriter {
                shared: shared.clone(),
            },
            Flusher { shared, thread },
        ))
    }
}

/// The writing thread: sleeps until a batch begins, lets it gather for the
/// interval (cut short by a stop), writes it.
fn run<W: Write>(s: &Shared<W>) {
    let mut p = lock(&s.pending);
    loop {
        while p.buf.is_empty() && !p.stop {
            p = s.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        if p.stop {
            return;
        }
        // Lines appended meanwhile do not signal (the buffer is not empty), so
        // only a stop wakes this wait early.
        let deadline = std::time::Instant::now() + s.interval;
        while !p.stop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            p = s
                .wake
                .wait_timeout(p, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(p);
        // Nowhere to report a failed log write but the log itself.
        let _ = s.write_out(&[]);
        p = lock(&s.pending);
    }
}

impl<W: Write> Drop for Flusher<W> {
    fn drop(&mut self) {
        lock(&self.shared.pending).stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.shared.write_out(&[]);
    }
}

/// One event's writer: the `fmt` layer formats the whole line, then writes it
/// with one `write_all`.
pub struct Line<'a, W> {
    shared: &'a Shared<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.urgent {
            self.shared.write_out(buf)?;
        } else {
            self.shared.append(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BatchedWriter<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Line {
            shared: &self.shared,
            // ERROR < WARN < INFO in tracing's order.
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An output that records what reached it and how many writes it took.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }

        /// Waits (at most 5 s) until the output is exactly `expected`.
        fn wait_for(&self, expected: &str) {
            let t0 = std::time::Instant::now();
            while self.text() != expected {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "never written: {expected:?}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn line(w: &BatchedWriter<Sink>, level: tracing::Level, text: &str) {
        let mut l = Line {
            shared: &w.shared,
            urgent: level <= tracing::Level::WARN,
        };
        l.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_are_batched_into_one_write_and_none_is_lost_on_drop() {
        let sink = Sink::default();
        let (w, flusher) = BatchedWriter::new(sink.clone(), Duration::from_secs(3600)).unwrap();
        for i in 0..100 {
            line(&w, tracing::Level::INFO, &format!("line {i}\n"));
        }
        // The thread is asleep for the interval: nothing written yet.
        assert_eq!(sink.writes.load(Ordering::SeqCst), 0);
        // Dropping the guard cuts the hour short.
        let t0 = std::time::Instant::now();
        drop(flusher);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), expected);
        assert_eq!(sink.writes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_batch_is_written_within_the_interval() {
        let sink = Sink::default();
        let (w, _flusher) = BatchedWriter::new(sink.clone(), Duration::from_millis(20)).unwrap();
        line(&w, tracing::Level::INFO, "a\n");
        line(&w, tracing::Level::DEBUG, "b\n");
        sink.wait_for("a\nb\n");
        // A second batch wakes the thread again.
        line(&w, tracing::Level::INFO, "c\n");
        sink.wait_for("a\nb\nc\n");
    }

    #[test]
    fn a_warning_is_written_at_once_after_the_lines_before_it() {
        let sink = Sink::default();
        let (w, _flusher) = BatchedWriter::new(sink.clone(), Duration::from_secs(3600)).unwrap();
        line(&w, tracing::Level::INFO, "before\n");
        line(&w, tracing::Level::WARN, "warned\n");
        assert_eq!(sink.text(), "before\nwarned\n");
        line(&w, tracing::Level::ERROR, "failed\n");
        assert_eq!(sink.text(), "before\nwarned\nfailed\n");
    }

    #[test]
    fn zero_interval_writes_each_line_at_once() {
        let sink = Sink::default();
        let (w, flusher) = BatchedWriter::new(sink.clone(), Duration::ZERO).unwrap();
        assert!(flusher.thread.is_none());
        line(&w, tracing::Level::INFO, "x\n");
        line(&w, tracing::Level::INFO, "y\n");
        assert_eq!(sink.text(), "x\ny\n");
        assert_eq!(sink.writes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_buffer_is_written_by_the_line_that_overflows_it() {
        let sink = Sink::default();
        let (w, _flusher) = BatchedWriter::new(sink.clone(), Duration::from_secs(3600)).unwrap();
        let long = "z".repeat(999) + "\n";
        let n = MAX_PENDING / long.len() + 1;
        for _ in 0..n {
            line(&w, tracing::Level::INFO, &long);
        }
        // Everything is out without waiting for the thread, in order.
        assert_eq!(sink.text(), long.repeat(n));
    }

    #[test]
    fn events_through_a_subscriber_reach_the_output_whole() {
        use tracing_subscriber::layer::SubscriberExt;
        let sink = Sink::default();
        let (w, flusher) = BatchedWriter::new(sink.clone(), Duration::from_millis(5)).unwrap();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(w)
                .with_ansi(false),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 1, "first");
            tracing::warn!(n = 2, "second");
            tracing::info!(n = 3, "third");
        });
        drop(flusher);
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("first") && lines[0].contains("n=1"),
            "{text}"
        );
        assert!(
            lines[1].contains("WARN") && lines[1].contains("second"),
            "{text}"
        );
        assert!(
            lines[2].contains("third") && lines[2].contains("n=3"),
            "{text}"
        );
    }
}
