//! Identifiers from random bytes: UUIDv4 request ids and W3C trace-context ids, plus lower-case
//! hex helpers.
//!
//! Randomness is injected through [`RandomSource`], implemented by [`HostRandom`] (the proxy's
//! WASI `random_get` via [`Host::fill_random`]) and by any `FnMut(&mut [u8])` closure, so tests
//! are deterministic. W3C ids are never all-zero (the spec makes all-zero invalid): an all-zero
//! draw is redrawn once, then forced non-zero.

use std::fmt;

use crate::host::{Host, HostResult};

/// Where random bytes come from.
pub trait RandomSource {
    /// Fills `buf` with random bytes.
    ///
    /// # Errors
    ///
    /// The host's error when its random source fails.
    fn fill_random(&mut self, buf: &mut [u8]) -> HostResult<()>;
}

impl<F: FnMut(&mut [u8])> RandomSource for F {
    fn fill_random(&mut self, buf: &mut [u8]) -> HostResult<()> {
        self(buf);
        Ok(())
    }
}

/// Random bytes from the proxy ([`Host::fill_random`]). Generic rather than `&dyn Host` so the
/// filter's module links only the hostcalls it uses (see [`crate::host`]).
pub struct HostRandom<'a, H: Host + ?Sized>(pub &'a H);

impl<H: Host + ?Sized> Clone for HostRandom<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: Host + ?Sized> Copy for HostRandom<'_, H> {}

impl<H: Host + ?Sized> fmt::Debug for HostRandom<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostRandom")
    }
}

impl<H: Host + ?Sized> RandomSource for HostRandom<'_, H> {
    fn fill_random(&mut self, buf: &mut [u8]) -> HostResult<()> {
        self.0.fill_random(buf)
    }
}

// === UUIDv4 ===

/// Formats 16 random bytes as a lower-case hyphenated UUIDv4 (version and variant bits set), e.g.
/// `"1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"`.
pub fn uuid_v4_from_bytes(bytes: [u8; 16]) -> String {
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut buf).to_owned()
}

/// A new random UUIDv4 (36 characters, lower-case).
///
/// # Errors
///
/// When the random source fails.
pub fn new_uuid_v4(random: &mut dyn RandomSource) -> HostResult<String> {
    let mut bytes = [0u8; 16];
    random.fill_random(&mut bytes)?;
    Ok(uuid_v4_from_bytes(bytes))
}

/// Whether `s` is a hyphenated UUID (any version) in lower- or upper-case hex, 36 characters.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

// === W3C trace context ===

/// A W3C trace id: 16 bytes, never all zero; shown as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// A W3C span (parent) id: 8 bytes, never all zero; shown as 16 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

macro_rules! w3c_id {
    ($name:ident, $len:literal, $what:literal) => {
        impl $name {
            #[doc = concat!("The ", $what, " from raw bytes; `None` when all zero (invalid in W3C).")]
            pub fn from_bytes(bytes: [u8; $len]) -> Option<Self> {
                (bytes != [0; $len]).then_some(Self(bytes))
            }

            #[doc = concat!("Parses the ", $what, " from exactly ", stringify!($len), " × 2 lower-case hex digits; `None` when malformed, upper-case or all zero.")]
            pub fn parse(hex: &str) -> Option<Self> {
                decode_hex_array::<$len>(hex).and_then(Self::from_bytes)
            }

            #[doc = concat!("A new random ", $what, ".")]
            ///
            /// # Errors
            ///
            /// When the random source fails.
            pub fn generate(random: &mut dyn RandomSource) -> HostResult<Self> {
                let mut bytes = [0u8; $len];
                random.fill_random(&mut bytes)?;
                if bytes == [0; $len] {
                    random.fill_random(&mut bytes)?;
                }
                if bytes == [0; $len] {
                    // Only a broken or fixed test source gets here; stay valid regardless.
                    bytes[$len - 1] = 1;
                }
                Ok(Self(bytes))
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                encode_hex(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

w3c_id!(TraceId, 16, "trace id");
w3c_id!(SpanId, 8, "span id");

// === hex ===

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    encode_hex_into(bytes, &mut out);
    out
}

/// Appends the lower-case hex of `bytes` to `out`.
pub fn encode_hex_into(bytes: &[u8], out: &mut String) {
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            if let Some(&digit) = HEX_DIGITS.get(usize::from(nibble)) {
                out.push(char::from(digit));
            }
        }
    }
}

fn lower_hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Whether `s` is non-empty, even-length, lower-case hex (W3C forbids upper-case).
pub fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|b| lower_hex_value(b).is_some())
}

