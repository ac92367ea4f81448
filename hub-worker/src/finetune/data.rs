//! A dataset's split files as labelled examples (text classification), sentence
//! pairs (sentence embedding) or supervised fine-tuning rows (causal-LM LoRA:
//! prompt/completion, chat messages or plain text): CSV (with a header row) or JSON
//! Lines, read from bytes with bounds (file size, rows, text length, label count,
//! turns). Only text is parsed; nothing in a dataset is executed.

/// Largest split file a job reads.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Most rows a job reads from a split.
pub const MAX_ROWS: usize = 200_000;
/// Most distinct labels.
pub const MAX_LABELS: usize = 1000;
/// Longest text kept (in characters; the tokenizer truncates further).
const MAX_TEXT_CHARS: usize = 16_384;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    pub label: String,
}

/// One anchor with the sentence that belongs with it (sentence-transformers'
/// `(anchor, positive)` pairs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub anchor: String,
    pub positive: String,
}

/// Most messages in one chat row.
pub const MAX_TURNS: usize = 256;

/// One row of a causal-LM dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SftRow {
    /// `prompt` + `completion` columns: the loss is on the completion only.
    Completion { prompt: String, completion: String },
    /// A `messages` column: a chat rendered with the model's template; the loss is on
    /// the assistant turns only.
    Chat(Vec<ChatTurn>),
    /// A text column: the loss is on every token.
    Text(String),
}

/// One message of a chat row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
}

/// Which of the causal-LM row shapes a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftFormat {
    Completion,
    Chat,
    Text,
}

impl SftFormat {
    /// The column names, as the job's log and card show them.
    pub fn describe(self, text_column: &str) -> String {
        match self {
            SftFormat::Completion => "prompt + completion".into(),
            SftFormat::Chat => "messages".into(),
            SftFormat::Text => text_column.to_string(),
        }
    }

    /// The format of a row whose columns are `has` (prompt/completion first, then
    /// messages, then text).
    fn of(has: impl Fn(&str) -> bool, text_column: &str) -> Result<SftFormat, String> {
        match (has("prompt"), has("completion")) {
            (true, true) => return Ok(SftFormat::Completion),
            (true, false) => return Err("a \"prompt\" column but no \"completion\"".into()),
            (false, true) => return Err("a \"completion\" column but no \"prompt\"".into()),
            _ => {}
        }
        if has("messages") {
            Ok(SftFormat::Chat)
        } else if has(text_column) {
            Ok(SftFormat::Text)
        } else {
            Err(format!(
                "none of the columns a causal-lm-lora job reads: \"prompt\" and \"completion\", \
                 \"messages\" (a list of {{role, content}}), or {text_column:?}"
            ))
        }
    }
}

