//! End to end: the dev proxy (what `make run` serves) on loopback under `wrk`, the whole
//! envoy.yaml chain against the same proxy with no filters, in the same run, alternating.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use meshward_host::cli::RequestFile;
use tokio::sync::watch;

use crate::demo::{self, DemoUpstream};
use crate::envoy_config::ProxyConfig;
use crate::proxy::{self, Proxy, ProxyOptions};

/// One `wrk` run.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkRun {
    /// `chain` or `no filters`.
    pub proxy: String,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Latency percentiles (50, 75, 90, 99) in ms.
    pub latency_ms: Vec<(u8, f64)>,
    /// Requests completed.
    pub requests: u64,
    /// Responses other than 2xx/3xx, plus socket errors.
    pub errors: u64,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct E2eResult {
    /// Every run, in the order made.
    pub runs: Vec<WrkRun>,
    /// The wrk command line (target address elided).
    pub command: String,
    /// Worker VMs per filter in the proxy.
    pub workers: usize,
}

impl E2eResult {
    /// Mean requests per second of the runs of `proxy`.
    pub fn mean_rps(&self, proxy: &str) -> f64 {
        let runs: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.proxy == proxy)
            .map(|r| r.requests_per_sec)
            .collect();
        if runs.is_empty() {
            0.0
        } else {
            runs.iter().sum::<f64>() / runs.len() as f64
        }
    }
}

fn parse_duration_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// Reads `wrk --latency` output.
pub fn parse_wrk(proxy: &str, output: &str) -> anyhow::Result<WrkRun> {
    let mut run = WrkRun {
        proxy: proxy.to_owned(),
        requests_per_sec: 0.0,
        latency_ms: Vec::new(),
        requests: 0,
        errors: 0,
    };
    let mut in_distribution = false;
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rps] => run.requests_per_sec = rps.parse().unwrap_or(0.0),
            ["Latency", "Distribution", ..] => in_distribution = true,
            [percent, value] if in_distribution && percent.ends_with('%') => {
                if let (Ok(p), Some(ms)) = (
                    percent.trim_end_matches('%').parse::<f64>(),
                    parse_duration_ms(value),
                ) {
                    run.latency_ms.push((p as u8, ms));
                }
            }
            [count, "requests", "in", ..] => run.requests = count.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                run.errors += count.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", rest @ ..] => {
                run.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => in_distribution = in_distribution && !line.trim().is_empty(),
        }
    }
    if run.requests_per_sec <= 0.0 {
        bail!("wrk printed no Requests/sec:\n{output}");
    }
    Ok(run)
}

/// Options of the comparison.
#[derive(Debug, Clone)]
pub struct E2eOptions {
    /// The `wrk` binary.
    pub wrk: PathBuf,
    /// Seconds per run.
    pub seconds: u32,
    /// Runs per proxy (alternating).
    pub rounds: usize,
    /// Open connections.
    pub connections: u32,
    /// Worker VMs per filter.
    pub workers: usize,
    /// `dist/`.
    pub dist: PathBuf,
    /// The JWKS file the demo upstream serves.
    pub jwks_file: PathBuf,
}

/// Starts the demo upstreams and two dev proxies (envoy.yaml's chain, and the same routes
/// without filters) on loopback ports, and runs `wrk` against each in turn; everything is
/// stopped before returning.
///
/// # Errors
/// A port that cannot be bound, a proxy that does not load, `wrk` missing or failing.
pub async fn run(config: &ProxyConfig, options: &E2eOptions) -> anyhow::Result<E2eResult> {
    let (shutdown_tx, shutdown) = watch::channel(false);
    let result = run_inner(config, options, &shutdown).await;
    let _ = shutdown_tx.send(true);
    result
}

