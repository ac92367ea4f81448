//! What `/resolve` looks up besides the repo row, kept per process: the
//! commit a revision names, the entry at a path of a tree, and whether an LFS
//! object may still be served from a repo. Every key makes its value
//! immutable, so nothing here ever needs invalidating:
//!
//! - a revision's commit and the LFS check are keyed by the repo's
//!   `resolve_version`, which the database bumps (triggers, migration
//!   `20261204090002`) whenever a ref of the repo moves, appears or goes, or
//!   an LFS object is permanently removed from it. The request reads the repo
//!   row anyway (access, privacy), so a ref moved on any replica is seen by
//!   the very next request everywhere: no notification to wait for;
//! - a path's entry is keyed by the tree id, and trees are content-addressed.
//!
//! With the repo row cached too (`repo_cache`), a warm `HEAD /resolve` makes
//! no PostgreSQL round trip (five without any cache). Each map holds at most [`CAP`] entries in two
//! generations: when the young one fills, the old one is dropped and the
//! young one becomes old, and a hit in the old one moves back to the young.

use crate::db::git::Entry;
use crate::registry::Resolved;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Entries per map and generation.
pub const CAP: usize = 20_000;

/// A map of at most `2 * cap` entries that forgets the least recently used
/// generation first.
pub struct TwoGen<K, V> {
    cap: usize,
    inner: Mutex<(HashMap<K, V>, HashMap<K, V>)>,
}

impl<K: Hash + Eq, V: Clone> TwoGen<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    pub fn get(&self, k: &K) -> Option<V> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = g.0.get(k) {
            return Some(v.clone());
        }
        let (k, v) = g.1.remove_entry(k)?;
        let out = v.clone();
        Self::insert_young(&mut g, self.cap, k, v);
        Some(out)
    }

    pub fn put(&self, k: K, v: V) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::insert_young(&mut g, self.cap, k, v);
    }

    fn insert_young(g: &mut (HashMap<K, V>, HashMap<K, V>), cap: usize, k: K, v: V) {
        if g.0.len() >= cap && !g.0.contains_key(&k) {
            g.1 = std::mem::take(&mut g.0);
        }
        g.0.insert(k, v);
    }

    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.len() + g.1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The caches of `/resolve` (see the module docs).
pub struct ResolveCache {
    /// (repo id, resolve_version, revision as given) -> what it resolved to.
    pub revisions: TwoGen<(i64, i64, String), Resolved>,
    /// (tree id, path) -> the entry there (None: nothing at that path).
    pub entries: TwoGen<(String, String), Option<Entry>>,
    /// (repo id, resolve_version, sha256) -> the repo still holds that LFS object.
    pub lfs_linked: TwoGen<(i64, i64, String), bool>,
    /// Not a cache: the repo rows requests name, read together (`repo_lookup`).
    pub repos: std::sync::Arc<crate::repo_lookup::RepoLookups>,
    /// The repo rows `/resolve` reads, while this process hears of their
    /// changes (`repo_cache`).
    pub rows: crate::repo_cache::RepoCache,
}

impl Default for ResolveCache {
    fn default() -> Self {
        Self::new(std::time::Duration::from_secs(5))
    }
}

impl ResolveCache {
    /// The caches, with repo rows living `repo_ttl` at most (0: not cached).
    pub fn new(repo_ttl: std::time::Duration) -> Self {
        Self {
            revisions: TwoGen::new(CAP),
            entries: TwoGen::new(CAP),
            lfs_linked: TwoGen::new(CAP),
            repos: Default::default(),
            rows: crate::repo_cache::RepoCache::new(repo_ttl),
        }
    }

    /// The repo row `/resolve` needs: [`crate::repo_cache::RepoCache::find`].
    pub async fn find_repo(
        &self,
        db: &sqlx::PgPool,
        repo_type: &str,
        namespace: &str,
        name: &str,
    ) -> crate::repo_lookup::Answer {
        self.rows
            .find(&self.repos, db, repo_type, namespace, name)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::TwoGen;

    #[test]
    fn keeps_recently_used_entries_and_bounds_its_size() {
        let m = TwoGen::new(3);
        for i in 0..3 {
            m.put(i, i * 10);
        }
        // Full: the next insert ages the young generation.
        m.put(3, 30);
        assert_eq!(m.len(), 4);
        // A hit in the old generation moves it back to the young one.
        assert_eq!(m.get(&0), Some(0));
        m.put(4, 40);
        m.put(5, 50); // young full again (3, 0, 4 + 5): 1 and 2 are dropped
        assert_eq!(m.get(&1), None);
        assert_eq!(m.get(&2), None);
        assert_eq!(m.get(&0), Some(0));
        assert!(m.len() <= 6);
        for i in 0..1000 {
            m.put(100 + i, i);
        }
        assert!(m.len() <= 6, "{}", m.len());
    }
}
