#![no_main]
//! Body and invariants: `flatline_server::fuzzing::invite_code`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flatline_server::fuzzing::invite_code(data));
