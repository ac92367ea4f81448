//! SHA-256 that can stop between parts and go on later, in another request
//! or on another replica: the 32-byte chaining state after each whole 64-byte
//! block is all there is to keep. A multipart LFS upload to an object store
//! hashes each part as it streams through, starting from the state its
//! previous part left, so the completed object's digest is known without
//! reading its bytes back (see `routes::hf::lfs`).

// sha2 0.10's block type is generic-array 0.14's, deprecated upstream.
#[allow(deprecated)]
use sha2::digest::generic_array::GenericArray;

/// SHA-256's block size: every part but the last must be a multiple of it.
pub const BLOCK: usize = 64;

/// The state before any byte (FIPS 180-4, 5.3.3).
pub const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A running SHA-256 over bytes that start at a block boundary.
#[derive(Clone)]
pub struct Sha256State {
    state: [u32; 8],
    /// Bytes hashed so far, all parts together (the final padding needs it).
    len: u64,
    /// The tail that does not yet fill a block.
    buf: [u8; BLOCK],
    buffered: usize,
}

impl Sha256State {
    /// Resumes from a saved chaining state after `len` bytes (a multiple of 64).
    pub fn resume(state: [u32; 8], len: u64) -> Self {
        debug_assert_eq!(len % BLOCK as u64, 0);
        Self {
            state,
            len,
            buf: [0; BLOCK],
            buffered: 0,
        }
    }

    pub fn new() -> Self {
        Self::resume(INITIAL, 0)
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buffered > 0 {
            let take = (BLOCK - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < BLOCK {
                return;
            }
            compress(&mut self.state, &self.buf);
            self.buffered = 0;
        }
        let whole = data.len() / BLOCK * BLOCK;
        compress(&mut self.state, &data[..whole]);
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    /// The chaining state to save, when the bytes so far end on a block
    /// boundary (None: a tail is buffered; only the last part may end so).
    pub fn saved(&self) -> Option<[u32; 8]> {
        (self.buffered == 0).then_some(self.state)
    }

    /// The digest of everything hashed (the final padding applied).
    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        let mut tail = [0u8; BLOCK * 2];
        tail[..self.buffered].copy_from_slice(&self.buf[..self.buffered]);
        tail[self.buffered] = 0x80;
        let blocks = if self.buffered + 1 + 8 <= BLOCK { 1 } else { 2 };
        tail[blocks * BLOCK - 8..blocks * BLOCK].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &tail[..blocks * BLOCK]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl Default for Sha256State {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the compression function over `data`, a multiple of 64 bytes long.
#[allow(deprecated)]
fn compress(state: &mut [u32; 8], data: &[u8]) {
    debug_assert_eq!(data.len() % BLOCK, 0);
    for block in data.chunks_exact(BLOCK) {
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }
}

/// A chaining state as stored (32 bytes, big-endian words).
pub fn encode(state: &[u32; 8]) -> Vec<u8> {
    state.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// A stored chaining state (None: not 32 bytes).
pub fn decode(bytes: &[u8]) -> Option<[u32; 8]> {
    if bytes.len() != 32 {
        return None;
    }
    let mut s = [0u32; 8];
    for (w, c) in s.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_be_bytes(c.try_into().ok()?);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn reference(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    #[test]
    fn matches_sha2_at_every_tail_length_and_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000] {
            let mut h = Sha256State::new();
            h.update(&data[..n]);
            assert_eq!(h.finish(), reference(&data[..n]), "length {n}");
            // Fed in uneven pieces.
            let mut h = Sha256State::new();
            for piece in data[..n].chunks(13) {
                h.update(piece);
            }
            assert_eq!(h.finish(), reference(&data[..n]), "pieces, length {n}");
        }
    }

    #[test]
    fn resumes_from_a_saved_state_between_parts() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i ^ (i >> 5)) as u8).collect();
        let part = 1024;
        let mut saved = INITIAL;
        let mut done = 0u64;
        for chunk in data.chunks(part) {
            let mut h = Sha256State::resume(decode(&encode(&saved)).unwrap(), done);
            h.update(chunk);
            done += chunk.len() as u64;
            match h.saved() {
                Some(s) => saved = s,
                None => {
                    assert_eq!(done, data.len() as u64, "only the last part has a tail");
                    assert_eq!(h.finish(), reference(&data));
                    return;
                }
            }
        }
        panic!("the last part should have had a tail");
    }
}
