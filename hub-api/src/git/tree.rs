//! Building git tree objects from a flat `path -> blob` listing, the form a
//! commit's operations are applied to.

use super::object::{sort_tree_entries, tree_oid, Mode, TreeEntry};
use std::collections::BTreeMap;

/// A file in a flat listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatFile {
    pub mode: Mode,
    /// The git blob id (of the content, or of the LFS pointer).
    pub oid: String,
}

/// A tree object ready to be stored.
#[derive(Debug, Clone)]
pub struct BuiltTree {
    pub oid: String,
    pub entries: Vec<TreeEntry>,
}

#[derive(Default)]
struct Node<'a> {
    files: Vec<(&'a str, &'a FlatFile)>,
    dirs: BTreeMap<&'a str, Node<'a>>,
}

/// Builds every tree of the listing; returns the root tree id and all trees
/// (root last). Paths must already be validated and free of file/folder clashes.
pub fn build_trees(files: &BTreeMap<String, FlatFile>) -> (String, Vec<BuiltTree>) {
    let mut root = Node::default();
    for (path, file) in files {
        let mut node = &mut root;
        let mut segs = path.split('/').peekable();
        while let Some(seg) = segs.next() {
            if segs.peek().is_none() {
                node.files.push((seg, file));
            } else {
                node = node.dirs.entry(seg).or_default();
            }
        }
    }
    let mut out = Vec::new();
    let oid = emit(&root, &mut out);
    (oid, out)
}

fn emit(node: &Node<'_>, out: &mut Vec<BuiltTree>) -> String {
    let mut entries: Vec<TreeEntry> = node
        .files
        .iter()
        .map(|(name, f)| TreeEntry {
            mode: f.mode,
            name: (*name).to_string(),
            oid: f.oid.clone(),
        })
        .collect();
    for (name, child) in &node.dirs {
        let oid = emit(child, out);
        entries.push(TreeEntry {
            mode: Mode::Tree,
            name: (*name).to_string(),
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

/// Whether `path` or one of its parent folders clashes with an existing entry:
/// a file where a folder is needed, or a folder where a file is being put.
pub fn clash<V>(files: &BTreeMap<String, V>, path: &str) -> Option<String> {
    // A parent of `path` exists as a file.
    let mut idx = 0;
    while let Some(pos) = path[idx..].find('/') {
        let parent = &path[..idx + pos];
        if files.contains_key(parent) {
            return Some(format!("{parent:?} is a file, so it cannot be a folder"));
        }
        idx += pos + 1;
    }
    // `path` exists as a folder.
    let prefix = format!("{path}/");
    if files
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
    {
        return Some(format!("{path:?} is a folder, so it cannot be a file"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(oid: &str) -> FlatFile {
        FlatFile {
            mode: Mode::File,
            oid: oid.repeat(40),
        }
    }

    #[test]
    fn builds_nested_trees() {
        let mut m = BTreeMap::new();
        m.insert("a/b/c.txt".to_string(), f("1"));
        m.insert("a/d.txt".to_string(), f("2"));
        m.insert("e.txt".to_string(), f("3"));
        let (root, trees) = build_trees(&m);
        assert_eq!(trees.len(), 3);
        assert_eq!(trees.last().unwrap().oid, root);
        let names: Vec<_> = trees
            .last()
            .unwrap()
            .entries
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(names, ["a", "e.txt"]);
    }

    #[test]
    fn clashes() {
        let mut m = BTreeMap::new();
        m.insert("a/b.txt".to_string(), f("1"));
        m.insert("x".to_string(), f("2"));
        assert!(clash(&m, "a").is_some());
        assert!(clash(&m, "x/y").is_some());
        assert!(clash(&m, "a/c").is_none());
        assert!(clash(&m, "ab").is_none());
    }
}
