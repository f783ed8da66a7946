//! Config parsing and validation of every filter, through each filter's real `configure` (serde,
//! validation, compilation of matchers, metric definition): a refused config is logged, an
//! accepted one serves a few requests without panicking.
//!
//! Input: one byte picks the filter, the rest is the plugin configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_fuzz::{Cursor, drive};

/// A fixed, ordinary request stream run through every accepted configuration.
const REQUESTS: &[u8] = &[
    0, // peer 10.1.2.3
    0, 0, 0, // no clock step
    1, b'/', // path
    3,    // three headers
    0, 36, b'1', b'2', b'3', b'e', b'4', b'5', b'6', b'7', b'-', b'e', b'8', b'9', b'b', b'-',
    b'1', b'2', b'd', b'3', b'-', b'a', b'4', b'5', b'6', b'-', b'4', b'2', b'6', b'6', b'1', b'4',
    b'1', b'7', b'4', b'0', b'0', b'0', // x-request-id
    1, 4, b'u', b's', b'e', b'r', // x-user-id
    13, 7, b'1', b'.', b'2', b'.', b'3', b'.', b'4', // x-forwarded-for
    100, 0, 0, // status 200, no response headers
];

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let which = cursor.byte();
    let config = cursor.rest();
    drive(which, config, &mut Cursor::new(REQUESTS), 2);
});
