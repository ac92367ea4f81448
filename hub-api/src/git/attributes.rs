//! `.gitattributes`: which paths are stored with Git LFS. The hub keeps the file
//! up to date so that a `git clone` of a repo would treat large files the way
//! the API does.

use super::patterns::{self, PatternError, PatternLimits, PatternList, LIMITS};

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

/// Parsed LFS rules of a `.gitattributes` file: for each line that sets,
/// unsets or resets `filter`, whether it makes a path LFS (the last matching
/// line wins, as in git). Compiled once; see [`super::patterns`] for the bounds.
#[derive(Debug, Clone, Default)]
pub struct LfsRules {
    patterns: PatternList,
    /// By pattern index.
    lfs: Vec<bool>,
}

/// git ignores `.gitattributes` lines of this many bytes or more.
pub const GIT_MAX_LINE: usize = 2048;

impl LfsRules {
    /// Parses a `.gitattributes` text under [`LIMITS`].
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        Self::parse_with(text, &LIMITS)
    }

    /// Parses under explicit limits.
    pub fn parse_with(text: &str, limits: &PatternLimits) -> Result<Self, PatternError> {
        patterns::check_text(".gitattributes too large", text, limits)?;
        let mut rules = Self::default();
        for line in text.split('\n') {
            let line = line.trim_start_matches(BLANK);
            if line.is_empty() || line.starts_with('#') || line.len() >= GIT_MAX_LINE {
                continue;
            }
            let (pattern, attrs) = match line.find(BLANK) {
                Some(n) => (&line[..n], &line[n..]),
                None => (line, ""),
            };
            // Macro definitions are not patterns; git refuses negative patterns.
            if pattern.starts_with("[attr]") || pattern.starts_with('!') {
                continue;
            }
            // The last `filter` attribute of a line is the one that counts.
            let mut lfs = None;
            for attr in attrs.split(BLANK).filter(|a| !a.is_empty()) {
                if attr == "filter=lfs" {
                    lfs = Some(true);
                } else if attr.starts_with("filter=")
                    || attr == "-filter"
                    || attr == "!filter"
                    || attr == "filter"
                {
                    lfs = Some(false);
                }
            }
            let Some(lfs) = lfs else {
                continue;
            };
            // A pattern ending in '/' only matches folders: never a file.
            if pattern.ends_with('/') {
                continue;
            }
            rules.patterns.push(pattern, limits)?;
            rules.lfs.push(lfs);
        }
        Ok(rules)
    }

    /// Whether `path` is an LFS path under these rules.
    pub fn is_lfs(&self, path: &str) -> bool {
        self.patterns.last_match(path).is_some_and(|i| self.lfs[i])
    }

    /// Patterns that cost an automaton run per path.
    pub fn wildcard_count(&self) -> usize {
        self.patterns.wildcard_count()
    }

    /// Refuses matching `paths` paths when it would be over the CPU bound.
    pub fn check_budget(&self, paths: usize) -> Result<(), PatternError> {
        patterns::check_budget(
            ".gitattributes too complex for this many paths",
            self.wildcard_count(),
            paths as u64,
            &LIMITS,
        )
    }
}

/// git's separators between a pattern and its attributes.
const BLANK: &[char] = &[' ', '\t', '\r', '\n'];

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

