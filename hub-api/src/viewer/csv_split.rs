//! CSV to Parquet on every core: the source is cut into chunks at record
//! ends (a quote-aware scan, far cheaper than parsing), the chunks are
//! decoded by arrow's CSV decoder on several threads, and one thread writes
//! the batches to Parquet in source order.
//!
//! Memory stays bounded: at most [`AHEAD`] chunks (their bytes and decoded
//! batches) exist between the reader and the writer at any time, and a record
//! may not be longer than [`MAX_RECORD`] (arrow would buffer it whole).
//!
//! The result is the same as decoding the file in one pass: a chunk starts
//! where a record starts, so every decoder sees whole records, and a data
//! error names the same line the one-pass reader would.

use super::convert::{writer_props, Converted, Failure, BATCH};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::{Bytes, BytesMut};
use parquet::arrow::ArrowWriter;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// Bytes per chunk (cut at the last record end before this size).
pub const CHUNK: usize = 2 << 20;
/// Chunks between the reader and the writer, at most.
pub const AHEAD: usize = 6;
/// The longest record accepted.
pub const MAX_RECORD: usize = 64 << 20;

/// Where records end in a byte stream, scanned incrementally: `\n`, or a `\r`
/// not followed by `\n`, outside a quoted field. A quote opens a field only at
/// the field's start (as csv-core reads it: `5"` is a literal quote), and `""`
/// inside a quoted field is an escaped quote.
#[derive(Debug)]
pub struct Cutter {
    delim: u8,
    /// The next byte to look at.
    pos: usize,
    in_quotes: bool,
    /// The end of the last complete record seen.
    last_cut: Option<usize>,
    /// Stop at the first record end.
    first_only: bool,
}

impl Cutter {
    pub fn new(delim: u8) -> Self {
        Self {
            delim,
            pos: 0,
            in_quotes: false,
            last_cut: None,
            first_only: false,
        }
    }

    /// A cutter that stops at the first record end ([`Self::first_cut`]).
    pub fn first(delim: u8) -> Self {
        Self {
            first_only: true,
            ..Self::new(delim)
        }
    }

    /// The first record end, for a cutter made by [`Self::first`].
    pub fn first_cut(&self) -> Option<usize> {
        self.last_cut
    }

    /// Scans `buf` from where the last call stopped. `eof`: no byte follows
    /// `buf`, so a trailing `\r` or `"` can be decided.
    pub fn scan(&mut self, buf: &[u8], eof: bool) {
        let n = buf.len();
        while self.pos < n {
            if self.first_only && self.last_cut.is_some() {
                return;
            }
            if self.in_quotes {
                let Some(i) = memchr::memchr(b'"', &buf[self.pos..]).map(|i| i + self.pos) else {
                    self.pos = n;
                    return;
                };
                if i + 1 == n && !eof {
                    // Is it `""` or the closing quote? The next byte says.
                    self.pos = i;
                    return;
                }
                if buf.get(i + 1) == Some(&b'"') {
                    self.pos = i + 2;
                } else {
                    self.in_quotes = false;
                    self.pos = i + 1;
                }
                continue;
            }
            let Some(i) =
                memchr::memchr3(b'\n', b'\r', b'"', &buf[self.pos..]).map(|i| i + self.pos)
            else {
                self.pos = n;
                return;
            };
            match buf[i] {
                b'\n' => {
                    self.last_cut = Some(i + 1);
                    self.pos = i + 1;
                }
                b'\r' => {
                    if i + 1 == n && !eof {
                        self.pos = i;
                        return;
                    }
                    if buf.get(i + 1) != Some(&b'\n') {
                        self.last_cut = Some(i + 1);
                    }
                    self.pos = i + 1;
                }
                _ => {
                    let field_start =
                        i == 0 || matches!(buf[i - 1], b'\n' | b'\r') || buf[i - 1] == self.delim;
                    if field_start {
                        self.in_quotes = true;
                    }
                    self.pos = i + 1;
                }
            }
        }
    }

    /// Takes the last record end seen, and moves the scan's positions to
    /// count from there (the caller splits that many bytes off the buffer).
    pub fn take_cut(&mut self) -> Option<usize> {
        let c = self.last_cut.take()?;
        self.pos -= c;
        Some(c)
    }
}

/// Decoder threads for a machine.
pub fn decoders() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

type Decoded = (u64, Result<Vec<RecordBatch>, String>);

