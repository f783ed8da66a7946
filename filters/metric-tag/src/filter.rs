//! The glue between the proxy and the value mapping, written against the core's [`Host`] so it
//! runs natively against `MockHost` in tests; `plugin` only forwards proxy-wasm callbacks here.
//!
//! Per stream:
//! - request headers: each request-side tag (method, header, query, path template, constant)
//!   reads its one property and is mapped to a small value index kept in the [`Stream`];
//! - response headers (or, when the stream ends without a response, the log callback): the
//!   response-side tags (status, status class, route, cluster, property) likewise;
//! - log: the measurements the metrics need (`request.duration`, `request.total_size`,
//!   `response.total_size`) are read once, and every metric's series is updated by id.
//!
//! Cardinality: a value index per tag is 0 (the default), 1 (`other`) or one of the tag's
//! values. Closed sets (allow-lists, status classes, templates, constants) are known at
//! configure time. Open tags admit safe raw values first come first served, up to `maxValues`
//! per proxy: the admitted list lives in shared data (`meshward_metric_tag/<tag>`), appended by
//! compare-and-swap, and each VM caches what it has seen (no hostcall for a known value, none
//! either for an unknown value once the list is full). A metric's series is the mixed-radix
//! number of its tags' indices, so each metric has at most the product of its tags' domains;
//! ids are defined on first use and cached per VM, never per request after that.

use std::cell::RefCell;

use meshward_core::effects::Action;
use meshward_core::host::{Host, HostError, MetricKind, PropertyPath};
use meshward_core::metrics::tagged_name;
use meshward_core::plugin::read_plugin_config;

use crate::config::{self, Config, MetricType, MetricValue, OTHER, Source, Tag, Values};

/// Value index of the default value.
pub const DEFAULT_INDEX: u16 = 0;
/// Value index of `other`.
pub const OTHER_INDEX: u16 = 1;
/// First line of a shared admitted-values record (format version).
const RECORD_HEADER: &[u8] = b"mt1";
/// Attempts at a compare-and-swap append before a value counts as `other`.
const CAS_ATTEMPTS: usize = 4;
/// Metric id slot states.
const UNDEFINED: u32 = 0;
const FAILED: u32 = u32::MAX;

static REQUEST_DURATION: PropertyPath = PropertyPath::from_static("request\0duration");
static REQUEST_TOTAL_SIZE: PropertyPath = PropertyPath::from_static("request\0total_size");
static RESPONSE_TOTAL_SIZE: PropertyPath = PropertyPath::from_static("response\0total_size");

/// The shared-data key holding the admitted values of an open tag.
pub fn shared_key(tag: &str) -> String {
    format!("meshward_metric_tag/{tag}")
}

/// The filter-state name (read as `wasm.<name>`) a tag's value is published under.
pub fn property_name(tag: &str) -> String {
    format!("meshward_tag_{tag}")
}

/// What this VM knows of one tag's values: labels by value index.
#[derive(Debug)]
struct TagValues {
    /// 0: default, 1: `other`, then the closed values or the admitted ones, in order.
    labels: Vec<String>,
    /// Open tags: the shared record has reached the cap (every unknown value is `other`).
    full: bool,
}

/// Per-VM mutable caches.
#[derive(Debug)]
struct VmState {
    tags: Vec<TagValues>,
    /// Per metric: id by series index (0: not yet defined, `u32::MAX`: definition failed).
    ids: Vec<Box<[u32]>>,
}

/// One configured filter on one VM: configuration, property paths, caches.
#[derive(Debug)]
pub struct Filter {
    /// The validated configuration.
    pub config: Config,
    /// Per tag: the property it reads (`None` for constants).
    reads: Vec<Option<PropertyPath>>,
    /// Per tag: `meshward_tag_<name>` (empty when `properties` is off).
    publish: Vec<PropertyPath>,
    /// Per tag: its shared-data key (open tags) or empty.
    keys: Vec<String>,
    need_duration: bool,
    need_request_size: bool,
    need_response_size: bool,
    state: RefCell<VmState>,
}

