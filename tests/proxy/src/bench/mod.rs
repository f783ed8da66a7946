//! `make bench`'s measurements (the `meshward-bench` binary): every filter, the whole chain and
//! the no-op baseline, configured exactly as `envoy-local/envoy.yaml` ships them, driven through
//! `meshward-host` with the bench profile request (`tests/fixtures/bench/request.json`).
//!
//! * [`measure_instructions`]: wasm instructions (wasmtime fuel) and hostcalls per request, split
//!   by proxy-wasm callback, linear memory per VM and shared-data keys — deterministic figures;
//! * [`measure_wall_time`]: wall time per request as a ratio to the no-op baseline of the same run
//!   (interleaved batches, median and MAD);
//! * [`soak`]: linear memory per VM and shared-data keys along a long run with high-cardinality
//!   inputs;
//! * [`e2e`]: the dev proxy under `wrk`, whole chain vs. no filters;
//! * [`report`]: budgets (`tests/fixtures/bench/budgets.json`), the generated sections of
//!   `BENCHMARKS.md` and the SVG chart.

pub mod e2e;
pub mod report;
pub mod scenarios;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use meshward_host::cli::RequestFile;
use meshward_host::{
    Chain, ExportCosts, FailPolicy, HostEngine, HttpOutcome, Plugin, PluginSpec, Request, Response,
    SharedState,
};

use crate::envoy_config::{ProxyConfig, WasmFilterConfig};
pub use scenarios::{HeaderValue, SCENARIOS, Scenario, SoakInputs};

/// The bench profile (see `tests/fixtures/bench/README.md`), the request every scenario starts from.
pub const BENCH_REQUEST: &str = include_str!("../../../fixtures/bench/request.json");

/// The module name of the no-op baseline (`dist/noop.wasm`, not in envoy.yaml).
pub const NOOP: &str = "noop";

/// Where the inputs live.
#[derive(Debug, Clone)]
pub struct BenchEnv {
    /// The parsed `envoy-local/envoy.yaml`: the filters, their order and their configurations.
    pub config: ProxyConfig,
    /// `dist/`: the modules as shipped (after `wasm-opt -Oz`).
    pub dist: PathBuf,
    /// `tests/fixtures`: the bench tokens.
    pub fixtures: PathBuf,
    /// Worker VMs per filter.
    pub workers: usize,
}

impl BenchEnv {
    /// The envoy.yaml filter whose module file is `<module>.wasm`.
    ///
    /// # Errors
    /// No such filter in envoy.yaml.
    pub fn filter(&self, module: &str) -> anyhow::Result<&WasmFilterConfig> {
        self.config
            .wasm_filters
            .iter()
            .find(|f| module_name(f) == module)
            .with_context(|| format!("no filter with module {module}.wasm in envoy.yaml"))
    }

    /// Module names of envoy.yaml's filters, in chain order.
    pub fn chain_modules(&self) -> Vec<String> {
        self.config.wasm_filters.iter().map(module_name).collect()
    }

    fn header_value(&self, value: HeaderValue) -> anyhow::Result<String> {
        let token = |file: &str| -> anyhow::Result<String> {
            let path = self.fixtures.join("jwt-auth").join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(format!("Bearer {}", text.trim()))
        };
        match value {
            HeaderValue::Text(text) => Ok(text.to_owned()),
            HeaderValue::Es256Token => token("bench-es256.token"),
            HeaderValue::Rs256Token => token("bench-rs256.token"),
        }
    }
}

/// `trace-id` for `/etc/envoy/wasm/trace-id.wasm`.
pub fn module_name(filter: &WasmFilterConfig) -> String {
    filter
        .module_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A scenario's filters loaded on fresh shared state, with its request and upstream response.
pub struct Setup {
    /// The filters in chain order.
    pub chain: Chain,
    /// Their process (shared data, clock, stats).
    pub shared: SharedState,
    /// The request as the scenario sends it.
    pub request: Request,
    /// The upstream's response.
    pub response: Response,
    /// Module name of each plugin in `chain`.
    pub modules: Vec<String>,
    /// vm_id of each plugin in `chain`.
    pub vm_ids: Vec<String>,
    next_worker: usize,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("modules", &self.modules)
            .finish_non_exhaustive()
    }
}