/// Decodes lower-case hex into `out`, which must be exactly half as long as `hex`.
///
/// Returns `None` on a length mismatch or any character outside `[0-9a-f]`.
pub fn decode_hex_into(hex: &str, out: &mut [u8]) -> Option<()> {
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (pair, slot) in hex.as_bytes().chunks_exact(2).zip(out.iter_mut()) {
        let [high, low] = pair else { return None };
        *slot = (lower_hex_value(*high)? << 4) | lower_hex_value(*low)?;
    }
    Some(())
}

/// Decodes exactly `2 * N` lower-case hex digits into `N` bytes.
pub fn decode_hex_array<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    decode_hex_into(hex, &mut out)?;
    Some(out)
}

/// Decodes lower-case hex of any even length.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; hex.len() / 2];
    decode_hex_into(hex, &mut out)?;
    Some(out)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::host::HostError;
    use crate::host::mock::{Hostcall, MockHost};

    #[test]
    fn uuid_v4_sets_version_and_variant_nibbles() {
        for fill in [0x00u8, 0xff, 0x5a] {
            let id = uuid_v4_from_bytes([fill; 16]);
            assert_eq!(id.len(), 36);
            assert!(is_uuid(&id), "{id}");
            let bytes = id.as_bytes();
            assert_eq!(bytes[14], b'4', "{id}");
            assert!(matches!(bytes[19], b'8' | b'9' | b'a' | b'b'), "{id}");
            assert_eq!(id, id.to_lowercase());
        }
        assert_eq!(
            uuid_v4_from_bytes([0; 16]),
            "00000000-0000-4000-8000-000000000000"
        );
    }

    #[test]
    fn uuid_v4_comes_from_the_host_random_source() {
        let host = MockHost::new().with_random_bytes([0xab]);
        let id = new_uuid_v4(&mut HostRandom(&host)).unwrap();
        assert_eq!(id, "abababab-abab-4bab-abab-abababababab");
        let failing =
            MockHost::new().failing_next(Hostcall::FillRandom, HostError::InternalFailure, 1);
        assert_eq!(
            new_uuid_v4(&mut HostRandom(&failing)),
            Err(HostError::InternalFailure)
        );
    }

    #[test]
    fn closures_are_random_sources() {
        let mut counter = 0u8;
        let mut source = |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                counter = counter.wrapping_add(1);
                *b = counter;
            }
        };
        let span = SpanId::generate(&mut source).unwrap();
        assert_eq!(span.to_hex(), "0102030405060708");
    }

    #[test]
    fn trace_and_span_ids_are_lower_hex_of_the_right_length() {
        let host = MockHost::new().with_random_seed(42);
        let trace = TraceId::generate(&mut HostRandom(&host)).unwrap();
        let span = SpanId::generate(&mut HostRandom(&host)).unwrap();
        assert_eq!(trace.to_hex().len(), 32);
        assert_eq!(span.to_string().len(), 16);
        assert!(is_lower_hex(&trace.to_hex()));
        assert_eq!(TraceId::parse(&trace.to_hex()), Some(trace));
        assert_eq!(SpanId::parse(&span.to_hex()), Some(span));
    }

    #[test]
    fn ids_are_never_all_zero() {
        let zeros = MockHost::new().with_random_bytes([0]);
        let trace = TraceId::generate(&mut HostRandom(&zeros)).unwrap();
        let span = SpanId::generate(&mut HostRandom(&zeros)).unwrap();
        assert_ne!(trace.as_bytes(), &[0; 16]);
        assert_ne!(span.as_bytes(), &[0; 8]);
        assert_eq!(TraceId::from_bytes([0; 16]), None);
        assert_eq!(TraceId::parse("00000000000000000000000000000000"), None);
        assert_eq!(SpanId::parse("0000000000000000"), None);
    }

    #[test]
    fn an_all_zero_draw_is_redrawn() {
        // First draw zeros, second draw 0x11s: the id is the second draw, not a patched first.
        let mut draws = 0;
        let mut source = |buf: &mut [u8]| {
            draws += 1;
            buf.fill(if draws == 1 { 0 } else { 0x11 });
        };
        let span = SpanId::generate(&mut source).unwrap();
        assert_eq!(span.to_hex(), "1111111111111111");
    }

    #[test]
    fn parsing_rejects_upper_case_and_bad_lengths() {
        let cases = [
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47366",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "",
        ];
        for hex in cases {
            assert_eq!(TraceId::parse(hex), None, "{hex}");
        }
        assert!(TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").is_some());
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
        let hex = encode_hex(&bytes);
        assert_eq!(hex, "00017f80feff");
        assert_eq!(decode_hex(&hex).as_deref(), Some(&bytes[..]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("AB"), None);
        assert!(!is_lower_hex("abc"));
        assert!(!is_lower_hex(""));
        assert!(is_lower_hex("00ff"));
    }

    #[test]
    fn is_uuid_checks_shape() {
        assert!(is_uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!is_uuid("123e4567e89b12d3a456426614174000"));
        assert!(!is_uuid("123e4567-e89b-12d3-a456-42661417400g"));
    }
}
