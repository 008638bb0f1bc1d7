//! A weight source that invents tensors of whatever shape the model asks for, so benchmarks
//! can run the real architectures (e.g. blip2-opt-2.7b) without the checkpoint.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

struct RandomBackend;

impl SimpleBackend for RandomBackend {
    fn get(
        &self,
        shape: Shape,
        _name: &str,
        hint: Init,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        match hint {
            // Norm scales: keep them at one so activations stay in range.
            Init::Const(1.0) => Tensor::ones(shape, dtype, device),
            // Weights and biases: small normal values, as transformers' initialiser.
            _ => Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(dtype),
        }
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _device: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // Heads are tied to the embeddings, as in the released OPT checkpoints; a separate
        // `lm_head` only for T5 (Flan-T5 stores one).
        !(name.ends_with("lm_head.weight") && name.contains("decoder") || name.ends_with("q_bias"))
    }
}

pub fn var_builder(dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomBackend), dtype, device.clone())
}
