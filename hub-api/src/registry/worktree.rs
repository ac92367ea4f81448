//! The part of a branch head's tree that a commit touches, loaded on demand:
//! the directories on the changed paths (one query per level), the operations
//! applied to them, and only the changed trees rebuilt. Unchanged subtrees keep
//! their stored ids, so a commit costs the size of its change and of the
//! directories along it, not the size of the repo.
//!
//! The reference for what this must produce is the whole-listing algorithm
//! (`git::tree::build_trees` over the head's recursive listing): the same
//! trees and ids, the same errors, the same `commit_changes`; the property test
//! `tests/it/worktree.rs` holds it to that.

use crate::db;
use crate::git::object::{sort_tree_entries, tree_oid, Mode, TreeEntry};
use crate::git::tree::BuiltTree;
use crate::git::FlatFile;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap, HashSet};
use unicode_normalization::UnicodeNormalization;

/// A file of the work tree: the tree entry and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkFile {
    pub flat: FlatFile,
    pub sha256: String,
    pub size: i64,
}

impl WorkFile {
    /// A file of a loaded folder, whose blob row is not read until the
    /// commit touches it ([`WorkTree::resolve_touched`]).
    fn unresolved(flat: FlatFile) -> Self {
        WorkFile {
            flat,
            sha256: String::new(),
            size: -1,
        }
    }

    fn is_resolved(&self) -> bool {
        self.size >= 0
    }

    /// The file of a listing entry (None for folders and for entries without
    /// a blob row or with a mode the hub does not write, which the
    /// whole-listing algorithm dropped too).
    pub fn of_entry(e: &db::git::Entry) -> Option<Self> {
        let (b, mode) = (e.blob.as_ref()?, Mode::parse(&e.mode)?);
        (mode != Mode::Tree).then(|| WorkFile {
            flat: FlatFile {
                mode,
                oid: e.oid.clone(),
            },
            sha256: b.sha256.clone(),
            size: b.size,
        })
    }
}

#[derive(Debug, Clone)]
enum Sub {
    /// A stored tree not read (yet).
    Stored(String),
    Loaded(Box<Dir>),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    /// The stored tree this is unchanged from (None once something in or
    /// below it changed, or for a new folder).
    stored: Option<String>,
    files: BTreeMap<String, WorkFile>,
    dirs: BTreeMap<String, Sub>,
}

impl Dir {
    /// The folder of the stored tree `oid` with rows `entries` (files
    /// unresolved; rows with a mode the hub does not write are dropped).
    fn from_entries(oid: &str, entries: &[&db::git::TreeRow]) -> Self {
        let mut d = Dir {
            stored: Some(oid.to_string()),
            ..Dir::default()
        };
        for e in entries {
            match Mode::parse(&e.mode) {
                Some(Mode::Tree) => {
                    d.dirs.insert(e.name.clone(), Sub::Stored(e.oid.clone()));
                }
                Some(mode) => {
                    let flat = FlatFile {
                        mode,
                        oid: e.oid.clone(),
                    };
                    d.files.insert(e.name.clone(), WorkFile::unresolved(flat));
                }
                None => {}
            }
        }
        d
    }

    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }

    /// The loaded folder at `segs` below this one.
    fn dir(&self, segs: &[&str]) -> Option<&Dir> {
        let mut d = self;
        for s in segs {
            match d.dirs.get(*s)? {
                Sub::Loaded(x) => d = x,
                Sub::Stored(_) => return None,
            }
        }
        Some(d)
    }

    /// Removes the file at `segs`, marking the folders on the way changed and
    /// dropping those left empty (git has no empty folders).
    fn remove_file(&mut self, segs: &[&str]) -> Option<WorkFile> {
        let (first, rest) = segs.split_first()?;
        let removed = if rest.is_empty() {
            self.files.remove(*first)?
        } else {
            let Some(Sub::Loaded(child)) = self.dirs.get_mut(*first) else {
                return None;
            };
            let f = child.remove_file(rest)?;
            if child.is_empty() {
                self.dirs.remove(*first);
            }
            f
        };
        self.stored = None;
        Some(removed)
    }

    /// Takes out the folder at `segs` (same bookkeeping as [`Dir::remove_file`]).
    fn remove_dir(&mut self, segs: &[&str]) -> Option<Sub> {
        let (first, rest) = segs.split_first()?;
        let removed = if rest.is_empty() {
            self.dirs.remove(*first)?
        } else {
            let Some(Sub::Loaded(child)) = self.dirs.get_mut(*first) else {
                return None;
            };
            let d = child.remove_dir(rest)?;
            if child.is_empty() {
                self.dirs.remove(*first);
            }
            d
        };
        self.stored = None;
        Some(removed)
    }

    /// Writes the trees of this folder that changed (children first) and
    /// answers its id.
    fn emit(&self, out: &mut Vec<BuiltTree>) -> String {
        if let Some(oid) = &self.stored {
            return oid.clone();
        }
        let mut entries: Vec<TreeEntry> = self
            .files
            .iter()
            .map(|(name, f)| TreeEntry {
                mode: f.flat.mode,
                name: name.clone(),
                oid: f.flat.oid.clone(),
            })
            .collect();
        for (name, sub) in &self.dirs {
            let oid = match sub {
                Sub::Stored(oid) => oid.clone(),
                Sub::Loaded(d) => d.emit(out),
            };
            entries.push(TreeEntry {
                mode: Mode::Tree,
                name: name.clone(),
                oid,
            });
        }
        sort_tree_entries(&mut entries);
        let oid = tree_oid(&entries);
        out.push(BuiltTree {
            oid: oid.clone(),
            entries,
        });
        oid
    }
}

