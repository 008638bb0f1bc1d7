//! Matrix products with operand layouts that cuBLAS accepts, checked on every device.
//!
//! candle's CPU matmul takes any strides. Its CUDA matmul hands the operands to cuBLAS, which
//! needs every matrix row- or column-major with a unit stride on one side and batches at a
//! fixed stride (`gemm_config` in candle-core's CUDA backend); other layouts fail at run time
//! with `MatMulNonContiguous`. A layout that only the CPU accepts (a narrowed row of a batch,
//! say) passes every CPU test and breaks the first GPU run, so the language models multiply
//! only through [`matmul`] and [`Linear`], which apply cuBLAS's rule on the CPU too.
//!
//! A [`Linear`] can also hold its weight quantized (`dtype=q8_0` on the CPU): candle's
//! quantized matmul reads a quarter of the bytes of f32, and decoding, which reads every weight
//! once per token, is bound by those bytes.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Layout, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Whether cuBLAS (through candle 0.11's `gemm_config`) accepts `lhs @ rhs` with these
/// layouts: lhs (..., m, k), rhs (..., k, n).
pub fn cublas_accepts(lhs: &Layout, rhs: &Layout) -> bool {
    let (ld, rd) = (lhs.dims(), rhs.dims());
    if ld.len() < 2 || ld.len() != rd.len() {
        return false;
    }
    let r = ld.len();
    let (m, k, n) = (ld[r - 2], ld[r - 1], rd[r - 1]);
    let (ls, rs) = (lhs.stride(), rhs.stride());
    let (l1, l2, r1, r2) = (ls[r - 1], ls[r - 2], rs[r - 1], rs[r - 2]);
    // rhs is (k, n): row-major (unit stride along n) or column-major (unit stride along k).
    let rhs_ok = ((r1 == 1 || n == 1) && (r2 == n || k == 1))
        || ((r1 == k || n == 1) && (r2 == 1 || k == 1));
    // lhs is (m, k), same two options.
    let lhs_ok = ((l1 == 1 || k == 1) && (l2 == k || m == 1))
        || ((l1 == m || k == 1) && (l2 == 1 || m == 1));
    lhs_ok && rhs_ok && batch_stride_ok(ld, ls) && batch_stride_ok(rd, rs)
}

/// The batch dimensions must collapse to one stride (strided-batched GEMM).
fn batch_stride_ok(dims: &[usize], stride: &[usize]) -> bool {
    match stride[..stride.len() - 2] {
        [] | [_] => true,
        [s1, s2] => s1 == s2 * dims[1] || dims[0] == 1 || dims[1] == 1,
        _ => false,
    }
}

/// `lhs.matmul(rhs)`, refused on every device when cuBLAS would refuse it.
pub fn matmul(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    if !cublas_accepts(lhs.layout(), rhs.layout()) {
        candle_core::bail!(
            "matmul operands {:?} (stride {:?}) @ {:?} (stride {:?}) have a layout cuBLAS rejects; make them contiguous",
            lhs.dims(),
            lhs.stride(),
            rhs.dims(),
            rhs.stride()
        );
    }
    lhs.matmul(rhs)
}

/// `y = x @ w.T + b`, like `candle_nn::Linear`, for inputs of any rank and layout: the leading
/// dimensions are flattened into one GEMM, and an input cuBLAS could not take is copied first.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

