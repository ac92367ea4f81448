//! `.gitattributes`: which paths are stored with Git LFS. The hub keeps the file
//! up to date so that a `git clone` of a repo would treat large files the way
//! the API does.

/// The `.gitattributes` every new repo starts with (the Hugging Face default list).
pub const DEFAULT_GITATTRIBUTES: &str = "\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
";

/// One compiled rule: the pattern, whether it applies to the basename, and
/// whether it sets (true) or unsets (false) the LFS filter.
#[derive(Debug, Clone)]
struct Rule {
    re: regex::Regex,
    basename: bool,
    lfs: bool,
}

/// Parsed LFS rules of a `.gitattributes` file.
#[derive(Debug, Clone, Default)]
pub struct LfsRules {
    /// In file order; the last match wins.
    rules: Vec<Rule>,
}

impl LfsRules {
    pub fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let Some(pattern) = parts.next() else {
                continue;
            };
            for attr in parts {
                let lfs = if attr == "filter=lfs" {
                    true
                } else if attr.starts_with("filter=") || attr == "-filter" || attr == "!filter" {
                    false
                } else {
                    continue;
                };
                if let Some((re, basename)) = compile(pattern) {
                    rules.push(Rule { re, basename, lfs });
                }
            }
        }
        Self { rules }
    }

    /// Whether `path` is an LFS path under these rules.
    pub fn is_lfs(&self, path: &str) -> bool {
        let base = path.rsplit('/').next().unwrap_or(path);
        self.rules
            .iter()
            .rev()
            .find(|r| r.re.is_match(if r.basename { base } else { path }))
            .map(|r| r.lfs)
            .unwrap_or(false)
    }

    fn push(&mut self, pattern: &str) {
        if let Some((re, basename)) = compile(pattern) {
            self.rules.push(Rule {
                re,
                basename,
                lfs: true,
            });
        }
    }
}

/// Escapes a literal path so that it is a pattern matching only itself
/// (top-level paths are anchored with a leading '/').
pub fn escape_pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    if !path.contains('/') {
        out.push('/');
    }
    for c in path.chars() {
        match c {
            ' ' => out.push_str("[[:space:]]"),
            '*' | '?' | '[' | '\\' | '!' | '#' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Adds an LFS line for each path the rules do not already cover.
pub fn with_lfs_paths<'a>(text: &str, paths: impl IntoIterator<Item = &'a str>) -> String {
    let rules = LfsRules::parse(text);
    let mut out = text.to_string();
    let mut added = LfsRules::default();
    for path in paths {
        if rules.is_lfs(path) || added.is_lfs(path) {
            continue;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let pat = escape_pattern(path);
        out.push_str(&format!("{pat} filter=lfs diff=lfs merge=lfs -text\n"));
        added.push(&pat);
    }
    out
}

/// gitattributes matching: a pattern without '/' matches the basename at any
/// depth; otherwise it matches the whole path, with `**` spanning folders.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    compile(pattern).is_some_and(|(re, basename)| {
        if basename {
            re.is_match(path.rsplit('/').next().unwrap_or(path))
        } else {
            re.is_match(path)
        }
    })
}

/// Translates a gitattributes glob into an anchored regex; the flag says whether
/// it applies to the basename only.
fn compile(pattern: &str) -> Option<(regex::Regex, bool)> {
    let anchored = pattern.starts_with('/');
    let pattern = pattern.strip_prefix('/').unwrap_or(pattern);
    let basename = !anchored && !pattern.contains('/');
    let p: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' if p.get(i + 1) == Some(&'*') => {
                let at_start = i == 0 || p[i - 1] == '/';
                if at_start && p.get(i + 2) == Some(&'/') {
                    re.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    re.push_str(".*");
                    i += 2;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                i += 1;
            }
            '?' => {
                re.push_str("[^/]");
                i += 1;
            }
            '\\' if i + 1 < p.len() => {
                re.push_str(&regex::escape(&p[i + 1].to_string()));
                i += 2;
            }
            '[' => match class(&p[i..]) {
                Some((cls, len)) => {
                    re.push_str(&cls);
                    i += len;
                }
                None => {
                    re.push_str("\\[");
                    i += 1;
                }
            },
            c => {
                re.push_str(&regex::escape(&c.to_string()));
                i += 1;
            }
        }
    }
    re.push('$');
    regex::Regex::new(&re).ok().map(|r| (r, basename))
}

