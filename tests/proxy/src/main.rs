//! `meshward-proxy`: the dev proxy (`serve`), the demo upstreams (`echo`, `jwks`), everything at
//! once for `make run` (`demo`), and a config check (`check`). Run `meshward-proxy help`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use meshward_proxy::demo::{self, DemoUpstream};
use meshward_proxy::envoy_config;
use meshward_proxy::proxy::{self, Proxy, ProxyOptions};
use tokio::sync::watch;

const USAGE: &str = "\
meshward-proxy — serves envoy-local/envoy.yaml on localhost with the real .wasm filters

USAGE:
  meshward-proxy demo  --config FILE [--wasm-dir DIR] [--workers N] [--listen-port P] [--admin-port P]
                       [--jwks-file FILE]
      the demo upstreams + the proxy, prints curl examples (what `make run` runs)
  meshward-proxy serve --config FILE [--wasm-dir DIR] [--workers N] [--listen-port P] [--admin-port P]
                       [--cluster-addr NAME=HOST:PORT]...
      the proxy only; clusters keep their envoy.yaml addresses unless overridden
  meshward-proxy echo  --listen ADDR --name NAME     echo upstream (answers with the request as JSON)
  meshward-proxy jwks  --listen ADDR --file FILE     serves FILE (JSON) on every GET
  meshward-proxy check --config FILE                 validates the envoy config and exits

  --wasm-dir DIR   replaces the directory of every vm_config.code.local.filename (e.g. dist)
  --workers N      worker VMs per filter, requests round-robin (default 2)
  --envoy-before-1.33   route like Envoy < 1.33: a filter's request-header change re-routes,
                   and the `clear_route_cache` foreign function does not exist
  --listen-port P / --admin-port P   override envoy.yaml's ports (0 = any free port); loopback only
Each server prints `... listening on http://ADDR` once bound. Ctrl-C stops cleanly.";

#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    wasm_dir: Option<PathBuf>,
    workers: Option<usize>,
    envoy_before_1_33: bool,
    listen_port: Option<u16>,
    admin_port: Option<u16>,
    cluster_addresses: BTreeMap<String, String>,
    listen: Option<String>,
    name: Option<String>,
    file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
}

fn parse_args(raw: &[String]) -> anyhow::Result<Args> {
    let mut args = Args::default();
    let mut iter = raw.iter();
    while let Some(flag) = iter.next() {
        let mut value = || iter.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => args.config = Some(PathBuf::from(value()?)),
            "--wasm-dir" => args.wasm_dir = Some(PathBuf::from(value()?)),
            "--envoy-before-1.33" => args.envoy_before_1_33 = true,
            "--workers" => {
                let workers: usize = value()?.parse().context("--workers needs a number")?;
                if workers == 0 {
                    bail!("--workers must be at least 1");
                }
                args.workers = Some(workers);
            }
            "--listen-port" => {
                args.listen_port = Some(value()?.parse().context("--listen-port needs a port")?)
            }
            "--admin-port" => {
                args.admin_port = Some(value()?.parse().context("--admin-port needs a port")?)
            }
            "--cluster-addr" => {
                let pair = value()?;
                let (name, address) = pair
                    .split_once('=')
                    .with_context(|| format!("--cluster-addr `{pair}`: expected NAME=HOST:PORT"))?;
                args.cluster_addresses
                    .insert(name.to_owned(), address.to_owned());
            }
            "--listen" => args.listen = Some(value()?.clone()),
            "--name" => args.name = Some(value()?.clone()),
            "--file" => args.file = Some(PathBuf::from(value()?)),
            "--jwks-file" => args.jwks_file = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = raw.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if matches!(mode.as_str(), "help" | "--help" | "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = parse_args(rest).and_then(|args| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting tokio")?;
        runtime.block_on(run(mode, args))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meshward-proxy: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: &str, args: Args) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown) = watch::channel(false);
    match mode {
        "check" => {
            let config = load_config(&args)?;
            println!(
                "ok: {} wasm filter(s), {} route(s), {} cluster(s)",
                config.wasm_filters.len(),
                config
                    .virtual_hosts
                    .iter()
                    .map(|vh| vh.routes.len())
                    .sum::<usize>(),
                config.clusters.len()
            );
            return Ok(());
        }
        "echo" => {
            let listen = args.listen.context("echo needs --listen ADDR")?;
            let name = args.name.context("echo needs --name NAME")?;
            let addr = demo::start_echo(&listen, &name, &shutdown).await?;
            println!("echo {name} listening on http://{addr}");
        }
        "jwks" => {
            let listen = args.listen.context("jwks needs --listen ADDR")?;
            let file = args.file.context("jwks needs --file FILE")?;
            let addr = demo::start_json_file(&listen, &file, &shutdown).await?;
            println!("jwks listening on http://{addr}");
        }
        "serve" => {
            let config = load_config(&args)?;
            let options = ProxyOptions {
                wasm_dir: args.wasm_dir.clone(),
                cluster_addresses: args.cluster_addresses.clone(),
                workers: args.workers.unwrap_or(2),
                envoy_before_1_33: args.envoy_before_1_33,
            };
            start_proxy(&config, &options, &args, &shutdown).await?;
        }
        "demo" => {
            let config = load_config(&args)?;
            let mut cluster_addresses = BTreeMap::new();
            for (cluster, upstream) in demo::demo_upstreams(&config) {
                let addr = match upstream {
                    Some(DemoUpstream::Echo(name)) => {
                        demo::start_echo("127.0.0.1:0", &name, &shutdown).await?
                    }
                    Some(DemoUpstream::JwksFile) => {
                        let file = args
                            .jwks_file
                            .clone()
                            .unwrap_or_else(|| PathBuf::from("tests/fixtures/jwt-auth/jwks.json"));
                        demo::start_json_file("127.0.0.1:0", &file, &shutdown).await?
                    }
                    None => {
                        eprintln!(
                            "demo: no demo upstream for cluster `{cluster}`; requests to it will fail"
                        );
                        continue;
                    }
                };
                println!("upstream {cluster} listening on http://{addr}");
                cluster_addresses.insert(cluster, addr.to_string());
            }
            let options = ProxyOptions {
                wasm_dir: args.wasm_dir.clone(),
                cluster_addresses,
                workers: args.workers.unwrap_or(2),
                envoy_before_1_33: args.envoy_before_1_33,
            };
            let bound = start_proxy(&config, &options, &args, &shutdown).await?;
            println!("\nready — try these (Ctrl-C stops everything):\n");
            print!(
                "{}",
                demo::curl_examples(&config, bound.listener, bound.admin)
            );
        }
        other => bail!("unknown mode `{other}`\n\n{USAGE}"),
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping");
    let _ = shutdown_tx.send(true);
    Ok(())
}

fn load_config(args: &Args) -> anyhow::Result<envoy_config::ProxyConfig> {
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("envoy-local/envoy.yaml"));
    Ok(envoy_config::load(&path)?)
}

async fn start_proxy(
    config: &envoy_config::ProxyConfig,
    options: &ProxyOptions,
    args: &Args,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<proxy::BoundProxy> {
    let proxy = Arc::new(Proxy::load(config, options)?);
    let listener_port = args.listen_port.unwrap_or(config.listener_port);
    let admin_port = args.admin_port.or(config.admin_port);
    let bound = proxy::start(proxy, listener_port, admin_port, shutdown).await?;
    match bound.admin {
        Some(admin) => println!(
            "proxy listening on http://{} admin http://{admin}",
            bound.listener
        ),
        None => println!("proxy listening on http://{}", bound.listener),
    }
    Ok(bound)
}
