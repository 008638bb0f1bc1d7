//! Broken model folders and devices at the element level: the background load after
//! `set_state(Ready)` posts a bus ERROR that names the file, the problem and the property (never
//! a panic); missing preprocessor settings load with a bus WARNING. The model-level versions are
//! in `load_errors.rs`.

mod gst_common;

use std::path::Path;

use gst::prelude::*;
use gst_common::{Scratch, init, model_dir};

/// What one NULL→READY attempt (and the background load it starts) posted.
#[derive(Debug)]
struct Attempt {
    /// The model loaded.
    ok: bool,
    /// `error text (debug)` of each ERROR message.
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn try_ready(model: &Path, device: &str) -> Attempt {
    init();
    let el = gst::ElementFactory::make("blip2caption")
        .property("model", model.to_str().unwrap())
        .property("device", device)
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    // The state change itself only starts the load.
    assert_eq!(
        el.set_state(gst::State::Ready),
        Ok(gst::StateChangeSuccess::Success)
    );
    let mut ok = false;
    let mut errors = vec![];
    let mut warnings = vec![];
    // Until the load is complete, or its error is posted.
    while let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::Error(e) => {
                errors.push(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            gst::MessageView::Warning(w) => {
                warnings.push(format!("{} ({:?})", w.error(), w.debug()))
            }
            gst::MessageView::Progress(p) if p.get().0 == gst::ProgressType::Complete => {
                ok = true;
                break;
            }
            _ => (),
        }
    }
    el.set_state(gst::State::Null).unwrap();
    Attempt {
        ok,
        errors,
        warnings,
    }
}

/// The load fails with exactly one error naming `file` and saying `words`.
fn assert_fails(model: &Path, file: &Path, words: &str) {
    let a = try_ready(model, "cpu");
    assert!(!a.ok, "{} loaded although it is broken", model.display());
    assert_eq!(a.errors.len(), 1, "{a:?}");
    let e = &a.errors[0];
    assert!(
        e.contains(&file.display().to_string()),
        "{e:?} should name {}",
        file.display()
    );
    assert!(
        e.to_lowercase().contains(words),
        "{e:?} should say {words:?}"
    );
    assert!(
        e.contains("property `model`"),
        "{e:?} should name the property"
    );
}

#[test]
fn missing_and_empty_folders() {
    let missing = std::env::temp_dir().join("gstblip2-faults-no-such-folder");
    let a = try_ready(&missing, "cpu");
    assert!(!a.ok);
    assert_eq!(a.errors.len(), 1, "{a:?}");
    assert!(
        a.errors[0].contains(&missing.display().to_string()),
        "{a:?}"
    );

    let empty = Scratch::of("opt-tiny", "empty");
    for entry in std::fs::read_dir(&empty.0).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_fails(&empty.0, &empty.path("config.json"), "no such file");
}

#[test]
fn broken_config() {
    let s = Scratch::of("opt-tiny", "noconfig");
    std::fs::remove_file(s.path("config.json")).unwrap();
    assert_fails(&s.0, &s.path("config.json"), "no such file");

    let s = Scratch::of("opt-tiny", "badjson");
    std::fs::write(s.path("config.json"), "{ not json").unwrap();
    assert_fails(&s.0, &s.path("config.json"), "not valid json");

    let s = Scratch::of("opt-tiny", "modeltype");
    s.edit_json("config.json", |v| v["model_type"] = "llava".into());
    assert_fails(&s.0, &s.path("config.json"), "model_type");

    let s = Scratch::of("opt-tiny", "family");
    s.edit_json("config.json", |v| {
        v["text_config"]["model_type"] = "llama".into()
    });
    assert_fails(&s.0, &s.path("config.json"), "\"llama\" is not supported");
}

#[test]
fn broken_weights() {
    let s = Scratch::of("opt-tiny-sharded-f16", "shard");
    std::fs::remove_file(s.path("model-00003-of-00006.safetensors")).unwrap();
    assert_fails(&s.0, &s.path("model-00003-of-00006.safetensors"), "missing");

    let s = Scratch::of("opt-tiny", "truncated");
    let bytes = std::fs::read(s.path("model.safetensors")).unwrap();
    std::fs::write(s.path("model.safetensors"), &bytes[..bytes.len() * 3 / 4]).unwrap();
    assert_fails(&s.0, &s.path("model.safetensors"), "safetensors");

    let s = Scratch::of("opt-tiny", "corrupt");
    std::fs::write(
        s.path("model.safetensors"),
        b"\xff\xff\xff\xff\x00\x00\x00\x00{",
    )
    .unwrap();
    assert_fails(&s.0, &s.path("model.safetensors"), "safetensors");

    // The config and the stored tensors disagree: the error names the tensor and the shapes.
    let s = Scratch::of("opt-tiny", "shape");
    s.edit_json("config.json", |v| v["num_query_tokens"] = 5.into());
    assert_fails(&s.0, &s.path("model.safetensors"), "query_tokens");
}

#[test]
fn broken_tokenizer() {
    let s = Scratch::of("opt-tiny", "notok");
    std::fs::remove_file(s.path("tokenizer.json")).unwrap();
    assert_fails(&s.0, &s.path("tokenizer.json"), "missing");

    let s = Scratch::of("opt-tiny", "badtok");
    std::fs::write(s.path("tokenizer.json"), "[1, 2").unwrap();
    assert_fails(&s.0, &s.path("tokenizer.json"), "tokenizer");
}

#[test]
fn missing_preprocessor_loads_with_a_warning() {
    let s = Scratch::of("opt-tiny", "nopre");
    let _ = std::fs::remove_file(s.path("preprocessor_config.json"));
    std::fs::remove_file(s.path("processor_config.json")).unwrap();
    let a = try_ready(&s.0, "cpu");
    assert!(a.ok, "{a:?}");
    assert!(a.errors.is_empty(), "{a:?}");
    assert_eq!(a.warnings.len(), 1, "{a:?}");
    let w = &a.warnings[0];
    assert!(
        w.contains("preprocessor_config.json") && w.contains("defaults"),
        "{w}"
    );
    assert!(w.contains(&s.0.display().to_string()), "{w}");

    // The intact fixture posts no warning at all.
    let a = try_ready(&model_dir("opt-tiny"), "cpu");
    assert!(
        a.ok && a.warnings.is_empty() && a.errors.is_empty(),
        "{a:?}"
    );
}

#[test]
fn contradictory_preprocessor_is_an_error() {
    let s = Scratch::of("opt-tiny", "badsize");
    s.edit_json("processor_config.json", |v| {
        v["image_processor"]["size"] = serde_json::json!({"height": 17, "width": 17})
    });
    assert_fails(&s.0, &s.path("processor_config.json"), "size");
}

/// Documented choice: a CUDA device that is not there is an error naming the property (no
/// silent fallback to CPU, which would be orders of magnitude slower than asked for).
#[test]
fn absent_cuda_device_is_an_error() {
    let a = try_ready(&model_dir("opt-tiny"), "cuda:7");
    assert!(!a.ok, "{a:?}");
    assert_eq!(a.errors.len(), 1, "{a:?}");
    assert!(a.errors[0].contains("cuda:7"), "{a:?}");
    assert!(a.errors[0].contains("property `device`"), "{a:?}");
}
