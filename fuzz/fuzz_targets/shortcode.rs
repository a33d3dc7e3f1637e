#![no_main]
//! Body and invariants: `flatline_server::fuzzing::shortcode`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flatline_server::fuzzing::shortcode(data));
