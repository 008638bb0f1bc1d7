//! The pieces of a T5 block: RMS layer norm, relative position buckets, self- and
//! cross-attention, the (gated) feed-forward, and the masks.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Activation, Embedding, VarBuilder, embedding};

use super::config::T5Config;
use super::kv_cache::merge_heads;
use super::linear::{Linear, QkvProjection, matmul};
use super::softmax::softmax_f32;

/// T5LayerNorm: scale only, no mean subtraction, statistics in f32; candle's fused `rms_norm`
/// (one launch instead of seven).
pub struct RmsNorm {
    weight: Tensor,
    /// For half-precision weights: ones in f32. transformers normalises in f32, rounds to the
    /// weight dtype, then multiplies by the weight; the fused kernel would round once after the
    /// multiplication, so it normalises with a unit weight and the multiplication follows.
    unit: Option<Tensor>,
    eps: f32,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get(size, "weight")?;
        let unit = (weight.dtype() != DType::F32)
            .then(|| Tensor::ones(size, DType::F32, weight.device()))
            .transpose()?;
        Ok(Self {
            weight,
            unit,
            eps: eps as f32,
        })
    }

    /// The output takes the weight's dtype: the residual stream may be f32 (see [`add`]) while
    /// the layers run in half precision.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = xs.to_dtype(DType::F32)?.contiguous()?;
        match &self.unit {
            None => candle_nn::ops::rms_norm(&xs, &self.weight, self.eps),
            Some(unit) => candle_nn::ops::rms_norm(&xs, unit, self.eps)?
                .to_dtype(self.weight.dtype())?
                .broadcast_mul(&self.weight),
        }
    }
}

/// Residual addition with torch's type promotion: transformers keeps T5's `wo` in f32
/// (`_keep_in_fp32_modules`), so in f16/bf16 the residual stream becomes f32 after the first
/// feed-forward block and stays f32.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == b.dtype() {
        a + b
    } else {
        a.to_dtype(DType::F32)? + b.to_dtype(DType::F32)?
    }
}

/// Bucket of a relative position (memory - query), as `T5Attention._relative_position_bucket`.
pub fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut buckets = num_buckets as i64;
    let mut offset = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            offset = buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        return (offset + distance) as usize;
    }
    // transformers computes this in float32 and truncates toward zero.
    let scaled = ((distance as f32 / max_exact as f32).ln()
        / (max_distance as f32 / max_exact as f32).ln()
        * (buckets - max_exact) as f32) as i64;
    (offset + (max_exact + scaled).min(buckets - 1)) as usize
}

/// Softmax attention without 1/sqrt(d) scaling (T5 folds it into the weights); `bias` is
/// position bias plus mask, already in the scores' dtype.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, o: &Linear) -> Result<Tensor> {
    let mut scores = matmul(q, &k.t()?)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    o.forward(&merge_heads(&matmul(&softmax_f32(&scores)?, v)?)?)
}

pub struct SelfAttention {
    pub qkv: QkvProjection,
    o: Linear,
    /// Only the first layer of each stack owns the bias table; the others reuse its output.
    relative_attention_bias: Option<Embedding>,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl SelfAttention {
    pub fn new(
        cfg: &T5Config,
        has_bias: bool,
        bidirectional: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        let relative_attention_bias = has_bias
            .then(|| {
                embedding(
                    cfg.relative_attention_num_buckets,
                    cfg.num_heads,
                    vb.pp("relative_attention_bias"),
                )
            })
            .transpose()?;
        let load = |name: &str| Linear::load(cfg.d_model, inner, false, vb.pp(name));
        Ok(Self {
            qkv: QkvProjection::new(load("q")?, load("k")?, load("v")?, cfg.num_heads)?,
            o: Linear::load(inner, cfg.d_model, false, vb.pp("o"))?,
            relative_attention_bias,
            bidirectional,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// Position bias (1, heads, q_len, k_len) for queries at `q_start..q_start+q_len`.
    pub fn position_bias(
        &self,
        q_start: usize,
        q_len: usize,
        k_len: usize,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let Some(table) = &self.relative_attention_bias else {
            return Ok(None);
        };
        let buckets: Vec<u32> = (q_start..q_start + q_len)
            .flat_map(|q| {
                (0..k_len).map(move |k| {
                    relative_position_bucket(
                        k as i64 - q as i64,
                        self.bidirectional,
                        self.num_buckets,
                        self.max_distance,
                    ) as u32
                })
            })
            .collect();
        let ids = Tensor::from_vec(buckets, (q_len, k_len), device)?;
        Ok(Some(table.forward(&ids)?.permute((2, 0, 1))?.unsqueeze(0)?))
    }

    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        attend(q, k, v, bias, &self.o)
    }
}

/// `EncDecAttention`: queries from the decoder, keys/values from the encoder output (computed
/// once per caption).
pub struct CrossAttention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    o: Linear,
}

impl CrossAttention {
    pub fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        let load = |name: &str| Linear::load(cfg.d_model, inner, false, vb.pp(name));
        Ok(Self {
            q: load("q")?,
            k: load("k")?,
            v: load("v")?,
            o: Linear::load(inner, cfg.d_model, false, vb.pp("o"))?,
        })
    }

    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        attend(q, k, v, bias, &self.o)
    }
}