fn load_plugin(
    env: &BenchEnv,
    module: &str,
    workers: usize,
    shared: &SharedState,
) -> anyhow::Result<(Plugin, String)> {
    let engine = HostEngine::global().context("starting the wasm engine")?;
    let path = env.dist.join(format!("{module}.wasm"));
    let compiled = engine
        .load_file(&path)
        .with_context(|| format!("loading {}: run `make dist`", path.display()))?;
    let spec = if module == NOOP {
        PluginSpec::new(NOOP, NOOP)
    } else {
        let filter = env.filter(module)?;
        PluginSpec::new(filter.plugin_name.clone(), filter.root_id.clone())
            .with_vm_id(filter.vm_id.clone())
            .with_configuration(filter.configuration.as_bytes().to_vec())
            .with_fail_policy(if filter.fail_open {
                FailPolicy::FailOpen
            } else {
                FailPolicy::FailClosed
            })
    }
    .with_workers(workers);
    let vm_id = spec.vm_id.clone();
    let plugin = Plugin::load(engine, &compiled, spec, shared)
        .map_err(|e| anyhow::anyhow!("{module}: {e}"))?;
    Ok((plugin, vm_id))
}

impl Setup {
    /// Loads the scenario's filters (`workers` VMs each) and prepares its request.
    ///
    /// # Errors
    /// A module or configuration that does not load, an unreadable fixture.
    pub fn new(env: &BenchEnv, scenario: &Scenario, workers: usize) -> anyhow::Result<Self> {
        let file = RequestFile::parse(BENCH_REQUEST).map_err(|e| anyhow::anyhow!(e))?;
        let shared = SharedState::new();
        shared.set_clusters(env.config.clusters.keys().cloned());
        let modules: Vec<String> = if scenario.chain {
            env.chain_modules()
        } else {
            scenario.filters.iter().map(|m| (*m).to_owned()).collect()
        };
        let mut plugins = Vec::new();
        let mut vm_ids = Vec::new();
        for module in &modules {
            let (plugin, vm_id) = load_plugin(env, module, workers, &shared)?;
            plugins.push(plugin);
            vm_ids.push(vm_id);
        }
        let mut request = file.request;
        if let Some(path) = scenario.path {
            request.headers.insert(":path", path);
        }
        for (name, value) in scenario.headers {
            request.headers.append(name, env.header_value(*value)?);
        }
        Ok(Self {
            chain: Chain::new(plugins),
            shared,
            request,
            response: file.response,
            modules,
            vm_ids,
            next_worker: 0,
        })
    }

