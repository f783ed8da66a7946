//! proxy-wasm wire encodings: header maps (§1.4) and property paths (§1.5).

/// Envoy/cpp-host caps on a map sent by the module: larger maps parse as empty.
pub const MAX_MAP_BYTES: usize = 1024 * 1024;
/// Envoy/cpp-host cap on the number of pairs in a map sent by the module.
pub const MAX_MAP_PAIRS: usize = 1024;

/// Serializes pairs: u32 count, (key_len, value_len)*, then key\0 value\0 for each pair.
pub fn encode_map<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let pairs: Vec<(&[u8], &[u8])> = pairs.into_iter().collect();
    let mut out = Vec::new();
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (k, v) in &pairs {
        out.extend_from_slice(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    for (k, v) in &pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let slice = bytes.get(at..at.checked_add(4)?)?;
    let arr: [u8; 4] = slice.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(arr)).ok()
}

/// Parses a map sent by the module the way cpp-host's `PairsUtil::toPairs` does: strict
/// (every length in bounds, NUL terminators present, nothing trailing), capped at 1 MiB and 1024
/// pairs. Any violation yields `None`; callers treat it as an empty map, as Envoy does.
/// Empty input (size 0) and a single `0x00` byte are valid empty maps.
pub fn decode_map(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() || bytes == [0] {
        return Some(Vec::new());
    }
    if bytes.len() > MAX_MAP_BYTES {
        return None;
    }
    let count = read_u32(bytes, 0)?;
    if count > MAX_MAP_PAIRS {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    let mut at = 4usize;
    for _ in 0..count {
        let k = read_u32(bytes, at)?;
        let v = read_u32(bytes, at.checked_add(4)?)?;
        sizes.push((k, v));
        at = at.checked_add(8)?;
    }
    let mut pairs = Vec::with_capacity(count);
    for (k, v) in sizes {
        let key_end = at.checked_add(k)?;
        let key = bytes.get(at..key_end)?.to_vec();
        if bytes.get(key_end) != Some(&0) {
            return None;
        }
        at = key_end.checked_add(1)?;
        let value_end = at.checked_add(v)?;
        let value = bytes.get(at..value_end)?.to_vec();
        if bytes.get(value_end) != Some(&0) {
            return None;
        }
        at = value_end.checked_add(1)?;
        pairs.push((key, value));
    }
    if at != bytes.len() {
        return None;
    }
    Some(pairs)
}

/// Splits a property path on NUL bytes (`request\0headers\0x-foo`).
pub fn decode_path(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Joins path segments with NUL bytes, as the SDK sends them.
pub fn encode_path<S: AsRef<str>>(segments: &[S]) -> Vec<u8> {
    segments
        .iter()
        .map(|s| s.as_ref().as_bytes())
        .collect::<Vec<_>>()
        .join(&0u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_example() {
        let bytes = encode_map([(&b":method"[..], &b"GET"[..])]);
        let mut expected = vec![1, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0];
        expected.extend_from_slice(b":method\0GET\0");
        assert_eq!(bytes, expected);
        assert_eq!(
            decode_map(&bytes),
            Some(vec![(b":method".to_vec(), b"GET".to_vec())])
        );
    }

    #[test]
    fn rejects_trailing_bytes_missing_nul_and_too_many_pairs() {
        let mut bytes = encode_map([(&b"a"[..], &b"b"[..])]);
        bytes.push(7);
        assert_eq!(decode_map(&bytes), None);
        let mut no_nul = encode_map([(&b"a"[..], &b"b"[..])]);
        if let Some(last) = no_nul.last_mut() {
            *last = b'x';
        }
        assert_eq!(decode_map(&no_nul), None);
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..1025)
            .map(|i| (format!("k{i}").into_bytes(), b"v".to_vec()))
            .collect();
        let big = encode_map(many.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(decode_map(&big), None);
    }

    #[test]
    fn accepts_all_empty_forms() {
        assert_eq!(decode_map(&[]), Some(vec![]));
        assert_eq!(decode_map(&[0]), Some(vec![]));
        assert_eq!(decode_map(&[0, 0, 0, 0]), Some(vec![]));
    }

    #[test]
    fn paths_round_trip() {
        let p = encode_path(&["request", "headers", "x-foo"]);
        assert_eq!(p, b"request\0headers\0x-foo");
        assert_eq!(decode_path(&p), vec!["request", "headers", "x-foo"]);
    }
}
