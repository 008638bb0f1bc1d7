//! Finding and opening a snapshot's safetensors: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`. Tensors are memory-mapped and cast to the compute dtype as
//! each one is loaded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::error::candle_message;
use super::json_file::read_json;
use super::{Error, Result};

/// The weight files of a snapshot, checked to exist and to parse as safetensors.
pub struct WeightFiles {
    /// The file users should look at when something is wrong: the index, or the single file.
    pub origin: PathBuf,
    pub files: Vec<PathBuf>,
}

impl WeightFiles {
    pub fn find(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (origin, files) = if index.exists() {
            let json: serde_json::Value = read_json(&index)?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Weights {
                    path: index.clone(),
                    message: "no \"weight_map\" object".into(),
                })?;
            let mut names = BTreeSet::new();
            for (tensor, file) in map {
                let file = file.as_str().ok_or_else(|| Error::Weights {
                    path: index.clone(),
                    message: format!("weight_map entry for {tensor} is not a file name"),
                })?;
                names.insert(file.to_string());
            }
            (
                index.clone(),
                names.into_iter().map(|n| dir.join(n)).collect::<Vec<_>>(),
            )
        } else if single.exists() {
            (single.clone(), vec![single])
        } else {
            return Err(Error::Weights {
                path: dir.to_path_buf(),
                message: "no model.safetensors or model.safetensors.index.json in the model folder"
                    .into(),
            });
        };
        for file in &files {
            if !file.exists() {
                return Err(Error::Weights {
                    path: file.clone(),
                    message: format!("shard listed in {} is missing", origin.display()),
                });
            }
            // Parse each header on its own so a corrupt or truncated file is named.
            // SAFETY: the file is only read; snapshots are not modified while loaded.
            unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }.map_err(|e| {
                Error::Weights {
                    path: file.clone(),
                    message: format!("not a valid safetensors file: {}", candle_message(&e)),
                }
            })?;
        }
        Ok(Self { origin, files })
    }

    /// A VarBuilder over all files, casting each tensor to `dtype` on `device` as it is read.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        // SAFETY: as above, read-only mapping of files we just validated.
        unsafe { VarBuilder::from_mmaped_safetensors(&self.files, dtype, device) }.map_err(|e| {
            Error::Weights {
                path: self.origin.clone(),
                message: candle_message(&e),
            }
        })
    }
}
