//! Xorb upload validation and the stored form (spec §5).
//!
//! [`validate`] implements §5.5 on an upload body of any client version (§5.4: a footer-less
//! chunk stream from hf_xet ≥ 1.1.4, or chunks + `XorbObjectInfoV1` footer from older ones):
//! every chunk header is checked, every chunk is decompressed (None, LZ4 *frame*, BG4+LZ4) with
//! its output bounded by the declared length, re-hashed, and the Merkle root is compared with the
//! hash the client claimed. Nothing from the body is trusted; a footer, when present, is only
//! checked for shape and then replaced.
//!
//! The chunk walk is written here rather than delegated to
//! `xet_core_structures::xorb_object::reconstruct_xorb_with_footer`, because that function
//! decompresses without an output bound (a 16 MiB LZ4 frame can inflate to gigabytes), does not
//! check `uncompressed_length`, and folds every failure into one string error; the hashes, the
//! BG4 regrouping and the footer serializer are the crate's.
//!
//! Storage (§5.6, chosen form): the stored object is the chunk stream exactly as uploaded
//! followed by a freshly built V1 footer and its `info_length` ([`stored_footer`]). It is
//! self-describing (the crate's `XorbObject::validate_xorb_object` re-verifies it), byte-identical
//! to what xet-core's reference server stores, and chunk byte offsets are the same with or
//! without the footer, so [`XorbChunk::byte_start`]/[`XorbChunk::byte_end`] are valid `url_range`s
//! into the stored object.

use std::io::Read;

use xet_core_structures::xorb_object::byte_grouping::bg4::bg4_regroup;
use xet_core_structures::xorb_object::{XorbObject, XorbObjectInfoV1};

use crate::chunker::MAX_CHUNK_SIZE;
use crate::hash::{self, XetHash};

/// Length of a chunk header.
pub const CHUNK_HEADER_LEN: usize = 8;
/// The footer's leading identifier; met at a chunk position it ends the chunk stream.
pub const FOOTER_IDENT: &[u8; 7] = b"XETBLOB";
/// Largest `compressed_length` a header may declare (the client validator's bound).
pub const MAX_COMPRESSED_CHUNK: usize = 2 * MAX_CHUNK_SIZE;

/// Bytes per chunk in [`XorbIndex::chunks_to_bytes`].
pub const PACKED_CHUNK_LEN: usize = 44;

/// Limits applied to an upload body. The defaults are the client's own maxima (§5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XorbLimits {
    /// Largest accepted body, footer included (default 70 000 000: 64 MiB of data, 8 bytes of
    /// header per chunk, and an old client's footer fit).
    pub max_body_bytes: usize,
    /// Most chunks in one xorb (default 8192, `MAX_XORB_CHUNKS`).
    pub max_chunks: usize,
    /// Largest sum of uncompressed chunk lengths (default 64 MiB, `MAX_XORB_BYTES`).
    pub max_uncompressed_bytes: u64,
}

impl Default for XorbLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 70_000_000,
            max_chunks: 8 * 1024,
            max_uncompressed_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why an upload body is not a valid xorb. Every variant is the client's fault (HTTP 400, or
