#![no_main]
//! Body and invariants: `flatline_server::fuzzing_zk::zkgroup`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flatline_server::fuzzing_zk::zkgroup(data));
