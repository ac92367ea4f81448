//! Content-defined chunking (spec §3): the gear-hash chunker every Xet client runs.
//!
//! `xet-core-structures` does not contain the chunker (it lives in `xet-data`, which pulls the
//! whole client stack), so it is implemented here from §3.2; the gear table is
//! `gearhash::DEFAULT_TABLE`, the one the client uses. The server needs it only to create Xet
//! files itself (tests, converting existing LFS blobs); it must match the client byte for byte,
//! which the D1/D2/D3 golden boundaries check.

/// Target chunk size (64 KiB).
pub const TARGET_CHUNK_SIZE: usize = 64 * 1024;
/// Smallest chunk except the last one of a file.
pub const MIN_CHUNK_SIZE: usize = TARGET_CHUNK_SIZE / 8;
/// Largest chunk; also the strict per-chunk limit of the xorb format.
pub const MAX_CHUNK_SIZE: usize = TARGET_CHUNK_SIZE * 2;
/// Boundary mask: `(target-1) << leading_zeros(target-1)`.
pub const MASK: u64 =
    ((TARGET_CHUNK_SIZE as u64) - 1) << ((TARGET_CHUNK_SIZE as u64) - 1).leading_zeros();

/// The gear table (256 × u64) of the rolling hash.
pub fn gear_table() -> &'static [u64; 256] {
    &gearhash::DEFAULT_TABLE
}

/// Streaming chunker: feed bytes with [`Chunker::push`], then call [`Chunker::finish`]. The
/// boundaries do not depend on how the input is split into pushes.
#[derive(Debug, Default)]
pub struct Chunker {
    hash: u64,
    /// Bytes of the current (open) chunk seen so far.
    size: usize,
}

impl Chunker {
    /// Feeds `data`; returns the lengths of the chunks that ended inside it (the first length
    /// includes bytes of earlier pushes that belong to the same chunk).
    pub fn push(&mut self, data: &[u8]) -> Vec<usize> {
        let table = gear_table();
        let mut out = Vec::new();
        for &b in data {
            self.hash = (self.hash << 1).wrapping_add(table[b as usize]);
            self.size += 1;
            if self.size < MIN_CHUNK_SIZE {
                continue;
            }
            if self.size >= MAX_CHUNK_SIZE || self.hash & MASK == 0 {
                out.push(self.size);
                self.size = 0;
                self.hash = 0;
            }
        }
        out
    }

    /// Ends the input: the length of the last (possibly short) chunk, if any bytes are pending.
    pub fn finish(self) -> Option<usize> {
        (self.size > 0).then_some(self.size)
    }
}

/// Cumulative end offsets of the chunks of `data` (the §3.3 golden format). Empty input → none.
pub fn chunk_boundaries(data: &[u8]) -> Vec<usize> {
    let mut c = Chunker::default();
    let mut ends = Vec::new();
    let mut pos = 0;
    for len in c.push(data) {
        pos += len;
        ends.push(pos);
    }
    if let Some(len) = c.finish() {
        ends.push(pos + len);
    }
    ends
}

/// The chunks of `data` as slices.
pub fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let mut start = 0;
    chunk_boundaries(data)
        .into_iter()
        .map(|end| {
            let s = &data[start..end];
            start = end;
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_matches_spec() {
        assert_eq!(MASK, 0xFFFF_0000_0000_0000);
        assert_eq!((MIN_CHUNK_SIZE, MAX_CHUNK_SIZE), (8192, 131072));
    }

    #[test]
    fn small_and_empty_inputs() {
        assert!(chunk_boundaries(&[]).is_empty());
        assert_eq!(chunk_boundaries(&[7u8; 8191]), vec![8191]);
    }

    #[test]
    fn streaming_split_does_not_change_boundaries() {
        let data: Vec<u8> = (0..400_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let whole = chunk_boundaries(&data);
        let mut c = Chunker::default();
        let mut ends = Vec::new();
        let mut pos = 0;
        for piece in data.chunks(9_999) {
            for len in c.push(piece) {
                pos += len;
                ends.push(pos);
            }
        }
        if let Some(len) = c.finish() {
            ends.push(pos + len);
        }
        assert_eq!(ends, whole);
    }
}