    /// Sends `request` on the next worker (round-robin); fails on a trap.
    ///
    /// # Errors
    /// A trap or a host error.
    pub fn send(&mut self, request: Request) -> anyhow::Result<HttpOutcome> {
        let workers = self.chain.plugins().first().map_or(1, Plugin::workers);
        let worker = self.next_worker % workers.max(1);
        self.next_worker = self.next_worker.wrapping_add(1);
        let response = self.response.clone();
        let outcome = self
            .chain
            .run(
                worker,
                request,
                |_| response.clone(),
                |_| meshward_host::CallReply::Leave,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(trap) = outcome.traps.first() {
            bail!("{}: trap: {trap}", self.modules.join("+"));
        }
        Ok(outcome)
    }

    fn reset_costs(&mut self) {
        for plugin in self.chain.plugins_mut() {
            plugin.reset_export_costs();
        }
    }

    fn costs(&self) -> ExportCosts {
        let mut costs = ExportCosts::default();
        for plugin in self.chain.plugins() {
            costs.merge(&plugin.export_costs());
        }
        costs
    }

    /// Largest linear memory over the workers, per module in chain order.
    pub fn memory(&mut self) -> Vec<(String, usize)> {
        let modules = self.modules.clone();
        self.chain
            .plugins_mut()
            .iter_mut()
            .zip(modules)
            .map(|(plugin, module)| {
                let bytes = (0..plugin.workers())
                    .filter_map(|w| plugin.memory_bytes(w).ok())
                    .max()
                    .unwrap_or(0);
                (module, bytes)
            })
            .collect()
    }

    /// Shared-data keys per vm_id of the chain (vm_ids without keys included, as 0).
    pub fn shared_keys(&self) -> BTreeMap<String, usize> {
        self.vm_ids
            .iter()
            .map(|vm_id| (vm_id.clone(), self.shared.shared_data(vm_id).len()))
            .collect()
    }

    /// Runs the scenario's warm-up: one request per worker (each VM's first request defines its
    /// metrics, fills its caches), and for a sticky scenario takes the cookie the filter set.
    fn warm_up(&mut self, scenario: &Scenario) -> anyhow::Result<()> {
        if let Some(path) = scenario.fresh_warm_up_path {
            // A fresh verification: warm the VM on a path no rule covers, then measure one request.
            let mut request = self.request.clone();
            request.headers.insert(":path", path);
            request.headers.remove("authorization");
            self.send(request)?;
            return Ok(());
        }
        let workers = self.chain.plugins().first().map_or(1, Plugin::workers);
        for _ in 0..workers {
            let outcome = self.send(self.request.clone())?;
            if let Some(cookie_name) = scenario.sticky_cookie
                && let Some(set_cookie) = outcome.response_header("set-cookie")
            {
                let pair = set_cookie.split(';').next().unwrap_or_default();
                if pair.starts_with(&format!("{cookie_name}=")) {
                    let cookie = self.request.headers.get("cookie").unwrap_or_default();
                    let joined = format!("{cookie}; {pair}");
                    self.request.headers.insert("cookie", joined);
                }
            }
        }
        if let Some(cookie_name) = scenario.sticky_cookie {
            let cookie = self.request.headers.get("cookie").unwrap_or_default();
            if !cookie.contains(&format!("{cookie_name}=")) {
                bail!("{}: no `{cookie_name}` cookie was set", scenario.id);
            }
        }
        Ok(())
    }

    fn advance(&self, scenario: &Scenario) {
        if !scenario.advance_per_request.is_zero() {
            self.shared.clock().advance(scenario.advance_per_request);
        }
    }
}

/// The real clock, for wall-time figures only (filters see the host's fake clock).
#[expect(
    clippy::disallowed_methods,
    reason = "the bench measures real elapsed time; nothing here feeds a filter"
)]
fn stopwatch() -> Instant {
    Instant::now()
}

/// Cost of one scenario, per request.
#[derive(Debug, Clone, PartialEq)]
pub struct InstructionResult {
    /// [`Scenario::id`].
    pub id: String,
    /// Requests measured.
    pub requests: usize,
    /// Per callback: (export, fuel per request, hostcalls per request), lifecycle order.
    pub per_export: Vec<(String, f64, f64)>,
    /// Mean wasm instructions per request (rounded).
    pub mean: u64,
    /// Fewest and most of any request.
    pub min: u64,
    /// See `min`.
    pub max: u64,
    /// Hostcalls per request (mean).
    pub hostcalls: f64,
    /// Largest linear memory per VM, per module.
    pub memory: Vec<(String, usize)>,
    /// Shared-data keys per vm_id after the run.
    pub shared_keys: BTreeMap<String, usize>,
    /// `:status` the client got.
    pub status: u16,
}

/// Lifecycle order of the proxy-wasm callbacks (others follow in name order).
pub const LIFECYCLE: [&str; 11] = [
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_http_call_response",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_delete",
];

fn lifecycle_rank(export: &str) -> usize {
    LIFECYCLE
        .iter()
        .position(|e| *e == export)
        .unwrap_or(LIFECYCLE.len())
}

