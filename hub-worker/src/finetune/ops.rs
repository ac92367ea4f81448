//! The differentiable building blocks of `decoder`'s trainable forward composed of
//! candle ops that have backward passes (candle-nn's fused `rms_norm` and
//! `rotary_emb::rope` have none; softmax is `fused`'s), and the frozen projection
//! whose backward skips the weight's gradient.

use candle_core::{Device, Tensor, D};

/// Rotate-half RoPE of `x` (batch, heads, len, head_dim) with full-width tables.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// RMSNorm over the last dimension, times `scale` (`w`, or gemma's `1 + w`).
pub fn rms_norm(x: &Tensor, scale: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(scale)
}

/// The additive causal mask (len × len), with a sliding window when given.
pub fn causal_mask(len: usize, window: Option<usize>) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..len).map(move |j| {
                if j <= i && window.is_none_or(|w| i - j < w) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(v, (len, len), &Device::Cpu)
}

/// `x W^T` with a frozen `W` (out, in) as one op whose backward returns only the
/// input's gradient. candle's `matmul` backward computes both sides' gradients
/// whether or not a side leads to a variable, so every frozen projection (and the
/// vocabulary projection, 262k x 640 on Gemma-3-270M) would cost a full weight
/// gradient (its matmul and an allocation of the weight's size) per step.
struct FrozenLinear(Tensor);

impl candle_core::CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (rows, inp) = l.shape().dims2()?;
        let x = match l.contiguous_offsets() {
            Some((a, b)) => {
                Tensor::from_slice(&s.as_slice::<f32>()?[a..b], (rows, inp), &Device::Cpu)?
            }
            None => candle_core::bail!("frozen-linear: the input is not contiguous"),
        };
        let y = x.matmul(&self.0.t()?)?;
        let shape = y.shape().clone();
        let (storage, layout) = y.storage_and_layout();
        match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(c), Some((0, n))) if n == shape.elem_count() => {
                Ok((c.clone(), shape))
            }
            _ => candle_core::bail!("frozen-linear: unexpected result layout"),
        }
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.matmul(&self.0)?))
    }
}

/// `x W^T` for `x` (rows, in) and a frozen `W` (out, in).
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenLinear(w.clone()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Var;

    /// The largest absolute difference of two tensors (the finetune tests' measure).
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The frozen projection's op gives `x W^T` and the input gradient of a plain
    /// matmul, and no gradient for the weight.
    #[test]
    fn frozen_matmul_has_the_input_gradient_of_a_matmul() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 12.0, &dev)
                .unwrap()
                .reshape((3, 4))
                .unwrap(),
        )
        .unwrap();
        let w = (Tensor::arange(0f32, 20.0, &dev)
            .unwrap()
            .reshape((5, 4))
            .unwrap()
            * 0.1)
            .unwrap();
        let ours = frozen_matmul(x.as_tensor(), &w).unwrap();
        let plain = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert_eq!(max_diff(&ours, &plain), 0.0);
        let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = plain.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let d = max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap());
        assert!(d < 1e-4, "input gradients differ by {d}");
        assert!(g1.get(&w).is_none());
    }
}
