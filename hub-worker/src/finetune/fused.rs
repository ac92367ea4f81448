//! Layer norm, softmax over the last dimension, the exact (erf) GELU and a
//! linear layer's bias as one op each, forward and backward, running on rayon's pool (the one candle's
//! matmuls use).
//!
//! Composed of candle ops (what `model` did first: candle-nn's fused kernels
//! have no backward pass), a layer norm is 9 ops forward and about 20 backward,
//! a GELU's backward 13 (`candle_core::backprop`), each a pass over the whole
//! tensor into a new allocation, most of them on one thread. Here each is one
//! pass that reads its inputs once: the forward computes a row's statistics and
//! writes the row; the backward is its own op (the "grad" ops below) that
//! recomputes what it needs from the input instead of keeping intermediates.
//! The arithmetic is the composed ops' (same formulas, f32), so results agree
//! with them to rounding (tests below).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per rayon task for element-wise work.
const CHUNK: usize = 1 << 14;

/// A contiguous f32 input of op `op`.
pub(crate) fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: needs f32");
    };
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: needs contiguous data")))?;
    Ok(&v[a..b])
}

/// Rows per rayon task for a row-wise op with rows of `width`.
fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

/// The width (last dimension) of `l`, which must not be zero.
fn last_dim(l: &Layout, op: &str) -> Result<usize> {
    match l.dims().last() {
        Some(&w) if w > 0 => Ok(w),
        _ => candle_core::bail!("{op}: needs a non-empty last dimension"),
    }
}

// ---- bias ----

/// `y + b` over the last dimension: a linear layer's bias.
struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "fused-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (y, b) = (f32s(s1, l1, op)?, f32s(s2, l2, op)?);
        let n = last_dim(l1, op)?;
        if b.len() != n {
            candle_core::bail!("{op}: the bias must have {n} elements");
        }
        let mut out = vec![0f32; y.len()];
        let rows = rows_per_task(n);
        out.par_chunks_mut(rows * n)
            .zip(y.par_chunks(rows * n))
            .for_each(|(out, y)| {
                for (out, y) in out.chunks_exact_mut(n).zip(y.chunks_exact(n)) {
                    for i in 0..n {
                        out[i] = y[i] + b[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad.contiguous()?.apply_op1_no_bwd(&ColumnSum)?;
        Ok((Some(grad.clone()), Some(db.reshape(b.shape())?)))
    }
}

/// The sum over every dimension but the last.
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "fused-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let x = f32s(s, l, op)?;
        let n = last_dim(l, op)?;
        let rows = rows_per_task(n);
        let sums = x
            .par_chunks(rows * n)
            .map(|x| {
                let mut acc = vec![0f32; n];
                for x in x.chunks_exact(n) {
                    for i in 0..n {
                        acc[i] += x[i];
                    }
                }
                acc
            })
            .reduce(
                || vec![0f32; n],
                |mut a, b| {
                    for (a, b) in a.iter_mut().zip(b) {
                        *a += b;
                    }
                    a
                },
            );
        Ok((CpuStorage::F32(sums), Shape::from(n)))
    }
}

/// `y + b` with `b` over the last dimension of `y`, with a backward pass
/// (candle's `broadcast_add` sums the bias's gradient over the rows on one thread,
/// strided: 12% of a MiniLM step at 2 threads).
pub fn bias_add(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    y.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd)
}

// ---- layer norm ----

/// `LayerNorm(x) * w + b` over the last dimension (`x` contiguous).
struct LayerNorm {
    eps: f32,
}

