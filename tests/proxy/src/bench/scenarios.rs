//! What `make bench` measures: one [`Scenario`] per filter path named in issue #15, the whole
//! chain, and the no-op baseline. Every filter runs with its envoy.yaml configuration, so a
//! scenario sends the request down the path envoy.yaml routes to that filter's rule (`/secure/`,
//! `/ab/`, `/limited/`); the budgets are keyed by [`Scenario::id`].

use std::time::Duration;

use meshward_host::Request;

/// A request header value a scenario adds to the bench profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue {
    /// Literal text.
    Text(&'static str),
    /// `Bearer` + `tests/fixtures/jwt-auth/bench-es256.token` (the demo issuer, ES256).
    Es256Token,
    /// `Bearer` + `tests/fixtures/jwt-auth/bench-rs256.token` (the demo issuer, RS256-2048).
    Rs256Token,
}

/// One measured path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Key in the results, the budgets and `BENCHMARKS.md`.
    pub id: &'static str,
    /// What the path is, for the tables.
    pub label: &'static str,
    /// Modules (`dist/<name>.wasm`) in chain order, unless `chain`.
    pub filters: &'static [&'static str],
    /// Every filter of envoy.yaml, in its order (the `filters` list is ignored).
    pub chain: bool,
    /// Replaces the profile's `:path` (to reach a filter's envoy.yaml rule).
    pub path: Option<&'static str>,
    /// Request headers added to the profile.
    pub headers: &'static [(&'static str, HeaderValue)],
    /// The fake clock moves this much before each request (a token bucket refills).
    pub advance_per_request: Duration,
    /// The first response sets this cookie; later requests send it back (a returning user).
    pub sticky_cookie: Option<&'static str>,
    /// A first-request figure: one VM warmed on this path (no rule matches), then one measured
    /// request on `path` (e.g. a token verified with an empty cache).
    pub fresh_warm_up_path: Option<&'static str>,
    /// `:status` every measured request must end with (proves the path taken).
    pub status: u16,
    /// Included in the wall-time comparison and the soak.
    pub steady: bool,
}

const DEFAULT: Scenario = Scenario {
    id: "",
    label: "",
    filters: &[],
    chain: false,
    path: None,
    headers: &[],
    advance_per_request: Duration::ZERO,
    sticky_cookie: None,
    fresh_warm_up_path: None,
    status: 200,
    steady: true,
};

const SECURE_PATH: &str = "/secure/api/v1/orders/12345?expand=items";
const UNRULED_PATH: &str = "/api/v1/orders/12345?expand=items";

/// Every scenario, in table order; the no-op baseline first.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "noop",
        label: "no-op baseline (SDK + ABI only)",
        filters: &["noop"],
        ..DEFAULT
    },
    Scenario {
        id: "trace-id",
        label: "trace-id: new ids, properties, response echo",
        filters: &["trace-id"],
        ..DEFAULT
    },
    Scenario {
        id: "rate-limit",
        label: "rate-limit: allowed (`/limited/`, a token refilled before each request)",
        filters: &["rate-limit"],
        path: Some("/limited/api/v1/orders/12345?expand=items"),
        advance_per_request: Duration::from_secs(2),
        ..DEFAULT
    },
    Scenario {
        id: "ab-routing",
        label: "ab-routing: returning user (`/ab/`, `x-user-id` + signed sticky cookie)",
        filters: &["ab-routing"],
        path: Some("/ab/api/v1/orders/12345?expand=items"),
        headers: &[("x-user-id", HeaderValue::Text("user-4829173"))],
        sticky_cookie: Some("meshward_ab"),
        ..DEFAULT
    },
    Scenario {
        id: "metric-tag",
        label: "metric-tag: 3 tags, a counter and a histogram",
        filters: &["metric-tag"],
        ..DEFAULT
    },
    Scenario {
        id: "jwt-auth-cached",
        label: "jwt-auth: ES256 token already verified on this VM (`/secure/`)",
        filters: &["jwt-auth"],
        path: Some(SECURE_PATH),
        headers: &[("authorization", HeaderValue::Es256Token)],
        ..DEFAULT
    },
    Scenario {
        id: "jwt-auth-fresh-es256",
        label: "jwt-auth: fresh ES256 verification (first sight of the token)",
        filters: &["jwt-auth"],
        path: Some(SECURE_PATH),
        headers: &[("authorization", HeaderValue::Es256Token)],
        fresh_warm_up_path: Some(UNRULED_PATH),
        steady: false,
        ..DEFAULT
    },
    Scenario {
        id: "jwt-auth-fresh-rs256",
        label: "jwt-auth: fresh RS256-2048 verification",
        filters: &["jwt-auth"],
        path: Some(SECURE_PATH),
        headers: &[("authorization", HeaderValue::Rs256Token)],
        fresh_warm_up_path: Some(UNRULED_PATH),
        steady: false,
        ..DEFAULT
    },
    Scenario {
        id: "noop-chain",
        label: "five no-op filters: the chain's baseline (per-filter host and SDK cost)",
        filters: &["noop", "noop", "noop", "noop", "noop"],
        ..DEFAULT
    },
    Scenario {
        id: "chain",
        label: "whole chain (envoy.yaml's five filters), the profile's `/api/` request",
        chain: true,
        ..DEFAULT
    },
    Scenario {
        id: "chain-secure",
        label: "whole chain, `/secure/` with a cached ES256 token",
        chain: true,
        path: Some(SECURE_PATH),
        headers: &[("authorization", HeaderValue::Es256Token)],
        ..DEFAULT
    },
];

