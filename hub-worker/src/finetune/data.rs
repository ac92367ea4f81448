//! A dataset's split files as labelled examples: CSV (with a header row) or JSON
//! Lines, read from bytes with bounds (file size, rows, text length, label count).
//! Only text is parsed; nothing in a dataset is executed.

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
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(file_err(
            file,
            format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".csv") {
        parse_csv(file, bytes, text_column, label_column)
    } else if lower.ends_with(".jsonl") || lower.ends_with(".json") {
        parse_json(file, bytes, text_column, label_column)
    } else {
        Err(file_err(
            file,
            "fine-tuning reads CSV (.csv) and JSON Lines (.jsonl, .json) files",
        ))
    }
}

fn parse_csv(
    file: &str,
    bytes: &[u8],
    text_column: &str,
    label_column: &str,
) -> Result<Vec<Example>, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let headers = rdr
        .headers()
        .map_err(|e| file_err(file, format!("header row: {e}")))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| file_err(file, format!("no column {name:?} in the header row")))
    };
    let (ti, li) = (col(text_column)?, col(label_column)?);
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let row = i + 1;
        let rec = rec.map_err(|e| DataError::Row {
            file: file.to_string(),
            row,
            reason: e.to_string(),
        })?;
        if out.len() == MAX_ROWS {
            return Err(file_err(file, format!("more than {MAX_ROWS} rows")));
        }
        let label = rec.get(li).unwrap_or_default().trim();
        if label.is_empty() {
            return Err(DataError::Row {
                file: file.to_string(),
                row,
                reason: format!("empty {label_column:?}"),
            });
        }
        out.push(Example {
            text: clip(rec.get(ti).unwrap_or_default()),
            label: label.to_string(),
        });
    }
    Ok(out)
}

fn parse_json(
    file: &str,
    bytes: &[u8],
    text_column: &str,
    label_column: &str,
) -> Result<Vec<Example>, DataError> {
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
            let text = obj
                .get(text_column)
                .and_then(|t| t.as_str())
                .ok_or_else(|| row_err(row, format!("no string {text_column:?}")))?;
            let label = obj.get(label_column).and_then(label_of).ok_or_else(|| {
                row_err(
                    row,
                    format!("no {label_column:?} (a string, integer or boolean)"),
                )
            })?;
            Ok(Example {
                text: clip(text),
                label,
            })
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
        let one = parse("x.csv", b"text,label\na,b\n", "text", "label").unwrap();
        assert_eq!(label_names(&one), Err(DataError::LabelCount(1)));
        let labels = ["a".to_string(), "b".to_string()];
        assert_eq!(
            class_ids(&one, &labels[..1]),
            Err(DataError::UnknownTestLabel("b".into()))
        );
    }
}
