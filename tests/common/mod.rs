//! Shared helpers for the parity tests: fixture paths and the transformers references.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use gstblip2::model::{DeviceChoice, EarlyStopping, GenerationParams};
use serde_json::Value;

/// The checkout the tests read fixtures from: `CARGO_MANIFEST_DIR` as cargo sets it when it
/// runs the tests, else the one the binary was built in. (scripts/gpu_check.sh runs the test
/// binaries on another machine, without cargo, and sets it to the copy there.)
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// The device the model tests run on: `GST_BLIP2_TEST_DEVICE` (`cpu`, `cuda:N`), CPU when
/// unset. scripts/gpu_check.sh sets `cuda:0` to run the parity, batch, dtype and device tests
/// on the GPU.
pub fn test_device() -> DeviceChoice {
    match std::env::var("GST_BLIP2_TEST_DEVICE") {
        Ok(name) => name
            .parse()
            .unwrap_or_else(|e| panic!("GST_BLIP2_TEST_DEVICE: {e}")),
        Err(_) => DeviceChoice::Cpu,
    }
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// A fresh, empty folder for files a test writes (unique per process and name). The one
/// temp-dir helper of the tests (tests/gst_common re-exports it).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gstblip2-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A private copy of a fixture snapshot that a test may break; removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn of(model: &str, tag: &str) -> Self {
        let dir = scratch(&format!("{model}-{tag}"));
        for entry in std::fs::read_dir(model_dir(model)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// Rewrites the JSON file `file` of the copy through `edit`.
    pub fn edit_json(&self, file: &str, edit: impl FnOnce(&mut Value)) {
        let path = self.path(file);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(path, v.to_string()).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// target/<profile>/examples/NAME, built by `cargo test` alongside the tests.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    profile.join("examples").join(name)
}

/// A finished child process's stdout then stderr, for assertions and failure messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn image_path(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

pub const MODELS: [&str; 3] = ["opt-tiny", "opt-tiny-sharded-f16", "t5-tiny"];

/// One generation case recorded by scripts/gen_fixtures.py.
pub struct Case {
    pub name: String,
    pub images: Vec<String>,
    pub prompt: String,
    pub params: GenerationParams,
    pub input_ids: Vec<u32>,
    pub token_ids: Vec<Vec<u32>>,
    /// Greedy cases: the smallest top-1 minus top-2 score over all steps (beam cases: the
    /// first step's), as scripts/gen_fixtures.py measured it.
    pub min_greedy_margin: Option<f64>,
    pub text: Vec<String>,
}

pub struct Reference {
    pub cases: Vec<Case>,
    pub tensors: HashMap<String, Tensor>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn reference(model: &str) -> Reference {
    let dir = fixtures().join("reference");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{model}.json"))).unwrap())
            .unwrap();
    let cases = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let p = &c["params"];
            let early_stopping = match &p["early_stopping"] {
                Value::Bool(true) => EarlyStopping::Always,
                Value::String(s) if s == "never" => EarlyStopping::Never,
                _ => EarlyStopping::Heuristic,
            };
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                images: c["images"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_string())
                    .collect(),
                prompt: c["prompt"].as_str().unwrap().to_string(),
                params: GenerationParams {
                    max_new_tokens: p["max_new_tokens"].as_u64().unwrap() as usize,
                    min_new_tokens: p["min_new_tokens"].as_u64().unwrap() as usize,
                    num_beams: p["num_beams"].as_u64().unwrap() as usize,
                    length_penalty: p["length_penalty"].as_f64().unwrap(),
                    early_stopping,
                    repetition_penalty: p["repetition_penalty"].as_f64().unwrap(),
                    eos_token_id: p
                        .get("eos_token_id")
                        .and_then(|v| v.as_u64())
                        .map(|v| v as u32),
                    ..GenerationParams::default()
                },
                input_ids: ids(&c["input_ids"][0]),
                min_greedy_margin: c["min_greedy_margin"].as_f64(),
                token_ids: c["token_ids"].as_array().unwrap().iter().map(ids).collect(),
                text: c["text"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect(),
            }
        })
        .collect();
    let tensors =
        candle_core::safetensors::load(dir.join(format!("{model}.safetensors")), &Device::Cpu)
            .unwrap();
    Reference { cases, tensors }
}

impl Reference {
    /// transformers' pixel values for the case's images, stacked (B, 3, S, S).
    pub fn pixels(&self, images: &[String]) -> Tensor {
        let list: Vec<Tensor> = images
            .iter()
            .map(|i| self.tensors[&format!("pixel_values.{i}")].clone())
            .collect();
        Tensor::stack(&list, 0).unwrap()
    }
}

/// Largest absolute difference, wherever the two tensors live.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let f32_on_cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
    };
    (f32_on_cpu(a) - f32_on_cpu(b))
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
