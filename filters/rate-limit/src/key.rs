//! Keys: which bucket of a rule a request charges, as bytes, and the slot (shared-data key)
//! that holds it.
//!
//! Keys are short and typed by their first byte, so values of different sources never meet:
//! `4`/`6` + the masked address bytes, `v` + a header or query value, `x` for a value outside
//! the allow-list, `o` for a value longer than [`MAX_VALUE_LEN`] (one bucket for all of them:
//! storing them would let a client mint keys of any size), and the empty key for fixed buckets.

use std::net::IpAddr;

use arrayvec::ArrayVec;
use meshward_core::net::parse_peer_address;

use crate::table::MAX_KEY_LEN;

/// Longest header or query value used as a key as is.
pub const MAX_VALUE_LEN: usize = 128;

/// A key, on the stack.
pub type Key = ArrayVec<u8, MAX_KEY_LEN>;

/// Where the client address comes from, and how addresses are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// Proxies in front of this one that append to `X-Forwarded-For`: the client is the
    /// `trusted_hops`-th entry from the right. 0: the peer address (`source.address`).
    pub trusted_hops: u32,
    /// IPv4 addresses are grouped by this prefix length (32: one bucket per address).
    pub ipv4_prefix: u8,
    /// IPv6 addresses are grouped by this prefix length (default 64: one bucket per subnet,
    /// as a single host commonly owns a /64).
    pub ipv6_prefix: u8,
}

/// The client address of a request: the `trusted_hops`-th `X-Forwarded-For` entry from the right
/// when configured and well-formed, else the peer address (`peer()`). Only the last `trusted_hops` entries
/// are looked at, so what a client writes to the left is never read.
pub fn client_ip(
    config: &ClientAddress,
    xff: Option<&[u8]>,
    peer: impl FnOnce() -> Option<Vec<u8>>,
) -> Option<IpAddr> {
    let hops = usize::try_from(config.trusted_hops).unwrap_or(usize::MAX);
    if hops > 0
        && let Some(xff) = xff
        && let Some(entry) = nth_from_right(xff, hops)
        && let Some(ip) = parse_peer_address(entry.trim_ascii())
    {
        return Some(ip);
    }
    // The peer address is read only when needed (one hostcall less per request).
    peer().as_deref().and_then(parse_peer_address)
}

/// The `n`-th (1-based) comma-separated entry of `list` counted from the right, as
/// `list.rsplit(',').nth(n - 1)`, by one backwards scan over the last `n` entries only.
fn nth_from_right(list: &[u8], n: usize) -> Option<&[u8]> {
    let mut end = list.len();
    let mut left = n;
    loop {
        let head = list.get(..end)?;
        let start = head.iter().rposition(|b| *b == b',').map_or(0, |at| at + 1);
        left = left.checked_sub(1)?;
        if left == 0 {
            return head.get(start..);
        }
        // No comma left: fewer than `n` entries.
        end = start.checked_sub(1)?;
    }
}

fn masked<const N: usize>(octets: [u8; N], prefix: u8) -> [u8; N] {
    let mut out = octets;
    let mut bits = usize::from(prefix);
    for byte in &mut out {
        if bits >= 8 {
            bits -= 8;
        } else {
            *byte &= !(0xffu8
                .checked_shr(u32::try_from(bits).unwrap_or(8))
                .unwrap_or(0));
            bits = 0;
        }
    }
    out
}

/// The key of a client address: its network under the configured prefix length.
pub fn address_key(config: &ClientAddress, ip: IpAddr, out: &mut Key) {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    match ip {
        IpAddr::V4(v4) => {
            let _ = out.try_push(b'4');
            let _ = out.try_extend_from_slice(&masked(v4.octets(), config.ipv4_prefix));
        }
        IpAddr::V6(v6) => {
            let _ = out.try_push(b'6');
            let _ = out.try_extend_from_slice(&masked(v6.octets(), config.ipv6_prefix));
        }
    }
}

/// The key of a header or query value, checked against the allow-list (if any).
pub fn value_key(value: &[u8], allow_list: Option<&[Vec<u8>]>, out: &mut Key) {
    if allow_list.is_some_and(|list| !list.iter().any(|allowed| allowed == value)) {
        let _ = out.try_push(b'x');
    } else if value.len() > MAX_VALUE_LEN {
        let _ = out.try_push(b'o');
    } else {
        let _ = out.try_push(b'v');
        let _ = out.try_extend_from_slice(value);
    }
}

/// The raw (not percent-decoded) value of query parameter `name` in `path`, first occurrence;
/// a parameter without `=` has the empty value.
pub fn query_value<'a>(path: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let at = path.iter().position(|b| *b == b'?')?;
    let query = path.get(at + 1..)?;
    let query = match query.iter().position(|b| *b == b'#') {
        Some(hash) => query.get(..hash)?,
        None => query,
    };
    query.split(|b| *b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (pair.get(..eq)?, pair.get(eq + 1..)?),
            None => (pair, &[][..]),
        };
        (key == name).then_some(value)
    })
}