pub struct FeedForward {
    wi: Linear,
    wi_1: Option<Linear>,
    wo: Linear,
    act: Activation,
}

impl FeedForward {
    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        [Some(&mut self.wi), self.wi_1.as_mut(), Some(&mut self.wo)]
            .into_iter()
            .flatten()
    }

    pub fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let (gated, act) = cfg.feed_forward().map_err(candle_core::Error::msg)?;
        let load = |name: &str| Linear::load(cfg.d_model, cfg.d_ff, false, vb.pp(name));
        let (wi, wi_1) = if gated {
            (load("wi_0")?, Some(load("wi_1")?))
        } else {
            (load("wi")?, None)
        };
        Ok(Self {
            wi,
            wi_1,
            // Kept in f32 whatever the compute dtype, as transformers does.
            wo: Linear::load(
                cfg.d_ff,
                cfg.d_model,
                false,
                vb.pp("wo").set_dtype(DType::F32),
            )?,
            act,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.wi.forward(xs)?;
        let h = h.apply(&self.act)?;
        let h = match &self.wi_1 {
            Some(wi_1) => (h * wi_1.forward(xs)?)?,
            None => h,
        };
        self.wo.forward(&h.to_dtype(DType::F32)?)
    }
}

pub struct Block {
    pub self_attn: SelfAttention,
    pub self_norm: RmsNorm,
    pub cross_attn: Option<(CrossAttention, RmsNorm)>,
    pub ff: FeedForward,
    pub ff_norm: RmsNorm,
}

impl Block {
    /// Every linear layer of the block (to quantize them).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all = vec![self.self_attn.qkv.linear_mut(), &mut self.self_attn.o];
        if let Some((cross, _)) = &mut self.cross_attn {
            all.extend([&mut cross.q, &mut cross.k, &mut cross.v, &mut cross.o]);
        }
        all.extend(self.ff.linears_mut());
        all
    }

    pub fn new(cfg: &T5Config, index: usize, decoder: bool, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.layer_norm_epsilon;
        let l0 = vb.pp("layer.0");
        let cross_attn = if decoder {
            let l1 = vb.pp("layer.1");
            Some((
                CrossAttention::new(cfg, l1.pp("EncDecAttention"))?,
                RmsNorm::new(cfg.d_model, eps, l1.pp("layer_norm"))?,
            ))
        } else {
            None
        };
        let ff_vb = vb.pp(if decoder { "layer.2" } else { "layer.1" });
        Ok(Self {
            self_attn: SelfAttention::new(cfg, index == 0, !decoder, l0.pp("SelfAttention"))?,
            self_norm: RmsNorm::new(cfg.d_model, eps, l0.pp("layer_norm"))?,
            cross_attn,
            ff: FeedForward::new(cfg, ff_vb.pp("DenseReluDense"))?,
            ff_norm: RmsNorm::new(cfg.d_model, eps, ff_vb.pp("layer_norm"))?,
        })
    }
}

/// (B, 1, 1, S) additive mask: 0 for each row's first `lens[b]` positions, -inf after.
pub fn key_padding_mask(lens: &[usize], total: usize, device: &Device) -> Result<Option<Tensor>> {
    if lens.iter().all(|&l| l == total) {
        return Ok(None);
    }
    let data: Vec<f32> = lens
        .iter()
        .flat_map(|&l| (0..total).map(move |k| if k < l { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Some(Tensor::from_vec(
        data,
        (lens.len(), 1, 1, total),
        device,
    )?))
}

/// Position bias and padding mask combined (either may be absent), cast once to the attention
/// scores' dtype so the layers add it as is.
pub fn combine(
    bias: Option<&Tensor>,
    mask: Option<&Tensor>,
    dtype: DType,
) -> Result<Option<Tensor>> {
    let combined = match (bias, mask) {
        (Some(b), Some(m)) => Some(b.to_dtype(DType::F32)?.broadcast_add(m)?),
        (Some(b), None) => Some(b.clone()),
        (None, Some(m)) => Some(m.clone()),
        (None, None) => None,
    };
    combined.map(|c| c.to_dtype(dtype)).transpose()
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    /// tests/fixtures/t5_buckets.json comes from transformers (scripts/gen_t5_buckets.py).
    #[test]
    fn buckets_match_transformers() {
        // Cargo sets CARGO_MANIFEST_DIR when it runs tests; scripts/gpu_check.sh sets it when
        // the binary runs on another machine.
        let root = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let path = format!("{root}/tests/fixtures/t5_buckets.json");
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in cases.as_array().unwrap() {
            let bidirectional = case["bidirectional"].as_bool().unwrap();
            let buckets = case["num_buckets"].as_u64().unwrap() as usize;
            let distance = case["max_distance"].as_u64().unwrap() as usize;
            let start = case["relative_start"].as_i64().unwrap();
            for (i, expected) in case["buckets"].as_array().unwrap().iter().enumerate() {
                let rel = start + i as i64;
                assert_eq!(
                    relative_position_bucket(rel, bidirectional, buckets, distance) as u64,
                    expected.as_u64().unwrap(),
                    "relative {rel} in {case:?}"
                );
            }
        }
    }
}
