//! `qformer.*` and `query_tokens`: the querying transformer (`Blip2QFormerModel`).
//!
//! Learned query tokens run through BERT-style post-LN layers; every `cross_attention_frequency`-th
//! layer cross-attends to the image states. Only the query FFN (`intermediate_query`,
//! `output_query`) is used for captioning: there is no text input to the Q-Former.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Activation, LayerNorm, VarBuilder, layer_norm};

use super::config::QFormerConfig;
use super::cpu_kernels::{self, AttentionShape, Heads};
use super::linear::{Linear, linear};

/// `attention.attention` / `crossattention.attention`: separate query/key/value projections.
struct MultiHeadAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    num_heads: usize,
    scale: f64,
}

impl MultiHeadAttention {
    fn new(cfg: &QFormerConfig, kv_size: usize, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            query: linear(h, h, vb.pp("query"))?,
            key: linear(kv_size, h, vb.pp("key"))?,
            value: linear(kv_size, h, vb.pp("value"))?,
            num_heads: cfg.num_attention_heads,
            scale: ((h / cfg.num_attention_heads) as f64).powf(-0.5),
        })
    }

    fn forward(&self, xs: &Tensor, kv: &Tensor) -> Result<Tensor> {
        let (b, q_len, h) = xs.dims3()?;
        let kv_len = kv.dim(1)?;
        let head_dim = h / self.num_heads;
        if cpu_kernels::applies(xs) && cpu_kernels::applies(kv) {
            let q = cpu_kernels::linear(xs, &self.query, None)?;
            let k = cpu_kernels::linear(kv, &self.key, None)?;
            let v = cpu_kernels::linear(kv, &self.value, None)?;
            let shape = AttentionShape {
                batch: b,
                q_len,
                kv_len,
                num_heads: self.num_heads,
                head_dim,
            };
            return cpu_kernels::attention(
                (&q, Heads::packed(q_len, h)),
                (&k, Heads::packed(kv_len, h)),
                (&v, Heads::packed(kv_len, h)),
                shape,
                self.scale as f32,
            );
        }
        let heads = |t: Tensor, len: usize| {
            t.reshape((b, len, self.num_heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.query.forward(xs)?, q_len)?;
        let k = heads(self.key.forward(kv)?, kv_len)?;
        let v = heads(self.value.forward(kv)?, kv_len)?;
        let scores = (q.matmul(&k.t()?)? * self.scale)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        weights.matmul(&v)?.transpose(1, 2)?.reshape((b, q_len, h))
    }
}

/// An attention block with its `output` (dense + residual + LayerNorm, post-LN).
struct AttentionBlock {
    attention: MultiHeadAttention,
    dense: Linear,
    layer_norm: LayerNorm,
}

impl AttentionBlock {
    fn new(cfg: &QFormerConfig, kv_size: usize, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            attention: MultiHeadAttention::new(cfg, kv_size, vb.pp("attention"))?,
            dense: linear(h, h, vb.pp("output.dense"))?,
            layer_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("output.LayerNorm"))?,
        })
    }

    fn forward(&self, xs: &Tensor, kv: &Tensor) -> Result<Tensor> {
        let attn = self.attention.forward(xs, kv)?;
        if cpu_kernels::applies(&attn) {
            return self
                .layer_norm
                .forward(&cpu_kernels::linear(&attn, &self.dense, Some(xs))?);
        }
        self.layer_norm.forward(&(self.dense.forward(&attn)? + xs)?)
    }
}

/// `encoder.layer.N`.
struct Layer {
    attention: AttentionBlock,
    crossattention: Option<AttentionBlock>,
    intermediate_query: Linear,
    output_query: Linear,
    output_query_norm: LayerNorm,
    act: Activation,
}

impl Layer {
    fn new(cfg: &QFormerConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let crossattention = if index.is_multiple_of(cfg.cross_attention_frequency) {
            Some(AttentionBlock::new(
                cfg,
                cfg.encoder_hidden_size,
                vb.pp("crossattention"),
            )?)
        } else {
            None
        };
        Ok(Self {
            attention: AttentionBlock::new(cfg, h, vb.pp("attention"))?,
            crossattention,
            intermediate_query: linear(
                h,
                cfg.intermediate_size,
                vb.pp("intermediate_query.dense"),
            )?,
            output_query: linear(cfg.intermediate_size, h, vb.pp("output_query.dense"))?,
            output_query_norm: layer_norm(h, cfg.layer_norm_eps, vb.pp("output_query.LayerNorm"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor, image_states: &Tensor) -> Result<Tensor> {
        let mut xs = self.attention.forward(xs, xs)?;
        if let Some(cross) = &self.crossattention {
            xs = cross.forward(&xs, image_states)?;
        }
        if cpu_kernels::applies(&xs) {
            let ffn = cpu_kernels::linear_activation(&xs, &self.intermediate_query, self.act)?;
            return self.output_query_norm.forward(&cpu_kernels::linear(
                &ffn,
                &self.output_query,
                Some(&xs),
            )?);
        }
        let ffn = self.intermediate_query.forward(&xs)?.apply(&self.act)?;
        self.output_query_norm
            .forward(&(self.output_query.forward(&ffn)? + xs)?)
    }
}

/// `query_tokens` + `qformer`. Runs in the dtype of its VarBuilder (f32, as transformers keeps it
/// through `_keep_in_fp32_modules`).
pub struct QFormer {
    query_tokens: Tensor,
    layernorm: LayerNorm,
    layers: Vec<Layer>,
}

impl QFormer {
    /// `root` is the checkpoint root (for `query_tokens`); the layers live under `qformer.`.
    pub fn new(cfg: &QFormerConfig, num_query_tokens: usize, root: VarBuilder) -> Result<Self> {
        let vb = root.pp("qformer");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, i, vb.pp(format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            query_tokens: root.get((1, num_query_tokens, cfg.hidden_size), "query_tokens")?,
            layernorm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layernorm"))?,
            layers,
        })
    }

    /// image_states (B, N, vision hidden) -> query outputs (B, num_query_tokens, hidden).
    pub fn forward(&self, image_states: &Tensor) -> Result<Tensor> {
        let b = image_states.dim(0)?;
        let image_states = image_states.to_dtype(self.query_tokens.dtype())?;
        let queries =
            self.query_tokens
                .expand((b, self.query_tokens.dim(1)?, self.query_tokens.dim(2)?))?;
        let mut xs = self.layernorm.forward(&queries.contiguous()?)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &image_states)?;
        }
        Ok(xs)
    }
}
