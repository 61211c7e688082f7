//! Arbitrary bytes through `mailserver::fuzzing::pop3` (see there for what it drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mailserver::fuzzing::pop3(data);
});
