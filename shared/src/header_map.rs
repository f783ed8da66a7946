//! The proxy-wasm serialized header map (ABI v0.2.1 §1.4), read without copying its entries.
//!
//! Layout, little-endian: `u32 count`, `count × (u32 key_len, u32 value_len)`, then each key and
//! value followed by one NUL byte. A whole-map read ([`crate::host::Host::header_map`]) hands us
//! that block once; [`HeaderMap`] keeps it and yields `(name, value)` slices into it, so a filter
//! that truly needs every header pays one allocation, not one per entry. Filters that need a few
//! headers should read them one by one instead ([`crate::host::Host::header`]).
//!
//! Parsing is strict in the way cpp-host is: every length is checked against the end of the
//! block and a malformed block reads as empty (never a panic). The host's empty-map encodings
//! (no bytes, a 4-byte zero count, a single NUL) all read as empty.

/// A header map as the proxy serialized it; iterate with [`HeaderMap::iter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    /// Number of entries, validated at construction (0 for a malformed block).
    len: usize,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

/// Validates the block; returns the number of entries when every length fits exactly.
fn validate(bytes: &[u8]) -> Option<usize> {
    let count = read_u32(bytes, 0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    for i in 0..count {
        let key_len = read_u32(bytes, 4 + i * 8)?;
        let value_len = read_u32(bytes, 8 + i * 8)?;
        data = data
            .checked_add(key_len)?
            .checked_add(value_len)?
            .checked_add(2)?;
        if data > bytes.len() {
            return None;
        }
    }
    (data == bytes.len()).then_some(count)
}

impl HeaderMap {
    /// Wraps a serialized block as the proxy returned it.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let len = validate(&bytes).unwrap_or(0);
        Self { bytes, len }
    }

    /// Serializes `pairs` (tests, and hosts that build maps).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Self {
        Self::from_bytes(serialize(pairs))
    }

    /// Number of entries (duplicates counted separately).
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no entries.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry in the proxy's order, as borrowed `(name, value)` bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut offset = 4 + self.len * 8;
        (0..self.len).map_while(move |i| {
            let key_len = read_u32(&self.bytes, 4 + i * 8)?;
            let value_len = read_u32(&self.bytes, 8 + i * 8)?;
            let key = self.bytes.get(offset..offset + key_len)?;
            let value_at = offset + key_len + 1;
            let value = self.bytes.get(value_at..value_at + value_len)?;
            offset = value_at + value_len + 1;
            Some((key, value))
        })
    }

    /// The first value of `name` (compared ASCII case-insensitively).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| value)
    }
}

/// Serializes pairs in the ABI's layout (what the module sends for `set_header_map_pairs`, local
/// reply headers and callout headers). An empty list is the 4-byte zero count, as the SDK sends.
pub fn serialize<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let (count, size) = measure(pairs.clone());
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(count));
    for (key, value) in pairs.clone() {
        out.extend_from_slice(&lengths(key, value));
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// [`serialize`] into a buffer on the stack (no allocation): `false`, with `out` untouched, when
/// the block does not fit in its `N` bytes. Local replies (e.g. a 429 with its rate-limit
/// headers) are small: the allocation and its free cost more than writing the block.
pub fn serialize_into<'a, const N: usize>(
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    out: &mut arrayvec::ArrayVec<u8, N>,
) -> bool {
    let (count, size) = measure(pairs.clone());
    if size > out.remaining_capacity() {
        return false;
    }
    // Cannot fail: the size was checked.
    let _ = out.try_extend_from_slice(&len32(count));
    for (key, value) in pairs.clone() {
        let _ = out.try_extend_from_slice(&lengths(key, value));
    }
    for (key, value) in pairs {
        let _ = out.try_extend_from_slice(key);
        let _ = out.try_push(0);
        let _ = out.try_extend_from_slice(value);
        let _ = out.try_push(0);
    }
    true
}

/// Number of pairs and size of their block.
fn measure<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> (usize, usize) {
    pairs
        .into_iter()
        .fold((0, 4), |(count, size), (key, value)| {
            (count + 1, size + 8 + key.len() + value.len() + 2)
        })
}

/// A length as the block stores it. Lengths beyond u32 cannot reach the proxy anyway (it caps
/// maps at 1 MiB): saturated.
fn len32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

/// The two lengths of a pair, written at once.
fn lengths(key: &[u8], value: &[u8]) -> [u8; 8] {
    let both = u64::from_le_bytes([0; 8])
        | u64::from(u32::from_le_bytes(len32(key.len())))
        | (u64::from(u32::from_le_bytes(len32(value.len()))) << 32);
    both.to_le_bytes()
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn round_trips_pairs_in_order_with_duplicates() {
        let pairs: [(&[u8], &[u8]); 3] = [(b":method", b"GET"), (b"x", b"1"), (b"X", b"\xff")];
        let map = HeaderMap::from_pairs(pairs.iter().copied());
        assert_eq!(map.len(), 3);
        assert_eq!(map.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(map.get("x"), Some(&b"1"[..]));
        assert_eq!(map.get_all("x").collect::<Vec<_>>(), [&b"1"[..], b"\xff"]);
        assert_eq!(map.get("absent"), None);
    }

    #[test]
    fn matches_the_abi_example_bytes() {
        let bytes = serialize([(&b":method"[..], &b"GET"[..])]);
        let mut expected = vec![1, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0];
        expected.extend_from_slice(b":method\0GET\0");
        assert_eq!(bytes, expected);
        assert_eq!(serialize(std::iter::empty()), [0, 0, 0, 0]);
        let mut small = arrayvec::ArrayVec::<u8, 64>::new();
        assert!(serialize_into([(&b":method"[..], &b"GET"[..])], &mut small));
        assert_eq!(&small[..], &expected[..]);
        let mut tiny = arrayvec::ArrayVec::<u8, 23>::new();
        assert!(!serialize_into([(&b":method"[..], &b"GET"[..])], &mut tiny));
        assert!(tiny.is_empty(), "untouched when it does not fit");
    }

    #[test]
    fn every_empty_encoding_and_every_malformed_block_reads_as_empty() {
        for bytes in [
            vec![],
            vec![0],
            vec![0, 0, 0, 0],
            vec![1, 0, 0, 0],
            vec![1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, b'a', 0, 0],
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        ] {
            let map = HeaderMap::from_bytes(bytes.clone());
            assert!(map.is_empty(), "{bytes:?}");
            assert_eq!(map.iter().count(), 0);
        }
        // Trailing garbage after a valid block: refused like cpp-host does.
        let mut bytes = serialize([(&b"a"[..], &b"b"[..])]);
        bytes.push(7);
        assert!(HeaderMap::from_bytes(bytes).is_empty());
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let map = HeaderMap::from_bytes(bytes);
            proptest::prop_assert_eq!(map.iter().count(), map.len());
        }
    }
}