/// 413 for [`XorbError::BodyTooLarge`]); offsets are byte offsets into the body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XorbError {
    #[error("xorb body is empty")]
    Empty,
    #[error("xorb body is {len} bytes, more than the limit of {max}")]
    BodyTooLarge { len: usize, max: usize },
    #[error("xorb has more than {max} chunks")]
    TooManyChunks { max: usize },
    #[error("xorb holds more than {max} uncompressed bytes")]
    TooManyBytes { max: u64 },
    #[error("chunk header at offset {offset} is truncated")]
    TruncatedHeader { offset: usize },
    #[error("chunk header at offset {offset} has version {version}; only 0 is defined")]
    UnsupportedVersion { offset: usize, version: u8 },
    #[error("chunk at offset {offset} uses compression scheme {scheme}; only 0 (none), 1 (LZ4) and 2 (BG4+LZ4) are defined")]
    UnsupportedCompression { offset: usize, scheme: u8 },
    #[error(
        "chunk at offset {offset} declares {len} uncompressed bytes; a chunk holds 1 to {max}"
    )]
    BadUncompressedLength {
        offset: usize,
        len: usize,
        max: usize,
    },
    #[error("chunk at offset {offset} declares {len} compressed bytes, more than {max}")]
    BadCompressedLength {
        offset: usize,
        len: usize,
        max: usize,
    },
    #[error("chunk at offset {offset} needs {needed} bytes but the body ends after {available}")]
    TruncatedChunk {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("chunk at offset {offset} does not decompress: {reason}")]
    Decompress { offset: usize, reason: String },
    #[error("chunk at offset {offset} decompresses to {actual} bytes, its header says {declared}")]
    LengthMismatch {
        offset: usize,
        declared: usize,
        actual: usize,
    },
    #[error("bytes from offset {offset} are neither a chunk nor a well-formed xorb footer")]
    MalformedFooter { offset: usize },
    #[error("xorb body holds no chunk")]
    NoChunks,
    #[error("xorb hash is {computed}, not the claimed {claimed}")]
    HashMismatch { claimed: String, computed: String },
}

/// One chunk of a validated xorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XorbChunk {
    /// Chunk hash of the uncompressed bytes.
    pub hash: XetHash,
    /// Uncompressed length.
    pub uncompressed_len: u32,
    /// Offset of the chunk's header in the (stored) xorb.
    pub byte_start: u32,
    /// Offset just past the chunk's compressed bytes (exclusive).
    pub byte_end: u32,
}

/// What the server keeps about a validated xorb (the §5.6 metadata row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorbIndex {
    /// The xorb hash (verified).
    pub hash: XetHash,
    /// Chunks in xorb order.
    pub chunks: Vec<XorbChunk>,
    /// Length of the chunk stream (the body without an old client's footer).
    pub chunk_stream_len: u64,
}

impl XorbIndex {
    /// Sum of uncompressed chunk lengths.
    pub fn uncompressed_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| u64::from(c.uncompressed_len))
            .sum()
    }

    /// `(chunk hash, uncompressed length)` pairs, the input of the Merkle hashes.
    pub fn hashes_and_sizes(&self) -> Vec<(XetHash, u64)> {
        self.chunks
            .iter()
            .map(|c| (c.hash, u64::from(c.uncompressed_len)))
            .collect()
    }

    /// Byte range `[start, end)` of chunks `[first, end_chunk)` inside the stored object; `None`
    /// when the chunk range is empty or out of bounds.
    pub fn byte_range(&self, first: usize, end_chunk: usize) -> Option<(u64, u64)> {
        if first >= end_chunk || end_chunk > self.chunks.len() {
            return None;
        }
        Some((
            u64::from(self.chunks[first].byte_start),
            u64::from(self.chunks[end_chunk - 1].byte_end),
        ))
    }

    /// Packed form for a database column: per chunk 44 bytes (raw hash, uncompressed length,
    /// byte start, byte end; u32 little-endian), in xorb order. The xorb hash and the chunk
    /// stream length are separate columns.
    pub fn chunks_to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.chunks.len() * PACKED_CHUNK_LEN);
        for c in &self.chunks {
            out.extend_from_slice(&hash::hash_raw(&c.hash));
            out.extend_from_slice(&c.uncompressed_len.to_le_bytes());
            out.extend_from_slice(&c.byte_start.to_le_bytes());
            out.extend_from_slice(&c.byte_end.to_le_bytes());
        }
        out
    }

    /// Inverse of [`XorbIndex::chunks_to_bytes`]; `None` when the column is not a whole number of
    /// entries (a corrupt row).
    pub fn from_packed(hash: XetHash, chunk_stream_len: u64, packed: &[u8]) -> Option<Self> {
        if !packed.len().is_multiple_of(PACKED_CHUNK_LEN) {
            return None;
        }
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let chunks = packed
            .chunks_exact(PACKED_CHUNK_LEN)
            .map(|b| {
                let mut raw = [0u8; 32];
                raw.copy_from_slice(&b[..32]);
                XorbChunk {
                    hash: hash::hash_from_raw(raw),
                    uncompressed_len: u32_at(b, 32),
                    byte_start: u32_at(b, 36),
                    byte_end: u32_at(b, 40),
                }
            })
            .collect();
        Some(Self {
            hash,
            chunks,
            chunk_stream_len,
        })
    }

    /// Length of the stored object ([`stored_footer`] appended to the chunk stream).
    pub fn stored_len(&self) -> u64 {
        self.chunk_stream_len + 4 + 92 + 40 * self.chunks.len() as u64
    }
}

