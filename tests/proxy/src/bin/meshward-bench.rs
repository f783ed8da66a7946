//! `meshward-bench`: what `make bench`, `make soak` and `make bench-check` run. See
//! `meshward_proxy::bench` and BENCHMARKS.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use meshward_proxy::bench::e2e::{self, E2eOptions};
use meshward_proxy::bench::report::{self, Budgets};
use meshward_proxy::bench::{self, BenchEnv, SCENARIOS};
use meshward_proxy::envoy_config;

const USAGE: &str = "\
meshward-bench — instructions, wall time, size, memory soak and end-to-end figures of the
filters as envoy-local/envoy.yaml ships them

USAGE: meshward-bench [options]
  --envoy FILE          envoy config (default envoy-local/envoy.yaml)
  --dist DIR            shipped modules (default dist)
  --raw-dir DIR         cargo's wasm output, for the raw sizes (required)
  --fixtures DIR        default tests/fixtures (budgets, bench tokens)
  --requests N          measured requests per scenario (default 1000)
  --workers N           worker VMs per filter (default 4)
  --timing-rounds N     wall-time rounds, 0 = skip (default 15)
  --timing-batch N      requests per scenario per round (default 200)
  --soak N              soak requests per scenario, 0 = skip (default 0)
  --soak-every N        sample every N requests (default N/20)
  --soak-section NAME   BENCHMARKS.md section the soak writes (default soak)
  --e2e-seconds N       seconds per wrk run, 0 = skip (default 0)
  --e2e-rounds N        wrk runs per proxy (default 2)
  --wrk PATH            wrk binary (default wrk on PATH)
  --only-soak           measure the soak only (make soak)
  --write FILE          rewrite the generated sections of FILE (BENCHMARKS.md)
  --chart FILE          write the SVG chart
  --check FILE          fail unless FILE's instruction/size section equals a fresh run
  --strict              exit 1 when a figure exceeds its budget";

#[derive(Debug)]
struct Args {
    envoy: PathBuf,
    dist: PathBuf,
    raw_dir: Option<PathBuf>,
    fixtures: PathBuf,
    requests: usize,
    workers: usize,
    timing_rounds: usize,
    timing_batch: usize,
    soak: usize,
    soak_every: Option<usize>,
    soak_section: String,
    e2e_seconds: u32,
    e2e_rounds: usize,
    wrk: PathBuf,
    only_soak: bool,
    write: Option<PathBuf>,
    chart: Option<PathBuf>,
    check: Option<PathBuf>,
    strict: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        envoy: PathBuf::from("envoy-local/envoy.yaml"),
        dist: PathBuf::from("dist"),
        raw_dir: None,
        fixtures: PathBuf::from("tests/fixtures"),
        requests: 1000,
        workers: 4,
        timing_rounds: 15,
        timing_batch: 200,
        soak: 0,
        soak_every: None,
        soak_section: "soak".to_owned(),
        e2e_seconds: 0,
        e2e_rounds: 2,
        wrk: e2e::default_wrk(),
        only_soak: false,
        write: None,
        chart: None,
        check: None,
        strict: false,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--envoy" => args.envoy = value()?.into(),
            "--dist" => args.dist = value()?.into(),
            "--raw-dir" => args.raw_dir = Some(value()?.into()),
            "--fixtures" => args.fixtures = value()?.into(),
            "--requests" => args.requests = value()?.parse()?,
            "--workers" => args.workers = value()?.parse()?,
            "--timing-rounds" => args.timing_rounds = value()?.parse()?,
            "--timing-batch" => args.timing_batch = value()?.parse()?,
            "--soak" => args.soak = value()?.parse()?,
            "--soak-every" => args.soak_every = Some(value()?.parse()?),
            "--soak-section" => args.soak_section = value()?,
            "--e2e-seconds" => args.e2e_seconds = value()?.parse()?,
            "--e2e-rounds" => args.e2e_rounds = value()?.parse()?,
            "--wrk" => args.wrk = value()?.into(),
            "--only-soak" => args.only_soak = true,
            "--write" => args.write = Some(value()?.into()),
            "--chart" => args.chart = Some(value()?.into()),
            "--check" => args.check = Some(value()?.into()),
            "--strict" => args.strict = true,
            "help" | "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    Ok(args)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let tool = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{cmd} unknown"))
    };
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "Last `make bench`: {date}. Machine: {cores} cores ({cpu}), {}, {}, host `meshward-host` \
         on wasmtime 48 (Cranelift), dev profile.",
        tool("rustc", "-V"),
        tool("wasm-opt", "--version")
    )
}

