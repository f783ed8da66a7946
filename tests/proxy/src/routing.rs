//! Envoy's route selection over the validated route table: virtual host by `:authority`, then the
//! first route whose `match` holds — matched by the core's `route_match::RouteMatcher`, the same
//! code the filters' rules use.
//!
//! Weighted clusters: Envoy picks with a random per-stream value. The dev proxy picks
//! deterministically instead, from a hash of the request's `x-request-id` when the client sent one
//! (so a given id always lands on the same cluster) and from a hashed per-process counter
//! otherwise; either way the split follows the weights over many requests. The route (and so the
//! pick) is made from the headers before the filters run, as Envoy does.

use std::time::Duration;

use meshward_core::route_match::RouteMatcher;

use crate::envoy_config::{RouteActionConfig, VirtualHostConfig};

/// Header list as the filters see it: lower-case names, pseudo-headers included, duplicates kept.
pub type HeaderList = [(String, String)];

/// What the router does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    Forward {
        route_name: String,
        cluster: String,
        timeout: Duration,
    },
    Direct {
        route_name: String,
        status: u16,
        body: String,
    },
    /// No virtual host or no route matched: Envoy answers 404 (response flag NR).
    NotFound,
}

/// The route table compiled once at start.
#[derive(Debug)]
pub struct RouteTable {
    virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug)]
struct VirtualHost {
    domains: Vec<String>,
    routes: Vec<Route>,
}

#[derive(Debug)]
struct Route {
    name: String,
    matcher: RouteMatcher,
    action: RouteActionConfig,
}

impl RouteTable {
    /// Builds the table from the validated config (whose route matches are already compiled).
    pub fn compile(virtual_hosts: &[VirtualHostConfig]) -> Self {
        let virtual_hosts = virtual_hosts
            .iter()
            .map(|vh| VirtualHost {
                domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                routes: vh
                    .routes
                    .iter()
                    .map(|route| Route {
                        name: route.name.clone(),
                        matcher: route.matcher.clone(),
                        action: route.action.clone(),
                    })
                    .collect(),
            })
            .collect();
        Self { virtual_hosts }
    }

    /// Selects the route for `headers`. `weight_key` picks among weighted clusters.
    pub fn select(&self, headers: &HeaderList, weight_key: u64) -> RouteDecision {
        let authority = first_value(headers, ":authority")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some(vh) = self.virtual_host(&authority) else {
            return RouteDecision::NotFound;
        };
        vh.routes
            .iter()
            .find(|route| route.matcher.matches(headers))
            .map_or(RouteDecision::NotFound, |route| route.decision(weight_key))
    }

    /// Envoy's domain search order: exact, then longest `*.suffix`, then longest `prefix.*`, then `*`.
    fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let host_without_port = strip_port(authority);
        let candidates = [authority, host_without_port];
        for host in candidates {
            if let Some(vh) = self
                .virtual_hosts
                .iter()
                .find(|vh| vh.domains.iter().any(|d| d == host))
            {
                return Some(vh);
            }
        }
        let mut best: Option<(usize, &VirtualHost)> = None;
        for vh in &self.virtual_hosts {
            for domain in &vh.domains {
                if let Some(suffix) = domain.strip_prefix('*')
                    && !suffix.is_empty()
                    && candidates
                        .iter()
                        .any(|h| h.ends_with(suffix) && h.len() > suffix.len())
                    && best.is_none_or(|(len, _)| suffix.len() > len)
                {
                    best = Some((suffix.len(), vh));
                }
            }
        }
        if let Some((_, vh)) = best {
            return Some(vh);
        }
        for vh in &self.virtual_hosts {
            for domain in &vh.domains {
                if let Some(prefix) = domain.strip_suffix('*')
                    && !prefix.is_empty()
                    && candidates
                        .iter()
                        .any(|h| h.starts_with(prefix) && h.len() > prefix.len())
                    && best.is_none_or(|(len, _)| prefix.len() > len)
                {
                    best = Some((prefix.len(), vh));
                }
            }
        }
        if let Some((_, vh)) = best {
            return Some(vh);
        }
        self.virtual_hosts
            .iter()
            .find(|vh| vh.domains.iter().any(|d| d == "*"))
    }
}

