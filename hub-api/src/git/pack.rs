//! Writing a git pack file as a stream: the header (`gix-pack`), each
//! object's entry header (`gix-pack`) and zlib-deflated body, and the SHA-1
//! trailer over everything written. A blob's body is deflated as its bytes
//! arrive, so a large file never has to be in memory.

use bytes::Bytes;
use flate2::write::ZlibEncoder;
use flate2::{Compress, Compression, FlushCompress, Status};
use gix_pack::data::entry::Header;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

/// The kind of a whole (non-delta) object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Commit,
    Tree,
    Blob,
}

impl Kind {
    fn header(self) -> Header {
        match self {
            Kind::Commit => Header::Commit,
            Kind::Tree => Header::Tree,
            Kind::Blob => Header::Blob,
        }
    }
}

/// The level objects are deflated with: fast, as the stream is the product.
fn level() -> Compression {
    Compression::fast()
}

/// A pack being written. Every byte it hands out passes through its
/// checksum; [`PackWriter::finish`] gives the trailer.
pub struct PackWriter {
    sha: Sha1,
    objects: u32,
    written: u32,
    /// One deflater for every whole object, reset between objects: a new
    /// one per object allocates and clears its window and hash tables
    /// (hundreds of KiB in miniz_oxide), which cost more than deflating a
    /// small file (`docs/BENCHMARKS.md`, git clone).
    z: Compress,
}

impl PackWriter {
    /// Starts a pack of `objects` objects; returns the writer and the header.
    pub fn new(objects: u32) -> (Self, Vec<u8>) {
        let header = gix_pack::data::header::encode(gix_pack::data::Version::V2, objects).to_vec();
        let mut w = Self {
            sha: Sha1::new(),
            objects,
            written: 0,
            z: Compress::new(level(), true),
        };
        w.sha.update(&header);
        (w, header)
    }

    /// One whole object held in memory (commits, trees, small blobs, LFS
    /// pointers), appended to `out`.
    pub fn object(&mut self, kind: Kind, body: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        self.written += 1;
        kind.header()
            .write_to(body.len() as u64, &mut *out)
            .expect("writing to a Vec");
        self.deflate_into(body, out);
        self.sha.update(&out[start..]);
    }

    /// One whole object whose zlib-deflated body is `deflated` (from
    /// [`PackWriter::deflate`], or an [`EntryCache`]), appended to `out`.
    pub fn deflated(&mut self, kind: Kind, size: u64, deflated: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        self.written += 1;
        kind.header()
            .write_to(size, &mut *out)
            .expect("writing to a Vec");
        out.extend_from_slice(deflated);
        self.sha.update(&out[start..]);
    }

    /// `body` zlib-deflated, as an object's entry holds it.
    pub fn deflate(&mut self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.deflate_into(body, &mut out);
        out
    }

    fn deflate_into(&mut self, body: &[u8], out: &mut Vec<u8>) {
        self.z.reset();
        // zlib's compressBound: room for incompressible input in one go.
        out.reserve(body.len() + (body.len() >> 12) + (body.len() >> 14) + 64);
        let mut input = body;
        loop {
            let before = self.z.total_in();
            let status = self
                .z
                .compress_vec(input, out, FlushCompress::Finish)
                .expect("deflating into memory does not fail");
            input = &input[(self.z.total_in() - before) as usize..];
            if status == Status::StreamEnd {
                break;
            }
            out.reserve(64 << 10);
        }
    }

    /// Starts an object whose `size` bytes are given in pieces: the entry
    /// header now, then [`ObjectStream::push`] and [`ObjectStream::finish`].
    pub fn start(&mut self, kind: Kind, size: u64) -> (ObjectStream, Vec<u8>) {
        let header = self.entry_header(kind, size);
        self.sha.update(&header);
        (
            ObjectStream {
                z: ZlibEncoder::new(Vec::new(), level()),
                left: size,
            },
            header,
        )
    }

    /// Accounts for the deflated bytes of a streamed object.
    pub fn account(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
    }

    fn entry_header(&mut self, kind: Kind, size: u64) -> Vec<u8> {
        self.written += 1;
        let mut out = Vec::with_capacity(16);
        kind.header()
            .write_to(size, &mut out)
            .expect("writing to a Vec");
        out
    }

    /// The trailer; an error when the objects written are not the number announced.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        if self.written != self.objects {
            return Err(format!(
                "pack announced {} objects but {} were written",
                self.objects, self.written
            ));
        }
        Ok(self.sha.finalize().to_vec())
    }
}

/// The deflated bodies of small blobs, by git id, kept per process: a blob's
/// id names its bytes, so an entry never goes stale, and a clone of a repo
/// cloned before neither reads nor deflates its small files again (what git
/// gets from its packfiles; `docs/BENCHMARKS.md`, git clone). At most `cap`
/// bytes in two generations: when the young one holds half, the old one is
/// dropped and the young one becomes old; a hit in the old one moves back.
/// Only bytes whose id was checked go in, and only a request whose plan
/// holds the id (its reader may read it) takes them out. Entries are per repo
/// (keyed by repo id and git id), so how fast a clone is says nothing about
/// what other tenants' repos hold or who cloned them: only whether the same
/// repo, which the caller can read anyway, was cloned recently.
pub struct EntryCache {
    cap: usize,
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<(i64, String), Bytes>,
    young_bytes: usize,
    old: HashMap<(i64, String), Bytes>,
}

/// [`EntryCache`]'s default size.
pub const ENTRY_CACHE_BYTES: usize = 64 << 20;

