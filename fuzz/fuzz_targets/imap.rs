//! Arbitrary bytes through `mailserver::fuzzing::imap` (see there for what it drives).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mailserver::fuzzing::imap(data);
});