/// A chat cell: a JSON array of `{role, content}` objects with string contents, at
/// least one of them from the assistant.
fn chat_turns(v: &serde_json::Value) -> Result<Vec<ChatTurn>, String> {
    let list = v
        .as_array()
        .ok_or("\"messages\" is not a list of {role, content} objects")?;
    if list.len() > MAX_TURNS {
        return Err(format!("more than {MAX_TURNS} messages"));
    }
    let turns = list
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(|r| r.as_str());
            let content = m.get("content").and_then(|c| c.as_str());
            match (role, content) {
                (Some(r), Some(c)) if !r.trim().is_empty() => Ok(ChatTurn {
                    role: r.chars().take(64).collect(),
                    content: clip(c),
                }),
                _ => Err(format!(
                    "message {i} is not an object with a string \"role\" and \"content\""
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !turns.iter().any(|t| t.role == "assistant") {
        return Err("no \"assistant\" message to learn from".into());
    }
    Ok(turns)
}

/// Reads one split file of a causal-LM dataset. The columns of the first row (the
/// CSV header) decide the format, which every row must then have: `prompt` and
/// `completion` (non-empty strings), `messages` (JSON Lines: a list; CSV: the list as
/// JSON text) or `text_column` (a non-empty string).
pub fn parse_sft(file: &str, bytes: &[u8], text_column: &str) -> Result<Vec<SftRow>, DataError> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(file_err(
            file,
            format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    let lower = file.to_ascii_lowercase();
    let is_csv = lower.ends_with(".csv");
    if !is_csv && !lower.ends_with(".jsonl") && !lower.ends_with(".json") {
        return Err(file_err(
            file,
            "fine-tuning reads CSV (.csv) and JSON Lines (.jsonl, .json) files",
        ));
    }
    let row_err = |row: usize, reason: String| DataError::Row {
        file: file.to_string(),
        row,
        reason,
    };
    let text = |v: Option<&serde_json::Value>, col: &str| -> Result<String, String> {
        match v.and_then(|t| t.as_str()) {
            Some(t) if !t.trim().is_empty() => Ok(clip(t)),
            Some(_) => Err(format!("empty {col:?}")),
            None => Err(format!("no string {col:?}")),
        }
    };
    let row_of = |format: SftFormat,
                  get: &dyn Fn(&str) -> Option<serde_json::Value>|
     -> Result<SftRow, String> {
        Ok(match format {
            SftFormat::Completion => SftRow::Completion {
                prompt: text(get("prompt").as_ref(), "prompt")?,
                completion: text(get("completion").as_ref(), "completion")?,
            },
            SftFormat::Chat => SftRow::Chat(chat_turns(
                &get("messages").unwrap_or(serde_json::Value::Null),
            )?),
            SftFormat::Text => SftRow::Text(text(get(text_column).as_ref(), text_column)?),
        })
    };
    let mut out = Vec::new();
    if is_csv {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(bytes);
        let headers = rdr
            .headers()
            .map_err(|e| file_err(file, format!("header row: {e}")))?
            .clone();
        let format = SftFormat::of(|c| headers.iter().any(|h| h == c), text_column)
            .map_err(|e| file_err(file, format!("the header row has {e}")))?;
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| row_err(i + 1, e.to_string()))?;
            if out.len() == MAX_ROWS {
                return Err(file_err(file, format!("more than {MAX_ROWS} rows")));
            }
            let get = |c: &str| -> Option<serde_json::Value> {
                let idx = headers.iter().position(|h| h == c)?;
                let cell = rec.get(idx)?;
                if c == "messages" && format == SftFormat::Chat {
                    serde_json::from_str(cell).ok()
                } else {
                    Some(serde_json::Value::String(cell.to_string()))
                }
            };
            out.push(row_of(format, &get).map_err(|e| row_err(i + 1, e))?);
        }
        return Ok(out);
    }
    let rows = json_rows(file, bytes)?;
    let mut format = None;
    for (row, v) in rows {
        let obj = v
            .as_object()
            .ok_or_else(|| row_err(row, "not a JSON object".into()))?;
        let f = match format {
            Some(f) => f,
            None => {
                let f = SftFormat::of(|c| obj.contains_key(c), text_column)
                    .map_err(|e| row_err(row, format!("it has {e}")))?;
                *format.get_or_insert(f)
            }
        };
        let get = |c: &str| obj.get(c).cloned();
        out.push(row_of(f, &get).map_err(|e| row_err(row, e))?);
    }
    Ok(out)
}

/// How a cell is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// A string, possibly empty.
    Text,
    /// A string that is not empty (after trimming).
    Sentence,
    /// A non-empty string, an integer or a boolean, as text.
    Label,
}

/// Why a split cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("{file}: row {row}: {reason}")]
    Row {
        file: String,
        row: usize,
        reason: String,
    },
    #[error("the {0} split has no rows")]
    Empty(&'static str),
    #[error("the {0} split has more than {MAX_ROWS} rows")]
    TooManyRows(&'static str),
    #[error("the train split has {0} distinct labels; a classifier needs 2 to {MAX_LABELS}")]
    LabelCount(usize),
    #[error("the test split has the label {0:?}, which no train row has")]
    UnknownTestLabel(String),
}

/// The rows of a JSON file (one array of rows) or JSON Lines file, each with its
/// row number (1-based; a JSON Lines row's line), at most [`MAX_ROWS`].
fn json_rows(file: &str, bytes: &[u8]) -> Result<Vec<(usize, serde_json::Value)>, DataError> {
    let text = std::str::from_utf8(bytes).map_err(|e| file_err(file, format!("not UTF-8: {e}")))?;
    let rows: Vec<(usize, serde_json::Value)> = if text.trim_start().starts_with('[') {
        let all: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| file_err(file, e.to_string()))?;
        all.into_iter()
            .enumerate()
            .map(|(i, v)| (i + 1, v))
            .collect()
    } else {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if rows.len() == MAX_ROWS {
                return Err(file_err(file, format!("more than {MAX_ROWS} rows")));
            }
            let v = serde_json::from_str(line).map_err(|e| DataError::Row {
                file: file.to_string(),
                row: i + 1,
                reason: e.to_string(),
            })?;
            rows.push((i + 1, v));
        }
        rows
    };
    if rows.len() > MAX_ROWS {
        return Err(file_err(file, format!("more than {MAX_ROWS} rows")));
    }
    Ok(rows)
}

