//! Converting one source file to Parquet, on a blocking thread, in bounded
//! memory: the bytes arrive through a [`ChannelReader`] (a few chunks in
//! flight), arrow's CSV / JSON readers decode [`BATCH`] rows at a time and
//! `ArrowWriter` writes row groups of at most [`ROW_GROUP`] rows to a file.

use super::csv_split;
use super::discover::Format;
use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::io::{BufRead, BufReader, Cursor, Read};
use std::sync::{Arc, Mutex};

/// Rows per decoded batch.
pub const BATCH: usize = 8192;
/// Rows per Parquet row group: a page of the viewer decodes one or two.
pub const ROW_GROUP: usize = 16 * 1024;
/// Bytes at the head of a file that schema inference may look at.
pub const INFER_BYTES: usize = 4 << 20;
/// Records that schema inference looks at.
pub const INFER_RECORDS: usize = 10_000;
/// Largest `.json` file holding one array (read whole; JSON Lines stream).
pub const MAX_JSON_ARRAY: u64 = 64 << 20;

/// Why a conversion stopped.
#[derive(Debug)]
pub enum Failure {
    /// The file cannot be shown: the reason (which line, why).
    Data(String),
    /// Reading the source or writing the result failed: retried later.
    Io(String),
}

impl From<ArrowError> for Failure {
    fn from(e: ArrowError) -> Self {
        Failure::Data(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Failure {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Failure::Io(e.to_string())
    }
}

/// A blocking `Read` over chunks an async task sends; a failed source read
/// is recorded in `failed`, so it is told apart from bad data.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
    pub failed: Arc<Mutex<Option<String>>>,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>) -> Self {
        Self {
            rx,
            cur: Bytes::new(),
            failed: Arc::default(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    *self.failed.lock().expect("not poisoned") = Some(e.clone());
                    return Err(std::io::Error::other(e));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// What a conversion wrote.
#[derive(Debug)]
pub struct Converted {
    pub schema: SchemaRef,
    pub num_rows: u64,
}

/// The Parquet writer, on a thread of its own: decoding (this thread) and
/// encoding (that one) overlap, with at most [`IN_FLIGHT`] batches between
/// them (memory stays bounded).
pub struct Writer {
    tx: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    thread: Option<std::thread::JoinHandle<Result<(), parquet::errors::ParquetError>>>,
}

/// Decoded batches waiting for the writer thread, at most.
pub const IN_FLIGHT: usize = 2;

impl Writer {
    pub fn write(&mut self, b: &RecordBatch) -> Result<(), Failure> {
        let sent = self.tx.as_ref().map(|tx| tx.send(b.clone()).is_ok());
        if sent != Some(true) {
            // The thread stopped: its error says why.
            self.tx = None;
            self.close()?;
            return Err(Failure::Io("the Parquet writer stopped".into()));
        }
        Ok(())
    }

    pub fn close(&mut self) -> Result<(), Failure> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => Ok(r?),
            Some(Err(_)) => Err(Failure::Io("the Parquet writer thread panicked".into())),
            None => Err(Failure::Io("the Parquet writer stopped".into())),
        }
    }
}

/// How the viewer's Parquet files are written.
pub fn writer_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(ROW_GROUP)
        .build()
}

fn writer(out: std::fs::File, schema: SchemaRef) -> Result<Writer, Failure> {
    let mut w = ArrowWriter::try_new(out, schema, Some(writer_props()))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(IN_FLIGHT);
    let thread = std::thread::Builder::new()
        .name("viewer-parquet".into())
        .spawn(move || {
            for b in rx {
                w.write(&b)?;
            }
            w.close().map(|_| ())
        })
        .map_err(|e| Failure::Io(e.to_string()))?;
    Ok(Writer {
        tx: Some(tx),
        thread: Some(thread),
    })
}

/// Reads up to [`INFER_BYTES`] of the head of `input`; answers the head and
/// where its last complete line ends.
fn head(input: &mut impl Read) -> std::io::Result<(Vec<u8>, usize)> {
    let mut head = Vec::with_capacity(64 * 1024);
    input.take(INFER_BYTES as u64).read_to_end(&mut head)?;
    let cut = if head.len() < INFER_BYTES {
        head.len()
    } else {
        head.iter()
            .rposition(|b| *b == b'\n')
            .map_or(head.len(), |i| i + 1)
    };
    Ok((head, cut))
}

/// Converts one file to Parquet at `out`. `size` is the source's size.
pub fn convert(
    format: Format,
    size: u64,
    input: impl Read,
    out: std::fs::File,
) -> Result<Converted, Failure> {
    convert_with(format, size, input, out, PARALLEL_CSV, csv_split::CHUNK)
}

/// [`convert`], with the size over which CSV is decoded in parallel and the
/// parallel path's chunk size as parameters (the tests and the fuzz target
/// make both small, so the chunking runs on small inputs).
pub fn convert_with(
    format: Format,
    size: u64,
    mut input: impl Read,
    out: std::fs::File,
    parallel_over: u64,
    chunk: usize,
) -> Result<Converted, Failure> {
    let (head, cut) = head(&mut input).map_err(|e| Failure::Io(e.to_string()))?;
    let head_bytes = Bytes::from(head);
    match format {
        Format::Csv | Format::Tsv => {
            let delim = if format == Format::Tsv { b'\t' } else { b',' };
            let fmt = arrow_csv::reader::Format::default()
                .with_header(true)
                .with_delimiter(delim);
            let (schema, _) = fmt
                .clone()
                .infer_schema(Cursor::new(&head_bytes[..cut]), Some(INFER_RECORDS))?;
            if schema.fields().is_empty() {
                return Err(Failure::Data("the file has no header row".into()));
            }
            let schema = Arc::new(schema);
            if size > parallel_over {
                return csv_parallel(schema, fmt, delim, head_bytes, input, out, chunk);
            }
            let data = Cursor::new(head_bytes).chain(input);
            let reader = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_format(fmt)
                .with_batch_size(BATCH)
                .build(data)?;
            let mut w = writer(out, schema.clone())?;
            let mut rows = 0u64;
            for batch in reader {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                w.write(&batch)?;
            }
            w.close()?;
            Ok(Converted {
                schema,
                num_rows: rows,
            })
        }
        Format::Json => {
            let data = Cursor::new(head_bytes.clone()).chain(input);
            let first = head_bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                if size > MAX_JSON_ARRAY {
                    return Err(Failure::Data(format!(
                        "a JSON array file is read whole, and this one is over {} MiB; \
                         store it as JSON Lines",
                        MAX_JSON_ARRAY >> 20
                    )));
                }
                let mut all = Vec::new();
                BufReader::new(data)
                    .read_to_end(&mut all)
                    .map_err(|e| Failure::Io(e.to_string()))?;
                let items: Vec<serde_json::Value> = serde_json::from_slice(&all)
                    .map_err(|e| Failure::Data(format!("invalid JSON: {e}")))?;
                drop(all);
                let mut lines = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    if !v.is_object() {
                        return Err(Failure::Data(format!(
                            "item {} of the array is not an object",
                            i + 1
                        )));
                    }
                    serde_json::to_writer(&mut lines, v).expect("serializes");
                    lines.push(b'\n');
                }
                drop(items);
                let n = lines.len();
                return json_lines(Cursor::new(&lines[..n]), &lines[..n], out, "item");
            }
            json_lines(data, &head_bytes[..cut], out, "line")
        }
        Format::Parquet => Err(Failure::Data("Parquet files are read in place".into())),
    }
}

