//! Request-id validation, trust, and UUIDv4 formatting.
//!
//! A client-supplied id ends up in every access log line, so it is only kept when it is short and
//! made of a safe character set (`A-Z a-z 0-9 . _ : -`): no spaces, quotes, control characters or
//! non-ASCII bytes that could forge log fields. In `uuid` validation mode the id must be a
//! canonical 8-4-4-4-12 hex UUID whose version nibble is an RFC 9562 version (1-8) or one of
//! Envoy's packed trace-reason values (`9`, `a`, `b`; Envoy rewrites the `4` of its UUIDv4 ids to
//! record the sampling reason, so a strict UUIDv4 check would reject Envoy's own ids).

/// How a client-supplied id is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validation {
    /// 1..=maxLength characters from `A-Za-z0-9._:-`.
    #[default]
    Token,
    /// A canonical UUID (see the module docs for accepted versions), case-insensitive.
    Uuid,
}

/// Why a client-supplied id was rejected. Each variant is one bounded metric reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequestId {
    /// Empty after trimming whitespace.
    #[error("empty request id")]
    Empty,
    /// Longer than the configured maximum.
    #[error("request id too long")]
    TooLong,
    /// A character outside the allow-list.
    #[error("request id has a forbidden character")]
    Charset,
    /// Not a canonical UUID (in `uuid` validation mode).
    #[error("request id is not a uuid")]
    NotUuid,
    /// The header was sent more than once.
    #[error("duplicated request id header")]
    Duplicated,
}

impl InvalidRequestId {
    /// Every variant, in declaration order (metric series are defined for each up front).
    pub const ALL: [Self; 5] = [
        Self::Empty,
        Self::TooLong,
        Self::Charset,
        Self::NotUuid,
        Self::Duplicated,
    ];

    /// Position in [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Bounded metric tag value.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::Charset => "invalid_charset",
            Self::NotUuid => "not_uuid",
            Self::Duplicated => "duplicated",
        }
    }
}

const fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-')
}

fn is_uuid(value: &[u8]) -> bool {
    if value.len() != 36 {
        return false;
    }
    let shape_ok = value.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    let version_ok = matches!(
        value.get(14).map(u8::to_ascii_lowercase),
        Some(b'1'..=b'9' | b'a' | b'b')
    );
    let variant_ok = matches!(
        value.get(19).map(u8::to_ascii_lowercase),
        Some(b'8' | b'9' | b'a' | b'b')
    );
    shape_ok && version_ok && variant_ok
}

/// Validates one request-id value (surrounding whitespace is ignored).
///
/// # Errors
/// The first rule the value breaks.
pub fn validate(
    raw: &[u8],
    max_len: usize,
    validation: Validation,
) -> Result<String, InvalidRequestId> {
    let value = crate::traceparent::trim_ows(raw);
    if value.is_empty() {
        return Err(InvalidRequestId::Empty);
    }
    if value.len() > max_len {
        return Err(InvalidRequestId::TooLong);
    }
    if !value.iter().all(|b| is_token_char(*b)) {
        return Err(InvalidRequestId::Charset);
    }
    if validation == Validation::Uuid && !is_uuid(value) {
        return Err(InvalidRequestId::NotUuid);
    }
    // All bytes are ASCII (checked above).
    Ok(String::from_utf8_lossy(value).into_owned())
}

pub use meshward_core::net::{Cidr, InvalidCidr, parse_peer_address};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_safe_tokens_and_trims_whitespace() {
        assert_eq!(
            validate(b" abc-123_x.y:z ", 128, Validation::Token).as_deref(),
            Ok("abc-123_x.y:z")
        );
    }

    #[test]
    fn rejects_unsafe_or_long_ids() {
        let cases: [(&[u8], InvalidRequestId); 6] = [
            (b"", InvalidRequestId::Empty),
            (b"  ", InvalidRequestId::Empty),
            (b"a b", InvalidRequestId::Charset),
            (b"a\"b", InvalidRequestId::Charset),
            (b"caf\xc3\xa9", InvalidRequestId::Charset),
            (b"id\r\nx-evil: 1", InvalidRequestId::Charset),
        ];
        for (value, err) in cases {
            assert_eq!(
                validate(value, 128, Validation::Token),
                Err(err),
                "{value:?}"
            );
        }
        assert_eq!(
            validate(&[b'a'; 129], 128, Validation::Token),
            Err(InvalidRequestId::TooLong)
        );
        assert!(validate(&[b'a'; 128], 128, Validation::Token).is_ok());
    }

    #[test]
    fn uuid_mode_accepts_envoy_packed_trace_reason_nibbles() {
        for nibble in ['4', '9', 'a', 'b', '7', 'A'] {
            let id = format!("6b3e2c1a-1d2e-{nibble}f00-8a1b-0123456789ab");
            assert!(
                validate(id.as_bytes(), 128, Validation::Uuid).is_ok(),
                "{id}"
            );
        }
        for bad in [
            "6b3e2c1a-1d2e-cf00-8a1b-0123456789ab",
            "6b3e2c1a-1d2e-4f00-ca1b-0123456789ab",
            "6b3e2c1a1d2e4f008a1b0123456789ab",
        ] {
            assert_eq!(
                validate(bad.as_bytes(), 128, Validation::Uuid),
                Err(InvalidRequestId::NotUuid),
                "{bad}"
            );
        }
    }

    #[test]
    fn generated_uuids_pass_uuid_validation() {
        let id = meshward_core::ids::uuid_v4([0; 16]);
        assert!(validate(&id, 36, Validation::Uuid).is_ok());
    }
}