/// The fold key of one path segment. A full path's key
/// ([`crate::domain::RepoPath::fold_key`]: NFC, then lowercase) is the keys of
/// its segments joined by `/`: `/` neither composes under NFC nor is cased or
/// case-ignorable, so neither step looks across it.
pub fn fold_segment(s: &str) -> String {
    s.nfc().collect::<String>().to_lowercase()
}

/// [`fold_segment`], with a shortcut for ASCII names.
fn fold_name(name: &str) -> String {
    if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        fold_segment(name)
    }
}

/// A folder's file and folder names by fold key.
#[derive(Default)]
struct FoldIndex {
    files: HashMap<String, Vec<String>>,
    dirs: HashMap<String, Vec<String>>,
}

/// A commit's view of its parent's tree. See the module docs.
#[derive(Debug, Clone)]
pub struct WorkTree {
    root: Dir,
    /// Every path an operation touched, with the parent's file there.
    before: BTreeMap<String, Option<WorkFile>>,
}

/// Fills in the blob (sha256 and size) of unresolved files, in one query.
/// Every file entry the hub writes has a blob row written with it; one
/// without is an error.
async fn resolve(db: &mut PgConnection, files: &mut [&mut WorkFile]) -> sqlx::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut oids: Vec<String> = files.iter().map(|f| f.flat.oid.clone()).collect();
    oids.sort();
    oids.dedup();
    let found = db::git::blob_sizes(&mut *db, &oids).await?;
    for f in files.iter_mut() {
        let Some((sha256, size)) = found.get(&f.flat.oid) else {
            return Err(sqlx::Error::Protocol(format!(
                "tree entry {} has no blob row",
                f.flat.oid
            )));
        };
        f.sha256 = sha256.clone();
        f.size = *size;
    }
    Ok(())
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').collect()
}

impl WorkTree {
    /// Loads the folders on `paths` (the paths of a commit's operations) below
    /// the root tree `root_oid`: one query per level for all of them.
    pub async fn load(db: &mut PgConnection, root_oid: &str, paths: &[&str]) -> sqlx::Result<Self> {
        let rows = db::git::entries_of_trees(&mut *db, &[root_oid.to_string()]).await?;
        let entries: Vec<&db::git::TreeRow> = rows.iter().collect();
        let mut work = WorkTree {
            root: Dir::from_entries(root_oid, &entries),
            before: BTreeMap::new(),
        };
        // The folders wanted, by depth (a path's parents).
        let mut wanted: Vec<HashSet<Vec<&str>>> = Vec::new();
        for p in paths {
            let segs = segments(p);
            for depth in 1..segs.len() {
                if wanted.len() < depth {
                    wanted.resize_with(depth, HashSet::new);
                }
                wanted[depth - 1].insert(segs[..depth].to_vec());
            }
        }
        for level in wanted {
            work.load_level(db, level.into_iter().collect()).await?;
        }
        Ok(work)
    }