async fn run_inner(
    config: &ProxyConfig,
    options: &E2eOptions,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<E2eResult> {
    let mut cluster_addresses = BTreeMap::new();
    for (cluster, upstream) in demo::demo_upstreams(config) {
        let addr = match upstream {
            Some(DemoUpstream::Echo(name)) => {
                demo::start_echo("127.0.0.1:0", &name, shutdown).await?
            }
            Some(DemoUpstream::JwksFile) => {
                demo::start_json_file("127.0.0.1:0", &options.jwks_file, shutdown).await?
            }
            None => continue,
        };
        cluster_addresses.insert(cluster, addr.to_string());
    }
    let proxy_options = ProxyOptions {
        wasm_dir: Some(options.dist.clone()),
        cluster_addresses,
        workers: options.workers,
        envoy_before_1_33: false,
    };
    let mut bare = config.clone();
    bare.wasm_filters.clear();
    let mut targets = Vec::new();
    for (name, config) in [("no filters", &bare), ("chain", config)] {
        let proxy = Arc::new(Proxy::load(config, &proxy_options)?);
        let bound = proxy::start(proxy, 0, None, shutdown).await?;
        targets.push((name, bound.listener));
    }
    let file = RequestFile::parse(super::BENCH_REQUEST).map_err(|e| anyhow::anyhow!(e))?;
    let path = file.request.headers.get(":path").unwrap_or("/").to_owned();
    let mut header_args = Vec::new();
    for (name, value) in file.request.headers.iter() {
        if name.starts_with(':') || name == "host" {
            continue;
        }
        header_args.push("-H".to_owned());
        header_args.push(format!("{name}: {}", String::from_utf8_lossy(value)));
    }
    let base_args = vec![
        "-t1".to_owned(),
        format!("-c{}", options.connections),
        format!("-d{}s", options.seconds),
        "--latency".to_owned(),
    ];
    let mut runs = Vec::new();
    for _ in 0..options.rounds.max(1) {
        for (name, addr) in &targets {
            let mut args = base_args.clone();
            args.extend(header_args.iter().cloned());
            args.push(format!("http://{addr}{path}"));
            let wrk = options.wrk.clone();
            let output =
                tokio::task::spawn_blocking(move || Command::new(&wrk).args(&args).output())
                    .await
                    .context("waiting for wrk")?
                    .with_context(|| format!("running {}", options.wrk.display()))?;
            if !output.status.success() {
                bail!(
                    "wrk failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            runs.push(parse_wrk(name, &String::from_utf8_lossy(&output.stdout))?);
        }
    }
    Ok(E2eResult {
        runs,
        command: format!(
            "wrk {} -H <the bench profile's {} headers> http://127.0.0.1:<port>{path}",
            base_args.join(" "),
            header_args.len() / 2
        ),
        workers: options.workers,
    })
}

/// The default `wrk` location: on `PATH`.
pub fn default_wrk() -> PathBuf {
    PathBuf::from("wrk")
}

/// Whether `wrk` can be run.
pub fn wrk_available(wrk: &Path) -> bool {
    Command::new(wrk)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wrk") || o.status.code() == Some(1))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.52ms  310.12us   9.10ms   90.00%\n    Req/Sec     5.27k   120.00     5.40k    70.00%\n  Latency Distribution\n     50%    1.48ms\n     75%    1.60ms\n     90%    1.80ms\n     99%    2.50ms\n  10520 requests in 2.00s, 8.93MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:   5259.61\nTransfer/sec:      4.46MB\n";

    #[test]
    fn reads_wrk_latency_output() -> anyhow::Result<()> {
        let run = parse_wrk("chain", SAMPLE)?;
        assert_eq!(run.requests, 10520);
        assert_eq!(run.errors, 3);
        assert!((run.requests_per_sec - 5259.61).abs() < 1e-9);
        assert_eq!(
            run.latency_ms,
            vec![(50, 1.48), (75, 1.6), (90, 1.8), (99, 2.5)]
        );
        Ok(())
    }

    #[test]
    fn output_without_a_rate_is_an_error() {
        assert!(parse_wrk("chain", "unable to connect").is_err());
    }
}
