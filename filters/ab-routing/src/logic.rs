//! The pure decision: what each experiment assigns to one request, and the effects of that.
//!
//! Per experiment, in order (the first that applies wins):
//! 1. not taking part (disabled, outside `startTime`/`endTime`, targeting not met): no variant;
//! 2. override: the client is allowed (secret or CIDR) and sent the experiment's header naming a
//!    live variant;
//! 3. rules: the first rule whose conditions hold;
//! 4. sticky cookie: a valid cookie naming a live variant;
//! 5. hash of the key (falling back to the request id): see [`crate::assign`]; a new cookie is
//!    issued when the experiment is sticky.
//!
//! Whatever happens, the experiment's request header ends up holding the assigned variant or
//! is removed: a client-sent value never reaches the upstream unless the override allowed it.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::IpAddr;

use meshward_core::effects::Effects;
use meshward_core::host::PropertyPath;
use meshward_core::route_match::MatchInput;
use subtle::ConstantTimeEq;

use crate::assign::{bucket, variant_of};
use crate::config::{
    Conditions, Config, Experiment, KeySource, MAX_EXPERIMENTS, PropertyCondition,
};
use crate::cookie::{self, CookieResult, Rejection};
use crate::metrics::Metrics;

/// What the logic reads from a request (the glue reads lazily from the proxy; tests use plain
/// data). [`MatchInput`] gives the path and headers for route matching.
pub trait Inputs: MatchInput {
    /// A property (request headers as `request.headers.<name>`, joined by `,`).
    fn property(&self, path: &PropertyPath) -> Option<Vec<u8>>;
    /// The `Cookie` header (all values joined).
    fn cookie_header(&self) -> Option<&[u8]>;
    /// The client address.
    fn client_ip(&self) -> Option<IpAddr>;
}

/// How a variant was decided (a metric tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Hash of the key.
    Hash = 0,
    /// A valid sticky cookie.
    Cookie = 1,
    /// A content-based rule.
    Rule = 2,
    /// The QA override.
    Override = 3,
}

impl Source {
    /// Every source, in series order.
    pub const ALL: [Self; 4] = [Self::Hash, Self::Cookie, Self::Rule, Self::Override];

    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Cookie => "cookie",
            Self::Rule => "rule",
            Self::Override => "override",
        }
    }
}

/// One experiment's assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// Variant index.
    pub variant: usize,
    /// How.
    pub source: Source,
}

/// Everything decided for one request, kept for the response phase.
#[derive(Debug, Default)]
pub struct Decision {
    /// Per experiment (configuration order).
    pub assigned: [Option<Assigned>; MAX_EXPERIMENTS],
    /// Per experiment: what the sticky cookie was, when one was sent.
    pub cookies: [Option<CookieResult>; MAX_EXPERIMENTS],
    /// `Set-Cookie` values to send on the response.
    pub set_cookies: Vec<std::rc::Rc<str>>,
}

fn property_holds(condition: &PropertyCondition, inputs: &impl Inputs) -> bool {
    match inputs.property(&condition.path) {
        None => false,
        Some(value) => condition.values.is_empty() || condition.values.contains(&value),
    }
}

fn conditions_hold(conditions: &Conditions, inputs: &impl Inputs) -> bool {
    conditions.client_allowed_lazy(inputs)
        && conditions
            .property
            .as_ref()
            .is_none_or(|p| property_holds(p, inputs))
        && conditions.route.as_ref().is_none_or(|r| r.matches(inputs))
}

impl Conditions {
    fn client_allowed_lazy(&self, inputs: &impl Inputs) -> bool {
        self.cidrs.is_empty() || self.client_allowed(inputs.client_ip())
    }
}

/// The raw value of query parameter `name` in `path` (first occurrence).
pub fn query_parameter<'p>(path: &'p [u8], name: &str) -> Option<&'p [u8]> {
    let start = path.iter().position(|b| *b == b'?')?;
    let query = path.get(start + 1..)?;
    let query = query
        .iter()
        .position(|b| *b == b'#')
        .and_then(|end| query.get(..end))
        .unwrap_or(query);
    query.split(|b| *b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (pair.get(..eq)?, pair.get(eq + 1..)?),
            None => (pair, &b""[..]),
        };
        (key == name.as_bytes()).then_some(value)
    })
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The request's cookies that the configuration reads: the `Cookie` header is scanned once, on
/// first use, for every configured name ([`cookie::scan`]).
struct Cookies<'i, I> {
    names: &'i [Box<[u8]>],
    inputs: &'i I,
    found: OnceCell<cookie::Found<'i>>,
}