/// Converts the records after the header: `rest` holds the bytes already
/// read past the header, `input` the remainder of the source. `fmt` must be
/// the file's format without a header row.
pub fn convert(
    schema: SchemaRef,
    fmt: arrow_csv::reader::Format,
    delim: u8,
    rest: Bytes,
    mut input: impl Read,
    out: std::fs::File,
    chunk: usize,
) -> Result<Converted, Failure> {
    let threads = decoders();
    let (work_tx, work_rx) = sync_channel::<(u64, Bytes)>(threads);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<Decoded>(AHEAD);
    // A token per chunk in flight: the reader takes one, the writer gives it back.
    let (token_tx, token_rx) = sync_channel::<()>(AHEAD);
    for _ in 0..AHEAD {
        token_tx.send(()).expect("room for every token");
    }
    let mut decoders = Vec::with_capacity(threads);
    for k in 0..threads {
        let (rx, tx, schema, fmt) = (
            work_rx.clone(),
            done_tx.clone(),
            schema.clone(),
            fmt.clone(),
        );
        let t = std::thread::Builder::new()
            .name(format!("viewer-csv-{k}"))
            .spawn(move || decode_chunks(&rx, &tx, schema, fmt))
            .map_err(|e| Failure::Io(e.to_string()))?;
        decoders.push(t);
    }
    // The decoders hold the only receivers: once they are gone (the writer
    // stopped), the reader's sends fail instead of waiting.
    drop(work_rx);
    drop(done_tx);
    let writer = {
        let schema = schema.clone();
        std::thread::Builder::new()
            .name("viewer-parquet".into())
            .spawn(move || write_in_order(done_rx, token_tx, schema, out))
            .map_err(|e| Failure::Io(e.to_string()))?
    };

    let read = read_chunks(&mut input, delim, rest, chunk, &work_tx, &token_rx);
    drop(work_tx);
    for t in decoders {
        let _ = t.join();
    }
    let written = match writer.join() {
        Ok(r) => r,
        Err(_) => Err(Failure::Io("the Parquet writer thread panicked".into())),
    };
    // A data error the writer met explains a reader stopped early, so it
    // comes first; then the reader's own failure.
    let rows = written?;
    read?;
    Ok(Converted {
        schema,
        num_rows: rows,
    })
}

/// Reads the source, cuts chunks at record ends and hands them out in order.
/// Stops early (Ok) when the pipeline stopped taking chunks: the writer's
/// answer says why.
fn read_chunks(
    input: &mut impl Read,
    delim: u8,
    rest: Bytes,
    chunk: usize,
    work: &SyncSender<(u64, Bytes)>,
    tokens: &Receiver<()>,
) -> Result<(), Failure> {
    let mut buf = BytesMut::with_capacity(2 * chunk);
    buf.extend_from_slice(&rest);
    drop(rest);
    let mut cutter = Cutter::new(delim);
    let (mut seq, mut eof, mut offset) = (0u64, false, 0u64);
    loop {
        while !eof && buf.len() < chunk {
            let start = buf.len();
            buf.resize(chunk, 0);
            let n = input
                .read(&mut buf[start..])
                .map_err(|e| Failure::Io(e.to_string()));
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    buf.truncate(start);
                    return Err(e);
                }
            };
            buf.truncate(start + n);
            eof = n == 0;
        }
        // The last record end within a chunk's length; past it only for a
        // record longer than a chunk.
        let window = buf.len().min(chunk);
        cutter.scan(&buf[..window], eof && window == buf.len());
        let mut cut = cutter.take_cut();
        if cut.is_none() && window < buf.len() {
            cutter.scan(&buf, eof);
            cut = cutter.take_cut();
        }
        let piece = if let Some(c) = cut {
            buf.split_to(c).freeze()
        } else if eof {
            // The rest: one record, maybe unterminated.
            if buf.is_empty() {
                return Ok(());
            }
            buf.split().freeze()
        } else {
            if buf.len() >= MAX_RECORD {
                return Err(Failure::Data(format!(
                    "no record ends within {} MiB after byte {offset} of the data \
                     (an unterminated quote?)",
                    MAX_RECORD >> 20
                )));
            }
            // A record longer than a chunk: read on.
            let start = buf.len();
            buf.resize(start + chunk, 0);
            let n = input
                .read(&mut buf[start..])
                .map_err(|e| Failure::Io(e.to_string()))?;
            buf.truncate(start + n);
            eof = n == 0;
            continue;
        };
        offset += piece.len() as u64;
        if tokens.recv().is_err() || work.send((seq, piece)).is_err() {
            return Ok(());
        }
        seq += 1;
        if eof && buf.is_empty() {
            return Ok(());
        }
    }
}

