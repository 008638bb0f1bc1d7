//! `language_model.*` for Flan-T5 checkpoints (`T5ForConditionalGeneration`), fed with input
//! embeddings: relative position buckets, RMS layer norm, (gated) GELU/ReLU FFN, KV cache.
//!
//! candle-transformers' `t5.rs` has no input-embeddings entry and private stacks, so the
//! encoder-decoder is written here, keyed exactly as the checkpoint.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::{Activation, Embedding, Linear, VarBuilder, embedding, linear_no_bias};

use super::config::T5Config;
use super::kv_cache::{LayerCache, causal_mask, merge_heads, split_heads};

/// T5LayerNorm: scale only, no mean subtraction, variance accumulated in f32.
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    /// The output takes the weight's dtype: the residual stream may be f32 (see [`add`]) while
    /// the layers run in half precision.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs32 = xs.to_dtype(DType::F32)?;
        let variance = xs32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xs32.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        normed
            .to_dtype(self.weight.dtype())?
            .broadcast_mul(&self.weight)
    }
}

/// Residual addition with torch's type promotion: transformers keeps T5's `wo` in f32
/// (`_keep_in_fp32_modules`), so in f16/bf16 the residual stream becomes f32 after the first
/// feed-forward block and stays f32.
fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == b.dtype() {
        a + b
    } else {
        a.to_dtype(DType::F32)? + b.to_dtype(DType::F32)?
    }
}