impl<'i, I: Inputs> Cookies<'i, I> {
    fn get(&self, finder: &cookie::CookieFinder) -> Option<&'i [u8]> {
        let found = self.found.get_or_init(|| {
            self.inputs
                .cookie_header()
                .map(|header| cookie::scan(self.names, header))
                .unwrap_or_default()
        });
        finder.get(found)
    }
}

fn key<'i, I: Inputs>(
    experiment: &Experiment,
    request_id: &PropertyPath,
    inputs: &'i I,
    cookies: &Cookies<'i, I>,
) -> Option<Cow<'i, [u8]>> {
    let configured = match &experiment.key {
        None => None,
        Some(KeySource::Header(path) | KeySource::Property(path)) => {
            inputs.property(path).map(Cow::Owned)
        }
        Some(KeySource::Cookie(finder)) => cookies.get(finder).map(Cow::Borrowed),
        Some(KeySource::QueryParameter(name)) => inputs
            .path()
            .and_then(|p| query_parameter(p, name))
            .map(Cow::Borrowed),
        Some(KeySource::ClientAddress) => inputs
            .client_ip()
            .map(|ip| Cow::Owned(canonical_ip(ip).to_string().into_bytes())),
    };
    let configured = configured.filter(|k| !k.is_empty());
    if configured.is_some() || (experiment.key.is_some() && !experiment.fallback_to_request_id) {
        return configured;
    }
    inputs
        .property(request_id)
        .filter(|k| !k.is_empty())
        .map(Cow::Owned)
}

/// Whether the client may force variants (constant-time secret comparison).
fn override_allowed(config: &Config, inputs: &impl Inputs) -> bool {
    let Some(o) = &config.override_ else {
        return false;
    };
    if let Some(secret) = &o.secret
        && let Some(sent) = inputs.property(&o.secret_header_path)
        && bool::from(sent.as_slice().ct_eq(secret.as_slice()))
    {
        return true;
    }
    !o.cidrs.is_empty()
        && inputs
            .client_ip()
            .is_some_and(|ip| o.cidrs.iter().any(|c| c.contains(ip)))
}

/// What the filter needs besides the configuration to decide.
pub struct Context<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The request id header's property path.
    pub request_id: &'a PropertyPath,
    /// Experiment header paths (`request.headers.<header>`), read only when overriding.
    pub experiment_headers: &'a [PropertyPath],
}

impl Decision {
    /// Decides every experiment for one request. `now_ns` is the proxy clock (read only when
    /// some experiment has a time window or a sticky cookie).
    pub fn decide(&mut self, ctx: &Context<'_>, inputs: &impl Inputs, now_ns: Option<u64>) {
        self.assigned = [None; MAX_EXPERIMENTS];
        self.cookies = [None; MAX_EXPERIMENTS];
        self.set_cookies.clear();
        let config = ctx.config;
        let overriding = override_allowed(config, inputs);
        let now_secs = now_ns.map(|n| n / 1_000_000_000);
        let cookies = Cookies {
            names: &config.cookie_names,
            inputs,
            found: OnceCell::new(),
        };
        for (i, exp) in config.experiments.iter().enumerate() {
            let (Some(assigned), Some(cookie_slot)) =
                (self.assigned.get_mut(i), self.cookies.get_mut(i))
            else {
                break;
            };
            if !exp.enabled
                || exp.start_ns.is_some_and(|s| now_ns.is_none_or(|n| n < s))
                || exp.end_ns.is_some_and(|e| now_ns.is_none_or(|n| n >= e))
                || !conditions_hold(&exp.targeting, inputs)
            {
                continue;
            }
            if overriding
                && let Some(sent) = ctx
                    .experiment_headers
                    .get(i)
                    .and_then(|p| inputs.property(p))
                && let Some(variant) = exp.live_variant(&sent)
            {
                *assigned = Some(Assigned {
                    variant,
                    source: Source::Override,
                });
                continue;
            }
            if let Some(rule) = exp
                .rules
                .iter()
                .find(|r| conditions_hold(&r.conditions, inputs))
            {
                *assigned = Some(Assigned {
                    variant: rule.variant,
                    source: Source::Rule,
                });
                continue;
            }
            if let (Some(sticky), Some(now)) = (&exp.sticky, now_secs)
                && let Some(value) = cookies.get(&sticky.finder)
            {
                let verified = cookie::verify(
                    &sticky.macs,
                    value,
                    now,
                    sticky.max_age_secs,
                    Some(&sticky.memo),
                )
                .and_then(|name| exp.live_variant(name).ok_or(Rejection::UnknownVariant));
                match verified {
                    Ok(variant) => {
                        *cookie_slot = Some(CookieResult::Accepted);
                        *assigned = Some(Assigned {
                            variant,
                            source: Source::Cookie,
                        });
                        continue;
                    }
                    Err(rejection) => *cookie_slot = Some(rejection.into()),
                }
            }
            let Some(key) = key(exp, ctx.request_id, inputs, &cookies) else {
                continue;
            };
            let variant = variant_of(&exp.boundaries, bucket(&exp.hash_key, &key));
            *assigned = Some(Assigned {
                variant,
                source: Source::Hash,
            });
            if let (Some(sticky), Some(now), Some(mac), Some(v)) = (
                &exp.sticky,
                now_secs,
                exp.sticky.as_ref().and_then(|s| s.macs.first()),
                exp.variants.get(variant),
            ) {
                self.set_cookies.push(sticky.memo.set_cookie(
                    mac,
                    variant,
                    &v.name,
                    now,
                    (&sticky.cookie, &sticky.attributes),
                ));
            }
        }
    }

