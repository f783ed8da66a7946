//! Unary gRPC callouts over real HTTP/2 (`tests/fixtures/wat/grpc_call.wat` against a tiny
//! HTTP/2 gRPC server started here): Envoy's cluster-argument rules, request framing and
//! metadata, answers in trailers and trailers-only, status codes, cancel/close, and the
//! host-enforced timeout (DEADLINE_EXCEEDED, late answer dropped).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use meshward_host::grpc::{BlockingGrpcClient, GrpcReply, code, frame_message, grpc_service_bytes};
use meshward_host::{
    Action, HeaderMap, HostEngine, Plugin, PluginSpec, SharedState, StreamEvent, StreamId,
};

use crate::support::module;

/// What the test server answers, chosen by the request message.
async fn handle(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let (head, mut body) = request.into_parts();
    let mut received = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let message = String::from_utf8_lossy(received.get(5..).unwrap_or_default()).into_owned();
    let header = |name: &str| {
        head.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let ok_head = || {
        http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    let trailers = |status: &str, message: Option<&str>| {
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", status.parse().unwrap());
        if let Some(message) = message {
            map.insert("grpc-message", message.parse().unwrap());
        }
        map
    };
    match message.as_str() {
        "fail" => {
            let mut stream = respond.send_response(ok_head(), false).unwrap();
            stream
                .send_trailers(trailers("7", Some("no%20way")))
                .unwrap();
        }
        "trailers-only" => {
            let response = http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", "16")
                .header("grpc-message", "who are you")
                .body(())
                .unwrap();
            respond.send_response(response, true).unwrap();
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut stream = respond.send_response(ok_head(), false).unwrap();
            stream
                .send_data(Bytes::from(frame_message(b"too late")), false)
                .unwrap();
            stream.send_trailers(trailers("0", None)).unwrap();
        }
        "garbage" => {
            let mut stream = respond.send_response(ok_head(), false).unwrap();
            stream
                .send_data(Bytes::from_static(b"\x00\x00\x00"), false)
                .unwrap();
            stream.send_trailers(trailers("0", None)).unwrap();
        }
        "http-500" => {
            let response = http::Response::builder().status(500).body(()).unwrap();
            let mut stream = respond.send_response(response, false).unwrap();
            stream.send_data(Bytes::from_static(b"oops"), true).unwrap();
        }
        "no-message" => {
            let mut stream = respond.send_response(ok_head(), false).unwrap();
            stream.send_trailers(trailers("0", None)).unwrap();
        }
        "no-status" => {
            let mut stream = respond.send_response(ok_head(), false).unwrap();
            stream
                .send_data(Bytes::from(frame_message(b"x")), true)
                .unwrap();
        }
        _ => {
            let reply = format!(
                "{message}|path={}|md={}|timeout={}|ct={}|te={}|authority={}",
                head.uri.path(),
                header("x-md"),
                header("grpc-timeout"),
                header("content-type"),
                header("te"),
                head.uri.authority().map(|a| a.as_str()).unwrap_or("-"),
            );
            let mut stream = respond.send_response(ok_head(), false).unwrap();
            stream
                .send_data(Bytes::from(frame_message(reply.as_bytes())), false)
                .unwrap();
            stream.send_trailers(trailers("0", None)).unwrap();
        }
    }
}

/// Starts the server on a free loopback port, on its own runtime thread.
fn start_server() -> SocketAddr {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((request, respond))) = connection.accept().await {
                        tokio::spawn(handle(request, respond));
                    }
                });
            }
        });
    });
    address
}

fn load(shared: &SharedState, cluster_argument: &[u8]) -> Plugin {
    let spec = PluginSpec::new("grpc", "grpc_call")
        .with_configuration(cluster_argument.to_vec())
        .with_workers(2);
    Plugin::load(
        HostEngine::global().unwrap(),
        &module("grpc_call.wat"),
        spec,
        shared,
    )
    .unwrap()
}

