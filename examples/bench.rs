//! Benchmark: per-caption latency and throughput of BLIP-2 at several batch sizes.
//!
//! ```text
//! cargo run --release --example bench -- (--preset NAME | --model DIR|ORG/NAME) [--batch 1,8,32]
//!     [--new-tokens 20] [--runs 3] [--device auto|cpu|cuda:N] [--dtype auto|f32|f16|bf16|q8_0]
//! cargo run --release --example bench -- --print-config NAME     # the preset as transformers JSON
//! ```
//! Presets (random weights, real shapes): blip2-opt-2.7b, blip2-opt-6.7b, blip2-flan-t5-xl,
//! small-opt, mid-opt, small-t5 (`--help` lists them). Exactly `--new-tokens` tokens are generated per caption (EOS ignored),
//! greedily. Prints one JSON object. `scripts/bench_hf.py` measures transformers the same way.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use gstblip2::engine::{self, HubSettings, LoadProgress};
use gstblip2::model::{Blip2, DTypeChoice, DeviceChoice, GenerationParams, RgbImage, presets};

/// Per-caption latency and throughput of BLIP-2 at several batch sizes (one JSON object).
#[derive(Parser)]
#[command(name = "bench")]
struct Args {
    /// Random-weight model with a preset's shapes: blip2-opt-2.7b, blip2-opt-6.7b,
    /// blip2-flan-t5-xl, small-opt, mid-opt, small-t5
    #[arg(long, required_unless_present_any = ["model", "print_config"], conflicts_with = "model")]
    preset: Option<String>,
    /// Snapshot folder or Hugging Face id to benchmark instead of a preset
    #[arg(long)]
    model: Option<String>,
    /// Batch sizes, comma-separated; each is measured in turn
    #[arg(long = "batch", value_delimiter = ',', default_value = "1,8,32",
          value_parser = clap::value_parser!(u64).range(1..))]
    batches: Vec<u64>,
    /// New tokens per caption, exactly (EOS ignored)
    #[arg(long, default_value_t = 20)]
    new_tokens: usize,
    /// Timed runs per batch size (after one warm-up); the report gives medians
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// auto, cpu or cuda:N
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// auto, f32, f16, bf16 or q8_0 (CPU: vision encoder and language model in 8 bits)
    #[arg(long, default_value = "auto")]
    dtype: DTypeChoice,
    /// Print the preset as transformers JSON (for scripts/bench_hf.py) and exit
    #[arg(long, value_name = "PRESET", exclusive = true)]
    print_config: Option<String>,
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A deterministic 640x480 test picture (a gradient with texture), so preprocessing does real work.
fn test_image(seed: usize) -> RgbImage {
    let (w, h) = (640, 480);
    let data = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            [
                (x + seed * 7) as u8,
                (y * 2 + seed) as u8,
                ((x ^ y) + seed * 13) as u8,
            ]
        })
        .collect();
    RgbImage::new(w, h, data).expect("valid size")
}