fn decode_chunks(
    work: &Mutex<Receiver<(u64, Bytes)>>,
    done: &SyncSender<Decoded>,
    schema: SchemaRef,
    fmt: arrow_csv::reader::Format,
) {
    loop {
        let job = work.lock().expect("not poisoned").recv();
        let Ok((seq, chunk)) = job else { return };
        let r = decode(&chunk, schema.clone(), fmt.clone()).map_err(|e| e.to_string());
        drop(chunk);
        if done.send((seq, r)).is_err() {
            return;
        }
    }
}

fn decode(
    mut data: &[u8],
    schema: SchemaRef,
    fmt: arrow_csv::reader::Format,
) -> Result<Vec<RecordBatch>, arrow_schema::ArrowError> {
    let mut d = arrow_csv::ReaderBuilder::new(schema)
        .with_format(fmt)
        .with_batch_size(BATCH)
        .build_decoder();
    let mut out = Vec::new();
    loop {
        let n = d.decode(data)?;
        data = &data[n..];
        // Full batch, or all input given (then `decode(&[])` ends the last record).
        if n == 0 || d.capacity() == 0 {
            if let Some(b) = d.flush()? {
                out.push(b);
            }
            if n == 0 {
                return Ok(out);
            }
        }
    }
}

/// Writes decoded chunks in source order; answers the rows written.
fn write_in_order(
    done: Receiver<Decoded>,
    tokens: SyncSender<()>,
    schema: SchemaRef,
    out: std::fs::File,
) -> Result<u64, Failure> {
    let mut w = ArrowWriter::try_new(out, schema, Some(writer_props()))?;
    let mut waiting = BTreeMap::new();
    let (mut next, mut rows) = (0u64, 0u64);
    for (seq, r) in done {
        waiting.insert(seq, r);
        while let Some(r) = waiting.remove(&next) {
            // Arrow counts the header as line 1 in the one-pass reader: a
            // chunk's line numbers move by the records before it.
            let batches = r.map_err(|e| Failure::Data(shift_line(&e, rows + 1)))?;
            for b in &batches {
                rows += b.num_rows() as u64;
                w.write(b)?;
            }
            next += 1;
            let _ = tokens.send(());
        }
    }
    w.close()?;
    Ok(rows)
}

/// Adds `by` to the first "line N" in arrow's message.
fn shift_line(msg: &str, by: u64) -> String {
    let Some(at) = msg.find("line ") else {
        return msg.to_string();
    };
    let digits = &msg[at + 5..];
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    match digits[..len].parse::<u64>() {
        Ok(n) => format!("{}line {}{}", &msg[..at], n + by, &digits[len..]),
        Err(_) => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(text: &[u8], step: usize) -> Vec<usize> {
        // Feeds the bytes `step` at a time, as reads would.
        let mut c = Cutter::new(b',');
        let (mut out, mut base, mut buf) = (vec![], 0, Vec::new());
        for piece in text.chunks(step) {
            buf.extend_from_slice(piece);
            c.scan(&buf, false);
            if let Some(k) = c.take_cut() {
                buf.drain(..k);
                base += k;
                out.push(base);
            }
        }
        c.scan(&buf, true);
        if let Some(k) = c.take_cut() {
            out.push(base + k);
        }
        out
    }

    #[test]
    fn cuts_only_at_record_ends() {
        let text = b"a,\"x\ny\",c\n5\",\"q\"\"\n\"\r\nz\rw\n";
        // After `c\n`, after `"\r\n` (the record with a literal quote, then a
        // quoted field with an escaped quote and a newline), after the lone
        // `\r`, at the end.
        for step in 1..text.len() {
            let got = cuts(text, step);
            let last = *got.last().unwrap();
            assert_eq!(last, text.len(), "step {step}");
            for k in &got {
                assert!(
                    [10, 21, 23, 25].contains(k),
                    "step {step}: cut at {k} in {got:?}"
                );
            }
        }
        assert_eq!(cuts(text, text.len()), vec![25]);
        assert_eq!(cuts(text, 1), vec![10, 21, 23, 25]);
    }

    #[test]
    fn shifts_the_first_line_number() {
        assert_eq!(
            shift_line(
                "incorrect number of fields for line 3, expected 2 got 3",
                10
            ),
            "incorrect number of fields for line 13, expected 2 got 3"
        );
        assert_eq!(shift_line("no number here", 4), "no number here");
    }
}