    /// Loads the stored folders among `dirs` whose parents are loaded, in one
    /// query.
    async fn load_level(
        &mut self,
        db: &mut PgConnection,
        dirs: Vec<Vec<&str>>,
    ) -> sqlx::Result<()> {
        let mut todo: Vec<(Vec<&str>, String)> = Vec::new();
        for segs in dirs {
            let (last, parent) = segs.split_last().expect("a folder has a name");
            if let Some(Sub::Stored(oid)) = self.root.dir(parent).and_then(|d| d.dirs.get(*last)) {
                let oid = oid.clone();
                todo.push((segs, oid));
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let mut oids: Vec<String> = todo.iter().map(|(_, o)| o.clone()).collect();
        oids.sort();
        oids.dedup();
        let rows = db::git::entries_of_trees(&mut *db, &oids).await?;
        let mut by_tree: HashMap<&str, Vec<&db::git::TreeRow>> = HashMap::new();
        for r in &rows {
            by_tree.entry(r.tree_oid.as_str()).or_default().push(r);
        }
        for (segs, oid) in todo {
            let dir = Dir::from_entries(
                &oid,
                by_tree.get(oid.as_str()).map_or(&[][..], Vec::as_slice),
            );
            let (last, parent) = segs.split_last().expect("a folder has a name");
            let parent = self.dir_mut(parent).expect("parent loaded above");
            parent
                .dirs
                .insert(last.to_string(), Sub::Loaded(Box::new(dir)));
        }
        Ok(())
    }

    fn dir_mut(&mut self, segs: &[&str]) -> Option<&mut Dir> {
        let mut d = &mut self.root;
        for s in segs {
            match d.dirs.get_mut(*s)? {
                Sub::Loaded(x) => d = x,
                Sub::Stored(_) => return None,
            }
        }
        Some(d)
    }

    /// Makes sure the folders along `segs` (and the one at `segs`) that exist
    /// are loaded; one query per folder not loaded yet.
    async fn ensure_loaded(&mut self, db: &mut PgConnection, segs: &[&str]) -> sqlx::Result<()> {
        for depth in 1..=segs.len() {
            let parent = &segs[..depth - 1];
            match self
                .root
                .dir(parent)
                .and_then(|d| d.dirs.get(segs[depth - 1]))
            {
                Some(Sub::Stored(_)) => self.load_level(db, vec![segs[..depth].to_vec()]).await?,
                Some(Sub::Loaded(_)) => {}
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Whether the root folder has a file `name`.
    pub fn has_root_file(&self, name: &str) -> bool {
        self.root.files.contains_key(name)
    }

    /// The root folder's file `name`, with its blob.
    pub async fn root_file(
        &mut self,
        db: &mut PgConnection,
        name: &str,
    ) -> sqlx::Result<Option<WorkFile>> {
        let Some(f) = self.root.files.get(name) else {
            return Ok(None);
        };
        if f.is_resolved() {
            return Ok(Some(f.clone()));
        }
        let mut one = [f.clone()];
        resolve(db, &mut one.iter_mut().collect::<Vec<_>>()).await?;
        let [f] = one;
        self.root.files.insert(name.to_string(), f.clone());
        Ok(Some(f))
    }

    /// Reads the blob rows of the files the commit replaced or removed
    /// (loaded folders' files are read without them), so that
    /// [`WorkTree::touched`] answers whole files. Call once the operations
    /// are applied.
    pub async fn resolve_touched(&mut self, db: &mut PgConnection) -> sqlx::Result<()> {
        let mut todo: Vec<&mut WorkFile> = self
            .before
            .values_mut()
            .flatten()
            .filter(|f| !f.is_resolved())
            .collect();
        resolve(db, &mut todo).await
    }

    /// The names of the root folder's files.
    pub fn root_file_names(&self) -> impl Iterator<Item = &str> {
        self.root.files.keys().map(String::as_str)
    }

    /// The file at `path` now (its folders must be loaded, as every touched
    /// path's are).
    fn file(&self, path: &str) -> Option<&WorkFile> {
        let segs = segments(path);
        let (last, parent) = segs.split_last()?;
        self.root.dir(parent)?.files.get(*last)
    }

    /// Whether `path` or one of its parent folders clashes with an existing
    /// entry: a file where a folder is needed, or a folder where a file is
    /// being put (the words of `git::tree::clash`).
    pub async fn clash(
        &mut self,
        db: &mut PgConnection,
        path: &str,
    ) -> sqlx::Result<Option<String>> {
        let segs = segments(path);
        let (last, parents) = segs.split_last().expect("split yields one segment");
        self.ensure_loaded(db, parents).await?;
        let mut d = &self.root;
        for (i, s) in parents.iter().enumerate() {
            if d.files.contains_key(*s) {
                let parent = segs[..=i].join("/");
                return Ok(Some(format!(
                    "{parent:?} is a file, so it cannot be a folder"
                )));
            }
            match d.dirs.get(*s) {
                Some(Sub::Loaded(x)) => d = x,
                _ => return Ok(None),
            }
        }
        if d.dirs.contains_key(*last) {
            return Ok(Some(format!(
                "{path:?} is a folder, so it cannot be a file"
            )));
        }
        Ok(None)
    }

    /// Puts a file at `path` (after [`WorkTree::clash`] found no clash).
    pub async fn insert(
        &mut self,
        db: &mut PgConnection,
        path: &str,
        file: WorkFile,
    ) -> sqlx::Result<()> {
        let segs = segments(path);
        let (last, parents) = segs.split_last().expect("split yields one segment");
        self.ensure_loaded(db, parents).await?;
        let mut d = &mut self.root;
        for s in parents {
            d.stored = None;
            let sub = d
                .dirs
                .entry(s.to_string())
                .or_insert_with(|| Sub::Loaded(Box::default()));
            d = match sub {
                Sub::Loaded(x) => x,
                Sub::Stored(_) => unreachable!("ensure_loaded loaded every folder on the path"),
            };
        }
        d.stored = None;
        let old = d.files.insert(last.to_string(), file);
        self.before.entry(path.to_string()).or_insert(old);
        Ok(())
    }

    /// Deletes the file at `path`; false when there is none.
    pub async fn remove(&mut self, db: &mut PgConnection, path: &str) -> sqlx::Result<bool> {
        let segs = segments(path);
        self.ensure_loaded(db, &segs[..segs.len() - 1]).await?;
        let Some(old) = self.root.remove_file(&segs) else {
            return Ok(false);
        };
        self.before.entry(path.to_string()).or_insert(Some(old));
        Ok(true)
    }

    /// Deletes the folder at `path` with everything below it; false when
    /// there is none. Its files are listed (for the changed paths) by one
    /// recursive query per stored subtree.
    pub async fn remove_folder(&mut self, db: &mut PgConnection, path: &str) -> sqlx::Result<bool> {
        let segs = segments(path);
        self.ensure_loaded(db, &segs[..segs.len() - 1]).await?;
        let Some(sub) = self.root.remove_dir(&segs) else {
            return Ok(false);
        };
        let mut gone: Vec<(String, WorkFile)> = Vec::new();
        let mut stack = vec![(path.to_string(), sub)];
        while let Some((prefix, sub)) = stack.pop() {
            match sub {
                Sub::Stored(oid) => {
                    for e in db::git::list_recursive(&mut *db, &oid, &prefix).await? {
                        if let Some(f) = WorkFile::of_entry(&e) {
                            gone.push((e.path, f));
                        }
                    }
                }
                Sub::Loaded(d) => {
                    let d = *d;
                    for (name, f) in d.files {
                        gone.push((format!("{prefix}/{name}"), f));
                    }
                    for (name, s) in d.dirs {
                        stack.push((format!("{prefix}/{name}"), s));
                    }
                }
            }
        }
        for (p, f) in gone {
            self.before.entry(p).or_insert(Some(f));
        }
        Ok(true)
    }

    /// Paths added by this commit that differ from another path only by case
    /// or Unicode form (full-path fold keys, as `RepoPath::fold_key`), as
    /// `(path, other)`: the pair the whole-listing check reported, that is
    /// the one whose later path comes first in byte order. Only the folders
    /// whose names fold like an added path's are read (loaded on demand).
    pub async fn find_twin(
        &mut self,
        db: &mut PgConnection,
    ) -> sqlx::Result<Option<(String, String)>> {
        let added: Vec<String> = self
            .before
            .iter()
            .filter(|(p, b)| b.is_none() && self.file(p).is_some())
            .map(|(p, _)| p.clone())
            .collect();
        let mut best: Option<(String, String)> = None;
        // Per folder (by path), its names by fold key: built once, on first use.
        let mut index: HashMap<Vec<String>, FoldIndex> = HashMap::new();
        for p in added {
            let folded: Vec<String> = segments(&p).into_iter().map(fold_segment).collect();
            let (last, parents) = folded.split_last().expect("split yields one segment");
            let mut cands: Vec<Vec<String>> = vec![vec![]];
            for f in parents {
                let mut next = Vec::new();
                for c in &cands {
                    let idx = self.fold_index(db, &mut index, c).await?;
                    for name in idx.dirs.get(f).into_iter().flatten() {
                        let mut n = c.clone();
                        n.push(name.clone());
                        next.push(n);
                    }
                }
                cands = next;
            }
            let mut group: Vec<String> = Vec::new();
            for c in &cands {
                let idx = self.fold_index(db, &mut index, c).await?;
                for name in idx.files.get(last).into_iter().flatten() {
                    let mut q = c.clone();
                    q.push(name.clone());
                    group.push(q.join("/"));
                }
            }
            if group.len() >= 2 {
                group.sort();
                let pair = (group[1].clone(), group[0].clone());
                if best.as_ref().is_none_or(|b| pair.0 < b.0) {
                    best = Some(pair);
                }
            }
        }
        Ok(best)
    }

    /// The [`FoldIndex`] of the folder at `dir` (loading it if needed).
    async fn fold_index<'i>(
        &mut self,
        db: &mut PgConnection,
        index: &'i mut HashMap<Vec<String>, FoldIndex>,
        dir: &[String],
    ) -> sqlx::Result<&'i FoldIndex> {
        if !index.contains_key(dir) {
            let segs: Vec<&str> = dir.iter().map(String::as_str).collect();
            self.ensure_loaded(db, &segs).await?;
            let mut idx = FoldIndex::default();
            if let Some(d) = self.root.dir(&segs) {
                for name in d.files.keys() {
                    idx.files
                        .entry(fold_name(name))
                        .or_default()
                        .push(name.clone());
                }
                for name in d.dirs.keys() {
                    idx.dirs
                        .entry(fold_name(name))
                        .or_default()
                        .push(name.clone());
                }
            }
            index.insert(dir.to_vec(), idx);
        }
        Ok(&index[dir])
    }

    /// The trees that changed (root last) and the root tree's id.
    pub fn build(&self) -> (String, Vec<BuiltTree>) {
        let mut out = Vec::new();
        let root = self.root.emit(&mut out);
        (root, out)
    }

    /// Every touched path with its file before and after the commit (after
    /// [`WorkTree::resolve_touched`]).
    pub fn touched(&self) -> impl Iterator<Item = (&str, Option<&WorkFile>, Option<&WorkFile>)> {
        debug_assert!(
            self.before.values().flatten().all(WorkFile::is_resolved),
            "resolve_touched first"
        );
        self.before
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_ref(), self.file(p)))
    }

    /// The paths the commit changed (`commit_changes`): added, modified (a
    /// different blob id) or deleted.
    pub fn changes(&self) -> Vec<(String, &'static str)> {
        self.touched()
            .filter_map(|(p, b, a)| match (b, a) {
                (None, Some(_)) => Some((p.to_string(), "added")),
                (Some(b), Some(a)) if b.flat.oid != a.flat.oid => Some((p.to_string(), "modified")),
                (Some(_), None) => Some((p.to_string(), "deleted")),
                _ => None,
            })
            .collect()
    }
}
