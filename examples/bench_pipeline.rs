//! Pipeline benchmark: recorded video through `blip2caption` in complete mode, captions per
//! second at several `max-in-flight` windows, with peak RSS (and peak device memory on CUDA).
//!
//! ```text
//! cargo run --release --example bench_pipeline -- [--preset mid-opt | --model DIR]
//!     [--frames 64] [--in-flight 1,4,8,32] [--max-batch 32] [--new-tokens 20]
//!     [--width 640 --height 480] [--interval-ms 0] [--device cpu] [--runs 1]
//! ```
//!
//! The source is file-like: `videotestsrc` (not live, so as fast as the pipeline takes it) with
//! a moving pattern. Every sampled frame is captioned with exactly `--new-tokens` tokens
//! (min = max), so each window does the same work. A preset builds a model with random weights
//! and the real shapes (docs/benchmarks.md, Pipeline); it is injected under a made-up path the
//! element loads like a snapshot. Prints one JSON object.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use gst::prelude::*;
use gstblip2::engine;
use gstblip2::model::{Blip2, DTypeChoice, DeviceChoice, presets};

#[derive(Parser)]
#[command(name = "bench_pipeline")]
struct Args {
    /// Random-weight model with a released shape (mid-opt, small-opt, blip2-opt-2.7b, ...)
    #[arg(long, default_value = "mid-opt", conflicts_with = "model")]
    preset: String,
    /// A snapshot folder or Hugging Face id instead of a preset
    #[arg(long)]
    model: Option<String>,
    /// Frames of video per run
    #[arg(long, default_value_t = 64)]
    frames: u32,
    /// `max-in-flight` values to measure, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,32")]
    in_flight: Vec<u32>,
    /// `max-batch` of the element
    #[arg(long, default_value_t = 32)]
    max_batch: u32,
    /// Tokens generated per caption (min-new-tokens = max-new-tokens)
    #[arg(long, default_value_t = 20)]
    new_tokens: u32,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
    /// Sampling interval in ms (0: every frame is captioned)
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// auto, cpu, cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Runs per window; the best is reported
    #[arg(long, default_value_t = 1)]
    runs: u32,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of this process so far (user + system), in seconds. /proc reports it in USER_HZ
/// ticks, which Linux fixes at 100 per second.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) in parentheses.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Device memory in use on GPU 0 (MiB), from nvidia-smi; `None` without one.
fn device_mib() -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            "-i",
            "0",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Samples RSS (and device memory) every 20 ms until stopped; returns the peaks.
struct Peaks {
    stop: Arc<AtomicBool>,
    rss: Arc<AtomicU64>,
    device: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Peaks {
    fn start(cuda: bool) -> Self {
        let (stop, rss, device) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, r, d) = (stop.clone(), rss.clone(), device.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                r.fetch_max(rss_kib(), Ordering::Relaxed);
                // nvidia-smi is slow to start: every 10th tick.
                if cuda
                    && n.is_multiple_of(10)
                    && let Some(mib) = device_mib()
                {
                    d.fetch_max(mib, Ordering::Relaxed);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            rss,
            device,
            thread,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        (
            self.rss.load(Ordering::Relaxed),
            self.device.load(Ordering::Relaxed),
        )
    }
}

struct RunResult {
    seconds: f64,
    cpu_seconds: f64,
    captions: u64,
    frames_out: u64,
    peak_rss_kib: u64,
    peak_device_mib: u64,
    mean_batch: f64,
}

fn run_once(args: &Args, model: &str, in_flight: u32, cuda: bool) -> Result<RunResult, String> {
    let interval = args.interval_ms * 1_000_000;
    let desc = format!(
        "videotestsrc num-buffers={frames} pattern=ball \
         ! video/x-raw,format=I420,width={w},height={h},framerate=30/1 \
         ! blip2caption name=c model=\"{model}\" device={device} mode=complete \
           interval={interval} max-in-flight={in_flight} max-batch={batch} \
           min-new-tokens={tokens} max-new-tokens={tokens} \
         ! fakesink name=v sync=false",
        frames = args.frames,
        w = args.width,
        h = args.height,
        device = args.device,
        batch = args.max_batch,
        tokens = args.new_tokens,
    );
    let p = gst::parse::launch(&desc)
        .map_err(|e| format!("{desc}: {e}"))?
        .downcast::<gst::Pipeline>()
        .unwrap();
    let bus = p.bus().unwrap();
    // The model is loaded (or shared from the previous run) before the clock starts.
    p.set_state(gst::State::Ready).map_err(|e| e.to_string())?;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(600)) {
        match msg.view() {
            gst::MessageView::Progress(m)
                if matches!(
                    m.get().0,
                    gst::ProgressType::Complete | gst::ProgressType::Error
                ) =>
            {
                break;
            }
            gst::MessageView::Error(e) => return Err(e.error().to_string()),
            _ => (),
        }
    }
    let frames_out = Arc::new(AtomicU64::new(0));
    let counter = frames_out.clone();
    p.by_name("v")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    let peaks = Peaks::start(cuda);
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    p.set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let mut captions = 0u64;
    let mut batch_sum = 0u64;
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                let _ = p.set_state(gst::State::Null);
                return Err(format!("{} ({:?})", e.error(), e.debug()));
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == gstblip2::MESSAGE_NAME) {
                    captions += 1;
                    batch_sum += s.get::<u32>("batch-size").unwrap_or(1) as u64;
                }
            }
            _ => (),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu_seconds() - cpu_start;
    let (peak_rss_kib, peak_device_mib) = peaks.finish();
    let _ = p.set_state(gst::State::Null);
    // The mean of each caption's batch size: what a caption shared its model call with.
    let mean_batch = if captions > 0 {
        batch_sum as f64 / captions as f64
    } else {
        0.0
    };
    Ok(RunResult {
        seconds,
        cpu_seconds,
        captions,
        frames_out: frames_out.load(Ordering::Relaxed),
        peak_rss_kib,
        peak_device_mib,
        mean_batch,
    })
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    gst::init().map_err(|e| e.to_string())?;
    gstblip2::plugin_register_static().map_err(|e| e.to_string())?;
    let device: DeviceChoice = args.device.parse().map_err(|e| format!("{e}"))?;
    let cuda = !matches!(device, DeviceChoice::Cpu) && device_mib().is_some();