/// CSV files larger than this are decoded on several threads
/// ([`csv_split`]); smaller ones in one pass.
pub const PARALLEL_CSV: u64 = 4 * csv_split::CHUNK as u64;

/// The parallel path: the header record is skipped here (its end found by the
/// same quote-aware scan that cuts the chunks; empty lines before it are
/// skipped, as the one-pass reader does), the rest goes to [`csv_split`].
fn csv_parallel(
    schema: SchemaRef,
    fmt: arrow_csv::reader::Format,
    delim: u8,
    head: Bytes,
    input: impl Read,
    out: std::fs::File,
    chunk: usize,
) -> Result<Converted, Failure> {
    let mut at = 0;
    loop {
        let mut c = csv_split::Cutter::first(delim);
        c.scan(&head[at..], false);
        let Some(end) = c.first_cut() else {
            return Err(Failure::Data(format!(
                "the header row is longer than {} MiB",
                INFER_BYTES >> 20
            )));
        };
        let blank = head[at..at + end]
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n'));
        at += end;
        if !blank {
            break;
        }
    }
    let fmt = fmt.with_header(false);
    csv_split::convert(schema, fmt, delim, head.slice(at..), input, out, chunk)
}

/// JSON Lines: the schema from the first records of `head`, then every line
/// decoded with its line number (a bad line is named).
fn json_lines(
    data: impl Read,
    head: &[u8],
    out: std::fs::File,
    unit: &str,
) -> Result<Converted, Failure> {
    let (schema, _) = arrow_json::reader::infer_json_schema(
        BufReader::new(Cursor::new(head)),
        Some(INFER_RECORDS),
    )
    .map_err(|e| Failure::Data(format!("{unit}s 1..: {e}")))?;
    if schema.fields().is_empty() {
        return Err(Failure::Data("no JSON object with fields".into()));
    }
    let schema: SchemaRef = Arc::new(in_source_order(schema, head));
    let mut dec = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(BATCH)
        .build_decoder()?;
    let mut w = writer(out, schema.clone())?;
    let mut r = BufReader::with_capacity(1 << 20, data);
    let mut line = Vec::new();
    let (mut n, mut first, mut rows) = (0u64, 1u64, 0u64);
    let flush = |dec: &mut arrow_json::reader::Decoder,
                 w: &mut Writer,
                 first: u64,
                 n: u64|
     -> Result<u64, Failure> {
        match dec.flush() {
            Ok(Some(b)) => {
                let k = b.num_rows() as u64;
                write(w, &b)?;
                Ok(k)
            }
            Ok(None) => Ok(0),
            Err(e) => Err(Failure::Data(format!("{unit}s {first}..{n}: {e}"))),
        }
    };
    loop {
        line.clear();
        let k = r
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::Io(e.to_string()))?;
        if k == 0 {
            break;
        }
        n += 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if let Err(e) = dec.decode(&line) {
            return Err(Failure::Data(format!("{unit} {n}: {e}")));
        }
        if dec.len() >= BATCH {
            rows += flush(&mut dec, &mut w, first, n)?;
            first = n + 1;
        }
    }
    rows += flush(&mut dec, &mut w, first, n)?;
    w.close()?;
    Ok(Converted {
        schema,
        num_rows: rows,
    })
}

