//! `.gitignore` rules (the preupload `gitIgnore`), with git's semantics:
//! `!` negation, a trailing `/` for folders only, a leading or inner `/`
//! anchoring the pattern to the root, `**` across folders, and a path inside
//! an ignored folder ignored whatever later patterns say.

use super::patterns::{self, PatternError, PatternLimits, PatternList, LIMITS};
use std::collections::HashMap;

/// Compiled `.gitignore` rules.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    /// Patterns that match files and folders.
    any: PatternList,
    /// Patterns with a trailing `/` (folders only).
    dirs: PatternList,
    /// By line index: (list, index in it) → negated.
    negated_any: Vec<bool>,
    negated_dirs: Vec<bool>,
    /// Line order of each list's patterns, to compare across the two lists.
    line_any: Vec<usize>,
    line_dirs: Vec<usize>,
}

impl IgnoreRules {
    /// Parses a `.gitignore` text under [`LIMITS`].
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        Self::parse_with(text, &LIMITS)
    }

    pub fn parse_with(text: &str, limits: &PatternLimits) -> Result<Self, PatternError> {
        patterns::check_text("gitIgnore too large", text, limits)?;
        let mut r = Self::default();
        for (line_no, line) in text.split('\n').enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = patterns::trim_trailing_spaces(line);
            let (negated, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, line),
            };
            let (dir_only, pat) = match pat.strip_suffix('/') {
                Some(p) => (true, p),
                None => (false, pat),
            };
            if pat.is_empty() {
                continue;
            }
            if r.any.len() + r.dirs.len() >= limits.patterns {
                return Err(PatternError {
                    what: "too many patterns",
                    detail: format!("at most {} pattern lines", limits.patterns),
                });
            }
            if dir_only {
                r.dirs.push(pat, limits)?;
                r.negated_dirs.push(negated);
                r.line_dirs.push(line_no);
            } else {
                r.any.push(pat, limits)?;
                r.negated_any.push(negated);
                r.line_any.push(line_no);
            }
            if r.any.wildcard_count() + r.dirs.wildcard_count() > limits.wildcard_patterns {
                return Err(PatternError {
                    what: "too many wildcard patterns",
                    detail: format!(
                        "at most {} patterns with wildcards (other than literals and `*.ext`)",
                        limits.wildcard_patterns
                    ),
                });
            }
        }
        Ok(r)
    }

    /// Patterns that cost an automaton run per check.
    pub fn wildcard_count(&self) -> usize {
        self.any.wildcard_count() + self.dirs.wildcard_count()
    }

    /// Refuses checking `paths` when it would be over the CPU bound (each
    /// path costs one check per folder level, and folders are checked once).
    pub fn check_budget<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PatternError> {
        let mut checks: u64 = 0;
        let mut dirs = std::collections::HashSet::new();
        for p in paths {
            checks += 1;
            let mut end = 0;
            for seg in p.split('/') {
                end += seg.len();
                if end < p.len() && dirs.insert(&p[..end]) {
                    checks += 1;
                }
                end += 1;
            }
        }
        patterns::check_budget(
            "gitIgnore too complex for this many paths",
            self.wildcard_count(),
            checks,
            &LIMITS,
        )
    }

    /// Whether one path (a file, or a folder when `dir`) is excluded by its
    /// own last matching pattern, ignoring its parents.
    fn excluded_here(&self, path: &str, dir: bool) -> bool {
        let a = self
            .any
            .last_match(path)
            .map(|i| (self.line_any[i], self.negated_any[i]));
        let d = if dir {
            self.dirs
                .last_match(path)
                .map(|i| (self.line_dirs[i], self.negated_dirs[i]))
        } else {
            None
        };
        match (a, d) {
            (Some(a), Some(d)) => !(if a.0 > d.0 { a.1 } else { d.1 }),
            (Some((_, neg)), None) | (None, Some((_, neg))) => !neg,
            (None, None) => false,
        }
    }

    /// Whether a file path is ignored; `folders` caches folder verdicts across calls.
    pub fn is_ignored(&self, path: &str, folders: &mut HashMap<String, bool>) -> bool {
        let mut end = 0;
        for seg in path.split('/') {
            end += seg.len();
            if end >= path.len() {
                break;
            }
            let dir = &path[..end];
            let excluded = match folders.get(dir) {
                Some(v) => *v,
                None => {
                    let v = self.excluded_here(dir, true);
                    folders.insert(dir.to_string(), v);
                    v
                }
            };
            if excluded {
                return true;
            }
            end += 1;
        }
        self.excluded_here(path, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(g: &str, p: &str) -> bool {
        IgnoreRules::parse(g)
            .unwrap()
            .is_ignored(p, &mut HashMap::new())
    }

    #[test]
    fn basics() {
        let g = "*.log\nbuild/\n!keep.log\n";
        assert!(ignored(g, "a.log"));
        assert!(ignored(g, "x/a.log"));
        assert!(!ignored(g, "keep.log"));
        assert!(ignored(g, "build/out.bin"));
        assert!(!ignored(g, "build"), "a file named build is not a folder");
        assert!(!ignored(g, "src/main.rs"));
        // A file in an ignored folder stays ignored despite a negation.
        assert!(ignored("out/\n!out/keep.txt\n", "out/keep.txt"));
    }

    /// The same patterns and paths through `git check-ignore` in a temp repo.
    #[test]
    fn agrees_with_git_check_ignore() {
        let text = "\
# comment
*.log
!keep.log
build/
/root.txt
docs/*.md
**/cache
deep/**/tmp
logs/**
a?c
[a-c]z
[!x]q
\\#hash
\\!bang
trail   
esc\\ 
n/m/
*.tar.gz
!important/*.log
x**y
out/
!out/keep.txt
";
        let paths = [
            "a.log",
            "d/a.log",
            "keep.log",
            "d/keep.log",
            "build/x",
            "d/build/x",
            "build",
            "root.txt",
            "d/root.txt",
            "docs/a.md",
            "docs/d/a.md",
            "cache",
            "d/cache/x",
            "deep/tmp",
            "deep/a/b/tmp",
            "logs/a/b",
            "logs",
            "abc",
            "a/c",
            "bz",
            "dz",
            "yq",
            "xq",
            "#hash",
            "!bang",
            "trail",
            "trail   ",
            "esc ",
            "esc",
            "n/m/f",
            "n/m",
            "a.tar.gz",
            "important/x.log",
            "xay",
            "xa/y",
            "out/keep.txt",
            "out/other",
        ];
        let r = IgnoreRules::parse(text).unwrap();
        let Some(git) = git_check_ignore(text, &paths) else {
            eprintln!("git is not installed; skipping");
            return;
        };
        let mut folders = HashMap::new();
        for p in paths {
            assert_eq!(r.is_ignored(p, &mut folders), git.contains(p), "{p}");
        }
    }

    fn git_check_ignore(text: &str, paths: &[&str]) -> Option<std::collections::HashSet<String>> {
        use std::io::Write;
        use std::process::{Command, Stdio};
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
        std::fs::write(dir.path().join(".gitignore"), text).ok()?;
        let mut child = Command::new("git")
            .args(["check-ignore", "--no-index", "--stdin", "-z"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut input = Vec::new();
        for p in paths {
            input.extend_from_slice(p.as_bytes());
            input.push(0);
        }
        child.stdin.take()?.write_all(&input).ok()?;
        let out = child.wait_with_output().ok()?;
        Some(
            out.stdout
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )
    }
}