/// A row's mean and 1 / sqrt(variance + eps), the variance being the mean of
/// the squared deviations (as the composed op computes it).
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, w, b) = (f32s(s1, l1, op)?, f32s(s2, l2, op)?, f32s(s3, l3, op)?);
        let h = last_dim(l1, op)?;
        if w.len() != h || b.len() != h {
            candle_core::bail!("{op}: weight and bias must have {h} elements");
        }
        let mut y = vec![0f32; x.len()];
        let rows = rows_per_task(h);
        y.par_chunks_mut(rows * h)
            .zip(x.par_chunks(rows * h))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                    let (mean, rstd) = row_stats(x, self.eps);
                    for i in 0..h {
                        y[i] = (x[i] - mean) * rstd * w[i] + b[i];
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = w.elem_count();
        let rows = x.elem_count() / h;
        // One tensor of (rows + 2, h): the input's gradient, then the weight's and
        // the bias's (sums over the rows).
        let all = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &grad.contiguous()?,
            &LayerNormGrad { eps: self.eps },
        )?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.narrow(0, rows, 1)?.reshape(w.shape())?;
        let db = all.narrow(0, rows + 1, 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The backward pass of [`LayerNorm`] from (x, w, dy): (rows + 2, h) holding dx,
/// dw and db.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, w, dy) = (f32s(s1, l1, op)?, f32s(s2, l2, op)?, f32s(s3, l3, op)?);
        let h = w.len();
        if x.len() % h != 0 || dy.len() != x.len() {
            candle_core::bail!("{op}: shapes do not match");
        }
        let n_rows = x.len() / h;
        let mut out = vec![0f32; x.len() + 2 * h];
        let (dx, _) = out.split_at_mut(x.len());
        let rows = rows_per_task(h);
        // Each task writes its rows of dx and returns its partial dw and db.
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(rows * h)
            .zip(x.par_chunks(rows * h))
            .zip(dy.par_chunks(rows * h))
            .map(|((dx, x), dy)| {
                let mut acc = vec![0f32; 2 * h];
                let mut xhat = vec![0f32; h];
                for ((dx, x), dy) in dx
                    .chunks_exact_mut(h)
                    .zip(x.chunks_exact(h))
                    .zip(dy.chunks_exact(h))
                {
                    let (mean, rstd) = row_stats(x, self.eps);
                    let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                    for i in 0..h {
                        xhat[i] = (x[i] - mean) * rstd;
                        let g = dy[i] * w[i];
                        sum_g += g;
                        sum_gx += g * xhat[i];
                        acc[i] += dy[i] * xhat[i];
                        acc[h + i] += dy[i];
                    }
                    let (mean_g, mean_gx) = (sum_g / h as f32, sum_gx / h as f32);
                    for i in 0..h {
                        dx[i] = rstd * (dy[i] * w[i] - mean_g - xhat[i] * mean_gx);
                    }
                }
                acc
            })
            .collect();
        let sums = &mut out[n_rows * h..];
        for p in partial {
            for (s, v) in sums.iter_mut().zip(p) {
                *s += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n_rows + 2, h))))
    }
}

/// Layer norm over the last dimension of `x`, times `w`, plus `b`, with a
/// backward pass for all three.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LayerNorm { eps: eps as f32 },
    )
}

// ---- softmax and GELU: a map and its backward ----

/// What a [`Map`] runs its kernels over: each row of the last dimension, or
/// chunks of elements (an element-wise map).
#[derive(Clone, Copy)]
enum Unit {
    Row,
    Element,
}

/// A one-input op whose forward writes `y` from `x` a unit at a time, and whose
/// backward writes `dx` from (`x` or `y`, `dy`) a unit at a time.
#[derive(Clone, Copy)]
struct Map {
    name: &'static str,
    unit: Unit,
    forward: fn(y: &mut [f32], x: &[f32]),
    /// Whether `backward` takes the output `y` (else the input `x`).
    backward_from_output: bool,
    backward: fn(dx: &mut [f32], saved: &[f32], dy: &[f32]),
}

impl Map {
    /// Elements per kernel call and per rayon task, for data laid out as `l`.
    fn split(&self, l: &Layout) -> Result<(usize, usize)> {
        Ok(match self.unit {
            Unit::Row => {
                let w = last_dim(l, self.name)?;
                (w, rows_per_task(w) * w)
            }
            Unit::Element => (CHUNK, CHUNK),
        })
    }
}