    // Hold the model for all runs, so every window uses the same loaded weights.
    let (model, _keep) = match &args.model {
        Some(m) => (m.clone(), None),
        None => {
            let config = presets::preset(&args.preset)
                .ok_or_else(|| format!("unknown preset {}", args.preset))?
                .map_err(|e| e.to_string())?;
            let blip2 =
                Blip2::random(config, device, DTypeChoice::Auto).map_err(|e| e.to_string())?;
            let path = format!("/bench-pipeline/{}", args.preset);
            let captioner: Arc<dyn engine::Captioner> = Arc::new(blip2);
            engine::register_captioner(&path, captioner.clone());
            (path, Some(captioner))
        }
    };

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = Vec::new();
    for &k in &args.in_flight {
        let mut best: Option<RunResult> = None;
        for _ in 0..args.runs.max(1) {
            let r = run_once(&args, &model, k, cuda)?;
            if best.as_ref().is_none_or(|b| r.seconds < b.seconds) {
                best = Some(r);
            }
        }
        let r = best.expect("at least one run");
        eprintln!(
            "max-in-flight {k:>3}: {:.2} captions/s ({} captions in {:.1} s, {:.1} s CPU), \
             peak RSS {} MiB",
            r.captions as f64 / r.seconds,
            r.captions,
            r.seconds,
            r.cpu_seconds,
            r.peak_rss_kib / 1024
        );
        rows.push((k, r));
    }
    let base = rows
        .first()
        .map(|(_, r)| r.captions as f64 / r.seconds)
        .unwrap_or(1.0);
    let base_cpu = rows
        .first()
        .map(|(_, r)| r.captions as f64 / r.cpu_seconds)
        .unwrap_or(1.0);
    let results: Vec<serde_json::Value> = rows
        .iter()
        .map(|(k, r)| {
            let cps = r.captions as f64 / r.seconds;
            serde_json::json!({
                "max_in_flight": k,
                "captions": r.captions,
                "frames_out": r.frames_out,
                "seconds": (r.seconds * 1000.0).round() / 1000.0,
                "captions_per_s": (cps * 1000.0).round() / 1000.0,
                "speedup_vs_first": (cps / base * 100.0).round() / 100.0,
                // Captions per CPU-second: what the same work costs whatever else runs on the
                // machine (a shared machine makes wall-clock ratios noisy).
                "cpu_seconds": (r.cpu_seconds * 10.0).round() / 10.0,
                "captions_per_cpu_s": (r.captions as f64 / r.cpu_seconds * 1000.0).round() / 1000.0,
                "cpu_speedup_vs_first": (r.captions as f64 / r.cpu_seconds / base_cpu * 100.0).round() / 100.0,
                "mean_batch": (r.mean_batch * 100.0).round() / 100.0,
                "peak_rss_mib": r.peak_rss_kib / 1024,
                "peak_device_mib": cuda.then_some(r.peak_device_mib),
            })
        })
        .collect();
    let report = serde_json::json!({
        "model": args.model.clone().unwrap_or(format!("preset {}", args.preset)),
        "device": args.device,
        "threads": threads,
        "frames": args.frames,
        "size": format!("{}x{} I420", args.width, args.height),
        "interval_ms": args.interval_ms,
        "new_tokens": args.new_tokens,
        "max_batch": args.max_batch,
        "results": results,
    });
    println!("{report}");
    Ok(())
}
