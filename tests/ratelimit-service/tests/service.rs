#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation should abort the test"
)]

//! The service over real HTTP/2 (the host's gRPC client), on Limitador's in-memory storage:
//! check-and-update per descriptor value, the answer's statuses and headers, and bad requests.

use meshward_host::grpc::{BlockingGrpcClient, GrpcReply, PendingGrpcCall};
use meshward_host::{CallId, HeaderMap};
use meshward_ratelimit_service::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitResponse,
};
use meshward_ratelimit_service::{RunningService, Storage, parse_limits};
use prost::Message;

const LIMITS: &str = r#"
- namespace: meshward
  max_value: 3
  seconds: 60
  name: per-client
  conditions:
    - "descriptors[0]['generic_key'] == 'api'"
  variables:
    - "descriptors[0]['remote_address']"
"#;

fn start() -> RunningService {
    RunningService::start(
        ([127, 0, 0, 1], 0).into(),
        Storage::Memory { cache_size: 1000 },
        parse_limits(LIMITS).unwrap(),
    )
    .unwrap()
}

fn call(service: &str, method: &str, message: Vec<u8>) -> PendingGrpcCall {
    PendingGrpcCall {
        id: CallId {
            worker: 0,
            token: 1,
        },
        cluster: "ratelimit".to_owned(),
        authority: "ratelimit".to_owned(),
        service: service.to_owned(),
        method: method.to_owned(),
        metadata: HeaderMap::new(),
        message,
        timeout_ms: 5000,
        stream: None,
    }
}

fn request(domain: &str, client: &str, hits: u32) -> Vec<u8> {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![
                Entry {
                    key: "generic_key".to_owned(),
                    value: "api".to_owned(),
                },
                Entry {
                    key: "remote_address".to_owned(),
                    value: client.to_owned(),
                },
            ],
        }],
        hits_addend: hits,
    }
    .encode_to_vec()
}

fn should_rate_limit(
    client: &BlockingGrpcClient,
    service: &RunningService,
    message: Vec<u8>,
) -> GrpcReply {
    let rls = "envoy.service.ratelimit.v3.RateLimitService";
    client
        .call_all(vec![(
            Some(service.address),
            call(rls, "ShouldRateLimit", message),
        )])
        .remove(0)
}

fn decoded(reply: GrpcReply) -> RateLimitResponse {
    match reply {
        GrpcReply::Message(bytes) => RateLimitResponse::decode(bytes.as_slice()).unwrap(),
        other => panic!("expected a response: {other:?}"),
    }
}

#[test]
fn each_descriptor_value_gets_the_configured_number_of_hits() {
    let service = start();
    let client = BlockingGrpcClient::new().unwrap();
    let codes: Vec<i32> = (0..5)
        .map(|_| {
            decoded(should_rate_limit(
                &client,
                &service,
                request("meshward", "10.0.0.1", 0),
            ))
            .overall_code
        })
        .collect();
    let ok = Code::Ok as i32;
    let over = Code::OverLimit as i32;
    assert_eq!(codes, [ok, ok, ok, over, over]);

    // Another client has its own counter; a cost of 2 leaves 1, a cost of 2 more is refused.
    let first = decoded(should_rate_limit(
        &client,
        &service,
        request("meshward", "10.0.0.2", 2),
    ));
    assert_eq!(first.overall_code, ok);
    let status = &first.statuses[0];
    assert_eq!(status.limit_remaining, 1);
    assert_eq!(status.current_limit.as_ref().unwrap().requests_per_unit, 3);
    assert_eq!(status.current_limit.as_ref().unwrap().name, "per-client");
    let reset = status.duration_until_reset.as_ref().unwrap().seconds;
    assert!((1..=60).contains(&reset), "{reset}");
    let headers: Vec<(&str, &str)> = first
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert!(
        headers.contains(&("x-ratelimit-remaining", "1")),
        "{headers:?}"
    );
    assert!(
        headers.contains(&("x-ratelimit-limit", "3, 3;w=60;name=\"per-client\"")),
        "{headers:?}"
    );
    let second = decoded(should_rate_limit(
        &client,
        &service,
        request("meshward", "10.0.0.2", 2),
    ));
    assert_eq!(second.overall_code, over);

    // A domain without limits is never limited.
    let other = decoded(should_rate_limit(
        &client,
        &service,
        request("elsewhere", "10.0.0.1", 0),
    ));
    assert_eq!((other.overall_code, other.statuses.len()), (ok, 0));
}

#[test]
fn bad_requests_get_grpc_errors() {
    let service = start();
    let client = BlockingGrpcClient::new().unwrap();
    let status = |reply: GrpcReply| match reply {
        GrpcReply::Status { code, .. } => code,
        GrpcReply::Message(m) => panic!("expected an error, got {m:?}"),
    };
    // Not a protobuf message: INTERNAL.
    assert_eq!(
        status(should_rate_limit(&client, &service, vec![0xff, 0xff, 0xff])),
        13
    );
    // An empty domain: INVALID_ARGUMENT.
    assert_eq!(
        status(should_rate_limit(&client, &service, request("", "a", 1))),
        3
    );
    // Another method: UNIMPLEMENTED.
    let reply = client
        .call_all(vec![(
            Some(service.address),
            call(
                "envoy.service.ratelimit.v3.RateLimitService",
                "Other",
                vec![],
            ),
        )])
        .remove(0);
    assert_eq!(status(reply), 12);
}

#[test]
fn a_stopped_service_is_unavailable() {
    let service = start();
    let address = service.address;
    drop(service);
    let client = BlockingGrpcClient::new().unwrap();
    let reply = client
        .call_all(vec![(
            Some(address),
            call(
                "envoy.service.ratelimit.v3.RateLimitService",
                "ShouldRateLimit",
                request("meshward", "a", 1),
            ),
        )])
        .remove(0);
    assert!(
        matches!(reply, GrpcReply::Status { code: 14, .. }),
        "{reply:?}"
    );
}
