//! Git's wildmatch patterns (the syntax of `.gitignore` and `.gitattributes`),
//! compiled once per list and matched without backtracking.
//!
//! Tenants send these patterns (the preupload `gitIgnore`, a committed
//! `.gitattributes`), so the work is bounded: a list is refused over
//! [`LIMITS`], literal patterns (most of a hub-made `.gitattributes`) are hash
//! lookups, `*.ext` patterns are suffix lookups, and every other pattern is
//! one `regex` automaton (linear in the path, never exponential) built once.
//! Matching is byte-wise like git's `wildmatch` (`?` is one byte).
//!
//! Paths matched here are `RepoPath`-valid, so they hold no control
//! characters; `[[:space:]]` (as `escape_pattern` writes a space) can then
//! only match a space, which lets such a pattern stay a literal.

use regex::bytes::{Regex, RegexBuilder};
use std::collections::HashMap;

/// Bounds on one pattern list (documented in docs/API.md, "Limits").
#[derive(Debug, Clone, Copy)]
pub struct PatternLimits {
    /// Bytes of the whole text.
    pub text_bytes: usize,
    /// Pattern lines.
    pub patterns: usize,
    /// Bytes of one pattern.
    pub pattern_bytes: usize,
    /// Patterns that need an automaton (not a literal or `*.ext`).
    pub wildcard_patterns: usize,
    /// Bytes of those patterns together.
    pub wildcard_bytes: usize,
    /// Wildcard patterns × path checks of one request (a CPU bound).
    pub wildcard_checks: u64,
}

/// The limits every list is held to.
pub const LIMITS: PatternLimits = PatternLimits {
    text_bytes: 4 * 1024 * 1024,
    patterns: 100_000,
    pattern_bytes: 4096,
    wildcard_patterns: 1000,
    wildcard_bytes: 64 * 1024,
    wildcard_checks: 2_000_000,
};

/// Automaton bounds of one wildcard pattern (compiled program and lazy-DFA cache).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
const REGEX_DFA_LIMIT: usize = 64 * 1024;

/// A pattern list over the limits; the message names the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct PatternError {
    pub what: &'static str,
    pub detail: String,
}

impl PatternError {
    fn new(what: &'static str, detail: String) -> Self {
        Self { what, detail }
    }
}

impl From<PatternError> for crate::error::ApiError {
    fn from(e: PatternError) -> Self {
        crate::error::ApiError::PayloadTooLarge(e.to_string())
    }
}

/// How one pattern is matched.
#[derive(Debug, Clone)]
enum Matcher {
    /// Can never match (git aborts on an unterminated class or a trailing `\`).
    Never,
    Literal(String),
    /// A basename pattern `*<suffix>` where the suffix starts with `.`.
    Suffix(String),
    /// Needs an automaton.
    Wild,
}

/// Patterns in file order; [`PatternList::last_match`] is the index of the
/// last pattern that matches (git's "last match wins").
#[derive(Debug, Clone, Default)]
pub struct PatternList {
    len: usize,
    /// Anchored literal paths → highest index.
    full: HashMap<String, usize>,
    /// Literal basenames → highest index.
    base: HashMap<String, usize>,
    /// `*.ext` basename suffixes → highest index.
    suffix: HashMap<String, usize>,
    /// The rest, ascending by index: (index, matches the basename only, automaton).
    wild: Vec<(usize, bool, Regex)>,
    wild_bytes: usize,
}

impl PatternList {
    /// Number of patterns pushed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Patterns that run an automaton per check (the CPU cost of a check).
    pub fn wildcard_count(&self) -> usize {
        self.wild.len()
    }

