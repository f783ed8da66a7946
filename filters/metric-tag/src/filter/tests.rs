#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use meshward_core::config::parse_config;
use meshward_core::host::MapKind;
use meshward_core::host::mock::MockHost;

use super::*;
use crate::config::RawConfig;

const CONFIG: &str = r#"{
  "tags": [
    {"name": "variant", "source": {"type": "header", "name": "x-variant"}, "allowedValues": ["a", "b.c"]},
    {"name": "client", "source": {"type": "header", "name": "x-client"}, "maxValues": 3, "maxLength": 8},
    {"name": "class", "source": {"type": "statusClass"}},
    {"name": "route", "source": {"type": "pathTemplate", "templates": ["/users/{id}", "/health"]}, "default": "none"},
    {"name": "plan", "source": {"type": "query", "name": "plan"}},
    {"name": "env", "source": {"type": "constant", "value": "prod"}}
  ],
  "metrics": [
    {"name": "app_requests_total", "type": "counter", "tags": ["variant", "client", "class", "route", "env"]},
    {"name": "app_duration_ms", "type": "histogram", "tags": ["class"]},
    {"name": "app_plan_total", "type": "counter", "tags": ["plan"]},
    {"name": "app_response_bytes", "type": "histogram", "value": "responseBytes"}
  ],
  "properties": true
}"#;

fn filter(host: &MockHost) -> Filter {
    let config = parse_config::<RawConfig, Config>(CONFIG.as_bytes()).unwrap();
    Filter::new(host, config)
}

fn run(filter: &Filter, host: &MockHost, request: &[(&str, &[u8])]) -> Stream {
    let pairs = request
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect();
    host.put_header_map(MapKind::RequestHeaders, pairs);
    let mut stream = Stream::default();
    stream.on_request_headers(filter, host);
    stream.on_response_headers(filter, host);
    stream.on_log(filter, host);
    stream
}

fn response_host() -> MockHost {
    MockHost::new()
        .with_property(&["response", "code"], 429i64.to_le_bytes())
        .with_property(&["request", "url_path"], b"/users/42")
        .with_property(&["request", "query"], b"x=1&plan=gold")
        .with_property(&["request", "duration"], 12_345_678i64.to_le_bytes())
        .with_property(&["response", "total_size"], 321i64.to_le_bytes())
}

#[test]
fn one_request_counts_every_metric_with_its_labels() {
    let host = response_host();
    let filter = filter(&host);
    run(
        &filter,
        &host,
        &[
            (":method", b"GET"),
            ("x-variant", b"b.c"),
            ("x-client", b"web"),
        ],
    );
    assert_eq!(
        host.metric_value(
            "variant=.=b_c;.;client=.=web;.;class=.=429;.;route=.=_users__id_;.;env=.=prod;.;app_requests_total"
        ),
        Some(1)
    );
    assert_eq!(
        host.histogram_samples("class=.=429;.;app_duration_ms"),
        [12]
    );
    assert_eq!(host.metric_value("plan=.=gold;.;app_plan_total"), Some(1));
    assert_eq!(host.histogram_samples("app_response_bytes"), [321]);
    let published: Vec<_> = host
        .properties_set()
        .into_iter()
        .map(|(path, value)| (path.join("."), String::from_utf8(value).unwrap()))
        .collect();
    assert!(published.contains(&("meshward_tag_variant".into(), "b_c".into())));
    assert!(published.contains(&("meshward_tag_class".into(), "429".into())));
    assert!(published.contains(&("meshward_tag_env".into(), "prod".into())));
}

#[test]
fn missing_values_are_defaults_and_unsafe_or_long_ones_other() {
    let host = MockHost::new();
    let filter = filter(&host);
    run(
        &filter,
        &host,
        &[("x-variant", b"zzz"), ("x-client", b"a.b")],
    );
    run(&filter, &host, &[("x-client", b"waytoolongvalue")]);
    run(&filter, &host, &[("x-client", &[0xff, 0xfe, b'a'])]);
    let name = |variant: &str, client: &str| {
        format!(
            "variant=.={variant};.;client=.={client};.;class=.=unknown;.;route=.=none;.;env=.=prod;.;app_requests_total"
        )
    };
    assert_eq!(host.metric_value(&name("other", "other")), Some(1));
    assert_eq!(host.metric_value(&name("unknown", "other")), Some(2));
    // No duration, no status: the histogram records nothing rather than a guess.
    assert!(
        host.histogram_samples("class=.=unknown;.;app_duration_ms")
            .is_empty()
    );
}