/// A weight (out, in) as loaded, or quantized in blocks along `in`.
#[derive(Clone, Debug)]
enum Weight {
    Dense(Tensor),
    Quantized(QMatMul),
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight: Weight::Dense(weight),
            bias,
        }
    }

    /// `vb` holds `weight` (out, in) and, when `bias`, `bias` (out).
    pub fn load(input: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((output, input), "weight")?;
        let bias = bias.then(|| vb.get(output, "bias")).transpose()?;
        Ok(Self::new(weight, bias))
    }

    /// The weight as loaded; an error once it is quantized (only loading code asks for it).
    pub fn weight(&self) -> Result<&Tensor> {
        self.dense_weight()
            .ok_or_else(|| candle_core::Error::msg("the weight of this layer is quantized"))
    }

    /// The weight as loaded, or `None` once it is quantized.
    pub fn dense_weight(&self) -> Option<&Tensor> {
        match &self.weight {
            Weight::Dense(w) => Some(w),
            Weight::Quantized(_) => None,
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn device(&self) -> Device {
        match &self.weight {
            Weight::Dense(w) => w.device().clone(),
            Weight::Quantized(QMatMul::QTensor(q)) => q.device(),
            Weight::Quantized(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => w.device().clone(),
        }
    }

    /// Replaces the weight by its `dtype` quantization, in blocks of `dtype.block_size()` input
    /// features. Returns false, keeping the weight as it is, when the input width is not a
    /// whole number of blocks (only tiny test models have such widths). This layer's dense
    /// weight is dropped, which frees it unless something else holds it (a head tied to the
    /// token embeddings: the embedding keeps its f32 copy, and the quantized one comes on top).
    pub fn quantize(&mut self, dtype: GgmlDType) -> Result<bool> {
        let Weight::Dense(w) = &self.weight else {
            return Ok(true);
        };
        let (_, input) = w.dims2()?;
        if input % dtype.block_size() != 0 {
            return Ok(false);
        }
        let q = QTensor::quantize(&w.to_dtype(candle_core::DType::F32)?, dtype)?;
        self.weight = Weight::Quantized(QMatMul::from_qtensor(q)?);
        Ok(true)
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims();
        let (&input, lead) = dims
            .split_last()
            .ok_or_else(|| candle_core::Error::msg("linear layer input has no dimensions"))?;
        let rows: usize = lead.iter().product();
        // `reshape` copies a strided input, so the GEMM operand is always contiguous.
        let x2 = xs.reshape((rows, input))?;
        let mut out = match &self.weight {
            Weight::Dense(w) => matmul(&x2, &w.t()?)?,
            Weight::Quantized(q) => q.forward(&x2)?,
        };
        if let Some(bias) = &self.bias {
            out = out.broadcast_add(bias)?;
        }
        let mut shape = lead.to_vec();
        shape.push(out.dim(1)?);
        out.reshape(shape)
    }
}

/// A layer with a bias, like `candle_nn::linear`: `vb` holds `weight` (output, input) and `bias`.
pub fn linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    Linear::load(input, output, true, vb)
}

/// The q, k and v projections of a self-attention layer as one GEMM over weights concatenated
/// at load: one launch (and one bias add) instead of three.
pub struct QkvProjection {
    /// Rows: q's outputs, then k's, then v's.
    fused: Linear,
    num_heads: usize,
}

impl QkvProjection {
    pub fn new(q: Linear, k: Linear, v: Linear, num_heads: usize) -> Result<Self> {
        let weight = Tensor::cat(&[q.weight()?, k.weight()?, v.weight()?], 0)?;
        let bias = match (q.bias(), k.bias(), v.bias()) {
            (None, None, None) => None,
            (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)?),
            _ => candle_core::bail!("q, k and v projections must all have a bias or none"),
        };
        Ok(Self {
            fused: Linear::new(weight, bias),
            num_heads,
        })
    }

    /// The one fused layer (to quantize it).
    pub fn linear_mut(&mut self) -> &mut Linear {
        &mut self.fused
    }

    /// xs (B, L, in) -> q, k, v, each (B, heads, L, head_dim) and contiguous. The split is one
    /// copy, and none for a single row (batch 1, one decoding step).
    pub fn forward(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, l, _) = xs.dims3()?;
        let qkv = self.fused.forward(xs)?;
        let out = qkv.dim(2)? / 3;
        let heads = self.num_heads;
        let qkv = qkv
            .reshape((b, l, 3, heads, out / heads))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        Ok((qkv.get(0)?, qkv.get(1)?, qkv.get(2)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::arange(0f32, n as f32, &Device::Cpu)
            .unwrap()
            .reshape(shape)
            .unwrap()
    }

    /// The fault this module exists for: the last position of a batch, narrowed out of
    /// (B, L, H), is a strided (B, H) matrix; cuBLAS rejects it as a GEMM operand when B > 1.
    #[test]
    fn narrowed_last_position_is_rejected_for_batches() {
        let w = t(&[5, 4]);
        let batch = t(&[3, 2, 4]).narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
        assert!(!cublas_accepts(batch.layout(), w.t().unwrap().layout()));
        let err = matmul(&batch, &w.t().unwrap()).unwrap_err().to_string();
        assert!(err.contains("cuBLAS"), "{err}");
        // One row is a single GEMM row: any row stride is fine.
        let single = t(&[1, 2, 4]).narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
        assert!(cublas_accepts(single.layout(), w.t().unwrap().layout()));
    }

    #[test]
    fn linear_copies_a_strided_input_and_matches_contiguous() {
        let w = t(&[5, 4]);
        let b = Tensor::new(&[1f32, 2., 3., 4., 5.], &Device::Cpu).unwrap();
        let lin = Linear::new(w, Some(b));
        let x = t(&[3, 2, 4]).narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
        let got = lin.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let want = lin.forward(&x.contiguous().unwrap()).unwrap();
        assert_eq!(got, want.to_vec2::<f32>().unwrap());
        // Row 0 is x = [4, 5, 6, 7]: w row 0 = [0, 1, 2, 3] gives 38, plus bias 1.
        assert_eq!(got[0][0], 39.0);
    }

    /// The fused projection gives what three separate ones give, at prefill and decode lengths.
    #[test]
    fn fused_qkv_equals_separate_projections() {
        let lin = |seed: f32| {
            let w = (t(&[8, 6]) * (0.01 * seed) as f64).unwrap().sin().unwrap();
            let b = (t(&[8]) * (0.1 * seed) as f64).unwrap().cos().unwrap();
            Linear::new(w, Some(b))
        };
        let (q, k, v) = (lin(1.0), lin(2.0), lin(3.0));
        let fused = QkvProjection::new(q.clone(), k.clone(), v.clone(), 2).unwrap();
        for len in [1, 3] {
            let xs = (t(&[2, len, 6]) * 0.05).unwrap().cos().unwrap();
            let (fq, fk, fv) = fused.forward(&xs).unwrap();
            for (got, lin) in [(fq, &q), (fk, &k), (fv, &v)] {
                let want = lin
                    .forward(&xs)
                    .unwrap()
                    .reshape((2, len, 2, 4))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap();
                assert!(got.is_contiguous());
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(flat(&got), flat(&want), "len {len}");
            }
        }
    }

    /// q8_0 takes layers whose input width is a whole number of 32-wide blocks, and gives
    /// their product within its rounding; other widths keep their f32 weights untouched.
    #[test]
    fn quantize_takes_whole_blocks_only() {
        let x = (t(&[3, 64]) * 0.01).unwrap().sin().unwrap();
        let mut layer = Linear::new((t(&[5, 64]) * 0.1).unwrap().cos().unwrap(), Some(t(&[5])));
        let want = layer.forward(&x).unwrap();
        assert!(layer.quantize(GgmlDType::Q8_0).unwrap());
        assert!(layer.weight().is_err());
        let got = layer.forward(&x).unwrap();
        let max_abs = |t: &Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let (err, scale) = (max_abs(&(got - &want).unwrap()), max_abs(&want));
        // Weights and inputs rounded to 1/127 of their blocks' largest values: 0.57 % of the
        // largest output when this was written.
        assert!(err > 0.0 && err < 0.01 * scale, "{err} of {scale}");

        let x = t(&[3, 40]);
        let mut narrow = Linear::new(t(&[5, 40]), None);
        let want = narrow.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!(!narrow.quantize(GgmlDType::Q8_0).unwrap());
        assert!(narrow.weight().is_ok());
        assert_eq!(narrow.forward(&x).unwrap().to_vec2::<f32>().unwrap(), want);
    }

    /// Layouts the decoder relies on: a KV cache read through `narrow` (capacity > length),
    /// and its transpose.
    #[test]
    fn cache_views_are_accepted() {
        let cache = t(&[2, 3, 8, 4]).narrow(2, 0, 5).unwrap();
        let q = t(&[2, 3, 1, 4]);
        assert!(cublas_accepts(q.layout(), cache.t().unwrap().layout()));
        let weights = t(&[2, 3, 1, 5]);
        assert!(cublas_accepts(weights.layout(), cache.layout()));
        // A permuted head split that was not made contiguous (B > 1, L > 1) is not.
        let split = t(&[2, 5, 3, 4]).transpose(1, 2).unwrap();
        assert!(!cublas_accepts(split.layout(), t(&[2, 3, 4, 5]).layout()));
    }
}
