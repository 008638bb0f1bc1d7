//! `generation_config.json`: the decoding settings a snapshot ships. transformers' `generate()`
//! starts from them (a value the caller does not pass comes from here, then from
//! `GenerationConfig`'s global defaults), so [`GenerationDefaults::params`] does the same.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::config::{TextConfig, TokenIds};
use super::json_file::read_json_if_present;
use super::{EarlyStopping, GenerationParams, Result, Sampling};

/// The keys of `generation_config.json` this port uses; every one is optional. A value of the
/// wrong type is an error naming the file and the key (not silently ignored).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
struct GenerationConfigFile {
    eos_token_id: Option<TokenIds>,
    pad_token_id: Option<u32>,
    bos_token_id: Option<u32>,
    decoder_start_token_id: Option<u32>,
    max_new_tokens: Option<usize>,
    max_length: Option<usize>,
    min_new_tokens: Option<usize>,
    min_length: Option<usize>,
    num_beams: Option<usize>,
    length_penalty: Option<f64>,
    repetition_penalty: Option<f64>,
    #[serde(deserialize_with = "early_stopping")]
    early_stopping: Option<EarlyStopping>,
    do_sample: Option<bool>,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
}

/// `early_stopping` is `true`, `false` or `"never"` in transformers.
fn early_stopping<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<EarlyStopping>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Word(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Flag(true)) => Ok(Some(EarlyStopping::Always)),
        Some(Raw::Flag(false)) => Ok(Some(EarlyStopping::Heuristic)),
        Some(Raw::Word(w)) if w == "never" => Ok(Some(EarlyStopping::Never)),
        Some(Raw::Word(w)) => Err(serde::de::Error::custom(format!(
            "expected true, false or \"never\", got {w:?}"
        ))),
    }
}

/// What decoding needs from a snapshot: the special ids (from `generation_config.json`, else the
/// text config) and the generation settings it ships, kept as written (`None`: not set).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationDefaults {
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
    pub bos_token_id: Option<u32>,
    pub decoder_start_token_id: u32,
    pub max_new_tokens: Option<usize>,
    /// Total length, prompt included (transformers' `max_length`).
    pub max_length: Option<usize>,
    pub min_new_tokens: Option<usize>,
    /// Total length, prompt included (transformers' `min_length`).
    pub min_length: Option<usize>,
    pub num_beams: Option<usize>,
    pub length_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub early_stopping: Option<EarlyStopping>,
    /// `do_sample: true` with its `temperature`, `top_k`, `top_p` (transformers' defaults 1.0,
    /// 50, 1.0 where unset); `None` for deterministic decoding.
    pub sampling: Option<Sampling>,
}

impl GenerationDefaults {
    /// Reads `dir/generation_config.json` when present; ids it does not set come from the text
    /// config.
    pub fn load(dir: &Path, text: &TextConfig) -> Result<Self> {
        let file = read_json_if_present(&dir.join("generation_config.json"))?;
        Ok(Self::new(file.unwrap_or_default(), text))
    }

    /// Only the text config's ids, no generation settings (models without a snapshot folder).
    pub fn from_text_config(text: &TextConfig) -> Self {
        Self::new(GenerationConfigFile::default(), text)
    }

    /// From the text of a `generation_config.json`; `path` names it in errors.
    #[cfg(test)]
    fn from_json_text(json: &str, text: &TextConfig, path: &Path) -> Result<Self> {
        Ok(Self::new(
            super::json_file::from_json_text(json, path)?,
            text,
        ))
    }

    fn new(file: GenerationConfigFile, text: &TextConfig) -> Self {
        let (text_eos, text_pad, text_bos, start) = match text {
            TextConfig::Opt(c) => (c.eos_token_id.clone(), c.pad_token_id, c.bos_token_id, None),
            TextConfig::T5(c) => (
                c.eos_token_id.clone(),
                c.pad_token_id,
                None,
                c.decoder_start_token_id,
            ),
        };
        let pad = file.pad_token_id.or(text_pad).unwrap_or(0);
        Self {
            eos_token_ids: file
                .eos_token_id
                .or(text_eos)
                .map(|e| e.to_vec())
                .unwrap_or_default(),
            pad_token_id: pad,
            bos_token_id: file.bos_token_id.or(text_bos),
            // T5's decoder starts from the pad id when nothing else is configured.
            decoder_start_token_id: file.decoder_start_token_id.or(start).unwrap_or(pad),
            max_new_tokens: file.max_new_tokens,
            max_length: file.max_length,
            min_new_tokens: file.min_new_tokens,
            min_length: file.min_length,
            num_beams: file.num_beams,
            length_penalty: file.length_penalty,
            repetition_penalty: file.repetition_penalty,
            early_stopping: file.early_stopping,
            sampling: file.do_sample.filter(|&s| s).map(|_| Sampling {
                temperature: file.temperature.unwrap_or(1.0),
                top_k: file.top_k.unwrap_or(50),
                top_p: file.top_p.unwrap_or(1.0),
                seed: 0,
            }),
        }
    }