fn source_path(source: &Source) -> Option<PropertyPath> {
    Some(match source {
        Source::Method => PropertyPath::new(&["request", "method"]),
        Source::Status | Source::StatusClass => PropertyPath::new(&["response", "code"]),
        Source::RouteName => PropertyPath::new(&["xds", "route_name"]),
        Source::ClusterName => PropertyPath::new(&["xds", "cluster_name"]),
        Source::Header(name) => PropertyPath::new(&["request", "headers", name]),
        Source::Query(_) => PropertyPath::new(&["request", "query"]),
        Source::PathTemplate(_) => PropertyPath::new(&["request", "url_path"]),
        Source::Property(path) => {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            PropertyPath::new(&segments)
        }
        Source::Constant => return None,
    })
}

impl Filter {
    /// Reads and validates the plugin configuration (logging `metric-tag: invalid plugin
    /// config: <path>: <reason>` and returning `None` when invalid), then prepares paths and
    /// caches and creates the shared records of open tags.
    pub fn configure(host: &(impl Host + ?Sized)) -> Option<Self> {
        let config = read_plugin_config::<config::RawConfig, Config>(host)?;
        Some(Self::new(host, config))
    }

    /// The filter for an already validated configuration.
    pub fn new(host: &(impl Host + ?Sized), config: Config) -> Self {
        let keys: Vec<String> = config
            .tags
            .iter()
            .map(|t| match t.values {
                Values::Capped(_) => shared_key(&t.name),
                Values::Closed(_) => String::new(),
            })
            .collect();
        for key in keys.iter().filter(|k| !k.is_empty()) {
            // Create the record once so every later append is a compare-and-swap (an absent key
            // has no CAS token). Two VMs creating it at once write the same bytes.
            if matches!(host.shared_data(key), Ok(shared) if shared.value.is_none()) {
                let _ = host.set_shared_data(key, RECORD_HEADER, None);
            }
        }
        let tags = config
            .tags
            .iter()
            .map(|t| {
                let mut labels = vec![t.default.clone(), OTHER.to_owned()];
                if let Values::Closed(values) = &t.values {
                    labels.extend(values.iter().map(|(_, label)| label.clone()));
                }
                TagValues {
                    labels,
                    full: false,
                }
            })
            .collect();
        let ids = config
            .metrics
            .iter()
            .map(|m| vec![UNDEFINED; m.series].into_boxed_slice())
            .collect();
        let uses = |value: MetricValue| config.metrics.iter().any(|m| m.value == value);
        Self {
            reads: config.tags.iter().map(|t| source_path(&t.source)).collect(),
            publish: if config.properties {
                config
                    .tags
                    .iter()
                    .map(|t| PropertyPath::new(&[&property_name(&t.name)]))
                    .collect()
            } else {
                Vec::new()
            },
            keys,
            need_duration: uses(MetricValue::DurationMs),
            need_request_size: uses(MetricValue::RequestBytes),
            need_response_size: uses(MetricValue::ResponseBytes),
            state: RefCell::new(VmState { tags, ids }),
            config,
        }
    }

    /// The label of value `index` of tag `tag` on this VM (tests and diagnostics).
    pub fn label(&self, tag: usize, index: u16) -> Option<String> {
        let state = self.state.try_borrow().ok()?;
        state.tags.get(tag)?.labels.get(usize::from(index)).cloned()
    }

    /// Number of metric ids this VM has defined (tests and diagnostics).
    pub fn defined_series(&self) -> usize {
        self.state.try_borrow().map_or(0, |state| {
            state
                .ids
                .iter()
                .map(|ids| ids.iter().filter(|id| **id != UNDEFINED).count())
                .sum()
        })
    }

