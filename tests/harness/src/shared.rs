//! State of one simulated Envoy process, shared by every plugin and worker VM: shared data,
//! shared queues, stats, clock, randomness, known clusters and node info.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::clock::{FakeClock, RandomSource};
use crate::types::NodeInfo;

/// Prefix Envoy gives custom Wasm stats.
pub const WASM_STAT_PREFIX: &str = "wasmcustom.";

/// Envoy's default histogram buckets (`stats_config.histogram_bucket_settings` unset).
pub const DEFAULT_HISTOGRAM_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Kind of a stat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricType {
    /// Counter (ABI 0).
    Counter,
    /// Gauge (ABI 1).
    Gauge,
    /// Histogram (ABI 2).
    Histogram,
}

impl MetricType {
    /// From the ABI value.
    pub fn from_abi(value: i32) -> Option<Self> {
        match value {
            0 => Some(Self::Counter),
            1 => Some(Self::Gauge),
            2 => Some(Self::Histogram),
            _ => None,
        }
    }

    /// ABI value.
    pub fn as_abi(self) -> u32 {
        match self {
            Self::Counter => 0,
            Self::Gauge => 1,
            Self::Histogram => 2,
        }
    }
}

/// Value of one stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricValue {
    /// Kind.
    pub kind: MetricType,
    /// Counter/gauge value (0 for histograms).
    pub value: u64,
    /// Recorded histogram samples, in order.
    pub samples: Vec<u64>,
}

/// One `stats_config.stats_tags` entry: `regex`'s first capture group is removed from the
/// name, the second capture group is the value of label `tag_name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsTag {
    /// Label name.
    pub tag_name: String,
    /// Regex applied to the full stat name (including `wasmcustom.`).
    pub regex: String,
}

impl StatsTag {
    /// A tag.
    pub fn new(tag_name: impl Into<String>, regex: impl Into<String>) -> Self {
        Self {
            tag_name: tag_name.into(),
            regex: regex.into(),
        }
    }

    /// Istio's `extraStatTags` form for a tag embedded as `<tag>=.=<value>;.;`.
    pub fn istio(tag_name: &str) -> Self {
        Self::new(
            tag_name,
            format!("({}=\\.=(.*?);\\.;)", regex::escape(tag_name)),
        )
    }
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) vm_id: String,
    pub(crate) name: String,
    pub(crate) items: VecDeque<Vec<u8>>,
    /// (plugin uid, worker, root context id) of the last registrant.
    pub(crate) registrant: Option<(u64, Option<usize>, u32)>,
}

#[derive(Debug, Default)]
pub(crate) struct Tables {
    /// vm_id → key → (value, cas).
    pub(crate) data: BTreeMap<String, BTreeMap<String, (Vec<u8>, u32)>>,
    pub(crate) next_cas: u32,
    pub(crate) queues: BTreeMap<u32, Queue>,
    pub(crate) next_queue_token: u32,
    /// Posted `on_queue_ready` notifications: (plugin uid, worker, root id, queue token).
    pub(crate) queue_notifications: Vec<(u64, Option<usize>, u32, u32)>,
    pub(crate) metrics: BTreeMap<String, MetricValue>,
    pub(crate) clusters: Option<BTreeSet<String>>,
    /// Where gRPC callouts to a cluster go (see [`SharedState::set_cluster_address`]).
    pub(crate) cluster_addresses: BTreeMap<String, std::net::SocketAddr>,
    /// Fault injection: CAS writes that find another worker's write before them.
    pub(crate) cas_races: Vec<CasRace>,
    pub(crate) cas_races_fired: u64,
    pub(crate) node: NodeInfo,
    pub(crate) next_plugin_uid: u64,
}

/// An injected race (see [`SharedState::inject_cas_races`]).
#[derive(Debug)]
pub(crate) struct CasRace {
    pub(crate) vm_id: String,
    pub(crate) key_prefix: String,
    pub(crate) remaining: u32,
    /// `None`: races with writes to existing keys (the value is re-stored). `Some`: races with
    /// the creation of an absent key (another worker creates it with this value first).
    pub(crate) create: Option<Vec<u8>>,
}

