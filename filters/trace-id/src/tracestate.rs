//! W3C Trace Context `tracestate` (§3.3): combine, validate, truncate, format.
//!
//! Multiple header fields are combined in order into one list (§3.3.1.1, RFC 9110 field order).
//! A list that breaks the grammar, repeats a key or has more than 32 members is discarded as a
//! whole, which is what the W3C conformance suite expects of a participant. Keys follow the
//! grammar the conformance suite checks: a simple key, or a multi-tenant `tenant@system` key.

use crate::traceparent::trim_ows;

/// Maximum list members (§3.3.1.1).
pub const MAX_MEMBERS: usize = 32;
/// Propagators SHOULD pass at least this many characters (§3.3.1.5); configs may not go lower.
pub const MIN_PROPAGATED_LEN: usize = 512;
/// Entries longer than this are the first to go when truncating (§3.3.1.5).
pub const LARGE_ENTRY_LEN: usize = 128;

/// Why a `tracestate` was discarded. Each variant is one bounded metric reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InvalidTraceState {
    /// A list member has no `=`.
    #[error("list member without '='")]
    Member,
    /// A key breaks the key grammar (§3.3.1.3.1).
    #[error("invalid key")]
    Key,
    /// A value breaks the value grammar (§3.3.1.3.2), including non-ASCII bytes.
    #[error("invalid value")]
    Value,
    /// A key appears twice (§3.3.1.4: only one entry per key).
    #[error("duplicate key")]
    DuplicateKey,
    /// More than 32 list members (§3.3.1.1).
    #[error("more than 32 list members")]
    TooManyMembers,
}

impl InvalidTraceState {
    /// Bounded metric tag value.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Member => "invalid_member",
            Self::Key => "invalid_key",
            Self::Value => "invalid_value",
            Self::DuplicateKey => "duplicate_key",
            Self::TooManyMembers => "too_many_members",
        }
    }
}

/// A validated `tracestate` list (never more than 32 members, all ASCII).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceState {
    /// `key=value` entries, left-most first.
    members: Vec<String>,
}

const fn is_lcalpha(byte: u8) -> bool {
    byte.is_ascii_lowercase()
}

const fn is_key_char(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'-' | b'*' | b'/')
}

/// `simple-key = lcalpha 0*255( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )`
/// `multi-tenant-key = tenant-id "@" system-id`
/// `tenant-id = ( lcalpha / DIGIT ) 0*240( keychar )`, `system-id = lcalpha 0*13( keychar )`
fn valid_key(key: &[u8]) -> bool {
    match key.iter().position(|b| *b == b'@') {
        None => match key.split_first() {
            Some((first, rest)) => {
                is_lcalpha(*first) && rest.len() <= 255 && rest.iter().all(|b| is_key_char(*b))
            }
            None => false,
        },
        Some(at) => {
            let (tenant, system) = (
                key.get(..at).unwrap_or_default(),
                key.get(at + 1..).unwrap_or_default(),
            );
            let tenant_ok = match tenant.split_first() {
                Some((first, rest)) => {
                    (is_lcalpha(*first) || first.is_ascii_digit())
                        && rest.len() <= 240
                        && rest.iter().all(|b| is_key_char(*b))
                }
                None => false,
            };
            let system_ok = match system.split_first() {
                Some((first, rest)) => {
                    is_lcalpha(*first) && rest.len() <= 13 && rest.iter().all(|b| is_key_char(*b))
                }
                None => false,
            };
            tenant_ok && system_ok
        }
    }
}

