//! Pooling of token hidden states into one vector per input, as sentence-transformers
//! does it (masked; several modes concatenate in its order), and L2 normalisation.

/// One sentence-transformers pooling mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token's hidden state (`[CLS]` / `<s>`).
    Cls,
    /// Mean over real (unpadded) tokens.
    Mean,
    /// Element-wise max over real tokens.
    Max,
    /// Sum over real tokens divided by sqrt(token count).
    MeanSqrtLen,
}

/// Pools one sequence. `hidden` holds at least `len` rows of `dim` floats (row-major);
/// rows at `len..` are padding and ignored. Modes are concatenated in the given order.
pub fn pool(hidden: &[f32], len: usize, dim: usize, modes: &[PoolingMode]) -> Vec<f32> {
    let len = len.max(1);
    let rows = &hidden[..len * dim];
    let mut out = Vec::with_capacity(dim * modes.len());
    for mode in modes {
        match mode {
            PoolingMode::Cls => out.extend_from_slice(&rows[..dim]),
            PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                let mut acc = vec![0f32; dim];
                for row in rows.chunks_exact(dim) {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a += x;
                    }
                }
                let div = if *mode == PoolingMode::Mean {
                    len as f32
                } else {
                    (len as f32).sqrt()
                };
                out.extend(acc.into_iter().map(|a| a / div));
            }
            PoolingMode::Max => {
                let mut acc = vec![f32::NEG_INFINITY; dim];
                for row in rows.chunks_exact(dim) {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a = a.max(*x);
                    }
                }
                out.extend(acc);
            }
        }
    }
    out
}

/// Scales `v` to unit L2 norm (a zero vector stays zero, like torch's `F.normalize`).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for x in v {
        *x /= norm;
    }
}

/// Cosine similarity of two vectors of equal length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two real tokens and one padding row that must not count.
    const H: [f32; 9] = [1.0, 2.0, -3.0, 3.0, -4.0, 5.0, 100.0, 100.0, 100.0];

    #[test]
    fn modes() {
        assert_eq!(pool(&H, 2, 3, &[PoolingMode::Cls]), vec![1.0, 2.0, -3.0]);
        assert_eq!(pool(&H, 2, 3, &[PoolingMode::Mean]), vec![2.0, -1.0, 1.0]);
        assert_eq!(pool(&H, 2, 3, &[PoolingMode::Max]), vec![3.0, 2.0, 5.0]);
        let s = 2f32.sqrt();
        assert_eq!(
            pool(&H, 2, 3, &[PoolingMode::MeanSqrtLen]),
            vec![4.0 / s, -2.0 / s, 2.0 / s]
        );
        // Concatenation keeps the given order.
        assert_eq!(
            pool(&H, 2, 3, &[PoolingMode::Cls, PoolingMode::Max]),
            vec![1.0, 2.0, -3.0, 3.0, 2.0, 5.0]
        );
        // Padding counts when it is real.
        assert_eq!(pool(&H, 3, 3, &[PoolingMode::Max]), vec![100.0; 3]);
    }

    #[test]
    fn normalisation() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
    }
}