/// Samples the device's used memory (total - free) every 5 ms while alive; the peak is an
/// approximation of the run's peak (the allocator gives no statistics).
struct DeviceMemoryWatch {
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeviceMemoryWatch {
    fn start(device: &candle_core::Device) -> Option<Self> {
        let used = device_used_bytes(device)?;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(used()?));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(u) = used() {
                    p.fetch_max(u, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        Some(Self {
            peak,
            stop,
            thread: Some(thread),
        })
    }

    fn peak_mib(mut self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
    }
}

#[cfg(feature = "cuda")]
fn device_used_bytes(
    device: &candle_core::Device,
) -> Option<impl Fn() -> Option<usize> + Send + 'static> {
    let context = device
        .as_cuda_device()
        .ok()?
        .cuda_stream()
        .context()
        .clone();
    Some(move || {
        context
            .mem_get_info()
            .ok()
            .map(|(free, total)| total - free)
    })
}

#[cfg(not(feature = "cuda"))]
fn device_used_bytes(_device: &candle_core::Device) -> Option<fn() -> Option<usize>> {
    None
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `--model`: a folder, or a Hugging Face id resolved like the element does; progress on stderr.
fn snapshot_dir(model: &str) -> Result<std::path::PathBuf, String> {
    let mut file = 0;
    let mut progress = |p: &LoadProgress| match p {
        LoadProgress::Stage(text) => eprintln!("[load] {text}"),
        LoadProgress::Download(d) if d.file_number != file => {
            file = d.file_number;
            eprintln!("[download] {} ({}/{})", d.file, d.file_number, d.file_count);
        }
        LoadProgress::Download(_) => {}
    };
    engine::resolve_model(model, &HubSettings::from_env(), &mut progress).map_err(|e| e.to_string())
}

fn run(a: Args) -> Result<(), String> {
    if let Some(name) = &a.print_config {
        println!(
            "{}",
            presets::preset_json(name).ok_or_else(|| unknown_preset(name))?
        );
        return Ok(());
    }
    // A hub id is found in (or downloaded into) the hub cache before the load clock starts.
    let snapshot = a.model.as_deref().map(snapshot_dir).transpose()?;
    let t = Instant::now();
    let (model, source) = match (&a.preset, &a.model) {
        (Some(p), _) => {
            let config = presets::preset(p)
                .ok_or_else(|| unknown_preset(p))?
                .map_err(|e| e.to_string())?;
            (
                Blip2::random(config, a.device, a.dtype).map_err(|e| e.to_string())?,
                format!("preset {p} (random weights)"),
            )
        }
        (_, Some(m)) => (
            Blip2::load(snapshot.as_deref().unwrap(), a.device, a.dtype, &mut |_| {})
                .map_err(|e| e.to_string())?,
            format!("model {m}"),
        ),
        _ => unreachable!("clap requires one of --preset and --model"),
    };
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let params = GenerationParams {
        max_new_tokens: a.new_tokens,
        min_new_tokens: a.new_tokens,
        ignore_eos: true,
        ..GenerationParams::default()
    };
    let watch = DeviceMemoryWatch::start(model.device());
    let mut results = Vec::new();
    for batch in a.batches.iter().map(|&b| b as usize) {
        let images: Vec<RgbImage> = (0..batch).map(test_image).collect();
        // Warm-up: first-touch of weights, allocator, kernels.
        model
            .caption_timed(&images, "", &params)
            .map_err(|e| e.to_string())?;
        let (mut total, mut pre, mut vision, mut generate) = (vec![], vec![], vec![], vec![]);
        for _ in 0..a.runs {
            let t = Instant::now();
            let (captions, timings) = model
                .caption_timed(&images, "", &params)
                .map_err(|e| e.to_string())?;
            total.push(t.elapsed().as_secs_f64() * 1e3);
            if captions.iter().any(|c| c.token_ids.len() != a.new_tokens) {
                return Err("a caption did not have exactly --new-tokens tokens".into());
            }
            pre.push(timings.preprocess_ms);
            vision.push(timings.vision_ms);
            generate.push(timings.generate_ms);
        }
        let (total, generate) = (median(total), median(generate));
        results.push(serde_json::json!({
            "batch": batch,
            "batch_ms": total,
            "per_caption_ms": total / batch as f64,
            "captions_per_s": batch as f64 * 1e3 / total,
            "preprocess_ms": median(pre),
            "vision_ms": median(vision),
            "generate_ms": generate,
            "ms_per_token_step": generate / a.new_tokens as f64,
        }));
    }
    let report = serde_json::json!({
        "implementation": "gst-blip2 (candle)",
        "source": source,
        "device": format!("{:?}", model.device()),
        "dtype": format!("{:?}", model.dtype()),
        "quantization": model.quantization().map(|q| format!("{q:?}")),
        "new_tokens": a.new_tokens,
        "runs": a.runs,
        "load_ms": load_ms,
        "peak_host_rss_mib": peak_rss_mib(),
        "peak_device_used_mib": watch.map(DeviceMemoryWatch::peak_mib),
        "results": results,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("serialisable")
    );
    Ok(())
}

fn unknown_preset(name: &str) -> String {
    format!(
        "unknown preset {name:?}: expected one of {}",
        presets::PRESETS.join(", ")
    )
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
