//! Fuzz the OpenIOC reader: any input must give an indicator or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ioc) = riposte_ioc::openioc::parse_bytes(data, "fuzz") {
        let _ = riposte_ioc::eval::evaluate_host(&ioc, &|_| riposte_ioc::Truth::Unknown);
    }
});
