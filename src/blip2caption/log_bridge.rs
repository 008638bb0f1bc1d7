//! The engine and the model know nothing of GStreamer: they log through the `log` crate. Here
//! those records join GStreamer's debug log in a category of their own, `blip2engine`
//! (`GST_DEBUG=blip2engine:5`), through gstreamer-rs's own bridge.

use std::sync::{LazyLock, Once};

/// Every record of this crate; a dependency's (ureq, hf-hub) only up to DEBUG: ureq's TRACE
/// level is the HTTP wire unredacted, the remote backend's `Authorization` header included,
/// while its DEBUG lines redact every sensitive header.
struct CappedRecords(gst::DebugCategoryLogger);

impl log::Log for CappedRecords {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let ours = metadata.target().starts_with(env!("CARGO_CRATE_NAME"));
        (ours || metadata.level() <= log::Level::Debug) && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {}
}

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "blip2engine",
        gst::DebugColorFlags::empty(),
        Some("BLIP-2 engine and model (and their HTTP client): loading stages, batches"),
    )
});

static LOGGER: LazyLock<CappedRecords> =
    LazyLock::new(|| CappedRecords(gst::DebugCategoryLogger::new(*CAT)));

/// Installs the bridge once per process. An application that set its own `log` logger first
/// (possible only when it links this crate as a Rust library) keeps it and gets the records
/// there instead.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&*LOGGER).is_ok() {
            // Each record is still filtered by the category's own threshold.
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
}
