//! Property tests (proptest) over what users and snapshots feed the model: config JSON,
//! processor JSON and images of any size. Nothing may panic; results must be well formed.
//! More cases: PROPTEST_CASES=10000 cargo test --release --test fuzz_inputs

mod common;

use common::scratch;
use gstblip2::model::RgbImage;
use gstblip2::model::config::Blip2Config;
use gstblip2::model::processor::{ImageProcessorConfig, resize_bicubic};
use proptest::prelude::*;
use serde_json::Value;

fn fixture_config() -> Value {
    let path = common::model_dir("opt-tiny").join("config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Any JSON scalar or small container.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Value::from),
        "[a-z_0-9-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every key path of a JSON object, for picking one to replace.
fn key_paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let mut p = prefix.clone();
            p.push(k.clone());
            out.push(p.clone());
            key_paths(child, p, out);
        }
    }
}

fn set_path(v: &mut Value, path: &[String], new: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        cur = cur.get_mut(k).unwrap();
    }
    cur[path.last().unwrap().as_str()] = new;
}

proptest! {
    /// A real config with one value replaced by anything parses or fails cleanly.
    #[test]
    fn config_with_a_mutated_value_never_panics(pick in any::<prop::sample::Index>(), new in json_value()) {
        let mut config = fixture_config();
        let mut paths = Vec::new();
        key_paths(&config, Vec::new(), &mut paths);
        let path = pick.get(&paths).clone();
        set_path(&mut config, &path, new);
        if let Ok(cfg) = Blip2Config::from_json(config, std::path::Path::new("config.json")) {
            prop_assert!(cfg.image_size % cfg.patch_size == 0);
            prop_assert!(cfg.num_query_tokens > 0);
        }
    }

    /// Arbitrary JSON as a whole config: an error or a config, never a panic.
    #[test]
    fn arbitrary_config_json_never_panics(value in json_value()) {
        let _ = Blip2Config::from_json(value, std::path::Path::new("config.json"));
    }

    /// Arbitrary preprocessor settings read from a snapshot folder.
    #[test]
    fn arbitrary_preprocessor_json_never_panics(value in json_value(), size in 1usize..512) {
        let dir = scratch(&format!("fuzz-{:?}", std::thread::current().id()));
        std::fs::write(dir.join("preprocessor_config.json"), value.to_string()).unwrap();
        let result = ImageProcessorConfig::from_snapshot(&dir, size);
        std::fs::remove_dir_all(&dir).unwrap();
        if let Ok((cfg, _)) = result {
            prop_assert!(cfg.height > 0 && cfg.width > 0);
        }
    }

    /// Any image size (including 1x1 and very thin ones) resizes to the model size with finite,
    /// normalised values.
    #[test]
    fn preprocessing_any_size(w in 1usize..300, h in 1usize..300, size in 1usize..64, seed in any::<u8>()) {
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let image = RgbImage::new(w, h, data).unwrap();
        let cfg = ImageProcessorConfig::with_size(size);
        let pixels = cfg.preprocess(&image);
        prop_assert_eq!(pixels.len(), 3 * size * size);
        // (0 - mean) / std .. (1 - mean) / std for the CLIP statistics.
        prop_assert!(pixels.iter().all(|v| v.is_finite() && *v > -1.8 && *v < 2.2));
    }

    /// Resampling a constant image keeps it constant, whatever the sizes.
    #[test]
    fn resize_keeps_constants(w in 1usize..200, h in 1usize..200, dw in 1usize..200, dh in 1usize..200, v in any::<u8>()) {
        let out = resize_bicubic(&vec![v; w * h * 3], w, h, dw, dh);
        prop_assert_eq!(out.len(), dw * dh * 3);
        prop_assert!(out.iter().all(|&x| x == v));
    }
}

#[test]
fn huge_and_tiny_frames() {
    let cfg = ImageProcessorConfig::with_size(32);
    for (w, h) in [(1, 1), (2, 3), (3, 2), (4096, 2160), (1, 4096)] {
        let image = RgbImage::new(w, h, vec![128; w * h * 3]).unwrap();
        assert_eq!(cfg.preprocess(&image).len(), 3 * 32 * 32, "{w}x{h}");
    }
    assert!(RgbImage::new(0, 5, vec![]).is_err());
    assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
}
