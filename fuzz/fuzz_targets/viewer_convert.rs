#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hub_api::fuzzing::viewer_convert(data));
