//! HTTP/2 frames + HPACK as the capture sees them: arbitrary chunk records (with gaps) through the
//! assembler (see `profiler_agent::capture::h2::fuzz`). Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let _ = profiler_agent::capture::h2::fuzz::replay(input);
});
