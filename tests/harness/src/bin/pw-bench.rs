//! `pw-bench`: repeatable cost figures for one proxy-wasm module on meshward-host.
//!
//! ```text
//! pw-bench <module.wasm> [--config plugin-config.json] [--request request.json]
//!          [--header 'name: value']... [--requests N] [--workers N] [--name LABEL] [--json]
//!          [--warm-up N] [--status CODE] [--trace]
//! ```
//!
//! Loads the module on `--workers` VMs (default 4), sends `--warm-up` requests (default 0, not
//! counted: e.g. to exhaust a rate limit so the measured requests take the limited path), runs
//! `--requests` requests (default 1000) round-robin over the workers (`--status`: each must end
//! with that `:status`, so a figure cannot silently measure another path) and prints, per
//! proxy-wasm export the host called during the requests (`proxy_on_context_create`,
//! `proxy_on_request_headers`, …, `proxy_on_delete`, and `proxy_on_http_call_response` etc.
//! when they occur), the mean calls, wasm fuel (≈ wasm operations executed, the repeatable
//! figure) and hostcalls per request; then the total per request (mean, min, max), linear
//! memory per VM and the module size. Start-up calls (`_initialize`, `proxy_on_configure`, …)
//! are not counted. No wall-clock timing: fuel does not depend on the machine.
//!
//! The request defaults to the bench profile `tests/fixtures/bench/request.json` (built in):
//! sidecar-like traffic, a browser GET with 20 request headers and a 200 response with 8 headers
//! and a JSON body; `tests/fixtures/bench/README.md` describes it. `--request` replaces it
//! (format: `meshward_host::cli`); `--header` appends a request header to either, e.g. the
//! `authorization` of a JWT profile.
//!
//! `--trace` then sends one more request with the host's fuel trace on and prints, per export
//! call, every hostcall with the fuel used when it was reached: where a callback's instructions
//! go, between one hostcall and the next.

use std::process::ExitCode;

use meshward_host::cli::{Inputs, load_inputs};
use meshward_host::{CallReply, ExportCost, ExportCosts, HostEngine, Plugin, PluginSpec};

struct Args {
    module: String,
    config: Option<String>,
    request: Option<String>,
    extra_headers: Vec<(String, String)>,
    requests: usize,
    workers: usize,
    name: Option<String>,
    json: bool,
    trace: bool,
    warm_up: usize,
    status: Option<u16>,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        module: String::new(),
        config: None,
        request: None,
        extra_headers: Vec::new(),
        requests: 1000,
        workers: 4,
        name: None,
        json: false,
        trace: false,
        warm_up: 0,
        status: None,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => parsed.config = Some(args.next()?),
            "--request" => parsed.request = Some(args.next()?),
            "--header" => {
                let header = args.next()?;
                let (name, value) = header.split_once(':')?;
                parsed
                    .extra_headers
                    .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            "--requests" => parsed.requests = args.next()?.parse().ok()?,
            "--workers" => parsed.workers = args.next()?.parse().ok()?,
            "--name" => parsed.name = Some(args.next()?),
            "--json" => parsed.json = true,
            "--trace" => parsed.trace = true,
            "--warm-up" => parsed.warm_up = args.next()?.parse().ok()?,
            "--status" => parsed.status = Some(args.next()?.parse().ok()?),
            other if !other.starts_with("--") && parsed.module.is_empty() => {
                parsed.module = other.to_owned()
            }
            _ => return None,
        }
    }
    (!parsed.module.is_empty() && parsed.requests > 0 && parsed.workers > 0).then_some(parsed)
}

/// The bench profile (see `tests/fixtures/bench/README.md`).
const DEFAULT_REQUEST: &str = include_str!("../../../fixtures/bench/request.json");