impl Tables {
    /// Called by `proxy_set_shared_data` before it checks a CAS token (`cas != 0`): when an
    /// injected race matches `key`, another worker's write lands first — the value is stored
    /// again, unchanged, with a new CAS token — so the caller's token is stale. Returns whether
    /// it did.
    pub(crate) fn race_before_cas_write(&mut self, vm_id: &str, key: &str) -> bool {
        let existing = self
            .data
            .get(vm_id)
            .and_then(|m| m.get(key))
            .map(|(v, _)| v.clone());
        let Some(race) = self.cas_races.iter_mut().find(|r| {
            r.remaining > 0
                && r.vm_id == vm_id
                && key.starts_with(r.key_prefix.as_str())
                && r.create.is_some() == existing.is_none()
        }) else {
            return false;
        };
        let Some(value) = existing.or_else(|| race.create.clone()) else {
            return false;
        };
        race.remaining -= 1;
        self.cas_races_fired += 1;
        let cas = self.next_cas();
        self.data
            .entry(vm_id.to_owned())
            .or_default()
            .insert(key.to_owned(), (value, cas));
        true
    }

    pub(crate) fn next_cas(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        self.next_cas
    }
}

#[derive(Debug, Default)]
struct Inner {
    clock: FakeClock,
    random: RandomSource,
    tables: Mutex<Tables>,
}

/// Everything one Envoy process shares across plugins and worker VMs. Create one per simulated
/// proxy and pass it to every [`crate::Plugin::load`]; cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct SharedState {
    inner: Arc<Inner>,
}

impl SharedState {
    /// A fresh process state: fixed clock, seeded randomness, any cluster name accepted.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn tables(&self) -> MutexGuard<'_, Tables> {
        self.inner
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The process clock.
    pub fn clock(&self) -> &FakeClock {
        &self.inner.clock
    }

    /// The random source behind WASI `random_get`.
    pub fn random(&self) -> &RandomSource {
        &self.inner.random
    }

    /// Restricts `http_call` to these cluster names (unknown → BadArgument, as Envoy). Until
    /// this is called every cluster name is accepted.
    pub fn set_clusters<S: Into<String>>(&self, clusters: impl IntoIterator<Item = S>) {
        self.tables().clusters = Some(clusters.into_iter().map(Into::into).collect());
    }

    /// Gives cluster `name` an address: gRPC callouts to it are sent there over HTTP/2
    /// ([`crate::Plugin::run_grpc_calls`]). Also makes the name known when [`Self::set_clusters`]
    /// restricted them. A cluster without an address answers gRPC calls with UNAVAILABLE.
    pub fn set_cluster_address(&self, name: impl Into<String>, address: std::net::SocketAddr) {
        let name = name.into();
        let mut tables = self.tables();
        if let Some(known) = tables.clusters.as_mut() {
            known.insert(name.clone());
        }
        tables.cluster_addresses.insert(name, address);
    }

    /// The address of cluster `name`, if it has one.
    pub fn cluster_address(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.tables().cluster_addresses.get(name).copied()
    }

    pub(crate) fn cluster_known(&self, name: &str) -> bool {
        self.tables()
            .clusters
            .as_ref()
            .is_none_or(|set| set.contains(name))
    }

    /// Sets the node info (`xds.node`, `node`).
    pub fn set_node(&self, node: NodeInfo) {
        self.tables().node = node;
    }

    pub(crate) fn node(&self) -> NodeInfo {
        self.tables().node.clone()
    }

    pub(crate) fn next_plugin_uid(&self) -> u64 {
        let mut t = self.tables();
        t.next_plugin_uid += 1;
        t.next_plugin_uid
    }

    /// Shared data of one vm_id: key → (value, cas).
    pub fn shared_data(&self, vm_id: &str) -> BTreeMap<String, (Vec<u8>, u32)> {
        self.tables().data.get(vm_id).cloned().unwrap_or_default()
    }

    /// Writes shared data unconditionally (to seed a test); returns the new cas.
    pub fn set_shared_data(&self, vm_id: &str, key: &str, value: &[u8]) -> u32 {
        let mut t = self.tables();
        let cas = t.next_cas();
        t.data
            .entry(vm_id.to_owned())
            .or_default()
            .insert(key.to_owned(), (value.to_vec(), cas));
        cas
    }