    /// The settings transformers' `generate()` uses when the caller passes none, for a prompt of
    /// `input_len` ids as transformers counts them: a decoder-only model's whole `input_ids`
    /// (image positions included), an encoder-decoder's decoder ids (the start id: 1).
    /// `max_positions` caps the default length as transformers does (`max_position_embeddings`).
    ///
    /// Lengths: `max_new_tokens` wins over `max_length` (a total, so the prompt is subtracted);
    /// with neither, 20 new tokens. Likewise `min_new_tokens` over `min_length`. An error when
    /// the snapshot's `max_length` leaves no room for a new token (transformers refuses too).
    pub fn params(
        &self,
        input_len: usize,
        max_positions: Option<usize>,
    ) -> std::result::Result<GenerationParams, String> {
        let global = GenerationParams::default();
        let max_new_tokens = match (self.max_new_tokens, self.max_length) {
            (Some(n), _) => n,
            (None, Some(total)) if total <= input_len => {
                return Err(format!(
                    "generation_config.json sets max_length {total}, but the prompt already has \
                     {input_len} positions"
                ));
            }
            (None, Some(total)) => total - input_len,
            (None, None) => match max_positions {
                Some(p) => global.max_new_tokens.min(p.saturating_sub(input_len)),
                None => global.max_new_tokens,
            },
        };
        let min_new_tokens = match (self.min_new_tokens, self.min_length) {
            (Some(n), _) => n,
            (None, Some(total)) => total.saturating_sub(input_len),
            (None, None) => global.min_new_tokens,
        };
        Ok(GenerationParams {
            max_new_tokens,
            min_new_tokens,
            num_beams: self.num_beams.unwrap_or(global.num_beams),
            length_penalty: self.length_penalty.unwrap_or(global.length_penalty),
            early_stopping: self.early_stopping.unwrap_or(global.early_stopping),
            repetition_penalty: self.repetition_penalty.unwrap_or(global.repetition_penalty),
            sampling: self.sampling.clone(),
            // The snapshot's own EOS ids (`eos_token_ids`) apply when no override is given.
            eos_token_id: None,
            ignore_eos: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{OptConfig, T5Config};

    fn opt() -> TextConfig {
        TextConfig::Opt(OptConfig::default())
    }

    #[test]
    fn without_a_file_the_text_config_ids_and_global_defaults_apply() {
        let d = GenerationDefaults::from_text_config(&opt());
        assert_eq!(
            (d.eos_token_ids.clone(), d.pad_token_id, d.bos_token_id),
            (vec![2], 1, Some(2))
        );
        assert_eq!(
            d.params(33, Some(2048)).unwrap(),
            GenerationParams::default()
        );
        // The default 20 new tokens are capped by the position table, as in transformers.
        assert_eq!(d.params(40, Some(50)).unwrap().max_new_tokens, 10);
    }

    #[test]
    fn snapshot_settings_become_the_defaults() {
        let json = r#"{"max_new_tokens": 30, "min_length": 36, "num_beams": 5,
            "length_penalty": -1, "repetition_penalty": 1.5, "early_stopping": "never",
            "eos_token_id": [50118, 2], "pad_token_id": 1, "transformers_version": "5.24.0"}"#;
        let d = GenerationDefaults::from_json_text(json, &opt(), Path::new("g.json")).unwrap();
        assert_eq!(d.eos_token_ids, vec![50118, 2]);
        let p = d.params(33, Some(2048)).unwrap();
        assert_eq!(
            (p.max_new_tokens, p.min_new_tokens, p.num_beams),
            (30, 3, 5)
        );
        assert_eq!((p.length_penalty, p.repetition_penalty), (-1.0, 1.5));
        assert_eq!(p.early_stopping, EarlyStopping::Never);
        assert_eq!(p.sampling, None);
    }

    #[test]
    fn max_length_is_a_total_and_must_leave_room() {
        let d = GenerationDefaults::from_json_text(
            r#"{"max_length": 50, "do_sample": true, "top_k": 0, "early_stopping": true}"#,
            &opt(),
            Path::new("g.json"),
        )
        .unwrap();
        let p = d.params(33, Some(2048)).unwrap();
        assert_eq!(p.max_new_tokens, 17);
        assert_eq!(p.early_stopping, EarlyStopping::Always);
        assert_eq!(
            p.sampling,
            Some(Sampling {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 0
            })
        );
        // An encoder-decoder counts only its decoder start id.
        let t5 = TextConfig::T5(T5Config::default());
        let d5 =
            GenerationDefaults::from_json_text(r#"{"max_length": 50}"#, &t5, Path::new("g.json"))
                .unwrap();
        assert_eq!(d5.params(1, None).unwrap().max_new_tokens, 49);
        let err = d.params(50, Some(2048)).unwrap_err();
        assert!(err.contains("max_length 50"), "{err}");
    }

    #[test]
    fn a_wrongly_typed_value_is_an_error_naming_file_and_key() {
        for (json, key) in [
            (r#"{"max_new_tokens": "20"}"#, "max_new_tokens"),
            (r#"{"num_beams": -1}"#, "num_beams"),
            (r#"{"early_stopping": "sometimes"}"#, "early_stopping"),
            (r#"{"eos_token_id": "2"}"#, "eos_token_id"),
            (r#"{"length_penalty": [1]}"#, "length_penalty"),
        ] {
            let err = GenerationDefaults::from_json_text(json, &opt(), Path::new("dir/g.json"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("dir/g.json: ") && err.contains(key),
                "{json}: {err}"
            );
        }
    }
}
