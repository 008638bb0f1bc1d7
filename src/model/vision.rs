//! `vision_model.*`: the ViT-g/14 image encoder (`Blip2VisionModel`).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Activation, LayerNorm, VarBuilder, layer_norm};

use super::config::VisionConfig;
use super::cpu_kernels::{self, AttentionShape, Heads};
use super::linear::{Linear, linear};

/// `vision_model.embeddings`: patch "convolution" (kernel = stride = patch), class token, positions.
struct Embeddings {
    /// Conv weight flattened to (hidden, 3 * patch * patch) so the patchify is one matmul.
    patch_weight: Tensor,
    patch_bias: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    patch_size: usize,
}

impl Embeddings {
    fn new(
        cfg: &VisionConfig,
        patch_size: usize,
        image_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let num_positions = (image_size / patch_size).pow(2) + 1;
        let conv = vb.pp("patch_embedding");
        let patch_weight = conv
            .get((h, 3, patch_size, patch_size), "weight")?
            .reshape((h, 3 * patch_size * patch_size))?;
        Ok(Self {
            patch_weight: patch_weight.t()?.contiguous()?,
            patch_bias: conv.get(h, "bias")?,
            class_embedding: vb.get((1, 1, h), "class_embedding")?,
            position_embedding: vb.get((1, num_positions, h), "position_embedding")?,
            patch_size,
        })
    }

    fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, c, height, width) = pixel_values.dims4()?;
        let p = self.patch_size;
        let (gh, gw) = (height / p, width / p);
        // (B, C, gh, p, gw, p) -> (B, gh, gw, C, p, p): each row is one patch in the conv's
        // (in_channel, kh, kw) weight order.
        let patches = pixel_values
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * gh * gw, c * p * p))?;
        let embeds = patches
            .matmul(&self.patch_weight)?
            .broadcast_add(&self.patch_bias)?
            .reshape((b, gh * gw, ()))?;
        let class = self.class_embedding.expand((b, 1, embeds.dim(2)?))?;
        Tensor::cat(&[&class, &embeds], 1)?.broadcast_add(&self.position_embedding)
    }
}

/// `self_attn`: one fused qkv projection, rows ordered [q; k; v].
struct Attention {
    qkv: Linear,
    projection: Linear,
    num_heads: usize,
    scale: f64,
}

impl Attention {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let qkv_vb = vb.pp("qkv");
        let weight = qkv_vb.get((3 * h, h), "weight")?;
        let bias = if qkv_vb.contains_tensor("bias") {
            Some(qkv_vb.get(3 * h, "bias")?)
        } else if vb.contains_tensor("q_bias") {
            // Older checkpoints store q and v biases apart; k has none.
            let q = vb.get(h, "q_bias")?;
            let v = vb.get(h, "v_bias")?;
            Some(Tensor::cat(&[&q, &q.zeros_like()?, &v], 0)?)
        } else if cfg.qkv_bias {
            // Raise the usual "cannot find tensor" error naming the expected key.
            Some(qkv_vb.get(3 * h, "bias")?)
        } else {
            None
        };
        let head_dim = h / cfg.num_attention_heads;
        Ok(Self {
            qkv: Linear::new(weight, bias),
            projection: linear(h, h, vb.pp("projection"))?,
            num_heads: cfg.num_attention_heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, h) = xs.dims3()?;
        let head_dim = h / self.num_heads;
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((b, n, 3, self.num_heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * self.scale)?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let weights = super::softmax::softmax_f32(&q.matmul(&k.t()?)?)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, h))?;
        self.projection.forward(&out)
    }
}

/// `encoder.layers.N`: pre-LN transformer block; the MLP's activation is `hidden_act` (exact GELU
/// in every released checkpoint).
struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    layer_norm2: LayerNorm,
    act: Activation,
}

impl EncoderLayer {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            layer_norm1: layer_norm(h, cfg.layer_norm_eps, vb.pp("layer_norm1"))?,
            fc1: linear(h, cfg.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: linear(cfg.intermediate_size, h, vb.pp("mlp.fc2"))?,
            layer_norm2: layer_norm(h, cfg.layer_norm_eps, vb.pp("layer_norm2"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if cpu_kernels::applies(xs) {
            return self.forward_cpu(xs);
        }
        let xs = (xs + self.self_attn.forward(&self.layer_norm1.forward(xs)?)?)?;
        let mlp = self
            .fc1
            .forward(&self.layer_norm2.forward(&xs)?)?
            .apply(&self.act)?;
        xs + self.fc2.forward(&mlp)?
    }

    /// The same layer with the f32 CPU kernels: q/k/v are read in place from the fused
    /// projection, and bias, residual and GELU go into the matmul outputs.
    fn forward_cpu(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, h) = xs.dims3()?;
        let attn = &self.self_attn;
        let qkv = cpu_kernels::linear(&self.layer_norm1.forward(xs)?, &attn.qkv, None)?;
        let part = |i: usize| Heads {
            offset: i * h,
            row_stride: 3 * h,
            batch_stride: n * 3 * h,
        };
        let shape = AttentionShape {
            batch: b,
            q_len: n,
            kv_len: n,
            num_heads: attn.num_heads,
            head_dim: h / attn.num_heads,
        };
        let heads = cpu_kernels::attention(
            (&qkv, part(0)),
            (&qkv, part(1)),
            (&qkv, part(2)),
            shape,
            attn.scale as f32,
        )?;
        let xs = cpu_kernels::linear(&heads, &attn.projection, Some(xs))?;
        let normed = self.layer_norm2.forward(&xs)?;
        let mlp = cpu_kernels::linear_activation(&normed, &self.fc1, self.act)?;
        cpu_kernels::linear(&mlp, &self.fc2, Some(&xs))
    }
}

/// `vision_model`: embeddings, encoder layers, post-layernorm over all tokens.
pub struct VisionModel {
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    dtype: DType,
}

impl VisionModel {
    pub fn new(
        cfg: &VisionConfig,
        patch_size: usize,
        image_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::new(cfg, patch_size, image_size, vb.pp("embeddings"))?,
            layers,
            post_layernorm: layer_norm(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("post_layernorm"),
            )?,
            dtype: vb.dtype(),
        })
    }

    /// Every encoder layer's linear layers: attention's qkv and projection, the MLP's two.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.self_attn.qkv,
                    &mut l.self_attn.projection,
                    &mut l.fc1,
                    &mut l.fc2,
                ]
            })
            .collect()
    }

    /// pixel_values (B, 3, S, S) -> image states (B, 1 + patches, hidden) in the model dtype.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let mut xs = self
            .embeddings
            .forward(&pixel_values.to_dtype(self.dtype)?)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        self.post_layernorm.forward(&xs)
    }
}
