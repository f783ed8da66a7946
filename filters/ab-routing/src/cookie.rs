//! The sticky cookie: a variant signed with HMAC-SHA-256 so clients cannot pick their own.
//!
//! Value: `<variant>.<issued>.<tag>` where `issued` is the Unix time in seconds at which the
//! proxy issued it (decimal) and `tag` is the first 16 bytes of
//! `HMAC-SHA-256(k_e, "<variant>.<issued>")`, base64url without padding (22 characters).
//!
//! `k_e`, the experiment key, is derived from a configured key `k` once at configure time:
//! `k_e = HMAC-SHA-256(k, "meshward-ab-routing/v1" || 0x00 || experiment name || 0x00 || salt)`.
//! A cookie therefore only verifies for the experiment (and salt) it was issued for, and
//! changing the salt retires every cookie of the experiment.
//!
//! Verification tries the signing key, then each verification key (rotation); the comparison
//! is the `hmac` crate's constant-time `verify_truncated_left`. A cookie is honoured only when
//! it parses, verifies, was issued less than `maxAge` ago (and not in the future beyond
//! [`CLOCK_SKEW_SECS`]), and names a variant that still exists with a positive weight.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::rc::Rc;

use hmac::Mac;

use crate::config::KeyedMac;

/// Length of the truncated tag in bytes (128 bits).
pub const TAG_LEN: usize = 16;
/// Length of the tag in base64url characters.
pub const TAG_CHARS: usize = 22;
/// Cookies issued up to this far in the future (other proxies' clocks) are accepted.
pub const CLOCK_SKEW_SECS: u64 = 300;
/// Longest cookie value considered (anything longer is malformed).
pub const MAX_VALUE_LEN: usize = 64 + 1 + 20 + 1 + TAG_CHARS;

const CONTEXT: &[u8] = b"meshward-ab-routing/v1";

/// The per-experiment MAC key derived from configured key `key` (see the module docs); `None`
/// only if the `hmac` crate rejected a key length (HMAC accepts any).
pub fn derive_key(key: &[u8], experiment: &str, salt: &[u8]) -> Option<KeyedMac> {
    let derived = <KeyedMac as Mac>::new_from_slice(key)
        .ok()?
        .chain_update(CONTEXT)
        .chain_update([0u8])
        .chain_update(experiment.as_bytes())
        .chain_update([0u8])
        .chain_update(salt)
        .finalize()
        .into_bytes();
    <KeyedMac as Mac>::new_from_slice(&derived).ok()
}

/// Why a cookie was not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not `<variant>.<issued>.<tag>`.
    Malformed,
    /// The tag does not verify with any configured key (forged, or a retired key).
    BadSignature,
    /// Issued more than `maxAge` ago, or in the future.
    Expired,
    /// Names a variant that no longer exists or has weight 0.
    UnknownVariant,
}

/// Outcome of reading the cookie, as metric series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieResult {
    /// Honoured.
    Accepted = 0,
    /// See [`Rejection::Malformed`].
    Malformed = 1,
    /// See [`Rejection::BadSignature`].
    BadSignature = 2,
    /// See [`Rejection::Expired`].
    Expired = 3,
    /// See [`Rejection::UnknownVariant`].
    UnknownVariant = 4,
}

impl CookieResult {
    /// Every result, in series order.
    pub const ALL: [Self; 5] = [
        Self::Accepted,
        Self::Malformed,
        Self::BadSignature,
        Self::Expired,
        Self::UnknownVariant,
    ];

    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::UnknownVariant => "unknown_variant",
        }
    }
}

impl From<Rejection> for CookieResult {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Malformed => Self::Malformed,
            Rejection::BadSignature => Self::BadSignature,
            Rejection::Expired => Self::Expired,
            Rejection::UnknownVariant => Self::UnknownVariant,
        }
    }
}

/// A `Set-Cookie` value and the second it was issued in.
type Signed = (u64, Rc<str>);

/// Most verified cookie values one [`Memo`] remembers (it forgets them all when full).
pub const MEMO_CAPACITY: usize = 1024;

/// Per-VM memory of MAC work, so that HMAC-SHA-256 (two SHA-256 blocks, ~22,000 wasm
/// instructions) runs once per distinct cookie value rather than once per request:
/// - cookie values whose MAC verified (exact bytes; only ever inserted after a successful
///   verification, so a forged value can never be found in it);
/// - per variant, the value signed for the current second (every user assigned that variant in
///   that second gets the same value: the value carries no user data).
///
/// It belongs to one configuration (rebuilt with it), so retiring a key also forgets the values
/// it verified.
#[derive(Debug, Default)]
pub struct Memo {
    verified: std::cell::RefCell<std::collections::HashSet<Box<[u8]>>>,
    signed: std::cell::RefCell<Vec<Option<Signed>>>,
}

