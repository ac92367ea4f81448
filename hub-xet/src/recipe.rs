//! A Xet file's recipe: what the hub needs to serve a Xet-stored file's bytes itself, to
//! LFS-era clients (`/resolve` for `hf-hub` 0.4, `transformers` without `hf_xet`, `curl`) and to
//! the hub-worker, with no database at hand: the file's terms as byte ranges of stored xorbs,
//! with each chunk's stored and unpacked length. It is written next to the xorbs when a shard
//! registers the file (§9.4) and read by the storage layer in place of a plain blob.
//!
//! [`Recipe::reads`] turns a byte range of the file into reads of stored xorb ranges;
//! [`crate::xorb::next_chunk`] decodes the chunk stream such a read returns, one chunk (at
//! most 128 KiB) at a time.

use crate::hash::{self, XetHash};
use crate::shard::FileSummary;
use crate::xorb::XorbIndex;
use std::collections::HashMap;
use std::ops::Range;

const MAGIC: &[u8; 8] = b"PDKXRCP1";
/// Largest recipe accepted on decode (a 64 GiB file of 8 KiB chunks is ~64 MiB of recipe).
const MAX_RECIPE_CHUNKS: u64 = 8 << 20;

/// A chunk of a term: its length in the stored xorb (header included) and unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipeChunk {
    pub stored_len: u32,
    pub unpacked_len: u32,
}

/// A term: contiguous chunks of one xorb, starting at `stored_start` in the stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeTerm {
    pub xorb: XetHash,
    pub stored_start: u64,
    pub chunks: Vec<RecipeChunk>,
}

/// How to rebuild a file from stored xorbs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub file: XetHash,
    pub size: u64,
    pub terms: Vec<RecipeTerm>,
}

