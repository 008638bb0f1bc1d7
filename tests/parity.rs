//! Parity with transformers' Blip2ForConditionalGeneration on the committed tiny checkpoints.
//! References come from scripts/gen_fixtures.py. The model runs on `GST_BLIP2_TEST_DEVICE`
//! (CPU by default; scripts/gpu_check.sh sets `cuda:0`): f32 on a GPU must give the CPU's tokens.

mod common;

use common::*;
use gstblip2::model::{Blip2, DTypeChoice, GenerationParams, RgbImage};

fn load(model: &str) -> Blip2 {
    load_as(model, DTypeChoice::F32)
}

fn load_as(model: &str, dtype: DTypeChoice) -> Blip2 {
    Blip2::load(&model_dir(model), test_device(), dtype, &mut |_| {}).unwrap()
}

#[test]
fn prompt_ids_match_blip2_processor() {
    for model in MODELS {
        let blip2 = load(model);
        for case in reference(model).cases {
            assert_eq!(
                blip2.input_ids(&case.prompt).unwrap(),
                case.input_ids,
                "{model} {}",
                case.name
            );
        }
    }
}

/// First-step logits within 1e-4 of transformers. The float32 reference carries its own rounding
/// error (measured against transformers' float64 forward pass): on the post-LN, scaled-up
/// `opt-tiny-sharded-f16` it reaches 5e-4, so the bound is 1e-4 plus that error, both against the
/// float32 reference and against the float64 truth. On the other fixtures the error is ~1e-6.
#[test]
fn first_step_logits_match() {
    for model in MODELS {
        let blip2 = load(model);
        let reference = reference(model);
        let mut checked = 0;
        for case in &reference.cases {
            let Some(expected) = reference.tensors.get(&format!("logits.{}", case.name)) else {
                continue;
            };
            let truth = &reference.tensors[&format!("logits_f64.{}", case.name)]
                .to_dtype(candle_core::DType::F32)
                .unwrap();
            let logits = blip2
                .first_step_logits(&reference.pixels(&case.images), &case.prompt)
                .unwrap();
            let reference_error = max_abs_diff(expected, truth);
            let diff = max_abs_diff(&logits, truth);
            // Shown with --nocapture: the margins behind the bounds below.
            eprintln!(
                "{model} {}: |ours - f64| {diff:.2e}, |ours - f32 ref| {:.2e}, |f32 ref - f64| {reference_error:.2e}",
                case.name,
                max_abs_diff(&logits, expected)
            );
            assert!(
                diff < 1e-4 + reference_error,
                "{model} {}: logits differ from float64 by {diff} (f32 reference error {reference_error})",
                case.name
            );
            let diff = max_abs_diff(&logits, expected);
            assert!(
                diff < 1e-4 + reference_error,
                "{model} {}: logits differ from transformers f32 by {diff} (its own error {reference_error})",
                case.name
            );
            checked += 1;
        }
        assert!(checked >= 3, "{model}: only {checked} logits references");
    }
}

/// Every recorded case (greedy, beam, batch, repetition penalty, EOS, min tokens), fed with
/// transformers' own pixel values so only the model and the decoding are compared.
#[test]
fn generated_tokens_match_from_reference_pixels() {
    for model in MODELS {
        let blip2 = load(model);
        let reference = reference(model);
        for case in &reference.cases {
            let (captions, _) = blip2
                .caption_pixels(&reference.pixels(&case.images), &case.prompt, &case.params)
                .unwrap();
            let ids: Vec<Vec<u32>> = captions.iter().map(|c| c.token_ids.clone()).collect();
            assert_eq!(ids, case.token_ids, "{model} {}", case.name);
            let text: Vec<String> = captions.iter().map(|c| c.text.clone()).collect();
            assert_eq!(text, case.text, "{model} {}", case.name);
        }
    }
}

/// The strided-GEMM fault: at prefill the last position of each row is a strided view of the
/// batch; the post-LN fixture (no final layer norm, `project_out`) feeds it straight into a
/// GEMM, which cuBLAS rejects when the batch has more than one row. Every GEMM of the language
/// model applies cuBLAS's layout rule on the CPU too (`model::linear`), so the CPU runs this
/// case through the same checks as a GPU.
#[test]
fn post_ln_batch_goes_through_cublas_layouts() {
    let model = "opt-tiny-sharded-f16";
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir(model).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["text_config"]["do_layer_norm_before"], false);
    let blip2 = load(model);
    let reference = reference(model);
    let case = reference
        .cases
        .iter()
        .find(|c| c.name == "batch_greedy")
        .unwrap();
    assert!(case.images.len() > 1);
    let (captions, _) = blip2
        .caption_pixels(&reference.pixels(&case.images), &case.prompt, &case.params)
        .unwrap();
    let ids: Vec<Vec<u32>> = captions.into_iter().map(|c| c.token_ids).collect();
    assert_eq!(ids, case.token_ids);
}