impl Clone for Memo {
    /// A new, empty memo (memory is per configured filter).
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Memo {
    fn remember_verified(&self, value: &[u8]) {
        let mut verified = self.verified.borrow_mut();
        if verified.contains(value) {
            return;
        }
        if verified.len() >= MEMO_CAPACITY {
            verified.clear();
        }
        verified.insert(value.into());
    }

    /// The `Set-Cookie` header value (`<cookie>=<value><attributes>`) for `variant` (index
    /// `index`) issued at `issued`, signed with `mac`; built once per second and variant.
    pub fn set_cookie(
        &self,
        mac: &KeyedMac,
        index: usize,
        variant: &str,
        issued: u64,
        sticky: (&str, &str),
    ) -> Rc<str> {
        let mut signed = self.signed.borrow_mut();
        if let Some(Some((at, value))) = signed.get(index)
            && *at == issued
        {
            return Rc::clone(value);
        }
        let (cookie, attributes) = sticky;
        let value: Rc<str> = format!("{cookie}={}{attributes}", sign(mac, variant, issued)).into();
        if signed.len() <= index {
            signed.resize(index + 1, None);
        }
        if let Some(slot) = signed.get_mut(index) {
            *slot = Some((issued, Rc::clone(&value)));
        }
        value
    }
}

/// The cookie value for `variant` issued at `issued` (Unix seconds), signed with `mac`.
pub fn sign(mac: &KeyedMac, variant: &str, issued: u64) -> String {
    let mut value = format!("{variant}.{issued}");
    let tag = mac
        .clone()
        .chain_update(value.as_bytes())
        .finalize()
        .into_bytes();
    value.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.get(..TAG_LEN).unwrap_or_default(), &mut value);
    value
}

/// Verifies `value` and returns the variant name it carries (its existence is the caller's
/// check). `macs` are tried in order. With a `memo`, a value whose MAC verified before skips
/// the MAC (the structure and the expiry are still checked every time).
pub fn verify<'v>(
    macs: &[KeyedMac],
    value: &'v [u8],
    now_secs: u64,
    max_age_secs: u64,
    memo: Option<&Memo>,
) -> Result<&'v [u8], Rejection> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Rejection::Malformed);
    }
    let dot = value
        .iter()
        .rposition(|b| *b == b'.')
        .ok_or(Rejection::Malformed)?;
    let (signed, tag_text) = (
        value.get(..dot).ok_or(Rejection::Malformed)?,
        value.get(dot + 1..).ok_or(Rejection::Malformed)?,
    );
    if tag_text.len() != TAG_CHARS {
        return Err(Rejection::Malformed);
    }
    let inner_dot = signed
        .iter()
        .position(|b| *b == b'.')
        .ok_or(Rejection::Malformed)?;
    let variant = signed.get(..inner_dot).ok_or(Rejection::Malformed)?;
    let issued_text = signed.get(inner_dot + 1..).ok_or(Rejection::Malformed)?;
    if variant.is_empty()
        || issued_text.is_empty()
        || issued_text.len() > 20
        || !issued_text.iter().all(u8::is_ascii_digit)
    {
        return Err(Rejection::Malformed);
    }
    let issued: u64 = std::str::from_utf8(issued_text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(Rejection::Malformed)?;
    // A remembered value verified before (exact bytes), so its tag decodes: the base64 decode
    // and the MAC run only for values not seen yet.
    let remembered = memo.is_some_and(|m| m.verified.borrow().contains(value));
    let verified = remembered || {
        let mut tag = [0u8; TAG_LEN + 2];
        match URL_SAFE_NO_PAD.decode_slice(tag_text, &mut tag) {
            Ok(TAG_LEN) => {}
            _ => return Err(Rejection::Malformed),
        }
        let tag = tag.get(..TAG_LEN).ok_or(Rejection::Malformed)?;
        macs.iter().any(|mac| {
            mac.clone()
                .chain_update(signed)
                .verify_truncated_left(tag)
                .is_ok()
        })
    };
    if !verified {
        return Err(Rejection::BadSignature);
    }
    if let Some(memo) = memo
        && !remembered
    {
        memo.remember_verified(value);
    }
    if issued > now_secs.saturating_add(CLOCK_SKEW_SECS)
        || issued.saturating_add(max_age_secs) <= now_secs
    {
        return Err(Rejection::Expired);
    }
    Ok(variant)
}