fn file_err(file: &str, reason: impl Into<String>) -> DataError {
    DataError::File {
        file: file.to_string(),
        reason: reason.into(),
    }
}

/// A label cell as text: strings as they are, integers and booleans spelled out.
fn label_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_TEXT_CHARS).collect()
}

/// Reads one split file (`.csv`, `.jsonl`, `.json` as JSON Lines or one array).
pub fn parse(
    file: &str,
    bytes: &[u8],
    text_column: &str,
    label_column: &str,
) -> Result<Vec<Example>, DataError> {
    let rows = read_rows(
        file,
        bytes,
        &[(text_column, Cell::Text), (label_column, Cell::Label)],
    )?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            let label = r.pop().unwrap_or_default();
            let text = r.pop().unwrap_or_default();
            Example { text, label }
        })
        .collect())
}

/// Reads one split file of sentence pairs: every row needs a non-empty anchor and
/// positive; other columns (a `score`, a `negative`) are not read.
pub fn parse_pairs(
    file: &str,
    bytes: &[u8],
    anchor_column: &str,
    positive_column: &str,
) -> Result<Vec<Pair>, DataError> {
    let rows = read_rows(
        file,
        bytes,
        &[
            (anchor_column, Cell::Sentence),
            (positive_column, Cell::Sentence),
        ],
    )?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            let positive = r.pop().unwrap_or_default();
            let anchor = r.pop().unwrap_or_default();
            Pair { anchor, positive }
        })
        .collect())
}

/// The cells of `columns` of every row, in the columns' order.
fn read_rows(
    file: &str,
    bytes: &[u8],
    columns: &[(&str, Cell)],
) -> Result<Vec<Vec<String>>, DataError> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(file_err(
            file,
            format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".csv") {
        parse_csv(file, bytes, columns)
    } else if lower.ends_with(".jsonl") || lower.ends_with(".json") {
        parse_json(file, bytes, columns)
    } else {
        Err(file_err(
            file,
            "fine-tuning reads CSV (.csv) and JSON Lines (.jsonl, .json) files",
        ))
    }
}

/// A CSV cell as `kind` wants it.
fn csv_cell(cell: &str, kind: Cell, column: &str) -> Result<String, String> {
    match kind {
        Cell::Text => Ok(clip(cell)),
        Cell::Sentence | Cell::Label if cell.trim().is_empty() => Err(format!("empty {column:?}")),
        Cell::Sentence => Ok(clip(cell)),
        Cell::Label => Ok(cell.trim().to_string()),
    }
}

/// A JSON cell as `kind` wants it.
fn json_cell(v: Option<&serde_json::Value>, kind: Cell, column: &str) -> Result<String, String> {
    match kind {
        Cell::Text => v
            .and_then(|t| t.as_str())
            .map(clip)
            .ok_or_else(|| format!("no string {column:?}")),
        Cell::Sentence => match v.and_then(|t| t.as_str()) {
            Some(t) if !t.trim().is_empty() => Ok(clip(t)),
            Some(_) => Err(format!("empty {column:?}")),
            None => Err(format!("no string {column:?}")),
        },
        Cell::Label => v
            .and_then(label_of)
            .ok_or_else(|| format!("no {column:?} (a string, integer or boolean)")),
    }
}

