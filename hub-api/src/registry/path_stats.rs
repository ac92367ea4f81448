//! What a commit keeps about its whole file list so that the next commit can
//! derive metadata (`card::derive`: which weight formats the repo has; the
//! safetensors parameter sums) from its own change: counts of paths per
//! extension and per-dtype parameter sums, moved by ± the changed files.
//! Stored as `commits.path_stats`; a parent without it (older than the
//! column) is counted once from its full listing.

use crate::card::{PathFacts, DERIVE_EXTS};
use crate::db;
use crate::db::git::CommitRow;
use crate::registry::worktree::{WorkFile, WorkTree};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};

/// A path with its file before and after a commit.
pub type Touched = (String, Option<WorkFile>, Option<WorkFile>);

/// The version of the stored form; another version is recounted.
const VERSION: u32 = 1;

/// Counts over a commit's files. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathStats {
    v: u32,
    /// Files whose path ends with each of [`DERIVE_EXTS`] (as `derive` tests).
    ext: [i64; 3],
    /// `.safetensors` files (any case, as the parameter sum selects them)
    /// with a `safetensors_meta` row.
    metered: i64,
    /// Per dtype: (parameter sum, metered files naming the dtype).
    dtypes: BTreeMap<String, (i64, i64)>,
    /// The sha256 of each `.safetensors` file without a meta row, once per
    /// path: if a row appears later the counts are redone from the listing.
    unmetered: Vec<String>,
}

/// Whether the parameter sum counts the file at `path`.
fn is_safetensors(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".safetensors")
}

impl PathStats {
    /// The counts of a commit with no files.
    pub fn empty() -> Self {
        PathStats {
            v: VERSION,
            ..PathStats::default()
        }
    }

    /// Counts (`sign` 1) or uncounts (-1) the file at `path` with content
    /// `sha256` and safetensors meta `meta`; false when that leaves the counts
    /// inconsistent (then they are redone from the listing).
    pub fn record(&mut self, path: &str, sha256: &str, meta: Option<&Value>, sign: i64) -> bool {
        for (i, ext) in DERIVE_EXTS.iter().enumerate() {
            if path.ends_with(ext) {
                self.ext[i] += sign;
                if self.ext[i] < 0 {
                    return false;
                }
            }
        }
        if !is_safetensors(path) {
            return true;
        }
        match meta {
            Some(m) => {
                self.metered += sign;
                if self.metered < 0 {
                    return false;
                }
                for (dtype, n) in m.as_object().into_iter().flatten() {
                    let n = n.as_i64().unwrap_or(0);
                    let e = self.dtypes.entry(dtype.clone()).or_default();
                    e.0 = e.0.saturating_add(n.saturating_mul(sign));
                    e.1 += sign;
                    match e.1 {
                        0 => {
                            self.dtypes.remove(dtype);
                        }
                        c if c < 0 => return false,
                        _ => {}
                    }
                }
            }
            None if sign > 0 => self.unmetered.push(sha256.to_string()),
            None => match self.unmetered.iter().position(|s| s == sha256) {
                Some(i) => {
                    self.unmetered.swap_remove(i);
                }
                None => return false,
            },
        }
        true
    }

    /// The `safetensors` field of repo info (as `card::sum_safetensors` of
    /// every metered file).
    pub fn safetensors(&self) -> Option<Value> {
        if self.metered == 0 {
            return None;
        }
        let mut params = Map::new();
        let mut total: i64 = 0;
        for (dtype, (sum, _)) in &self.dtypes {
            params.insert(dtype.clone(), json!(sum));
            total = total.saturating_add(*sum);
        }
        Some(json!({"parameters": params, "total": total}))
    }

    /// What `card::derive` needs, with the root folder's file names.
    pub fn facts<'a>(&self, root_files: impl Iterator<Item = &'a str>) -> PathFacts {
        PathFacts {
            root_files: root_files.map(str::to_string).collect(),
            has_ext: self.ext.map(|n| n > 0),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The counts of a commit made on `parent` with the work tree `work`:
    /// the parent's counts moved by the touched paths.
    pub async fn after_commit(
        db: &mut PgConnection,
        repo_id: i64,
        parent: &CommitRow,
        work: &WorkTree,
    ) -> sqlx::Result<Self> {
        let touched: Vec<Touched> = work
            .touched()
            .map(|(p, b, a)| (p.to_string(), b.cloned(), a.cloned()))
            .collect();
        if let Some(mut s) = Self::stored(db, repo_id, &parent.oid).await? {
            if s.apply(db, &touched).await? {
                return Ok(s);
            }
        }
        let mut s = Self::recount(db, &parent.tree_oid).await?;
        if !s.apply(db, &touched).await? {
            tracing::error!(repo.id = repo_id, commit = %parent.oid, "path counts do not add up after a recount");
        }
        Ok(s)
    }

    /// The stored counts of commit `oid`, unless it has none (older than the
    /// column) or a meta row appeared for one of its unmetered files.
    pub async fn stored(
        db: &mut PgConnection,
        repo_id: i64,
        oid: &str,
    ) -> sqlx::Result<Option<Self>> {
        let stored = db::git::path_stats(&mut *db, repo_id, oid)
            .await?
            .and_then(|v| serde_json::from_value::<PathStats>(v).ok())
            .filter(|s| s.v == VERSION);
        let Some(s) = stored else { return Ok(None) };
        if s.unmetered.is_empty()
            || db::git::safetensors_params(&mut *db, &s.unmetered)
                .await?
                .is_empty()
        {
            return Ok(Some(s));
        }
        Ok(None)
    }

    /// The counts of the tree `tree_oid` from its full listing.
    pub async fn recount(db: &mut PgConnection, tree_oid: &str) -> sqlx::Result<Self> {
        let files: Vec<Touched> = db::git::list_recursive(&mut *db, tree_oid, "")
            .await?
            .iter()
            .filter_map(|e| Some((e.path.clone(), None, Some(WorkFile::of_entry(e)?))))
            .collect();
        let mut s = PathStats::empty();
        s.apply(db, &files).await?;
        Ok(s)
    }

    /// Moves the counts by a commit's touched paths `(path, before, after)`;
    /// false when they turn out inconsistent.
    pub async fn apply(
        &mut self,
        db: &mut PgConnection,
        touched: &[Touched],
    ) -> sqlx::Result<bool> {
        let mut shas: Vec<String> = touched
            .iter()
            .filter(|(p, _, _)| is_safetensors(p))
            .flat_map(|(_, b, a)| [b, a])
            .flatten()
            .map(|f| f.sha256.clone())
            .collect();
        shas.sort();
        shas.dedup();
        let metas: HashMap<String, Value> = if shas.is_empty() {
            HashMap::new()
        } else {
            db::git::safetensors_params(&mut *db, &shas)
                .await?
                .into_iter()
                .map(|(s, p, _)| (s, p.0))
                .collect()
        };
        let mut ok = true;
        for (p, b, _) in touched {
            if let Some(f) = b {
                ok &= self.record(p, &f.sha256, metas.get(&f.sha256), -1);
            }
        }
        for (p, _, a) in touched {
            if let Some(f) = a {
                ok &= self.record(p, &f.sha256, metas.get(&f.sha256), 1);
            }
        }
        Ok(ok)
    }
}
