//! `pw-bench`: repeatable cost figures for one proxy-wasm module on meshward-host.
//!
//! ```text
//! pw-bench <module.wasm> [--config plugin-config.json] [--request request.json]
//!          [--requests N] [--workers N] [--name LABEL] [--json]
//! ```
//!
//! Loads the module on `--workers` VMs (default 4), runs `--requests` requests (default 1000)
//! round-robin over the workers and prints wasm fuel per request (≈ wasm operations executed,
//! the repeatable figure; includes on_log/on_done/on_delete), hostcalls per request, linear
//! memory per VM and the module size. No wall-clock timing: fuel does not depend on the machine.
//! The request defaults to a GET with typical headers and a 200 response (see
//! `meshward_host::cli` for the request file format).

use std::process::ExitCode;

use meshward_host::cli::{Inputs, load_inputs};
use meshward_host::{CallReply, HostEngine, Plugin, PluginSpec};

struct Args {
    module: String,
    config: Option<String>,
    request: Option<String>,
    requests: usize,
    workers: usize,
    name: Option<String>,
    json: bool,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        module: String::new(),
        config: None,
        request: None,
        requests: 1000,
        workers: 4,
        name: None,
        json: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => parsed.config = Some(args.next()?),
            "--request" => parsed.request = Some(args.next()?),
            "--requests" => parsed.requests = args.next()?.parse().ok()?,
            "--workers" => parsed.workers = args.next()?.parse().ok()?,
            "--name" => parsed.name = Some(args.next()?),
            "--json" => parsed.json = true,
            other if !other.starts_with("--") && parsed.module.is_empty() => {
                parsed.module = other.to_owned()
            }
            _ => return None,
        }
    }
    (!parsed.module.is_empty() && parsed.requests > 0 && parsed.workers > 0).then_some(parsed)
}

const DEFAULT_REQUEST: &str = r#"{
  "headers": [[":authority", "svc.example.com"], [":path", "/api/v1/items?page=2"], [":method", "GET"], [":scheme", "https"],
              ["user-agent", "curl/8.5.0"], ["accept", "*/*"], ["x-forwarded-proto", "https"]],
  "response": {"headers": [[":status", "200"], ["content-type", "application/json"], ["content-length", "2"]], "body": "{}"}
}"#;

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
    let engine = HostEngine::global().map_err(|e| e.to_string())?;
    let name = args.name.clone().unwrap_or(stem);
    let spec = PluginSpec::new(name.clone(), "")
        .with_configuration(config)
        .with_workers(args.workers);
    let mut plugin = Plugin::load(engine, &module, spec, &shared).map_err(|e| e.to_string())?;
    let (mut fuel, mut hostcalls) = (
        Vec::with_capacity(args.requests),
        Vec::with_capacity(args.requests),
    );
    for i in 0..args.requests {
        let mut answers = file.http_calls.clone().into_iter();
        let out = plugin
            .http_request_with(
                i % args.workers,
                file.request.clone(),
                file.response.clone(),
                |_| answers.next().unwrap_or(CallReply::Leave),
            )
            .map_err(|e| e.to_string())?;
        if let Some(trap) = out.traps.first() {
            return Err(format!("request {i} trapped: {trap}"));
        }
        fuel.push(out.fuel);
        hostcalls.push(out.hostcalls);
    }
    let memory: Vec<usize> = (0..args.workers)
        .map(|w| plugin.memory_bytes(w).unwrap_or(0))
        .collect();
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len().max(1) as u64;
    let (fuel_mean, fuel_min, fuel_max) = (
        mean(&fuel),
        fuel.iter().min().copied().unwrap_or(0),
        fuel.iter().max().copied().unwrap_or(0),
    );
    let hostcalls_mean = mean(&hostcalls);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "name": name, "module": args.module, "module_bytes": plugin.module_size(),
                "workers": args.workers, "requests": args.requests,
                "fuel_per_request": {"mean": fuel_mean, "min": fuel_min, "max": fuel_max},
                "hostcalls_per_request": hostcalls_mean, "memory_bytes_per_vm": memory,
            })
        );
    } else {
        println!("{name}: {} ({} bytes)", args.module, plugin.module_size());
        println!("  workers {}, requests {}", args.workers, args.requests);
        println!("  fuel/request       mean {fuel_mean}  min {fuel_min}  max {fuel_max}");
        println!("  hostcalls/request  mean {hostcalls_mean}");
        println!("  memory/VM bytes    {memory:?}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!(
            "usage: pw-bench <module.wasm> [--config file] [--request file] [--requests N] [--workers N] [--name LABEL] [--json]"
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