/// Validates an upload body against the hash from the URL (§5.5) and returns its index.
pub fn validate(
    body: &[u8],
    claimed: &XetHash,
    limits: &XorbLimits,
) -> Result<XorbIndex, XorbError> {
    if body.is_empty() {
        return Err(XorbError::Empty);
    }
    if body.len() > limits.max_body_bytes {
        return Err(XorbError::BodyTooLarge {
            len: body.len(),
            max: limits.max_body_bytes,
        });
    }
    let mut chunks = Vec::new();
    let mut total: u64 = 0;
    let mut pos = 0usize;
    while pos < body.len() {
        let rest = &body[pos..];
        if rest.len() >= FOOTER_IDENT.len() && &rest[..FOOTER_IDENT.len()] == FOOTER_IDENT {
            check_footer_shape(rest, pos)?;
            break;
        }
        if rest.len() < CHUNK_HEADER_LEN {
            return Err(XorbError::TruncatedHeader { offset: pos });
        }
        let (data, consumed) = decode_chunk(rest, pos)?;
        if chunks.len() == limits.max_chunks {
            return Err(XorbError::TooManyChunks {
                max: limits.max_chunks,
            });
        }
        total += data.len() as u64;
        if total > limits.max_uncompressed_bytes {
            return Err(XorbError::TooManyBytes {
                max: limits.max_uncompressed_bytes,
            });
        }
        chunks.push(XorbChunk {
            hash: hash::chunk_hash(&data),
            uncompressed_len: data.len() as u32,
            // The body limit keeps offsets far below u32::MAX (the footer stores them as u32).
            byte_start: pos as u32,
            byte_end: (pos + consumed) as u32,
        });
        pos += consumed;
    }
    if chunks.is_empty() {
        return Err(XorbError::NoChunks);
    }
    let index = XorbIndex {
        hash: XetHash::default(),
        chunks,
        chunk_stream_len: pos as u64,
    };
    let computed = hash::xorb_hash(&index.hashes_and_sizes());
    if computed != *claimed {
        return Err(XorbError::HashMismatch {
            claimed: hash::hash_string(claimed),
            computed: hash::hash_string(&computed),
        });
    }
    Ok(XorbIndex {
        hash: computed,
        ..index
    })
}

/// Decodes a chunk stream — a byte range `[byte_start(a), byte_end(b))` of a stored xorb, i.e.
/// what a data URL serves — into the uncompressed chunks, with the same checks as [`validate`].
/// This is the server-side reassembly for LFS-era clients and for [`crate::shard::verify_file_sha256`].
pub fn decode_chunks(stream: &[u8]) -> Result<Vec<Vec<u8>>, XorbError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let rest = &stream[pos..];
        if rest.len() < CHUNK_HEADER_LEN {
            return Err(XorbError::TruncatedHeader { offset: pos });
        }
        let (data, consumed) = decode_chunk(rest, pos)?;
        out.push(data);
        pos += consumed;
    }
    Ok(out)
}

/// Parses and decompresses the chunk at the start of `rest` (at `offset` in the body); returns
/// the uncompressed bytes and the number of body bytes the chunk occupies.
fn decode_chunk(rest: &[u8], offset: usize) -> Result<(Vec<u8>, usize), XorbError> {
    let mut out = Vec::new();
    let n = decode_chunk_into(rest, offset, &mut out)?;
    Ok((out, n))
}

