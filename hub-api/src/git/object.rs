//! Git object ids computed exactly as git does: blobs, trees, commits, and the
//! Git LFS pointer files that stand in a tree for large files.

use sha1::{Digest, Sha1};

/// Incremental git blob id: git hashes `"blob <size>\0" + content`, so the size
/// must be known before the first byte.
pub struct BlobHasher(Sha1);

impl BlobHasher {
    pub fn new(size: u64) -> Self {
        let mut h = Sha1::new();
        h.update(format!("blob {size}\0").as_bytes());
        Self(h)
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The git blob id of `content`.
pub fn blob_oid(content: &[u8]) -> String {
    let mut h = BlobHasher::new(content.len() as u64);
    h.update(content);
    h.finish()
}

/// The Git LFS pointer file for an object (what git stores in the tree).
pub fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// Tree entry modes we produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    File,
    Executable,
    Tree,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::File => "100644",
            Mode::Executable => "100755",
            Mode::Tree => "40000",
        }
    }
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "100644" => Some(Mode::File),
            "100755" => Some(Mode::Executable),
            "40000" => Some(Mode::Tree),
            _ => None,
        }
    }
}

/// One entry of a tree object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub mode: Mode,
    pub name: String,
    pub oid: String,
}

/// Sorts entries in git's order: by name bytes, with trees compared as `name/`.
pub fn sort_tree_entries(entries: &mut [TreeEntry]) {
    fn key(e: &TreeEntry) -> Vec<u8> {
        let mut k = e.name.as_bytes().to_vec();
        if e.mode == Mode::Tree {
            k.push(b'/');
        }
        k
    }
    entries.sort_by_key(key);
}

/// The raw body of a tree whose entries are already in git order.
pub fn tree_body(entries: &[TreeEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * 64);
    for e in entries {
        body.extend_from_slice(e.mode.as_str().as_bytes());
        body.push(b' ');
        body.extend_from_slice(e.name.as_bytes());
        body.push(0);
        // Object ids are validated 40-hex before they get here.
        body.extend_from_slice(&hex::decode(&e.oid).unwrap_or_else(|_| vec![0; 20]));
    }
    body
}

/// The id of an object from its kind (`blob`, `tree`, `commit`) and body.
pub fn object_oid(kind: &str, body: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("{kind} {}\0", body.len()).as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// The id of a tree whose entries are already in git order.
pub fn tree_oid(entries: &[TreeEntry]) -> String {
    let body = tree_body(entries);
    let mut h = Sha1::new();
    h.update(format!("tree {}\0", body.len()).as_bytes());
    h.update(&body);
    hex::encode(h.finalize())
}

/// An identity line of a commit (author or committer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub email: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// Git's timezone string, e.g. `+0000`.
    pub tz: String,
}

impl Signature {
    fn line(&self) -> String {
        // Git refuses '<', '>' and newlines in names and emails.
        let clean = |s: &str| s.replace(['<', '>', '\n', '\r'], "");
        format!(
            "{} <{}> {} {}",
            clean(&self.name),
            clean(&self.email),
            self.time,
            self.tz
        )
    }
}

/// A commit object's fields.
#[derive(Debug, Clone)]
pub struct CommitObject {
    pub tree: String,
    pub parents: Vec<String>,
    pub author: Signature,
    pub committer: Signature,
    /// The full message; [`commit_message`] builds it from a title and description.
    pub message: String,
}

impl CommitObject {
    /// The raw object body, as `git cat-file commit` prints it.
    pub fn body(&self) -> String {
        let mut s = format!("tree {}\n", self.tree);
        for p in &self.parents {
            s.push_str(&format!("parent {p}\n"));
        }
        s.push_str(&format!("author {}\n", self.author.line()));
        s.push_str(&format!("committer {}\n", self.committer.line()));
        s.push('\n');
        s.push_str(&self.message);
        s
    }

    pub fn oid(&self) -> String {
        let body = self.body();
        let mut h = Sha1::new();
        h.update(format!("commit {}\0", body.len()).as_bytes());
        h.update(body.as_bytes());
        hex::encode(h.finalize())
    }
}

/// The message `git commit-tree -m <title> -m <description>` would store.
pub fn commit_message(title: &str, description: &str) -> String {
    let title = title.trim_end_matches('\n');
    let description = description.trim_end_matches('\n');
    if description.is_empty() {
        format!("{title}\n")
    } else {
        format!("{title}\n\n{description}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            blob_oid(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // The empty blob and the empty tree.
        assert_eq!(blob_oid(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
        assert_eq!(tree_oid(&[]), "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    }

    #[test]
    fn tree_order_puts_trees_after_same_prefix_files() {
        let mut e = vec![
            TreeEntry {
                mode: Mode::Tree,
                name: "a".into(),
                oid: "0".repeat(40),
            },
            TreeEntry {
                mode: Mode::File,
                name: "a.txt".into(),
                oid: "0".repeat(40),
            },
            TreeEntry {
                mode: Mode::File,
                name: "a-b".into(),
                oid: "0".repeat(40),
            },
        ];
        sort_tree_entries(&mut e);
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        // '-' (0x2d) < '.' (0x2e) < '/' (0x2f)
        assert_eq!(names, ["a-b", "a.txt", "a"]);
    }

    #[test]
    fn messages() {
        assert_eq!(commit_message("t", ""), "t\n");
        assert_eq!(commit_message("t", "d"), "t\n\nd\n");
    }
}