/// Wasm instructions and hostcalls per request for one scenario: warm-up (see
/// [`Scenario::fresh_warm_up_path`]), then `requests` requests round-robin over the workers
/// (one request on one VM for a fresh verification), each checked to end with the scenario's
/// status.
///
/// # Errors
/// A load failure, a trap, or a request that did not take the scenario's path.
pub fn measure_instructions(
    env: &BenchEnv,
    scenario: &Scenario,
    requests: usize,
) -> anyhow::Result<InstructionResult> {
    let (workers, requests) = if scenario.fresh_warm_up_path.is_some() {
        (1, 1)
    } else {
        (env.workers, requests.max(1))
    };
    let mut setup = Setup::new(env, scenario, workers)?;
    setup.warm_up(scenario)?;
    setup.reset_costs();
    let mut fuel = Vec::with_capacity(requests);
    let mut status = 0;
    for i in 0..requests {
        setup.advance(scenario);
        let outcome = setup.send(setup.request.clone())?;
        status = outcome.response.status().unwrap_or(0);
        if status != scenario.status {
            bail!(
                "{}: request {i} answered {status}, expected {} (logs: {:?})",
                scenario.id,
                scenario.status,
                outcome.log_messages()
            );
        }
        fuel.push(outcome.fuel);
    }
    let costs = setup.costs();
    let total = costs.total();
    if total.fuel != fuel.iter().sum::<u64>() {
        bail!("{}: per-callback fuel does not add up", scenario.id);
    }
    let n = requests as f64;
    let mut per_export: Vec<(String, f64, f64)> = costs
        .iter()
        .map(|(export, cost)| {
            (
                export.to_owned(),
                cost.fuel as f64 / n,
                cost.hostcalls as f64 / n,
            )
        })
        .collect();
    per_export.sort_by(|a, b| {
        (lifecycle_rank(&a.0), a.0.as_str()).cmp(&(lifecycle_rank(&b.0), b.0.as_str()))
    });
    Ok(InstructionResult {
        id: scenario.id.to_owned(),
        requests,
        per_export,
        mean: (total.fuel as f64 / n).round() as u64,
        min: fuel.iter().min().copied().unwrap_or(0),
        max: fuel.iter().max().copied().unwrap_or(0),
        hostcalls: total.hostcalls as f64 / n,
        memory: setup.memory(),
        shared_keys: setup.shared_keys(),
        status,
    })
}

/// Wall time per request of one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct TimingResult {
    /// [`Scenario::id`].
    pub id: String,
    /// Median over the rounds of the mean time per request in a round's batch, in µs.
    pub median_us: f64,
    /// Median absolute deviation of the same, in µs.
    pub mad_us: f64,
    /// `median_us` / the no-op's `median_us`.
    pub ratio: f64,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let mid = values.get(n / 2).copied().unwrap_or(0.0);
    if n % 2 == 1 {
        mid
    } else {
        (values.get(n / 2 - 1).copied().unwrap_or(0.0) + mid) / 2.0
    }
}

/// Wall time per request of every steady-state scenario (fresh verifications excluded), as a
/// ratio to the no-op baseline of the same run: each scenario warmed up, then `rounds` rounds
/// in which every scenario in turn times a batch of `batch` requests (interleaved, so machine
/// noise hits all alike); per scenario the median over rounds and its MAD.
///
/// # Errors
/// As [`measure_instructions`].
pub fn measure_wall_time(
    env: &BenchEnv,
    scenarios: &[&Scenario],
    rounds: usize,
    batch: usize,
) -> anyhow::Result<Vec<TimingResult>> {
    let mut setups = Vec::new();
    for scenario in scenarios {
        let mut setup = Setup::new(env, scenario, env.workers)?;
        setup.warm_up(scenario)?;
        // Warm caches and the allocator's free lists as much as the measured batches will.
        for _ in 0..batch {
            setup.advance(scenario);
            setup.send(setup.request.clone())?;
        }
        setups.push((scenario, setup, Vec::with_capacity(rounds)));
    }
    for _ in 0..rounds.max(1) {
        for (scenario, setup, samples) in &mut setups {
            let started = stopwatch();
            for _ in 0..batch.max(1) {
                setup.advance(scenario);
                setup.send(setup.request.clone())?;
            }
            let elapsed = started.elapsed();
            samples.push(elapsed.as_secs_f64() * 1e6 / batch.max(1) as f64);
        }
    }
    let mut results: Vec<TimingResult> = setups
        .into_iter()
        .map(|(scenario, _, mut samples)| {
            let median_us = median(&mut samples);
            let mut deviations: Vec<f64> = samples.iter().map(|s| (s - median_us).abs()).collect();
            TimingResult {
                id: scenario.id.to_owned(),
                median_us,
                mad_us: median(&mut deviations),
                ratio: 0.0,
            }
        })
        .collect();
    let baseline = results
        .iter()
        .find(|r| r.id == NOOP)
        .map(|r| r.median_us)
        .context("the wall-time run needs the noop scenario")?;
    for result in &mut results {
        result.ratio = result.median_us / baseline;
    }
    Ok(results)
}

