//! The real no-op filter (`dist/noop.wasm`, built from `tests/noop-filter`) through the full
//! request lifecycle on four worker VMs.

use std::path::PathBuf;

use meshward_host::{
    Action, CallReply, Chain, HeaderMap, HostEngine, Plugin, PluginSpec, Request, Response,
    SharedState,
};

/// `make test` builds `dist/` first; a missing module is a failure, never a silent skip.
fn noop_wasm() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dist/noop.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make dist` first",
        path.display()
    );
    Some(path)
}

fn load(workers: usize, shared: &SharedState) -> Option<Plugin> {
    let engine = HostEngine::global().unwrap();
    let module = engine.load_file(noop_wasm()?).unwrap();
    Some(
        Plugin::load(
            engine,
            &module,
            PluginSpec::new("noop", "noop").with_workers(workers),
            shared,
        )
        .unwrap(),
    )
}

#[test]
fn noop_filter_runs_the_full_lifecycle_on_four_workers() {
    let shared = SharedState::new();
    let Some(mut plugin) = load(4, &shared) else {
        return;
    };
    for worker in 0..4 {
        let mut request = Request::new("POST", "/echo?x=1", "svc.test")
            .with_header("x-request-id", "abc")
            .with_body("hello");
        request.trailers = HeaderMap::from_pairs([("x-trailer", "t")]);
        let response = Response::new(200)
            .with_header("content-type", "text/plain")
            .with_body("world");
        let out = plugin
            .http_request(worker, request.clone(), response.clone())
            .unwrap();
        assert_eq!(out.request_action, Action::Continue);
        assert!(out.traps.is_empty(), "{:?}", out.traps);
        assert_eq!(out.request_headers_after.as_ref(), Some(&request.headers));
        assert_eq!(out.request_body_after.as_deref(), Some(&b"hello"[..]));
        assert_eq!(out.response, response);
        assert_eq!(out.phases.len(), 5);
        assert!(
            out.phases
                .iter()
                .all(|p| p.outcome.action == Action::Continue && p.outcome.fuel > 0)
        );
        assert!(
            plugin.memory_bytes(worker).unwrap() >= 17 * 65536,
            "Rust modules start with 17 pages"
        );
    }
    assert!(plugin.failure(0).is_none());
    plugin.shutdown();
}

#[test]
fn two_noop_filters_chain_without_changing_anything() {
    let shared = SharedState::new();
    let (Some(a), Some(b)) = (load(1, &shared), load(1, &shared)) else {
        return;
    };
    let mut chain = Chain::new(vec![a, b]);
    let out = chain
        .run(
            0,
            Request::get("/", "svc.test"),
            |_| Response::new(200).with_body("ok"),
            |_| CallReply::Leave,
        )
        .unwrap();
    assert_eq!(out.response.status(), Some(200));
    assert_eq!(out.response.body, b"ok");
    assert_eq!(out.phases.len(), 6);
}

#[test]
fn export_costs_split_each_request_by_callback() {
    let shared = SharedState::new();
    let Some(mut plugin) = load(2, &shared) else {
        return;
    };
    let start_up = plugin.export_costs();
    for export in ["_initialize", "proxy_on_vm_start", "proxy_on_configure"] {
        assert_eq!(
            start_up.get(export).calls,
            2,
            "{export}: once per worker VM"
        );
    }
    plugin.reset_export_costs();
    assert!(plugin.export_costs().is_empty());
    let (mut fuel, mut hostcalls) = (0, 0);
    for worker in [0, 1, 0] {
        let out = plugin
            .http_request(worker, Request::get("/", "svc.test"), Response::new(200))
            .unwrap();
        fuel += out.fuel;
        hostcalls += out.hostcalls;
    }
    let costs = plugin.export_costs();
    let called: Vec<(&str, u64)> = costs.iter().map(|(e, c)| (e, c.calls)).collect();
    assert_eq!(
        called,
        [
            ("proxy_on_context_create", 3),
            ("proxy_on_delete", 3),
            ("proxy_on_done", 3),
            ("proxy_on_log", 3),
            ("proxy_on_request_headers", 3),
            ("proxy_on_response_headers", 3),
        ]
    );
    assert!(costs.iter().all(|(_, c)| c.fuel > 0));
    assert_eq!(costs.total().fuel, fuel, "the tally and the outcomes agree");
    assert_eq!(costs.total().hostcalls, hostcalls);
}