/// Looks a scenario up by id.
pub fn scenario(id: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.id == id)
}

/// splitmix64: a fixed, cheap sequence so soak runs are repeatable.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The soak's request stream: the scenario's request with, per request, a distinct client
/// address (peer and `x-forwarded-for`), user id, cart cookie, session cookie and `x-request-id`,
/// one of 1000 methods (4 allowed), one of 5000 route names, one of 8 paths (each filter's rule
/// and the rest), and on `/secure/` half the time the valid token, otherwise a distinct garbage
/// token (a 401 before any signature check).
#[derive(Debug, Clone)]
pub struct SoakInputs {
    base: Request,
    valid_token: String,
    vary_path: bool,
}

const SOAK_PATHS: [&str; 8] = [
    "/api/v1/orders/1",
    "/secure/api/v1/orders/2",
    "/ab/api/v1/orders/3",
    "/limited/api/v1/orders/4",
    "/v2/items",
    "/split/x",
    "/hello",
    "/",
];

const SOAK_METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

impl SoakInputs {
    /// The stream for `scenario`, starting from its prepared request; `valid_token` is the
    /// `authorization` value of a token the chain accepts.
    pub fn new(scenario: &Scenario, valid_token: String, base: Request) -> Self {
        Self {
            base,
            valid_token,
            vary_path: scenario.chain,
        }
    }

    /// Request number `i`.
    pub fn request(&self, i: usize) -> Request {
        let r = mix(i as u64);
        let mut request = self.base.clone();
        let client = format!(
            "{}.{}.{}.{}",
            10 + (i >> 24) % 200,
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        );
        request.info.source_address = format!("{client}:{}", 1024 + r % 60000);
        request
            .headers
            .insert("x-forwarded-for", format!("{client}, 10.12.0.7"));
        request
            .headers
            .insert("x-envoy-external-address", client.as_str());
        request.headers.insert("x-user-id", format!("user-{r:x}"));
        request
            .headers
            .insert("x-request-id", format!("{:016x}{:016x}", r, mix(r)));
        let method = if r.is_multiple_of(4) {
            format!("M{}", r % 1000)
        } else {
            SOAK_METHODS
                .get((r % 4) as usize)
                .copied()
                .unwrap_or("GET")
                .to_owned()
        };
        request.headers.insert(":method", method);
        request.info.route_name = format!("route-{}", r % 5000);
        let cookie = request.headers.get("cookie").unwrap_or_default().to_owned();
        let cookie = cookie
            .split("; ")
            .map(|pair| {
                if pair.starts_with("cart_id=") {
                    format!("cart_id={:x}", mix(r ^ 1))
                } else if pair.starts_with("session=") {
                    format!("session={:x}{:x}", mix(r ^ 2), mix(r ^ 3))
                } else {
                    pair.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        request.headers.insert("cookie", cookie);
        if self.vary_path {
            let path = SOAK_PATHS
                .get((r % SOAK_PATHS.len() as u64) as usize)
                .copied()
                .unwrap_or("/");
            request.headers.insert(":path", path);
        }
        let secure = request
            .headers
            .get(":path")
            .is_some_and(|p| p.starts_with("/secure/"));
        if secure {
            if r.is_multiple_of(2) {
                request
                    .headers
                    .insert("authorization", self.valid_token.as_str());
            } else {
                request.headers.insert(
                    "authorization",
                    format!(
                        "Bearer ey{:x}.ey{:x}.{:x}",
                        mix(r ^ 4),
                        mix(r ^ 5),
                        mix(r ^ 6)
                    ),
                );
            }
        }
        request
    }
}
