#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hub_api::fuzzing::names_and_revisions(data));