fn client_labels(host: &MockHost) -> Vec<String> {
    let mut clients: Vec<String> = host
        .metrics()
        .keys()
        .filter(|name| name.ends_with("app_requests_total"))
        .map(|name| name.split(";.;").nth(1).unwrap().to_owned())
        .collect();
    clients.sort();
    clients.dedup();
    clients
}

#[test]
fn open_values_are_capped_per_proxy_through_shared_data() {
    let host = MockHost::new();
    // Two VMs of one proxy share the host's shared data.
    let vm1 = filter(&host);
    let vm2 = filter(&host);
    for (vm, client) in [
        (&vm1, "c1"),
        (&vm2, "c2"),
        (&vm1, "c3"),
        (&vm2, "c4"),
        (&vm1, "c1"),
    ] {
        run(vm, &host, &[("x-client", client.as_bytes())]);
    }
    let record = host.shared_entry(&shared_key("client")).unwrap().0;
    assert_eq!(record, b"mt1\nc1\nc2\nc3");
    assert_eq!(
        client_labels(&host),
        [
            "client=.=c1",
            "client=.=c2",
            "client=.=c3",
            "client=.=other"
        ]
    );
    // Once full, an unseen value writes nothing.
    let writes = host.shared_writes();
    run(&vm1, &host, &[("x-client", b"c9")]);
    run(&vm2, &host, &[("x-client", b"c8")]);
    assert_eq!(host.shared_writes(), writes);
}

#[test]
fn metric_ids_are_defined_once_per_series() {
    let host = response_host();
    let filter = filter(&host);
    run(&filter, &host, &[("x-variant", b"a")]);
    let defined = host.metric_definitions();
    for _ in 0..20 {
        run(&filter, &host, &[("x-variant", b"a")]);
    }
    assert_eq!(host.metric_definitions(), defined);
    assert_eq!(filter.defined_series(), 4);
}

#[test]
fn series_per_metric_never_exceed_the_product_of_caps() {
    let host = MockHost::new();
    let filter = filter(&host);
    for i in 0..500u32 {
        let client = format!("c{i}");
        let variant = if i % 2 == 0 { "a" } else { "x" };
        run(
            &filter,
            &host,
            &[
                ("x-client", client.as_bytes()),
                ("x-variant", variant.as_bytes()),
            ],
        );
    }
    let series = host
        .metrics()
        .keys()
        .filter(|name| name.ends_with("app_requests_total"))
        .count();
    // variant: a or other; client: c0..c2 (admitted first) or other; (a, c0), (other, c1),
    // (a, c2), then (a, other) and (other, other) for the 497 others.
    assert_eq!(series, 5);
    assert!(series <= filter.config.metrics[0].series);
}

#[test]
fn status_and_decimal_formatting() {
    let mut buffer = [0u8; 20];
    assert_eq!(format_decimal(0, &mut buffer), b"0");
    assert_eq!(format_decimal(503, &mut buffer), b"503");
    assert_eq!(
        format_decimal(u64::MAX, &mut buffer),
        b"18446744073709551615"
    );
    assert_eq!(status_class(429), Some("429"));
    assert_eq!(status_class(404), Some("4xx"));
    assert_eq!(status_class(0), None);
    assert_eq!(status_code(&[1, 2]), None);
    assert_eq!(query_value(b"a=1&plan=x&plan=y", "plan"), Some(&b"x"[..]));
    assert_eq!(query_value(b"planet=1", "plan"), None);
}

#[test]
fn a_lost_record_never_grows_a_vm_past_the_cap() {
    let host = MockHost::new();
    let vm = filter(&host);
    run(&vm, &host, &[("x-client", b"c1")]);
    run(&vm, &host, &[("x-client", b"c2")]);
    // Another writer replaces the record (e.g. a racing first write): c1 and c2 are gone.
    host.put_shared_data(&shared_key("client"), b"mt1\nz1\nz2\nz3");
    run(&vm, &host, &[("x-client", b"c4")]);
    run(&vm, &host, &[("x-client", b"z3")]);
    // The VM keeps c1, c2 and learns z1 (its domain: 3 values); c4 and z3 are other.
    assert_eq!(vm.label(1, 4).as_deref(), Some("z1"));
    assert_eq!(vm.label(1, 5), None);
    assert_eq!(
        client_labels(&host),
        ["client=.=c1", "client=.=c2", "client=.=other"]
    );
}
