//! Arbitrary bytes as one local-mode manifests file: loaded or refused, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mailserver::fuzzing::manifests(data);
});
