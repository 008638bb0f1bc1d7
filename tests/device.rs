//! The model on `GST_BLIP2_TEST_DEVICE` (CPU by default; scripts/gpu_check.sh sets `cuda:0`):
//! greedy ties, one model used from two threads, and the element's pipeline, each compared
//! with the CPU's float32 results, which the parity tests tie to transformers.

mod gst_common;

use std::time::Duration;

use candle_core::{DType, Tensor};
use gst::prelude::*;
use gst_common::common;
use gstblip2::model::generate::{first_max_index, greedy_ids};
use gstblip2::model::{
    Blip2, DTypeChoice, DeviceChoice, GenerationParams, RgbImage, resolve_device,
};

fn load(model: &str, device: DeviceChoice) -> Blip2 {
    Blip2::load(
        &common::model_dir(model),
        device,
        DTypeChoice::F32,
        &mut |_| {},
    )
    .unwrap()
}

/// Equal maxima pick the lowest index (torch.argmax) on the test device, in f32 and half.
#[test]
fn greedy_ties_pick_the_lowest_index_on_the_test_device() {
    let device = resolve_device(common::test_device()).unwrap();
    let vocab = 3000;
    // Row r: maxima at r*7+5, 1500 and 2999; a larger vocabulary than one CUDA block.
    let rows: Vec<f32> = (0..4)
        .flat_map(|r| {
            (0..vocab).map(move |i| {
                if i == r * 7 + 5 || i == 1500 || i == vocab - 1 {
                    4.0
                } else {
                    ((i * 31 + r) % 97) as f32 / 97.0
                }
            })
        })
        .collect();
    let logits = Tensor::from_vec(rows, (4, vocab), &device).unwrap();
    let index = Tensor::arange(0u32, vocab as u32, &device).unwrap();
    let want: Vec<u32> = (0..4).map(|r| r * 7 + 5).collect();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let logits = logits.to_dtype(dtype).unwrap();
        let got = greedy_ids(&logits, &index).unwrap();
        assert_eq!(got.to_vec1::<u32>().unwrap(), want, "{dtype:?}");
        let got = first_max_index(&logits, &index).unwrap();
        assert_eq!(got.to_vec1::<u32>().unwrap(), want, "{dtype:?}");
    }
}

/// The element's situation: the model is loaded on one thread and captions on another. On
/// CUDA both must use the device's one stream (see `model::device`); the tokens equal the CPU's.
#[test]
fn model_loaded_on_one_thread_captions_on_another() {
    let image = RgbImage::open(&common::image_path("chelsea.png")).unwrap();
    let params = GenerationParams::default();
    for model in common::MODELS {
        let want = load(model, DeviceChoice::Cpu)
            .caption(std::slice::from_ref(&image), "", &params)
            .unwrap();
        let loaded = std::thread::spawn(move || load(model, common::test_device()))
            .join()
            .unwrap();
        let image = image.clone();
        let params = params.clone();
        let got = std::thread::spawn(move || {
            let first = loaded.caption(std::slice::from_ref(&image), "", &params);
            // A second model on the same device shares its stream and keeps working.
            let again = load(model, common::test_device());
            assert!(again.device().same_device(loaded.device()));
            (
                first.unwrap(),
                again.caption(&[image], "", &params).unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(got.0, want, "{model}");
        assert_eq!(got.1, want, "{model}");
    }
}

/// A frame of `image` as GStreamer lays out RGB (rows padded to 4 bytes).
fn frame(image: &RgbImage, info: &gst_video::VideoInfo, pts_s: u64) -> gst::Buffer {
    let stride = info.stride()[0] as usize;
    let mut data = vec![0u8; info.size()];
    for (y, row) in image.data.chunks(image.width * 3).enumerate() {
        data[y * stride..y * stride + row.len()].copy_from_slice(row);
    }
    let mut buffer = gst::Buffer::from_mut_slice(data);
    let b = buffer.get_mut().unwrap();
    b.set_pts(gst::ClockTime::from_seconds(pts_s));
    b.set_duration(gst::ClockTime::SECOND);
    buffer
}

/// The element on the test device (loading on the state-change thread, captioning on the
/// engine's worker thread) gives every frame the CPU model's caption.
#[test]
fn element_captions_on_the_test_device() {
    gst_common::init();
    let image = RgbImage::open(&common::image_path("chelsea.png")).unwrap();
    for model in ["opt-tiny", "t5-tiny"] {
        let want = load(model, DeviceChoice::Cpu)
            .caption(
                std::slice::from_ref(&image),
                "",
                &GenerationParams::default(),
            )
            .unwrap()
            .remove(0)
            .text;
        // The element removes control characters from answers and trims them (this random
        // model makes a form feed); the model's text is as it is.
        let want: String = want
            .chars()
            .filter(|&c| c >= ' ' || c == '\n' || c == '\t')
            .collect();
        let want = want.trim();
        let p = gst_common::pipeline(&format!(
            "appsrc name=src format=time ! blip2caption model={} device={} dtype=f32 \
             ! fakesink sync=false",
            common::model_dir(model).display(),
            gst_common::test_device()
        ));
        let info = gst_video::VideoInfo::builder(
            gst_video::VideoFormat::Rgb,
            image.width as u32,
            image.height as u32,
        )
        .fps(gst::Fraction::new(1, 1))
        .build()
        .unwrap();
        let src = p
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        src.set_caps(Some(&info.to_caps().unwrap()));
        for s in 0..3 {
            src.push_buffer(frame(&image, &info, s)).unwrap();
        }
        src.end_of_stream().unwrap();
        let run = gst_common::run_to_eos(&p, Duration::from_secs(120));
        assert!(run.errors.is_empty(), "{model}: {:?}", run.errors);
        let texts: Vec<&str> = run
            .captions
            .iter()
            .map(|c| c.get::<&str>("text").unwrap())
            .collect();
        assert_eq!(texts, vec![want; 3], "{model}");
    }
}
