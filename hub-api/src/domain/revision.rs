//! Revisions (what a client asks for: branch, tag, full ref or commit id) and
//! ref names (what a branch or tag may be called), following git's
//! `check-ref-format` rules.

use crate::error::ApiError;

/// A 40-hex git object id (lowercase).
pub fn is_commit_oid(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a client asked for. Resolution order: a 40-hex id that names a commit
/// of the repo, then `refs/heads/<rev>`, then `refs/tags/<rev>`, then the
/// literal ref (`refs/pr/1`, `refs/convert/parquet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision(String);

impl Revision {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if is_commit_oid(&s.to_ascii_lowercase()) {
            return Ok(Self(s.to_ascii_lowercase()));
        }
        check_ref_name(s).map_err(|m| ApiError::InvalidRevision(format!("{s:?}: {m}")))?;
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The full ref names to try, in order.
    pub fn candidate_refs(&self) -> Vec<String> {
        if self.0.starts_with("refs/") {
            vec![self.0.clone()]
        } else {
            vec![
                format!("refs/heads/{}", self.0),
                format!("refs/tags/{}", self.0),
            ]
        }
    }
}

/// A branch or tag short name (`main`, `v1.0`, `feature/x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefName(String);

impl RefName {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        check_ref_name(s).map_err(|m| ApiError::InvalidRevision(format!("{s:?}: {m}")))?;
        if s.starts_with("refs/") {
            return Err(ApiError::InvalidRevision(format!(
                "{s:?}: give the short name, not a full ref"
            )));
        }
        if is_commit_oid(s) {
            return Err(ApiError::InvalidRevision(format!(
                "{s:?}: a branch or tag name cannot look like a commit id"
            )));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.0)
    }
    pub fn tag_ref(&self) -> String {
        format!("refs/tags/{}", self.0)
    }
}

fn check_ref_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 255 {
        return Err("longer than 255 bytes".into());
    }
    if s == "@" || s.contains("@{") {
        return Err("'@' and '@{' are not allowed".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    if s.contains("..") {
        return Err("'..' is not allowed".into());
    }
    if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
        return Err("empty path components are not allowed".into());
    }
    if s.ends_with('.') {
        return Err("must not end with '.'".into());
    }
    if s.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    for comp in s.split('/') {
        if comp.starts_with('.') {
            return Err("components must not start with '.'".into());
        }
        if comp.ends_with(".lock") {
            return Err("components must not end with '.lock'".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions() {
        for ok in [
            "main",
            "v1.0",
            "feature/x",
            "refs/pr/1",
            "refs/convert/parquet",
        ] {
            assert!(Revision::parse(ok).is_ok(), "{ok}");
        }
        let oid = "a".repeat(40);
        assert_eq!(Revision::parse(&oid).unwrap().as_str(), oid);
        assert_eq!(
            Revision::parse(&"A".repeat(40)).unwrap().as_str(),
            "a".repeat(40)
        );
        for bad in [
            "", "a..b", "a b", "a~1", "x.lock", "/x", "x/", "a//b", ".hidden", "@", "a@{1}", "-x",
        ] {
            assert!(Revision::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Revision::parse("dev").unwrap().candidate_refs(),
            vec!["refs/heads/dev", "refs/tags/dev"]
        );
    }

    #[test]
    fn ref_names() {
        assert!(RefName::parse("v1").is_ok());
        assert!(RefName::parse("refs/heads/x").is_err());
        assert!(RefName::parse(&"b".repeat(40)).is_err());
    }
}
