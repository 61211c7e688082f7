//! Arbitrary bytes through `mailserver::fuzzing::smtp` (see there for what it drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mailserver::fuzzing::smtp(data);
});