    /// Maps tag `index`'s raw value to its value index (admitting it per proxy when open).
    fn value_index(&self, host: &(impl Host + ?Sized), index: usize, raw: Option<&[u8]>) -> u16 {
        let Some(tag) = self.config.tags.get(index) else {
            return DEFAULT_INDEX;
        };
        let raw = match raw {
            Some(raw) if !raw.is_empty() => raw,
            _ => return DEFAULT_INDEX,
        };
        match &tag.values {
            Values::Closed(values) => values
                .iter()
                .position(|(value, _)| value == raw)
                .map_or(OTHER_INDEX, |i| to_index(i + 2)),
            Values::Capped(cap) => {
                if !config::is_safe_value(raw, tag.max_length) {
                    return OTHER_INDEX;
                }
                let Ok(mut state) = self.state.try_borrow_mut() else {
                    return OTHER_INDEX;
                };
                let Some(values) = state.tags.get_mut(index) else {
                    return OTHER_INDEX;
                };
                if let Some(i) = find(&values.labels, raw) {
                    return i;
                }
                if values.full {
                    return OTHER_INDEX;
                }
                let key = self.keys.get(index).map_or("", String::as_str);
                admit(host, key, raw, *cap, values)
            }
        }
    }

    /// The raw value of a tag whose source is derived (status class, path template, query),
    /// given the property bytes; `None` when the source has nothing.
    fn evaluate(&self, host: &(impl Host + ?Sized), index: usize) -> u16 {
        let Some(tag) = self.config.tags.get(index) else {
            return DEFAULT_INDEX;
        };
        if tag.source == Source::Constant {
            return 2;
        }
        let read = match self.reads.get(index).and_then(Option::as_ref) {
            // A missing property (or a failed read) is the default value, never an error.
            Some(path) => host.property(path).ok().flatten(),
            None => None,
        };
        let Some(read) = read else {
            return DEFAULT_INDEX;
        };
        match &tag.source {
            Source::Status => match status_code(&read) {
                Some(code) => {
                    let mut digits = [0u8; 20];
                    let text = format_decimal(code, &mut digits);
                    self.value_index(host, index, Some(text))
                }
                None => DEFAULT_INDEX,
            },
            Source::StatusClass => match status_code(&read).and_then(status_class) {
                Some(class) => self.value_index(host, index, Some(class.as_bytes())),
                None => DEFAULT_INDEX,
            },
            Source::Query(name) => self.value_index(host, index, query_value(&read, name)),
            Source::PathTemplate(templates) => templates
                .iter()
                .position(|t| t.matches(&read))
                .map_or(DEFAULT_INDEX, |i| to_index(i + 2)),
            _ => self.value_index(host, index, Some(&read)),
        }
    }

    fn publish(&self, host: &(impl Host + ?Sized), tag: usize, index: u16) {
        let Some(path) = self.publish.get(tag) else {
            return;
        };
        if let Ok(state) = self.state.try_borrow()
            && let Some(label) = state
                .tags
                .get(tag)
                .and_then(|t| t.labels.get(usize::from(index)))
            && let Err(error) = host.set_property(path, label.as_bytes())
        {
            ::log::debug!(
                "cannot set {}: {error}",
                property_name(&tag_name(self, tag))
            );
        }
    }

    /// The id of a metric's series, defined on first use.
    fn metric_id(&self, host: &(impl Host + ?Sized), metric: usize, values: &[u16]) -> Option<u32> {
        let spec = self.config.metrics.get(metric)?;
        let mut series = 0usize;
        for &tag in spec.tags.iter().rev() {
            let domain = self.config.tags.get(tag).map_or(1, Tag::domain);
            let index = usize::from(values.get(tag).copied().unwrap_or(DEFAULT_INDEX));
            series = series * domain + index.min(domain - 1);
        }
        let mut state = self.state.try_borrow_mut().ok()?;
        match state
            .ids
            .get(metric)
            .and_then(|ids| ids.get(series))
            .copied()?
        {
            FAILED => return None,
            UNDEFINED => {}
            id => return Some(id),
        }
        let labels: Vec<(&str, &str)> = spec
            .tags
            .iter()
            .filter_map(|&tag| {
                let name = self.config.tags.get(tag)?.name.as_str();
                let index = usize::from(values.get(tag).copied().unwrap_or(DEFAULT_INDEX));
                let label = state.tags.get(tag)?.labels.get(index)?.as_str();
                Some((name, label))
            })
            .collect();
        let name = tagged_name(&spec.name, &labels);
        let kind = match spec.kind {
            MetricType::Counter => MetricKind::Counter,
            MetricType::Histogram => MetricKind::Histogram,
        };
        let id = host.define_metric(kind, &name).unwrap_or_else(|error| {
            ::log::warn!("cannot define metric {name}: {error}");
            FAILED
        });
        if let Some(slot) = state
            .ids
            .get_mut(metric)
            .and_then(|ids| ids.get_mut(series))
        {
            *slot = if id == UNDEFINED { FAILED } else { id };
        }
        (id != FAILED && id != UNDEFINED).then_some(id)
    }
}

