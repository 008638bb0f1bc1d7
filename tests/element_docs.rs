//! docs/element.md's property table is generated from the element's own param specs (what
//! gst-inspect-1.0 shows), so the two cannot drift: this test fails when they differ, and
//! `BLESS_DOCS=1 cargo test --release --test element_docs` rewrites the table.

mod gst_common;

use gst::glib;
use gst::prelude::*;
use gst_common::init;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/element.md");
const BEGIN: &str = "<!-- properties: generated from the param specs by tests/element_docs.rs -->";
const END: &str = "<!-- end of properties -->";

/// The type, with its range where narrower than the type's own, as gst-inspect-1.0 names it.
fn type_of(p: &glib::ParamSpec) -> String {
    let ty = p.value_type();
    let range = |min: String, max: String| format!("{} {min}–{max}", ty.name());
    if let Some(p) = p.downcast_ref::<glib::ParamSpecUInt>() {
        return range(p.minimum().to_string(), p.maximum().to_string());
    }
    if let Some(p) = p.downcast_ref::<glib::ParamSpecInt64>() {
        return match p.maximum() {
            i64::MAX => format!("{} ≥ {}", ty.name(), p.minimum()),
            max => range(p.minimum().to_string(), max.to_string()),
        };
    }
    if let Some(p) = p.downcast_ref::<glib::ParamSpecUInt64>() {
        return match (p.minimum(), p.maximum()) {
            (0, u64::MAX) => ty.name().to_string(),
            (min, max) => range(min.to_string(), max.to_string()),
        };
    }
    if let Some(p) = p.downcast_ref::<glib::ParamSpecDouble>() {
        return range(p.minimum().to_string(), p.maximum().to_string());
    }
    if p.downcast_ref::<glib::ParamSpecEnum>().is_some() {
        let class = glib::EnumClass::with_type(ty).unwrap();
        let nicks: Vec<_> = class.values().iter().map(|v| v.nick()).collect();
        return format!("enum ({})", nicks.join(", "));
    }
    if let Some(p) = p.downcast_ref::<gst::ParamSpecArray>() {
        let element = p.element_spec().map_or("values".into(), type_of);
        return format!("{} of {element}", ty.name());
    }
    match ty {
        glib::Type::STRING => "string".into(),
        t => t.name().into(),
    }
}

fn default_of(p: &glib::ParamSpec) -> Option<String> {
    let v = p.default_value();
    if !p.flags().contains(glib::ParamFlags::WRITABLE) {
        return None;
    }
    if let Ok(Some(s)) = v.get::<Option<String>>() {
        return Some(format!("{s:?}"));
    }
    if let Ok(array) = v.get::<gst::Array>()
        && array.is_empty()
    {
        return Some("empty".into());
    }
    if let Some((_, e)) = glib::EnumValue::from_value(v) {
        return Some(e.nick().to_string());
    }
    v.serialize().ok().map(|s| s.to_string())
}

/// When a change is taken: gst-inspect's "changeable in NULL, READY, ... state".
fn access_of(p: &glib::ParamSpec) -> &'static str {
    let f = p.flags();
    if !f.contains(glib::ParamFlags::WRITABLE) {
        "read-only"
    } else if !f.contains(glib::ParamFlags::READABLE) {
        "write-only"
    } else if f.contains(gst::PARAM_FLAG_MUTABLE_PLAYING) {
        "changeable while playing"
    } else if f.contains(gst::PARAM_FLAG_MUTABLE_PAUSED) {
        "changeable up to PAUSED"
    } else if f.contains(gst::PARAM_FLAG_MUTABLE_READY) {
        "changeable in NULL or READY"
    } else {
        "changeable in NULL"
    }
}

fn table() -> String {
    init();
    let el = gst::ElementFactory::make("blip2caption").build().unwrap();
    let mut out = String::from("| property | type, default, when | |\n|---|---|---|\n");
    for p in el.list_properties().iter() {
        // GstObject's `name` and `parent`: every element has them.
        if p.owner_type() != el.type_() {
            continue;
        }
        let mut kind = type_of(p);
        if let Some(d) = default_of(p) {
            kind += &format!(", `{d}`");
        }
        let blurb = p.blurb().unwrap_or_default().replace('|', "\\|");
        out += &format!("| `{}` | {kind}; {} | {blurb} |\n", p.name(), access_of(p));
    }
    out
}

#[test]
fn property_table_matches_the_param_specs() {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let (head, rest) = doc.split_once(BEGIN).expect("the table's start marker");
    let (current, tail) = rest.split_once(END).expect("the table's end marker");
    let generated = format!("\n{}", table());
    if std::env::var_os("BLESS_DOCS").is_some() {
        std::fs::write(DOC, format!("{head}{BEGIN}{generated}{END}{tail}")).unwrap();
        return;
    }
    assert_eq!(
        current, generated,
        "docs/element.md's property table differs from the param specs: run \
         `BLESS_DOCS=1 cargo test --release --test element_docs` and review the diff"
    );
}