fn parse_csv(
    file: &str,
    bytes: &[u8],
    columns: &[(&str, Cell)],
) -> Result<Vec<Vec<String>>, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let headers = rdr
        .headers()
        .map_err(|e| file_err(file, format!("header row: {e}")))?
        .clone();
    let index = columns
        .iter()
        .map(|(name, _)| {
            headers
                .iter()
                .position(|h| h == *name)
                .ok_or_else(|| file_err(file, format!("no column {name:?} in the header row")))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let row = i + 1;
        let row_err = |reason: String| DataError::Row {
            file: file.to_string(),
            row,
            reason,
        };
        let rec = rec.map_err(|e| row_err(e.to_string()))?;
        if out.len() == MAX_ROWS {
            return Err(file_err(file, format!("more than {MAX_ROWS} rows")));
        }
        let cells = columns
            .iter()
            .zip(&index)
            .map(|((name, kind), i)| csv_cell(rec.get(*i).unwrap_or_default(), *kind, name))
            .collect::<Result<Vec<String>, String>>()
            .map_err(row_err)?;
        out.push(cells);
    }
    Ok(out)
}

fn parse_json(
    file: &str,
    bytes: &[u8],
    columns: &[(&str, Cell)],
) -> Result<Vec<Vec<String>>, DataError> {
    let rows = json_rows(file, bytes)?;
    let row_err = |row, reason: String| DataError::Row {
        file: file.to_string(),
        row,
        reason,
    };
    rows.into_iter()
        .map(|(row, v)| {
            let obj = v
                .as_object()
                .ok_or_else(|| row_err(row, "not a JSON object".into()))?;
            columns
                .iter()
                .map(|(name, kind)| json_cell(obj.get(*name), *kind, name))
                .collect::<Result<Vec<String>, String>>()
                .map_err(|reason| row_err(row, reason))
        })
        .collect()
}

/// The label names of a train split, in class-index order: numeric order when every
/// label is an integer, else lexicographic.
pub fn label_names(train: &[Example]) -> Result<Vec<String>, DataError> {
    let mut names: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    names.sort();
    names.dedup();
    if names.len() < 2 || names.len() > MAX_LABELS {
        return Err(DataError::LabelCount(names.len()));
    }
    if names.iter().all(|n| n.parse::<i64>().is_ok()) {
        names.sort_by_key(|n| n.parse::<i64>().unwrap_or_default());
    }
    Ok(names)
}

