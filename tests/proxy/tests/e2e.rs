//! End-to-end: the `meshward-proxy` binary serving `envoy-local/envoy.yaml` on free loopback ports,
//! driven with a real HTTP client. Needs `dist/trace-id.wasm` (`make dist`).
//!
//! No product filter makes local replies or `http_call`s yet, so `probe_filter_*` appends the
//! test-only WAT filter `tests/fixtures/probe.wat` to a copy of the shipped config.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is a test failure"
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use meshward_proxy::http::{self, Message};
use meshward_proxy::routing::weight_key_of;

const START_TIMEOUT: Duration = Duration::from_secs(300);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn trace_id_wasm() -> PathBuf {
    for module in [
        "trace-id",
        "metric-tag",
        "jwt-auth",
        "ab-routing",
        "rate-limit",
    ] {
        let path = repo_root().join(format!("dist/{module}.wasm"));
        assert!(
            path.exists(),
            "{} is missing: run `make dist`",
            path.display()
        );
    }
    repo_root().join("dist/trace-id.wasm")
}

/// A child process killed (and reaped) when dropped, test failure or not; its stdout and stderr
/// lines arrive on a channel so the pipes never fill up.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    sender: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if sender.send(format!("{prefix}{line}")).is_err() {
                break;
            }
        }
    });
}

impl Server {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshward-proxy"))
            .args(args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel();
        forward_lines(child.stdout.take().unwrap(), "", sender.clone());
        forward_lines(child.stderr.take().unwrap(), "stderr: ", sender);
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line starting with `prefix` and returns it.
    #[allow(
        clippy::disallowed_methods,
        reason = "a real-time bound on waiting for a real process"
    )]
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?} within {timeout:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The `http://ADDR` after `listening on`.
    fn wait_for_address(&mut self, prefix: &str) -> String {
        let line = self.wait_for(prefix, START_TIMEOUT);
        let after = line.split("listening on http://").nth(1).unwrap();
        after.split_whitespace().next().unwrap().to_owned()
    }
}

/// The proxy's listener and admin addresses from its `proxy listening on` line.
fn proxy_addresses(server: &mut Server) -> (String, String) {
    let line = server.wait_for("proxy listening on", START_TIMEOUT);
    let mut words = line
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("http://"));
    (
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
    )
}

