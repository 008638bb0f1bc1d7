//! The `caption` example is a stable interface: its JSON lines, exit codes and errors.

mod common;

use std::process::Command;

use common::*;

#[test]
fn json_lines_match_the_reference_on_every_fixture() {
    for model in MODELS {
        let reference = reference(model);
        for case in reference
            .cases
            .iter()
            .filter(|c| c.name == "greedy_caption" || c.name == "batch_greedy")
        {
            let mut cmd = Command::new(example_bin("caption"));
            cmd.arg("--model").arg(model_dir(model)).arg("--json");
            cmd.args(["--max-new-tokens", &case.params.max_new_tokens.to_string()]);
            cmd.args(["--prompt", &case.prompt, "--device", "cpu"]);
            for image in &case.images {
                cmd.arg("--image").arg(image_path(image));
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{model}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), case.images.len());
            for (i, line) in lines.iter().enumerate() {
                assert_eq!(
                    line["image"],
                    image_path(&case.images[i]).display().to_string()
                );
                let ids: Vec<u32> = line["token_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                assert_eq!(ids, case.token_ids[i], "{model} {} image {i}", case.name);
                assert_eq!(line["text"], case.text[i].as_str());
                for stage in ["load", "preprocess", "vision", "generate"] {
                    assert!(line["timing_ms"][stage].as_f64().unwrap() >= 0.0, "{stage}");
                }
            }
        }
    }
}

#[test]
fn errors_go_to_stderr_with_a_failing_exit() {
    let out = Command::new(example_bin("caption"))
        .args(["--model", "/nonexistent/blip2", "--image", "x.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/blip2"));

    let out = Command::new(example_bin("caption"))
        .arg("--model")
        .arg(model_dir("opt-tiny"))
        .args(["--image", "/nonexistent.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.png"));

    let out = Command::new(example_bin("caption"))
        .args(["--num-beams", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--num-beams"));
}
