//! trace-id through the real `dist/trace-id.wasm` in meshward-host.
//!
//! The clock is the harness's fixed `FakeClock` (the filter never reads time) and every test
//! gets its own `SharedState`, whose WASI random source is seeded, so ids are reproducible.

use std::path::{Path, PathBuf};

use meshward_host::{
    Action, Chain, FailPolicy, HostEngine, HttpOutcome, LoadError, Module, Plugin, PluginSpec,
    Request, Response, SharedState, StreamInfo,
};

#[path = "../../../../filters/trace-id/src/conformance_cases.rs"]
mod conformance_cases;

const TRACE: &str = "12345678901234567890123456789012";
const PARENT: &str = "1234567890123456";
const VALID_TP: &str = "00-12345678901234567890123456789012-1234567890123456-01";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn module() -> Module {
    let path = repo().join("dist/trace-id.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make dist`",
        path.display()
    );
    HostEngine::global().unwrap().load_file(&path).unwrap()
}

fn spec(config: &str, workers: usize) -> PluginSpec {
    PluginSpec::new("trace-id", "trace_id")
        .with_vm_id("meshward_trace_id")
        .with_configuration(config)
        .with_workers(workers)
        .with_fail_policy(FailPolicy::FailClosed)
}

fn load(config: &str) -> Plugin {
    load_with(config, 1, &SharedState::new())
}

fn load_with(config: &str, workers: usize, shared: &SharedState) -> Plugin {
    match Plugin::load(
        HostEngine::global().unwrap(),
        &module(),
        spec(config, workers),
        shared,
    ) {
        Ok(plugin) => plugin,
        Err(e) => panic!("config {config} rejected: {e:?}"),
    }
}

fn get(path: &str) -> Request {
    Request::get(path, "example.com")
}

fn send(plugin: &mut Plugin, request: Request) -> HttpOutcome {
    let out = plugin.http_request(0, request, Response::new(200)).unwrap();
    assert!(out.traps.is_empty(), "trap: {:?}", out.traps);
    assert!(
        matches!(out.request_action, Action::Continue),
        "{:?}",
        out.request_action
    );
    out
}

fn upstream(out: &HttpOutcome, name: &str) -> Vec<String> {
    out.request_headers_after
        .as_ref()
        .map(|h| {
            h.get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn one_upstream(out: &HttpOutcome, name: &str) -> String {
    let values = upstream(out, name);
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values.into_iter().next().unwrap_or_default()
}

/// Checks the W3C version-00 shape: 2-32-16-2 lower-case hex, non-zero ids.
fn assert_canonical_traceparent(tp: &str) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    for (part, len) in parts.iter().zip([2, 32, 16, 2]) {
        assert_eq!(part.len(), len, "{tp}");
        assert!(
            part.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{tp}"
        );
    }
    assert_ne!(parts[1], "0".repeat(32), "{tp}");
    assert_ne!(parts[2], "0".repeat(16), "{tp}");
}

fn is_uuid_v4(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            14 => b == b'4',
            _ => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
        })
}

fn counter(out: &HttpOutcome, name: &str) -> u64 {
    out.metrics
        .get(&format!("wasmcustom.{name}"))
        .map_or(0, |m| m.value)
}

fn request_ids(action: &str, reason: &str) -> String {
    format!("action=.={action};.;reason=.={reason};.;meshward_trace_id_request_ids_total")
}

fn trace_contexts(action: &str, reason: &str) -> String {
    format!("action=.={action};.;reason=.={reason};.;meshward_trace_id_trace_contexts_total")
}

// === configuration ===

fn fixtures(kind: &str) -> Vec<(String, String)> {
    let dir = repo().join("tests/fixtures/trace-id/config").join(kind);
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "fixtures missing in {}", dir.display());
    files
}

#[test]
fn every_valid_fixture_config_loads_and_serves_a_request() {
    for (name, config) in fixtures("valid") {
        let mut plugin = match Plugin::load(
            HostEngine::global().unwrap(),
            &module(),
            spec(&config, 1),
            &SharedState::new(),
        ) {
            Ok(plugin) => plugin,
            Err(e) => panic!("{name}: {e:?}"),
        };
        let out = send(&mut plugin, get("/"));
        assert_canonical_traceparent(&one_upstream(&out, "traceparent"));
    }
}

