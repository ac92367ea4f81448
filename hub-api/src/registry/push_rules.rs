//! The API commit's rules on paths and LFS, applied to each pushed commit
//! (`registry::git_push`). An API commit is built by the hub, so it can store
//! a file with LFS or add a line to `.gitattributes`; a pushed commit is the
//! client's, and changing it would change its id, so where the API would
//! store differently the push is refused instead, with what to do:
//!
//! - a path added next to another that differs only by letter case or
//!   Unicode form (NFC, then lowercase: `RepoPath::fold_key`) is refused, as
//!   `WorkTree::find_twin` refuses it in an API commit;
//! - a regular file the API would store with LFS (`commit::wants_lfs`: over
//!   `limits.lfs_threshold`, a NUL in its first 512 bytes, or covered by an
//!   LFS rule of `.gitattributes`; never an empty file) is refused with a
//!   hint to use git-lfs;
//! - an LFS pointer at a path no LFS rule covers is refused: the API adds a
//!   literal rule for such a path to `.gitattributes`, and a push cannot;
//! - `.gitattributes` is read under the API's bounds (`LfsRules::parse`,
//!   `check_budget`, as heavy work of the pusher) and must be a regular file
//!   of at most 4 MiB (`MAX_INTERPRETED`); the API reads only the top-level
//!   one, and so does the push (rules of a folder's `.gitattributes` do not
//!   count).
//!
//! Only the paths a commit adds or changes (against its first parent) are
//! checked, as an API commit checks only its operations; a file kept from
//! the parent, or a blob the repo already stored (a revert, a rename), is
//! left as it was accepted.

use super::git_push::{Ingested, Listing, PushedBlob};
use crate::domain::Sha256;
use crate::error::ApiResult;
use crate::git::attributes::LfsRules;
use crate::heavy::Tenant;
use crate::registry::commit::wants_lfs;
use crate::registry::files::MAX_INTERPRETED;
use crate::registry::worktree::fold_segment;
use crate::state::AppState;
use std::collections::HashMap;
use std::sync::Arc;

/// A path's fold key (`RepoPath::fold_key`), with a shortcut for ASCII.
fn fold(path: &str) -> String {
    if path.is_ascii() {
        path.to_ascii_lowercase()
    } else {
        // '/' neither composes under NFC nor is cased: folding the whole
        // path is folding each segment.
        fold_segment(path)
    }
}

/// An added path and another of `after` with the same fold key, as the API
/// reports it (of each group, the second path in byte order and the first;
/// of several groups, the one whose reported path comes first).
pub fn twin<'a>(
    after: impl Iterator<Item = &'a str>,
    added: impl Fn(&str) -> bool,
) -> Option<(String, String)> {
    let mut groups: HashMap<String, Vec<&str>> = HashMap::new();
    let mut any_added = false;
    for p in after {
        any_added |= added(p);
        groups.entry(fold(p)).or_default().push(p);
    }
    if !any_added {
        return None;
    }
    let mut best: Option<(String, String)> = None;
    for mut group in groups.into_values().filter(|g| g.len() >= 2) {
        if !group.iter().any(|p| added(p)) {
            continue; // twins the parent already had
        }
        group.sort_unstable();
        if best.as_ref().is_none_or(|b| group[1] < b.0.as_str()) {
            best = Some((group[1].to_string(), group[0].to_string()));
        }
    }
    best
}

/// The refusal of a twin pair, worded as the API's.
pub fn twin_refusal(path: &str, other: &str) -> String {
    format!(
        "{path:?} and {other:?} differ only by case or Unicode form; they would collide on many file systems"
    )
}

/// What is wrong with a changed file under the LFS rules, if anything.
/// `regular`: the file is a regular blob this push brought (size, binary);
/// `is_lfs`: it is an LFS pointer; `rule`: an LFS rule covers its path.
pub fn lfs_refusal(
    path: &str,
    is_lfs: bool,
    regular: Option<(u64, bool)>,
    rule: bool,
    threshold: u64,
) -> Option<String> {
    if is_lfs {
        return (!rule).then(|| {
            format!(
                "{path:?} is a Git LFS pointer but no LFS rule of the top-level .gitattributes covers it: run git lfs track for it and commit .gitattributes"
            )
        });
    }
    let (size, binary) = regular?;
    if !wants_lfs(rule, size, binary, threshold) {
        return None;
    }
    let why = if size > threshold {
        format!("is {size} bytes, over the {threshold}-byte limit for files outside LFS")
    } else if binary {
        "is a binary file (a NUL byte in its first 512 bytes)".to_string()
    } else {
        "matches an LFS rule of .gitattributes but was pushed as a regular file (is git-lfs installed? run git lfs install)".to_string()
    };
    Some(format!(
        "{path:?} {why}: track it with git-lfs (git lfs track, then git lfs migrate import to rewrite the commits that hold it)"
    ))
}

/// Parsed `.gitattributes` rules of pushed commits, by blob id.
#[derive(Default)]
pub struct RulesCache(HashMap<String, Arc<LfsRules>>);