/// Most distinct cookie names one configuration looks for: a key cookie and a sticky cookie per
/// experiment.
pub const MAX_COOKIES: usize = 2 * crate::config::MAX_EXPERIMENTS;

/// The cookies of one request, by slot ([`CookieFinder::slot`]): what [`scan`] found.
pub type Found<'h> = [Option<&'h [u8]>; MAX_COOKIES];

/// One cookie the configuration reads, and its slot among the configuration's cookie names
/// (assigned when the configuration is complete, so that one [`scan`] finds them all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieFinder {
    name: Box<[u8]>,
    slot: usize,
}

impl CookieFinder {
    /// A finder for cookie `name` (slot 0 until [`CookieFinder::assign_slot`]).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.as_bytes().into(),
            slot: 0,
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// Its index in the configuration's name list and in [`Found`].
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Gives this finder the slot of its name in `names`, adding the name when new.
    pub fn assign_slot(&mut self, names: &mut Vec<Box<[u8]>>) {
        self.slot = match names.iter().position(|n| *n == self.name) {
            Some(slot) => slot,
            None => {
                names.push(self.name.clone());
                names.len() - 1
            }
        };
    }

    /// Its value in `found`.
    pub fn get<'h>(&self, found: &Found<'h>) -> Option<&'h [u8]> {
        found.get(self.slot).copied().flatten()
    }
}

const fn is_separator(b: u8) -> bool {
    b == b';' || b == b','
}

/// The index of the first `;` or `,` in `header` at or after `from` (`header.len()` if none).
///
/// Sixteen bytes per step, as two u64 words (wasm32 has 64-bit integer operations), each tested
/// for a `;` or `,` byte with the zero-byte trick: the bench profile's `Cookie` header has pairs
/// of 20 to 300 bytes, a byte loop costs ~10 wasm instructions per byte, and `memchr2` on wasm32
/// (4-byte words) spends more in set-up than it saves on short pairs (BENCHMARKS.md).
fn next_separator(header: &[u8], from: usize) -> usize {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const SEMICOLON: u64 = u64::from_ne_bytes([b';'; 8]);
    const COMMA: u64 = u64::from_ne_bytes([b','; 8]);
    // A byte of `word ^ SEMICOLON` (`^ COMMA`) is zero where the word holds `;` (`,`).
    // `(x - LO) & !x & HI` may also flag a byte above a real zero byte (borrow), never below
    // one: the lowest flag, the first such byte in little-endian order, is exact.
    let separators = |word: u64| {
        let (s, c) = (word ^ SEMICOLON, word ^ COMMA);
        ((s.wrapping_sub(LO) & !s) | (c.wrapping_sub(LO) & !c)) & HI
    };
    let word_at = |chunk: &[u8]| u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or_default());
    let rest = header.get(from..).unwrap_or_default();
    let mut at = from;
    let mut pairs = rest.chunks_exact(16);
    for pair in pairs.by_ref() {
        let (first, second) = pair.split_at(8);
        let hits = separators(word_at(first));
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        let hits = separators(word_at(second));
        if hits != 0 {
            return at + 8 + (hits.trailing_zeros() / 8) as usize;
        }
        at += 16;
    }
    let mut words = pairs.remainder().chunks_exact(8);
    for word in words.by_ref() {
        let hits = separators(word_at(word));
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| is_separator(*b))
        .map_or(header.len(), |i| at + i)
}

/// The value in `header[start..end]` (a pair's value): surrounding whitespace and double quotes
/// removed.
fn clean_value(header: &[u8], start: usize, end: usize) -> &[u8] {
    let value = header.get(start..end).unwrap_or_default().trim_ascii();
    value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value)
}

/// The cookies named `names` in a `Cookie` header, in one pass (several headers joined by `,`
/// count as one list): slot `i` holds the value of `names[i]`. Pairs are split at `;` and `,`;
/// a pair's leading spaces and tabs are skipped; the first pair with a name wins; a value's
/// surrounding whitespace and double quotes are removed. The scan stops once every name is
/// found. Names beyond [`MAX_COOKIES`] are not looked for (configuration never has more).
///
/// Each pair's name is compared once, starting with its first byte (most pairs differ there),
/// and bytes between pair starts are only looked at by [`next_separator`].
pub fn scan<'h>(names: &[Box<[u8]>], header: &'h [u8]) -> Found<'h> {
    let mut found: Found<'h> = Default::default();
    let mut missing = names.len().min(MAX_COOKIES);
    let mut start = 0;
    while missing > 0 && start < header.len() {
        let mut name_at = start;
        while let Some(b' ' | b'\t') = header.get(name_at) {
            name_at += 1;
        }
        let mut value_at = None;
        if let Some(first) = header.get(name_at) {
            for (slot, name) in found.iter_mut().zip(names) {
                let value_start = name_at + name.len() + 1;
                if slot.is_none()
                    && name.first() == Some(first)
                    && header.get(name_at..value_start - 1) == Some(&**name)
                    && header.get(value_start - 1) == Some(&b'=')
                {
                    value_at = Some((slot, value_start));
                    break;
                }
            }
        }
        let from = value_at.as_ref().map_or(name_at, |(_, at)| *at);
        let end = next_separator(header, from);
        if let Some((slot, value_start)) = value_at {
            *slot = Some(clean_value(header, value_start, end));
            missing -= 1;
        }
        start = end + 1;
    }
    found
}