#[test]
fn every_invalid_fixture_config_is_rejected_naming_the_field() {
    for (name, config) in fixtures("invalid") {
        let (path, _) = name.split_once("--").unwrap();
        let prefix = if path == "_root" {
            "trace-id: invalid plugin config: (root): ".to_owned()
        } else {
            format!("trace-id: invalid plugin config: {path}: ")
        };
        match Plugin::load(
            HostEngine::global().unwrap(),
            &module(),
            spec(&config, 1),
            &SharedState::new(),
        ) {
            Ok(_) => panic!("{name}: accepted"),
            Err(LoadError::Rejected { logs, .. }) => {
                assert!(
                    logs.iter().any(|l| l.message.starts_with(&prefix)),
                    "{name}: want {prefix:?} in {logs:?}"
                );
            }
            Err(e) => panic!("{name}: {e:?}"),
        }
    }
}

// === request id ===

#[test]
fn generates_an_id_and_a_trace_when_none_is_sent() {
    let out = send(&mut load("{}"), get("/"));
    assert_eq!(
        out.property("meshward_request_id"),
        None,
        "filter-state properties are opt-in"
    );
    let mut plugin = load(r#"{"properties": true}"#);
    let out = send(&mut plugin, get("/"));
    let id = one_upstream(&out, "x-request-id");
    assert!(is_uuid_v4(&id), "{id}");
    let tp = one_upstream(&out, "traceparent");
    assert_canonical_traceparent(&tp);
    assert!(
        tp.ends_with("-02"),
        "new traces set only the random-trace-id flag by default: {tp}"
    );
    assert_eq!(out.response_header("x-request-id"), Some(id.as_str()));
    assert_eq!(
        out.property("meshward_request_id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        out.property("meshward_trace_id").as_deref(),
        Some(&tp[3..35])
    );
    assert_eq!(counter(&out, &request_ids("generated", "absent")), 1);
    assert_eq!(counter(&out, &trace_contexts("started", "absent")), 1);
}

#[test]
fn request_id_rules() {
    struct Case {
        name: &'static str,
        config: &'static str,
        headers: &'static [(&'static str, &'static str)],
        source: &'static str,
        /// Expected id upstream; `None` = a fresh UUIDv4.
        kept: Option<&'static str>,
        original: Option<&'static str>,
        metric: (&'static str, &'static str),
    }
    let trusted = r#"{"requestId": {"policy": "keepIfTrusted", "trustedCidrs": ["10.0.0.0/8"]}}"#;
    let replace = r#"{"requestId": {"policy": "alwaysReplace", "originalIdHeader": "x-original-request-id"}}"#;
    let copy = r#"{"requestId": {"originalIdHeader": "x-original-request-id"}}"#;
    let aliases = r#"{"requestId": {"aliases": ["x-correlation-id"]}}"#;
    let uuid = r#"{"requestId": {"validation": "uuid"}}"#;
    let cases = [
        Case {
            name: "keeps a valid id",
            config: "{}",
            headers: &[("x-request-id", "abc-123")],
            source: "",
            kept: Some("abc-123"),
            original: None,
            metric: ("kept", "valid"),
        },
        Case {
            name: "trims OWS of a valid id",
            config: "{}",
            headers: &[("x-request-id", " abc ")],
            source: "",
            kept: Some("abc"),
            original: None,
            metric: ("kept", "valid"),
        },
        Case {
            name: "replaces an id with spaces",
            config: copy,
            headers: &[("x-request-id", "a b")],
            source: "",
            kept: None,
            original: None,
            metric: ("replaced", "invalid_charset"),
        },
        Case {
            name: "replaces a too long id",
            config: "{}",
            headers: &[(
                "x-request-id",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            )],
            source: "",
            kept: None,
            original: None,
            metric: ("replaced", "too_long"),
        },
        Case {
            name: "replaces duplicated ids",
            config: "{}",
            headers: &[("x-request-id", "a"), ("x-request-id", "b")],
            source: "",
            kept: None,
            original: None,
            metric: ("replaced", "duplicated"),
        },
        Case {
            name: "always replace copies the original",
            config: replace,
            headers: &[("x-request-id", "client-1")],
            source: "",
            kept: None,
            original: Some("client-1"),
            metric: ("replaced", "policy"),
        },
        Case {
            name: "a forged original header is removed",
            config: copy,
            headers: &[
                ("x-request-id", "client-1"),
                ("x-original-request-id", "forged"),
            ],
            source: "",
            kept: Some("client-1"),
            original: None,
            metric: ("kept", "valid"),
        },
        Case {
            name: "trusted peer keeps its id",
            config: trusted,
            headers: &[("x-request-id", "client-1")],
            source: "10.1.2.3:5000",
            kept: Some("client-1"),
            original: None,
            metric: ("kept", "trusted"),
        },
        Case {
            name: "untrusted peer gets a new id",
            config: trusted,
            headers: &[("x-request-id", "client-1")],
            source: "192.0.2.7:5000",
            kept: None,
            original: None,
            metric: ("replaced", "untrusted"),
        },
        Case {
            name: "alias is read and written",
            config: aliases,
            headers: &[("x-correlation-id", "corr-9")],
            source: "",
            kept: Some("corr-9"),
            original: None,
            metric: ("kept", "valid"),
        },
        Case {
            name: "uuid mode accepts Envoy's packed trace reason",
            config: uuid,
            headers: &[("x-request-id", "6b3e2c1a-1d2e-af00-8a1b-0123456789ab")],
            source: "",
            kept: Some("6b3e2c1a-1d2e-af00-8a1b-0123456789ab"),
            original: None,
            metric: ("kept", "valid"),
        },
        Case {
            name: "uuid mode rejects a token",
            config: uuid,
            headers: &[("x-request-id", "abc")],
            source: "",
            kept: None,
            original: None,
            metric: ("replaced", "not_uuid"),
        },
    ];
    for case in cases {
        let mut plugin = load(case.config);
        let mut request = get("/");
        for (name, value) in case.headers {
            request = request.with_header(name, value);
        }
        if !case.source.is_empty() {
            request = request.with_info(StreamInfo {
                source_address: case.source.to_owned(),
                ..StreamInfo::default()
            });
        }
        let out = send(&mut plugin, request);
        let id = one_upstream(&out, "x-request-id");
        match case.kept {
            Some(kept) => assert_eq!(id, kept, "{}", case.name),
            None => assert!(is_uuid_v4(&id), "{}: {id}", case.name),
        }
        assert_eq!(
            out.response_header("x-request-id"),
            Some(id.as_str()),
            "{}",
            case.name
        );
        let original = upstream(&out, "x-original-request-id");
        assert_eq!(
            original,
            case.original
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
            "{}",
            case.name
        );
        if case.config == aliases {
            assert_eq!(
                upstream(&out, "x-correlation-id"),
                std::slice::from_ref(&id),
                "{}",
                case.name
            );
        }
        assert_eq!(
            counter(&out, &request_ids(case.metric.0, case.metric.1)),
            1,
            "{}: {:?}",
            case.name,
            out.metrics.keys()
        );
    }
}

// === trace context ===

#[test]
fn traceparent_rules() {
    enum Want {
        /// Same trace id and parent id (passthrough).
        Unchanged(&'static str),
        /// Same trace id, new parent id (hop).
        Hop,
        /// A new trace id.
        New,
    }
    /// (name, config, incoming traceparents, expectation, (metric action, reason)).
    type Case = (
        &'static str,
        &'static str,
        Vec<&'static str>,
        Want,
        (&'static str, &'static str),
    );
    let cases: [Case; 12] = [
        (
            "hop keeps trace id",
            "{}",
            vec![VALID_TP],
            Want::Hop,
            ("kept", "valid"),
        ),
        (
            "passthrough keeps everything",
            r#"{"traceContext": {"mode": "passthrough"}}"#,
            vec![VALID_TP],
            Want::Unchanged(VALID_TP),
            ("kept", "valid"),
        ),
        (
            "restart at a trust boundary",
            r#"{"traceContext": {"mode": "restart"}}"#,
            vec![VALID_TP],
            Want::New,
            ("restarted", "trust_boundary"),
        ),
        (
            "future version re-emitted as 00",
            r#"{"traceContext": {"mode": "passthrough"}}"#,
            vec!["cc-12345678901234567890123456789012-1234567890123456-01-future"],
            Want::Unchanged(VALID_TP),
            ("kept", "future_version"),
        ),
        (
            "OWS is trimmed",
            r#"{"traceContext": {"mode": "passthrough"}}"#,
            vec!["\t00-12345678901234567890123456789012-1234567890123456-01 "],
            Want::Unchanged(VALID_TP),
            ("kept", "valid"),
        ),
        (
            "unknown flags are zeroed",
            r#"{"traceContext": {"mode": "passthrough"}}"#,
            vec!["00-12345678901234567890123456789012-1234567890123456-ff"],
            Want::Unchanged("00-12345678901234567890123456789012-1234567890123456-03"),
            ("kept", "valid"),
        ),
        (
            "version ff",
            "{}",
            vec!["ff-12345678901234567890123456789012-1234567890123456-01"],
            Want::New,
            ("restarted", "version_ff"),
        ),
        (
            "upper-case hex",
            "{}",
            vec!["00-1234567890ABCDEF1234567890123456-1234567890123456-01"],
            Want::New,
            ("restarted", "invalid_trace_id"),
        ),
        (
            "all-zero trace id",
            "{}",
            vec!["00-00000000000000000000000000000000-1234567890123456-01"],
            Want::New,
            ("restarted", "zero_trace_id"),
        ),
        (
            "trailing data on 00",
            "{}",
            vec!["00-12345678901234567890123456789012-1234567890123456-01-x"],
            Want::New,
            ("restarted", "invalid_length"),
        ),
        (
            "duplicated headers",
            "{}",
            vec![VALID_TP, VALID_TP],
            Want::New,
            ("restarted", "duplicated"),
        ),
        (
            "all-zero parent id",
            "{}",
            vec!["00-12345678901234567890123456789012-0000000000000000-01"],
            Want::New,
            ("restarted", "zero_parent_id"),
        ),
    ];
    for (name, config, values, want, metric) in cases {
        let mut plugin = load(config);
        let mut request = get("/");
        for value in &values {
            request = request.with_header("traceparent", value);
        }
        let out = send(&mut plugin, request);
        let tp = one_upstream(&out, "traceparent");
        assert_canonical_traceparent(&tp);
        match want {
            Want::Unchanged(expected) => assert_eq!(tp, expected, "{name}"),
            Want::Hop => {
                assert_eq!(&tp[3..35], TRACE, "{name}");
                assert_ne!(&tp[36..52], PARENT, "{name}");
                assert_eq!(&tp[53..], "01", "{name}: flags preserved");
            }
            Want::New => assert_ne!(&tp[3..35], TRACE, "{name}"),
        }
        assert_eq!(
            counter(&out, &trace_contexts(metric.0, metric.1)),
            1,
            "{name}: {:?}",
            out.metrics.keys()
        );
    }
}

#[test]
fn tracestate_rules() {
    let members = |n: usize| {
        (1..=n)
            .map(|i| format!("k{i:02}={}", "v".repeat(20)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let cases: Vec<(&str, &str, Vec<String>, Option<String>)> = vec![
        (
            "combined in order",
            "{}",
            vec!["a=1".into(), "b=2, c=3".into()],
            Some("a=1,b=2,c=3".into()),
        ),
        (
            "invalid member drops the header",
            "{}",
            vec!["a=1,B=2".into()],
            None,
        ),
        (
            "33 members drop the header",
            "{}",
            vec![
                (1..=33)
                    .map(|i| format!("m{i}=1"))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            None,
        ),
        (
            "oversized list is truncated from the right",
            "{}",
            vec![members(30)],
            Some(members(20)),
        ),
        (
            "restart drops tracestate",
            r#"{"traceContext": {"mode": "restart"}}"#,
            vec!["a=1".into()],
            None,
        ),
        (
            "passthrough forwards it unchanged",
            r#"{"traceContext": {"mode": "passthrough"}}"#,
            vec!["a=1 ,b=2".into()],
            Some("a=1 ,b=2".into()),
        ),
    ];
    for (name, config, values, want) in cases {
        let mut plugin = load(config);
        let mut request = get("/").with_header("traceparent", VALID_TP);
        for value in &values {
            request = request.with_header("tracestate", value);
        }
        let out = send(&mut plugin, request);
        assert_eq!(
            upstream(&out, "tracestate"),
            want.into_iter().collect::<Vec<_>>(),
            "{name}"
        );
    }
    // Without a traceparent, tracestate is never parsed or forwarded (§3.3).
    let out = send(&mut load("{}"), get("/").with_header("tracestate", "a=1"));
    assert!(upstream(&out, "tracestate").is_empty());
}

#[test]
fn b3_is_bridged_both_ways() {
    let mut plugin = load(r#"{"b3": {"read": true, "write": "single"}}"#);
    let out = send(
        &mut plugin,
        get("/").with_header("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1"),
    );
    let tp = one_upstream(&out, "traceparent");
    assert_eq!(
        &tp[3..35],
        "000000000000000080f198ee56343ba8",
        "64-bit B3 trace ids are left-padded"
    );
    assert!(tp.ends_with("-01"), "{tp}");
    assert_eq!(
        one_upstream(&out, "b3"),
        format!("{}-{}-1", &tp[3..35], &tp[36..52])
    );
    assert_eq!(counter(&out, &trace_contexts("kept", "b3")), 1);

    let mut plugin = load(r#"{"b3": {"read": true, "write": "multi"}}"#);
    let out = send(
        &mut plugin,
        get("/")
            .with_header("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124")
            .with_header("x-b3-spanid", "a2fb4a1d1a96d312")
            .with_header("x-b3-sampled", "0"),
    );
    let tp = one_upstream(&out, "traceparent");
    assert_eq!(&tp[3..35], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(one_upstream(&out, "x-b3-traceid"), &tp[3..35]);
    assert_eq!(one_upstream(&out, "x-b3-spanid"), &tp[36..52]);
    assert_eq!(one_upstream(&out, "x-b3-sampled"), "0");
}

// === response ===

#[test]
fn response_carries_traceresponse_and_server_timing() {
    let mut plugin = load(r#"{"response": {"traceresponse": true, "serverTiming": true}}"#);
    let out = plugin
        .http_request(
            0,
            get("/").with_header("traceparent", VALID_TP),
            Response::new(200).with_header("server-timing", "db;dur=5"),
        )
        .unwrap();
    let tp = one_upstream(&out, "traceparent");
    assert_eq!(out.response_header("traceresponse"), Some(tp.as_str()));
    let timings: Vec<String> = out
        .response
        .headers
        .get_all("server-timing")
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(
        timings,
        ["db;dur=5".to_owned(), format!("traceparent;desc=\"{tp}\"")]
    );
}

#[test]
fn local_reply_of_a_later_filter_still_gets_the_request_id() {
    let shared = SharedState::new();
    let engine = HostEngine::global().unwrap();
    let trace_id = load_with(r#"{"properties": true}"#, 1, &shared);
    let probe_module = engine
        .load_file(repo().join("tests/fixtures/wat/probe.wat"))
        .unwrap();
    // Scenario "l" of the harness probe: a 403 local reply from the request headers callback.
    let probe = Plugin::load(
        engine,
        &probe_module,
        PluginSpec::new("probe", "probe").with_configuration("l"),
        &shared,
    )
    .unwrap();
    let mut chain = Chain::new(vec![trace_id, probe]);
    let out = chain
        .run(
            0,
            get("/"),
            |_| Response::new(200),
            |_| panic!("no callouts expected"),
        )
        .unwrap();
    assert_eq!(out.response.status(), Some(403));
    let id = out.property("meshward_request_id").unwrap();
    assert!(is_uuid_v4(&id), "{id}");
    assert_eq!(out.response_header("x-request-id"), Some(id.as_str()));
}

// === robustness and determinism ===

#[test]
fn seeded_randomness_gives_reproducible_ids() {
    let ids = |seed: u64| {
        let shared = SharedState::new();
        shared.random().reseed(seed);
        let mut plugin = load_with("{}", 1, &shared);
        let out = send(&mut plugin, get("/"));
        (
            one_upstream(&out, "x-request-id"),
            one_upstream(&out, "traceparent"),
        )
    };
    assert_eq!(ids(7), ids(7));
    assert_ne!(ids(7), ids(8));
}

#[test]
fn garbage_never_traps_across_worker_vms() {
    let shared = SharedState::new();
    let mut plugin = load_with(
        r#"{"b3": {"read": true, "write": "single"}, "traceContext": {"sampling": {"type": "inherit"}}}"#,
        4,
        &shared,
    );
    // xorshift: deterministic garbage, including non-ASCII and separators.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut garbage = |max: usize| {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let len = usize::try_from(next() % u64::try_from(max).unwrap()).unwrap();
        let alphabet = b"0123456789abcdefABCDEF-_=, \t@*/.\x7f\xc3\xa9\xff";
        (0..len)
            .map(|_| alphabet[usize::try_from(next() % alphabet.len() as u64).unwrap()])
            .collect::<Vec<u8>>()
    };
    let mut ids = std::collections::HashSet::new();
    for i in 0..200 {
        let request = get("/")
            .with_header("traceparent", garbage(70))
            .with_header("tracestate", garbage(120))
            .with_header("x-request-id", garbage(140))
            .with_header("b3", garbage(60));
        let out = plugin
            .http_request(i % 4, request, Response::new(200))
            .unwrap();
        assert!(out.traps.is_empty(), "request {i}: {:?}", out.traps);
        assert!(
            matches!(out.request_action, Action::Continue),
            "request {i}"
        );
        assert_canonical_traceparent(&one_upstream(&out, "traceparent"));
        let id = one_upstream(&out, "x-request-id");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)),
            "{id:?}"
        );
        ids.insert(id);
    }
    assert!(ids.len() > 150, "ids repeat: {}", ids.len());
    for worker in 0..4 {
        assert!(
            plugin.failure(worker).is_none(),
            "worker {worker}: {:?}",
            plugin.failure(worker)
        );
    }
}

#[test]
fn metrics_accumulate_with_bounded_tags() {
    let mut plugin = load("{}");
    for _ in 0..3 {
        send(&mut plugin, get("/"));
    }
    let out = send(
        &mut plugin,
        get("/")
            .with_header("x-request-id", "ok-1")
            .with_header("traceparent", VALID_TP),
    );
    assert_eq!(counter(&out, &request_ids("generated", "absent")), 3);
    assert_eq!(counter(&out, &request_ids("kept", "valid")), 1);
    assert_eq!(counter(&out, &trace_contexts("started", "absent")), 3);
    assert_eq!(counter(&out, &trace_contexts("kept", "valid")), 1);
    for name in out
        .metrics
        .keys()
        .filter(|n| n.contains("meshward_trace_id"))
    {
        let encoded = name.trim_start_matches("wasmcustom.");
        assert!(
            (encoded.starts_with("action=.=") || encoded.starts_with("phase=.="))
                && encoded.ends_with("_total"),
            "{name}"
        );
    }
}

/// The W3C Trace Context conformance table (the same file the filter's unit tests use) through
/// the real module on two worker VMs: exactly one canonical version-00 `traceparent` leaves,
/// continued or restarted as the case says, and the forwarded `tracestate` is as expected.
#[test]
fn w3c_conformance_table_through_the_wasm() {
    use conformance_cases::cases;
    use meshward_filter_trace_id::{traceparent, tracestate::TraceState};

    let shared = SharedState::new();
    let mut plugin = load_with("{}", 2, &shared);
    let mut failures = Vec::new();
    for (n, case) in cases().into_iter().enumerate() {
        let mut request = get("/conformance");
        for (name, value) in &case.headers {
            request = request.with_header(name, value);
        }
        let out = plugin
            .http_request(n % 2, request, Response::new(200))
            .unwrap();
        if !out.traps.is_empty() {
            failures.push(format!("{}: trap {:?}", case.spec, out.traps));
            continue;
        }
        let found = conformance_cases::problems(
            &case,
            &upstream(&out, "traceparent"),
            &upstream(&out, "tracestate"),
            |tp| {
                let parsed = traceparent::parse(tp.as_bytes());
                conformance_cases::canonical_v00(
                    tp,
                    parsed.map(|p| p.needs_rewrite).map_err(|e| e.to_string()),
                )
            },
            |ts| matches!(TraceState::parse_headers(&[ts.as_bytes()]), Ok(Some(_))),
        );
        failures.extend(found.into_iter().map(|p| format!("{}: {p}", case.spec)));
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
