//! Namespace and repository names, and the repository type. Parsed at the edge:
//! nothing that fails here reaches SQL or storage.

use crate::error::ApiError;
use std::fmt;

/// Names no user, organization or single-segment repo may take: they are
/// top-level routes of the hub (dashboard, API, HF URL prefixes).
pub const RESERVED_NAMES: &[&str] = &[
    "api",
    "datasets",
    "dataset",
    "models",
    "model",
    "spaces",
    "kernels",
    "buckets",
    "endpoints",
    // The dashboard's endpoint pages live under /inference.
    "inference",
    // ... and its fine-tuning job pages under /jobs.
    "jobs",
    "settings",
    "login",
    "logout",
    "signup",
    "static",
    "assets",
    "new",
    "organizations",
    "orgs",
    "docs",
    "healthz",
    "readyz",
    "metrics",
    "admin",
    "oauth",
    "lfs",
    "upload",
    "tokens",
    "search",
    "favicon.ico",
    "robots.txt",
    "_root",
];

/// Shared rule for namespace and repo names (what `huggingface_hub` accepts):
/// `[A-Za-z0-9._-]`, 1..=96 chars, no `--` or `..`, no leading or trailing
/// `-` or `.`, no `.git` suffix.
fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 96 {
        return Err(format!("{} characters is over the limit of 96", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.'))
    {
        return Err(format!(
            "character {c:?} is not allowed (use letters, digits, '-', '_' and '.')"
        ));
    }
    if s.contains("--") || s.contains("..") {
        return Err("'--' and '..' are not allowed".into());
    }
    if s.starts_with(['-', '.']) || s.ends_with(['-', '.']) {
        return Err("must not start or end with '-' or '.'".into());
    }
    if s.to_ascii_lowercase().ends_with(".git") {
        return Err("must not end with '.git'".into());
    }
    Ok(())
}

/// A user or organization name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamespaceName(String);

impl NamespaceName {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        check_name(s).map_err(|m| ApiError::InvalidNamespaceName(format!("{s:?}: {m}")))?;
        if RESERVED_NAMES.contains(&s.to_ascii_lowercase().as_str()) {
            return Err(ApiError::InvalidNamespaceName(format!("{s:?} is reserved")));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name part of a repo id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        check_name(s).map_err(|m| ApiError::InvalidRepoName(format!("{s:?}: {m}")))?;
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Model or dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoType {
    Model,
    Dataset,
}

impl RepoType {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "model" | "models" => Ok(RepoType::Model),
            "dataset" | "datasets" => Ok(RepoType::Dataset),
            other => Err(super::ParseError::RepoType(other.to_string()).into()),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RepoType::Model => "model",
            RepoType::Dataset => "dataset",
        }
    }
    /// The prefix of download and web URLs: "" for models, "datasets/" for datasets.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
        }
    }
    /// The plural used in API paths: models, datasets.
    pub fn plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
        }
    }
}

/// The namespace that holds single-segment ("canonical") repos such as `gpt2`.
/// It is in [`RESERVED_NAMES`], so no user or organization can claim it.
pub const ROOT_NAMESPACE: &str = "_root";

/// A repo id as the clients write it: `ns/name` or a single-segment `name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoId {
    /// None for single-segment (canonical) repos.
    pub namespace: Option<NamespaceName>,
    pub name: RepoName,
}

impl RepoId {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s.split_once('/') {
            Some((ns, name)) => {
                if name.contains('/') {
                    return Err(ApiError::InvalidRepoName(format!(
                        "{s:?}: a repo id has at most one '/'"
                    )));
                }
                Ok(Self {
                    namespace: Some(NamespaceName::parse(ns)?),
                    name: RepoName::parse(name)?,
                })
            }
            None => Ok(Self::canonical(s)?),
        }
    }

    pub fn from_parts(ns: Option<&str>, name: &str) -> Result<Self, ApiError> {
        match ns {
            Some(ns) => Ok(Self {
                namespace: Some(NamespaceName::parse(ns)?),
                name: RepoName::parse(name)?,
            }),
            None => Self::canonical(name),
        }
    }

    fn canonical(name: &str) -> Result<Self, ApiError> {
        let name = RepoName::parse(name)?;
        if RESERVED_NAMES.contains(&name.as_str().to_ascii_lowercase().as_str()) {
            return Err(ApiError::InvalidRepoName(format!(
                "{:?} is reserved",
                name.as_str()
            )));
        }
        Ok(Self {
            namespace: None,
            name,
        })
    }

    /// The namespace row name this id lives in.
    pub fn namespace_key(&self) -> &str {
        self.namespace
            .as_ref()
            .map(|n| n.as_str())
            .unwrap_or(ROOT_NAMESPACE)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "gpt2", "bert-base_uncased.v2", "A1"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a--b",
            "a..b",
            "-a",
            "a-",
            ".a",
            "a.",
            "a/b",
            "a b",
            "x.git",
            "é",
            &"a".repeat(97),
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        assert!(NamespaceName::parse("api").is_err());
        assert!(NamespaceName::parse("alice").is_ok());
    }

    #[test]
    fn repo_ids() {
        let id = RepoId::parse("alice/m").unwrap();
        assert_eq!(id.to_string(), "alice/m");
        let id = RepoId::parse("gpt2").unwrap();
        assert_eq!(id.namespace, None);
        assert_eq!(id.namespace_key(), ROOT_NAMESPACE);
        assert!(RepoId::parse("a/b/c").is_err());
        assert!(RepoId::parse("datasets").is_err());
        assert!(RepoId::parse("../x").is_err());
    }
}