fn send(plugin: &mut Plugin, worker: usize, message: &str) -> (StreamId, Action) {
    let stream = plugin.new_stream(worker).unwrap();
    let mut headers = HeaderMap::from_pairs([
        (":path", "/"),
        (":method", "GET"),
        (":authority", "a.test"),
        ("x-msg", message),
    ]);
    let out = plugin.request_headers(stream, &mut headers, true).unwrap();
    assert_eq!(out.trap, None);
    (stream, out.action)
}

/// The answer a paused stream got: `Ok(x-grpc-reply)` or `Err((grpc status, body))`.
fn outcome(events: &[StreamEvent], stream: StreamId) -> Result<String, (Option<u32>, String)> {
    for event in events {
        match event {
            StreamEvent::Resumed {
                stream: s,
                headers: Some(headers),
                ..
            } if *s == stream => {
                return Ok(headers.get("x-grpc-reply").unwrap_or("-").to_owned());
            }
            StreamEvent::LocalReply { stream: s, reply } if *s == stream => {
                assert_eq!((reply.status, reply.details.as_str()), (503, "grpc_closed"));
                return Err((
                    reply.grpc_status,
                    String::from_utf8_lossy(&reply.body).into_owned(),
                ));
            }
            _ => {}
        }
    }
    panic!("no event for {stream:?} in {events:?}");
}

#[test]
fn unary_calls_travel_over_http2_and_every_answer_shape_reaches_the_module() {
    let address = start_server();
    let shared = SharedState::new();
    shared.set_clusters(["other"]);
    shared.set_cluster_address("rls", address);
    let mut plugin = load(&shared, b"rls");
    let client = BlockingGrpcClient::new().unwrap();

    let cases = [
        "hello",
        "fail",
        "trailers-only",
        "garbage",
        "http-500",
        "no-message",
        "no-status",
    ];
    let mut streams = Vec::new();
    for (i, message) in cases.iter().enumerate() {
        let (stream, action) = send(&mut plugin, i % 2, message);
        assert_eq!(action, Action::Pause);
        streams.push(stream);
    }
    let calls = plugin.pending_grpc_calls();
    assert_eq!(calls.len(), cases.len());
    // cpp-host numbering: gRPC call tokens are n*4 + 1 per VM.
    assert_eq!(calls[0].id.token, 5);
    assert_eq!(
        (calls[0].service.as_str(), calls[0].method.as_str()),
        ("test.Echo", "Echo")
    );
    assert_eq!(calls[0].metadata.get("x-md"), Some("v1"));
    assert_eq!(calls[0].timeout_ms, 200);

    let delivered = plugin.run_grpc_calls(&client);
    assert_eq!(delivered.trap, None);
    assert!(plugin.pending_grpc_calls().is_empty());
    let got: Vec<_> = streams
        .iter()
        .map(|s| outcome(&delivered.events, *s))
        .collect();
    assert_eq!(
        got[0],
        Ok("hello|path=/test.Echo/Echo|md=v1|timeout=200m|ct=application/grpc|te=trailers|authority=rls"
            .to_owned())
    );
    assert_eq!(got[1], Err((Some(7), "no way".to_owned())));
    assert_eq!(got[2], Err((Some(16), "who are you".to_owned())));
    assert_eq!(got[3].clone().map_err(|e| e.0), Err(Some(code::INTERNAL)));
    assert_eq!(got[4].clone().map_err(|e| e.0), Err(Some(code::CANCELLED)));
    assert_eq!(got[5].clone().map_err(|e| e.0), Err(Some(code::INTERNAL)));
    assert_eq!(got[6].clone().map_err(|e| e.0), Err(Some(code::UNKNOWN)));
    for stream in streams {
        assert_eq!(plugin.finish(stream).unwrap().trap, None);
    }
}

