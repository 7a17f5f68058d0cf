#![no_main]
// The body lives in retailflow::fuzzing so `cargo test` replays the corpus with the same code.
libfuzzer_sys::fuzz_target!(|data: &[u8]| retailflow::fuzzing::finance_record(data));
