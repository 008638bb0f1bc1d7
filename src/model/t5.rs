//! `language_model.*` for Flan-T5 checkpoints (`T5ForConditionalGeneration`), fed with input
//! embeddings: relative position buckets, RMS layer norm, (gated) GELU/ReLU FFN, KV cache.
//!
//! candle-transformers' `t5.rs` has no input-embeddings entry and private stacks, so the
//! encoder-decoder is written here (layers in `t5_layers`), keyed exactly as the checkpoint.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder, embedding};

use super::config::T5Config;
use super::kv_cache::{LayerCache, StaticCache, causal_mask, split_heads};
use super::linear::Linear;
use super::t5_layers::{Block, RmsNorm, add, combine, key_padding_mask};

/// Decoder positions the self-attention caches are first sized for; longer generations grow
/// them (see `LayerCache`).
const MAX_EXPECTED_DECODER_LEN: usize = 512;

/// Decoder state: self-attention caches, cross-attention K/V (computed once from the encoder
/// output) and, for right-padded prompts of different lengths, the mask hiding encoder pads.
pub struct T5State {
    self_caches: Vec<LayerCache>,
    cross_caches: Vec<StaticCache>,
    /// Until the cross-attention caches are built from it at the first decoder step.
    encoder_states: Option<Tensor>,
    /// (B, 1, 1, S) in the attention dtype.
    encoder_mask: Option<Tensor>,
}

impl T5State {
    /// Keeps (and duplicates) the rows named by `rows`, in that order.
    pub fn select(&mut self, rows: &[u32]) -> Result<()> {
        let device = match (&self.encoder_states, self.self_caches[0].device()) {
            (Some(states), _) => states.device().clone(),
            (None, Some(device)) => device,
            (None, None) => return Ok(()),
        };
        let indices = Tensor::new(rows, &device)?;
        self.self_caches
            .iter_mut()
            .try_for_each(|c| c.select(&indices))?;
        self.cross_caches
            .iter_mut()
            .try_for_each(|c| c.select(&indices))?;
        if let Some(states) = &self.encoder_states {
            self.encoder_states = Some(states.index_select(&indices, 0)?);
        }
        if let Some(mask) = &self.encoder_mask {
            self.encoder_mask = Some(mask.index_select(&indices, 0)?);
        }
        Ok(())
    }

    /// Beam reordering: `rows` only permutes beams within each batch item, whose encoder side
    /// (cross-attention K/V, mask) is identical, so only the self-attention caches move.
    pub fn reorder_beams(&mut self, rows: &[u32]) -> Result<()> {
        let Some(device) = self.self_caches[0].device() else {
            return self.select(rows);
        };
        let indices = Tensor::new(rows, &device)?;
        self.self_caches
            .iter_mut()
            .try_for_each(|c| c.select(&indices))
    }
}

pub struct T5 {
    shared: Embedding,
    encoder: Vec<Block>,
    encoder_norm: RmsNorm,
    decoder: Vec<Block>,
    decoder_norm: RmsNorm,
    lm_head: Linear,
    output_scale: Option<f64>,
    num_heads: usize,
    /// The attention dtype (the model dtype; `wo` alone stays f32).
    dtype: DType,
}

