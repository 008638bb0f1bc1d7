//! `language_model.*` for OPT checkpoints (`OPTForCausalLM`): a decoder-only LM with learned
//! absolute positions (offset 2), an FFN with `activation_function` (ReLU in released
//! checkpoints) and a head tied to the token embeddings.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Activation, Embedding, LayerNorm, VarBuilder, embedding};

use super::config::OptConfig;
use super::kv_cache::{LayerCache, causal_mask, merge_heads};
use super::linear::{Linear, QkvProjection, matmul};
use super::softmax::softmax_f32;

/// OPT's learned position table is offset by 2 (a fairseq legacy).
const POSITION_OFFSET: usize = 2;
/// `nn.LayerNorm`'s default epsilon, which OPT uses.
const LAYER_NORM_EPS: f64 = 1e-5;

fn opt_layer_norm(size: usize, affine: bool, vb: VarBuilder) -> Result<LayerNorm> {
    if affine {
        candle_nn::layer_norm(size, LAYER_NORM_EPS, vb)
    } else {
        let ones = Tensor::ones(size, vb.dtype(), vb.device())?;
        Ok(LayerNorm::new(
            ones.clone(),
            ones.zeros_like()?,
            LAYER_NORM_EPS,
        ))
    }
}

/// Self-attention; q, k and v come from one batched GEMM ([`QkvProjection`]).
struct Attention {
    qkv: QkvProjection,
    out_proj: Linear,
    /// The head_dim^-0.5 applied to q at run time, or None when it is folded into the q rows.
    scale: Option<f64>,
}

