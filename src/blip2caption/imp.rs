//! Pads, properties, events and the chain function of `blip2caption`.
//!
//! Threads: the streaming thread samples, converts and submits frames, and pushes video and
//! events; `text_src` has its own task that pushes what the streaming thread queues for it. The
//! engine's worker runs the model; a load thread loads it after NULL→READY. In realtime mode the
//! streaming thread only collects finished captions as frames pass; in complete mode frames wait
//! inside the element until their sample's caption is back (interruptible by flushes and state
//! changes) and leave in order, the analysed frame with the caption's meta.

mod chain;
mod events;
mod failure;
mod lifecycle;
mod model_slot;
mod output;
mod properties;
mod remote;
mod sampling;
mod state;
mod window;

use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::textqueue::TextQueue;
use crate::engine::Client;
use crate::sync::lock;
use model_slot::ModelSlot;
use properties::Settings;
use state::{State, Stats};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "blip2caption",
        gst::DebugColorFlags::empty(),
        Some("BLIP-2 video captioner"),
    )
});

pub struct Blip2Caption {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    textpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    stats: Mutex<Stats>,
    /// Separate from `state` so waiting for the model never holds the state lock.
    model: Arc<ModelSlot>,
    /// The (min, max) new-token pair last warned about.
    token_warning: Mutex<Option<(u32, u32)>>,
    flow_combiner: Mutex<gst_base::UniqueFlowCombiner>,
    /// The `model` property as it was when the model in use was loaded: answers name it.
    loaded_model: Mutex<String>,
    /// Latency chosen from measured inference time when `latency` is -1.
    auto_latency: Mutex<gst::ClockTime>,
    /// Everything for `text_src`, pushed by that pad's own task.
    text_queue: Arc<TextQueue>,
}

impl Blip2Caption {
    fn client(&self) -> Option<Arc<Client>> {
        self.model.client()
    }

    fn latency(&self) -> gst::ClockTime {
        let ns = lock(&self.settings).latency;
        if ns >= 0 {
            gst::ClockTime::from_nseconds(ns as u64)
        } else {
            *lock(&self.auto_latency)
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for Blip2Caption {
    const NAME: &'static str = "GstBlip2Caption";
    type Type = super::Blip2Caption;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .iterate_internal_links_function(|_pad, parent| {
                // Caps and allocation go to the video src pad only, never to text_src.
                let pads = parent
                    .and_then(|p| p.downcast_ref::<super::Blip2Caption>())
                    .map(|e| vec![e.imp().srcpad.clone()])
                    .unwrap_or_default();
                gst::Iterator::from_vec(pads)
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();

        let src_links = |_pad: &gst::Pad, parent: Option<&gst::Object>| {
            let pads = parent
                .and_then(|p| p.downcast_ref::<super::Blip2Caption>())
                .map(|e| vec![e.imp().sinkpad.clone()])
                .unwrap_or_default();
            gst::Iterator::from_vec(pads)
        };
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .query_function(|pad, parent, query| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .iterate_internal_links_function(src_links)
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();
        let textpad = gst::Pad::builder_from_template(&klass.pad_template("text_src").unwrap())
            .query_function(|pad, parent, query| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .iterate_internal_links_function(src_links)
            .activatemode_function(|pad, parent, mode, active| {
                Blip2Caption::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic activating text_src")),
                    |imp| match mode {
                        gst::PadMode::Push => imp.text_activate(pad, active),
                        _ => Err(gst::loggable_error!(CAT, "text_src only pushes")),
                    },
                )
            })
            .build();

        let mut combiner = gst_base::UniqueFlowCombiner::new();
        combiner.add_pad(&srcpad);
        combiner.add_pad(&textpad);

        Self {
            sinkpad,
            srcpad,
            textpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            stats: Mutex::new(Stats::default()),
            model: Arc::new(ModelSlot::default()),
            token_warning: Mutex::new(None),
            flow_combiner: Mutex::new(combiner),
            loaded_model: Mutex::new(String::new()),
            auto_latency: Mutex::new(gst::ClockTime::ZERO),
            text_queue: Arc::new(TextQueue::default()),
        }
    }
}

impl ObjectImpl for Blip2Caption {
    fn properties() -> &'static [glib::ParamSpec] {
        properties::specs()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        self.set_property_value(value, pspec)
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        self.property_value(pspec)
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
        obj.add_pad(&self.textpad).unwrap();
    }
}

impl GstObjectImpl for Blip2Caption {}

impl ElementImpl for Blip2Caption {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "BLIP-2 video captioner",
                "Filter/Analyzer/Video/Text",
                "Captions sampled video frames with BLIP-2 and passes the video through. \
                 Each answer goes out three ways: timed text on text_src; a 'blip2-caption' \
                 element message; and an entry of the 'answers' array (GstValueArray of \
                 'blip2-answer' structures) in the one Blip2CaptionMeta (GstCustomMeta) of \
                 a video buffer, which further blip2caption elements append to. Answer \
                 fields: element, prompt, text, model (strings); pts, running-time, \
                 stream-time, duration, inference-time (guint64 ns, 18446744073709551615 = \
                 unknown); tokens, batch-size (guint). Example: gst-launch-1.0 -m \
                 filesrc location=clip.mp4 ! decodebin ! blip2caption \
                 model=Salesforce/blip2-opt-2.7b name=c ! fakesink c.text_src ! srtenc ! \
                 filesink location=out.srt",
                "gst-blip2 developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // Every raw format the video converter can unpack: only sampled frames are
            // converted to RGB, the video itself passes untouched.
            let formats = gst_video::VideoFormat::iter_raw().map(|f| f.to_str());
            let video = gst::Caps::builder("video/x-raw")
                .field("format", gst::List::new(formats))
                .field("width", gst::IntRange::new(1, i32::MAX))
                .field("height", gst::IntRange::new(1, i32::MAX))
                .field(
                    "framerate",
                    gst::FractionRange::new(
                        gst::Fraction::new(0, 1),
                        gst::Fraction::new(i32::MAX, 1),
                    ),
                )
                .build();
            let text = gst::Caps::builder("text/x-raw")
                .field("format", gst::List::new(["utf8", "pango-markup"]))
                .build();
            let always = |name, direction, caps: &gst::Caps| {
                gst::PadTemplate::new(name, direction, gst::PadPresence::Always, caps)
                    .expect("valid pad template")
            };
            vec![
                always("sink", gst::PadDirection::Sink, &video),
                always("src", gst::PadDirection::Src, &video),
                always("text_src", gst::PadDirection::Src, &text),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        self.change_state_impl(transition)
    }
}
