//! IP address parsing (`meshward_core::net`), compared with `std`'s parsers, CIDR parsing and
//! matching, and the rate-limit client address (`X-Forwarded-For` with trusted hops, then the
//! peer address) and its key.
//!
//! Input: trusted hops and prefix lengths, a CIDR text, an `X-Forwarded-For` value, the peer.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use meshward_core::net::{Cidr, parse_ip, parse_peer_address};
use meshward_filter_rate_limit::key::{ClientAddress, Key, address_key, client_ip};
use meshward_fuzz::Cursor;

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let config = ClientAddress {
        trusted_hops: u32::from(cursor.byte() % 20),
        ipv4_prefix: cursor.byte() % 40,
        ipv6_prefix: cursor.byte(),
    };
    let cidr_text = cursor.chunk();
    let xff = cursor.chunk();
    let peer = cursor.rest();

    // Same answers as std on every input (the module promises exactly std's grammar).
    if let Ok(text) = std::str::from_utf8(peer) {
        assert_eq!(
            parse_ip(text),
            text.parse::<IpAddr>().ok(),
            "parse_ip({text:?})"
        );
        let expected = text
            .parse::<SocketAddr>()
            .map(|s| s.ip())
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok());
        assert_eq!(
            parse_peer_address(peer),
            expected,
            "parse_peer_address({text:?})"
        );
    } else {
        assert_eq!(parse_peer_address(peer), None);
    }

    if let Ok(cidr) = std::str::from_utf8(cidr_text)
        .map_err(|_| ())
        .and_then(|t| Cidr::try_new(t).map_err(|_| ()))
    {
        if let Some(ip) = parse_peer_address(peer) {
            let _ = cidr.contains(ip);
        }
    }

    let ip = client_ip(&config, Some(xff), || Some(peer.to_vec()));
    if config.trusted_hops == 0 {
        assert_eq!(ip, parse_peer_address(peer), "hops 0 must use the peer");
    }
    if let Some(ip) = ip {
        let mut key = Key::new();
        address_key(&config, ip, &mut key);
        assert!(!key.is_empty());
    }
});
