//! Requests and responses (any header bytes, duplicates, huge values, clock steps forwards and
//! backwards) through every filter's real request/response/log handlers, configured with the
//! shipped benchmark configs (which switch on the optional paths).
//!
//! Input: one byte picks the filter, then a stream of requests (see `meshward_fuzz::run_stream`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_fuzz::{Cursor, drive};

const CONFIGS: [&str; 5] = [
    include_str!("../../fixtures/trace-id/config/valid/full.json"),
    include_str!("../../fixtures/rate-limit/bench.json"),
    include_str!("../../fixtures/jwt-auth/bench.json"),
    include_str!("../../fixtures/ab-routing/bench.json"),
    include_str!("../../fixtures/metric-tag/bench.json"),
];

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let which = cursor.byte() % 5;
    let config = CONFIGS[usize::from(which)];
    drive(which, config.as_bytes(), &mut cursor, 16);
});