    /// Request-header effects: every experiment header set or removed, properties, exposures,
    /// the secret header removed, and the route cache cleared.
    pub fn request_effects<'a>(
        &'a self,
        ctx: &Context<'a>,
        property_paths: &'a [Option<PropertyPath>],
        metrics: &'a Metrics,
        effects: &mut Effects<'a>,
    ) {
        let config = ctx.config;
        for (i, (exp, assigned)) in config.experiments.iter().zip(&self.assigned).enumerate() {
            let variant = assigned.and_then(|a| exp.variants.get(a.variant).map(|v| (a, v)));
            match variant {
                Some((a, v)) => {
                    effects.set_header(&exp.header, v.name.as_bytes());
                    if let Some(Some(path)) = property_paths.get(i) {
                        effects.set_property(path, v.name.as_bytes());
                    }
                    effects.count(
                        &metrics.exposures,
                        metrics.exposure(i, a.variant, a.source),
                        1,
                    );
                }
                None => effects.remove_header(&exp.header),
            }
        }
        if let Some(o) = &config.override_ {
            effects.remove_header(&o.secret_header);
        }
        // Envoy ≥ 1.33 keeps the route picked from the original headers unless told.
        effects.clear_route_cache = !config.experiments.is_empty();
    }

    /// Response-header effects: `Set-Cookie` for new sticky assignments, variant headers.
    pub fn response_effects<'a>(&'a self, config: &'a Config, effects: &mut Effects<'a>) {
        for value in &self.set_cookies {
            effects.add_header("set-cookie", value.as_bytes());
        }
        for (exp, assigned) in config.experiments.iter().zip(&self.assigned) {
            if let (Some(header), Some(a)) = (&exp.response_header, assigned)
                && let Some(v) = exp.variants.get(a.variant)
            {
                effects.set_header(header, v.name.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use std::collections::HashMap;

    use meshward_core::route_match::join_header_values;

    use super::*;
    use crate::config::parse;

    #[derive(Default)]
    struct Req {
        headers: Vec<(String, Vec<u8>)>,
        properties: HashMap<Vec<u8>, Vec<u8>>,
        ip: Option<IpAddr>,
        cookie: Option<Vec<u8>>,
    }

    impl Req {
        fn header(mut self, name: &str, value: &str) -> Self {
            self.headers
                .push((name.to_owned(), value.as_bytes().to_vec()));
            if name == "cookie" {
                self.cookie = Some(value.as_bytes().to_vec());
            }
            self
        }
        fn ip(mut self, ip: &str) -> Self {
            self.ip = Some(ip.parse().unwrap());
            self
        }
        fn prop(mut self, path: &[&str], value: &str) -> Self {
            self.properties
                .insert(PropertyPath::new(path).as_bytes().to_vec(), value.into());
            self
        }
    }

    impl MatchInput for Req {
        fn path(&self) -> Option<&[u8]> {
            self.headers.as_slice().path()
        }
        fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
            MatchInput::header(self.headers.as_slice(), name)
        }
    }

    impl Inputs for Req {
        fn property(&self, path: &PropertyPath) -> Option<Vec<u8>> {
            let segs: Vec<&[u8]> = path.segments().collect();
            if let [b"request", b"headers", name] = segs.as_slice() {
                let name = std::str::from_utf8(name).unwrap();
                return join_header_values(
                    self.headers
                        .iter()
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v.as_slice()),
                )
                .map(Cow::into_owned);
            }
            self.properties.get(path.as_bytes()).cloned()
        }
        fn cookie_header(&self) -> Option<&[u8]> {
            self.cookie.as_deref()
        }
        fn client_ip(&self) -> Option<IpAddr> {
            self.ip
        }
    }

    const NOW: u64 = 1_767_225_600_000_000_000;

    fn decide(json: &str, req: &Req) -> Decision {
        let config = parse(json.as_bytes()).unwrap();
        let headers: Vec<_> = config
            .experiments
            .iter()
            .map(|e| PropertyPath::new(&["request", "headers", &e.header]))
            .collect();
        let rid = PropertyPath::new(&["request", "headers", &config.request_id_header]);
        let ctx = Context {
            config: &config,
            request_id: &rid,
            experiment_headers: &headers,
        };
        let mut d = Decision::default();
        d.decide(&ctx, req, Some(NOW));
        d
    }

    const BASIC: &str = r#"{"experiments": [{"name": "checkout", "header": "x-variant",
        "variants": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
        "key": {"header": "x-user"}}]}"#;

    #[test]
    fn hash_of_key_is_deterministic_and_falls_back_to_request_id() {
        let a = decide(BASIC, &Req::default().header("x-user", "alice"));
        let b = decide(BASIC, &Req::default().header("x-user", "alice"));
        assert_eq!(a.assigned[0], b.assigned[0]);
        assert_eq!(a.assigned[0].unwrap().source, Source::Hash);
        let none = decide(BASIC, &Req::default());
        assert_eq!(none.assigned[0], None);
        let rid = decide(BASIC, &Req::default().header("x-request-id", "r-1"));
        assert!(rid.assigned[0].is_some());
    }

    #[test]
    fn targeting_rules_and_windows() {
        let json = r#"{"experiments": [{"name": "e", "header": "x-v",
            "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 0}],
            "match": {"prefix": "/shop"}, "clientCidrs": ["10.0.0.0/8"],
            "requireProperty": {"path": ["jwt", "tier"], "values": ["gold"]},
            "rules": [{"match": {"prefix": "/", "headers": [{"name": "x-beta", "presentMatch": true}]}, "variant": "b"}]}]}"#;
        let base = || {
            Req::default()
                .header(":path", "/shop/cart")
                .header("x-request-id", "r")
                .ip("10.1.2.3")
                .prop(&["jwt", "tier"], "gold")
        };
        assert_eq!(decide(json, &base()).assigned[0].unwrap().variant, 0);
        let rule = decide(json, &base().header("x-beta", "1")).assigned[0].unwrap();
        assert_eq!((rule.variant, rule.source), (1, Source::Rule));
        let other_ip = base().ip("192.168.0.1");
        assert_eq!(decide(json, &other_ip).assigned[0], None);
        let silver = base().prop(&["jwt", "tier"], "silver");
        assert_eq!(decide(json, &silver).assigned[0], None);
        let path = Req::default()
            .header(":path", "/")
            .header("x-request-id", "r");
        assert_eq!(decide(json, &path).assigned[0], None);
        let later = json.replace("\"rules\"", "\"startTime\": 1999999999, \"rules\"");
        assert_eq!(decide(&later, &base()).assigned[0], None);
        let off = json.replace("\"rules\"", "\"enabled\": false, \"rules\"");
        assert_eq!(decide(&off, &base()).assigned[0], None);
    }

    #[test]
    fn key_sources() {
        let with = |key: &str| BASIC.replace(r#"{"header": "x-user"}"#, key);
        let q = decide(
            &with(r#"{"queryParameter": "u"}"#),
            &Req::default().header(":path", "/?a=1&u=alice#x"),
        );
        let h = decide(BASIC, &Req::default().header("x-user", "alice"));
        assert_eq!(q.assigned, h.assigned);
        let c = decide(
            &with(r#"{"cookie": "uid"}"#),
            &Req::default().header("cookie", "x=1; uid=alice"),
        );
        assert_eq!(c.assigned, h.assigned);
        let p = decide(
            &with(r#"{"property": ["jwt", "sub"]}"#),
            &Req::default().prop(&["jwt", "sub"], "alice"),
        );
        assert_eq!(p.assigned, h.assigned);
        let ip = decide(
            &with(r#"{"clientAddress": true}"#),
            &Req::default().ip("::ffff:203.0.113.7"),
        );
        let direct = decide(
            &with(r#"{"queryParameter": "u"}"#),
            &Req::default().header(":path", "/?u=203.0.113.7"),
        );
        assert_eq!(ip.assigned, direct.assigned);
        let strict = with(r#"{"cookie": "uid"}, "fallbackToRequestId": false"#);
        assert_eq!(
            decide(&strict, &Req::default().header("x-request-id", "r")).assigned[0],
            None
        );
        assert_eq!(query_parameter(b"/p?u", "u"), Some(&b""[..]));
        assert_eq!(query_parameter(b"/p", "u"), None);
    }
}