#[test]
fn the_host_enforces_the_timeout_and_drops_the_late_answer() {
    let address = start_server();
    let shared = SharedState::new();
    shared.set_cluster_address("rls", address);
    let mut plugin = load(&shared, b"rls");
    let client = BlockingGrpcClient::new().unwrap();
    let (slow, _) = send(&mut plugin, 0, "slow");
    let (fast, _) = send(&mut plugin, 1, "quick");
    let delivered = plugin.run_grpc_calls(&client);
    assert_eq!(
        outcome(&delivered.events, slow),
        Err((
            Some(code::DEADLINE_EXCEEDED),
            "upstream request timeout".to_owned()
        ))
    );
    assert!(
        outcome(&delivered.events, fast)
            .unwrap()
            .starts_with("quick|")
    );
    assert!(plugin.pending_grpc_calls().is_empty());
}

#[test]
fn cluster_argument_follows_envoys_rules() {
    let address = start_server();
    let shared = SharedState::new();
    shared.set_clusters(["rls"]);
    let client = BlockingGrpcClient::new().unwrap();

    // A serialized GrpcService: its cluster and authority are used.
    shared.set_cluster_address("rls", address);
    let mut plugin = load(&shared, &grpc_service_bytes("rls", "limits.example"));
    let (stream, _) = send(&mut plugin, 0, "hi");
    let delivered = plugin.run_grpc_calls(&client);
    assert!(
        outcome(&delivered.events, stream)
            .unwrap()
            .ends_with("authority=limits.example")
    );

    // A plain name that is not a cluster: ParseFailure (4) from the hostcall.
    let mut plugin = load(&shared, b"no-such-cluster");
    let (_, action) = send(&mut plugin, 0, "hi");
    match action {
        Action::LocalReply(reply) => {
            assert_eq!((reply.status, reply.grpc_status), (500, Some(4)));
        }
        other => panic!("expected the guest's 500: {other:?}"),
    }
    assert!(plugin.pending_grpc_calls().is_empty());

    // A known cluster without an address: UNAVAILABLE when sent.
    shared.set_clusters(["rls", "nowhere"]);
    let mut plugin = load(&shared, b"nowhere");
    let (stream, _) = send(&mut plugin, 0, "hi");
    let delivered = plugin.run_grpc_calls(&client);
    assert_eq!(
        outcome(&delivered.events, stream).map_err(|e| e.0),
        Err(Some(code::UNAVAILABLE))
    );

    // An address nobody listens on: UNAVAILABLE.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    shared.set_cluster_address("nowhere", closed);
    let (stream, _) = send(&mut plugin, 1, "hi");
    let delivered = plugin.run_grpc_calls(&client);
    assert_eq!(
        outcome(&delivered.events, stream).map_err(|e| e.0),
        Err(Some(code::UNAVAILABLE))
    );
}

#[test]
fn a_cancelled_call_is_never_answered() {
    let shared = SharedState::new();
    let mut plugin = load(&shared, b"rls");
    // "cancel" (6 bytes): the guest cancels, then a second cancel and a close give NotFound
    // (the guest traps otherwise).
    let (stream, action) = send(&mut plugin, 0, "cancel");
    assert_eq!(action, Action::Continue);
    assert!(plugin.pending_grpc_calls().is_empty());
    assert_eq!(plugin.failure(0), None);
    assert_eq!(plugin.finish(stream).unwrap().trap, None);
    // A reply for it is refused by the host.
    let (stream, _) = send(&mut plugin, 1, "x");
    let call = plugin.pending_grpc_calls()[0].id;
    assert!(
        plugin
            .deliver_grpc_reply(call, GrpcReply::Message(b"ok".to_vec()))
            .is_ok()
    );
    assert!(
        plugin
            .deliver_grpc_reply(call, GrpcReply::Message(b"ok".to_vec()))
            .is_err()
    );
    assert_eq!(plugin.finish(stream).unwrap().trap, None);
}