fn tag_name(filter: &Filter, tag: usize) -> String {
    filter
        .config
        .tags
        .get(tag)
        .map_or_else(String::new, |t| t.name.clone())
}

fn to_index(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(OTHER_INDEX)
}

fn find(labels: &[String], raw: &[u8]) -> Option<u16> {
    labels
        .iter()
        .skip(2)
        .position(|label| label.as_bytes() == raw)
        .map(|i| to_index(i + 2))
}

/// Brings `values` up to date with the shared record and appends `raw` to it if there is room.
fn admit(
    host: &(impl Host + ?Sized),
    key: &str,
    raw: &[u8],
    cap: usize,
    values: &mut TagValues,
) -> u16 {
    for _ in 0..CAS_ATTEMPTS {
        let Ok(shared) = host.shared_data(key) else {
            return OTHER_INDEX;
        };
        let record = shared.value.unwrap_or_else(|| RECORD_HEADER.to_vec());
        let mut count = 0usize;
        for entry in record.split(|b| *b == b'\n').skip(1) {
            if entry.is_empty() || count >= cap {
                continue;
            }
            count += 1;
            // Never more labels than the tag's domain, even if this VM admitted a value the
            // record later lost (two first writes racing): series indices stay in range.
            if values.labels.len() < cap + 2
                && find(&values.labels, entry).is_none()
                && let Ok(entry) = std::str::from_utf8(entry)
            {
                values.labels.push(entry.to_owned());
            }
        }
        if let Some(i) = find(&values.labels, raw) {
            return i;
        }
        if count >= cap || values.labels.len() >= cap + 2 {
            values.full = true;
            return OTHER_INDEX;
        }
        let mut updated = Vec::with_capacity(record.len() + raw.len() + 1);
        updated.extend_from_slice(&record);
        updated.push(b'\n');
        updated.extend_from_slice(raw);
        match host.set_shared_data(key, &updated, shared.cas) {
            Ok(()) => {
                // `raw` is safe ASCII (checked by the caller).
                values
                    .labels
                    .push(String::from_utf8_lossy(raw).into_owned());
                return find(&values.labels, raw).unwrap_or(OTHER_INDEX);
            }
            Err(HostError::CasMismatch) => {}
            Err(_) => return OTHER_INDEX,
        }
    }
    OTHER_INDEX
}

/// `response.code`: int64 little-endian.
fn status_code(raw: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = raw.try_into().ok()?;
    u64::try_from(i64::from_le_bytes(bytes)).ok()
}

fn status_class(code: u64) -> Option<&'static str> {
    Some(match code {
        429 => "429",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => return None,
    })
}

fn format_decimal(mut value: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        if let Some(slot) = buffer.get_mut(start) {
            *slot = b'0' + (value % 10) as u8;
        }
        value /= 10;
        if value == 0 || start == 0 {
            break;
        }
    }
    buffer.get(start..).unwrap_or_default()
}

/// The raw value of the first `name=` parameter of a query string (no `?`).
fn query_value<'q>(query: &'q [u8], name: &str) -> Option<&'q [u8]> {
    query
        .split(|b| *b == b'&')
        .find_map(|pair| pair.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
}

