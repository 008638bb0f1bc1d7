//! Per-layer key/value cache shared by the OPT decoder and the T5 decoder.
//!
//! Keys and values live in buffers allocated once for the expected sequence length; a step
//! writes its new positions in place (`slice_set`, one copy each) and attention reads the
//! filled part through `narrow` (a view, no copy). Growing by concatenation instead would copy
//! the whole cache at every step and allocate twice per layer.

use candle_core::{Result, Tensor};

/// Keys and values of one attention layer, (batch, heads, capacity, head_dim), of which the
/// first `len` positions are filled.
#[derive(Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
    len: usize,
    /// Positions to allocate for at the first append (the prompt plus the new tokens).
    expected: usize,
}

/// Capacity added when an append overflows the buffers (for example a T5 decoder run longer
/// than the expected length): doubling keeps the copies amortised.
fn grown(needed: usize, old: usize) -> usize {
    needed.max(old * 2)
}

impl LayerCache {
    /// An empty cache that allocates room for `expected` positions at the first append.
    pub fn with_expected_len(expected: usize) -> Self {
        Self {
            kv: None,
            len: 0,
            expected,
        }
    }

    /// Writes this step's keys/values (batch, heads, n, head_dim) after the cached ones and
    /// returns views of all of them.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, heads, n, d) = k.dims4()?;
        let needed = self.len + n;
        let capacity = self.kv.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0));
        if needed > capacity {
            let capacity = if self.kv.is_none() {
                needed.max(self.expected)
            } else {
                grown(needed, capacity)
            };
            let new_k = Tensor::zeros((b, heads, capacity, d), k.dtype(), k.device())?;
            let new_v = new_k.zeros_like()?;
            if let Some((old_k, old_v)) = self.kv.take() {
                new_k.slice_set(&old_k, 2, 0)?;
                new_v.slice_set(&old_v, 2, 0)?;
            }
            self.kv = Some((new_k, new_v));
        }
        let (ck, cv) = self.kv.as_ref().expect("allocated above");
        ck.slice_set(&k.contiguous()?, 2, self.len)?;
        cv.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((ck.narrow(2, 0, self.len)?, cv.narrow(2, 0, self.len)?))
    }

    pub fn device(&self) -> Option<candle_core::Device> {
        self.kv.as_ref().map(|(k, _)| k.device().clone())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Keeps the rows named by `indices` (beam search reordering / batch expansion).
    pub fn select(&mut self, indices: &Tensor) -> Result<()> {
        if let Some((k, v)) = self.kv.take() {
            self.kv = Some((k.index_select(indices, 0)?, v.index_select(indices, 0)?));
        }
        Ok(())
    }
}

/// Keys and values computed once from the encoder output (T5 cross-attention), then only read.
#[derive(Default)]
pub struct StaticCache {
    kv: Option<(Tensor, Tensor)>,
}

impl StaticCache {
    pub fn get_or_init(
        &mut self,
        init: impl FnOnce() -> Result<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        if self.kv.is_none() {
            self.kv = Some(init()?);
        }
        Ok(self.kv.clone().expect("initialised above"))
    }

    /// Keeps the rows named by `indices` (batch expansion).
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn step(b: usize, n: usize, start: f32) -> Tensor {
        Tensor::arange(start, start + (b * 2 * n * 3) as f32, &Device::Cpu)
            .unwrap()
            .reshape((b, 2, n, 3))
            .unwrap()
    }

    /// The cache returns exactly what concatenation would, across the growth of its buffers
    /// and a row selection.
    #[test]
    fn appends_equal_concatenation() {
        let mut cache = LayerCache::with_expected_len(4);
        let mut want_k: Option<Tensor> = None;
        for (i, n) in [3usize, 1, 1, 1, 2].into_iter().enumerate() {
            let k = step(2, n, 100.0 * i as f32);
            let v = (&k * 2.0).unwrap();
            let (got_k, got_v) = cache.append(&k, &v).unwrap();
            let wk = match want_k.take() {
                None => k.clone(),
                Some(p) => Tensor::cat(&[&p, &k], 2).unwrap(),
            };
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&got_k), flat(&wk));
            assert_eq!(flat(&got_v), flat(&(&wk * 2.0).unwrap()));
            want_k = Some(wk);
        }
        assert_eq!(cache.len(), 8);
        let rows = Tensor::new(&[1u32, 1, 0], &Device::Cpu).unwrap();
        cache.select(&rows).unwrap();
        let (k, _) = cache.append(&step(3, 1, 1000.0), &step(3, 1, 0.0)).unwrap();
        let want = want_k.unwrap().index_select(&rows, 0).unwrap();
        assert_eq!(
            k.narrow(2, 0, 8)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
