//! What applications read of an answer: the `Blip2CaptionMeta` on video buffers and the
//! `blip2-caption` bus message, both built from one [`Answer`] so their fields cannot drift.
//!
//! One meta per buffer holds every answer in its `answers` array, so Python's
//! `buffer.get_custom_meta("Blip2CaptionMeta")` (which finds only the first meta of a name)
//! reaches them all, and a second `blip2caption` downstream appends to the meta instead of
//! adding another one. Each answer names the element and prompt that produced it.

use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use super::{MESSAGE_NAME, META_NAME};

/// Name of each structure in the meta's `answers` array.
pub const ANSWER_NAME: &str = "blip2-answer";

/// One answer to one prompt about one sampled frame.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// Name of the `blip2caption` element that produced it.
    pub element: &'a str,
    /// The `model` property: a snapshot folder or a Hugging Face id.
    pub model: &'a str,
    pub prompt: &'a str,
    pub text: &'a str,
    /// The analysed frame's PTS, running time and stream time (`None` outside the segment).
    pub pts: gst::ClockTime,
    pub running_time: Option<gst::ClockTime>,
    pub stream_time: Option<gst::ClockTime>,
    /// How long the caption is meant to show (to the next sample), when known.
    pub duration: Option<gst::ClockTime>,
    /// Tokens generated (including the end-of-sequence token when one was produced).
    pub tokens: u32,
    /// Wall-clock time of the model call that produced it, and how many frames that call
    /// captioned together.
    pub inference_time: Duration,
    pub batch_size: u32,
}

/// A time as GStreamer structures carry it: guint64 nanoseconds, `GST_CLOCK_TIME_NONE`
/// (`u64::MAX`) when unknown.
fn ns(t: Option<gst::ClockTime>) -> u64 {
    t.map_or(u64::MAX, gst::ClockTime::nseconds)
}

impl Answer<'_> {
    /// The fields, in the order gst-inspect, the docs and `gst-launch-1.0 -m` show them.
    fn fill(&self, builder: gst::structure::Builder) -> gst::structure::Builder {
        builder
            .field("element", self.element)
            .field("prompt", self.prompt)
            .field("text", self.text)
            .field("pts", self.pts.nseconds())
            .field("running-time", ns(self.running_time))
            .field("stream-time", ns(self.stream_time))
            .field("duration", ns(self.duration))
            .field("model", self.model)
            .field("tokens", self.tokens)
            .field("inference-time", self.inference_time.as_nanos() as u64)
            .field("batch-size", self.batch_size)
    }

    /// The answer as one entry of the meta's `answers` array.
    pub fn to_structure(&self) -> gst::Structure {
        self.fill(gst::Structure::builder(ANSWER_NAME)).build()
    }

    /// The `blip2-caption` element message's structure.
    pub fn to_message(&self) -> gst::Structure {
        self.fill(gst::Structure::builder(MESSAGE_NAME)).build()
    }
}

/// Adds `answer` to the buffer's `Blip2CaptionMeta`, creating the meta if the buffer has none.
pub fn attach(buffer: &mut gst::BufferRef, answer: &Answer) -> Result<(), glib::BoolError> {
    let entry = answer.to_structure().to_send_value();
    if let Ok(mut meta) = gst::meta::CustomMeta::from_mut_buffer(buffer, META_NAME) {
        let s = meta.mut_structure();
        let mut answers = s.get::<gst::Array>("answers").unwrap_or_default();
        answers.append_value(entry);
        s.set("answers", answers);
        return Ok(());
    }
    let mut meta = gst::meta::CustomMeta::add(buffer, META_NAME)?;
    meta.mut_structure()
        .set("answers", gst::Array::from_values([entry]));
    Ok(())
}