impl CustomOp1 for Map {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32s(s, l, self.name)?;
        let (unit, task) = self.split(l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_mut(unit).zip(x.chunks(unit)) {
                    (self.forward)(y, x);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let saved = if self.backward_from_output { y } else { x };
        Ok(Some(
            saved
                .contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &MapGrad(*self))?,
        ))
    }
}

/// The backward pass of a [`Map`], from (saved, dy).
struct MapGrad(Map);

impl CustomOp2 for MapGrad {
    fn name(&self) -> &'static str {
        "fused-map-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.0.name;
        let (saved, dy) = (f32s(s1, l1, op)?, f32s(s2, l2, op)?);
        if saved.len() != dy.len() {
            candle_core::bail!("{op}: the gradient's shape does not match");
        }
        let (unit, task) = self.0.split(l1)?;
        let mut dx = vec![0f32; saved.len()];
        dx.par_chunks_mut(task)
            .zip(saved.par_chunks(task))
            .zip(dy.par_chunks(task))
            .for_each(|((dx, saved), dy)| {
                for ((dx, saved), dy) in dx
                    .chunks_mut(unit)
                    .zip(saved.chunks(unit))
                    .zip(dy.chunks(unit))
                {
                    (self.0.backward)(dx, saved, dy);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

fn softmax_row(y: &mut [f32], x: &[f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (y, x) in y.iter_mut().zip(x) {
        *y = (x - max).exp();
        sum += *y;
    }
    for v in y.iter_mut() {
        *v /= sum;
    }
}

/// dx = y * (dy - sum(dy * y)) over a row.
fn softmax_row_grad(dx: &mut [f32], y: &[f32], dy: &[f32]) {
    let dot: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
    for ((dx, y), dy) in dx.iter_mut().zip(y).zip(dy) {
        *dx = y * (dy - dot);
    }
}

/// Softmax over the last dimension of `x`, with a backward pass.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Map {
        name: "fused-softmax",
        unit: Unit::Row,
        forward: softmax_row,
        backward_from_output: true,
        backward: softmax_row_grad,
    })
}

/// `erf(x / sqrt 2)` and `exp(-x^2 / 2)` (Abramowitz and Stegun 7.1.26: absolute
/// error under 1.5e-7, and the exponential it computes is the one GELU's
/// derivative needs). libm's `erff`, which candle calls, was most of a GELU's
/// time, and the backward pass computed it and an `exp` separately.
fn erf_and_gauss(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let gauss = (-z * z).exp();
    let erf = 1.0 - poly * gauss;
    (if x < 0.0 { -erf } else { erf }, gauss)
}

/// The exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, as candle's `gelu_erf`.
fn gelu(y: &mut [f32], x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = (erf_and_gauss(*x).0 + 1.0) * 0.5 * x;
    }
}

/// dx = dy * GELU'(x), GELU' = `0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)`.
fn gelu_grad(dx: &mut [f32], x: &[f32], dy: &[f32]) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((dx, x), dy) in dx.iter_mut().zip(x).zip(dy) {
        let (erf, gauss) = erf_and_gauss(*x);
        *dx = dy * (0.5 * (1.0 + erf) + x * gauss * INV_SQRT_2PI);
    }
}