/// Checks a pushed commit: `before` is its first parent's files, `after`
/// its own. `Ok(Err(reason))` refuses it.
pub async fn check_commit(
    state: &AppState,
    tenant: Tenant,
    pushed: &Ingested,
    before: &Listing,
    after: &Listing,
    cache: &mut RulesCache,
) -> ApiResult<Result<(), String>> {
    if let Some((p, other)) = twin(after.keys().map(String::as_str), |p| {
        !before.contains_key(p)
    }) {
        return Ok(Err(twin_refusal(&p, &other)));
    }
    let changed: Vec<String> = after
        .iter()
        .filter(|(p, f)| {
            p.as_str() != ".gitattributes" && before.get(*p).is_none_or(|b| b.0 != f.0)
        })
        .map(|(p, _)| p.clone())
        .collect();
    if changed.is_empty() {
        return Ok(Ok(()));
    }
    // The rules of the commit's .gitattributes (none without one).
    let rules: Arc<LfsRules> = match after.get(".gitattributes") {
        None => Arc::new(LfsRules::default()),
        Some((_, _, _, true)) => {
            return Ok(Err(
                ".gitattributes is a Git LFS pointer, so its rules cannot be read: commit it as a regular file"
                    .into(),
            ))
        }
        Some((_, _, size, false)) if *size as u64 > MAX_INTERPRETED => {
            return Ok(Err(format!(
                ".gitattributes is {size} bytes; the hub reads at most {MAX_INTERPRETED}"
            )))
        }
        Some((oid, sha, size, false)) => match cache.0.get(oid) {
            Some(r) => r.clone(),
            None => {
                let sha = Sha256::parse(sha)?;
                let bytes = state.storage.read_range(&sha, 0..*size as u64).await?;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let parsed = state
                    .tenancy
                    .heavy
                    .run(tenant, move || LfsRules::parse(&text))
                    .await?;
                match parsed {
                    Ok(r) => {
                        let r = Arc::new(r);
                        cache.0.insert(oid.clone(), r.clone());
                        r
                    }
                    Err(e) => return Ok(Err(format!(".gitattributes: {e}"))),
                }
            }
        },
    };
    // Tenant patterns over the changed paths: heavy work, within the API's budget.
    let matched = state
        .tenancy
        .heavy
        .run(tenant, move || {
            rules.check_budget(changed.len())?;
            Ok::<_, crate::git::patterns::PatternError>(
                changed
                    .into_iter()
                    .map(|p| {
                        let lfs = rules.is_lfs(&p);
                        (p, lfs)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await?;
    let matched = match matched {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!(".gitattributes: {e}"))),
    };
    for (p, rule) in matched {
        let (oid, _, _, is_lfs) = &after[&p];
        let regular = match pushed.blobs.get(oid) {
            Some(PushedBlob::Regular { size, binary, .. }) => Some((*size, *binary)),
            _ => None,
        };
        if let Some(why) = lfs_refusal(&p, *is_lfs, regular, rule, state.limits.lfs_threshold) {
            return Ok(Err(why));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_among_added_paths() {
        let after = [
            "A.txt",
            "a.txt",
            "b/C.md",
            "b/c.md",
            "caf\u{e9}",
            "cafe\u{301}",
            "x",
        ];
        // Only pairs with an added path count.
        assert_eq!(twin(after.iter().copied(), |p| p == "x"), None);
        assert_eq!(
            twin(after.iter().copied(), |p| p == "a.txt" || p == "b/c.md"),
            Some(("a.txt".into(), "A.txt".into()))
        );
        assert_eq!(
            twin(after.iter().copied(), |p| p == "b/c.md"),
            Some(("b/c.md".into(), "b/C.md".into()))
        );
        assert_eq!(
            twin(after.iter().copied(), |p| p.starts_with("caf")),
            // (in byte order, 'e' comes before the NFC form's first byte)
            Some(("caf\u{e9}".into(), "cafe\u{301}".into()))
        );
        // Folders fold too: "D/x" and "d/x" are one path on a folding file system.
        assert_eq!(
            twin(["D/x", "d/x", "d/y"].into_iter(), |p| p == "d/x"),
            Some(("d/x".into(), "D/x".into()))
        );
        assert_eq!(twin(["D/x", "d/y"].into_iter(), |_| true), None);
    }

    #[test]
    fn lfs_rules_of_changed_files() {
        let t = 1000;
        // A pointer needs a rule.
        assert!(lfs_refusal("w.bin", true, None, true, t).is_none());
        let e = lfs_refusal("w.dat", true, None, false, t).unwrap();
        assert!(e.contains("git lfs track"), "{e}");
        // A pushed regular file the API would store with LFS.
        assert!(lfs_refusal("a.txt", false, Some((10, false)), false, t).is_none());
        assert!(lfs_refusal("empty.bin", false, Some((0, true)), true, t).is_none());
        let e = lfs_refusal("big.txt", false, Some((1001, false)), false, t).unwrap();
        assert!(e.contains("1001 bytes") && e.contains("git-lfs"), "{e}");
        let e = lfs_refusal("x.dat", false, Some((5, true)), false, t).unwrap();
        assert!(e.contains("binary"), "{e}");
        let e = lfs_refusal("w.bin", false, Some((5, false)), true, t).unwrap();
        assert!(e.contains("git lfs install"), "{e}");
        // A regular blob the repo already stored is left as it was accepted.
        assert!(lfs_refusal("w.bin", false, None, true, t).is_none());
    }
}
