//! Identifiers and hex, into fixed buffers: UUIDv4 request ids and lower-case hex for W3C ids.
//!
//! Everything writes into caller-provided arrays or slices, so formatting an id per request
//! allocates nothing. Random bytes come from the caller (one [`crate::host::Host::fill_random`]
//! per request, split as needed), which keeps these functions pure.

/// Length of a hyphenated UUID.
pub const UUID_LEN: usize = 36;

/// Formats 16 random bytes as a lower-case hyphenated UUIDv4 (RFC 9562 §5.4: version nibble 4,
/// variant bits `10`), e.g. `1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0`. Written straight into a
/// fixed array: the `uuid` crate's formatter costs several times more wasm instructions per id
/// (measured), and the tests check both agree.
pub fn uuid_v4(mut bytes: [u8; 16]) -> [u8; UUID_LEN] {
    if let Some(version) = bytes.get_mut(6) {
        *version = (*version & 0x0f) | 0x40;
    }
    if let Some(variant) = bytes.get_mut(8) {
        *variant = (*variant & 0x3f) | 0x80;
    }
    let mut out = [b'-'; UUID_LEN];
    encode_hex_at(&bytes, &mut out, &UUID_DIGIT_AT);
    out
}

/// Where the two hex digits of each UUID byte go (groups 8-4-4-4-12, `-` between them).
const UUID_DIGIT_AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// Writes the hex digits of `bytes[i]` at `out[at[i]..at[i] + 2]`: one pass for a formatted id
/// with separators (a UUID, a `traceparent`), without slicing per group.
pub fn encode_hex_at(bytes: &[u8], out: &mut [u8], at: &[usize]) {
    for (byte, position) in bytes.iter().zip(at) {
        if let (Some(digits), Some(pair)) = (
            HEX_PAIRS.get(usize::from(*byte)),
            out.get_mut(*position..*position + 2),
        ) {
            pair.copy_from_slice(digits);
        }
    }
}

/// Whether `value` is a hyphenated UUID shape (any version), either case.
pub fn is_uuid(value: &[u8]) -> bool {
    value.len() == UUID_LEN
        && value.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The two lower-case hex digits of every byte value, so encoding is one table read per byte.
#[allow(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an out-of-range index fails the build, never the proxy"
)]
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0x0f]];
        byte += 1;
    }
    table
};

/// Writes the lower-case hex of `bytes` into `out` (two digits per byte; stops at the shorter).
pub fn encode_hex_to(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        if let Some(digits) = HEX_PAIRS.get(usize::from(*byte)) {
            pair.copy_from_slice(digits);
        }
    }
}

/// The value of one lower-case hex digit.
pub const fn lower_hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Decodes exactly `2 * N` lower-case hex digits into `N` bytes (W3C forbids upper-case).
pub fn decode_lower_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *slot = (lower_hex_value(*high)? << 4) | lower_hex_value(*low)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn uuid_v4_agrees_with_the_uuid_crate(bytes in proptest::prelude::any::<[u8; 16]>()) {
            let reference = uuid::Builder::from_random_bytes(bytes).into_uuid();
            let mut expected = [0u8; UUID_LEN];
            reference.hyphenated().encode_lower(&mut expected);
            proptest::prop_assert_eq!(uuid_v4(bytes), expected);
        }
    }

    #[test]
    fn uuid_v4_sets_version_and_variant_nibbles() {
        for fill in [0x00u8, 0xff, 0x5a] {
            let id = uuid_v4([fill; 16]);
            assert!(is_uuid(&id));
            assert_eq!(id[14], b'4');
            assert!(matches!(id[19], b'8' | b'9' | b'a' | b'b'));
            assert_eq!(id, id.to_ascii_lowercase().as_slice());
        }
        assert_eq!(&uuid_v4([0; 16]), b"00000000-0000-4000-8000-000000000000");
        assert_eq!(
            &uuid_v4([0xab; 16]),
            b"abababab-abab-4bab-abab-abababababab"
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_upper_case_and_bad_lengths() {
        let bytes = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
        let mut hex = [0u8; 12];
        encode_hex_to(&bytes, &mut hex);
        assert_eq!(&hex, b"00017f80feff");
        assert_eq!(decode_lower_hex::<6>(&hex), Some(bytes));
        for bad in [&b"00017F80FEFF"[..], b"00017f80fef", b"00017f80fefg", b""] {
            assert_eq!(decode_lower_hex::<6>(bad), None);
        }
    }

    #[test]
    fn is_uuid_checks_shape() {
        assert!(is_uuid(b"123e4567-e89b-12d3-a456-426614174000"));
        assert!(!is_uuid(b"123e4567e89b12d3a456426614174000"));
        assert!(!is_uuid(b"123e4567-e89b-12d3-a456-42661417400g"));
    }
}