/// The exact GELU of `x`, with a backward pass.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Map {
        name: "fused-gelu-erf",
        unit: Unit::Element,
        forward: gelu,
        backward_from_output: false,
        backward: gelu_grad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::tests::max_diff;
    use candle_core::{Device, Var, D};

    /// Deterministic values in about [-3, 3), with a few large ones.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s % 6000) as f32 / 1000.0 - 3.0;
                if i % 97 == 0 {
                    v * 10.0
                } else {
                    v
                }
            })
            .collect()
    }

    fn var(shape: &[usize], seed: u32) -> Var {
        let n = shape.iter().product();
        Var::from_tensor(&Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// A loss that weighs every output differently, so each gradient entry counts.
    fn loss(y: &Tensor, seed: u32) -> Tensor {
        let w = Tensor::from_vec(values(y.elem_count(), seed), y.shape(), &Device::Cpu).unwrap();
        (y * w).unwrap().sum_all().unwrap()
    }

    fn composed_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let xc = x.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let xn = xc
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap();
        xn.broadcast_mul(w).unwrap().broadcast_add(b).unwrap()
    }

    #[test]
    fn layer_norm_matches_the_composed_ops_forward_and_backward() {
        // 300 rows: several rayon tasks (rows_per_task(384) = 42), and a last partial one.
        for (rows, h) in [(300, 384), (3, 5), (1, 1)] {
            let (x, w, b) = (var(&[rows, h], 1), var(&[h], 2), var(&[h], 3));
            let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap();
            let plain = composed_layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12);
            assert!(max_diff(&fused, &plain) < 1e-4, "forward {rows}x{h}");
            let g1 = loss(&fused, 4).backward().unwrap();
            let g2 = loss(&plain, 4).backward().unwrap();
            for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                let (a, c) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                let scale = c
                    .abs()
                    .unwrap()
                    .max_keepdim(0)
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    .max(1.0);
                let d = max_diff(a, c) / scale;
                assert!(d < 1e-4, "d{name} {rows}x{h}: {d}");
            }
        }
    }

    /// Softmax composed of candle ops (the max detached: the result does not depend on it).
    fn composed_softmax(x: &Tensor) -> Tensor {
        let max = x.max_keepdim(D::Minus1).unwrap().detach();
        let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
        e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
    }

    #[test]
    fn softmax_matches_the_composed_op_with_masked_entries() {
        let x = var(&[2, 3, 40, 40], 5);
        // A causal mask's -inf entries give exact zeros and no NaN.
        let mask = crate::finetune::ops::causal_mask(40, None).unwrap();
        let masked = x.as_tensor().broadcast_add(&mask).unwrap();
        let fused = softmax_last_dim(&masked).unwrap();
        let plain = composed_softmax(&masked);
        assert!(max_diff(&fused, &plain) < 1e-6);
        let g1 = loss(&fused, 6).backward().unwrap();
        let g2 = loss(&plain, 6).backward().unwrap();
        let d = max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap());
        assert!(d < 1e-5, "dx: {d}");
        assert_eq!(
            fused.flatten_all().unwrap().to_vec1::<f32>().unwrap()[1],
            0.0,
            "a masked entry"
        );
    }

    #[test]
    fn bias_add_matches_broadcast_add_forward_and_backward() {
        for (rows, n) in [(500, 384), (2, 3)] {
            let (y, b) = (var(&[rows, n], 9), var(&[n], 10));
            let fused = bias_add(y.as_tensor(), b.as_tensor()).unwrap();
            let plain = y.as_tensor().broadcast_add(b.as_tensor()).unwrap();
            assert_eq!(max_diff(&fused, &plain), 0.0);
            let g1 = loss(&fused, 11).backward().unwrap();
            let g2 = loss(&plain, 11).backward().unwrap();
            assert_eq!(max_diff(g1.get(&y).unwrap(), g2.get(&y).unwrap()), 0.0);
            let d = max_diff(g1.get(&b).unwrap(), g2.get(&b).unwrap());
            assert!(d < 1e-3, "db {rows}x{n}: {d}");
        }
    }

    #[test]
    fn gelu_matches_candles_gelu_erf_forward_and_backward() {
        let x = var(&[70_000], 7);
        let fused = gelu_erf(x.as_tensor()).unwrap();
        let plain = x.as_tensor().gelu_erf().unwrap();
        // Values up to 30: 0.5 x times erf's error bound.
        let d = max_diff(&fused, &plain);
        assert!(d < 5e-6, "forward: {d}");
        let g1 = loss(&fused, 8).backward().unwrap();
        let g2 = loss(&plain, 8).backward().unwrap();
        let d = max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap());
        assert!(d < 1e-5, "dx: {d}");
    }
}
