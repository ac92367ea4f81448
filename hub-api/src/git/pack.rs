//! Writing a git pack file as a stream: the header (`gix-pack`), each
//! object's entry header (`gix-pack`) and zlib-deflated body, and the SHA-1
//! trailer over everything written. A blob's body is deflated as its bytes
//! arrive, so a large file never has to be in memory.

use flate2::write::ZlibEncoder;
use flate2::{Compress, Compression, FlushCompress, Status};
use gix_pack::data::entry::Header;
use sha1::{Digest, Sha1};
use std::io::Write;

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
        self.sha.update(&out[start..]);
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