/// The keys of one JSON object, in the order they are written.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    m.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// arrow-json's inference orders fields by name; the viewer keeps the
/// source's order (each key where it first appears in the head's records).
fn in_source_order(schema: Schema, head: &[u8]) -> Schema {
    let mut order: Vec<String> = Vec::new();
    for line in head.split(|b| *b == b'\n').take(INFER_RECORDS) {
        if let Ok(Keys(keys)) = serde_json::from_slice::<Keys>(line) {
            for k in keys {
                if !order.contains(&k) {
                    order.push(k);
                }
            }
        }
        if order.len() >= schema.fields().len() {
            break;
        }
    }
    let mut fields: Vec<arrow_schema::FieldRef> = order
        .iter()
        .filter_map(|k| schema.field_with_name(k).ok().map(|f| Arc::new(f.clone())))
        .collect();
    for f in schema.fields() {
        if !order.iter().any(|k| k == f.name()) {
            fields.push(f.clone());
        }
    }
    Schema::new(fields)
}

fn write(w: &mut Writer, b: &RecordBatch) -> Result<(), Failure> {
    w.write(b)
}

/// Whether two files' schemas hold the same columns (names and types, in order).
pub fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: Format, text: &str) -> Result<Converted, Failure> {
        let out = tempfile::tempfile().unwrap();
        convert(
            format,
            text.len() as u64,
            Cursor::new(text.as_bytes().to_vec()),
            out,
        )
    }

    /// The rows of a conversion, one JSON object per line (or the error).
    fn rows(text: &str, parallel: bool) -> Result<(u64, String), String> {
        let out = tempfile::tempfile().unwrap();
        let (over, chunk) = if parallel { (0, 64) } else { (u64::MAX, 1) };
        let c = convert_with(
            Format::Csv,
            text.len() as u64,
            Cursor::new(text.as_bytes().to_vec()),
            out.try_clone().unwrap(),
            over,
            chunk,
        )
        .map_err(|e| match e {
            Failure::Data(m) | Failure::Io(m) => m,
        })?;
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(out)
            .unwrap()
            .build()
            .unwrap();
        let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
        for b in r {
            w.write(&b.unwrap()).unwrap();
        }
        w.finish().unwrap();
        Ok((c.num_rows, String::from_utf8(w.into_inner()).unwrap()))
    }

    /// A CSV with what breaks a naive split: quoted newlines and delimiters,
    /// escaped quotes, a literal quote inside a field, CRLF and lone CR line
    /// ends, blank lines (also before the header), no final newline.
    fn awkward(n: usize) -> String {
        let mut t = String::from("\n\r\nid,name,score,note\n");
        for i in 0..n {
            let note = match i % 7 {
                0 => "\"two\nlines, and a comma\"".to_string(),
                1 => "\"say \"\"hi\"\"\r\nthere\"".to_string(),
                2 => format!("{i}\" tall"),
                3 => String::new(),
                4 => "plain".to_string(),
                5 => "\"\"".to_string(),
                _ => "\"a\rb\"".to_string(),
            };
            let end = match i % 5 {
                0 => "\r\n",
                1 => "\n\n",
                _ => "\n",
            };
            t.push_str(&format!("{i},name {i},{}.5,{note}{end}", i * 3));
        }
        t.push_str("9999,last,1.0,no newline");
        t
    }

    #[test]
    fn parallel_csv_equals_one_pass() {
        for n in [0, 1, 3, 50, 700] {
            let text = awkward(n);
            let one = rows(&text, false).unwrap();
            let par = rows(&text, true).unwrap();
            assert_eq!(one.0, n as u64 + 1, "{n} rows");
            assert_eq!(one, par, "{n} rows");
        }
    }

    #[test]
    fn parallel_csv_names_the_same_bad_line() {
        // A record with a field too many, far past the first chunk.
        let mut text = awkward(400);
        let at = text.find("300,name 300").unwrap();
        text.insert_str(at, "300,extra,1.5,x,y\n");
        let one = rows(&text, false).unwrap_err();
        let par = rows(&text, true).unwrap_err();
        assert!(one.contains("line"), "{one}");
        assert_eq!(one, par);
        // A value of the wrong type after the records inference reads.
        let mut text = String::from("a,b\n");
        for i in 0..INFER_RECORDS + 50 {
            text.push_str(&format!("{i},\"x\ny\"\n"));
        }
        text.push_str("oops,z\n");
        let one = rows(&text, false).unwrap_err();
        let par = rows(&text, true).unwrap_err();
        assert!(one.contains("oops"), "{one}");
        assert_eq!(one, par);
    }

    #[test]
    fn parallel_csv_stops_at_an_early_bad_line() {
        // The error is in the first chunks; thousands follow. The reader must
        // stop when the writer does, not wait for room that never comes.
        let mut text = String::from("a,b\n1,2\n1,2,3\n");
        for i in 0..20_000 {
            text.push_str(&format!("{i},{i}\n"));
        }
        let one = rows(&text, false).unwrap_err();
        let par = rows(&text, true).unwrap_err();
        assert!(one.contains("line 3"), "{one}");
        assert_eq!(one, par);
    }

    #[test]
    fn parallel_csv_refuses_an_endless_record() {
        let mut text = String::from("a,b\n1,2\n3,\"");
        text.push_str(&"z".repeat(csv_split::MAX_RECORD + 10));
        let err = rows(&text, true).unwrap_err();
        assert!(err.contains("unterminated quote"), "{err}");
    }

    #[test]
    fn converts_and_names_bad_lines() {
        let c = run(Format::Csv, "a,b\n1,x\n2,y\n").unwrap();
        assert_eq!(c.num_rows, 2);
        assert_eq!(c.schema.field(0).name(), "a");
        let c = run(
            Format::Json,
            "{\"z\":1,\"a\":\"q\"}\n\n{\"z\":2,\"a\":\"r\"}\n",
        )
        .unwrap();
        assert_eq!(c.num_rows, 2);
        assert_eq!(c.schema.field(0).name(), "z");
        let c = run(Format::Json, "[{\"a\":1},{\"a\":2},{\"a\":3}]").unwrap();
        assert_eq!(c.num_rows, 3);
        let Err(Failure::Data(why)) = run(Format::Csv, "a,b\n1,2\n3,4,5\n") else {
            panic!("a bad CSV converted")
        };
        assert!(why.contains("line"), "{why}");
        assert!(matches!(
            run(Format::Json, "{\"a\":1}\n{\"a\":2\n"),
            Err(Failure::Data(_))
        ));
    }
}
