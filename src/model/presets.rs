//! Configurations with the shapes of released BLIP-2 checkpoints, for benchmarks with random
//! weights. Written sparse, as on the hub: omitted keys take transformers' defaults.

use std::path::Path;

use super::Result;
use super::config::Blip2Config;

/// Preset names accepted by [`preset`].
pub const PRESETS: [&str; 6] = [
    "blip2-opt-2.7b",
    "blip2-opt-6.7b",
    "blip2-flan-t5-xl",
    "mid-opt",
    "small-opt",
    "small-t5",
];

fn json(name: &str) -> Option<&'static str> {
    Some(match name {
        "blip2-opt-2.7b" => {
            r#"{"model_type": "blip-2", "num_query_tokens": 32, "image_token_index": 50265,
            "text_config": {"model_type": "opt", "hidden_size": 2560, "ffn_dim": 10240, "num_hidden_layers": 32,
              "num_attention_heads": 32, "word_embed_proj_dim": 2560, "eos_token_id": 50118, "vocab_size": 50272}}"#
        }
        "blip2-opt-6.7b" => {
            r#"{"model_type": "blip-2", "num_query_tokens": 32, "image_token_index": 50265,
            "text_config": {"model_type": "opt", "hidden_size": 4096, "ffn_dim": 16384, "num_hidden_layers": 32,
              "num_attention_heads": 32, "word_embed_proj_dim": 4096, "eos_token_id": 50118, "vocab_size": 50272}}"#
        }
        "blip2-flan-t5-xl" => {
            r#"{"model_type": "blip-2", "num_query_tokens": 32, "image_token_index": 32100,
            "text_config": {"model_type": "t5", "d_model": 2048, "d_kv": 64, "d_ff": 5120, "num_layers": 24,
              "num_heads": 32, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false, "vocab_size": 32128,
              "decoder_start_token_id": 0}}"#
        }
        // The CPU benchmark model (docs/benchmarks.md): a ViT-B/14-sized vision tower at 224 px,
        // the released Q-Former, and OPT-125m's shape.
        "mid-opt" => {
            r#"{"model_type": "blip-2", "num_query_tokens": 32, "image_token_index": 50265,
            "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
            "text_config": {"model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
              "num_attention_heads": 12, "eos_token_id": 50118, "vocab_size": 50272}}"#
        }
        // Small models that run on a CPU in well under a second.
        "small-opt" => {
            r#"{"model_type": "blip-2", "num_query_tokens": 32, "image_token_index": 50265,
            "vision_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6, "num_attention_heads": 6},
            "qformer_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 4, "num_attention_heads": 6},
            "text_config": {"model_type": "opt", "hidden_size": 512, "ffn_dim": 2048, "num_hidden_layers": 6,
              "num_attention_heads": 8, "eos_token_id": 50118, "vocab_size": 50272}}"#
        }
        "small-t5" => {
            r#"{"model_type": "blip-2", "num_query_tokens": 32, "image_token_index": 32100,
            "vision_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6, "num_attention_heads": 6},
            "qformer_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 4, "num_attention_heads": 6},
            "text_config": {"model_type": "t5", "d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 4,
              "num_heads": 8, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false, "vocab_size": 32128,
              "decoder_start_token_id": 0}}"#
        }
        _ => return None,
    })
}

/// The configuration of a preset, with every default filled in.
pub fn preset(name: &str) -> Option<Result<Blip2Config>> {
    json(name).map(|text| {
        let value = serde_json::from_str(text).expect("preset JSON is valid");
        Blip2Config::from_json(value, Path::new(&format!("preset {name}")))
    })
}

/// The preset's JSON, for handing the same configuration to transformers.
pub fn preset_json(name: &str) -> Option<&'static str> {
    json(name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_preset_parses() {
        for name in super::PRESETS {
            let cfg = super::preset(name).unwrap().unwrap();
            assert_eq!(cfg.num_query_tokens, 32, "{name}");
        }
        let opt = super::preset("blip2-opt-2.7b").unwrap().unwrap();
        assert_eq!(
            (opt.vision.hidden_size, opt.vision.num_hidden_layers),
            (1408, 39)
        );
        assert_eq!(opt.image_size / opt.patch_size, 16);
    }
}
