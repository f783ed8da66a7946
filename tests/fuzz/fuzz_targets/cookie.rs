//! ab-routing cookies: finding one in `Cookie` headers, verifying any value against the
//! experiment's keys, and signing: whatever variant/time is signed verifies back to the same
//! variant with the same key and never with another key. Also the query-parameter reader.
//!
//! Input: a mode byte, the time, the cookie name, a `Cookie` header (or a cookie value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_filter_ab_routing::cookie::{self, Rejection};
use meshward_filter_ab_routing::logic::query_parameter;
use meshward_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let mode = cursor.byte();
    let now = cursor.u64() % 10_000_000_000;
    let max_age = u64::from(cursor.u16()) * 60;
    let name = String::from_utf8_lossy(cursor.chunk()).into_owned();
    let key = cookie::derive_key(b"key-one-0123456789abcdef", &name, b"salt").unwrap();
    let other = cookie::derive_key(b"key-two-0123456789abcdef", &name, b"salt").unwrap();
    let header = cursor.rest();

    if mode % 3 == 0 {
        // A signed cookie verifies with its key (unless expired), never with another.
        let variant = String::from_utf8_lossy(header).into_owned();
        let issued = now.saturating_sub(u64::from(mode));
        let value = cookie::sign(&key, &variant, issued);
        let result = cookie::verify(
            std::slice::from_ref(&key),
            value.as_bytes(),
            now,
            max_age,
            None,
        );
        let shape_ok =
            !variant.is_empty() && !variant.contains('.') && value.len() <= cookie::MAX_VALUE_LEN;
        if shape_ok && max_age > u64::from(mode) {
            assert_eq!(result, Ok(variant.as_bytes()), "signed {value:?}");
        }
        if result.is_ok() {
            assert_eq!(
                cookie::verify(
                    std::slice::from_ref(&other),
                    value.as_bytes(),
                    now,
                    max_age,
                    None
                ),
                Err(Rejection::BadSignature)
            );
        }
        return;
    }
    if !name.is_empty() {
        let found = cookie::find(header, &name);
        if let Some(value) = found {
            assert!(value.len() <= header.len());
            let _ = cookie::verify(&[key.clone(), other], value, now, max_age, None);
        }
        // The one-pass scan for two names finds what two single searches find.
        let second = format!("{name}_b");
        let [first, both_second, ..] =
            cookie::scan(&[name.as_bytes().into(), second.as_bytes().into()], header);
        assert_eq!(first, found);
        assert_eq!(both_second, cookie::find(header, &second));
        let _ = query_parameter(header, &name);
    }
    let _ = cookie::verify(std::slice::from_ref(&key), header, now, max_age, None);
});