    /// Fault injection for compare-and-swap loops: each of the next `count` CAS writes
    /// (`proxy_set_shared_data` with a non-zero token) to an existing key of `vm_id` that starts
    /// with `key_prefix` finds that another worker wrote the key between the filter's read and
    /// this write (the value re-stored unchanged under a new token), so it fails with
    /// `CasMismatch` and the filter must read again. Unconditional writes and creations of absent
    /// keys are not affected. Races add up across calls; [`SharedState::cas_races_fired`] counts
    /// the ones that happened.
    pub fn inject_cas_races(&self, vm_id: &str, key_prefix: &str, count: u32) {
        self.tables().cas_races.push(CasRace {
            vm_id: vm_id.to_owned(),
            key_prefix: key_prefix.to_owned(),
            remaining: count,
            create: None,
        });
    }

    /// Fault injection for first writes: the next write with a non-zero CAS token to an
    /// *absent* key of `vm_id` starting with `key_prefix` (Envoy would ignore the token and
    /// insert) finds that another worker created the key with `value` first; the write then
    /// sees that key (and its token), exactly as if the other worker had won the race.
    pub fn inject_creation_race(&self, vm_id: &str, key_prefix: &str, value: &[u8]) {
        self.tables().cas_races.push(CasRace {
            vm_id: vm_id.to_owned(),
            key_prefix: key_prefix.to_owned(),
            remaining: 1,
            create: Some(value.to_vec()),
        });
    }

    /// How many injected races happened so far.
    pub fn cas_races_fired(&self) -> u64 {
        self.tables().cas_races_fired
    }

    /// Drops the races not yet fired.
    pub fn clear_cas_races(&self) {
        self.tables().cas_races.clear();
    }

    /// Items currently in queue `name` of `vm_id`.
    pub fn queue_items(&self, vm_id: &str, name: &str) -> Option<Vec<Vec<u8>>> {
        let t = self.tables();
        t.queues
            .values()
            .find(|q| q.vm_id == vm_id && q.name == name)
            .map(|q| q.items.iter().cloned().collect())
    }

    /// Every stat, keyed by full name (`wasmcustom.<name>`).
    pub fn metrics(&self) -> BTreeMap<String, MetricValue> {
        self.tables().metrics.clone()
    }

    /// One stat by the name the module defined (without `wasmcustom.`).
    pub fn metric(&self, name: &str) -> Option<MetricValue> {
        self.tables()
            .metrics
            .get(&format!("{WASM_STAT_PREFIX}{name}"))
            .cloned()
    }

    /// Counter or gauge value by module-defined name; 0 if undefined.
    pub fn metric_value(&self, name: &str) -> u64 {
        self.metric(name).map_or(0, |m| m.value)
    }

