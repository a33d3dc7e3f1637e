#![no_main]
//! Body and invariants: `flatline_server::fuzzing::websocket_frame`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flatline_server::fuzzing::websocket_frame(data));
