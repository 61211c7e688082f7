//! Arbitrary bytes through `mailserver::fuzzing::mime` (see there for what it drives).
#![no_main]

use std::sync::Once;

/// mail-parser has a `debug_assert!` ("Invalid part ID, could not find multipart.") that
/// malformed multiparts reach; release builds skip it and `imap::parse` catches it in debug
/// builds. libFuzzer's panic hook aborts before any `catch_unwind`, so that one assertion is
/// let through to the catch; every other panic still aborts the run.
fn let_the_known_assertion_unwind() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let known = info.location().is_some_and(|l| {
                l.file().contains("mail-parser") && l.file().ends_with("parsers/message.rs")
            }) && info
                .payload_as_str()
                .is_some_and(|m| m.contains("Invalid part ID, could not find multipart"));
            if !known {
                fuzzer_hook(info);
            }
        }));
    });
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let_the_known_assertion_unwind();
    let _ = mailserver::fuzzing::mime(data);
});
