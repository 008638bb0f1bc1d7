//! The language model behind BLIP-2's queries: OPT or Flan-T5, behind one prefill + step
//! interface for the decoding loops.

use candle_core::{Device, Result, Tensor};

use super::generate::Decoder;
use super::linear::Linear;
use super::opt::{Opt, OptState};
use super::t5::{T5, T5State};

pub enum LanguageModel {
    Opt(Opt),
    T5(T5),
}

impl LanguageModel {
    /// Every linear layer, the head included.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        match self {
            Self::Opt(opt) => opt.linears_mut(),
            Self::T5(t5) => t5.linears_mut(),
        }
    }

    /// Runs the language model over each row's image queries and prompt ids, returning the
    /// decoder positioned after the prompt. Prompts of different lengths are padded as
    /// transformers pads them: on the left for OPT (before the image positions), on the right
    /// for T5, with the padding masked out. Caches are sized for `new_tokens` more tokens.
    pub fn prefill(
        &self,
        image_embeds: &Tensor,
        rows: &[Vec<u32>],
        pad_id: u32,
        decoder_start: u32,
        new_tokens: usize,
    ) -> Result<(Tensor, Box<dyn Decoder + '_>)> {
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let padded: Vec<u32> = rows
            .iter()
            .flat_map(|ids| {
                let pad = std::iter::repeat_n(pad_id, longest - ids.len());
                match self {
                    Self::Opt(_) => pad.chain(ids.iter().copied()).collect::<Vec<_>>(),
                    Self::T5(_) => ids.iter().copied().chain(pad).collect(),
                }
            })
            .collect();
        let ids = Tensor::from_vec(padded, (rows.len(), longest), image_embeds.device())?;
        let pads: Vec<usize> = rows.iter().map(|ids| longest - ids.len()).collect();
        Ok(match self {
            Self::Opt(opt) => {
                let text = opt.embed(&ids)?;
                let image = scatter_like_transformers(image_embeds, text.dim(2)?)?;
                let embeds = if pads.iter().all(|&p| p == 0) {
                    Tensor::cat(&[&image, &text], 1)?
                } else {
                    // Row layout [pads, image queries, prompt]: the pad embeddings are masked.
                    let rows = (0..rows.len())
                        .map(|b| {
                            let text = text.get(b)?;
                            let parts = [
                                text.narrow(0, 0, pads[b])?,
                                image.get(b)?,
                                text.narrow(0, pads[b], longest - pads[b])?,
                            ];
                            Tensor::cat(&parts, 0)
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Tensor::stack(&rows, 0)?
                };
                let pads = pads.clone();
                let (logits, state) = opt.prefill(&embeds, pads, new_tokens)?;
                (logits, Box::new(OptDecoder { model: opt, state }))
            }
            Self::T5(t5) => {
                let embeds = Tensor::cat(&[image_embeds, &t5.embed(&ids)?], 1)?;
                let queries = image_embeds.dim(1)?;
                let lens: Vec<usize> = rows.iter().map(|ids| queries + ids.len()).collect();
                let (logits, state) = t5.prefill(&embeds, &lens, decoder_start, new_tokens)?;
                (logits, Box::new(T5Decoder { model: t5, state }))
            }
        })
    }
}

/// transformers joins the queries with `masked_scatter`, which copies the projected queries of the
/// whole batch, flattened, into the image positions in order. With OPT's `word_embed_proj_dim`
/// equal to the hidden size (every released BLIP-2) that is a plain concatenation; when they
/// differ (OPT-350m style `project_in`) it takes the first `B * Q * word_embed_proj_dim` values,
/// so rows bleed into each other. Reproduced as is, for parity.
fn scatter_like_transformers(
    image_embeds: &Tensor,
    embed_dim: usize,
) -> candle_core::Result<Tensor> {
    let (b, q, h) = image_embeds.dims3()?;
    if h == embed_dim {
        return Ok(image_embeds.clone());
    }
    if embed_dim > h {
        candle_core::bail!(
            "word_embed_proj_dim {embed_dim} exceeds the LM hidden size {h}: transformers cannot join the image queries either"
        );
    }
    image_embeds
        .flatten_all()?
        .narrow(0, 0, b * q * embed_dim)?
        .reshape((b, q, embed_dim))
}

struct OptDecoder<'a> {
    model: &'a Opt,
    state: OptState,
}

impl Decoder for OptDecoder<'_> {
    fn step(&mut self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.model.step(ids, &mut self.state)
    }

    fn select_rows(&mut self, rows: &[u32]) -> candle_core::Result<()> {
        self.state.select(rows)
    }

    fn device(&self) -> Device {
        self.model.device()
    }
}

struct T5Decoder<'a> {
    model: &'a T5,
    state: T5State,
}

impl Decoder for T5Decoder<'_> {
    fn step(&mut self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.model.step(ids, &mut self.state)
    }

    fn select_rows(&mut self, rows: &[u32]) -> candle_core::Result<()> {
        self.state.select(rows)
    }

    fn reorder_beams(&mut self, rows: &[u32]) -> candle_core::Result<()> {
        self.state.reorder_beams(rows)
    }

    fn device(&self) -> Device {
        self.model.device()
    }
}