/// Lifecycle order of the per-export table; exports not listed follow in name order.
const LIFECYCLE: [&str; 11] = [
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

/// `total / requests`, as an integer when exact, else with one decimal.
fn per_request(total: u64, requests: usize) -> String {
    let requests = requests.max(1) as u64;
    if total.is_multiple_of(requests) {
        (total / requests).to_string()
    } else {
        format!("{:.1}", total as f64 / requests as f64)
    }
}

/// Mean fuel per request, rounded (fractions of a wasm operation mean nothing).
fn mean_fuel(total: u64, requests: usize) -> String {
    format!("{:.0}", total as f64 / requests.max(1) as f64)
}

/// The per-export rows in lifecycle order.
fn export_rows(costs: &ExportCosts) -> Vec<(&str, ExportCost)> {
    let mut rows: Vec<(&str, ExportCost)> = costs.iter().collect();
    rows.sort_by_key(|(export, _)| (lifecycle_rank(export), *export));
    rows
}

fn run(args: &Args) -> Result<(), String> {
    let Inputs {
        module,
        name: stem,
        config,
        file,
        shared,
    } = load_inputs(
        &args.module,
        args.config.as_deref(),
        args.request.as_deref(),
        DEFAULT_REQUEST,
    )?;
    let mut file = file;
    for (header, value) in &args.extra_headers {
        file.request.headers.append(header, value);
    }
    let engine = HostEngine::global().map_err(|e| e.to_string())?;
    let name = args.name.clone().unwrap_or(stem);
    let spec = PluginSpec::new(name.clone(), "")
        .with_configuration(config)
        .with_workers(args.workers);
    let mut plugin = Plugin::load(engine, &module, spec, &shared).map_err(|e| e.to_string())?;
    // One request of the file on worker `i % workers`, its callouts answered in order.
    let send = |plugin: &mut Plugin, i: usize| {
        let mut answers = file.http_calls.clone().into_iter();
        plugin
            .http_request_with(
                i % args.workers,
                file.request.clone(),
                file.response.clone(),
                |_| answers.next().unwrap_or(CallReply::Leave),
            )
            .map_err(|e| e.to_string())
    };
    for i in 0..args.warm_up {
        send(&mut plugin, i)?;
    }
    plugin.reset_export_costs();
    let mut fuel = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let out = send(&mut plugin, i)?;
        if let Some(trap) = out.traps.first() {
            return Err(format!("request {i} trapped: {trap}"));
        }
        if let Some(expected) = args.status
            && out.response.status() != Some(expected)
        {
            return Err(format!(
                "request {i} answered {:?}, expected {expected}",
                out.response.status()
            ));
        }
        fuel.push(out.fuel);
    }
    let costs = plugin.export_costs();
    let total = costs.total();
    if total.fuel != fuel.iter().sum::<u64>() {
        return Err("per-export fuel does not add up to the requests' fuel".to_owned());
    }
    let rows = export_rows(&costs);
    let memory: Vec<usize> = (0..args.workers)
        .map(|w| plugin.memory_bytes(w).unwrap_or(0))
        .collect();
    let n = args.requests;
    let (fuel_min, fuel_max) = (
        fuel.iter().min().copied().unwrap_or(0),
        fuel.iter().max().copied().unwrap_or(0),
    );
    let request = &file.request.headers;
    let response = &file.response.headers;
    if args.json {
        let per_export: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(export, cost)| {
                (
                    (*export).to_owned(),
                    serde_json::json!({
                        "calls_per_request": cost.calls as f64 / n as f64,
                        "fuel_per_request": cost.fuel as f64 / n as f64,
                        "hostcalls_per_request": cost.hostcalls as f64 / n as f64,
                    }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "name": name, "module": args.module, "module_bytes": plugin.module_size(),
                "workers": args.workers, "requests": n,
                "request": {"headers": request.len(), "header_bytes": request.byte_size(),
                            "body_bytes": file.request.body.len()},
                "response": {"headers": response.len(), "header_bytes": response.byte_size(),
                             "body_bytes": file.response.body.len()},
                "per_export": per_export,
                "fuel_per_request": {"mean": total.fuel as f64 / n as f64, "min": fuel_min, "max": fuel_max},
                "hostcalls_per_request": total.hostcalls as f64 / n as f64,
                "memory_bytes_per_vm": memory,
            })
        );
    } else {
        println!("{name}: {} ({} bytes)", args.module, plugin.module_size());
        println!(
            "  workers {}, requests {n}; request {} headers ({} bytes), body {} bytes; response {} headers ({} bytes), body {} bytes",
            args.workers,
            request.len(),
            request.byte_size(),
            file.request.body.len(),
            response.len(),
            response.byte_size(),
            file.response.body.len(),
        );
        println!(
            "  {:<30} {:>9} {:>12} {:>14}",
            "per request", "calls", "fuel (mean)", "hostcalls"
        );
        for (export, cost) in &rows {
            println!(
                "  {export:<30} {:>9} {:>12} {:>14}",
                per_request(cost.calls, n),
                mean_fuel(cost.fuel, n),
                per_request(cost.hostcalls, n),
            );
        }
        println!(
            "  {:<30} {:>9} {:>12} {:>14}",
            "total",
            per_request(total.calls, n),
            mean_fuel(total.fuel, n),
            per_request(total.hostcalls, n),
        );
        println!("  fuel/request       min {fuel_min}  max {fuel_max}");
        println!("  memory/VM bytes    {memory:?}");
    }
    if args.trace {
        plugin.trace_fuel(true);
        let mut answers = file.http_calls.clone().into_iter();
        plugin
            .http_request_with(0, file.request.clone(), file.response.clone(), |_| {
                answers.next().unwrap_or(CallReply::Leave)
            })
            .map_err(|e| e.to_string())?;
        for (_, marks) in plugin.take_fuel_trace() {
            let mut last = 0;
            for mark in marks {
                if let Some(export) = mark.what.strip_prefix("export:") {
                    println!("  {export}");
                    last = 0;
                } else {
                    println!(
                        "    {:<40} at {:>6}  (+{})",
                        mark.what,
                        mark.fuel,
                        mark.fuel.saturating_sub(last)
                    );
                    last = mark.fuel;
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!(
            "usage: pw-bench <module.wasm> [--config file] [--request file] [--header 'name: value']... [--requests N] [--workers N] [--name LABEL] [--json] [--warm-up N] [--status CODE] [--trace]"
        );
        return ExitCode::from(2);
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pw-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
