//! Parity with transformers' Blip2ForConditionalGeneration on the committed tiny checkpoints.
//! References come from scripts/gen_fixtures.py.

mod common;

use common::*;
use gstblip2::model::{Blip2, DTypeChoice, DeviceChoice, GenerationParams, RgbImage};

fn load(model: &str) -> Blip2 {
    Blip2::load(
        &model_dir(model),
        DeviceChoice::Cpu,
        DTypeChoice::F32,
        &mut |_| {},
    )
    .unwrap()
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

/// f16 and bf16 (the GPU dtypes; T5 keeps `wo` in f32 and promotes its residual stream as
/// transformers does) give the reference's greedy tokens. Not asserted for the ill-conditioned
/// post-LN `opt-tiny-sharded-f16`, whose float32 logits already carry 5e-4 of rounding error:
/// in f16 its greedy path departs after 7 tokens.
#[test]
fn half_precision_keeps_greedy_tokens() {
    for model in ["opt-tiny", "t5-tiny"] {
        let reference = reference(model);
        for dtype in [DTypeChoice::F16, DTypeChoice::BF16] {
            let blip2 =
                Blip2::load(&model_dir(model), DeviceChoice::Cpu, dtype, &mut |_| {}).unwrap();
            for case in reference
                .cases
                .iter()
                .filter(|c| c.name.starts_with("greedy_"))
            {
                let (captions, _) = blip2
                    .caption_pixels(&reference.pixels(&case.images), &case.prompt, &case.params)
                    .unwrap();
                assert_eq!(
                    captions[0].token_ids, case.token_ids[0],
                    "{model} {dtype} {}",
                    case.name
                );
            }
        }
    }
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