/// The chunk at the start of a buffer, as [`next_chunk`] finds it.
#[derive(Debug, PartialEq, Eq)]
pub enum NextChunk {
    /// Its header or payload is not all there yet.
    Incomplete,
    /// Stored uncompressed: its bytes are `payload` of the buffer as they are (checked for
    /// length), so a caller holding the buffer as shared bytes can hand them on uncopied.
    Stored {
        payload: std::ops::Range<usize>,
        consumed: usize,
    },
    /// Compressed: decoded.
    Decoded { data: Vec<u8>, consumed: usize },
}

/// The chunk at the start of `buf` (at `offset` in its stream), with the checks of
/// [`decode_chunks`]; an uncompressed chunk is not copied ([`NextChunk::Stored`]).
pub fn next_chunk(buf: &[u8], offset: usize) -> Result<NextChunk, XorbError> {
    if buf.len() < CHUNK_HEADER_LEN {
        return Ok(NextChunk::Incomplete);
    }
    let compressed_len = u32::from_le_bytes([buf[1], buf[2], buf[3], 0]) as usize;
    if compressed_len <= MAX_COMPRESSED_CHUNK && buf.len() < CHUNK_HEADER_LEN + compressed_len {
        return Ok(NextChunk::Incomplete);
    }
    let uncompressed_len = u32::from_le_bytes([buf[5], buf[6], buf[7], 0]) as usize;
    if buf[4] == 0 && buf[0] == 0 && compressed_len == uncompressed_len {
        if uncompressed_len == 0 || uncompressed_len > MAX_CHUNK_SIZE {
            return Err(XorbError::BadUncompressedLength {
                offset,
                len: uncompressed_len,
                max: MAX_CHUNK_SIZE,
            });
        }
        let consumed = CHUNK_HEADER_LEN + compressed_len;
        return Ok(NextChunk::Stored {
            payload: CHUNK_HEADER_LEN..consumed,
            consumed,
        });
    }
    let mut data = Vec::new();
    let consumed = decode_chunk_into(buf, offset, &mut data)?;
    Ok(NextChunk::Decoded { data, consumed })
}

/// [`decode_chunk`] appending to `out`; on an error `out` is left as it was.
fn decode_chunk_into(rest: &[u8], offset: usize, out: &mut Vec<u8>) -> Result<usize, XorbError> {
    let h = &rest[..CHUNK_HEADER_LEN];
    let version = h[0];
    let compressed_len = u32::from_le_bytes([h[1], h[2], h[3], 0]) as usize;
    let scheme = h[4];
    let uncompressed_len = u32::from_le_bytes([h[5], h[6], h[7], 0]) as usize;
    if version != 0 {
        return Err(XorbError::UnsupportedVersion { offset, version });
    }
    if scheme > 2 {
        return Err(XorbError::UnsupportedCompression { offset, scheme });
    }
    if uncompressed_len == 0 || uncompressed_len > MAX_CHUNK_SIZE {
        return Err(XorbError::BadUncompressedLength {
            offset,
            len: uncompressed_len,
            max: MAX_CHUNK_SIZE,
        });
    }
    if compressed_len > MAX_COMPRESSED_CHUNK {
        return Err(XorbError::BadCompressedLength {
            offset,
            len: compressed_len,
            max: MAX_COMPRESSED_CHUNK,
        });
    }
    let needed = CHUNK_HEADER_LEN + compressed_len;
    if rest.len() < needed {
        return Err(XorbError::TruncatedChunk {
            offset,
            needed,
            available: rest.len(),
        });
    }
    let payload = &rest[CHUNK_HEADER_LEN..needed];
    let start = out.len();
    let decoded = match scheme {
        0 => {
            out.extend_from_slice(payload);
            Ok(())
        }
        1 => lz4_frame_decode_into(payload, uncompressed_len, offset, out),
        _ => lz4_frame_decode(payload, uncompressed_len, offset)
            .map(|d| out.extend_from_slice(&bg4_regroup(&d))),
    };
    if let Err(e) = decoded {
        out.truncate(start);
        return Err(e);
    }
    let actual = out.len() - start;
    if actual != uncompressed_len {
        out.truncate(start);
        return Err(XorbError::LengthMismatch {
            offset,
            declared: uncompressed_len,
            actual,
        });
    }
    Ok(needed)
}

