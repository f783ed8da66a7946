//! Limitador's Redis storage (feature `redis`; `make test-redis`): two service instances on one
//! Redis (started here on a free loopback port) share one limit exactly, and a Redis restart
//! mid-run gives UNAVAILABLE answers, never a hang, then counting resumes.
#![cfg(feature = "redis")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation should abort the test"
)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshward_host::grpc::{BlockingGrpcClient, GrpcReply, PendingGrpcCall};
use meshward_host::{CallId, HeaderMap};
use meshward_ratelimit_service::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitResponse,
};
use meshward_ratelimit_service::{RunningService, Storage, parse_limits};
use prost::Message;

const LIMITS: &str = r#"
- namespace: shared
  max_value: 7
  seconds: 300
  conditions:
    - "descriptors[0]['generic_key'] == 'global'"
  variables: []
"#;

/// `redis-server` on a free loopback port, without persistence; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (make redis-server installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ask(client: &BlockingGrpcClient, address: SocketAddr) -> GrpcReply {
    let message = RateLimitRequest {
        domain: "shared".to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "generic_key".to_owned(),
                value: "global".to_owned(),
            }],
        }],
        hits_addend: 1,
    }
    .encode_to_vec();
    let call = PendingGrpcCall {
        id: CallId {
            worker: 0,
            token: 1,
        },
        cluster: "ratelimit".to_owned(),
        authority: "ratelimit".to_owned(),
        service: "envoy.service.ratelimit.v3.RateLimitService".to_owned(),
        method: "ShouldRateLimit".to_owned(),
        metadata: HeaderMap::new(),
        message,
        timeout_ms: 2000,
        stream: None,
    };
    client.call_all(vec![(Some(address), call)]).remove(0)
}

fn code(reply: &GrpcReply) -> Result<i32, u32> {
    match reply {
        GrpcReply::Message(bytes) => Ok(RateLimitResponse::decode(bytes.as_slice())
            .unwrap()
            .overall_code),
        GrpcReply::Status { code, .. } => Err(*code),
    }
}

#[test]
fn two_instances_on_one_redis_share_the_limit_and_survive_a_restart() {
    let port = free_port();
    let redis = Redis::start(port);
    let start = || {
        RunningService::start(
            ([127, 0, 0, 1], 0).into(),
            Storage::Redis { url: redis.url() },
            parse_limits(LIMITS).unwrap(),
        )
        .unwrap()
    };
    let (a, b) = (start(), start());
    let client = BlockingGrpcClient::new().unwrap();
    let answers: Vec<_> = (0..12)
        .map(|i| {
            code(&ask(
                &client,
                if i % 2 == 0 { a.address } else { b.address },
            ))
        })
        .collect();
    let admitted = answers
        .iter()
        .filter(|c| **c == Ok(Code::Ok as i32))
        .count();
    let limited = answers
        .iter()
        .filter(|c| **c == Ok(Code::OverLimit as i32))
        .count();
    assert_eq!((admitted, limited), (7, 5), "{answers:?}");

    // Redis goes away: answers are errors within the call's timeout, never a hang.
    drop(redis);
    let began = Instant::now();
    let down = code(&ask(&client, a.address));
    assert!(down.is_err(), "{down:?}");
    assert!(began.elapsed() < Duration::from_secs(5));

    // Back (empty: no persistence): counting starts again, shared by both instances.
    let _redis = Redis::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    while answers.len() < 8 {
        let reply = code(&ask(
            &client,
            if answers.len() % 2 == 0 {
                a.address
            } else {
                b.address
            },
        ));
        if reply.is_err() {
            assert!(
                Instant::now() < deadline,
                "service did not reconnect: {reply:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        answers.push(reply);
    }
    let admitted = answers
        .iter()
        .filter(|c| **c == Ok(Code::Ok as i32))
        .count();
    assert_eq!(admitted, 7, "{answers:?}");
}