    /// The stats as Envoy's `/stats/prometheus` prints them (custom Wasm stats only): the
    /// `wasmcustom.` namespace stripped and no `envoy_` prefix, `stats_tags` applied (first
    /// group removed from the name, second group the label value), names sanitized to
    /// `[a-zA-Z0-9_]` (dropped if they then start with a digit), one `# TYPE` line per family,
    /// counters then gauges then histograms, families sorted by name.
    ///
    /// # Errors
    /// An invalid `stats_tags` regex (Envoy would reject the bootstrap).
    pub fn prometheus(&self, stats_tags: &[StatsTag]) -> Result<String, regex::Error> {
        let compiled = stats_tags
            .iter()
            .map(|t| regex::Regex::new(&t.regex).map(|r| (t.tag_name.clone(), r)))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = self.metrics();
        // family name → (full name, labels, value)
        type Family<'a> = BTreeMap<String, Vec<(String, Vec<(String, String)>, &'a MetricValue)>>;
        let mut families: [Family<'_>; 3] = [BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
        for (full_name, value) in &metrics {
            let (extracted, labels) = extract_tags(full_name, &compiled);
            let Some(stripped) = extracted.strip_prefix(WASM_STAT_PREFIX) else {
                continue;
            };
            let name = sanitize_name(stripped);
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let slot = match value.kind {
                MetricType::Counter => 0,
                MetricType::Gauge => 1,
                MetricType::Histogram => 2,
            };
            if let Some(family) = families.get_mut(slot) {
                family
                    .entry(name)
                    .or_default()
                    .push((full_name.clone(), labels, value));
            }
        }
        let mut out = String::new();
        for (slot, family) in families.iter().enumerate() {
            let kind = match slot {
                0 => "counter",
                1 => "gauge",
                _ => "histogram",
            };
            for (name, members) in family {
                let _ = writeln!(out, "# TYPE {name} {kind}");
                let mut members = members.clone();
                members.sort_by(|a, b| a.0.cmp(&b.0));
                for (_, labels, value) in members {
                    let tags = format_labels(&labels);
                    if kind == "histogram" {
                        write_histogram(&mut out, name, &tags, &value.samples);
                    } else {
                        let _ = writeln!(out, "{name}{{{tags}}} {}", value.value);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn extract_tags(
    full_name: &str,
    tags: &[(String, regex::Regex)],
) -> (String, Vec<(String, String)>) {
    let mut remove: Vec<(usize, usize)> = Vec::new();
    let mut labels = Vec::new();
    for (tag_name, re) in tags {
        let Some(caps) = re.captures(full_name) else {
            continue;
        };
        let Some(whole) = caps.get(1).or_else(|| caps.get(0)) else {
            continue;
        };
        let value = caps
            .get(2)
            .or_else(|| caps.get(1))
            .map_or("", |m| m.as_str());
        labels.push((tag_name.clone(), value.to_owned()));
        remove.push((whole.start(), whole.end()));
    }
    let mut extracted = String::with_capacity(full_name.len());
    for (i, ch) in full_name.char_indices() {
        if !remove.iter().any(|(s, e)| i >= *s && i < *e) {
            extracted.push(ch);
        }
    }
    (extracted, labels)
}

fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn sanitize_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

fn format_labels(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", sanitize_name(k), sanitize_value(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn write_histogram(out: &mut String, name: &str, tags: &str, samples: &[u64]) {
    let hist_tags = if tags.is_empty() {
        String::new()
    } else {
        format!("{tags},")
    };
    for bucket in DEFAULT_HISTOGRAM_BUCKETS {
        #[allow(
            clippy::cast_precision_loss,
            reason = "samples are compared as Envoy does, in double precision"
        )]
        let count = samples.iter().filter(|s| (**s as f64) <= bucket).count();
        let _ = writeln!(out, "{name}_bucket{{{hist_tags}le=\"{bucket}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{hist_tags}le=\"+Inf\"}} {}",
        samples.len()
    );
    let sum: u128 = samples.iter().map(|s| u128::from(*s)).sum();
    let _ = writeln!(out, "{name}_sum{{{tags}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{tags}}} {}", samples.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_cas_races_stale_the_token_of_matching_keys_only() {
        let shared = SharedState::new();
        let cas = shared.set_shared_data("vm", "rl.1", b"v");
        let other = shared.set_shared_data("vm", "x", b"w");
        shared.inject_cas_races("vm", "rl.", 2);
        let mut t = shared.tables();
        assert!(!t.race_before_cas_write("vm", "x"), "prefix mismatch");
        assert!(!t.race_before_cas_write("other-vm", "rl.1"), "vm mismatch");
        assert!(
            !t.race_before_cas_write("vm", "rl.absent"),
            "absent keys are inserts"
        );
        assert!(t.race_before_cas_write("vm", "rl.1"));
        let (value, new_cas) = t.data["vm"]["rl.1"].clone();
        assert_eq!(value, b"v", "the value is kept");
        assert_ne!(new_cas, cas, "the reader's token is stale");
        assert!(t.race_before_cas_write("vm", "rl.1"));
        assert!(!t.race_before_cas_write("vm", "rl.1"), "only `count` races");
        assert_eq!(t.cas_races_fired, 2);
        assert_eq!(t.data["vm"]["x"].1, other);
        drop(t);
        shared.inject_creation_race("vm", "rl.", b"theirs");
        let mut t = shared.tables();
        assert!(
            !t.race_before_cas_write("vm", "rl.1"),
            "existing keys are not creations"
        );
        assert!(t.race_before_cas_write("vm", "rl.new"));
        assert_eq!(t.data["vm"]["rl.new"].0, b"theirs");
        assert!(!t.race_before_cas_write("vm", "rl.other"), "once");
    }

    #[test]
    fn extracts_istio_style_tags() {
        let tags = [(
            String::from("action"),
            regex::Regex::new(r"(action=\.=(.*?);\.;)").unwrap(),
        )];
        let (name, labels) =
            extract_tags("wasmcustom.action=.=generated;.;meshward_ids_total", &tags);
        assert_eq!(name, "wasmcustom.meshward_ids_total");
        assert_eq!(labels, vec![("action".to_owned(), "generated".to_owned())]);
    }
}
