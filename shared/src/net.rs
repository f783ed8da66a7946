//! IP addresses and CIDR networks: parsing Envoy's `source.address` and matching trusted
//! networks, for filters that trust, limit or log by peer address.
//!
//! The parsers accept exactly what `std`'s `FromStr` for `IpAddr`/`SocketAddr` accepts (checked by
//! a property test against `std`), but are a fraction of the size in a wasm module: `core::net`'s
//! generic parser costs ~3.5 KB, a noticeable share of a filter's 150 KB budget.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses an IPv4 (`10.0.0.1`) or IPv6 (`fd00::1`, `::ffff:10.0.0.1`) address.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    parse_ip_bytes(text.as_bytes())
}

// The parsers work on bytes, not `str` patterns: `str::split_once("::")` links core's two-way
// substring searcher and the char-boundary panic formatting (~5 KB of wasm).
fn parse_ip_bytes(text: &[u8]) -> Option<IpAddr> {
    if text.contains(&b':') {
        parse_ipv6(text).map(IpAddr::V6)
    } else {
        parse_ipv4(text).map(IpAddr::V4)
    }
}

/// Parses a dotted-quad IPv4 address (no leading zeros, as `std`), in one pass over the bytes:
/// this runs per request on client addresses, where an iterator of split parts cost ~1k wasm
/// instructions per address.
fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    match parse_ipv4_until_colon(text)? {
        (ip, []) => Some(ip),
        _ => None,
    }
}

/// [`parse_ipv4`] of the bytes before the first `:`, and the rest (empty, or from that `:`):
/// one pass for `ip:port`. Per byte as few wasm operations as we could (this runs per request on
/// client addresses; wasm instructions are the cost): an octet's value is [`NO_DIGIT`] until its
/// first digit, and a digit after a lone `0` (a leading zero, refused as by `std`) or a value
/// above 255 (so also a fourth digit) ends the parse at once, so the value never overflows.
fn parse_ipv4_until_colon(text: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    const NO_DIGIT: u32 = u32::MAX;
    let mut octets = [0u8; 4];
    let mut index = 0usize;
    let mut value = NO_DIGIT;
    let mut rest: &[u8] = &[];
    let mut bytes = text.iter();
    while let Some(&byte) = bytes.next() {
        let digit = u32::from(byte.wrapping_sub(b'0'));
        if digit < 10 {
            value = match value {
                NO_DIGIT => digit,
                0 => return None,
                _ => value * 10 + digit,
            };
            if value > 255 {
                return None;
            }
        } else if byte == b'.' && value != NO_DIGIT {
            *octets.get_mut(index)? = u8::try_from(value).ok()?;
            index += 1;
            value = NO_DIGIT;
        } else if byte == b':' {
            // From the colon on.
            rest = text.get(text.len() - bytes.as_slice().len() - 1..)?;
            break;
        } else {
            return None;
        }
    }
    if value == NO_DIGIT || index != 3 {
        return None;
    }
    *octets.get_mut(3)? = u8::try_from(value).ok()?;
    Some((Ipv4Addr::from(octets), rest))
}

/// Where `needle` (two bytes) first occurs in `text`.
fn find_pair(text: &[u8], needle: [u8; 2]) -> Option<usize> {
    text.windows(2).position(|pair| pair == needle)
}

/// Parses an IPv6 address with `::` compression and an optional trailing dotted quad.
fn parse_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    let (head, tail) = match find_pair(text, *b"::") {
        Some(at) => (text.get(..at)?, Some(text.get(at + 2..)?)),
        None => (text, None),
    };
    let mut groups = [0u16; 8];
    let head_len = read_groups(head, &mut groups, tail.is_none())?;
    match tail {
        None => (head_len == 8).then_some(Ipv6Addr::from(groups)),
        Some(tail) => {
            let mut tail_groups = [0u16; 8];
            let tail_len = read_groups(tail, &mut tail_groups, true)?;
            // `::` stands for at least one zero group.
            if head_len + tail_len > 7 {
                return None;
            }
            let start = 8 - tail_len;
            for (slot, value) in groups
                .iter_mut()
                .skip(start)
                .zip(tail_groups.iter().take(tail_len))
            {
                *slot = *value;
            }
            Some(Ipv6Addr::from(groups))
        }
    }
}