/// One sample along a soak run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoakSample {
    /// Requests sent so far.
    pub requests: usize,
    /// Largest linear memory per VM, per module.
    pub memory: Vec<(String, usize)>,
    /// Shared-data keys per vm_id.
    pub shared_keys: BTreeMap<String, usize>,
}

/// A soak run of one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakResult {
    /// [`Scenario::id`].
    pub id: String,
    /// Requests sent.
    pub requests: usize,
    /// The samples, the first one after the warm-up request per worker.
    pub samples: Vec<SoakSample>,
    /// Requests counted as warm-up (a tenth of the run).
    pub warm_up: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Responses by status.
    pub statuses: BTreeMap<u16, usize>,
}

impl SoakResult {
    /// Memory growth per module between the first sample at or after the warm-up and the last.
    pub fn growth_after_warm_up(&self) -> Vec<(String, i64)> {
        let after = self
            .samples
            .iter()
            .find(|s| s.requests >= self.warm_up)
            .or(self.samples.last());
        let (Some(after), Some(last)) = (after, self.samples.last()) else {
            return Vec::new();
        };
        after
            .memory
            .iter()
            .zip(&last.memory)
            .map(|((module, a), (_, b))| (module.clone(), *b as i64 - *a as i64))
            .collect()
    }
}

/// Sends `requests` requests of `scenario` with high-cardinality inputs ([`SoakInputs`]),
/// sampling memory and shared-data keys every `every` requests.
///
/// # Errors
/// As [`measure_instructions`] (statuses are counted, not checked).
pub fn soak(
    env: &BenchEnv,
    scenario: &Scenario,
    requests: usize,
    every: usize,
) -> anyhow::Result<SoakResult> {
    let mut setup = Setup::new(env, scenario, env.workers)?;
    let inputs = SoakInputs::new(
        scenario,
        env.header_value(HeaderValue::Es256Token)?,
        setup.request.clone(),
    );
    let every = every.max(1);
    let started = stopwatch();
    let mut samples = vec![SoakSample {
        requests: 0,
        memory: setup.memory(),
        shared_keys: setup.shared_keys(),
    }];
    let mut statuses = BTreeMap::new();
    for i in 0..requests {
        setup.shared.clock().advance(Duration::from_millis(1));
        let outcome = setup.send(inputs.request(i))?;
        *statuses
            .entry(outcome.response.status().unwrap_or(0))
            .or_insert(0) += 1;
        if (i + 1) % every == 0 || i + 1 == requests {
            samples.push(SoakSample {
                requests: i + 1,
                memory: setup.memory(),
                shared_keys: setup.shared_keys(),
            });
        }
    }
    Ok(SoakResult {
        id: scenario.id.to_owned(),
        requests,
        samples,
        warm_up: requests / 10,
        elapsed: started.elapsed(),
        statuses,
    })
}

/// Size of one module: cargo's output and what `make dist` ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeResult {
    /// Module name.
    pub module: String,
    /// `target/wasm32-wasip1/wasm-release/<package>.wasm` (name section kept).
    pub raw: u64,
    /// `dist/<module>.wasm` (`wasm-opt -Oz`, stripped).
    pub optimized: u64,
}

/// Sizes of `modules`; the raw file of module `m` is the cargo package's (`meshward_filter_m`,
/// or `meshward_m_filter` for the noop).
///
/// # Errors
/// A missing file.
pub fn module_sizes(
    modules: &[String],
    raw_dir: &Path,
    dist: &Path,
) -> anyhow::Result<Vec<SizeResult>> {
    modules
        .iter()
        .map(|module| {
            let package = if module == NOOP {
                format!("meshward_{module}_filter")
            } else {
                format!("meshward_filter_{}", module.replace('-', "_"))
            };
            let size = |path: PathBuf| {
                std::fs::metadata(&path)
                    .map(|m| m.len())
                    .with_context(|| format!("{}: run `make dist`", path.display()))
            };
            Ok(SizeResult {
                module: module.clone(),
                raw: size(raw_dir.join(format!("{package}.wasm")))?,
                optimized: size(dist.join(format!("{module}.wasm")))?,
            })
        })
        .collect()
}
