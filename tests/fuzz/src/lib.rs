//! Helpers shared by the fuzz targets: a cursor that decodes structured input (headers, times,
//! statuses) from libFuzzer's bytes, and a driver that runs one filter's real `HttpFilter`
//! implementation (configure, request headers, response headers, log) against `MockHost`.
//!
//! Decoding never fails: a short input just ends early (missing bytes read as zero), so every
//! input libFuzzer tries exercises the code under test.

use meshward_core::host::MapKind;
use meshward_core::host::mock::MockHost;
use meshward_core::plugin::HttpFilter;

/// The shipped filters, in the order a selector byte picks them.
pub const FILTERS: [&str; 5] = [
    "trace-id",
    "rate-limit",
    "jwt-auth",
    "ab-routing",
    "metric-tag",
];

/// 2026-01-01T00:00:00Z, the mock host's (and the wasm host's) start time, in nanoseconds.
pub const START_NS: u64 = 1_767_225_600 * 1_000_000_000;

/// Header names the filters read, so decoded values reach their parsers.
pub const INTERESTING: &[&str] = &[
    "x-request-id",
    "x-user-id",
    "x-correlation-id",
    "x-original-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-real-ip",
    "x-api-key",
    "x-variant",
    "x-ab-variant",
    "x-ab-override",
    "x-tenant",
    "content-type",
    "user-agent",
    "grpc-status",
    ":status",
];

/// Reads structured values off the fuzzer's bytes.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte (0 at the end).
    pub fn byte(&mut self) -> u8 {
        let (first, rest) = self
            .data
            .split_first()
            .map_or((0, &[][..]), |(b, r)| (*b, r));
        self.data = rest;
        first
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.byte();
        }
        u64::from_le_bytes(bytes)
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// A length-prefixed chunk (one length byte; 255 means a 2-byte length follows, so huge
    /// values are reachable).
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = match self.byte() {
            255 => usize::from(self.u16()),
            n => usize::from(n),
        };
        self.take(len)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// A header name: mostly one the filters read, else arbitrary lower-case ASCII.
    pub fn header_name(&mut self) -> String {
        let pick = self.byte();
        if let Some(name) = INTERESTING.get(usize::from(pick)) {
            return (*name).to_owned();
        }
        let raw = self.chunk();
        raw.iter()
            .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789-_:"[usize::from(*b) % 39]))
            .collect()
    }

    /// Up to `max` header pairs (names may repeat: duplicates are kept in order).
    pub fn headers(&mut self, max: usize) -> Vec<(String, Vec<u8>)> {
        let count = usize::from(self.byte()) % (max + 1);
        let mut pairs = Vec::with_capacity(count);
        while pairs.len() < count && !self.is_empty() {
            pairs.push((self.header_name(), self.chunk().to_vec()));
        }
        pairs
    }
}

/// Checks what a stream callback left in the mock: local replies are well formed.
fn check_local_replies(host: &MockHost, filter: &str) {
    for reply in host.local_responses() {
        assert!(
            (200..600).contains(&reply.status),
            "{filter}: local reply with status {}",
            reply.status
        );
        for (name, _) in &reply.headers {
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
                "{filter}: local reply header name {name:?}"
            );
        }
    }
}

/// Configures `F` from `config`. A refused configuration must log why (Envoy shows the log line
/// to the operator whose config was NACKed).
pub fn configure<F: HttpFilter>(name: &str, host: &MockHost) -> Option<F> {
    let filter = F::configure(host);
    if filter.is_none() {
        assert!(
            !host.logs().is_empty(),
            "{name}: configuration refused without a logged reason"
        );
    }
    filter
}

/// Runs one request/response through a configured filter: request headers from `cursor`, a clock
/// step (forwards or backwards), a response status and headers.
pub fn run_stream<F: HttpFilter>(name: &str, filter: &F, host: &MockHost, cursor: &mut Cursor<'_>) {
    let step = i64::from(cursor.u16() as i16) * 10_000_000 * i64::from(cursor.byte() % 4);
    let now = host_now(host).saturating_add_signed(step);
    host.set_time(now);
    let path = cursor.chunk();
    let mut request = vec![
        (":method".to_owned(), b"GET".to_vec()),
        (":scheme".to_owned(), b"https".to_vec()),
        (":authority".to_owned(), b"shop.example.com".to_vec()),
        (
            ":path".to_owned(),
            if path.is_empty() {
                b"/".to_vec()
            } else {
                path.to_vec()
            },
        ),
    ];
    request.extend(cursor.headers(24));
    host.put_header_map(MapKind::RequestHeaders, request);
    let mut stream = F::Stream::default();
    let _ = filter.on_request_headers(&mut stream, host);
    check_local_replies(host, name);
    let status = 100 + cursor.u16() % 500;
    let mut response = vec![(":status".to_owned(), status.to_string().into_bytes())];
    response.extend(cursor.headers(8));
    host.put_header_map(MapKind::ResponseHeaders, response);
    let _ = filter.on_response_headers(&mut stream, host);
    filter.on_log(&mut stream, host);
    check_local_replies(host, name);
    host.clear_records();
}

fn host_now(host: &MockHost) -> u64 {
    use meshward_core::host::Host;
    host.now().unwrap_or(START_NS)
}

/// A mock proxy holding `config` as the plugin configuration, with the peer address and a few
/// properties the filters read.
pub fn host_with_config(config: &[u8], peer: &[u8]) -> MockHost {
    MockHost::new()
        .with_plugin_config(config)
        .with_property(&["source", "address"], peer)
        .with_property(&["destination", "address"], b"10.0.0.2:8080")
        .with_property(&["route_name"], b"default")
        .with_property(&["xds", "route_name"], b"default")
        .with_time(START_NS)
}

/// Configures filter number `which` (see [`FILTERS`]) with `config` and, when accepted, runs
/// streams decoded from `cursor` through it (at most `max_streams`).
pub fn drive(which: u8, config: &[u8], cursor: &mut Cursor<'_>, max_streams: usize) {
    let name = FILTERS[usize::from(which) % FILTERS.len()];
    let peer = match cursor.byte() % 4 {
        0 => b"10.1.2.3:5678".to_vec(),
        1 => b"[2001:db8::7]:443".to_vec(),
        2 => b"".to_vec(),
        _ => cursor.chunk().to_vec(),
    };
    let host = host_with_config(config, &peer);
    match name {
        "trace-id" => {
            streams::<meshward_filter_trace_id::filter::Filter>(name, &host, cursor, max_streams)
        }
        "rate-limit" => {
            streams::<meshward_filter_rate_limit::filter::Filter>(name, &host, cursor, max_streams);
        }
        "jwt-auth" => {
            streams::<meshward_filter_jwt_auth::filter::Filter>(name, &host, cursor, max_streams)
        }
        "ab-routing" => {
            streams::<meshward_filter_ab_routing::filter::Filter>(name, &host, cursor, max_streams);
        }
        _ => {
            streams::<meshward_filter_metric_tag::filter::Filter>(name, &host, cursor, max_streams)
        }
    }
}

fn streams<F: HttpFilter>(
    name: &str,
    host: &MockHost,
    cursor: &mut Cursor<'_>,
    max_streams: usize,
) {
    let Some(filter) = configure::<F>(name, host) else {
        return;
    };
    host.clear_records();
    for _ in 0..max_streams {
        if cursor.is_empty() {
            break;
        }
        run_stream(name, &filter, host, cursor);
    }
}
