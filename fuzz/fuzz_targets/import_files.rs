//! Import files: units and people CSV, and the catalog JSON pair.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = gridlink_server::import::parse_units(&text);
    let _ = gridlink_server::import::parse_people(&text);
    let (a, b) = text.split_once('\u{0}').unwrap_or((&text, "[]"));
    let _ = gridlink_core::Catalog::from_json(a, b);
});
