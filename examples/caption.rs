//! Caption images with a BLIP-2 snapshot from the command line.
//!
//! ```text
//! cargo run --release --example caption -- --model DIR|ORG/NAME[@REV] --image PATH [--image PATH ...]
//!     [--prompt TEXT] [--max-new-tokens N] [--min-new-tokens N] [--num-beams N]
//!     [--length-penalty F] [--repetition-penalty F]
//!     [--temperature T --top-k K --top-p P --seed S] [--device cpu|cuda:N] [--dtype f32|f16|bf16|q8_0] [--json]
//! ```
//! A Hugging Face id missing from the hub cache is downloaded first (a progress bar on a
//! terminal); `HF_HUB_OFFLINE=1` never downloads. All images run as one batch; with `--json`
//! each line carries that batch's stage timings.
//! This interface is stable: other tools (and the element's tests) call it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use gstblip2::engine::{self, HubSettings, LoadProgress};
use gstblip2::model::{Blip2, DTypeChoice, DeviceChoice, GenerationParams, RgbImage, Sampling};
use indicatif::{ProgressBar, ProgressStyle};

/// Caption images (or answer a question about them) with BLIP-2.
#[derive(Parser)]
#[command(name = "caption")]
struct Args {
    /// Snapshot folder, or Hugging Face id (org/name, optionally @revision) from the hub cache
    /// or downloaded into it
    #[arg(long)]
    model: String,
    /// Image to caption (repeat for a batch)
    #[arg(long = "image", required = true)]
    images: Vec<PathBuf>,
    /// Text after the image tokens; empty means captioning
    #[arg(long, default_value = "")]
    prompt: String,
    /// At most this many new tokens [default: 20]
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// At least this many new tokens before EOS may end a caption [default: 0]
    #[arg(long)]
    min_new_tokens: Option<usize>,
    /// Beam search with this many beams; 1 is greedy [default: 1]
    #[arg(long)]
    num_beams: Option<usize>,
    /// Beam scores are divided by length^penalty [default: 1.0]
    #[arg(long)]
    length_penalty: Option<f64>,
    /// Penalty for tokens already generated; 1 is none [default: 1.0]
    #[arg(long)]
    repetition_penalty: Option<f64>,
    /// Sample with this temperature instead of decoding greedily
    #[arg(long)]
    temperature: Option<f64>,
    /// Sampling: keep only the K most likely tokens; 0 keeps all
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sampling: keep the smallest set of tokens whose probability reaches P
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Sampling: random seed
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// auto, f32, f16, bf16 or q8_0 (CPU: vision encoder and language model in 8 bits)
    #[arg(long, default_value = "auto")]
    dtype: DTypeChoice,
    /// One JSON line per image on stdout
    #[arg(long)]
    json: bool,
}

impl Args {
    fn params(&self) -> GenerationParams {
        let mut params = GenerationParams::default();
        params.max_new_tokens = self.max_new_tokens.unwrap_or(params.max_new_tokens);
        params.min_new_tokens = self.min_new_tokens.unwrap_or(params.min_new_tokens);
        params.num_beams = self.num_beams.unwrap_or(params.num_beams);
        params.length_penalty = self.length_penalty.unwrap_or(params.length_penalty);
        params.repetition_penalty = self.repetition_penalty.unwrap_or(params.repetition_penalty);
        params.sampling = self.temperature.map(|temperature| Sampling {
            temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        });
        params
    }
}

/// Shows download progress as a bar on a terminal and as one line per file elsewhere;
/// stages as `[load]` lines. `--json` keeps stderr for errors only.
struct Reporter {
    verbose: bool,
    terminal: bool,
    bar: Option<ProgressBar>,
    file_number: usize,
}

impl Reporter {
    fn report(&mut self, event: &LoadProgress) {
        if !self.verbose {
            return;
        }
        match event {
            LoadProgress::Stage(text) => {
                self.finish_bar();
                eprintln!("[load] {text}");
            }
            LoadProgress::Download(d) if self.terminal => {
                let bar = self.bar.get_or_insert_with(|| {
                    let bar = ProgressBar::new(d.total);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg:30!} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} ETA {eta}",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    );
                    bar
                });
                bar.set_message(format!("{} ({}/{})", d.file, d.file_number, d.file_count));
                bar.set_position(d.done);
            }
            LoadProgress::Download(d) => {
                if d.file_number != self.file_number {
                    self.file_number = d.file_number;
                    eprintln!(
                        "[download] {} ({}/{}, {} bytes)",
                        d.file, d.file_number, d.file_count, d.file_total
                    );
                }
            }
        }
    }

    fn finish_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn run(args: Args) -> Result<(), String> {
    let mut reporter = Reporter {
        verbose: !args.json,
        terminal: std::io::stderr().is_terminal(),
        bar: None,
        file_number: 0,
    };
    let mut progress = |event: &LoadProgress| reporter.report(event);
    let dir = engine::resolve_model(&args.model, &HubSettings::from_env(), &mut progress)
        .map_err(|e| e.to_string())?;
    let t = Instant::now(); // load time, without the download
    let model = Blip2::load(&dir, args.device, args.dtype, &mut |stage| {
        progress(&LoadProgress::Stage(stage.to_string()))
    })
    .map_err(|e| e.to_string())?;
    reporter.finish_bar();
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    for warning in model.warnings() {
        eprintln!("warning: {warning}");
    }
    let images = args
        .images
        .iter()
        .map(|p| RgbImage::open(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let (captions, timings) = model
        .caption_timed(&images, &args.prompt, &args.params())
        .map_err(|e| e.to_string())?;
    for (path, caption) in args.images.iter().zip(&captions) {
        if args.json {
            println!(
                "{{\"image\": {}, \"text\": {}, \"token_ids\": {:?}, \"timing_ms\": {{\"load\": {:.3}, \"preprocess\": {:.3}, \"vision\": {:.3}, \"generate\": {:.3}}}}}",
                json_string(&path.display().to_string()),
                json_string(&caption.text),
                caption.token_ids,
                load_ms,
                timings.preprocess_ms,
                timings.vision_ms,
                timings.generate_ms
            );
        } else {
            println!("{}: {}", path.display(), caption.text);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caption: {e}");
            ExitCode::FAILURE
        }
    }
}
