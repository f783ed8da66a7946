//! The proxy-wasm header map encoding (`meshward_core::header_map`): any block the proxy returns
//! is read without panicking, and a map serialized from pairs reads back as the same pairs.
//! Also the route matcher's joining of duplicate header values.
//!
//! Input: a mode byte, then a raw block or a list of pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_core::header_map::{HeaderMap, serialize};
use meshward_core::route_match::join_header_values;
use meshward_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    if cursor.byte() % 2 == 0 {
        let map = HeaderMap::from_bytes(cursor.rest().to_vec());
        for (name, value) in map.iter() {
            if let Ok(name) = std::str::from_utf8(name) {
                assert!(map.get(name).is_some() || name.bytes().any(|b| b.is_ascii_uppercase()));
                let _ = value;
            }
        }
        let _ = join_header_values(map.get_all("x-a"));
        return;
    }
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    while !cursor.is_empty() && pairs.len() < 64 {
        pairs.push((cursor.chunk(), cursor.chunk()));
    }
    let map = HeaderMap::from_bytes(serialize(pairs.iter().copied()));
    assert!(
        map.iter().eq(pairs.iter().copied()),
        "header map round trip"
    );
    let joined = join_header_values(pairs.iter().map(|(_, v)| *v));
    if pairs.is_empty() {
        assert!(joined.is_none());
    }
});
