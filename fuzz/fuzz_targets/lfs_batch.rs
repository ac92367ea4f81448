#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hub_api::fuzzing::lfs_batch(data));
