//! A plain-data snapshot of the request headers, read once per phase.
//!
//! Envoy's header maps disappear once a header callback lets the request continue, and every read
//! is a hostcall, so filters copy the map once ([`RequestView::from_host`]) and decide over this
//! value. Names are lower-case (as Envoy keeps them); every value of a duplicated header is kept
//! in order; values stay bytes because they may be non-UTF-8.

use crate::host::{HeaderPairs, Host, HostResult, MapKind};

/// The request as filter logic sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestView {
    method: String,
    path: String,
    authority: String,
    scheme: String,
    headers: HeaderPairs,
}

impl RequestView {
    /// Reads the request header map with one hostcall.
    ///
    /// # Errors
    ///
    /// The host's error if the map cannot be read.
    pub fn from_host(host: &(impl Host + ?Sized)) -> HostResult<Self> {
        Ok(Self::from_pairs(host.header_map(MapKind::RequestHeaders)?))
    }

    /// Builds the view from header pairs (names are lower-cased here if they were not already).
    pub fn from_pairs(mut headers: HeaderPairs) -> Self {
        for (name, _) in &mut headers {
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                name.make_ascii_lowercase();
            }
        }
        let pseudo = |wanted: &str| {
            headers
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
                .unwrap_or_default()
        };
        let method = pseudo(":method");
        let path = pseudo(":path");
        let authority = pseudo(":authority");
        let scheme = pseudo(":scheme");
        Self {
            method,
            path,
            authority,
            scheme,
            headers,
        }
    }

    /// Test and tool convenience: a request with these pseudo-headers and extra headers.
    pub fn build(method: &str, authority: &str, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut pairs: HeaderPairs = vec![
            (":authority".to_owned(), authority.as_bytes().to_vec()),
            (":path".to_owned(), path.as_bytes().to_vec()),
            (":method".to_owned(), method.as_bytes().to_vec()),
            (":scheme".to_owned(), b"http".to_vec()),
        ];
        pairs.extend(
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())),
        );
        Self::from_pairs(pairs)
    }

    /// `:method` (empty when absent).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// `:path`, including any query string (empty when absent).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `:path` without the query string or fragment.
    pub fn path_without_query(&self) -> &str {
        self.path
            .split_once(['?', '#'])
            .map_or(self.path.as_str(), |(path, _)| path)
    }

    /// The query string after `?`, if any (without a fragment).
    pub fn query(&self) -> Option<&str> {
        let (_, rest) = self.path.split_once('?')?;
        Some(rest.split_once('#').map_or(rest, |(query, _)| query))
    }

    /// `:authority` as sent (may include a port).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `:authority` without the port, lower-cased (IPv6 literals keep their brackets).
    pub fn host(&self) -> String {
        host_without_port(&self.authority).to_ascii_lowercase()
    }

    /// `:scheme` (empty when absent).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Every header, pseudo-headers included, in the proxy's order.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// The first value of `name` if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Whether `name` is present at least once.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// Strips a `:port` suffix from an authority: `example.com:8080` → `example.com`,
/// `[::1]:443` → `[::1]`; a bare IPv6 literal without brackets is returned unchanged.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .and_then(|end| authority.get(..=end))
            .unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: an IPv6 literal, not host:port.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::host::mock::MockHost;

    #[test]
    fn reads_pseudo_headers_and_all_values_from_the_host() {
        let host = MockHost::new()
            .with_request_header(":authority", "API.Example.com:8443")
            .with_request_header(":path", "/v1/items?limit=5#top")
            .with_request_header(":method", "GET")
            .with_request_header(":scheme", "https")
            .with_request_header("X-Tag", "a")
            .with_request_header("x-tag", "b");
        let view = RequestView::from_host(&host).unwrap();
        assert_eq!(view.method(), "GET");
        assert_eq!(view.path(), "/v1/items?limit=5#top");
        assert_eq!(view.path_without_query(), "/v1/items");
        assert_eq!(view.query(), Some("limit=5"));
        assert_eq!(view.host(), "api.example.com");
        assert_eq!(view.scheme(), "https");
        assert_eq!(view.header_str("X-TAG"), Some("a"));
        assert_eq!(
            view.header_values("x-tag").collect::<Vec<_>>(),
            [b"a", b"b"]
        );
        assert!(!view.has_header("missing"));
    }

    #[test]
    fn strips_ports_from_authorities() {
        let cases = [
            ("example.com", "example.com"),
            ("example.com:80", "example.com"),
            ("[::1]:443", "[::1]"),
            ("[::1]", "[::1]"),
            ("::1", "::1"),
            ("host:notaport", "host:notaport"),
            ("", ""),
        ];
        for (authority, host) in cases {
            assert_eq!(host_without_port(authority), host, "{authority}");
        }
    }

    #[test]
    fn non_utf8_values_survive_as_bytes() {
        let view = RequestView::from_pairs(vec![("x-bin".to_owned(), vec![0xff, 0x00])]);
        assert_eq!(view.header("x-bin"), Some(&[0xff, 0x00][..]));
        assert_eq!(view.header_str("x-bin"), None);
        assert_eq!(view.method(), "");
    }
}