/// The class index of every example (`labels` from [`label_names`]).
pub fn class_ids(examples: &[Example], labels: &[String]) -> Result<Vec<u32>, DataError> {
    let index: std::collections::HashMap<&str, u32> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as u32))
        .collect();
    examples
        .iter()
        .map(|e| {
            index
                .get(e.label.as_str())
                .copied()
                .ok_or_else(|| DataError::UnknownTestLabel(e.label.chars().take(100).collect()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_jsonl() {
        let csv = b"text,label\n\"good, very good\",positive\nbad,negative\n";
        let rows = parse("train.csv", csv, "text", "label").unwrap();
        assert_eq!(rows[0].text, "good, very good");
        assert_eq!(rows[1].label, "negative");
        let jl = b"{\"text\": \"a\", \"label\": 1}\n\n{\"text\": \"b\", \"label\": 10}\n{\"text\": \"c\", \"label\": 2}\n";
        let rows = parse("test.jsonl", jl, "text", "label").unwrap();
        assert_eq!(label_names(&rows).unwrap(), ["1", "2", "10"]);
        assert_eq!(
            parse("x.csv", b"text,lbl\na,b\n", "text", "label").unwrap_err(),
            file_err("x.csv", "no column \"label\" in the header row")
        );
        assert!(matches!(
            parse("x.jsonl", b"{\"text\": 1, \"label\": 1}\n", "text", "label"),
            Err(DataError::Row { row: 1, .. })
        ));
        assert!(parse("x.parquet", b"", "text", "label").is_err());
        assert!(matches!(
            parse("x.csv", b"text,label\na,\n", "text", "label"),
            Err(DataError::Row { row: 1, .. })
        ));
        let one = parse("x.csv", b"text,label\na,b\n", "text", "label").unwrap();
        assert_eq!(label_names(&one), Err(DataError::LabelCount(1)));
        let labels = ["a".to_string(), "b".to_string()];
        assert_eq!(
            class_ids(&one, &labels[..1]),
            Err(DataError::UnknownTestLabel("b".into()))
        );
    }

    #[test]
    fn sft_rows_and_their_columns() {
        let jl = b"{\"prompt\": \"Q: a?\", \"completion\": \" b\"}\n";
        assert_eq!(
            parse_sft("t.jsonl", jl, "text").unwrap(),
            [SftRow::Completion {
                prompt: "Q: a?".into(),
                completion: " b".into()
            }]
        );
        let chat = br#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
        assert!(
            matches!(&parse_sft("c.jsonl", chat, "text").unwrap()[0], SftRow::Chat(t) if t.len() == 2)
        );
        let csv = b"text,x\nhello world,1\n";
        assert_eq!(
            parse_sft("t.csv", csv, "text").unwrap(),
            [SftRow::Text("hello world".into())]
        );
        let csv_chat =
            b"messages\n\"[{\"\"role\"\": \"\"assistant\"\", \"\"content\"\": \"\"ok\"\"}]\"\n";
        assert!(matches!(
            &parse_sft("c.csv", csv_chat, "text").unwrap()[0],
            SftRow::Chat(_)
        ));
        // Columns are checked up front, with what is missing.
        let e = parse_sft("t.csv", b"question,answer\na,b\n", "text").unwrap_err();
        assert!(
            e.to_string().contains("\"prompt\" and \"completion\""),
            "{e}"
        );
        let e = parse_sft("t.jsonl", b"{\"prompt\": \"a\"}\n", "text").unwrap_err();
        assert!(e.to_string().contains("no \"completion\""), "{e}");
        // Every row has the first row's shape.
        let mixed = b"{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"text\": \"c\"}\n";
        assert!(matches!(
            parse_sft("t.jsonl", mixed, "text"),
            Err(DataError::Row { row: 2, .. })
        ));
        let no_assistant = br#"{"messages": [{"role": "user", "content": "hi"}]}"#;
        let e = parse_sft("c.jsonl", no_assistant, "text").unwrap_err();
        assert!(e.to_string().contains("assistant"), "{e}");
        let bad_turn = br#"{"messages": [{"role": "assistant", "content": 3}]}"#;
        assert!(parse_sft("c.jsonl", bad_turn, "text").is_err());
    }

    #[test]
    fn pairs() {
        let csv = b"anchor,positive,score\nq1,\"p, one\",1\nq2,p2,0.5\n";
        let rows = parse_pairs("train.csv", csv, "anchor", "positive").unwrap();
        assert_eq!(
            rows,
            [
                Pair {
                    anchor: "q1".into(),
                    positive: "p, one".into()
                },
                Pair {
                    anchor: "q2".into(),
                    positive: "p2".into()
                }
            ]
        );
        let jl = b"{\"q\": \"a\", \"d\": \"b\"}\n";
        assert_eq!(parse_pairs("t.jsonl", jl, "q", "d").unwrap().len(), 1);
        assert_eq!(
            parse_pairs("t.csv", b"anchor,text\na,b\n", "anchor", "positive").unwrap_err(),
            file_err("t.csv", "no column \"positive\" in the header row")
        );
        assert_eq!(
            parse_pairs("t.csv", b"anchor,positive\na, \n", "anchor", "positive")
                .unwrap_err()
                .to_string(),
            "t.csv: row 1: empty \"positive\""
        );
        assert_eq!(
            parse_pairs(
                "t.jsonl",
                b"{\"anchor\": \"a\", \"positive\": 3}\n",
                "anchor",
                "positive"
            )
            .unwrap_err()
            .to_string(),
            "t.jsonl: row 1: no string \"positive\""
        );
    }
}
