//! f32 CPU kernels for the encoders (vision tower, Q-Former), where candle's generic ops cost
//! more than the matrix products themselves.
//!
//! Why hand-written: a profile of the vision encoder on a 2-core machine showed half the time
//! outside the gemm microkernel: a fresh tensor (and zeroed pages) for every bias add, residual
//! add, scale, transpose copy and softmax, plus scalar libm `erff`/`expf`. Here a linear layer
//! writes its bias and the matrix product into one buffer (the `gemm` crate candle itself uses,
//! accumulating into the destination), attention reads q/k/v in place from the projection output
//! and writes heads straight into the merged (tokens, hidden) layout, and GELU/softmax are
//! vectorised ([`math`]). The arithmetic is the same as transformers' (same operations, same
//! order: `x·Wᵀ + b`, then `+ residual`; `(q·kᵀ) * scale`, softmax, `·v`), so parity holds.
//!
//! Every entry point takes and returns candle tensors; callers use them only for contiguous f32
//! tensors on the CPU ([`applies`]) and keep candle's ops for everything else (GPU, f16/bf16).

pub mod math;
#[cfg(feature = "mkl")]
mod mkl;

use candle_core::{CpuStorage, DType, Device, Layout, Module, Result, Shape, Storage, Tensor};
use candle_nn::Activation;
use gemm::Parallelism;

use super::linear::Linear;

/// Whether the fast path can take `t`: f32, on the CPU. (Inputs are made contiguous here.)
pub fn applies(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// Runs `f` on the contiguous f32 data of `t` (copied first only if `t` is a strided view).
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => f(slice(data, layout)),
        _ => candle_core::bail!("cpu_kernels: expected an f32 CPU tensor"),
    }
}

fn slice<'a>(data: &'a [f32], layout: &Layout) -> &'a [f32] {
    &data[layout.start_offset()..layout.start_offset() + layout.shape().elem_count()]
}

fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

fn parallelism(flops: usize) -> Parallelism {
    // Below ~1 MFLOP a thread hand-off costs more than it saves.
    match threads() {
        n if n > 1 && flops >= 1 << 20 => Parallelism::Rayon(n),
        _ => Parallelism::None,
    }
}

/// `dst (m×n, row stride dst_rs) = [dst +] scale · lhs (m×k) · rhs (k×n)`, all strides in elements.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
    scale: f32,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.len() > (m - 1) * dst_rs + n - 1,
        "gemm_into: dst too short"
    );
    if k > 0 {
        assert!(
            lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs,
            "gemm_into: lhs"
        );
        assert!(
            rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs,
            "gemm_into: rhs"
        );
    }
    // SAFETY: the asserts above keep every access inside the three slices; dst is exclusive.
    unsafe {
        gemm_raw(
            (m, n, k),
            dst.as_mut_ptr(),
            dst_rs,
            accumulate,
            (lhs.as_ptr(), lhs_rs, lhs_cs),
            (rhs.as_ptr(), rhs_rs, rhs_cs),
            scale,
            parallelism,
        )
    }
}

