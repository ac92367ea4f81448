//! The NDJSON commit payload of `POST /api/{type}s/{repo}/commit/{rev}`:
//! one JSON object per line, `header` first, then `file`, `lfsFile`,
//! `deletedFile` and `deletedFolder` operations. Parsed strictly: unknown keys,
//! a missing or repeated header, or a malformed line is a 400 naming the line.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    key: String,
    value: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Header {
    pub summary: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parent_commit: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileOp {
    pub path: String,
    pub content: String,
    #[serde(default = "default_encoding")]
    pub encoding: String,
}

fn default_encoding() -> String {
    "base64".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LfsFileOp {
    pub path: String,
    #[serde(default)]
    pub algo: Option<String>,
    pub oid: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub old_path: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathOp {
    pub path: String,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Header(Header),
    File(FileOp),
    LfsFile(LfsFileOp),
    DeletedFile(PathOp),
    DeletedFolder(PathOp),
}

/// Parses one line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<Line, String> {
    let raw: RawLine = serde_json::from_slice(line)
        .map_err(|e| format!("not a JSON object with \"key\" and \"value\": {e}"))?;
    let bad = |e: serde_json::Error| format!("invalid {:?} value: {e}", raw.key);
    Ok(match raw.key.as_str() {
        "header" => Line::Header(serde_json::from_value(raw.value.clone()).map_err(bad)?),
        "file" => {
            let f: FileOp = serde_json::from_value(raw.value.clone()).map_err(bad)?;
            if f.encoding != "base64" {
                return Err(format!(
                    "file encoding {:?} is not supported (use base64)",
                    f.encoding
                ));
            }
            Line::File(f)
        }
        "lfsFile" => {
            let f: LfsFileOp = serde_json::from_value(raw.value.clone()).map_err(bad)?;
            if f.algo.as_deref().is_some_and(|a| a != "sha256") {
                return Err("lfsFile algo must be sha256".into());
            }
            Line::LfsFile(f)
        }
        "deletedFile" => Line::DeletedFile(serde_json::from_value(raw.value.clone()).map_err(bad)?),
        "deletedFolder" => {
            Line::DeletedFolder(serde_json::from_value(raw.value.clone()).map_err(bad)?)
        }
        other => return Err(format!("unknown operation key {other:?}")),
    })
}

/// Splits a buffer into complete lines, returning them and the unfinished tail.
pub fn split_lines(buf: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            let mut line = &buf[start..i];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            lines.push(line);
            start = i + 1;
        }
    }
    (lines, &buf[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let h = parse_line(
            br#"{"key":"header","value":{"summary":"s","description":"d","parentCommit":"abc12"}}"#,
        )
        .unwrap();
        assert_eq!(
            h,
            Line::Header(Header {
                summary: "s".into(),
                description: "d".into(),
                parent_commit: Some("abc12".into())
            })
        );
        assert!(matches!(
            parse_line(
                br#"{"key":"file","value":{"content":"aGk=","path":"a.txt","encoding":"base64"}}"#
            )
            .unwrap(),
            Line::File(_)
        ));
        let l = parse_line(
            br#"{"key":"lfsFile","value":{"path":"m.bin","algo":"sha256","oid":"ab","size":3}}"#,
        )
        .unwrap();
        assert!(matches!(l, Line::LfsFile(LfsFileOp { size: Some(3), .. })));
        // Copies omit size.
        assert!(parse_line(
            br#"{"key":"lfsFile","value":{"path":"m.bin","algo":"sha256","oid":"ab"}}"#
        )
        .is_ok());
        assert!(matches!(
            parse_line(br#"{"key":"deletedFile","value":{"path":"x"}}"#).unwrap(),
            Line::DeletedFile(_)
        ));
        assert!(matches!(
            parse_line(br#"{"key":"deletedFolder","value":{"path":"d/"}}"#).unwrap(),
            Line::DeletedFolder(_)
        ));
    }

    #[test]
    fn refuses_malformed_lines() {
        for bad in [
            &b"not json"[..],
            br#"{"key":"copyFile","value":{}}"#,
            br#"{"key":"header","value":{"summary":"s","extra":1}}"#,
            br#"{"key":"header","value":{}}"#,
            br#"{"key":"file","value":{"content":"x","path":"a","encoding":"hex"}}"#,
            br#"{"key":"lfsFile","value":{"path":"a","oid":"x","algo":"md5"}}"#,
            br#"{"key":"header","value":{"summary":"s"},"more":1}"#,
            br#"[1,2]"#,
        ] {
            assert!(parse_line(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn splits_lines() {
        let (lines, tail) = split_lines(b"a\nb\r\nc");
        assert_eq!(lines, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(tail, b"c");
    }
}
