//! File paths inside a repository. A path that could escape a directory, alias
//! another path or confuse git or a file system is refused here, before any
//! SQL or storage call.

use crate::error::ApiError;
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// Longest accepted path, in bytes (documented in docs/API.md).
pub const MAX_PATH_BYTES: usize = 1000;
/// Longest accepted path segment, in bytes (the common file-system limit).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Characters that render as nothing and would let `.g\u{200c}it` pass as `.git`.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
    )
}

const WINDOWS_DEVICES: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// A validated, normalised (no `./`, no `//`) relative file path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoPath(String);

impl RepoPath {
    /// Parses a file path. Trailing `/` is refused (use [`RepoPath::parse_folder`]).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if let Some(reason) = escape(s) {
            return Err(ApiError::PathEscapes(format!("{}: {reason}", quote(s))));
        }
        check_path(s).map_err(|reason| ApiError::InvalidPath(format!("{}: {reason}", quote(s))))?;
        Ok(Self(s.to_string()))
    }

    /// Parses a folder path as sent in `deletedFolder` (a trailing `/` is allowed and dropped).
    pub fn parse_folder(s: &str) -> Result<Self, ApiError> {
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        Self::parse(trimmed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key two paths collide on when a file system folds case or Unicode forms:
    /// `README.md` and `readme.md`, or NFC and NFD spellings of `é`.
    pub fn fold_key(&self) -> String {
        self.0.nfc().collect::<String>().to_lowercase()
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn quote(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    if short.len() < s.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// Why a client could read `s` as a path out of the repo's folder, on POSIX
/// or on Windows (where `\\` separates and `C:` is a drive): these are
/// [`ApiError::PathEscapes`] (422); the other rules are 400.
fn escape(s: &str) -> Option<&'static str> {
    if s.starts_with('/') {
        return Some("must be relative (no leading '/')");
    }
    if s.contains('\\') {
        return Some(
            "backslashes are not allowed (a Windows client reads them as folder separators)",
        );
    }
    if s.len() >= 2 && s.as_bytes()[1] == b':' && s.as_bytes()[0].is_ascii_alphabetic() {
        return Some("drive-letter paths are not allowed");
    }
    if s.split('/').any(|seg| seg == "..") {
        return Some("segment \"..\" is not allowed");
    }
    None
}

fn check_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_PATH_BYTES {
        return Err(format!(
            "{} bytes is over the limit of {MAX_PATH_BYTES}",
            s.len()
        ));
    }
    if s.starts_with('/') {
        return Err("must be relative (no leading '/')".into());
    }
    if s.ends_with('/') {
        return Err("must not end with '/'".into());
    }
    if s.contains('\\') {
        return Err("backslashes are not allowed".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("control character {c:?} is not allowed"));
    }
    if s.len() >= 2 && s.as_bytes()[1] == b':' && s.as_bytes()[0].is_ascii_alphabetic() {
        return Err("drive-letter paths are not allowed".into());
    }
    for seg in s.split('/') {
        check_segment(seg)?;
    }
    Ok(())
}

fn check_segment(seg: &str) -> Result<(), String> {
    if seg.is_empty() {
        return Err("empty segment ('//')".into());
    }
    if seg == "." || seg == ".." {
        return Err(format!("segment {seg:?} is not allowed"));
    }
    if seg.len() > MAX_SEGMENT_BYTES {
        return Err(format!(
            "a segment of {} bytes is over the limit of {MAX_SEGMENT_BYTES}",
            seg.len()
        ));
    }
    if seg.chars().any(is_invisible) {
        return Err("invisible formatting characters are not allowed".into());
    }
    let lower = seg.nfkc().collect::<String>().to_lowercase();
    let visible = lower.trim_end_matches(['.', ' ']);
    if visible == ".git" || visible == "git~1" {
        return Err("'.git' segments are not allowed".into());
    }
    if seg.ends_with('.') && seg.trim_end_matches('.').is_empty() {
        return Err(format!("segment {seg:?} is not allowed"));
    }
    if seg.ends_with(' ') || seg.ends_with('.') {
        return Err("segments must not end with a space or a dot".into());
    }
    if seg.starts_with(' ') {
        return Err("segments must not start with a space".into());
    }
    let stem = lower.split('.').next().unwrap_or("");
    if WINDOWS_DEVICES.contains(&stem.trim_end()) {
        return Err(format!("{seg:?} is a reserved device name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "config.json",
            "a/b/c.bin",
            "with space.txt",
            "unicodé/文件.txt",
            "a+b#c.txt",
            "1_Pooling/config.json",
            ".gitattributes",
            ".github/x",
            "%2F.txt",
        ] {
            assert!(RepoPath::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_paths() {
        let long = "a".repeat(1001);
        let long_seg = format!("{}/x", "b".repeat(256));
        for bad in [
            "",
            "../x",
            "a/../b",
            "./a",
            "a/./b",
            "/abs",
            "a//b",
            "a/",
            "..\\x",
            "a\\b",
            "C:x",
            "\\\\host\\s",
            "a\0b",
            ".git/config",
            ".GIT/x",
            "x/.git",
            ".g\u{200c}it/x",
            "GIT~1/x",
            "CON",
            "con.txt",
            "trailing.",
            "trailing ",
            " lead",
            "...",
            long.as_str(),
            long_seg.as_str(),
            "tab\there",
            "nl\nhere",
        ] {
            assert!(RepoPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fold_keys_collide_for_twins() {
        let nfc = RepoPath::parse("caf\u{e9}.txt").unwrap();
        let nfd = RepoPath::parse("cafe\u{301}.txt").unwrap();
        assert_eq!(nfc.fold_key(), nfd.fold_key());
        let a = RepoPath::parse("README.md").unwrap();
        let b = RepoPath::parse("readme.md").unwrap();
        assert_eq!(a.fold_key(), b.fold_key());
    }

    #[test]
    fn folder_paths() {
        assert_eq!(RepoPath::parse_folder("dir/").unwrap().as_str(), "dir");
        assert!(RepoPath::parse_folder("/").is_err());
    }
}
