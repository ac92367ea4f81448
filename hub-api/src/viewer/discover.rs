//! Which files of a dataset repo make which configs and splits, the way the
//! HF dataset viewer and `datasets` decide it: a README `configs:` block
//! (`config_name`, `data_files` as a pattern, a list of patterns, or a list
//! of `{split, path}`), else one `default` config whose splits come from
//! file and folder names (`train`/`training`, `validation`/`valid`/`dev`/
//! `val`, `test`/`testing`/`eval`/`evaluation`, as a word bounded by
//! `-._ `, digits or `/`); files that name no split are `train` when no file
//! names one. Pure functions over paths: unit-tested below.

use regex::Regex;

/// A source format the viewer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Tsv,
    /// JSON Lines, or a `.json` file holding one array of objects.
    Json,
    Parquet,
}

impl Format {
    /// The format of a path, by its extension (None: not a data file).
    pub fn of(path: &str) -> Option<Format> {
        let lower = path.to_ascii_lowercase();
        let ext = lower.rsplit_once('.')?.1;
        Some(match ext {
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "jsonl" | "json" | "ndjson" => Format::Json,
            "parquet" => Format::Parquet,
            _ => return None,
        })
    }
}

/// A data file of the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// A split and its files, in path order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    pub name: String,
    pub files: Vec<DataFile>,
}

/// A config and its splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPlan {
    pub name: String,
    pub splits: Vec<SplitPlan>,
}

const SPLITS: [(&str, &[&str]); 3] = [
    ("train", &["train", "training"]),
    ("validation", &["validation", "valid", "dev", "val"]),
    ("test", &["test", "testing", "eval", "evaluation"]),
];

/// The split a path names, by its file name first, then its folders.
fn split_of(path: &str) -> Option<&'static str> {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| "-._ /".contains(c) || c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let (dirs, file) = path.rsplit_once('/').unwrap_or(("", path));
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    for part in [words(stem), words(dirs)] {
        for (split, keys) in SPLITS {
            if part.iter().any(|w| keys.contains(&w.as_str())) {
                return Some(split);
            }
        }
    }
    None
}

/// Whether a path is a data file the viewer considers without a `configs:`
/// block: a known format, not hidden, not under a `_`/`.` folder.
fn is_candidate(path: &str) -> bool {
    Format::of(path).is_some()
        && !path
            .split('/')
            .any(|seg| seg.starts_with('.') || seg.starts_with("__"))
}

/// A `data_files` glob (`*`, `**`, `?`, `[...]`), relative to the repo root,
/// as a regex matching whole paths.
pub fn glob(pattern: &str) -> Result<Regex, String> {
    let p = pattern.trim_start_matches("./").trim_start_matches('/');
    let mut re = String::from("^");
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    re.push_str("(?:.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let mut class = String::from("[");
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == ']' {
                        closed = true;
                        break;
                    }
                    if d == '\\' || d == '[' {
                        class.push('\\');
                    }
                    class.push(d);
                }
                if !closed {
                    return Err(format!("unclosed [ in data_files pattern {pattern:?}"));
                }
                class.push(']');
                re.push_str(&class);
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::RegexBuilder::new(&re)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("data_files pattern {pattern:?}: {e}"))
}

/// Patterns of one `data_files` value: a string or a list of strings.
fn patterns_of(v: &serde_json::Value) -> Result<Vec<String>, String> {
    match v {
        serde_json::Value::String(s) => Ok(vec![s.clone()]),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "data_files paths must be strings".to_string())
            })
            .collect(),
        _ => Err("data_files must be a path pattern or a list of them".into()),
    }
}

fn matching(files: &[DataFile], patterns: &[String]) -> Result<Vec<DataFile>, String> {
    let res: Vec<Regex> = patterns.iter().map(|p| glob(p)).collect::<Result<_, _>>()?;
    Ok(files
        .iter()
        .filter(|f| Format::of(&f.path).is_some() && res.iter().any(|r| r.is_match(&f.path)))
        .cloned()
        .collect())
}

/// The configs of a README's `configs:` block (card data as JSON), None when
/// it has none.
fn from_card(
    card: &serde_json::Value,
    files: &[DataFile],
) -> Option<Result<Vec<ConfigPlan>, String>> {
    let configs = card.get("configs")?.as_array()?;
    let mut out: Vec<(bool, ConfigPlan)> = Vec::new();
    for c in configs {
        let name = c
            .get("config_name")
            .and_then(|n| n.as_str())
            .unwrap_or("default")
            .to_string();
        let default = c.get("default").and_then(|d| d.as_bool()).unwrap_or(false);
        let mut splits = Vec::new();
        let data_files = match c.get("data_files") {
            Some(d) => d,
            None => {
                // `data_dir` only: the split rules below that folder.
                let dir = c.get("data_dir").and_then(|d| d.as_str()).unwrap_or("");
                let dir = dir.trim_matches('/');
                let under: Vec<DataFile> = files
                    .iter()
                    .filter(|f| dir.is_empty() || f.path.starts_with(&format!("{dir}/")))
                    .cloned()
                    .collect();
                out.push((
                    default,
                    ConfigPlan {
                        name,
                        splits: by_names(&under),
                    },
                ));
                continue;
            }
        };
        let entries: Vec<(String, Vec<String>)> = match data_files {
            serde_json::Value::Array(a) if a.iter().all(|e| e.is_object()) => {
                let mut v = Vec::new();
                for e in a {
                    let split = e
                        .get("split")
                        .and_then(|s| s.as_str())
                        .unwrap_or("train")
                        .to_string();
                    let Some(path) = e.get("path") else {
                        return Some(Err(format!("configs: {name}: split {split} has no path")));
                    };
                    match patterns_of(path) {
                        Ok(p) => v.push((split, p)),
                        Err(e) => return Some(Err(format!("configs: {name}: {e}"))),
                    }
                }
                v
            }
            other => match patterns_of(other) {
                Ok(p) => vec![("train".to_string(), p)],
                Err(e) => return Some(Err(format!("configs: {name}: {e}"))),
            },
        };
        for (split, pats) in entries {
            match matching(files, &pats) {
                Ok(f) if f.is_empty() => {
                    return Some(Err(format!(
                        "configs: {name}: split {split}: no data file matches {}",
                        pats.join(", ")
                    )))
                }
                Ok(f) => splits.push(SplitPlan {
                    name: split,
                    files: f,
                }),
                Err(e) => return Some(Err(format!("configs: {name}: {e}"))),
            }
        }
        out.push((default, ConfigPlan { name, splits }));
    }
    // The default config first, as the HF viewer lists them.
    out.sort_by_key(|(d, _)| !*d);
    Some(Ok(out.into_iter().map(|(_, c)| c).collect()))
}