fn write_sections(path: &PathBuf, sections: &[(&str, String)]) -> anyhow::Result<()> {
    let mut document =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for (name, body) in sections {
        document = report::replace_section(&document, name, body)?;
    }
    std::fs::write(path, document).with_context(|| format!("writing {}", path.display()))
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let config = envoy_config::load(&args.envoy)?;
    let budgets_path = args.fixtures.join("bench/budgets.json");
    let budgets = Budgets::parse(
        &std::fs::read_to_string(&budgets_path)
            .with_context(|| format!("reading {}", budgets_path.display()))?,
    )?;
    let env = BenchEnv {
        config,
        dist: args.dist.clone(),
        fixtures: args.fixtures.clone(),
        workers: args.workers,
    };
    let mut sections: Vec<(&str, String)> = Vec::new();

    if args.soak > 0 {
        let every = args.soak_every.unwrap_or((args.soak / 20).max(1));
        let mut soaks = Vec::new();
        for scenario in SCENARIOS
            .iter()
            .filter(|s| s.steady && !s.id.starts_with(bench::NOOP))
        {
            if scenario.id == "chain-secure" {
                continue; // the chain soak already rotates through /secure/
            }
            eprintln!("soak {} ({} requests)", scenario.id, args.soak);
            let soak = bench::soak(&env, scenario, args.soak, every)?;
            let growth = soak.growth_after_warm_up();
            println!(
                "soak {:<22} {:>6.0} s  memory growth after warm-up {:?}  keys {:?}",
                soak.id,
                soak.elapsed.as_secs_f64(),
                growth,
                soak.samples.last().map(|s| &s.shared_keys)
            );
            soaks.push(soak);
        }
        sections.push((
            args.soak_section.as_str(),
            report::soak_section(&budgets, &soaks, every),
        ));
    }
    if args.only_soak {
        if let Some(path) = &args.write {
            write_sections(path, &sections)?;
            println!(
                "wrote the {} section of {}",
                args.soak_section,
                path.display()
            );
        }
        return Ok(true);
    }

    let mut instructions = Vec::new();
    for scenario in SCENARIOS {
        let result = bench::measure_instructions(&env, scenario, args.requests)?;
        println!(
            "{:<22} {:>12} instructions/request (min {}, max {})  {:>6.2} hostcalls  budget {}",
            result.id,
            report::thousands(result.mean),
            result.min,
            result.max,
            result.hostcalls,
            budgets
                .instructions_per_request
                .get(&result.id)
                .map_or_else(|| "—".to_owned(), |b| report::thousands(*b))
        );
        instructions.push(result);
    }
    let mut modules: Vec<String> = vec![bench::NOOP.to_owned()];
    modules.extend(env.chain_modules());
    let raw_dir = args
        .raw_dir
        .clone()
        .context("--raw-dir (cargo's wasm32-wasip1 output directory) is required")?;
    let sizes = bench::module_sizes(&modules, &raw_dir, &args.dist)?;
    for size in &sizes {
        println!(
            "{:<22} {:>9} bytes raw  {:>9} bytes after wasm-opt -Oz",
            size.module, size.raw, size.optimized
        );
    }
    let checked = report::checked_section(&budgets, &instructions, &sizes);
    let overruns = report::overruns(&budgets, &instructions, &sizes);

    if let Some(path) = &args.check {
        let document =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let published = report::section(&document, "checked")
            .with_context(|| format!("{} has no bench:checked section", path.display()))?;
        if published.trim() != checked.trim() {
            eprintln!(
                "{}: the instruction/size tables differ from this run; run `make bench` and commit.\n--- published\n{}\n--- this run\n{}",
                path.display(),
                published.trim(),
                checked.trim()
            );
            return Ok(false);
        }
        println!(
            "{}: instruction counts, memory and sizes match this run exactly",
            path.display()
        );
        return Ok(true);
    }

    sections.push(("machine", machine()));
    sections.push(("checked", checked));

    if args.timing_rounds > 0 {
        let steady: Vec<&bench::Scenario> = SCENARIOS.iter().filter(|s| s.steady).collect();
        let timings =
            bench::measure_wall_time(&env, &steady, args.timing_rounds, args.timing_batch)?;
        for t in &timings {
            println!(
                "{:<22} {:>8.1} µs/request (MAD {:.1})  {:.2}× noop",
                t.id, t.median_us, t.mad_us, t.ratio
            );
        }
        sections.push((
            "timing",
            report::timing_section(&timings, args.timing_rounds, args.timing_batch),
        ));
    }

    if args.e2e_seconds > 0 {
        if !e2e::wrk_available(&args.wrk) {
            bail!(
                "{} not found: `make bench` installs wrk with apt-get",
                args.wrk.display()
            );
        }
        let options = E2eOptions {
            wrk: args.wrk.clone(),
            seconds: args.e2e_seconds,
            rounds: args.e2e_rounds,
            connections: 8,
            workers: 2,
            dist: args.dist.clone(),
            jwks_file: args.fixtures.join("jwt-auth/jwks.json"),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting tokio")?;
        let result = runtime.block_on(e2e::run(&env.config, &options))?;
        for run in &result.runs {
            println!(
                "e2e {:<10} {:>8.0} requests/s  latency {:?} ms  errors {}",
                run.proxy, run.requests_per_sec, run.latency_ms, run.errors
            );
        }
        sections.push(("e2e", report::e2e_section(&result)));
    }

    if let Some(path) = &args.chart {
        std::fs::write(path, report::chart_svg(&budgets, &instructions))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.write {
        write_sections(path, &sections)?;
        println!("wrote {}", path.display());
    }
    if overruns.is_empty() {
        println!("every figure is within its budget");
    } else {
        println!("over budget ({}):", overruns.len());
        for o in &overruns {
            println!(
                "  {:<40} {:>12}  budget {:>12}",
                o.what,
                report::thousands(o.value),
                report::thousands(o.budget)
            );
        }
    }
    Ok(overruns.is_empty() || !args.strict)
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| run(&args));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("meshward-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
