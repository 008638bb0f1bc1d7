//! Attention softmax computed in f32 whatever the model dtype.
//!
//! transformers computes OPT's attention softmax in f32 (`softmax(..., dtype=torch.float32)`)
//! and T5's on `.float()` scores; the ViT's runs torch's half-precision softmax, which
//! accumulates in f32 and rounds once. candle's f16/bf16 softmax instead evaluates `exp` in
//! half precision and rounds twice (CUDA), or sums in half precision (CPU). Upcasting, taking
//! the f32 softmax and casting back reproduces torch's single rounding in every case.

use candle_core::{DType, Result, Tensor};

/// Softmax over the last dimension, computed in f32, returned in the input's dtype.
pub fn softmax_f32(xs: &Tensor) -> Result<Tensor> {
    match xs.dtype() {
        DType::F32 => candle_nn::ops::softmax_last_dim(xs),
        dtype => candle_nn::ops::softmax_last_dim(&xs.to_dtype(DType::F32)?)?.to_dtype(dtype),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Rows where half-precision `exp` and a half-precision sum lose what f32 keeps: the f32
    /// path rounds once, so it equals the f32 softmax rounded to f16.
    #[test]
    fn half_softmax_rounds_once() {
        let row: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
        let x32 = Tensor::from_vec(row, (1, 512), &Device::Cpu).unwrap();
        let want = candle_nn::ops::softmax_last_dim(&x32)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let x16 = x32.to_dtype(DType::F16).unwrap();
        // The input itself is rounded to f16, so compare against the f32 softmax of the
        // rounded input.
        let want_rounded = candle_nn::ops::softmax_last_dim(&x16.to_dtype(DType::F32).unwrap())
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let got = softmax_f32(&x16).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        // f16 -> f32 is exact, so equal f32 values are equal f16 values.
        let as_f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(as_f32(&got), as_f32(&want_rounded));
        let naive = candle_nn::ops::softmax_last_dim(&x16).unwrap();
        let err = |t: &Tensor| {
            (t.to_dtype(DType::F32).unwrap() - want.to_dtype(DType::F32).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(
            err(&naive) > err(&got),
            "the half-precision sum is the less accurate"
        );
    }
}