/// `value = 0*255(chr) nblk-chr`, `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`, `chr = %x20 / nblk-chr`
fn valid_value(value: &[u8]) -> bool {
    let nblk = |b: u8| matches!(b, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    match value.split_last() {
        Some((last, rest)) => {
            nblk(*last) && rest.len() <= 255 && rest.iter().all(|b| *b == b' ' || nblk(*b))
        }
        None => false,
    }
}

impl TraceState {
    /// Combines every `tracestate` header value (in order) and validates the list.
    ///
    /// Returns `Ok(None)` when there is no member at all (absent, empty or whitespace-only
    /// headers, which §3.3.1.1 says vendors MUST accept).
    ///
    /// # Errors
    /// The first rule the combined list breaks; the whole list must then be discarded.
    pub fn parse_headers(values: &[&[u8]]) -> Result<Option<Self>, InvalidTraceState> {
        let mut members: Vec<String> = Vec::new();
        let mut keys: Vec<&[u8]> = Vec::new();
        for member in values.iter().flat_map(|value| value.split(|b| *b == b',')) {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            let eq = member
                .iter()
                .position(|b| *b == b'=')
                .ok_or(InvalidTraceState::Member)?;
            let key = member.get(..eq).unwrap_or_default();
            let value = member.get(eq + 1..).unwrap_or_default();
            if !valid_key(key) {
                return Err(InvalidTraceState::Key);
            }
            if !valid_value(value) {
                return Err(InvalidTraceState::Value);
            }
            if keys.contains(&key) {
                return Err(InvalidTraceState::DuplicateKey);
            }
            if members.len() == MAX_MEMBERS {
                return Err(InvalidTraceState::TooManyMembers);
            }
            keys.push(key);
            // Every byte was checked to be printable ASCII above.
            members.push(String::from_utf8_lossy(member).into_owned());
        }
        Ok((!members.is_empty()).then_some(Self { members }))
    }

    /// Number of list members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the list is empty (only after truncation removed everything).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The `key=value` entries, left-most first.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(String::as_str)
    }

    fn formatted_len(&self) -> usize {
        self.members.iter().map(String::len).sum::<usize>() + self.members.len().saturating_sub(1)
    }

    /// Drops whole entries until the formatted list fits in `max_len` characters (§3.3.1.5):
    /// entries longer than 128 characters first (right-most first), then from the right.
    /// Returns whether anything was removed.
    pub fn truncate(&mut self, max_len: usize) -> bool {
        let before = self.members.len();
        while self.formatted_len() > max_len {
            match self.members.iter().rposition(|m| m.len() > LARGE_ENTRY_LEN) {
                Some(large) => {
                    self.members.remove(large);
                }
                None => {
                    self.members.pop();
                }
            }
        }
        self.members.len() != before
    }

    /// The header value: members joined by `,` without optional whitespace.
    pub fn format(&self) -> String {
        self.members.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Option<TraceState>, InvalidTraceState> {
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        TraceState::parse_headers(&values)
    }

    #[test]
    fn combines_headers_in_order_and_drops_ows() {
        let state = parse(&["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE \t, \t foo=1"])
            .unwrap()
            .unwrap();
        assert_eq!(
            state.format(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,foo=1"
        );
    }

    #[test]
    fn empty_and_blank_headers_mean_absent() {
        assert_eq!(parse(&["", " ", ",,"]), Ok(None));
        assert_eq!(parse(&[]), Ok(None));
    }

    #[test]
    fn keeps_leading_space_of_a_value() {
        let state = parse(&["foo= 1"]).unwrap().unwrap();
        assert_eq!(state.format(), "foo= 1");
    }

    #[test]
    fn truncates_large_entries_first_then_from_the_right() {
        let large = format!("big={}", "x".repeat(200));
        let mut members = vec![large.clone()];
        for i in 0..40 {
            members.push(format!("k{i:02}={}", "v".repeat(10)));
        }
        members.truncate(32);
        let joined = members.join(",");
        let mut state = parse(&[&joined]).unwrap().unwrap();
        assert!(state.truncate(512));
        assert!(state.members().all(|m| m != large));
        assert!(state.format().len() <= 512);
        assert!(state.format().starts_with("k00="));
        // Only the large entry had to go: 31 small entries are 31*14 + 30 = 464 characters.
        assert_eq!(state.len(), 31);
    }

    #[test]
    fn truncation_of_a_fitting_list_changes_nothing() {
        let mut state = parse(&["a=1,b=2"]).unwrap().unwrap();
        assert!(!state.truncate(512));
        assert_eq!(state.format(), "a=1,b=2");
    }
}
