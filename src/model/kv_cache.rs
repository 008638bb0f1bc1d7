//! Per-layer key/value cache shared by the OPT decoder and the T5 decoder.

use candle_core::{Result, Tensor};

/// Keys and values of one attention layer, (batch, heads, seq, head_dim), grown by concatenation.
#[derive(Clone, Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// Appends this step's keys/values and returns the full ones.
    pub fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.kv.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        };
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Keys/values that are computed once (T5 cross-attention) and then only read.
    pub fn get_or_init(
        &mut self,
        init: impl FnOnce() -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        if self.kv.is_none() {
            self.kv = Some(init()?);
        }
        Ok(self.kv.clone().expect("initialised above"))
    }

    pub fn device(&self) -> Option<candle_core::Device> {
        self.kv.as_ref().map(|(k, _)| k.device().clone())
    }

    pub fn len(&self) -> usize {
        self.kv
            .as_ref()
            .map(|(k, _)| k.dim(2).unwrap_or(0))
            .unwrap_or(0)
    }

    /// Keeps the rows named by `indices` (beam search reordering / batch expansion).
    pub fn select(&mut self, indices: &Tensor) -> Result<()> {
        if let Some((k, v)) = self.kv.take() {
            self.kv = Some((k.index_select(indices, 0)?, v.index_select(indices, 0)?));
        }
        Ok(())
    }
}

/// Splits (B, L, heads*head_dim) into (B, heads, L, head_dim), contiguous for matmul.
pub fn split_heads(xs: &Tensor, num_heads: usize) -> Result<Tensor> {
    let (b, l, h) = xs.dims3()?;
    xs.reshape((b, l, num_heads, h / num_heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Inverse of [`split_heads`].
pub fn merge_heads(xs: &Tensor) -> Result<Tensor> {
    let (b, heads, l, d) = xs.dims4()?;
    xs.transpose(1, 2)?.reshape((b, l, heads * d))
}

/// Additive causal mask (L, L): 0 on and below the diagonal, -inf above.
pub fn causal_mask(
    len: usize,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<Tensor> {
    let data: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (len, len), device)?.to_dtype(dtype)
}
