//! What applications read of each answer: one `Blip2CaptionMeta` per buffer holding every
//! answer (two elements in series included), each naming its element, prompt and model, and
//! the `blip2-caption` message with the same fields; stream time beside running time.

mod gst_common;

use std::time::Duration;

use gst::prelude::*;
use gst_common::*;

const SEC: u64 = 1_000_000_000;

fn str_field<'a>(s: &'a gst::StructureRef, name: &str) -> &'a str {
    s.get::<&str>(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn two_elements_in_series_put_their_answers_in_one_meta() {
    init();
    let a = install("answers-first", Fake::new(0));
    let b = install("answers-second", Fake::new(0));
    let p = pipeline(&format!(
        "videotestsrc num-buffers=3 pattern=white ! video/x-raw,format=RGB,width=8,height=8,framerate=1/1 \
         ! blip2caption name=first model={a} mode=complete \
         ! blip2caption name=second model={b} mode=complete prompt=Q: ! appsink name=v sync=false"
    ));
    let video = collect(&p, "v");
    let run = run_to_eos(&p, Duration::from_secs(20));
    assert!(run.errors.is_empty(), "{:?}", run.errors);

    let video = video.lock().unwrap();
    assert_eq!(video.len(), 3);
    for (i, buffer) in video.iter().enumerate() {
        // One meta, whose only field is the answers array.
        let mut copy = buffer.copy();
        let meta =
            gst::meta::CustomMeta::from_mut_buffer(copy.make_mut(), gstblip2::META_NAME).unwrap();
        assert_eq!(meta.structure().n_fields(), 1);
        assert_eq!(
            meta.structure().get::<gst::Array>("answers").unwrap().len(),
            2
        );
        meta.remove().unwrap();
        assert!(gst::meta::CustomMeta::from_buffer(&copy, gstblip2::META_NAME).is_err());

        let answers = gstblip2::meta_answers(buffer);
        let who: Vec<(&str, &str, &str, &str)> = answers
            .iter()
            .map(|s| {
                (
                    str_field(s, "element"),
                    str_field(s, "prompt"),
                    str_field(s, "text"),
                    str_field(s, "model"),
                )
            })
            .collect();
        assert_eq!(
            who,
            [
                ("first", "", "mean 255", a.as_str()),
                ("second", "Q:", "Q:mean 255", b.as_str()),
            ],
            "frame {i}"
        );
        for s in &answers {
            assert_eq!(s.name(), gstblip2::ANSWER_NAME);
            assert_eq!(u64_field(s, "pts"), i as u64 * SEC);
            assert_eq!(s.get::<u32>("tokens").unwrap(), 2, "the fake's two ids");
            // Each element's three samples went to its model together (`max-in-flight` 8).
            assert_eq!(s.get::<u32>("batch-size").unwrap(), 3);
        }
    }

    // One message per answer, from each element, with the meta's fields.
    assert_eq!(run.captions.len(), 6);
    for element in ["first", "second"] {
        let pts: Vec<u64> = run
            .captions
            .iter()
            .filter(|s| str_field(s, "element") == element)
            .map(|s| u64_field(s, "pts"))
            .collect();
        assert_eq!(pts, [0, SEC, 2 * SEC], "{element}");
    }
    let meta_entry = &gstblip2::meta_answers(&video[1])[1];
    let message = run
        .captions
        .iter()
        .find(|s| str_field(s, "element") == "second" && u64_field(s, "pts") == SEC)
        .unwrap();
    assert_eq!(message.name(), gstblip2::MESSAGE_NAME);
    for (field, value) in meta_entry.iter() {
        // Same fields, same values (inference time included: one model call made both).
        assert_eq!(
            message.value(field).unwrap().serialize().unwrap(),
            value.serialize().unwrap(),
            "{field}"
        );
    }
    assert_eq!(message.n_fields(), meta_entry.n_fields());
}

#[test]
fn stream_time_follows_the_segment_beside_running_time() {
    init();
    let model = install("answers-stream-time", Fake::new(0));
    let el = gst::ElementFactory::make("blip2caption")
        .name("c")
        .property("model", &model)
        .property_from_str("mode", "complete")
        // A window of one: the frame leaves as soon as its answer is back.
        .property_from_str("max-in-flight", "1")
        .build()
        .unwrap();
    let (mut h, _th) = start_harnesses(
        &el,
        "video/x-raw,format=RGB,width=4,height=2,framerate=10/1",
    );
    // Playing from 10 s of a file whose timeline starts at 100 s.
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(gst::ClockTime::from_seconds(10));
    segment.set_time(gst::ClockTime::from_seconds(100));
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    let mut frame = gst::Buffer::from_mut_slice(vec![9u8; 4 * 2 * 3]);
    {
        let f = frame.get_mut().unwrap();
        f.set_pts(gst::ClockTime::from_seconds(10));
        f.set_duration(gst::ClockTime::from_mseconds(100));
    }
    h.push(frame).unwrap();
    let out = h.pull().unwrap();
    let answers = gstblip2::meta_answers(&out);
    assert_eq!(answers.len(), 1);
    let s = &answers[0];
    assert_eq!(u64_field(s, "pts"), 10 * SEC);
    assert_eq!(u64_field(s, "running-time"), 0);
    assert_eq!(u64_field(s, "stream-time"), 100 * SEC);
    assert_eq!(str_field(s, "element"), "c");
    assert!(u64_field(s, "inference-time") > 0);
}
