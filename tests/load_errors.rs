//! Broken snapshots give errors that name the file and the problem, never a panic.

mod common;

use std::path::Path;

use common::Scratch;
use gstblip2::model::{Blip2, DTypeChoice, DeviceChoice, Error};

/// Loads a broken copy: the error it must give.
fn load_error(scratch: &Scratch) -> Error {
    match Blip2::load(&scratch.0, DeviceChoice::Cpu, DTypeChoice::F32, &mut |_| {}) {
        Ok(_) => panic!("{} loaded although it is broken", scratch.0.display()),
        Err(e) => e,
    }
}

fn assert_names(err: &Error, file: &Path, words: &str) {
    let text = err.to_string();
    assert!(
        text.contains(&file.display().to_string()),
        "{text:?} should name {}",
        file.display()
    );
    assert!(
        text.to_lowercase().contains(words),
        "{text:?} should say {words:?}"
    );
}

#[test]
fn missing_folder() {
    let dir = std::env::temp_dir().join("gstblip2-no-such-model");
    let err = Blip2::load(&dir, DeviceChoice::Cpu, DTypeChoice::F32, &mut |_| {})
        .err()
        .unwrap();
    assert_names(&err, &dir, "does not exist");
}

#[test]
fn config_missing_or_invalid() {
    let s = Scratch::of("opt-tiny", "noconfig");
    std::fs::remove_file(s.path("config.json")).unwrap();
    assert_names(&load_error(&s), &s.path("config.json"), "no such file");

    let s = Scratch::of("opt-tiny", "badjson");
    std::fs::write(s.path("config.json"), "{ not json").unwrap();
    assert_names(&load_error(&s), &s.path("config.json"), "not valid json");

    let s = Scratch::of("opt-tiny", "modeltype");
    s.edit_json("config.json", |v| v["model_type"] = "llava".into());
    assert_names(&load_error(&s), &s.path("config.json"), "model_type");

    let s = Scratch::of("opt-tiny", "family");
    s.edit_json("config.json", |v| {
        v["text_config"]["model_type"] = "llama".into()
    });
    assert_names(
        &load_error(&s),
        &s.path("config.json"),
        "\"llama\" is not supported",
    );

    let s = Scratch::of("opt-tiny", "wrongtype");
    s.edit_json("config.json", |v| {
        v["vision_config"]["hidden_size"] = "wide".into()
    });
    assert_names(
        &load_error(&s),
        &s.path("config.json"),
        "vision_config.hidden_size",
    );

    let s = Scratch::of("opt-tiny", "activation");
    s.edit_json("config.json", |v| {
        v["text_config"]["activation_function"] = "quick_gelu".into()
    });
    assert_names(
        &load_error(&s),
        &s.path("config.json"),
        "text_config.activation_function: activation \"quick_gelu\" is not supported",
    );
}