/// Translates a bracket expression; returns the regex class and the pattern length used.
fn class(p: &[char]) -> Option<(String, usize)> {
    let mut out = String::from("[");
    let mut i = 1;
    if matches!(p.get(i), Some('!') | Some('^')) {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            out.push(']');
            return Some((out, i + 1));
        }
        first = false;
        if p[i] == '[' && p.get(i + 1) == Some(&':') {
            let rest: String = p[i..].iter().collect();
            // The class name starts after "[:" (in "[:]" the ":]" is not its end).
            let end = rest[2..].find(":]")? + 2;
            let name = &rest[2..end];
            let cls = match name {
                "space" => "\\s",
                "alpha" => "a-zA-Z",
                "digit" => "0-9",
                "alnum" => "a-zA-Z0-9",
                "upper" => "A-Z",
                "lower" => "a-z",
                "xdigit" => "0-9a-fA-F",
                _ => return None,
            };
            out.push_str(cls);
            i += rest[..end + 2].chars().count();
            continue;
        }
        let c = if p[i] == '\\' && i + 1 < p.len() {
            i += 1;
            p[i]
        } else {
            p[i]
        };
        if c == '-' {
            out.push('-');
        } else {
            out.push_str(&regex::escape(&c.to_string()));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules() {
        let r = LfsRules::parse(DEFAULT_GITATTRIBUTES);
        assert!(r.is_lfs("model.safetensors"));
        assert!(r.is_lfs("sub/dir/weights.bin"));
        assert!(r.is_lfs("data.tar.gz"));
        assert!(r.is_lfs("saved_model/variables/x"));
        assert!(r.is_lfs("runs/events.out.tfevents.123"));
        assert!(!r.is_lfs("config.json"));
        assert!(!r.is_lfs("README.md"));
        assert!(!r.is_lfs("saved_model"));
    }

    #[test]
    fn explicit_paths_and_escapes() {
        let text = with_lfs_paths("", ["big file.dat", "a/b[1]*.raw"]);
        let r = LfsRules::parse(&text);
        assert!(r.is_lfs("big file.dat"));
        assert!(r.is_lfs("a/b[1]*.raw"));
        assert!(!r.is_lfs("a/b1x.raw"));
        assert!(!r.is_lfs("other/big file.dat"), "{text}");
        // Already covered: nothing added.
        assert_eq!(
            with_lfs_paths(DEFAULT_GITATTRIBUTES, ["m.bin"]),
            DEFAULT_GITATTRIBUTES
        );
    }

    #[test]
    fn globs() {
        assert!(pattern_matches("*.txt", "a/b/c.txt"));
        assert!(!pattern_matches("a/*.txt", "a/b/c.txt"));
        assert!(pattern_matches("a/**/c.txt", "a/c.txt"));
        assert!(pattern_matches("a/**/c.txt", "a/b/x/c.txt"));
        assert!(pattern_matches("a/**", "a/b/c"));
        assert!(pattern_matches("f?o", "foo"));
        assert!(pattern_matches("[a-c]x", "bx"));
        assert!(!pattern_matches("[!a-c]x", "bx"));
        assert!(pattern_matches("-filter-x", "-filter-x"));
    }

    #[test]
    fn unset_filter() {
        let r = LfsRules::parse("*.bin filter=lfs\nsmall.bin -filter\n");
        assert!(r.is_lfs("x.bin"));
        assert!(!r.is_lfs("small.bin"));
    }
}