fn get(address: &str, path: &str, headers: &[(&str, &str)]) -> Message {
    let mut all = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), "localhost".to_owned()),
    ];
    all.extend(
        headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    let request = Message {
        headers: all,
        body: Bytes::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(http::send(
            address,
            &request,
            REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .unwrap_or_else(|e| panic!("GET {path} via {address}: {e}"))
}

fn json(message: &Message) -> serde_json::Value {
    serde_json::from_slice(&message.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&message.body)))
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `00-<32 hex>-<16 hex>-<2 hex>` with non-zero ids.
fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts[0] == "00"
        && is_lower_hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && is_lower_hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && is_lower_hex(parts[3], 2)
}

#[test]
fn shipped_chain_serves_ids_routes_direct_responses_and_metrics() {
    trace_id_wasm();
    let mut proxy = Server::spawn(&[
        "demo",
        "--config",
        "envoy-local/envoy.yaml",
        "--wasm-dir",
        "dist",
        "--workers",
        "2",
        "--listen-port",
        "0",
        "--admin-port",
        "0",
    ]);
    let (listener, admin) = proxy_addresses(&mut proxy);

    // Ids: added upstream, echoed back.
    let response = get(&listener, "/anything", &[]);
    assert_eq!(
        response.status(),
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let echoed = json(&response);
    assert_eq!(echoed["upstream"], "v1");
    let request_id = echoed["headers"]["x-request-id"]
        .as_str()
        .expect("x-request-id upstream")
        .to_owned();
    assert!(!request_id.is_empty());
    let traceparent = echoed["headers"]["traceparent"]
        .as_str()
        .expect("traceparent upstream")
        .to_owned();
    assert!(is_valid_traceparent(&traceparent), "{traceparent}");
    assert_eq!(response.header("x-request-id"), Some(request_id.as_str()));
    assert!(
        response
            .header("traceresponse")
            .is_some_and(is_valid_traceparent),
        "{:?}",
        response.headers
    );
    proxy.wait_for(
        &format!("access: GET /anything 200 upstream=echo-v1 x-request-id={request_id}"),
        REQUEST_TIMEOUT,
    );

    // An invalid traceparent is not propagated: a fresh, valid one replaces it.
    let invalid = "00-ABC-not-valid-01";
    let restarted = json(&get(&listener, "/anything", &[("traceparent", invalid)]));
    let forwarded = restarted["headers"]["traceparent"].as_str().unwrap();
    assert_ne!(forwarded, invalid);
    assert!(is_valid_traceparent(forwarded), "{forwarded}");

    // A route chosen by a header match.
    assert_eq!(
        json(&get(&listener, "/anything", &[("x-meshward-variant", "b")]))["upstream"],
        "v2"
    );
    assert_eq!(
        json(&get(&listener, "/anything", &[("x-meshward-variant", "a")]))["upstream"],
        "v1"
    );

    // A route chosen by weights (80/20): the dev proxy keys the pick on the client's request id.
    let mut counts = [0_u32; 2];
    for n in 0..30 {
        let id = format!("5b4c1a7e-0000-4000-8000-{n:012}");
        let expected = if weight_key_of(id.as_bytes()) % 100 < 80 {
            "v1"
        } else {
            "v2"
        };
        let answer = json(&get(&listener, "/split/x", &[("x-request-id", &id)]));
        assert_eq!(
            answer["headers"]["x-request-id"],
            id.as_str(),
            "a valid client id is kept"
        );
        assert_eq!(answer["upstream"], expected, "id {id}");
        counts[usize::from(expected == "v2")] += 1;
    }
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "both clusters picked: {counts:?}"
    );
    // Without a client id (what `make run`'s curl example sends) the split follows the weights too.
    let mut generated = [0_u32; 2];
    for _ in 0..60 {
        let answer = json(&get(&listener, "/split/x", &[]));
        generated[usize::from(answer["upstream"] == "v2")] += 1;
    }
    assert!(
        generated[0] > 0 && generated[1] > 0,
        "requests without an id reach both clusters: {generated:?}"
    );

    // direct_response, still through the response side of the filters.
    let hello = get(&listener, "/hello", &[]);
    assert_eq!(hello.status(), 200);
    assert_eq!(
        hello.body,
        Bytes::from_static(b"hello from envoy direct_response\n")
    );
    assert!(
        hello
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty()),
        "{:?}",
        hello.headers
    );
    proxy.wait_for("access: GET /hello 200 upstream=- ", REQUEST_TIMEOUT);

    // jwt-auth on /secure/: a valid token passes with its subject upstream, an expired one and
    // none get 401 with RFC 6750 challenges.
    let token = |name: &str| {
        std::fs::read_to_string(repo_root().join("tests/fixtures/jwt-auth").join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let bearer = format!("Bearer {}", token("bench-es256.token"));
    let passed = get(&listener, "/secure/x", &[("authorization", &bearer)]);
    assert_eq!(
        passed.status(),
        200,
        "{}",
        String::from_utf8_lossy(&passed.body)
    );
    let echoed = json(&passed);
    assert_eq!(echoed["headers"]["x-jwt-sub"], "bench-user");
    assert!(
        echoed["headers"]["authorization"].is_null(),
        "the token is not forwarded"
    );
    let expired = format!("Bearer {}", token("demo-expired-es256.token"));
    let refused = get(&listener, "/secure/x", &[("authorization", &expired)]);
    assert_eq!(refused.status(), 401);
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer") && v.contains("error=\"invalid_token\"")),
        "{:?}",
        refused.headers
    );
    let missing = get(&listener, "/secure/x", &[]);
    assert_eq!(missing.status(), 401);
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer") && !v.contains("error=")),
        "{:?}",
        missing.headers
    );
    // Other paths need no token.
    assert_eq!(get(&listener, "/anything", &[]).status(), 200);

    // ab-routing on /ab/: a sticky variant per user, b routed to echo-v2 (the filter clears the
    // route cache); a client-sent variant header is ignored unless it carries the QA secret.
    let mut seen = std::collections::BTreeMap::new();
    for n in 0..20 {
        let user = format!("user-{n}");
        let answer = get(&listener, "/ab/x", &[("x-user-id", &user)]);
        let variant = answer
            .header("x-meshward-ab")
            .expect("variant echoed")
            .to_owned();
        let upstream = json(&answer)["upstream"].as_str().unwrap().to_owned();
        assert_eq!(
            upstream == "v2",
            variant == "b",
            "{user}: {variant} via {upstream}"
        );
        let again = get(&listener, "/ab/x", &[("x-user-id", &user)]);
        assert_eq!(
            again.header("x-meshward-ab"),
            Some(variant.as_str()),
            "{user} is sticky"
        );
        seen.insert(user, variant);
    }
    assert!(
        seen.values().any(|v| v == "a") && seen.values().any(|v| v == "b"),
        "{seen:?}"
    );
    let (user_a, _) = seen.iter().find(|(_, v)| *v == "a").unwrap();
    let spoofed = json(&get(
        &listener,
        "/ab/x",
        &[("x-user-id", user_a), ("x-meshward-ab", "b")],
    ));
    assert_eq!(
        spoofed["upstream"], "v1",
        "a client-sent variant is not honoured"
    );
    let overridden = json(&get(
        &listener,
        "/ab/x",
        &[
            ("x-user-id", user_a),
            ("x-meshward-ab", "b"),
            ("x-meshward-ab-secret", "demo-only-qa-secret"),
        ],
    ));
    assert_eq!(overridden["upstream"], "v2", "QA override with the secret");
    assert!(
        overridden["headers"]["x-meshward-ab-secret"].is_null(),
        "the secret is stripped"
    );

    // rate-limit: 5 tokens per client on /limited/, then 429 with the headers of both dialects.
    let first = get(&listener, "/limited/x", &[]);
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.header("x-ratelimit-limit"),
        Some("5"),
        "{:?}",
        first.headers
    );
    assert!(
        first.header("ratelimit-policy").is_some(),
        "{:?}",
        first.headers
    );
    // One token comes back every 2 s: a slow machine may need a few more requests to run out.
    let limited = (0..20)
        .map(|_| get(&listener, "/limited/x", &[]))
        .find(|answer| answer.status() == 429)
        .expect("a 429 once the bucket is empty");
    assert!(
        limited.header("retry-after").is_some(),
        "{:?}",
        limited.headers
    );
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert!(
        limited.header("x-request-id").is_some(),
        "trace-id ran before the limiter"
    );
    proxy.wait_for("access: GET /limited/x 429 ", REQUEST_TIMEOUT);
    // Other paths are not limited.
    assert_eq!(get(&listener, "/anything", &[]).status(), 200);

    // Admin: ready, and the filter's metrics with labels from stats_tags.
    let ready = get(&admin, "/ready", &[]);
    assert_eq!(
        (ready.status(), ready.body),
        (200, Bytes::from_static(b"LIVE\n"))
    );
    let stats = String::from_utf8(get(&admin, "/stats/prometheus", &[]).body.to_vec()).unwrap();
    let labelled: Vec<&str> = stats
        .lines()
        .filter(|l| {
            l.starts_with("meshward_trace_id_")
                && (l.contains("action=\"") || l.contains("reason=\""))
        })
        .collect();
    assert!(
        !labelled.is_empty(),
        "no labelled meshward_trace_id_ metric in:\n{stats}"
    );
    assert!(
        !stats.contains("=.="),
        "a tag was left in a metric name:\n{stats}"
    );
    // metric-tag: request counts by method, status class and route, and a duration histogram.
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("meshward_http_requests_total{")
                && l.contains("method=\"GET\"")
                && l.contains("status_class=\"2xx\"")
                && l.contains("route=\"default\"")),
        "no labelled meshward_http_requests_total in:\n{stats}"
    );
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("meshward_http_requests_total{")
                && l.contains("status_class=\"429\"")
                && l.contains("route=\"default\"")),
        "the rate limiter's 429s are counted: {stats}"
    );
    assert!(
        stats.contains("meshward_http_request_duration_ms_bucket{"),
        "no duration histogram in:\n{stats}"
    );
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The same ab-routing routing as in `shipped_chain_…` (Envoy ≥ 1.33: the filter's
/// `clear_route_cache` call re-routes), with the proxy behaving as Envoy < 1.33: no
/// `clear_route_cache` function (NotFound), and the header the filter sets re-routes implicitly.
#[test]
fn ab_routing_variants_route_as_on_envoy_before_1_33() {
    trace_id_wasm();
    let mut proxy = Server::spawn(&[
        "demo",
        "--config",
        "envoy-local/envoy.yaml",
        "--wasm-dir",
        "dist",
        "--workers",
        "2",
        "--listen-port",
        "0",
        "--admin-port",
        "0",
        "--envoy-before-1.33",
    ]);
    let (listener, _admin) = proxy_addresses(&mut proxy);
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..20 {
        let user = format!("user-{n}");
        let answer = get(&listener, "/ab/x", &[("x-user-id", &user)]);
        let variant = answer
            .header("x-meshward-ab")
            .expect("variant echoed")
            .to_owned();
        let upstream = json(&answer)["upstream"].as_str().unwrap().to_owned();
        assert_eq!(
            upstream == "v2",
            variant == "b",
            "{user}: {variant} via {upstream}"
        );
        seen.insert(variant);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("meshward-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// The shipped envoy.yaml with the probe filter between trace-id and the router.
fn config_with_probe(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(repo_root().join("envoy-local/envoy.yaml")).unwrap();
    let router = "                  - name: envoy.filters.http.router\n";
    assert!(
        shipped.contains(router),
        "router filter not found in envoy.yaml"
    );
    let probe = "                  - name: test.probe
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: test.probe
                        root_id: probe
                        vm_config:
                          vm_id: test_probe
                          runtime: envoy.wasm.runtime.v8
                          code:
                            local: { filename: /etc/envoy/wasm/probe.wat }
";
    let path = dir.join("envoy.yaml");
    std::fs::write(
        &path,
        shipped.replacen(router, &format!("{probe}{router}"), 1),
    )
    .unwrap();
    trace_id_wasm();
    // Every shipped filter of envoy.yaml, from dist/.
    for entry in std::fs::read_dir(repo_root().join("dist")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe.wat"),
        dir.join("probe.wat"),
    )
    .unwrap();
    path
}

#[test]
fn probe_filter_local_reply_and_http_call_answered_by_a_real_upstream() {
    let dir = temp_dir("probe");
    let config = config_with_probe(&dir.0);
    let jwks_file = repo_root().join("tests/fixtures/jwt-auth/jwks.json");
    let mut jwks = Server::spawn(&[
        "jwks",
        "--listen",
        "127.0.0.1:0",
        "--file",
        jwks_file.to_str().unwrap(),
    ]);
    let jwks_addr = jwks.wait_for_address("jwks listening on");
    let mut echo = Server::spawn(&["echo", "--listen", "127.0.0.1:0", "--name", "v1"]);
    let echo_addr = echo.wait_for_address("echo v1 listening on");
    let mut proxy = Server::spawn(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--wasm-dir",
        dir.0.to_str().unwrap(),
        "--listen-port",
        "0",
        "--admin-port",
        "0",
        "--cluster-addr",
        &format!("jwks={jwks_addr}"),
        "--cluster-addr",
        &format!("echo-v1={echo_addr}"),
        "--cluster-addr",
        &format!("echo-v2={echo_addr}"),
    ]);
    let (listener, _admin) = proxy_addresses(&mut proxy);

    // Without the probe header the chain continues to the upstream.
    assert_eq!(json(&get(&listener, "/anything", &[]))["upstream"], "v1");

    // A local reply, which still gets the request id from trace-id on its way out.
    let teapot = get(&listener, "/anything", &[("x-probe", "reply")]);
    assert_eq!(teapot.status(), 418);
    assert_eq!(teapot.body, Bytes::from_static(b"probe teapot\n"));
    assert!(
        teapot
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty()),
        "{:?}",
        teapot.headers
    );

    // An http_call to cluster `jwks`, answered by the real JWKS server.
    let called = get(&listener, "/anything", &[("x-probe", "call")]);
    assert_eq!(
        called.status(),
        200,
        "{}",
        String::from_utf8_lossy(&called.body)
    );
    assert_eq!(called.body.to_vec(), std::fs::read(&jwks_file).unwrap());

    // With the JWKS server gone the call fails, and the filter hears about it.
    drop(jwks);
    let failed = get(&listener, "/anything", &[("x-probe", "call")]);
    assert_eq!(
        (failed.status(), failed.body),
        (502, Bytes::from_static(b"probe call failed\n"))
    );
    drop(echo);
}

#[test]
fn a_config_field_the_dev_proxy_does_not_understand_stops_it_at_start() {
    let dir = temp_dir("bad-config");
    let shipped = std::fs::read_to_string(repo_root().join("envoy-local/envoy.yaml")).unwrap();
    let bad = shipped.replacen(
        "generate_request_id: false",
        "generate_request_id: false\n                use_remote_address: true",
        1,
    );
    let path = dir.0.join("envoy.yaml");
    std::fs::write(&path, bad).unwrap();
    // Bounded: a proxy that wrongly started would be killed by the guard after the wait fails.
    let mut proxy = Server::spawn(&[
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--listen-port",
        "0",
        "--admin-port",
        "0",
    ]);
    let error = proxy.wait_for("stderr: meshward-proxy:", START_TIMEOUT);
    assert!(
        error.contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.use_remote_address")
            && error.contains("unknown field `use_remote_address`"),
        "{error}"
    );
    assert!(
        !proxy
            .seen
            .iter()
            .any(|l| l.starts_with("proxy listening on"))
    );
}