#[test]
fn generation_config_with_a_wrongly_typed_value() {
    for (key, value) in [
        ("max_new_tokens", serde_json::json!("30")),
        ("num_beams", serde_json::json!(2.5)),
        ("early_stopping", serde_json::json!("sometimes")),
    ] {
        let s = Scratch::of("opt-tiny", "genconfig");
        let path = s.path("generation_config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v[key] = value;
        std::fs::write(&path, v.to_string()).unwrap();
        assert_names(&load_error(&s), &path, key);
    }
}

#[test]
fn weights_missing_truncated_or_misshapen() {
    let s = Scratch::of("opt-tiny-sharded-f16", "shard");
    std::fs::remove_file(s.path("model-00002-of-00006.safetensors")).unwrap();
    assert_names(
        &load_error(&s),
        &s.path("model-00002-of-00006.safetensors"),
        "missing",
    );

    let s = Scratch::of("opt-tiny", "truncated");
    let bytes = std::fs::read(s.path("model.safetensors")).unwrap();
    std::fs::write(s.path("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_names(&load_error(&s), &s.path("model.safetensors"), "safetensors");

    let s = Scratch::of("opt-tiny", "garbage");
    std::fs::write(
        s.path("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage",
    )
    .unwrap();
    assert_names(&load_error(&s), &s.path("model.safetensors"), "safetensors");

    let s = Scratch::of("opt-tiny", "noweights");
    std::fs::remove_file(s.path("model.safetensors")).unwrap();
    assert_names(&load_error(&s), &s.0, "no model.safetensors");

    // A config that disagrees with the stored tensors: the error names the tensor and shapes.
    let s = Scratch::of("opt-tiny", "shape");
    s.edit_json("config.json", |v| v["num_query_tokens"] = 7.into());
    let err = load_error(&s);
    assert_names(&err, &s.path("model.safetensors"), "query_tokens");
    assert!(err.to_string().contains("shape"), "{err}");
}

#[test]
fn tokenizer_missing_or_invalid() {
    let s = Scratch::of("t5-tiny", "notok");
    std::fs::remove_file(s.path("tokenizer.json")).unwrap();
    assert_names(&load_error(&s), &s.path("tokenizer.json"), "missing");

    let s = Scratch::of("t5-tiny", "badtok");
    std::fs::write(s.path("tokenizer.json"), "{\"model\": 3}").unwrap();
    assert_names(
        &load_error(&s),
        &s.path("tokenizer.json"),
        "cannot load tokenizer",
    );
}

#[test]
fn missing_preprocessor_settings_fall_back_with_a_warning() {
    let s = Scratch::of("opt-tiny-sharded-f16", "nopre");
    let _ = std::fs::remove_file(s.path("preprocessor_config.json"));
    let _ = std::fs::remove_file(s.path("processor_config.json"));
    let model = Blip2::load(&s.0, DeviceChoice::Cpu, DTypeChoice::F32, &mut |_| {}).unwrap();
    assert_eq!(model.warnings().len(), 1, "{:?}", model.warnings());
}

/// generation_config.json's settings are what transformers' `generate()` falls back to; the
/// model hands them out as its default `GenerationParams` (lengths there count the prompt).
#[test]
fn snapshot_generation_settings_are_the_defaults() {
    use gstblip2::model::{EarlyStopping, GenerationParams, RgbImage};

    let load =
        |s: &Scratch| Blip2::load(&s.0, DeviceChoice::Cpu, DTypeChoice::F32, &mut |_| {}).unwrap();
    let s = Scratch::of("opt-tiny", "gendefaults");
    let plain = load(&s);
    assert_eq!(
        plain.default_generation_params("").unwrap(),
        GenerationParams::default()
    );

    std::fs::write(
        s.path("generation_config.json"),
        r#"{"bos_token_id": 2, "eos_token_id": 202, "pad_token_id": 1, "max_length": 45,
            "min_length": 40, "num_beams": 3, "length_penalty": 0.5,
            "repetition_penalty": 1.3, "early_stopping": true}"#,
    )
    .unwrap();
    let model = load(&s);
    let prompt_len = model.input_ids("").unwrap().len();
    let params = model.default_generation_params("").unwrap();
    assert_eq!(params.max_new_tokens, 45 - prompt_len);
    assert_eq!(params.min_new_tokens, 40 - prompt_len);
    assert_eq!(
        (
            params.num_beams,
            params.length_penalty,
            params.repetition_penalty
        ),
        (3, 0.5, 1.3)
    );
    assert_eq!(params.early_stopping, EarlyStopping::Always);
    // The lengths hold in a real generation: no EOS before min_length, nothing past max_length.
    let image = RgbImage::open(&common::image_path("astronaut.png")).unwrap();
    let caption = &model.caption(&[image], "", &params).unwrap()[0];
    let n = caption.token_ids.len();
    assert!(
        (params.min_new_tokens..=params.max_new_tokens).contains(&n),
        "{n} tokens"
    );

    // max_new_tokens wins over max_length, as in transformers.
    std::fs::write(
        s.path("generation_config.json"),
        r#"{"max_new_tokens": 7, "max_length": 45}"#,
    )
    .unwrap();
    assert_eq!(
        load(&s)
            .default_generation_params("")
            .unwrap()
            .max_new_tokens,
        7
    );
}
