//! rate-limit's shared-data table encoding: any bytes read back from shared data (foreign,
//! truncated, corrupted, written by another version) are charged without panicking, the table
//! never grows past its capacity and parses back, and a bucket never holds more than `max_tokens`.
//!
//! Input: bucket parameters, capacity, overflow policy, then operations (key, cost, clock step).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_rate_limit::bucket::TokenBucket;
use meshward_filter_rate_limit::table::{self, Overflow, TableSpec};
use meshward_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let spec = TableSpec {
        bucket: TokenBucket {
            max_tokens: u32::from(cursor.u16()),
            tokens_per_fill: u32::from(cursor.u16()),
            fill_interval_ns: 50_000_000 + cursor.u64() % 86_400_000_000_000,
        },
        capacity: 1 + usize::from(cursor.byte() % 64),
        overflow: if cursor.byte() % 2 == 0 {
            Overflow::EvictLru
        } else {
            Overflow::Deny
        },
    };
    let mut buf = cursor.chunk().to_vec();
    let mut now = cursor.u64();
    let mut operations = 0;
    while !cursor.is_empty() && operations < 64 {
        operations += 1;
        let key = cursor.chunk();
        let cost = u32::from(cursor.byte());
        let step = i64::from(cursor.u16() as i16) * 1_000_000 * i64::from(cursor.byte());
        now = now.saturating_add_signed(step);
        let before = table::len(&buf);
        let charge = table::charge(&mut buf, &spec, key, cost, now);
        assert!(
            charge.remaining <= spec.bucket.max_tokens,
            "{charge:?} for {spec:?}"
        );
        assert!(
            !(charge.allowed && cost > spec.bucket.max_tokens),
            "{charge:?} cost {cost}"
        );
        // Never grows past its capacity (a foreign table already over it does not grow).
        assert!(
            table::len(&buf) <= spec.capacity.max(before),
            "table grew over capacity: {before} -> {}",
            table::len(&buf)
        );
        assert_eq!(table::keys(&buf).len(), table::len(&buf));
    }
});