fn i64_le(raw: Option<Vec<u8>>) -> Option<u64> {
    let bytes: [u8; 8] = raw?.as_slice().try_into().ok()?;
    u64::try_from(i64::from_le_bytes(bytes)).ok()
}

/// One stream: the value index of every tag, as far as evaluated.
#[derive(Debug, Default)]
pub struct Stream {
    values: [u16; config::MAX_TAGS],
    request_done: bool,
    response_done: bool,
}

impl Stream {
    /// The value indices (by tag) evaluated so far.
    pub fn values(&self) -> &[u16] {
        &self.values
    }

    fn evaluate(&mut self, filter: &Filter, host: &(impl Host + ?Sized), request_side: bool) {
        for (index, tag) in filter.config.tags.iter().enumerate() {
            if (tag.source.on_request() || tag.source == Source::Constant) != request_side {
                continue;
            }
            let value = filter.evaluate(host, index);
            if let Some(slot) = self.values.get_mut(index) {
                *slot = value;
            }
            filter.publish(host, index, value);
        }
    }

    /// Request headers: the request-side tags. Never pauses.
    pub fn on_request_headers(&mut self, filter: &Filter, host: &(impl Host + ?Sized)) {
        self.evaluate(filter, host, true);
        self.request_done = true;
    }

    /// Response headers (also of local replies): the response-side tags, so their properties
    /// exist before the stats and access-log filters run.
    pub fn on_response_headers(&mut self, filter: &Filter, host: &(impl Host + ?Sized)) {
        if !self.response_done {
            self.evaluate(filter, host, false);
            self.response_done = true;
        }
    }

    /// End of stream: whatever is not evaluated yet, then every metric.
    pub fn on_log(&mut self, filter: &Filter, host: &(impl Host + ?Sized)) {
        if !self.request_done {
            self.on_request_headers(filter, host);
        }
        self.on_response_headers(filter, host);
        let duration_ms = filter
            .need_duration
            .then(|| i64_le(host.property(&REQUEST_DURATION).ok().flatten()))
            .flatten()
            .map(|ns| ns / 1_000_000);
        let request_bytes = filter
            .need_request_size
            .then(|| i64_le(host.property(&REQUEST_TOTAL_SIZE).ok().flatten()))
            .flatten();
        let response_bytes = filter
            .need_response_size
            .then(|| i64_le(host.property(&RESPONSE_TOTAL_SIZE).ok().flatten()))
            .flatten();
        for (index, metric) in filter.config.metrics.iter().enumerate() {
            let value = match metric.value {
                MetricValue::Requests => Some(1),
                MetricValue::DurationMs => duration_ms,
                MetricValue::RequestBytes => request_bytes,
                MetricValue::ResponseBytes => response_bytes,
            };
            // A measurement the proxy does not have is not recorded (never a guess).
            let Some(value) = value else { continue };
            let Some(id) = filter.metric_id(host, index, &self.values) else {
                continue;
            };
            let _ = match metric.kind {
                MetricType::Counter if value > 0 => {
                    host.increment_metric(id, i64::try_from(value).unwrap_or(i64::MAX))
                }
                MetricType::Counter => Ok(()),
                MetricType::Histogram => host.record_metric(id, value),
            };
        }
    }
}

/// The proxy-wasm glue is the core's ([`meshward_core::plugin::register`]); this says which
/// callbacks the filter handles.
impl meshward_core::plugin::HttpFilter for Filter {
    type Stream = Stream;

    fn configure(host: &(impl Host + ?Sized)) -> Option<Self> {
        Filter::configure(host)
    }

    fn on_request_headers(&self, stream: &mut Stream, host: &(impl Host + ?Sized)) -> Action {
        stream.on_request_headers(self, host);
        Action::Continue
    }

    fn on_response_headers(&self, stream: &mut Stream, host: &(impl Host + ?Sized)) -> Action {
        stream.on_response_headers(self, host);
        Action::Continue
    }

    fn on_log(&self, stream: &mut Stream, host: &(impl Host + ?Sized)) {
        stream.on_log(self, host);
    }
}

#[cfg(test)]
mod tests;