/// One read a byte range needs: `stored` bytes of a xorb decode to chunks; drop `skip` bytes of
/// the first decoded chunk, then emit `take` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorbRead {
    pub xorb: XetHash,
    pub stored: Range<u64>,
    pub skip: u64,
    pub take: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecipeError {
    #[error("recipe: the file uses xorb {0}, which is not indexed")]
    UnknownXorb(String),
    #[error("recipe: a term of the file lies outside xorb {0}")]
    TermOutsideXorb(String),
    #[error("recipe: the terms hold {terms} bytes, the file {size}")]
    SizeMismatch { terms: u64, size: u64 },
    #[error("recipe: corrupt ({0})")]
    Corrupt(&'static str),
}

impl Recipe {
    /// The recipe of a validated file, from the indexes of the xorbs its terms use.
    pub fn build(
        file: &FileSummary,
        xorbs: &HashMap<XetHash, XorbIndex>,
    ) -> Result<Recipe, RecipeError> {
        let mut terms = Vec::with_capacity(file.terms.len());
        let mut total = 0u64;
        for t in &file.terms {
            let name = || hash::hash_string(&t.xorb);
            let x = xorbs
                .get(&t.xorb)
                .ok_or_else(|| RecipeError::UnknownXorb(name()))?;
            let (start, end) = (t.chunk_start as usize, t.chunk_end as usize);
            if start >= end || end > x.chunks.len() {
                return Err(RecipeError::TermOutsideXorb(name()));
            }
            let chunks: Vec<RecipeChunk> = x.chunks[start..end]
                .iter()
                .map(|c| RecipeChunk {
                    stored_len: c.byte_end - c.byte_start,
                    unpacked_len: c.uncompressed_len,
                })
                .collect();
            total += chunks
                .iter()
                .map(|c| u64::from(c.unpacked_len))
                .sum::<u64>();
            terms.push(RecipeTerm {
                xorb: t.xorb,
                stored_start: u64::from(x.chunks[start].byte_start),
                chunks,
            });
        }
        if total != file.size {
            return Err(RecipeError::SizeMismatch {
                terms: total,
                size: file.size,
            });
        }
        Ok(Recipe {
            file: file.hash,
            size: file.size,
            terms,
        })
    }

    /// Binary form: magic, size u64, file hash, term count u32, then per term the xorb hash,
    /// stored start u64, chunk count u32 and per chunk stored and unpacked length u32; all
    /// little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let n: usize = self.terms.iter().map(|t| 44 + 8 * t.chunks.len()).sum();
        let mut out = Vec::with_capacity(52 + n);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&hash::hash_raw(&self.file));
        out.extend_from_slice(&(self.terms.len() as u32).to_le_bytes());
        for t in &self.terms {
            out.extend_from_slice(&hash::hash_raw(&t.xorb));
            out.extend_from_slice(&t.stored_start.to_le_bytes());
            out.extend_from_slice(&(t.chunks.len() as u32).to_le_bytes());
            for c in &t.chunks {
                out.extend_from_slice(&c.stored_len.to_le_bytes());
                out.extend_from_slice(&c.unpacked_len.to_le_bytes());
            }
        }
        out
    }

    /// Inverse of [`Recipe::encode`]; checks the structure and that the chunks add up to the
    /// size.
    pub fn decode(b: &[u8]) -> Result<Recipe, RecipeError> {
        let mut r = Reader { b, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(RecipeError::Corrupt("magic"));
        }
        let size = r.u64()?;
        let file = r.hash()?;
        let n_terms = r.u32()?;
        let mut terms = Vec::new();
        let mut total = 0u64;
        let mut chunk_count = 0u64;
        for _ in 0..n_terms {
            let xorb = r.hash()?;
            let stored_start = r.u64()?;
            let n = r.u32()?;
            chunk_count += u64::from(n);
            if n == 0 || chunk_count > MAX_RECIPE_CHUNKS {
                return Err(RecipeError::Corrupt("chunk count"));
            }
            let mut chunks = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let stored_len = r.u32()?;
                let unpacked_len = r.u32()?;
                total += u64::from(unpacked_len);
                chunks.push(RecipeChunk {
                    stored_len,
                    unpacked_len,
                });
            }
            terms.push(RecipeTerm {
                xorb,
                stored_start,
                chunks,
            });
        }
        if r.pos != b.len() {
            return Err(RecipeError::Corrupt("trailing bytes"));
        }
        if total != size {
            return Err(RecipeError::SizeMismatch { terms: total, size });
        }
        Ok(Recipe { file, size, terms })
    }

    /// The xorb reads that produce bytes `range` of the file (clamped to the file), in order.
    pub fn reads(&self, range: Range<u64>) -> Vec<XorbRead> {
        let (a, b) = (range.start, range.end.min(self.size));
        let mut out = Vec::new();
        if a >= b {
            return out;
        }
        let mut term_off = 0u64;
        for t in &self.terms {
            let term_len: u64 = t.chunks.iter().map(|c| u64::from(c.unpacked_len)).sum();
            let (ts, te) = (term_off, term_off + term_len);
            term_off = te;
            if te <= a {
                continue;
            }
            if ts >= b {
                break;
            }
            let (from, to) = (a.max(ts), b.min(te));
            // Walk the chunks: the first whose unpacked span holds `from`, the last holding `to-1`.
            let (mut off, mut stored) = (ts, t.stored_start);
            let mut first: Option<(u64, u64)> = None; // (stored offset, unpacked offset)
            let mut stored_end = stored;
            for c in &t.chunks {
                let (cs, ce) = (off, off + u64::from(c.unpacked_len));
                if ce > from && first.is_none() {
                    first = Some((stored, cs));
                }
                stored += u64::from(c.stored_len);
                off = ce;
                if first.is_some() {
                    stored_end = stored;
                }
                if ce >= to {
                    break;
                }
            }
            let Some((stored_start, first_off)) = first else {
                continue;
            };
            out.push(XorbRead {
                xorb: t.xorb,
                stored: stored_start..stored_end,
                skip: from - first_off,
                take: to - from,
            });
        }
        out
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecipeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(RecipeError::Corrupt("truncated"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, RecipeError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecipeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn hash(&mut self) -> Result<XetHash, RecipeError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(hash::hash_from_raw(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::FileTerm;
    use crate::xorb::{self, next_chunk, serialize_chunks, Compression, NextChunk, XorbLimits};

    /// Decodes whole chunks from the start of `bytes` as the storage layer does; the
    /// decoded bytes and how many stream bytes were left undecoded (a truncated stream).
    fn decode(bytes: &[u8]) -> (Vec<u8>, usize) {
        let (mut out, mut pos) = (Vec::new(), 0);
        loop {
            match next_chunk(&bytes[pos..], pos).unwrap() {
                NextChunk::Stored { payload, consumed } => {
                    out.extend_from_slice(&bytes[pos..][payload]);
                    pos += consumed;
                }
                NextChunk::Decoded { data, consumed } => {
                    out.extend_from_slice(&data);
                    pos += consumed;
                }
                NextChunk::Incomplete => return (out, bytes.len() - pos),
            }
        }
    }

    /// Two xorbs of chunks with distinct bytes, a file of three terms over them.
    fn fixture() -> (Vec<u8>, Recipe, HashMap<XetHash, Vec<u8>>) {
        let chunk = |seed: u8, len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        };
        let a: Vec<Vec<u8>> = (0..5).map(|i| chunk(i, 1000 + 37 * i as usize)).collect();
        let b: Vec<Vec<u8>> = (0..3)
            .map(|i| chunk(100 + i, 700 + 11 * i as usize))
            .collect();
        let mut stored = HashMap::new();
        let mut indexes = HashMap::new();
        for (chunks, scheme) in [(&a, Compression::Lz4), (&b, Compression::None)] {
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let body = serialize_chunks(&refs, scheme);
            let hashes: Vec<(XetHash, u64)> = chunks
                .iter()
                .map(|c| (hash::chunk_hash(c), c.len() as u64))
                .collect();
            let xh = hash::xorb_hash(&hashes);
            let index = xorb::validate(&body, &xh, &XorbLimits::default()).unwrap();
            stored.insert(xh, xorb::stored_object(&body, &index));
            indexes.insert(xh, index);
        }
        let (ha, hb) = {
            let mut it = indexes.values();
            let x = it.next().unwrap().clone();
            let y = it.next().unwrap().clone();
            if x.chunks.len() == 5 {
                (x.hash, y.hash)
            } else {
                (y.hash, x.hash)
            }
        };
        // a[1..4], b[0..3], a[0..2]
        let terms = vec![
            FileTerm {
                xorb: ha,
                chunk_start: 1,
                chunk_end: 4,
                unpacked_bytes: a[1..4].iter().map(|c| c.len() as u32).sum(),
            },
            FileTerm {
                xorb: hb,
                chunk_start: 0,
                chunk_end: 3,
                unpacked_bytes: b.iter().map(|c| c.len() as u32).sum(),
            },
            FileTerm {
                xorb: ha,
                chunk_start: 0,
                chunk_end: 2,
                unpacked_bytes: a[0..2].iter().map(|c| c.len() as u32).sum(),
            },
        ];
        let mut content = Vec::new();
        for c in a[1..4].iter().chain(b.iter()).chain(a[0..2].iter()) {
            content.extend_from_slice(c);
        }
        let file = FileSummary {
            hash: hash::chunk_hash(b"not checked here"),
            sha256: None,
            size: content.len() as u64,
            terms,
        };
        let recipe = Recipe::build(&file, &indexes).unwrap();
        (content, recipe, stored)
    }

    fn rebuild(recipe: &Recipe, stored: &HashMap<XetHash, Vec<u8>>, r: Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for read in recipe.reads(r) {
            let obj = &stored[&read.xorb];
            let bytes = &obj[read.stored.start as usize..read.stored.end as usize];
            let (got, pending) = decode(bytes);
            assert_eq!(pending, 0);
            let s = read.skip as usize;
            out.extend_from_slice(&got[s..s + read.take as usize]);
        }
        out
    }

    #[test]
    fn every_range_rebuilds_the_file_bytes() {
        let (content, recipe, stored) = fixture();
        let n = content.len() as u64;
        assert_eq!(rebuild(&recipe, &stored, 0..n), content);
        for a in (0..n).step_by(97) {
            for b in [a + 1, a + 500, a + 1100, a + 3000, n, n + 10] {
                let want = &content[a as usize..b.min(n) as usize];
                assert_eq!(rebuild(&recipe, &stored, a..b), want, "{a}..{b}");
            }
        }
        assert!(recipe.reads(n..n + 5).is_empty());
        // A range inside one chunk reads just that chunk.
        let one = recipe.reads(10..20);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].stored.end - one[0].stored.start, {
            let c = &recipe.terms[0].chunks[0];
            u64::from(c.stored_len)
        });
    }

    #[test]
    fn encode_round_trips_and_corruption_is_refused() {
        let (_, recipe, _) = fixture();
        let bytes = recipe.encode();
        assert_eq!(Recipe::decode(&bytes).unwrap(), recipe);
        for cut in [0, 7, 8, 20, bytes.len() - 1] {
            assert!(Recipe::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Recipe::decode(&extra).is_err());
        let mut bad = bytes.clone();
        bad[8] ^= 1; // size
        assert!(matches!(
            Recipe::decode(&bad),
            Err(RecipeError::SizeMismatch { .. })
        ));
        let mut magic = bytes;
        magic[0] = b'X';
        assert_eq!(Recipe::decode(&magic), Err(RecipeError::Corrupt("magic")));
    }

    #[test]
    fn build_refuses_terms_it_cannot_serve() {
        let (_, recipe, _) = fixture();
        let file = FileSummary {
            hash: recipe.file,
            sha256: None,
            size: 1,
            terms: vec![FileTerm {
                xorb: hash::chunk_hash(b"nowhere"),
                chunk_start: 0,
                chunk_end: 1,
                unpacked_bytes: 1,
            }],
        };
        assert!(matches!(
            Recipe::build(&file, &HashMap::new()),
            Err(RecipeError::UnknownXorb(_))
        ));
    }

    #[test]
    fn a_truncated_stream_is_an_error_or_pending() {
        let (_, recipe, stored) = fixture();
        let read = &recipe.reads(0..recipe.size)[0];
        let bytes = &stored[&read.xorb][read.stored.start as usize..read.stored.end as usize];
        let (got, pending) = decode(&bytes[..bytes.len() - 3]);
        let whole: u32 = recipe.terms[0].chunks[..recipe.terms[0].chunks.len() - 1]
            .iter()
            .map(|c| c.unpacked_len)
            .sum();
        assert_eq!(got.len(), whole as usize, "all chunks but the cut one");
        assert!(pending > 0);
        assert!(next_chunk(&[9u8; 64], 0).is_err());
    }
}