#[test]
fn pixel_values_match_processor() {
    for model in MODELS {
        let blip2 = load(model);
        let reference = reference(model);
        let names: Vec<String> = reference
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix("pixel_values.").map(str::to_string))
            .collect();
        assert!(names.len() >= 4);
        for name in names {
            let image = RgbImage::open(&image_path(&name)).unwrap();
            let ours = blip2.pixel_values(&[image]).unwrap().squeeze(0).unwrap();
            let diff = max_abs_diff(&ours, &reference.tensors[&format!("pixel_values.{name}")]);
            assert!(diff < 1e-5, "{model} {name}: pixel values differ by {diff}");
        }
    }
}

/// The whole path from PNG files to tokens.
#[test]
fn captions_from_image_files_match() {
    for model in MODELS {
        let blip2 = load(model);
        for case in reference(model).cases {
            let images: Vec<RgbImage> = case
                .images
                .iter()
                .map(|i| RgbImage::open(&image_path(i)).unwrap())
                .collect();
            let captions = blip2.caption(&images, &case.prompt, &case.params).unwrap();
            let ids: Vec<Vec<u32>> = captions.into_iter().map(|c| c.token_ids).collect();
            assert_eq!(ids, case.token_ids, "{model} {}", case.name);
        }
    }
}

/// A batch gives each image the caption it gets alone. (Not for opt-tiny-sharded-f16: its
/// word_embed_proj_dim != hidden_size makes transformers mix rows across the batch, see
/// `scatter_like_transformers`.)
#[test]
fn batch_equals_single() {
    for model in ["opt-tiny", "t5-tiny"] {
        let blip2 = load(model);
        let reference = reference(model);
        for case in reference.cases.iter().filter(|c| c.images.len() > 1) {
            let pixels = reference.pixels(&case.images);
            let (batch, _) = blip2
                .caption_pixels(&pixels, &case.prompt, &case.params)
                .unwrap();
            for (i, name) in case.images.iter().enumerate() {
                let single = reference.pixels(std::slice::from_ref(name));
                let (alone, _) = blip2
                    .caption_pixels(&single, &case.prompt, &case.params)
                    .unwrap();
                assert_eq!(alone[0], batch[i], "{model} {} image {name}", case.name);
            }
        }
    }
}

#[test]
fn sampling_is_seeded_and_bounded() {
    let blip2 = load("opt-tiny");
    let image = RgbImage::open(&image_path("chelsea.png")).unwrap();
    let params = GenerationParams {
        max_new_tokens: 8,
        sampling: Some(gstblip2::model::Sampling {
            temperature: 1.0,
            top_k: 50,
            top_p: 0.9,
            seed: 7,
        }),
        ..GenerationParams::default()
    };
    let a = blip2
        .caption(std::slice::from_ref(&image), "", &params)
        .unwrap();
    let b = blip2
        .caption(std::slice::from_ref(&image), "", &params)
        .unwrap();
    assert_eq!(a, b, "same seed, same tokens");
    assert_eq!(a[0].token_ids.len(), 8);
    let vocab = 801;
    assert!(a[0].token_ids.iter().all(|&t| t < vocab));
}