    /// Adds a pattern (without git's `!` and trailing `/`, which the caller
    /// interprets) and returns its index.
    pub fn push(&mut self, pattern: &str, limits: &PatternLimits) -> Result<usize, PatternError> {
        let idx = self.len;
        if idx >= limits.patterns {
            return Err(PatternError::new(
                "too many patterns",
                format!("at most {} pattern lines", limits.patterns),
            ));
        }
        if pattern.len() > limits.pattern_bytes {
            return Err(PatternError::new(
                "pattern too long",
                format!(
                    "a pattern of {} bytes is over the limit of {}",
                    pattern.len(),
                    limits.pattern_bytes
                ),
            ));
        }
        self.len += 1;
        // git: a pattern with a '/' (other than a trailing one) is matched
        // against the whole path, anchored; without one, against the basename.
        let basename = !pattern.contains('/');
        let pattern = pattern.strip_prefix('/').unwrap_or(pattern);
        match compile(pattern, basename) {
            Matcher::Never => {}
            Matcher::Literal(l) => {
                let map = if basename {
                    &mut self.base
                } else {
                    &mut self.full
                };
                map.insert(l, idx);
            }
            Matcher::Suffix(s) => {
                self.suffix.insert(s, idx);
            }
            Matcher::Wild => {
                if self.wild.len() >= limits.wildcard_patterns {
                    return Err(PatternError::new(
                        "too many wildcard patterns",
                        format!(
                            "at most {} patterns with wildcards (other than literals and `*.ext`)",
                            limits.wildcard_patterns
                        ),
                    ));
                }
                self.wild_bytes += pattern.len();
                if self.wild_bytes > limits.wildcard_bytes {
                    return Err(PatternError::new(
                        "wildcard patterns too large",
                        format!(
                            "patterns with wildcards may total {} bytes",
                            limits.wildcard_bytes
                        ),
                    ));
                }
                let re = regex_of(pattern).ok_or_else(|| {
                    PatternError::new(
                        "pattern too complex",
                        format!("{:?} compiles to too large an automaton", short(pattern)),
                    )
                })?;
                self.wild.push((idx, basename, re));
            }
        }
        Ok(idx)
    }

    /// The index of the last pattern matching `path` (a file or folder path
    /// without leading or trailing `/`).
    pub fn last_match(&self, path: &str) -> Option<usize> {
        let base = path.rsplit('/').next().unwrap_or(path);
        let mut best = self.full.get(path).copied();
        let mut take = |i: Option<&usize>| {
            if let Some(&i) = i {
                best = Some(best.map_or(i, |b: usize| b.max(i)));
            }
        };
        take(self.base.get(base));
        if !self.suffix.is_empty() {
            for (i, _) in base.match_indices('.') {
                take(self.suffix.get(&base[i..]));
            }
        }
        // Wildcard patterns after the best literal hit, newest first.
        let floor = best.map_or(0, |b| b + 1);
        for (i, basename, re) in self.wild.iter().rev() {
            if *i < floor {
                break;
            }
            let hay = if *basename { base } else { path };
            if re.is_match(hay.as_bytes()) {
                return Some(*i);
            }
        }
        best
    }
}

fn short(p: &str) -> String {
    p.chars().take(64).collect()
}

/// Checks a text against the size limit before it is split into lines.
pub fn check_text(
    what: &'static str,
    text: &str,
    limits: &PatternLimits,
) -> Result<(), PatternError> {
    if text.len() > limits.text_bytes {
        return Err(PatternError::new(
            what,
            format!(
                "{} bytes is over the limit of {} bytes",
                text.len(),
                limits.text_bytes
            ),
        ));
    }
    Ok(())
}

/// Checks the CPU bound of matching `checks` paths against `list`.
pub fn check_budget(
    what: &'static str,
    list_wildcards: usize,
    checks: u64,
    limits: &PatternLimits,
) -> Result<(), PatternError> {
    let work = (list_wildcards as u64).saturating_mul(checks);
    if work > limits.wildcard_checks {
        return Err(PatternError::new(
            what,
            format!(
                "{list_wildcards} wildcard patterns × {checks} path checks is over the limit of {} (send fewer paths per call or simpler patterns)",
                limits.wildcard_checks
            ),
        ));
    }
    Ok(())
}