impl Attention {
    fn new(cfg: &OptConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let bias = cfg.enable_bias;
        let load = |name: &str| Linear::load(h, h, bias, vb.pp(name));
        let scale = ((h / cfg.num_attention_heads) as f64).powf(-0.5);
        // transformers scales q after the projection and its bias. Folding the scale into the
        // q weights and bias saves a launch per layer but rounds differently (the scaled
        // weights are rounded to the model dtype), unless the scale is a power of two: then
        // both orders give the same bits. So it is folded only then (head_dim 64, 256, ...);
        // OPT-2.7b's head_dim 80 keeps the separate multiplication.
        let exact = scale == 2f64.powi(scale.log2().round() as i32);
        let q = load("q_proj")?;
        let q = if exact {
            Linear::new(
                (q.weight()? * scale)?,
                q.bias().map(|b| b * scale).transpose()?,
            )
        } else {
            q
        };
        Ok(Self {
            qkv: QkvProjection::new(q, load("k_proj")?, load("v_proj")?, cfg.num_attention_heads)?,
            out_proj: load("out_proj")?,
            scale: (!exact).then_some(scale),
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut LayerCache,
    ) -> Result<Tensor> {
        let (q, k, v) = self.qkv.forward(xs)?;
        let q = match self.scale {
            Some(scale) => (q * scale)?,
            None => q,
        };
        let (k, v) = cache.append(&k, &v)?;
        let mut scores = matmul(&q, &k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = softmax_f32(&scores)?;
        self.out_proj.forward(&merge_heads(&matmul(&weights, &v)?)?)
    }
}

struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    pre_norm: bool,
    activation: Activation,
}

impl DecoderLayer {
    fn new(cfg: &OptConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let affine = cfg.layer_norm_elementwise_affine;
        Ok(Self {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            self_attn_layer_norm: opt_layer_norm(h, affine, vb.pp("self_attn_layer_norm"))?,
            fc1: Linear::load(h, cfg.ffn_dim, cfg.enable_bias, vb.pp("fc1"))?,
            fc2: Linear::load(cfg.ffn_dim, h, cfg.enable_bias, vb.pp("fc2"))?,
            final_layer_norm: opt_layer_norm(h, affine, vb.pp("final_layer_norm"))?,
            pre_norm: cfg.do_layer_norm_before,
            activation: cfg.activation_function,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut LayerCache,
    ) -> Result<Tensor> {
        let normed = if self.pre_norm {
            self.self_attn_layer_norm.forward(xs)?
        } else {
            xs.clone()
        };
        let mut xs = (xs + self.self_attn.forward(&normed, mask, cache)?)?;
        if !self.pre_norm {
            xs = self.self_attn_layer_norm.forward(&xs)?;
        }
        let normed = if self.pre_norm {
            self.final_layer_norm.forward(&xs)?
        } else {
            xs.clone()
        };
        let ffn = self
            .fc2
            .forward(&self.fc1.forward(&normed)?.apply(&self.activation)?)?;
        let mut xs = (xs + ffn)?;
        if !self.pre_norm {
            xs = self.final_layer_norm.forward(&xs)?;
        }
        Ok(xs)
    }
}

/// Decoder state between steps: per-layer KV cache and each row's left padding.
pub struct OptState {
    layers: Vec<LayerCache>,
    /// Pad positions at the start of each row (prompts of different lengths, left-padded as
    /// transformers pads decoder-only batches).
    pads: Vec<usize>,
}

impl OptState {
    /// Keeps (and duplicates) the rows named by `rows`, in that order.
    pub fn select(&mut self, rows: &[u32]) -> Result<()> {
        self.pads = rows.iter().map(|&r| self.pads[r as usize]).collect();
        if let Some(device) = self.layers.first().and_then(|l| l.device()) {
            let indices = Tensor::new(rows, &device)?;
            self.layers
                .iter_mut()
                .try_for_each(|c| c.select(&indices))?;
        }
        Ok(())
    }
}

/// Attention mask (B, 1, len, past + len) for left-padded rows: causal, pad keys hidden. A pad
/// query attends to itself only, so no row is fully masked (no NaN) and real rows never see pads.
fn padded_mask(
    pads: &[usize],
    past: usize,
    len: usize,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    let total = past + len;
    let mut data = Vec::with_capacity(pads.len() * len * total);
    for &pad in pads {
        for q in 0..len {
            let at = past + q;
            data.extend((0..total).map(|k| {
                let visible = k <= at && (k >= pad || k == at);
                if visible { 0f32 } else { f32::NEG_INFINITY }
            }));
        }
    }
    Tensor::from_vec(data, (pads.len(), 1, len, total), device)?.to_dtype(dtype)
}

pub struct Opt {
    embed_tokens: Embedding,
    embed_positions: Tensor,
    project_in: Option<Linear>,
    project_out: Option<Linear>,
    layers: Vec<DecoderLayer>,
    final_layer_norm: Option<LayerNorm>,
    lm_head: Linear,
    max_positions: usize,
}

impl Opt {
    /// Every linear layer: the projections, each layer's, and the head.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all: Vec<&mut Linear> = self
            .project_in
            .iter_mut()
            .chain(self.project_out.iter_mut())
            .collect();
        for layer in &mut self.layers {
            all.extend([
                layer.self_attn.qkv.linear_mut(),
                &mut layer.self_attn.out_proj,
                &mut layer.fc1,
                &mut layer.fc2,
            ]);
        }
        all.push(&mut self.lm_head);
        all
    }

    /// `vb` points at `language_model`.
    pub fn new(cfg: &OptConfig, vb: VarBuilder) -> Result<Self> {
        let dec = vb.pp("model.decoder");
        let h = cfg.hidden_size;
        let proj = cfg.word_embed_proj_dim();
        let embed_tokens = embedding(cfg.vocab_size, proj, dec.pp("embed_tokens"))?;
        let embed_positions = dec.get(
            (cfg.max_position_embeddings + POSITION_OFFSET, h),
            "embed_positions.weight",
        )?;
        let (project_in, project_out) = if proj != h {
            (
                Some(Linear::load(proj, h, false, dec.pp("project_in"))?),
                Some(Linear::load(h, proj, false, dec.pp("project_out"))?),
            )
        } else {
            (None, None)
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, dec.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = if cfg.do_layer_norm_before && !cfg.remove_final_layer_norm {
            Some(opt_layer_norm(
                h,
                cfg.layer_norm_elementwise_affine,
                dec.pp("final_layer_norm"),
            )?)
        } else {
            None
        };
        // The head is tied to the embeddings; a checkpoint that stores it anyway wins.
        let lm_head = Linear::new(
            if vb.contains_tensor("lm_head.weight") {
                vb.get((cfg.vocab_size, proj), "lm_head.weight")?
            } else {
                embed_tokens.embeddings().clone()
            },
            None,
        );
        Ok(Self {
            embed_tokens,
            embed_positions,
            project_in,
            project_out,
            layers,
            final_layer_norm,
            lm_head,
            max_positions: cfg.max_position_embeddings,
        })
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    pub fn device(&self) -> candle_core::Device {
        self.lm_head.device()
    }

    /// Runs `inputs_embeds` (B, L, word_embed_proj_dim) after `past` cached positions; returns the
    /// last position's logits (B, vocab) in the model dtype.
    fn forward(&self, inputs_embeds: &Tensor, state: &mut OptState) -> Result<Tensor> {
        let (_, len, _) = inputs_embeds.dims3()?;
        let past = state.layers[0].len();
        if past + len > self.max_positions {
            candle_core::bail!(
                "sequence of {} positions exceeds max_position_embeddings {}",
                past + len,
                self.max_positions
            );
        }
        let mut xs = match &self.project_in {
            Some(p) => p.forward(inputs_embeds)?,
            None => inputs_embeds.clone(),
        };
        let mask = if state.pads.iter().all(|&p| p == 0) {
            // Unpadded: positions are past..past+len (cumsum(mask) - 1), plus the offset.
            let positions = self
                .embed_positions
                .narrow(0, past + POSITION_OFFSET, len)?;
            xs = xs.broadcast_add(&positions)?;
            // Prefill always starts from an empty cache, so the mask is square.
            (len > 1)
                .then(|| causal_mask(len, xs.device(), xs.dtype()))
                .transpose()?
        } else {
            // Positions count real tokens only (cumsum(mask) - 1); pads get -1, as in transformers.
            let ids: Vec<u32> = state
                .pads
                .iter()
                .flat_map(|&pad| {
                    (past..past + len).map(move |p| {
                        ((p as i64 - pad as i64).max(-1) + POSITION_OFFSET as i64) as u32
                    })
                })
                .collect();
            let b = state.pads.len();
            let ids = Tensor::from_vec(ids, b * len, xs.device())?;
            let positions = self
                .embed_positions
                .index_select(&ids, 0)?
                .reshape((b, len, ()))?;
            xs = (xs + positions)?;
            Some(padded_mask(
                &state.pads,
                past,
                len,
                xs.device(),
                xs.dtype(),
            )?)
        };
        for (layer, cache) in self.layers.iter().zip(state.layers.iter_mut()) {
            xs = layer.forward(&xs, mask.as_ref(), cache)?;
        }
        // The last position of each row: a strided (B, hidden) view at prefill when B > 1, which
        // cuBLAS would reject as a GEMM operand (post-LN configs feed it to project_out or the
        // head directly). One small copy; a no-op when L = 1.
        let mut last = xs.narrow(1, len - 1, 1)?.squeeze(1)?.contiguous()?;
        if let Some(norm) = &self.final_layer_norm {
            last = norm.forward(&last)?;
        }
        if let Some(p) = &self.project_out {
            last = p.forward(&last)?;
        }
        self.lm_head.forward(&last)
    }

    /// Prefill: image queries + prompt embeddings at once; `pads[b]` leading positions of row b
    /// are padding. The KV cache is sized for `new_tokens` more positions.
    pub fn prefill(
        &self,
        inputs_embeds: &Tensor,
        pads: Vec<usize>,
        new_tokens: usize,
    ) -> Result<(Tensor, OptState)> {
        let expected = (inputs_embeds.dim(1)? + new_tokens).min(self.max_positions);
        let mut state = OptState {
            layers: (0..self.layers.len())
                .map(|_| LayerCache::with_expected_len(expected))
                .collect(),
            pads,
        };
        let logits = self.forward(inputs_embeds, &mut state)?;
        Ok((logits, state))
    }

    /// One decoding step for the ids (B,) just chosen, a u32 tensor on the model's device.
    pub fn step(&self, ids: &Tensor, state: &mut OptState) -> Result<Tensor> {
        let embeds = self.embed(&ids.unsqueeze(1)?)?;
        self.forward(&embeds, state)
    }
}