impl T5 {
    /// Every linear layer: both stacks' and the head.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all: Vec<&mut Linear> = self
            .encoder
            .iter_mut()
            .chain(self.decoder.iter_mut())
            .flat_map(Block::linears_mut)
            .collect();
        all.push(&mut self.lm_head);
        all
    }

    /// `vb` points at `language_model`.
    pub fn new(cfg: &T5Config, vb: VarBuilder) -> Result<Self> {
        let shared = embedding(cfg.vocab_size, cfg.d_model, vb.pp("shared"))?;
        let stack = |name: &str, n: usize, decoder: bool| {
            (0..n)
                .map(|i| Block::new(cfg, i, decoder, vb.pp(format!("{name}.block.{i}"))))
                .collect::<Result<Vec<_>>>()
        };
        // Flan-T5 stores an untied head; a checkpoint without one ties it to `shared`.
        let lm_head = Linear::new(
            if vb.contains_tensor("lm_head.weight") {
                vb.get((cfg.vocab_size, cfg.d_model), "lm_head.weight")?
            } else {
                shared.embeddings().clone()
            },
            None,
        );
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
            dtype: vb.dtype(),
            shared,
        })
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.shared.forward(ids)
    }

    pub fn device(&self) -> candle_core::Device {
        self.lm_head.device()
    }

    /// Encoder over image queries + prompt embeddings (B, L, d_model), right-padded by `mask`.
    fn encode(&self, inputs_embeds: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let len = inputs_embeds.dim(1)?;
        let bias = self.encoder[0]
            .self_attn
            .position_bias(0, len, len, inputs_embeds.device())?;
        let bias = combine(bias.as_ref(), mask, self.dtype)?;
        let mut xs = inputs_embeds.clone();
        for block in &self.encoder {
            let a = &block.self_attn;
            let (q, k, v) = a.qkv.forward(&block.self_norm.forward(&xs)?)?;
            xs = add(&xs, &a.attend(&q, &k, &v, bias.as_ref())?)?;
            xs = add(&xs, &block.ff.forward(&block.ff_norm.forward(&xs)?)?)?;
        }
        self.encoder_norm.forward(&xs)
    }

    /// Decoder over new ids (B, n) after the cached ones; returns the last position's logits
    /// (B, V) in the model dtype.
    fn decode(&self, ids: &Tensor, state: &mut T5State) -> Result<Tensor> {
        let n = ids.dim(1)?;
        let past = state.self_caches[0].len();
        let device = ids.device();
        let mut xs = self.embed(ids)?;
        let position_bias = self.decoder[0]
            .self_attn
            .position_bias(past, n, past + n, device)?;
        let causal = (n > 1)
            .then(|| causal_mask(n, device, DType::F32))
            .transpose()?;
        let self_bias = combine(position_bias.as_ref(), causal.as_ref(), self.dtype)?;
        let encoder_states = state.encoder_states.take();
        for (i, block) in self.decoder.iter().enumerate() {
            let a = &block.self_attn;
            let (q, k, v) = a.qkv.forward(&block.self_norm.forward(&xs)?)?;
            let (k, v) = state.self_caches[i].append(&k, &v)?;
            xs = add(&xs, &a.attend(&q, &k, &v, self_bias.as_ref())?)?;

            let (cross, cross_norm) = block
                .cross_attn
                .as_ref()
                .expect("decoder blocks have cross-attention");
            let q = split_heads(&cross.q.forward(&cross_norm.forward(&xs)?)?, self.num_heads)?;
            let (k, v) = state.cross_caches[i].get_or_init(|| {
                let enc = encoder_states
                    .as_ref()
                    .ok_or_else(|| candle_core::Error::msg("T5 encoder output already consumed"))?;
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
        self.lm_head.forward(&last)
    }

    /// Encodes the inputs (row b's first `lens[b]` positions are real, the rest padding) and
    /// runs the decoder start token.
    pub fn prefill(
        &self,
        inputs_embeds: &Tensor,
        lens: &[usize],
        decoder_start: u32,
        new_tokens: usize,
    ) -> Result<(Tensor, T5State)> {
        let (b, total, _) = inputs_embeds.dims3()?;
        let encoder_mask = key_padding_mask(lens, total, inputs_embeds.device())?;
        let encoder_states = self.encode(inputs_embeds, encoder_mask.as_ref())?;
        let expected = (1 + new_tokens).min(MAX_EXPECTED_DECODER_LEN);
        let mut state = T5State {
            self_caches: (0..self.decoder.len())
                .map(|_| LayerCache::with_expected_len(expected))
                .collect(),
            cross_caches: (0..self.decoder.len())
                .map(|_| StaticCache::default())
                .collect(),
            encoder_states: Some(encoder_states),
            // Cast once here, not in every layer of every step.
            encoder_mask: encoder_mask.map(|m| m.to_dtype(self.dtype)).transpose()?,
        };
        let start = Tensor::full(decoder_start, (b, 1), inputs_embeds.device())?;
        let logits = self.decode(&start, &mut state)?;
        Ok((logits, state))
    }

    pub fn step(&self, ids: &Tensor, state: &mut T5State) -> Result<Tensor> {
        self.decode(&ids.unsqueeze(1)?, state)
    }
}