impl Route {
    fn decision(&self, weight_key: u64) -> RouteDecision {
        match &self.action {
            RouteActionConfig::Cluster { name, timeout } => RouteDecision::Forward {
                route_name: self.name.clone(),
                cluster: name.clone(),
                timeout: *timeout,
            },
            RouteActionConfig::Weighted { clusters, timeout } => RouteDecision::Forward {
                route_name: self.name.clone(),
                cluster: pick_weighted(clusters, weight_key),
                timeout: *timeout,
            },
            RouteActionConfig::Direct { status, body } => RouteDecision::Direct {
                route_name: self.name.clone(),
                status: *status,
                body: body.clone(),
            },
        }
    }
}

/// Envoy's selection: `key % total`, then the first cluster whose cumulative weight exceeds it.
fn pick_weighted(clusters: &[(String, u32)], key: u64) -> String {
    let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return clusters
            .first()
            .map(|(name, _)| name.clone())
            .unwrap_or_default();
    }
    let point = key % total;
    let mut cumulative = 0_u64;
    for (name, weight) in clusters {
        cumulative += u64::from(*weight);
        if point < cumulative {
            return name.clone();
        }
    }
    clusters
        .last()
        .map(|(name, _)| name.clone())
        .unwrap_or_default()
}

fn strip_port(authority: &str) -> &str {
    // Keep IPv6 literals (`[::1]:80`) intact up to the bracket.
    match authority.rfind(':') {
        Some(index)
            if !authority.ends_with(']')
                && authority
                    .get(index + 1..)
                    .is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit())) =>
        {
            authority.get(..index).unwrap_or(authority)
        }
        _ => authority,
    }
}

/// First value of a header (names compared case-insensitively).
pub fn first_value<'a>(headers: &'a HeaderList, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The weighted-cluster key from a request id: FNV-1a (64 bit) followed by the splitmix64
/// finalizer. FNV alone is not enough: its low bits depend only on the low bits of the input
/// bytes, and hex ids vary little there, so `key % 100` sent every UUID to the same cluster.
pub fn weight_key_of(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy_config::parse;

    fn table() -> RouteTable {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy-local/envoy.yaml");
        let config = parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        RouteTable::compile(&config.virtual_hosts)
    }

    fn request(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut headers = vec![
            (":method".to_owned(), "GET".to_owned()),
            (":path".to_owned(), path.to_owned()),
            (":authority".to_owned(), "localhost:10000".to_owned()),
        ];
        headers.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        headers
    }

    fn target(decision: &RouteDecision) -> String {
        match decision {
            RouteDecision::Forward { cluster, .. } => cluster.clone(),
            RouteDecision::Direct { status, .. } => format!("direct {status}"),
            RouteDecision::NotFound => "404".to_owned(),
        }
    }

    #[test]
    fn shipped_routes_select_like_envoy() {
        let table = table();
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            ("/hello", &[], "direct 200"),
            ("/hello?x=1", &[], "direct 200"),
            ("/hello/more", &[], "echo-v1"),
            ("/anything", &[], "echo-v1"),
            ("/anything", &[("x-meshward-variant", "b")], "echo-v2"),
            ("/anything", &[("x-meshward-variant", "B")], "echo-v1"),
            ("/anything", &[("x-meshward-variant", "a")], "echo-v1"),
            // first match wins: /hello precedes the header route.
            ("/hello", &[("x-meshward-variant", "b")], "direct 200"),
            ("/v2/x", &[], "echo-v2"),
            ("/V2/x", &[], "echo-v1"),
        ];
        for (path, extra, expected) in cases {
            assert_eq!(
                target(&table.select(&request(path, extra), 0)),
                *expected,
                "{path} {extra:?}"
            );
        }
    }

    #[test]
    fn weighted_split_follows_the_weights() {
        let table = table();
        let mut v2 = 0;
        for key in 0..1000_u64 {
            if target(&table.select(&request("/split/x", &[]), key)) == "echo-v2" {
                v2 += 1;
            }
        }
        assert_eq!(v2, 200);
    }

    #[test]
    fn request_ids_spread_over_the_weights() {
        // UUID-shaped ids, as the trace-id filter generates them (deterministic here).
        let table = table();
        let mut v2 = 0;
        for i in 0..2000_u64 {
            let bits = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) as u128) << 64 | u128::from(i);
            let hex = format!("{bits:032x}");
            let id = format!(
                "{}-{}-4{}-a{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                &hex[20..]
            );
            if target(&table.select(&request("/split/x", &[]), weight_key_of(id.as_bytes())))
                == "echo-v2"
            {
                v2 += 1;
            }
        }
        assert!(
            (300..=500).contains(&v2),
            "{v2} of 2000 went to the 20% cluster"
        );
    }

    #[test]
    fn ports_are_stripped_only_when_numeric() {
        assert_eq!(strip_port("example.com:80"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
    }
}
