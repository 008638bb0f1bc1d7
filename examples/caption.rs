//! Caption images with a BLIP-2 snapshot from the command line.
//!
//! ```text
//! cargo run --release --example caption -- --model DIR --image PATH [--image PATH ...]
//!     [--prompt TEXT] [--max-new-tokens N] [--min-new-tokens N] [--num-beams N]
//!     [--length-penalty F] [--repetition-penalty F]
//!     [--temperature T --top-k K --top-p P --seed S] [--device cpu|cuda:N] [--dtype f32|f16|bf16] [--json]
//! ```
//! All images run as one batch; with `--json` each line carries that batch's stage timings.
//! This interface is stable: other tools (and the element's tests) call it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use gstblip2::model::{Blip2, DTypeChoice, DeviceChoice, GenerationParams, RgbImage, Sampling};

struct Args {
    model: PathBuf,
    images: Vec<PathBuf>,
    prompt: String,
    params: GenerationParams,
    device: DeviceChoice,
    dtype: DTypeChoice,
    json: bool,
}

const USAGE: &str = "usage: caption --model DIR --image PATH [--image PATH ...] [--prompt TEXT] \
[--max-new-tokens N] [--min-new-tokens N] [--num-beams N] [--length-penalty F] [--repetition-penalty F] \
[--temperature T --top-k K --top-p P --seed S] [--device cpu|cuda:N] [--dtype f32|f16|bf16] [--json]";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut model = None;
    let mut images = Vec::new();
    let mut prompt = String::new();
    let mut params = GenerationParams::default();
    let mut max_new_tokens = None;
    let (mut temperature, mut top_k, mut top_p, mut seed) = (None, 0usize, 1.0f64, 0u64);
    let mut device = DeviceChoice::Auto;
    let mut dtype = DTypeChoice::Auto;
    let mut json = false;
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{flag}: invalid value {v:?}"))
    }
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(args.next().ok_or("--model needs a folder")?)),
            "--image" => images.push(PathBuf::from(args.next().ok_or("--image needs a path")?)),
            "--prompt" => prompt = args.next().ok_or("--prompt needs a text")?,
            "--max-new-tokens" => max_new_tokens = Some(num(&flag, args.next())?),
            "--min-new-tokens" => params.min_new_tokens = num(&flag, args.next())?,
            "--num-beams" => params.num_beams = num(&flag, args.next())?,
            "--length-penalty" => params.length_penalty = num(&flag, args.next())?,
            "--repetition-penalty" => params.repetition_penalty = num(&flag, args.next())?,
            "--temperature" => temperature = Some(num(&flag, args.next())?),
            "--top-k" => top_k = num(&flag, args.next())?,
            "--top-p" => top_p = num(&flag, args.next())?,
            "--seed" => seed = num(&flag, args.next())?,
            "--device" => device = num(&flag, args.next())?,
            "--dtype" => dtype = num(&flag, args.next())?,
            "--json" => json = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let model = model.ok_or_else(|| format!("--model is required\n{USAGE}"))?;
    if images.is_empty() {
        return Err(format!("at least one --image is required\n{USAGE}"));
    }
    params.max_new_tokens = max_new_tokens.unwrap_or(params.max_new_tokens);
    if let Some(temperature) = temperature {
        params.sampling = Some(Sampling {
            temperature,
            top_k,
            top_p,
            seed,
        });
    }
    Ok(Args {
        model,
        images,
        prompt,
        params,
        device,
        dtype,
        json,
    })
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn run(args: Args) -> Result<(), String> {
    let t = Instant::now();
    let verbose = !args.json;
    let model = Blip2::load(&args.model, args.device, args.dtype, &mut |stage| {
        if verbose {
            eprintln!("[load] {stage}");
        }
    })
    .map_err(|e| e.to_string())?;
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
        .caption_timed(&images, &args.prompt, &args.params)
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
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caption: {e}");
            ExitCode::FAILURE
        }
    }
}