/// Splits from file and folder names.
fn by_names(files: &[DataFile]) -> Vec<SplitPlan> {
    let data: Vec<&DataFile> = files.iter().filter(|f| is_candidate(&f.path)).collect();
    let named = data.iter().any(|f| split_of(&f.path).is_some());
    let mut splits: Vec<SplitPlan> = Vec::new();
    for (split, _) in SPLITS {
        let picked: Vec<DataFile> = data
            .iter()
            .filter(|f| {
                if named {
                    split_of(&f.path) == Some(split)
                } else {
                    split == "train"
                }
            })
            .map(|f| (*f).clone())
            .collect();
        if !picked.is_empty() {
            splits.push(SplitPlan {
                name: split.to_string(),
                files: picked,
            });
        }
    }
    splits
}

/// The configs of a commit: from the README's card data (`card`, JSON of
/// its YAML front matter) when it has a `configs:` block, else `default`
/// with splits by names. Err: the reason the viewer cannot show it.
pub fn plan(
    card: Option<&serde_json::Value>,
    files: &[DataFile],
) -> Result<Vec<ConfigPlan>, String> {
    let mut files = files.to_vec();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let configs = match card.and_then(|c| from_card(c, &files)) {
        Some(r) => r?,
        None => {
            let splits = by_names(&files);
            if splits.is_empty() {
                vec![]
            } else {
                vec![ConfigPlan {
                    name: "default".into(),
                    splits,
                }]
            }
        }
    };
    if configs.iter().all(|c| c.splits.is_empty()) {
        return Err(
            "the repository has no data file the viewer reads (CSV, TSV, JSON Lines, JSON, Parquet)"
                .into(),
        );
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(p: &str) -> DataFile {
        DataFile {
            path: p.into(),
            sha256: "0".repeat(64),
            size: 1,
        }
    }

    fn names(c: &[ConfigPlan]) -> Vec<(String, String, Vec<String>)> {
        c.iter()
            .flat_map(|c| {
                c.splits.iter().map(|s| {
                    (
                        c.name.clone(),
                        s.name.clone(),
                        s.files.iter().map(|f| f.path.clone()).collect(),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn splits_from_names() {
        let files = [
            f("README.md"),
            f("data/train-00000-of-00001.parquet"),
            f("data/test.csv"),
            f("dev/part1.jsonl"),
            f("notes.txt"),
            f(".hidden/train.csv"),
        ];
        let p = plan(None, &files).unwrap();
        assert_eq!(
            names(&p),
            vec![
                (
                    "default".into(),
                    "train".into(),
                    vec!["data/train-00000-of-00001.parquet".into()]
                ),
                (
                    "default".into(),
                    "validation".into(),
                    vec!["dev/part1.jsonl".into()]
                ),
                (
                    "default".into(),
                    "test".into(),
                    vec!["data/test.csv".into()]
                ),
            ]
        );
        // No split named: everything is train.
        let p = plan(None, &[f("a.csv"), f("b.csv")]).unwrap();
        assert_eq!(p[0].splits.len(), 1);
        assert_eq!(p[0].splits[0].files.len(), 2);
        // "contest.csv" does not name a split.
        assert_eq!(split_of("contest.csv"), None);
        assert_eq!(split_of("my_train_1.csv"), Some("train"));
        assert!(plan(None, &[f("README.md")]).is_err());
    }

    #[test]
    fn configs_block() {
        let card = json!({"configs": [
            {"config_name": "small", "data_files": "small/*.csv"},
            {"config_name": "main", "default": true, "data_files": [
                {"split": "train", "path": "main/tr_*.csv"},
                {"split": "test", "path": ["main/te.csv"]}]}
        ]});
        let files = [
            f("small/a.csv"),
            f("main/tr_1.csv"),
            f("main/tr_2.csv"),
            f("main/te.csv"),
        ];
        let p = plan(Some(&card), &files).unwrap();
        assert_eq!(
            names(&p),
            vec![
                (
                    "main".into(),
                    "train".into(),
                    vec!["main/tr_1.csv".into(), "main/tr_2.csv".into()]
                ),
                ("main".into(), "test".into(), vec!["main/te.csv".into()]),
                ("small".into(), "train".into(), vec!["small/a.csv".into()]),
            ]
        );
        let bad = json!({"configs": [{"config_name": "x", "data_files": "nothing/*.csv"}]});
        assert!(plan(Some(&bad), &files)
            .unwrap_err()
            .contains("no data file matches"));
        assert!(glob("**/*.csv").unwrap().is_match("a/b/c.csv"));
        assert!(glob("**/*.csv").unwrap().is_match("c.csv"));
        assert!(!glob("*.csv").unwrap().is_match("a/c.csv"));
    }
}