/// Adds an LFS line for each path that `covered` (the rules of `text`) does
/// not already make LFS. The added lines are literal, so a path is added once.
pub fn with_lfs_paths<'a>(
    text: &str,
    paths: impl IntoIterator<Item = &'a str>,
    covered: impl Fn(&str) -> bool,
) -> String {
    let mut out = text.to_string();
    let mut added = std::collections::HashSet::new();
    for path in paths {
        if covered(path) || !added.insert(path) {
            continue;
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let pat = escape_pattern(path);
        out.push_str(&format!("{pat} filter=lfs diff=lfs merge=lfs -text\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(t: &str) -> LfsRules {
        LfsRules::parse(t).unwrap()
    }

    #[test]
    fn default_rules() {
        let r = rules(DEFAULT_GITATTRIBUTES);
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
        let none = rules("");
        let text = with_lfs_paths("", ["big file.dat", "a/b[1]*.raw", "big file.dat"], |p| {
            none.is_lfs(p)
        });
        assert_eq!(text.lines().count(), 2, "{text}");
        let r = rules(&text);
        assert!(r.is_lfs("big file.dat"));
        assert!(r.is_lfs("a/b[1]*.raw"));
        assert!(!r.is_lfs("a/b1x.raw"));
        assert!(!r.is_lfs("other/big file.dat"), "{text}");
        // Already covered: nothing added.
        let d = rules(DEFAULT_GITATTRIBUTES);
        assert_eq!(
            with_lfs_paths(DEFAULT_GITATTRIBUTES, ["m.bin"], |p| d.is_lfs(p)),
            DEFAULT_GITATTRIBUTES
        );
    }

    #[test]
    fn unset_filter() {
        let r = rules("*.bin filter=lfs\nsmall.bin -filter\nx.bin filter=lfs !filter\n");
        assert!(r.is_lfs("y.bin"));
        assert!(!r.is_lfs("small.bin"));
        assert!(!r.is_lfs("x.bin"));
    }

    /// A hub-made file of thousands of literal lines is hash lookups; a file
    /// of pathological wildcards is refused with the limit's name, fast.
    #[test]
    fn big_files_are_fast_or_refused() {
        let paths: Vec<String> = (0..5000).map(|i| format!("d{i}/w {i}.raw")).collect();
        let text = with_lfs_paths(
            DEFAULT_GITATTRIBUTES,
            paths.iter().map(String::as_str),
            |_| false,
        );
        let t = std::time::Instant::now();
        let r = rules(&text);
        assert!(paths.iter().all(|p| r.is_lfs(p)));
        assert!(!r.is_lfs("d1/w 2.raw"));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );

        let evil: String = (0..2000)
            .map(|i| format!("{}b{i} filter=lfs\n", "*a".repeat(30)))
            .collect();
        let t = std::time::Instant::now();
        let e = LfsRules::parse(&evil).unwrap_err();
        assert_eq!(e.what, "too many wildcard patterns");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    /// The same patterns and paths through `git check-attr` in a temp repo.
    #[test]
    fn agrees_with_git_check_attr() {
        let text = "\
*.bin filter=lfs
/top.dat filter=lfs
sub/*.x filter=lfs
deep/**/y filter=lfs
**/z.q filter=lfs
a**b filter=lfs
f?o filter=lfs
[a-c]x.r filter=lfs
[!a-c]y.r filter=lfs
[]]k filter=lfs
u[v filter=lfs
w\\*w filter=lfs
sp[[:space:]]ace filter=lfs
n[[:digit:]]m filter=lfs
dir/ filter=lfs
!neg.bin filter=lfs
keep.bin -filter
  indented.t filter=lfs
tab.t\tfilter=lfs
last.t filter=lfs -filter
last2.t -filter filter=lfs
*.tar.gz filter=lfs
saved/**/* filter=lfs
";
        let paths = [
            "a.bin",
            "x/a.bin",
            "keep.bin",
            "x/keep.bin",
            "neg.bin",
            "top.dat",
            "x/top.dat",
            "sub/a.x",
            "sub/b/a.x",
            "x/sub/a.x",
            "deep/y",
            "deep/a/b/y",
            "deepy",
            "z.q",
            "a/b/z.q",
            "ab",
            "axxb",
            "ax/b",
            "foo",
            "fxo",
            "f/o",
            "bx.r",
            "dx.r",
            "by.r",
            "dy.r",
            "]k",
            "u[v",
            "w*w",
            "wxw",
            "sp ace",
            "n5m",
            "nxm",
            "dir",
            "dir/f",
            "indented.t",
            "tab.t",
            "last.t",
            "last2.t",
            "a.tar.gz",
            "a.tar.gzz",
            "saved/a",
            "saved/a/b",
            "saved",
        ];
        let r = rules(text);
        let Some(git) = git_check_attr(text, &paths) else {
            eprintln!("git is not installed; skipping");
            return;
        };
        for (p, want) in paths.iter().zip(git) {
            assert_eq!(r.is_lfs(p), want, "{p}");
        }
    }

    /// `git check-attr filter` for each path: whether it says `lfs`.
    fn git_check_attr(text: &str, paths: &[&str]) -> Option<Vec<bool>> {
        use std::process::Command;
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("git")
            .args(["init", "-q"])
            .current_dir(dir.path())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        std::fs::write(dir.path().join(".gitattributes"), text).ok()?;
        let out = Command::new("git")
            .args(["check-attr", "filter", "--"])
            .args(paths)
            .current_dir(dir.path())
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).ok()?;
        Some(text.lines().map(|l| l.ends_with(": filter: lfs")).collect())
    }
}