/// Reads `a:b:c` hex groups (or none from an empty string) into `out`; the last may be a dotted
/// quad when `ipv4_allowed` (it fills two groups). Returns the number of groups written.
fn read_groups(text: &[u8], out: &mut [u16; 8], ipv4_allowed: bool) -> Option<usize> {
    if text.is_empty() {
        return Some(0);
    }
    let mut count = 0;
    let mut parts = text.split(|b| *b == b':').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if last && ipv4_allowed && part.contains(&b'.') {
            let [a, b, c, d] = parse_ipv4(part)?.octets();
            *out.get_mut(count)? = u16::from_be_bytes([a, b]);
            *out.get_mut(count + 1)? = u16::from_be_bytes([c, d]);
            return Some(count + 2);
        }
        if part.is_empty() || part.len() > 4 {
            return None;
        }
        let mut value = 0u16;
        for digit in part {
            let digit = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                b'A'..=b'F' => digit - b'A' + 10,
                _ => return None,
            };
            value = (value << 4) | u16::from(digit);
        }
        *out.get_mut(count)? = value;
        count += 1;
    }
    Some(count)
}

fn parse_decimal(text: &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for digit in text {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u32::from(digit - b'0'))?;
    }
    Some(value)
}

/// Parses a socket address as Envoy prints it in `source.address` / `destination.address`:
/// `1.2.3.4:5678` or `[::1]:5678`; returns the IP.
fn parse_socket_ip(text: &[u8]) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix(b"[") {
        let at = find_pair(rest, *b"]:")?;
        parse_port(rest.get(at + 2..)?)?;
        let inside = rest.get(..at)?;
        // A link-local peer carries its zone as a numeric scope id (`[fe80::1%2]:80`, as `std`
        // reads a `SocketAddrV6`): the address is the part before `%`.
        let address = match inside.iter().position(|b| *b == b'%') {
            Some(percent) => {
                parse_std_decimal(inside.get(percent + 1..)?)?;
                inside.get(..percent)?
            }
            None => inside,
        };
        return parse_ipv6(address).map(IpAddr::V6);
    }
    let at = text.iter().position(|b| *b == b':')?;
    parse_port(text.get(at + 1..)?)?;
    parse_ipv4(text.get(..at)?).map(IpAddr::V4)
}

/// A decimal `u32` of any length, leading zeros allowed (how `std` reads a port or a scope id).
fn parse_std_decimal(text: &[u8]) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u32, |value, byte| {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value.checked_mul(10)?.checked_add(u32::from(digit))
    })
}

fn parse_port(text: &[u8]) -> Option<u16> {
    parse_std_decimal(text).and_then(|v| u16::try_from(v).ok())
}