/// Bucket of a relative position (memory - query), as `T5Attention._relative_position_bucket`.
fn relative_position_bucket(
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

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Only the first layer of each stack owns the bias table; the others reuse its output.
    relative_attention_bias: Option<Embedding>,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl Attention {
    fn new(cfg: &T5Config, has_bias: bool, bidirectional: bool, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        let relative_attention_bias = if has_bias {
            Some(embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                vb.pp("relative_attention_bias"),
            )?)
        } else {
            None
        };
        Ok(Self {
            q: linear_no_bias(cfg.d_model, inner, vb.pp("q"))?,
            k: linear_no_bias(cfg.d_model, inner, vb.pp("k"))?,
            v: linear_no_bias(cfg.d_model, inner, vb.pp("v"))?,
            o: linear_no_bias(inner, cfg.d_model, vb.pp("o"))?,
            relative_attention_bias,
            bidirectional,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// Position bias (1, heads, q_len, k_len) for queries at `q_start..q_start+q_len`.
    fn position_bias(
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

    /// T5 attention has no 1/sqrt(d) scaling; `bias` is position bias plus mask.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(&bias.to_dtype(scores.dtype())?)?;
        }
        let weights =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(q.dtype())?;
        self.o.forward(&merge_heads(&weights.matmul(v)?)?)
    }
}

struct FeedForward {
    wi: Linear,
    wi_1: Option<Linear>,
    wo: Linear,
    act: Activation,
}

impl FeedForward {
    fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let (gated, act) = cfg.feed_forward().map_err(candle_core::Error::msg)?;
        let (wi, wi_1) = if gated {
            (
                linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_0"))?,
                Some(linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi_1"))?),
            )
        } else {
            (linear_no_bias(cfg.d_model, cfg.d_ff, vb.pp("wi"))?, None)
        };
        Ok(Self {
            wi,
            wi_1,
            // Kept in f32 whatever the compute dtype, as transformers does.
            wo: linear_no_bias(cfg.d_ff, cfg.d_model, vb.pp("wo").set_dtype(DType::F32))?,
            act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.wi.forward(xs)?;
        let h = h.apply(&self.act)?;
        let h = match &self.wi_1 {
            Some(wi_1) => (h * wi_1.forward(xs)?)?,
            None => h,
        };
        self.wo.forward(&h.to_dtype(DType::F32)?)
    }
}

struct Block {
    self_attn: Attention,
    self_norm: RmsNorm,
    cross_attn: Option<(Attention, RmsNorm)>,
    ff: FeedForward,
    ff_norm: RmsNorm,
}

impl Block {
    fn new(cfg: &T5Config, index: usize, decoder: bool, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.layer_norm_epsilon;
        let l0 = vb.pp("layer.0");
        let cross_attn = if decoder {
            let l1 = vb.pp("layer.1");
            Some((
                Attention::new(cfg, false, true, l1.pp("EncDecAttention"))?,
                RmsNorm::new(cfg.d_model, eps, l1.pp("layer_norm"))?,
            ))
        } else {
            None
        };
        let ff_vb = vb.pp(if decoder { "layer.2" } else { "layer.1" });
        Ok(Self {
            self_attn: Attention::new(cfg, index == 0, !decoder, l0.pp("SelfAttention"))?,
            self_norm: RmsNorm::new(cfg.d_model, eps, l0.pp("layer_norm"))?,
            cross_attn,
            ff: FeedForward::new(cfg, ff_vb.pp("DenseReluDense"))?,
            ff_norm: RmsNorm::new(cfg.d_model, eps, ff_vb.pp("layer_norm"))?,
        })
    }
}

/// Decoder state: self-attention caches, cross-attention K/V (computed once), the encoder
/// output and, for right-padded prompts of different lengths, the mask hiding encoder pads.
#[derive(Clone)]
pub struct T5State {
    self_caches: Vec<LayerCache>,
    cross_caches: Vec<LayerCache>,
    encoder_states: Tensor,
    encoder_mask: Option<Tensor>,
}

impl T5State {
    /// Keeps (and duplicates) the rows named by `rows`, in that order.
    pub fn select(&mut self, rows: &[u32]) -> Result<()> {
        let indices = Tensor::new(rows, self.encoder_states.device())?;
        self.self_caches
            .iter_mut()
            .try_for_each(|c| c.select(&indices))?;
        self.cross_caches
            .iter_mut()
            .try_for_each(|c| c.select(&indices))?;
        self.encoder_states = self.encoder_states.index_select(&indices, 0)?;
        if let Some(mask) = &self.encoder_mask {
            self.encoder_mask = Some(mask.index_select(&indices, 0)?);
        }
        Ok(())
    }
}

/// (B, 1, 1, S) additive mask: 0 for each row's first `lens[b]` positions, -inf after.
fn key_padding_mask(lens: &[usize], total: usize, device: &Device) -> Result<Option<Tensor>> {
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

/// Position bias and padding mask combined (either may be absent).
fn combine(bias: Option<&Tensor>, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    Ok(match (bias, mask) {
        (Some(b), Some(m)) => Some(b.to_dtype(DType::F32)?.broadcast_add(m)?),
        (Some(b), None) => Some(b.clone()),
        (None, Some(m)) => Some(m.clone()),
        (None, None) => None,
    })
}

pub struct T5 {
    shared: Embedding,
    encoder: Vec<Block>,
    encoder_norm: RmsNorm,
    decoder: Vec<Block>,
    decoder_norm: RmsNorm,
    lm_head: Tensor,
    output_scale: Option<f64>,
    num_heads: usize,
}

impl T5 {
    /// `vb` points at `language_model`.
    pub fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let shared = embedding(cfg.vocab_size, cfg.d_model, vb.pp("shared"))?;
        let stack = |name: &str, n: usize, decoder: bool| {
            (0..n)
                .map(|i| Block::new(cfg, i, decoder, vb.pp(format!("{name}.block.{i}"))))
                .collect::<Result<Vec<_>>>()
        };
        // Flan-T5 stores an untied head; a checkpoint without one ties it to `shared`.
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            vb.get((cfg.vocab_size, cfg.d_model), "lm_head.weight")?
        } else {
            shared.embeddings().clone()
        };
        Ok(Self {
            encoder: stack("encoder", cfg.num_layers, false)?,
            encoder_norm: RmsNorm::new(
                cfg.d_model,
                cfg.layer_norm_epsilon,
                vb.pp("encoder.final_layer_norm"),
            )?,
            decoder: stack("decoder", cfg.num_decoder_layers(), true)?,
            decoder_norm: RmsNorm::new(
                cfg.d_model,
                cfg.layer_norm_epsilon,
                vb.pp("decoder.final_layer_norm"),
            )?,
            lm_head,
            output_scale: cfg
                .scale_decoder_outputs()
                .then(|| (cfg.d_model as f64).powf(-0.5)),
            num_heads: cfg.num_heads,
            shared,
        })
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.shared.forward(ids)
    }

    pub fn device(&self) -> candle_core::Device {
        self.lm_head.device().clone()
    }

    /// Encoder over image queries + prompt embeddings (B, L, d_model), right-padded by `mask`.
    fn encode(&self, inputs_embeds: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let len = inputs_embeds.dim(1)?;
        let bias = self.encoder[0]
            .self_attn
            .position_bias(0, len, len, inputs_embeds.device())?;
        let bias = combine(bias.as_ref(), mask)?;
        let mut xs = inputs_embeds.clone();
        for block in &self.encoder {
            let h = block.self_norm.forward(&xs)?;
            let a = &block.self_attn;
            let (q, k, v) = (
                split_heads(&a.q.forward(&h)?, self.num_heads)?,
                split_heads(&a.k.forward(&h)?, self.num_heads)?,
                split_heads(&a.v.forward(&h)?, self.num_heads)?,
            );
            xs = add(&xs, &a.attend(&q, &k, &v, bias.as_ref())?)?;
            xs = add(&xs, &block.ff.forward(&block.ff_norm.forward(&xs)?)?)?;
        }
        self.encoder_norm.forward(&xs)
    }

    /// Decoder over new ids (B, n) after the cached ones; returns the last position's logits (B, V), f32.
    fn decode(&self, ids: &Tensor, state: &mut T5State) -> Result<Tensor> {
        let n = ids.dim(1)?;
        let past = state.self_caches[0].len();
        let device = ids.device();
        let mut xs = self.embed(ids)?;
        let mut self_bias = self.decoder[0]
            .self_attn
            .position_bias(past, n, past + n, device)?;
        if n > 1 {
            let mask = causal_mask(n, device, DType::F32)?;
            self_bias = Some(match self_bias {
                Some(b) => b.to_dtype(DType::F32)?.broadcast_add(&mask)?,
                None => mask,
            });
        }
        for (i, block) in self.decoder.iter().enumerate() {
            let h = block.self_norm.forward(&xs)?;
            let a = &block.self_attn;
            let q = split_heads(&a.q.forward(&h)?, self.num_heads)?;
            let (k, v) = state.self_caches[i].append(
                split_heads(&a.k.forward(&h)?, self.num_heads)?,
                split_heads(&a.v.forward(&h)?, self.num_heads)?,
            )?;
            xs = add(&xs, &a.attend(&q, &k, &v, self_bias.as_ref())?)?;

            let (cross, cross_norm) = block
                .cross_attn
                .as_ref()
                .expect("decoder blocks have cross-attention");
            let h = cross_norm.forward(&xs)?;
            let q = split_heads(&cross.q.forward(&h)?, self.num_heads)?;
            let enc = &state.encoder_states;
            let (k, v) = state.cross_caches[i].get_or_init(|| {
                Ok((
                    split_heads(&cross.k.forward(enc)?, self.num_heads)?,
                    split_heads(&cross.v.forward(enc)?, self.num_heads)?,
                ))
            })?;
            xs = add(&xs, &cross.attend(&q, &k, &v, state.encoder_mask.as_ref())?)?;
            xs = add(&xs, &block.ff.forward(&block.ff_norm.forward(&xs)?)?)?;
        }
        let mut last = self
            .decoder_norm
            .forward(&xs.narrow(1, n - 1, 1)?.squeeze(1)?)?;
        if let Some(scale) = self.output_scale {
            last = (last * scale)?;
        }
        last.matmul(&self.lm_head.t()?)?.to_dtype(DType::F32)
    }

    /// Encodes the inputs (row b's first `lens[b]` positions are real, the rest padding) and
    /// runs the decoder start token.
    pub fn prefill(
        &self,
        inputs_embeds: &Tensor,
        lens: &[usize],
        decoder_start: u32,
    ) -> Result<(Tensor, T5State)> {
        let (b, total, _) = inputs_embeds.dims3()?;
        let encoder_mask = key_padding_mask(lens, total, inputs_embeds.device())?;
        let mut state = T5State {
            self_caches: vec![LayerCache::default(); self.decoder.len()],
            cross_caches: vec![LayerCache::default(); self.decoder.len()],
            encoder_states: self.encode(inputs_embeds, encoder_mask.as_ref())?,
            encoder_mask,
        };
        let start = Tensor::full(decoder_start, (b, 1), inputs_embeds.device())?;
        let logits = self.decode(&start, &mut state)?;
        Ok((logits, state))
    }

    pub fn step(&self, ids: &Tensor, state: &mut T5State) -> Result<Tensor> {
        self.decode(&ids.unsqueeze(1)?, state)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    /// tests/fixtures/t5_buckets.json comes from transformers (scripts/gen_t5_buckets.py).
    #[test]
    fn buckets_match_transformers() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/t5_buckets.json"
        );
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
