#![no_main]
//! Body and invariants: `flatline_server::fuzzing::sealed_sender_multi_recipient`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flatline_server::fuzzing::sealed_sender_multi_recipient(data));
