//! `pw-run`: runs one proxy-wasm module on meshward-host with a configuration and a request
//! file and prints the outcome as JSON — for debugging filters by hand.
//!
//! ```text
//! pw-run <module.wasm|.wat> [--config plugin-config.json] [--request request.json]
//!        [--workers N] [--vm-id ID] [--root-id ID] [--fail-open]
//! ```
//!
//! The request file format is documented in `meshward_host::cli`. Exit status: 0 when the
//! request ran (whatever the filter decided), 1 on a load error (e.g. configuration rejected,
//! with the filter's logs), 2 on bad usage.

use std::process::ExitCode;

use meshward_host::cli::{Inputs, load_inputs, outcome_json};
use meshward_host::{CallReply, FailPolicy, HostEngine, LoadError, Plugin, PluginSpec};

struct Args {
    module: String,
    config: Option<String>,
    request: Option<String>,
    workers: usize,
    vm_id: String,
    root_id: String,
    fail_open: bool,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: pw-run <module.wasm> [--config file] [--request file] [--workers N] [--vm-id ID] [--root-id ID] [--fail-open]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        module: String::new(),
        config: None,
        request: None,
        workers: 1,
        vm_id: String::new(),
        root_id: String::new(),
        fail_open: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => parsed.config = Some(args.next()?),
            "--request" => parsed.request = Some(args.next()?),
            "--workers" => parsed.workers = args.next()?.parse().ok()?,
            "--vm-id" => parsed.vm_id = args.next()?,
            "--root-id" => parsed.root_id = args.next()?,
            "--fail-open" => parsed.fail_open = true,
            other if !other.starts_with("--") && parsed.module.is_empty() => {
                parsed.module = other.to_owned()
            }
            _ => return None,
        }
    }
    (!parsed.module.is_empty()).then_some(parsed)
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let Inputs {
        module,
        name,
        config,
        file,
        shared,
    } = load_inputs(
        &args.module,
        args.config.as_deref(),
        args.request.as_deref(),
        "",
    )?;
    let engine = HostEngine::global().map_err(|e| e.to_string())?;
    let spec = PluginSpec {
        vm_id: args.vm_id.clone(),
        fail_policy: if args.fail_open {
            FailPolicy::FailOpen
        } else {
            FailPolicy::FailClosed
        },
        ..PluginSpec::new(name, args.root_id.clone())
            .with_configuration(config)
            .with_workers(args.workers)
    };
    let mut plugin = match Plugin::load(engine, &module, spec, &shared) {
        Ok(p) => p,
        Err(e) => {
            let logs = match &e {
                LoadError::Rejected { logs, .. } | LoadError::StartFailed { logs, .. } => logs
                    .iter()
                    .map(|l| format!("[{}] {}", l.level.name(), l.message))
                    .collect(),
                _ => Vec::new(),
            };
            println!(
                "{}",
                serde_json::json!({ "load_error": e.to_string(), "logs": logs })
            );
            return Ok(ExitCode::from(1));
        }
    };
    let mut answers = file.http_calls.clone().into_iter();
    let out = plugin
        .http_request_with(
            file.worker,
            file.request.clone(),
            file.response.clone(),
            |_| answers.next().unwrap_or(CallReply::Leave),
        )
        .map_err(|e| e.to_string())?;
    let mut json = outcome_json(&out);
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "memory_bytes".to_owned(),
            serde_json::json!(plugin.memory_bytes(file.worker).unwrap_or(0)),
        );
        obj.insert(
            "module_bytes".to_owned(),
            serde_json::json!(plugin.module_size()),
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        return usage();
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pw-run: {e}");
            ExitCode::from(2)
        }
    }
}
