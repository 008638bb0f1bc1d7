//! The text half of `Blip2Processor`: prompt ids laid out as transformers lays them, and
//! decoding of generated ids.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::json_file::read_json;
use super::{Error, Result};

/// Which special tokens the language model expects around a prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptStyle {
    /// OPT: `</s>` (the BOS id) before the prompt.
    BosFirst(u32),
    /// T5: `</s>` (the EOS id) after the prompt.
    EosLast(u32),
}

pub struct PromptCodec {
    tokenizer: Tokenizer,
    path: PathBuf,
    style: PromptStyle,
    clean_up_spaces: bool,
}

impl PromptCodec {
    pub fn load(dir: &Path, style: PromptStyle) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::Tokenizer {
                path,
                message: "tokenizer.json is missing from the model folder".into(),
            });
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            message: format!("cannot load tokenizer: {e}"),
        })?;
        // transformers applies `clean_up_tokenization_spaces` when decoding if the tokenizer
        // config asks for it.
        let config = dir.join("tokenizer_config.json");
        let clean_up_spaces = if config.exists() {
            read_json::<serde_json::Value>(&config)?
                .get("clean_up_tokenization_spaces")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        } else {
            false
        };
        Ok(Self {
            tokenizer,
            path,
            style,
            clean_up_spaces,
        })
    }

    /// Prompt ids with the tokenizer's own special tokens (its post-processor). BLIP-2 needs the
    /// family's marker, so it is added if a tokenizer.json lacks that post-processor.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode prompt {prompt:?}: {e}"),
            })?;
        let mut ids = encoding.get_ids().to_vec();
        match self.style {
            PromptStyle::BosFirst(bos) if ids.first() != Some(&bos) => ids.insert(0, bos),
            PromptStyle::EosLast(eos) if ids.last() != Some(&eos) => ids.push(eos),
            _ => {}
        }
        Ok(ids)
    }

    /// `batch_decode(ids, skip_special_tokens=True)` followed by `.strip()`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self
            .tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot decode ids: {e}"),
            })?;
        let text = if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        };
        Ok(text.trim().to_string())
    }
}

/// transformers' `clean_up_tokenization`: removes spaces before punctuation and contractions.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}