impl Default for EntryCache {
    fn default() -> Self {
        Self::new(ENTRY_CACHE_BYTES)
    }
}

impl EntryCache {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            inner: Mutex::new(Generations::default()),
        }
    }

    /// The deflated body of blob `oid` as a clone of repo `repo` stored it.
    pub fn get(&self, repo: i64, oid: &str) -> Option<Bytes> {
        let key = (repo, oid.to_string());
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = g.young.get(&key) {
            return Some(v.clone());
        }
        let (k, v) = g.old.remove_entry(&key)?;
        Self::insert(&mut g, self.cap, k, v.clone());
        Some(v)
    }

    pub fn put(&self, repo: i64, oid: String, deflated: Bytes) {
        if deflated.len() > self.cap / 4 {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Self::insert(&mut g, self.cap, (repo, oid), deflated);
    }

    fn insert(g: &mut Generations, cap: usize, key: (i64, String), v: Bytes) {
        let size = v.len() + key.1.len() + 8;
        if g.young_bytes + size > cap / 2 {
            g.old = std::mem::take(&mut g.young);
            g.young_bytes = 0;
        }
        if g.young.insert(key, v).is_none() {
            g.young_bytes += size;
        }
    }

    /// Bytes held (both generations), for tests.
    pub fn held(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.young.values().chain(g.old.values()).map(Bytes::len).sum()
    }
}

/// The body of one object being deflated as it arrives.
pub struct ObjectStream {
    z: ZlibEncoder<Vec<u8>>,
    left: u64,
}

impl ObjectStream {
    /// Deflates `bytes`; returns what is ready to send (pass it to
    /// [`PackWriter::account`]). More bytes than announced are an error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        if bytes.len() as u64 > self.left {
            return Err("the object is longer than its recorded size".into());
        }
        self.left -= bytes.len() as u64;
        self.z.write_all(bytes).expect("writing to a Vec");
        Ok(std::mem::take(self.z.get_mut()))
    }

    /// Ends the object; fewer bytes than announced are an error.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        if self.left != 0 {
            return Err(format!(
                "the object is {} bytes shorter than its recorded size",
                self.left
            ));
        }
        Ok(self.z.finish().expect("writing to a Vec"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack written here is read back by `git index-pack`, which checks
    /// every object and the trailer, and names the objects it found.
    #[test]
    fn git_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, mut pack) = PackWriter::new(5);
        w.object(Kind::Blob, b"hello\n", &mut pack);
        // Whole objects share one deflater: each must still be a complete
        // zlib stream (an empty one, an incompressible one, a repetitive one).
        w.object(Kind::Blob, b"", &mut pack);
        let noise: Vec<u8> = (0..200_000u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
            .collect();
        w.object(Kind::Blob, &noise, &mut pack);
        w.object(Kind::Blob, &[b'a'; 100_000], &mut pack);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (mut s, h) = w.start(Kind::Blob, big.len() as u64);
        pack.extend(h);
        for c in big.chunks(7000) {
            let out = s.push(c).unwrap();
            w.account(&out);
            pack.extend(out);
        }
        let out = s.finish().unwrap();
        w.account(&out);
        pack.extend(out);
        pack.extend(w.finish().unwrap());
        let path = dir.path().join("t.pack");
        std::fs::write(&path, &pack).unwrap();
        let ok = std::process::Command::new("git")
            .args(["index-pack", "-o"])
            .arg(dir.path().join("t.idx"))
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let list = std::process::Command::new("git")
            .arg("verify-pack")
            .arg("-v")
            .arg(dir.path().join("t.idx"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(
            text.contains("ce013625030ba8dba906f756967f9e9ca394464a blob"),
            "{text}"
        );
    }

    /// An entry written from a cached deflated body is the same bytes as
    /// one deflated on the spot; the cache stays within its bound.
    #[test]
    fn cached_entries() {
        let body = b"some file\n".repeat(50);
        let (mut a, mut pa) = PackWriter::new(1);
        a.object(Kind::Blob, &body, &mut pa);
        let (mut b, mut pb) = PackWriter::new(1);
        let z = b.deflate(&body);
        b.deflated(Kind::Blob, body.len() as u64, &z, &mut pb);
        assert_eq!(pa, pb);
        assert_eq!(a.finish().unwrap(), b.finish().unwrap());

        let cache = EntryCache::new(1000);
        cache.put(1, "a".into(), Bytes::from(vec![1u8; 200]));
        cache.put(1, "b".into(), Bytes::from(vec![2u8; 200]));
        assert_eq!(cache.get(1, "a").unwrap()[0], 1);
        // Per repo: another repo holding the same blob does not get it.
        assert!(cache.get(2, "a").is_none());
        cache.put(1, "c".into(), Bytes::from(vec![3u8; 200])); // young full: a, b become old
        assert!(cache.get(1, "a").is_some()); // moved back
        for i in 0..20 {
            cache.put(1, format!("x{i}"), Bytes::from(vec![0u8; 200]));
        }
        assert!(cache.held() <= 1000, "{}", cache.held());
        cache.put(1, "huge".into(), Bytes::from(vec![0u8; 600]));
        assert!(cache.get(1, "huge").is_none());
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let (mut w, _) = PackWriter::new(1);
        let (mut s, _) = w.start(Kind::Blob, 3);
        assert!(s.push(b"abcd").is_err());
        let (mut w2, _) = PackWriter::new(1);
        let (s2, _) = w2.start(Kind::Blob, 3);
        assert!(s2.finish().is_err());
        assert!(w.finish().is_ok());
        let (w3, _) = PackWriter::new(2);
        assert!(w3.finish().is_err());
    }
}
