//! Fuzz the STIX pattern parser and the bundle reader.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = riposte_ioc::stix::parse_pattern(s, "id", "name", "fuzz");
        let _ = riposte_ioc::stix::parse_document(s, "fuzz");
    }
});