/// [`gemm_into`] on raw pointers: the gemm crate, or Intel MKL with the `mkl` feature.
///
/// # Safety
/// Every element the dimensions and strides reach must be inside the allocations, and no other
/// thread may touch the part of `dst` written here.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    scale: f32,
    parallelism: Parallelism,
) {
    #[cfg(feature = "mkl")]
    {
        // MKL threads on its own; the caller's choice of parallelism does not apply.
        let _ = parallelism;
        // SAFETY: forwarded from the caller.
        unsafe {
            mkl::gemm(
                (m, n, k),
                dst,
                dst_rs,
                accumulate,
                (lhs, lhs_rs, lhs_cs),
                (rhs, rhs_rs, rhs_cs),
                scale,
            )
        }
    }
    #[cfg(not(feature = "mkl"))]
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `x·Wᵀ + b` over the rows of `x` (any leading dims), then `+ residual` when given (same shape
/// as the output): torch's `addmm` followed by the residual add, without intermediate tensors.
pub fn linear(x: &Tensor, layer: &Linear, residual: Option<&Tensor>) -> Result<Tensor> {
    let (mut out, n_out) = linear_vec(x, layer)?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = n_out;
    if let Some(residual) = residual {
        if residual.dims() != dims.as_slice() {
            candle_core::bail!("residual {:?} != output {dims:?}", residual.shape())
        }
        with_data(residual, |r| {
            math::dispatch(|| out.iter_mut().zip(r).for_each(|(o, r)| *o += r));
            Ok(())
        })?;
    }
    Tensor::from_vec(out, dims, &Device::Cpu)
}

/// `act(x·Wᵀ + b)`, the MLP's first half; the exact GELU is applied in the same buffer.
pub fn linear_activation(x: &Tensor, layer: &Linear, act: Activation) -> Result<Tensor> {
    let (mut out, n_out) = linear_vec(x, layer)?;
    if act == Activation::Gelu {
        par_chunks_mut(&mut out, 1 << 14, math::gelu_erf_slice);
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = n_out;
    let out = Tensor::from_vec(out, dims, &Device::Cpu)?;
    match act {
        Activation::Gelu => Ok(out),
        other => out.apply(&other),
    }
}

/// `x·Wᵀ + b` as a buffer, and its width (the layer's output features).
fn linear_vec(x: &Tensor, layer: &Linear) -> Result<(Vec<f32>, usize)> {
    let Some(weight) = layer.dense_weight() else {
        return quantized_linear_vec(x, layer);
    };
    let (n, k) = weight.dims2()?;
    if x.dims().last() != Some(&k) {
        candle_core::bail!("linear: input {:?} for weight ({n}, {k})", x.shape())
    }
    let m = x.elem_count() / k.max(1);
    let mut out = match layer.bias() {
        Some(bias) => with_data(bias, |b| {
            let mut out = Vec::with_capacity(m * n);
            (0..m).for_each(|_| out.extend_from_slice(b));
            Ok(out)
        })?,
        None => vec![0f32; m * n],
    };
    with_data(x, |x| {
        with_data(weight, |w| {
            // W is (n, k) row-major; as the k×n right operand its rows are 1 apart, columns k.
            gemm_into(
                (m, n, k),
                &mut out,
                n,
                true,
                (x, k, 1),
                (w, 1, k),
                1.0,
                parallelism(2 * m * n * k),
            );
            Ok(())
        })
    })?;
    Ok((out, n))
}

/// The same with quantized weights (`dtype=q8_0`): candle's quantized matmul and bias add
/// ([`Linear`]'s own forward).
fn quantized_linear_vec(x: &Tensor, layer: &Linear) -> Result<(Vec<f32>, usize)> {
    let y = layer.forward(x)?;
    let n = *y.dims().last().expect("rank >= 1");
    Ok((y.flatten_all()?.to_vec1::<f32>()?, n))
}

/// Splits `data` into chunks of `chunk` elements and runs `f` on them on candle's CPU threads.
fn par_chunks_mut(data: &mut [f32], chunk: usize, f: impl Fn(&mut [f32]) + Sync) {
    if threads() < 2 || data.len() <= chunk {
        f(data);
        return;
    }
    let len = data.len();
    let base = SharedMut(data.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(len.div_ceil(chunk), |units| {
        for unit in units {
            let lo = unit * chunk;
            let hi = len.min(lo + chunk);
            // SAFETY: each unit is handed out once, so the chunks are disjoint.
            f(unsafe { std::slice::from_raw_parts_mut(base.get().add(lo), hi - lo) });
        }
    });
}

/// A pointer that the worker threads write through, each into a disjoint part.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used for disjoint writes, see the callers.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Where one of q, k or v lives inside a projection output: token `t` of batch item `b`, head
/// `h`, channel `c` is at `offset + b * batch_stride + t * row_stride + h * head_dim + c`.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub offset: usize,
    pub row_stride: usize,
    pub batch_stride: usize,
}

impl Heads {
    /// A (B, T, heads * head_dim) tensor on its own.
    pub fn packed(len: usize, hidden: usize) -> Self {
        Self {
            offset: 0,
            row_stride: hidden,
            batch_stride: len * hidden,
        }
    }
}

/// Shapes of a multi-head attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub batch: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub num_heads: usize,
    pub head_dim: usize,
}

/// `softmax((q·kᵀ) * scale)·v` per batch item and head, no mask, written as (B, q_len, heads *
/// head_dim) like transformers' `transpose(1, 2).reshape`. `q` and `kv` are the tensors the
/// [`Heads`] index into (the same tensor for a fused qkv projection).
pub fn attention(
    q: (&Tensor, Heads),
    k: (&Tensor, Heads),
    v: (&Tensor, Heads),
    shape: AttentionShape,
    scale: f32,
) -> Result<Tensor> {
    let AttentionShape {
        batch,
        q_len,
        kv_len,
        num_heads,
        head_dim,
    } = shape;
    let hidden = num_heads * head_dim;
    let mut out = vec![0f32; batch * q_len * hidden];
    with_data(q.0, |qd| {
        with_data(k.0, |kd| {
            with_data(v.0, |vd| {
                let out_ptr = SharedMut(out.as_mut_ptr());
                let out_len = out.len();
                let task = |index: usize, scores: &mut Vec<f32>| {
                    let (b, h) = (index / num_heads, index % num_heads);
                    let at = |x: Heads| x.offset + b * x.batch_stride + h * head_dim;
                    scores.resize(q_len * kv_len, 0.0);
                    gemm_into(
                        (q_len, kv_len, head_dim),
                        scores,
                        kv_len,
                        false,
                        (&qd[at(q.1)..], q.1.row_stride, 1),
                        // kᵀ: channel c of token t is at t * row_stride + c.
                        (&kd[at(k.1)..], 1, k.1.row_stride),
                        scale,
                        Parallelism::None,
                    );
                    scores.chunks_mut(kv_len).for_each(math::softmax_row);
                    let start = b * q_len * hidden + h * head_dim;
                    let v_part = &vd[at(v.1)..];
                    assert!(out_len >= start + (q_len - 1) * hidden + head_dim);
                    assert!(v_part.len() > (kv_len - 1) * v.1.row_stride + head_dim - 1);
                    // SAFETY: inside `out` and `v_part` (asserted); the (b, h) tasks write
                    // disjoint column blocks of disjoint rows.
                    unsafe {
                        gemm_raw(
                            (q_len, head_dim, kv_len),
                            out_ptr.get().add(start),
                            hidden,
                            false,
                            (scores.as_ptr(), kv_len, 1),
                            (v_part.as_ptr(), v.1.row_stride, 1),
                            1.0,
                            Parallelism::None,
                        )
                    };
                };
                let tasks = batch * num_heads;
                if threads() < 2 || tasks < 2 {
                    let mut scores = Vec::new();
                    (0..tasks).for_each(|i| task(i, &mut scores));
                } else {
                    candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
                        let mut scores = Vec::new();
                        // One head per thread: each product single-threaded.
                        #[cfg(feature = "mkl")]
                        mkl::single_threaded(|| range.for_each(|i| task(i, &mut scores)));
                        #[cfg(not(feature = "mkl"))]
                        range.for_each(|i| task(i, &mut scores));
                    });
                }
                Ok(())
            })
        })
    })?;
    Tensor::from_vec(out, Shape::from((batch, q_len, hidden)), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        // A small LCG: deterministic values in [-1, 1) without a seeded candle RNG.
        let n: usize = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn linear_with_residual_matches_candle() {
        let layer = Linear::new(random(&[48, 40], 1), Some(random(&[48], 2)));
        let x = random(&[2, 7, 40], 3);
        let residual = random(&[2, 7, 48], 4);
        let reference = (layer.forward(&x).unwrap() + &residual).unwrap();
        let ours = linear(&x, &layer, Some(&residual)).unwrap();
        assert_eq!(ours.dims(), &[2, 7, 48]);
        assert!(max_diff(&ours, &reference) < 1e-5);
        let no_bias = Linear::new(random(&[48, 40], 5), None);
        let ours = linear(&x, &no_bias, None).unwrap();
        assert!(max_diff(&ours, &no_bias.forward(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn linear_activation_matches_candle() {
        let layer = Linear::new(random(&[96, 32], 6), Some(random(&[96], 7)));
        let x = random(&[3, 300, 32], 8);
        for act in [Activation::Gelu, Activation::NewGelu, Activation::Silu] {
            let reference = layer.forward(&x).unwrap().apply(&act).unwrap();
            let ours = linear_activation(&x, &layer, act).unwrap();
            assert!(max_diff(&ours, &reference) < 1e-5, "{act:?}");
        }
    }

    /// Attention on a fused (B, T, 3, heads, d) projection, against candle's matmul/softmax.
    #[test]
    fn attention_on_fused_qkv_matches_candle() {
        let (b, t, heads, d) = (2, 9, 3, 4);
        let hidden = heads * d;
        let qkv = random(&[b, t, 3 * hidden], 9);
        let split = |i: usize| {
            qkv.reshape((b, t, 3, heads, d))
                .unwrap()
                .permute((2, 0, 3, 1, 4))
                .unwrap()
                .get(i)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let scale = 0.5f32;
        let weights = candle_nn::ops::softmax_last_dim(
            &(split(0).matmul(&split(1).t().unwrap()).unwrap() * scale as f64).unwrap(),
        )
        .unwrap();
        let reference = weights
            .matmul(&split(2))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, hidden))
            .unwrap();
        let part = |offset| Heads {
            offset,
            row_stride: 3 * hidden,
            batch_stride: t * 3 * hidden,
        };
        let shape = AttentionShape {
            batch: b,
            q_len: t,
            kv_len: t,
            num_heads: heads,
            head_dim: d,
        };
        let ours = attention(
            (&qkv, part(0)),
            (&qkv, part(hidden)),
            (&qkv, part(2 * hidden)),
            shape,
            scale,
        )
        .unwrap();
        assert!(max_diff(&ours, &reference) < 1e-5);
    }

    /// Cross-attention: separate q (B, Tq, H) and k/v (B, Tkv, H) tensors of other lengths.
    #[test]
    fn cross_attention_matches_candle() {
        let (b, tq, tkv, heads, d) = (2, 5, 11, 2, 8);
        let hidden = heads * d;
        let (q, k, v) = (
            random(&[b, tq, hidden], 10),
            random(&[b, tkv, hidden], 11),
            random(&[b, tkv, hidden], 12),
        );
        let split = |x: &Tensor, len| {
            x.reshape((b, len, heads, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let scale = 0.125f32;
        let scores = (split(&q, tq).matmul(&split(&k, tkv).t().unwrap()).unwrap() * 0.125).unwrap();
        let reference = candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&split(&v, tkv))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, tq, hidden))
            .unwrap();
        let shape = AttentionShape {
            batch: b,
            q_len: tq,
            kv_len: tkv,
            num_heads: heads,
            head_dim: d,
        };
        let ours = attention(
            (&q, Heads::packed(tq, hidden)),
            (&k, Heads::packed(tkv, hidden)),
            (&v, Heads::packed(tkv, hidden)),
            shape,
            scale,
        )
        .unwrap();
        assert!(max_diff(&ours, &reference) < 1e-5);
    }
}