/// The literal a pattern stands for, if it has no wildcard. `None` also
/// for patterns git can never match (handled by `compile`).
fn literal_of(p: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' | b'?' => return None,
            b'\\' => {
                let c = *p.get(i + 1)?;
                out.push(c);
                i += 2;
            }
            b'[' => {
                if p[i..].starts_with(b"[[:space:]]") {
                    out.push(b' ');
                    i += 11;
                } else {
                    return None;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn compile(pattern: &str, basename: bool) -> Matcher {
    let p = pattern.as_bytes();
    if let Some(l) = literal_of(p) {
        return Matcher::Literal(l);
    }
    if basename {
        if let Some(rest) = p.strip_prefix(b"*") {
            if let Some(l) = literal_of(rest) {
                if l.starts_with('.') {
                    return Matcher::Suffix(l);
                }
            }
        }
    }
    match translate(p) {
        None => Matcher::Never,
        // Compiled in `push`, after the count limits.
        Some(_) => Matcher::Wild,
    }
}

fn regex_of(pattern: &str) -> Option<Regex> {
    let re = translate(pattern.as_bytes())?;
    RegexBuilder::new(&format!("(?s-u)^{re}$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .build()
        .ok()
}

fn push_byte(re: &mut String, b: u8) {
    re.push_str(&format!("\\x{b:02X}"));
}

/// Translates a wildmatch pattern (with git's `WM_PATHNAME` rules: `*`, `?`
/// and classes never match `/`; `**` between slashes or at an end matches
/// across them) into a byte regex body. `None`: git never matches it.
fn translate(p: &[u8]) -> Option<String> {
    let mut re = String::with_capacity(p.len() * 4);
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' => {
                let start = i;
                while i < p.len() && p[i] == b'*' {
                    i += 1;
                }
                let double = i - start >= 2;
                let at_start = start == 0 || p[start - 1] == b'/';
                let next_slash = if p.get(i) == Some(&b'/') {
                    Some(1)
                } else if p.get(i) == Some(&b'\\') && p.get(i + 1) == Some(&b'/') {
                    Some(2)
                } else {
                    None
                };
                if double && at_start && i == p.len() {
                    re.push_str(".*");
                } else if double && at_start && next_slash.is_some() {
                    re.push_str("(?:.*/)?");
                    i += next_slash.unwrap_or(1);
                } else {
                    re.push_str("[^/]*");
                }
            }
            b'?' => {
                re.push_str("[^/]");
                i += 1;
            }
            b'\\' => {
                let c = *p.get(i + 1)?;
                push_byte(&mut re, c);
                i += 2;
            }
            b'[' => {
                let (set, used) = class(&p[i..])?;
                if !set.iter().any(|b| *b) {
                    return None;
                }
                re.push('[');
                let mut b = 0usize;
                while b < 256 {
                    if set[b] {
                        let lo = b;
                        while b + 1 < 256 && set[b + 1] {
                            b += 1;
                        }
                        push_byte(&mut re, lo as u8);
                        if b > lo {
                            re.push('-');
                            push_byte(&mut re, b as u8);
                        }
                    }
                    b += 1;
                }
                re.push(']');
                i += used;
            }
            c => {
                push_byte(&mut re, c);
                i += 1;
            }
        }
    }
    Some(re)
}

/// A bracket expression as git's wildmatch reads it: the bytes it matches
/// (never `/`) and the pattern bytes it used. `None`: git aborts the match.
fn class(p: &[u8]) -> Option<([bool; 256], usize)> {
    let mut set = [false; 256];
    let mut i = 1;
    let negated = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negated {
        i += 1;
    }
    let mut prev: Option<u8> = None;
    loop {
        let c = *p.get(i)?;
        if c == b']' && i > 1 + negated as usize {
            break;
        }
        if c == b'\\' {
            let e = *p.get(i + 1)?;
            set[e as usize] = true;
            prev = Some(e);
            i += 2;
        } else if c == b'-' && prev.is_some() && p.get(i + 1).is_some_and(|n| *n != b']') {
            let mut hi = p[i + 1];
            i += 2;
            if hi == b'\\' {
                hi = *p.get(i)?;
                i += 1;
            }
            let lo = prev.unwrap_or(0);
            if lo <= hi {
                for b in lo..=hi {
                    set[b as usize] = true;
                }
            }
            prev = None;
        } else if c == b'[' && p.get(i + 1) == Some(&b':') {
            let rest = &p[i + 2..];
            let close = rest.iter().position(|b| *b == b']')?;
            if close == 0 || rest[close - 1] != b':' {
                // Not a class name: the '[' is an ordinary member.
                set[b'[' as usize] = true;
                prev = Some(b'[');
                i += 1;
                continue;
            }
            let name = &rest[..close - 1];
            let test: fn(u8) -> bool = match name {
                b"alnum" => |b| b.is_ascii_alphanumeric(),
                b"alpha" => |b| b.is_ascii_alphabetic(),
                b"blank" => |b| b == b' ' || b == b'\t',
                b"cntrl" => |b| b < 0x20 || b == 0x7f,
                b"digit" => |b| b.is_ascii_digit(),
                b"graph" => |b| (0x21..=0x7e).contains(&b),
                b"lower" => |b| b.is_ascii_lowercase(),
                b"print" => |b| (0x20..=0x7e).contains(&b),
                b"punct" => |b| b.is_ascii_punctuation(),
                b"space" => |b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'),
                b"upper" => |b| b.is_ascii_uppercase(),
                b"xdigit" => |b| b.is_ascii_hexdigit(),
                _ => return None,
            };
            for b in 0..=255u8 {
                if test(b) {
                    set[b as usize] = true;
                }
            }
            prev = None;
            i += 2 + close + 1;
        } else {
            set[c as usize] = true;
            prev = Some(c);
            i += 1;
        }
    }
    if negated {
        for b in set.iter_mut() {
            *b = !*b;
        }
    }
    set[b'/' as usize] = false;
    Some((set, i + 1))
}

/// git's `trim_trailing_spaces`: drops unescaped trailing spaces.
pub fn trim_trailing_spaces(line: &str) -> &str {
    let b = line.as_bytes();
    let mut last_space: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' => {
                if last_space.is_none() {
                    last_space = Some(i);
                }
            }
            b'\\' => {
                i += 1;
                if i >= b.len() {
                    return line;
                }
                last_space = None;
            }
            _ => last_space = None,
        }
        i += 1;
    }
    match last_space {
        Some(n) => &line[..n],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(p: &str) -> PatternList {
        let mut l = PatternList::default();
        l.push(p, &LIMITS).unwrap();
        l
    }

    fn m(p: &str, path: &str) -> bool {
        one(p).last_match(path).is_some()
    }

    #[test]
    fn globs() {
        assert!(m("*.txt", "a/b/c.txt"));
        assert!(!m("a/*.txt", "a/b/c.txt"));
        assert!(m("a/**/c.txt", "a/c.txt"));
        assert!(m("a/**/c.txt", "a/b/x/c.txt"));
        assert!(m("a/**", "a/b/c"));
        assert!(!m("a/**", "a"));
        assert!(m("**/c", "a/b/c"));
        assert!(m("**/c", "c"));
        assert!(m("f?o", "foo"));
        assert!(!m("f?o", "f/o"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[!a-c]x", "bx"));
        assert!(m("[]a]", "]"));
        assert!(!m("a[b", "a[b"), "unterminated class never matches");
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("a**b", "axyb"));
        assert!(!m("a**b", "ax/yb"));
        assert!(m("*.tar.gz", "x/y.tar.gz"));
        assert!(m("*.tar.gz", ".tar.gz"));
        assert!(!m("*.tar.gz", "y.tar.gzz"));
        assert!(m("big[[:space:]]file", "big file"));
        assert!(m("/top", "top"));
        assert!(!m("/top", "a/top"));
        assert!(m("[[:digit:]x]", "7"));
        assert!(!m("[[:bogus:]]", "b"));
    }

    #[test]
    fn last_match_wins_across_kinds() {
        let mut l = PatternList::default();
        l.push("*.bin", &LIMITS).unwrap();
        l.push("a/x.bin", &LIMITS).unwrap();
        l.push("*x*", &LIMITS).unwrap();
        assert_eq!(l.last_match("a/x.bin"), Some(2));
        assert_eq!(l.last_match("b/y.bin"), Some(0));
        assert_eq!(l.last_match("q.md"), None);
    }

    #[test]
    fn limits_are_enforced() {
        let limits = PatternLimits {
            wildcard_patterns: 2,
            ..LIMITS
        };
        let mut l = PatternList::default();
        l.push("a*b", &limits).unwrap();
        l.push("literal.txt", &limits).unwrap();
        l.push("*.ext", &limits).unwrap();
        l.push("c*d", &limits).unwrap();
        assert_eq!(
            l.push("e*f", &limits).unwrap_err().what,
            "too many wildcard patterns"
        );
        let long = "x".repeat(LIMITS.pattern_bytes + 1);
        assert_eq!(
            PatternList::default()
                .push(&long, &LIMITS)
                .unwrap_err()
                .what,
            "pattern too long"
        );
        assert!(check_budget("gitIgnore", 1000, 2001, &LIMITS).is_err());
        assert!(check_budget("gitIgnore", 1000, 2000, &LIMITS).is_ok());
    }

    #[test]
    fn trailing_spaces() {
        assert_eq!(trim_trailing_spaces("a  "), "a");
        assert_eq!(trim_trailing_spaces("a\\ "), "a\\ ");
        assert_eq!(trim_trailing_spaces("a\\  "), "a\\ ");
        assert_eq!(trim_trailing_spaces("a\t"), "a\t");
    }
}