/// The value of cookie `name` in a `Cookie` header (see [`scan`]).
pub fn find<'h>(header: &'h [u8], name: &str) -> Option<&'h [u8]> {
    let [value, ..] = scan(&[name.as_bytes().into()], header);
    value
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OLD: &[u8] = b"old-key-old-key-old-key-old-key-";

    fn verify_plain<'v>(
        macs: &[KeyedMac],
        value: &'v [u8],
        now: u64,
        max_age: u64,
    ) -> Result<&'v [u8], Rejection> {
        let plain = verify(macs, value, now, max_age, None);
        // The memo never changes an answer: same result, cold and warm.
        let memo = Memo::default();
        assert_eq!(verify(macs, value, now, max_age, Some(&memo)), plain);
        assert_eq!(verify(macs, value, now, max_age, Some(&memo)), plain);
        plain
    }

    #[test]
    fn memo_signs_once_per_second_and_variant() {
        let memo = Memo::default();
        let set = |i, v, t| memo.set_cookie(&mac(KEY), i, v, t, ("c", "; Path=/"));
        let want = |v, t| format!("c={}; Path=/", sign(&mac(KEY), v, t));
        let a = set(1, "v2", 1000);
        assert_eq!(*a, want("v2", 1000));
        assert!(Rc::ptr_eq(&set(1, "v2", 1000), &a));
        assert_eq!(*set(0, "v1", 1000), want("v1", 1000));
        assert_eq!(*set(1, "v2", 1001), want("v2", 1001));
    }

    #[test]
    fn memo_never_accepts_what_failed() {
        let memo = Memo::default();
        let good = sign(&mac(KEY), "v1", 1000);
        assert!(verify(&[mac(KEY)], good.as_bytes(), 1000, 60, Some(&memo)).is_ok());
        let forged = good.replacen("v1", "v2", 1);
        assert_eq!(
            verify(&[mac(KEY)], forged.as_bytes(), 1000, 60, Some(&memo)),
            Err(Rejection::BadSignature)
        );
        // Expiry is still checked for remembered values.
        assert_eq!(
            verify(&[mac(KEY)], good.as_bytes(), 1060, 60, Some(&memo)),
            Err(Rejection::Expired)
        );
    }

    fn mac(key: &[u8]) -> KeyedMac {
        derive_key(key, "checkout", b"checkout").unwrap()
    }

    #[test]
    fn pinned_cookie_value() {
        // Pins the derivation and format (README "Cookie format"); computed independently with
        // Python's hmac module.
        assert_eq!(
            sign(&mac(KEY), "v2", 1_700_000_000),
            "v2.1700000000.C7df8V1yw5quiXPJQ7KcLw"
        );
    }

    #[test]
    fn round_trip_and_rotation() {
        let value = sign(&mac(OLD), "v2", 1000);
        let now = 1010;
        assert_eq!(
            verify_plain(&[mac(KEY), mac(OLD)], value.as_bytes(), now, 60),
            Ok(&b"v2"[..])
        );
        // Retired key.
        assert_eq!(
            verify_plain(&[mac(KEY)], value.as_bytes(), now, 60),
            Err(Rejection::BadSignature)
        );
        // Other experiment.
        let other = derive_key(KEY, "other", b"other").unwrap();
        let value = sign(&mac(KEY), "v2", 1000);
        assert_eq!(
            verify_plain(&[other], value.as_bytes(), now, 60),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify_plain(&[mac(KEY)], value.as_bytes(), 1060, 60),
            Err(Rejection::Expired)
        );
        assert_eq!(
            verify_plain(&[mac(KEY)], value.as_bytes(), 600, 60),
            Err(Rejection::Expired)
        );
    }

    #[test]
    fn forged_values_are_rejected() {
        let good = sign(&mac(KEY), "v1", 1000);
        let forged = good.replacen("v1", "v2", 1);
        assert_eq!(
            verify_plain(&[mac(KEY)], forged.as_bytes(), 1000, 60),
            Err(Rejection::BadSignature)
        );
        for bad in [
            "",
            ".",
            "..",
            "v2",
            "v2.1000",
            "v2.1000.",
            "v2.x.AAAAAAAAAAAAAAAAAAAAAA",
            ".1000.AAAAAAAAAAAAAAAAAAAAAA",
            "v2..AAAAAAAAAAAAAAAAAAAAAA",
            "v2.1000.AAAAAAAAAAAAAAAAAAAAA!",
            "v2.1000.AAAA",
        ] {
            assert_eq!(
                verify_plain(&[mac(KEY)], bad.as_bytes(), 1000, 60),
                Err(Rejection::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify_plain(&[mac(KEY)], b"v2.1000.AAAAAAAAAAAAAAAAAAAAAA", 1000, 60),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn finds_cookies() {
        assert_eq!(find(b"a=1; ab_x=v2.1.t; c=3", "ab_x"), Some(&b"v2.1.t"[..]));
        assert_eq!(find(b"a=1,ab_x=\"q\"", "ab_x"), Some(&b"q"[..]));
        assert_eq!(find(b"ab_xy=1; xab_x=2", "ab_x"), None);
        assert_eq!(find(b";;==;", "ab_x"), None);
        assert_eq!(find(b"ab_x=1; ab_x=2", "ab_x"), Some(&b"1"[..]));
        assert_eq!(find(b"xab_x=0; ab_x=2", "ab_x"), Some(&b"2"[..]));
        assert_eq!(find(b"ab_x=", "ab_x"), Some(&b""[..]));
        assert_eq!(CookieFinder::new("ab_x").name(), b"ab_x");
        // A name only counts at a pair's start, not after a space inside a value.
        assert_eq!(find(b"a=1 ab_x=2", "ab_x"), None);
        assert_eq!(find(b"a=1;\t ab_x= 2 ", "ab_x"), Some(&b"2"[..]));
    }

    #[test]
    fn one_scan_finds_every_name() {
        let names: Vec<Box<[u8]>> = vec![b"cart_id".as_slice().into(), b"ab".as_slice().into()];
        let header = b"session=x.y; ab=v2.1.t; cart_id=c7f3; ab=late, cart_id=later";
        let found = scan(&names, header);
        assert_eq!(found[0], Some(&b"c7f3"[..]));
        assert_eq!(found[1], Some(&b"v2.1.t"[..]));
        assert!(found[2..].iter().all(Option::is_none));
        // Separators in every position of an 8-byte word, and in the tail.
        for pad in 0..20 {
            let header = format!("{}=1;ab=2,cart_id=3", "p".repeat(pad + 1));
            let found = scan(&names, header.as_bytes());
            assert_eq!(
                (found[0], found[1]),
                (Some(&b"3"[..]), Some(&b"2"[..])),
                "{pad}"
            );
        }
    }

    /// The specification of [`scan`], byte by byte.
    fn scan_reference<'h>(names: &[&[u8]], header: &'h [u8]) -> Vec<Option<&'h [u8]>> {
        let mut found = vec![None; names.len()];
        for pair in header.split(|b| *b == b';' || *b == b',') {
            let pair = &pair[pair
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count()..];
            for (slot, name) in found.iter_mut().zip(names) {
                if slot.is_none()
                    && pair.len() > name.len()
                    && pair.starts_with(name)
                    && pair[name.len()] == b'='
                {
                    let value = pair[name.len() + 1..].trim_ascii();
                    *slot = Some(
                        value
                            .strip_prefix(b"\"")
                            .and_then(|v| v.strip_suffix(b"\""))
                            .unwrap_or(value),
                    );
                    break;
                }
            }
        }
        found
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            let _ = verify_plain(&[mac(KEY)], &bytes, 1000, 60);
            let _ = find(&bytes, "ab_x");
        }

        #[test]
        fn scan_matches_the_byte_by_byte_reference(
            bytes in proptest::collection::vec(proptest::sample::select(b"ab=;, \t\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_vec()), 0..200)
        ) {
            let names: [&[u8]; 3] = [b"a", b"ab", b"b"];
            let boxed: Vec<Box<[u8]>> = names.iter().map(|n| (*n).into()).collect();
            let found = scan(&boxed, &bytes);
            proptest::prop_assert_eq!(&found[..3], &scan_reference(&names, &bytes)[..]);
        }
    }
}