/// f16 and bf16, the GPU dtypes (T5 keeps `wo` in f32 and promotes its residual stream as
/// transformers does). The references are float32, so what half precision can promise is
/// bounded by its own rounding: on these fixtures its first-step logits sit up to ~10 (f16)
/// and ~45 (bf16) units of the dtype's epsilon times the largest logit away from the float64
/// truth (measured; most of it is the rounding of weights and inputs). That is asserted with
/// headroom, and the greedy tokens are asserted where the reference's smallest top-1 margin
/// (`min_greedy_margin`) exceeds twice the measured error, so a rounding cannot swap the top
/// two. Not for the ill-conditioned post-LN `opt-tiny-sharded-f16`, whose float32 logits
/// already carry 5e-4 of rounding error. (Token equality with transformers' own half-precision
/// run is checked on a GPU by scripts/gpu_check.sh.)
#[test]
fn half_precision_stays_within_its_rounding() {
    let mut tokens_checked = 0;
    for model in ["opt-tiny", "t5-tiny"] {
        let reference = reference(model);
        for (dtype, eps, units) in [
            (DTypeChoice::F16, 2f32.powi(-11), 16.0),
            (DTypeChoice::BF16, 2f32.powi(-8), 64.0),
        ] {
            let blip2 = load_as(model, dtype);
            for case in &reference.cases {
                let Some(truth) = reference.tensors.get(&format!("logits_f64.{}", case.name))
                else {
                    continue;
                };
                let pixels = reference.pixels(&case.images);
                let logits = blip2.first_step_logits(&pixels, &case.prompt).unwrap();
                let scale = max_abs_diff(truth, &truth.zeros_like().unwrap());
                let err = max_abs_diff(&logits, truth);
                eprintln!(
                    "{model} {dtype} {}: |ours - f64| {err:.2e} = {:.1} eps * max|logit|",
                    case.name,
                    err / (eps * scale)
                );
                assert!(
                    err <= units * eps * scale,
                    "{model} {dtype} {}: first-step logits {err} from float64",
                    case.name
                );
                let margin = case
                    .min_greedy_margin
                    .expect("greedy cases record a margin");
                if margin > 2.0 * err as f64 {
                    let (captions, _) = blip2
                        .caption_pixels(&pixels, &case.prompt, &case.params)
                        .unwrap();
                    let ids: Vec<Vec<u32>> = captions.into_iter().map(|c| c.token_ids).collect();
                    assert_eq!(ids, case.token_ids, "{model} {dtype} {}", case.name);
                    tokens_checked += 1;
                    eprintln!("{model} {dtype} {}: tokens checked", case.name);
                }
            }
        }
    }
    // 6 on the CPU when this was written: 5 in f16, 1 in bf16.
    assert!(
        tokens_checked >= 5,
        "only {tokens_checked} half-precision token checks"
    );
}

/// Different prompts in one batch (padded and masked as transformers pads them: left for OPT,
/// right for T5) give each row what it gets alone, greedy and beam.
#[test]
fn mixed_prompt_batch_equals_single_runs() {
    let prompts = [
        "",
        "Question: what is in the picture? Answer:",
        "a photo of",
    ];
    let names = ["chelsea.png", "astronaut.png", "coffee_rgba.png"];
    let images: Vec<RgbImage> = names
        .iter()
        .map(|n| RgbImage::open(&image_path(n)).unwrap())
        .collect();
    for model in ["opt-tiny", "t5-tiny"] {
        let blip2 = load(model);
        for num_beams in [1, 3] {
            let params = GenerationParams {
                max_new_tokens: 8,
                num_beams,
                ..GenerationParams::default()
            };
            let batch = blip2.caption_each(&images, &prompts, &params).unwrap();
            for i in 0..images.len() {
                let alone = blip2.caption(&images[i..=i], prompts[i], &params).unwrap();
                assert_eq!(batch[i], alone[0], "{model} beams {num_beams} row {i}");
            }
        }
    }
}

/// f16 and bf16 against transformers' own half-precision greedy tokens, computed on the same GPU
/// by scripts/half_reference.py (`GST_BLIP2_HALF_REFERENCE` names its output; without it the
/// test fails). Only in CUDA builds: on a CPU the two implementations' half-precision kernels
/// differ too much to promise equal tokens. scripts/gpu_check.sh runs it on the GPU once
/// transformers has made the file there. Asserted for opt-tiny and t5-tiny; the ill-conditioned
/// post-LN fixture is reported only.
#[cfg(feature = "cuda")]
#[test]
fn half_precision_matches_transformers_on_this_device() {
    let path = std::env::var("GST_BLIP2_HALF_REFERENCE")
        .expect("GST_BLIP2_HALF_REFERENCE names scripts/half_reference.py's output");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for model in MODELS {
        let reference = reference(model);
        for (dtype, key) in [(DTypeChoice::F16, "f16"), (DTypeChoice::BF16, "bf16")] {
            let blip2 = load_as(model, dtype);
            let expected = &json["results"][model][key];
            for case in &reference.cases {
                let Some(want) = expected.get(&case.name) else {
                    continue;
                };
                let want: Vec<Vec<u32>> = serde_json::from_value(want.clone()).unwrap();
                let (captions, _) = blip2
                    .caption_pixels(&reference.pixels(&case.images), &case.prompt, &case.params)
                    .unwrap();
                let got: Vec<Vec<u32>> = captions.into_iter().map(|c| c.token_ids).collect();
                let same = got == want;
                eprintln!(
                    "{model} {key} {}: {}",
                    case.name,
                    if same { "same tokens" } else { "DIFFERENT" }
                );
                if !same && model != "opt-tiny-sharded-f16" {
                    mismatches.push(format!("{model} {key} {}: {got:?} != {want:?}", case.name));
                }
                compared += 1;
            }
        }
    }
    assert!(compared >= 20, "only {compared} cases in {path}");
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