/// LZ4 frame decoding that never produces more than `declared + 1` bytes (so a bomb is caught
/// as a length mismatch after at most 128 KiB of output).
fn lz4_frame_decode(payload: &[u8], declared: usize, offset: usize) -> Result<Vec<u8>, XorbError> {
    let mut out = Vec::with_capacity(declared);
    lz4_frame_decode_into(payload, declared, offset, &mut out)?;
    Ok(out)
}

/// [`lz4_frame_decode`] appending to `out`.
fn lz4_frame_decode_into(
    payload: &[u8],
    declared: usize,
    offset: usize,
    out: &mut Vec<u8>,
) -> Result<(), XorbError> {
    out.reserve(declared);
    lz4_flex::frame::FrameDecoder::new(payload)
        .take(declared as u64 + 1)
        .read_to_end(out)
        .map_err(|e| XorbError::Decompress {
            offset,
            reason: e.to_string(),
        })?;
    Ok(())
}

/// An old client's footer: `XETBLOB…` then `info_length` (u32 LE) as the last 4 bytes, with
/// `info_length + 4` equal to what is left. Its content is not trusted and not parsed further.
fn check_footer_shape(rest: &[u8], offset: usize) -> Result<(), XorbError> {
    let bad = || XorbError::MalformedFooter { offset };
    if rest.len() < 4 + 92 {
        return Err(bad());
    }
    let tail: [u8; 4] = rest[rest.len() - 4..].try_into().map_err(|_| bad())?;
    if u32::from_le_bytes(tail) as usize + 4 != rest.len() {
        return Err(bad());
    }
    Ok(())
}

/// The V1 footer + `info_length` to append to the chunk stream when storing (§5.3, §5.6).
pub fn stored_footer(index: &XorbIndex) -> Vec<u8> {
    let mut info = XorbObjectInfoV1::default();
    info.xorb_hash = index.hash;
    info.chunk_hashes = index.chunks.iter().map(|c| c.hash).collect();
    info.chunk_boundary_offsets = index.chunks.iter().map(|c| c.byte_end).collect();
    info.unpacked_chunk_offsets = index
        .chunks
        .iter()
        .scan(0u32, |acc, c| {
            *acc += c.uncompressed_len;
            Some(*acc)
        })
        .collect();
    info.num_chunks = index.chunks.len() as u32;
    info.fill_in_boundary_offsets();
    let mut out = Vec::with_capacity(info.serialized_length() + 4);
    // Writing into a Vec cannot fail.
    let _ = XorbObject::serialize_given_info(&mut out, info);
    out
}

/// The complete stored object: the validated body's chunk stream followed by [`stored_footer`].
pub fn stored_object(body: &[u8], index: &XorbIndex) -> Vec<u8> {
    let stream = &body[..index.chunk_stream_len as usize];
    let footer = stored_footer(index);
    let mut out = Vec::with_capacity(stream.len() + footer.len());
    out.extend_from_slice(stream);
    out.extend_from_slice(&footer);
    out
}

/// Serializes uncompressed chunks into a footer-less upload body (what hf_xet ≥ 1.1.4 sends),
/// using the client's own chunk serializer: each chunk with `scheme`, falling back to no
/// compression when that does not shrink it. For tests and for converting LFS blobs.
pub fn serialize_chunks(chunks: &[&[u8]], scheme: Compression) -> Vec<u8> {
    use xet_core_structures::xorb_object::{serialize_chunk, CompressionScheme};
    let scheme = match scheme {
        Compression::None => CompressionScheme::None,
        Compression::Lz4 => CompressionScheme::LZ4,
        Compression::Bg4Lz4 => CompressionScheme::ByteGrouping4LZ4,
    };
    let mut out = Vec::new();
    for c in chunks {
        // Writing into a Vec cannot fail, and the schemes above are concrete.
        let _ = serialize_chunk(c, &mut out, scheme);
    }
    out
}

/// Chunk compression for [`serialize_chunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Bg4Lz4,
}