/// The slot of `key` among `slots`: FNV-1a over the key, seeded per rule (same on every VM).
pub fn slot(key: &[u8], seed: u64, slots: u32) -> u32 {
    if slots <= 1 {
        return 0;
    }
    let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits are weak for short keys.
    hash ^= hash >> 29;
    u32::try_from(hash % u64::from(slots)).unwrap_or(0)
}

/// FNV-1a 64 of bytes (the configuration hash that names a configuration's shared-data keys).
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOPS1: ClientAddress = ClientAddress {
        trusted_hops: 1,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
    };

    fn key_of(config: &ClientAddress, peer: &str, xff: Option<&str>) -> Key {
        let mut key = Key::new();
        if let Some(ip) = client_ip(config, xff.map(str::as_bytes), || Some(peer.into())) {
            address_key(config, ip, &mut key);
        }
        key
    }

    #[test]
    fn xff_is_read_from_the_right_only() {
        let a = key_of(&HOPS1, "10.0.0.1:5000", Some("1.1.1.1, 203.0.113.9"));
        let b = key_of(&HOPS1, "10.0.0.1:5000", Some("9.9.9.9, 203.0.113.9"));
        assert_eq!(a, b);
        assert_eq!(&a[..], &[b'4', 203, 0, 113, 9]);
        // Garbage, zones, too few entries: the peer address.
        for xff in ["garbage", "fe80::1%eth0", "", ",,,", "1.2.3.4,  "] {
            assert_eq!(
                &key_of(&HOPS1, "10.0.0.1:5000", Some(xff))[..],
                &[b'4', 10, 0, 0, 1],
                "{xff:?}"
            );
        }
        let two = ClientAddress {
            trusted_hops: 2,
            ..HOPS1
        };
        assert_eq!(
            &key_of(&two, "10.0.0.1:5000", Some("6.6.6.6, 5.5.5.5, 10.1.1.1"))[..],
            &[b'4', 5, 5, 5, 5]
        );
        let none = ClientAddress {
            trusted_hops: 0,
            ..HOPS1
        };
        assert_eq!(
            &key_of(&none, "10.0.0.1:5000", Some("5.5.5.5"))[..],
            &[b'4', 10, 0, 0, 1]
        );
    }

    #[test]
    fn ipv6_is_grouped_by_prefix_and_mapped_v4_is_v4() {
        let a = key_of(&HOPS1, "[2001:db8:1:2:aaaa::1]:443", None);
        let b = key_of(&HOPS1, "[2001:db8:1:2:bbbb::9]:443", None);
        let c = key_of(&HOPS1, "[2001:db8:1:3::1]:443", None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v4 = ClientAddress {
            ipv4_prefix: 24,
            ..HOPS1
        };
        assert_eq!(
            &key_of(&v4, "[::ffff:10.0.0.77]:1", None)[..],
            &[b'4', 10, 0, 0, 0]
        );
        let odd = ClientAddress {
            ipv6_prefix: 60,
            ..HOPS1
        };
        let k = key_of(&odd, "[2001:db8:1:2ff::]:1", None);
        assert_eq!(k.get(8), Some(&0xf0));
        assert_eq!(k.get(7), Some(&0x02));
    }

    #[test]
    fn values_and_queries() {
        let mut k = Key::new();
        value_key(b"tenant-a", None, &mut k);
        assert_eq!(&k[..], b"vtenant-a");
        let list = [b"gold".to_vec()];
        let mut k = Key::new();
        value_key(b"tenant-a", Some(&list), &mut k);
        assert_eq!(&k[..], b"x");
        let mut k = Key::new();
        value_key(&[b'a'; 10_000], None, &mut k);
        assert_eq!(&k[..], b"o");
        assert_eq!(
            query_value(b"/a?x=1&key=abc&key=d", b"key"),
            Some(&b"abc"[..])
        );
        assert_eq!(query_value(b"/a?flag&y=2#key=3", b"flag"), Some(&b""[..]));
        assert_eq!(query_value(b"/a?y=2#key=3", b"key"), None);
        assert_eq!(query_value(b"/a", b"key"), None);
        assert!(slot(b"abc", 1, 7) < 7);
        assert_eq!(slot(b"abc", 1, 1), 0);
    }

    proptest::proptest! {
        /// The backwards scan picks what `rsplit(',').nth(n - 1)` picks.
        #[test]
        fn nth_from_right_is_rsplit_nth(list in "[a,]{0,12}", n in 1usize..6) {
            proptest::prop_assert_eq!(
                nth_from_right(list.as_bytes(), n),
                list.as_bytes().rsplit(|b| *b == b',').nth(n - 1)
            );
        }

        /// Any `X-Forwarded-For` bytes: a defined key, never a panic.
        #[test]
        fn any_forwarded_for(xff in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), hops in 0u32..17) {
            let config = ClientAddress { trusted_hops: hops, ..HOPS1 };
            let ip = client_ip(&config, Some(&xff), || Some(b"10.0.0.1:1".to_vec()));
            let mut key = Key::new();
            address_key(&config, ip.unwrap(), &mut key);
            proptest::prop_assert!(key.len() == 5 || key.len() == 17);
        }
    }
}