/// Every answer in the buffer's `Blip2CaptionMeta`, in the order they were added.
pub fn answers(buffer: &gst::BufferRef) -> Vec<gst::Structure> {
    let Ok(meta) = gst::meta::CustomMeta::from_buffer(buffer, META_NAME) else {
        return Vec::new();
    };
    let Ok(array) = meta.structure().get::<gst::Array>("answers") else {
        return Vec::new();
    };
    array
        .iter()
        .filter_map(|v| v.get::<gst::Structure>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer<'a>(element: &'a str, prompt: &'a str, text: &'a str) -> Answer<'a> {
        Answer {
            element,
            model: "tests/fixtures/models/opt-tiny",
            prompt,
            text,
            pts: gst::ClockTime::from_seconds(2),
            running_time: Some(gst::ClockTime::from_seconds(1)),
            stream_time: None,
            duration: Some(gst::ClockTime::from_mseconds(500)),
            tokens: 7,
            inference_time: Duration::from_millis(42),
            batch_size: 3,
        }
    }

    fn buffer() -> gst::Buffer {
        gst::init().unwrap();
        if !gst::meta::CustomMeta::is_registered(META_NAME) {
            gst::meta::CustomMeta::register(META_NAME, &[]);
        }
        gst::Buffer::new()
    }

    /// How many `Blip2CaptionMeta` the buffer has (removing them from a copy one by one).
    fn count_metas(buffer: &gst::BufferRef) -> usize {
        let mut copy = buffer.copy();
        let mut n = 0;
        while let Ok(meta) = gst::meta::CustomMeta::from_mut_buffer(copy.make_mut(), META_NAME) {
            meta.remove().unwrap();
            n += 1;
        }
        n
    }

    #[test]
    fn message_and_meta_entry_carry_every_field_with_its_type() {
        gst::init().unwrap();
        let a = answer("c1", "Question: what? Answer:", "a cat");
        let m = a.to_message();
        assert_eq!(m.name(), MESSAGE_NAME);
        assert_eq!(m.get::<&str>("element").unwrap(), "c1");
        assert_eq!(m.get::<&str>("prompt").unwrap(), "Question: what? Answer:");
        assert_eq!(m.get::<&str>("text").unwrap(), "a cat");
        assert_eq!(m.get::<u64>("pts").unwrap(), 2_000_000_000);
        assert_eq!(m.get::<u64>("running-time").unwrap(), 1_000_000_000);
        assert_eq!(
            m.get::<u64>("stream-time").unwrap(),
            u64::MAX,
            "unknown = NONE"
        );
        assert_eq!(m.get::<u64>("duration").unwrap(), 500_000_000);
        assert_eq!(
            m.get::<&str>("model").unwrap(),
            "tests/fixtures/models/opt-tiny"
        );
        assert_eq!(m.get::<u32>("tokens").unwrap(), 7);
        assert_eq!(m.get::<u64>("inference-time").unwrap(), 42_000_000);
        assert_eq!(m.get::<u32>("batch-size").unwrap(), 3);
        assert_eq!(m.n_fields(), 11);
        let e = a.to_structure();
        assert_eq!(e.name(), ANSWER_NAME);
        // Same fields, same values: only the name differs.
        assert_eq!(
            e.to_string().replacen(ANSWER_NAME, MESSAGE_NAME, 1),
            m.to_string()
        );
    }

    #[test]
    fn second_answer_joins_the_first_meta() {
        let mut buffer = buffer();
        let b = buffer.make_mut();
        attach(b, &answer("c1", "", "a cat")).unwrap();
        attach(b, &answer("c2", "Question: color? Answer:", "black")).unwrap();
        assert_eq!(count_metas(b), 1);
        let all = answers(b);
        let seen: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|s| {
                (
                    s.get::<&str>("element").unwrap(),
                    s.get::<&str>("prompt").unwrap(),
                    s.get::<&str>("text").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("c1", "", "a cat"),
                ("c2", "Question: color? Answer:", "black")
            ]
        );
    }

    #[test]
    fn answers_survive_a_buffer_copy() {
        let mut buffer = buffer();
        attach(buffer.make_mut(), &answer("c1", "", "a cat")).unwrap();
        let copy = buffer.copy();
        assert_eq!(answers(&copy).len(), 1);
        assert_eq!(answers(&gst::Buffer::new()).len(), 0);
    }
}