/// Parses Envoy's `source.address` property (`1.2.3.4:5678`, `[::1]:5678`, or a bare address).
pub fn parse_peer_address(raw: &[u8]) -> Option<IpAddr> {
    // The same as `parse_socket_ip(raw).or_else(|| parse_ip_bytes(raw))`, in one pass for the
    // common bare and `ip:port` IPv4 forms (this runs per request on client addresses).
    if raw.first() == Some(&b'[') {
        // Neither bare form starts with `[`.
        return parse_socket_ip(raw);
    }
    match parse_ipv4_until_colon(raw) {
        Some((ip, [])) => Some(IpAddr::V4(ip)),
        Some((ip, [b':', port @ ..])) if parse_port(port).is_some() => Some(IpAddr::V4(ip)),
        // Not IPv4 (with a port): IPv6 if there is a colon at all.
        _ if raw.contains(&b':') => parse_ipv6(raw).map(IpAddr::V6),
        _ => None,
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`; a bare address means one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cidr `{0}`: expected an ip address with an optional /prefix")]
pub struct InvalidCidr(pub String);

impl Cidr {
    /// Parses `addr[/prefix]`.
    ///
    /// # Errors
    /// [`InvalidCidr`] when the address or prefix does not parse or the prefix is too long.
    pub fn try_new(text: &str) -> Result<Self, InvalidCidr> {
        let invalid = || InvalidCidr(text.to_owned());
        let bytes = text.as_bytes();
        let (addr, prefix) = match bytes.iter().position(|b| *b == b'/') {
            Some(at) => (bytes.get(..at).unwrap_or_default(), bytes.get(at + 1..)),
            None => (bytes, None),
        };
        let network = parse_ip_bytes(addr).ok_or_else(invalid)?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.len() <= 3 => parse_decimal(p).ok_or_else(invalid)?,
            Some(_) => return Err(invalid()),
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        let prefix = u8::try_from(prefix).map_err(|_| invalid())?;
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 address matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn std_ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    #[test]
    fn agrees_with_std_on_tricky_addresses() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "1.2.3.4 ",
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1::2::3",
            ":::",
            "1:::2",
            ":1::2",
            "1::2:",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "1.2.3.4::",
            "::1.2.3.4:5",
            "fe80::1%eth0",
            "12345::",
            "ABCD::ef",
            "",
            "+1.2.3.4",
        ] {
            assert_eq!(parse_ip(text), std_ip(text), "{text:?}");
        }
    }

    #[test]
    fn peer_addresses_in_envoy_formats() {
        assert_eq!(
            parse_peer_address(b"10.0.0.1:443"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_peer_address(b"[::1]:8080"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            parse_peer_address(b"fd00::7"),
            Some("fd00::7".parse().unwrap())
        );
        // Numeric scope ids of link-local peers and ports with leading zeros, exactly as `std`
        // reads a `SocketAddr` (found by `make fuzz`: `[::%1]:4`, `0.0.0.1:008280`).
        for text in [
            "[fe80::1%2]:80",
            "[::%1]:4",
            "[::1%0004294967295]:1",
            "[::1%4294967296]:1",
            "[::1%]:1",
            "[::1%eth0]:1",
            "[::1%-1]:1",
            "[::1%%1]:1",
            "[1.2.3.4%1]:1",
            "0.0.0.1:008280",
            "10.0.0.1:0000000000000000080",
            "10.0.0.1:65536",
            "10.0.0.1:+80",
            "[::1]:00443",
        ] {
            let std = text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip());
            assert_eq!(parse_peer_address(text.as_bytes()), std, "{text:?}");
        }
        for bad in [
            &b"10.0.0.1:99999"[..],
            b"[::1]",
            b"::1]:80",
            b"\xff",
            b"host:80",
            b"",
        ] {
            assert_eq!(parse_peer_address(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net = Cidr::try_new("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(
            Cidr::try_new("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::try_new("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            Cidr::try_new("192.168.1.1")
                .unwrap()
                .contains("192.168.1.1".parse().unwrap())
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/0008",
        ] {
            assert!(Cidr::try_new(bad).is_err(), "{bad}");
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Any text over the address alphabet parses exactly as std parses it.
            #[test]
            fn same_answer_as_std(text in "[0-9a-fA-F:.]{0,45}") {
                prop_assert_eq!(parse_ip(&text), std_ip(&text), "{:?}", text);
            }

            /// Dotted quads (and near misses: leading zeros, long or empty octets) as std.
            #[test]
            fn ipv4_as_std(text in "[0-9.]{0,20}") {
                prop_assert_eq!(parse_ip(&text), std_ip(&text), "{:?}", text);
            }

            /// The one-pass peer parser answers as "socket address, else bare address" does.
            #[test]
            fn peer_address_is_socket_else_bare(text in "[0-9a-fA-F:.\\[\\]]{0,50}") {
                let bytes = text.as_bytes();
                prop_assert_eq!(
                    parse_peer_address(bytes),
                    parse_socket_ip(bytes).or_else(|| parse_ip_bytes(bytes)),
                    "{:?}", text
                );
            }

            /// Every address std prints (compressed, with or without embedded IPv4) reads back.
            #[test]
            fn reads_what_std_prints(bits in any::<u128>(), v4 in any::<u32>()) {
                let v6 = Ipv6Addr::from(bits);
                prop_assert_eq!(parse_ip(&v6.to_string()), Some(IpAddr::V6(v6)));
                let v4 = Ipv4Addr::from(v4);
                prop_assert_eq!(parse_ip(&v4.to_string()), Some(IpAddr::V4(v4)));
                let mapped = v4.to_ipv6_mapped();
                prop_assert_eq!(parse_ip(&mapped.to_string()), Some(IpAddr::V6(mapped)));
                prop_assert_eq!(parse_peer_address(format!("{v4}:8080").as_bytes()), Some(IpAddr::V4(v4)));
                let socket = format!("[{v6}]:80");
                prop_assert_eq!(parse_peer_address(socket.as_bytes()), Some(IpAddr::V6(v6)));
            }
        }
    }
}
