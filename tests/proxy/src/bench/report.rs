//! Budgets (`tests/fixtures/bench/budgets.json`), the generated sections of `BENCHMARKS.md`
//! (between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`; the prose around them is
//! kept) and the SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::e2e::E2eResult;
use super::scenarios::scenario;
use super::{InstructionResult, SizeResult, SoakResult, TimingResult};

/// The budgets file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Free text for readers of the file.
    #[serde(default, rename = "_comment")]
    pub comment: Vec<String>,
    /// Wasm instructions per request, by scenario id.
    pub instructions_per_request: BTreeMap<String, u64>,
    /// Linear memory per VM in bytes, by module (`default` for the rest).
    pub memory_bytes_per_vm: BTreeMap<String, u64>,
    /// `dist/` module size in KiB, by module (`default` for the rest); the Makefile's `make size`
    /// gate must hold the same numbers (a test checks).
    pub module_kib: BTreeMap<String, u64>,
}

impl Budgets {
    /// Parses the budgets file.
    ///
    /// # Errors
    /// Invalid JSON or an unknown field.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        serde_json::from_str(text).context("tests/fixtures/bench/budgets.json")
    }

    fn by_module(map: &BTreeMap<String, u64>, module: &str) -> Option<u64> {
        map.get(module).or_else(|| map.get("default")).copied()
    }

    /// Memory budget of `module`.
    pub fn memory(&self, module: &str) -> Option<u64> {
        Self::by_module(&self.memory_bytes_per_vm, module)
    }

    /// Size budget of `module` in KiB (none for the no-op).
    pub fn module_kib(&self, module: &str) -> Option<u64> {
        (module != super::NOOP)
            .then(|| Self::by_module(&self.module_kib, module))
            .flatten()
    }
}

/// One figure over its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overrun {
    /// What (`trace-id instructions/request`).
    pub what: String,
    /// Measured.
    pub value: u64,
    /// Budget.
    pub budget: u64,
}

/// Every figure over its budget.
pub fn overruns(
    budgets: &Budgets,
    instructions: &[InstructionResult],
    sizes: &[SizeResult],
) -> Vec<Overrun> {
    let mut out = Vec::new();
    for result in instructions {
        if let Some(budget) = budgets.instructions_per_request.get(&result.id)
            && result.mean > *budget
        {
            out.push(Overrun {
                what: format!("{} instructions/request", result.id),
                value: result.mean,
                budget: *budget,
            });
        }
        for (module, bytes) in &result.memory {
            if let Some(budget) = budgets.memory(module)
                && *bytes as u64 > budget
            {
                out.push(Overrun {
                    what: format!("{} memory/VM of {module}", result.id),
                    value: *bytes as u64,
                    budget,
                });
            }
        }
    }
    for size in sizes {
        if let Some(kib) = budgets.module_kib(&size.module) {
            let used = size.optimized.div_ceil(1024);
            if used > kib {
                out.push(Overrun {
                    what: format!("{} module KiB", size.module),
                    value: used,
                    budget: kib,
                });
            }
        }
    }
    out
}

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_request(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        thousands(value.round() as u64)
    } else {
        format!("{value:.2}")
    }
}

fn verdict(value: u64, budget: Option<u64>) -> &'static str {
    match budget {
        None => "",
        Some(b) if value <= b => "ok",
        Some(_) => "**over**",
    }
}

fn short_export(export: &str) -> &str {
    export.strip_prefix("proxy_on_").unwrap_or(export)
}

fn label_of(id: &str) -> &str {
    scenario(id).map_or(id, |s| s.label)
}

/// The deterministic section (`bench:checked`): instructions and hostcalls per request (total
/// and per callback), memory per VM and shared-data keys, module sizes — what `make bench-check`
/// compares with a fresh run, byte for byte.
pub fn checked_section(
    budgets: &Budgets,
    instructions: &[InstructionResult],
    sizes: &[SizeResult],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Wasm instructions per request (wasmtime fuel) against the budgets\n"
    );
    let _ = writeln!(
        s,
        "| scenario | what | instructions / request | min / max | budget | | hostcalls / request |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---|---:|");
    for r in instructions {
        let budget = budgets.instructions_per_request.get(&r.id).copied();
        let _ = writeln!(
            s,
            "| `{}` | {} | **{}** | {} / {} | {} | {} | {} |",
            r.id,
            label_of(&r.id),
            thousands(r.mean),
            thousands(r.min),
            thousands(r.max),
            budget.map_or_else(|| "—".to_owned(), thousands),
            verdict(r.mean, budget),
            per_request(r.hostcalls),
        );
    }
    let exports: Vec<String> = super::LIFECYCLE
        .iter()
        .filter(|e| {
            instructions
                .iter()
                .any(|r| r.per_export.iter().any(|(x, _, _)| x == *e))
        })
        .map(|e| (*e).to_owned())
        .collect();
    let _ = writeln!(
        s,
        "\nSplit by callback (instructions / hostcalls per request; a chain's figure sums its filters):\n"
    );
    let _ = write!(s, "| scenario |");
    for e in &exports {
        let _ = write!(s, " `{}` |", short_export(e));
    }
    let _ = write!(s, "\n|---|");
    for _ in &exports {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    for r in instructions {
        let _ = write!(s, "| `{}` |", r.id);
        for e in &exports {
            match r.per_export.iter().find(|(x, _, _)| x == e) {
                Some((_, fuel, hostcalls)) => {
                    let _ = write!(
                        s,
                        " {} / {} |",
                        thousands(fuel.round() as u64),
                        per_request(*hostcalls)
                    );
                }
                None => s.push_str(" — |"),
            }
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\n### Linear memory per VM after the measured requests, shared-data keys\n"
    );
    let _ = writeln!(
        s,
        "| scenario | memory / VM (largest worker) | budget | | shared-data keys |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for r in instructions {
        let memory: Vec<String> = r
            .memory
            .iter()
            .map(|(m, b)| format!("{m} {}", thousands(*b as u64)))
            .collect();
        let budgets_text: Vec<String> = r
            .memory
            .iter()
            .map(|(m, _)| budgets.memory(m).map_or_else(|| "—".to_owned(), thousands))
            .collect();
        let all_ok = r
            .memory
            .iter()
            .all(|(m, b)| budgets.memory(m).is_none_or(|budget| *b as u64 <= budget));
        let keys: Vec<String> = r
            .shared_keys
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(vm, n)| format!("{vm} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} |",
            r.id,
            memory.join(", "),
            budgets_text.join(", "),
            if all_ok { "ok" } else { "**over**" },
            if keys.is_empty() {
                "0".to_owned()
            } else {
                keys.join(", ")
            }
        );
    }
    let _ = writeln!(s, "\n### Module size\n");
    let _ = writeln!(
        s,
        "| module | cargo output (bytes) | after `wasm-opt -Oz` (`dist/`, bytes) | KiB | budget KiB | |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
    for size in sizes {
        let kib = size.optimized.div_ceil(1024);
        let budget = budgets.module_kib(&size.module);
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            size.module,
            thousands(size.raw),
            thousands(size.optimized),
            kib,
            budget.map_or_else(|| "—".to_owned(), |b| b.to_string()),
            verdict(kib, budget),
        );
    }
    s
}

/// The wall-time section.
pub fn timing_section(timings: &[TimingResult], rounds: usize, batch: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Wall time per request, relative to the no-op baseline of the same run\n\n\
         {rounds} rounds; in each, every scenario in turn times {batch} requests (interleaved, so \
         machine noise hits all alike); median over the rounds and its median absolute \
         deviation. The host is `meshward-host` in the dev profile (the build `make test` \
         shares) with fuel metering on, and each request also builds the harness's full \
         outcome record, so absolute times are the harness's, not Envoy's; the ratio and the \
         difference to noop are the filters' share. Compare the chains with `noop-chain` (five \
         no-op filters), not with the single noop: each filter in a chain adds the harness's \
         per-filter cost.\n"
    );
    let _ = writeln!(
        s,
        "| scenario | µs / request (median) | MAD µs | × noop | + µs over noop |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let baseline = timings
        .iter()
        .find(|t| t.id == super::NOOP)
        .map_or(0.0, |t| t.median_us);
    for t in timings {
        let _ = writeln!(
            s,
            "| `{}` | {:.1} | {:.1} | {:.2} | {:.1} |",
            t.id,
            t.median_us,
            t.mad_us,
            t.ratio,
            t.median_us - baseline
        );
    }
    s
}

/// A soak section.
pub fn soak_section(budgets: &Budgets, soaks: &[SoakResult], every: usize) -> String {
    let mut s = String::new();
    let Some(first) = soaks.first() else {
        return s;
    };
    let _ = writeln!(
        s,
        "### Soak: {} requests per scenario, high-cardinality inputs\n\n\
         Every request has a distinct client address (peer and `x-forwarded-for`), user id, \
         `cart_id` and `session` cookie values and `x-request-id`; one of 1,000 methods (4 \
         allowed), one of 5,000 route names; on `/secure/` half carry the valid ES256 token and \
         half a distinct malformed one (401 before any signature check: minting a million \
         valid tokens would make this a crypto benchmark); the chain also rotates 8 paths (each \
         filter's rule and the rest). The fake clock moves 1 ms per request. Samples every {} \
         requests; \"after warm-up\" compares the first sample at or after {} requests with the \
         last.\n",
        thousands(first.requests as u64),
        thousands(every as u64),
        thousands(first.warm_up as u64),
    );
    let _ = writeln!(
        s,
        "| scenario | memory / VM at each sample (KiB, largest worker) | growth after warm-up | budget | shared-data keys at each sample | statuses | wall time |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---:|");
    for soak in soaks {
        let modules: Vec<String> = soak
            .samples
            .first()
            .map(|f| f.memory.iter().map(|(m, _)| m.clone()).collect())
            .unwrap_or_default();
        let memory: Vec<String> = modules
            .iter()
            .enumerate()
            .map(|(i, module)| {
                let series: Vec<String> = soak
                    .samples
                    .iter()
                    .map(|sample| {
                        sample
                            .memory
                            .get(i)
                            .map_or_else(String::new, |(_, b)| (b / 1024).to_string())
                    })
                    .collect();
                format!("{module}: {}", compress(&series))
            })
            .collect();
        let growth: Vec<String> = soak
            .growth_after_warm_up()
            .iter()
            .map(|(m, g)| {
                if *g == 0 {
                    format!("{m}: flat")
                } else {
                    format!("{m}: **{g:+} B**")
                }
            })
            .collect();
        let over: Vec<String> = soak
            .samples
            .last()
            .map(|last| {
                last.memory
                    .iter()
                    .filter(|(m, b)| budgets.memory(m).is_some_and(|budget| *b as u64 > budget))
                    .map(|(m, _)| format!("{m} **over**"))
                    .collect()
            })
            .unwrap_or_default();
        let vm_ids: Vec<String> = soak
            .samples
            .last()
            .map(|l| {
                l.shared_keys
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(v, _)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        let keys: Vec<String> = vm_ids
            .iter()
            .map(|vm| {
                let series: Vec<String> = soak
                    .samples
                    .iter()
                    .map(|sample| sample.shared_keys.get(vm).copied().unwrap_or(0).to_string())
                    .collect();
                format!("{vm}: {}", compress(&series))
            })
            .collect();
        let statuses: Vec<String> = soak
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}×{}", thousands(*n as u64)))
            .collect();
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} | {:.0} s |",
            soak.id,
            memory.join("; "),
            growth.join(", "),
            if over.is_empty() {
                "ok".to_owned()
            } else {
                over.join(", ")
            },
            if keys.is_empty() {
                "none".to_owned()
            } else {
                keys.join("; ")
            },
            statuses.join(" "),
            soak.elapsed.as_secs_f64(),
        );
    }
    s
}

/// `1088 ×3, 1152 ×18`: runs of equal values.
fn compress(series: &[String]) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for value in series {
        match runs.last_mut() {
            Some((last, count)) if last == value => *count += 1,
            _ => runs.push((value.clone(), 1)),
        }
    }
    runs.iter()
        .map(|(v, n)| {
            if *n == 1 {
                v.clone()
            } else {
                format!("{v} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The end-to-end section.
pub fn e2e_section(result: &E2eResult) -> String {
    let mut s = String::new();
    let chain = result.mean_rps("chain");
    let bare = result.mean_rps("no filters");
    let ratio = if bare > 0.0 { chain / bare } else { 0.0 };
    let _ = writeln!(
        s,
        "### End to end: the dev proxy under `wrk` on loopback\n\n\
         `{}`, alternating the proxy with no filters and the same proxy with envoy.yaml's five \
         filters ({} worker VMs each); echo upstreams on loopback. Throughput with the chain: \
         **{:.2}×** the no-filter proxy (goal ≥ 0.85×).\n",
        result.command, result.workers, ratio
    );
    let _ = writeln!(
        s,
        "| proxy | requests / s | p50 ms | p75 ms | p90 ms | p99 ms | requests | errors |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for run in &result.runs {
        let p = |q: u8| {
            run.latency_ms
                .iter()
                .find(|(x, _)| *x == q)
                .map_or_else(|| "—".to_owned(), |(_, ms)| format!("{ms:.2}"))
        };
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            run.proxy,
            run.requests_per_sec,
            p(50),
            p(75),
            p(90),
            p(99),
            thousands(run.requests),
            run.errors
        );
    }
    s
}

fn marker(name: &str, end: bool) -> String {
    format!(
        "<!-- bench:{name}:{} -->",
        if end { "end" } else { "begin" }
    )
}

/// The text between `name`'s markers.
pub fn section<'a>(document: &'a str, name: &str) -> Option<&'a str> {
    let begin = marker(name, false);
    let start = document.find(&begin)? + begin.len();
    let rest = document.get(start..)?;
    let end = rest.find(&marker(name, true))?;
    rest.get(..end)
}

/// Replaces `name`'s section of `document` with `body`.
///
/// # Errors
/// The markers are missing.
pub fn replace_section(document: &str, name: &str, body: &str) -> anyhow::Result<String> {
    let begin = marker(name, false);
    let Some(start) = document.find(&begin).map(|i| i + begin.len()) else {
        bail!("BENCHMARKS.md has no `{begin}` marker");
    };
    let end_marker = marker(name, true);
    let Some(end) = document
        .get(start..)
        .and_then(|rest| rest.find(&end_marker))
        .map(|i| start + i)
    else {
        bail!("BENCHMARKS.md has no `{end_marker}` after its begin marker");
    };
    let head = document.get(..start).unwrap_or_default();
    let tail = document.get(end..).unwrap_or_default();
    Ok(format!("{head}\n{}\n{tail}", body.trim_end()))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart: wasm instructions per request per scenario on a log scale, the no-op baseline as a
/// dashed line, each budget as a tick; bars over budget in red.
pub fn chart_svg(budgets: &Budgets, instructions: &[InstructionResult]) -> String {
    const LEFT: f64 = 190.0;
    const RIGHT: f64 = 120.0;
    const WIDTH: f64 = 900.0;
    const ROW: f64 = 30.0;
    const TOP: f64 = 56.0;
    let (lo_exp, hi_exp) = (3.0_f64, 8.0_f64);
    let plot = WIDTH - LEFT - RIGHT;
    let x = |value: u64| {
        let v = (value.max(1) as f64).log10().clamp(lo_exp, hi_exp);
        LEFT + (v - lo_exp) / (hi_exp - lo_exp) * plot
    };
    let height = TOP + ROW * instructions.len() as f64 + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Wasm instructions per request (log scale) — make bench</text>\n<text x=\"{LEFT}\" y=\"40\" fill=\"#555\">bar: measured; black tick: budget; dashed: no-op baseline; red: over budget</text>"
    );
    let bottom = TOP + ROW * instructions.len() as f64;
    let mut exp = lo_exp as i32;
    while f64::from(exp) <= hi_exp {
        let gx = x(10_u64.pow(exp as u32));
        let _ = writeln!(
            s,
            "<line x1=\"{gx:.1}\" y1=\"{TOP}\" x2=\"{gx:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\n<text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            bottom + 16.0,
            thousands(10_u64.pow(exp as u32))
        );
        exp += 1;
    }
    for (i, r) in instructions.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let budget = budgets.instructions_per_request.get(&r.id).copied();
        let color = match budget {
            Some(b) if r.mean > b => "#d9534f",
            Some(_) => "#5cb85c",
            None => "#999",
        };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LEFT - 8.0,
            y + ROW * 0.62,
            escape(&r.id),
            y + 5.0,
            (x(r.mean) - LEFT).max(1.0),
            ROW - 10.0,
            x(r.mean).max(budget.map_or(0.0, x)) + 6.0,
            y + ROW * 0.62,
            thousands(r.mean)
        );
        if let Some(b) = budget {
            let bx = x(b);
            let _ = writeln!(
                s,
                "<line x1=\"{bx:.1}\" y1=\"{:.1}\" x2=\"{bx:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-width=\"3\"/>",
                y + 2.0,
                y + ROW - 2.0
            );
        }
    }
    if let Some(noop) = instructions.iter().find(|r| r.id == super::NOOP) {
        let nx = x(noop.mean);
        let _ = writeln!(
            s,
            "<line x1=\"{nx:.1}\" y1=\"{TOP}\" x2=\"{nx:.1}\" y2=\"{bottom}\" stroke=\"#337ab7\" stroke-dasharray=\"5,4\" stroke-width=\"1.5\"/>\n<text x=\"{nx:.1}\" y=\"{:.1}\" fill=\"#337ab7\" text-anchor=\"middle\">noop {}</text>",
            bottom + 32.0,
            thousands(noop.mean)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> anyhow::Result<Budgets> {
        Budgets::parse(include_str!("../../../fixtures/bench/budgets.json"))
    }

    #[test]
    fn budgets_file_names_every_budgeted_scenario_of_issue_15() -> anyhow::Result<()> {
        let budgets = budgets()?;
        for id in [
            "trace-id",
            "rate-limit",
            "ab-routing",
            "metric-tag",
            "jwt-auth-cached",
            "jwt-auth-fresh-es256",
            "jwt-auth-fresh-rs256",
            "chain",
        ] {
            assert!(scenario(id).is_some(), "{id} is no scenario");
            assert!(
                budgets.instructions_per_request.contains_key(id),
                "{id} has no budget"
            );
        }
        for id in budgets.instructions_per_request.keys() {
            assert!(scenario(id).is_some(), "budget for unknown scenario {id}");
        }
        Ok(())
    }

    /// `make size` gates on the Makefile's numbers; they must be the budget file's.
    #[test]
    fn makefile_size_budgets_equal_the_budget_file() -> anyhow::Result<()> {
        let budgets = budgets()?;
        let makefile = include_str!("../../../../Makefile");
        let mut found = BTreeMap::new();
        for line in makefile.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["WASM_BUDGET_KB", "?=", n] => {
                    found.insert("default".to_owned(), n.parse::<u64>()?);
                }
                [name, ":=", n] if name.starts_with("BUDGET_KB_") => {
                    let module = name.trim_start_matches("BUDGET_KB_").to_owned();
                    found.insert(module, n.parse::<u64>()?);
                }
                _ => {}
            }
        }
        assert_eq!(found, budgets.module_kib);
        Ok(())
    }

    #[test]
    fn sections_are_replaced_between_their_markers_only() -> anyhow::Result<()> {
        let doc = "intro\n<!-- bench:x:begin -->\nold\n<!-- bench:x:end -->\nprose\n";
        let new = replace_section(doc, "x", "new table\n")?;
        assert_eq!(
            new,
            "intro\n<!-- bench:x:begin -->\nnew table\n<!-- bench:x:end -->\nprose\n"
        );
        assert_eq!(section(&new, "x"), Some("\nnew table\n"));
        assert!(replace_section(doc, "y", "z").is_err());
        Ok(())
    }

    #[test]
    fn over_budget_figures_are_named() -> anyhow::Result<()> {
        let budgets = budgets()?;
        let result = |id: &str, mean: u64, memory: usize| InstructionResult {
            id: id.to_owned(),
            requests: 1,
            per_export: Vec::new(),
            mean,
            min: mean,
            max: mean,
            hostcalls: 0.0,
            memory: vec![(id.to_owned(), memory)],
            shared_keys: BTreeMap::new(),
            status: 200,
        };
        let found = overruns(
            &budgets,
            &[
                result("trace-id", 1, 1024),
                result("metric-tag", 10_000_000, 1024),
                result("rate-limit", 1, 64 << 20),
            ],
            &[SizeResult {
                module: "trace-id".to_owned(),
                raw: 1,
                optimized: 10 << 20,
            }],
        );
        let what: Vec<&str> = found.iter().map(|o| o.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "metric-tag instructions/request",
                "rate-limit memory/VM of rate-limit",
                "trace-id module KiB"
            ]
        );
        Ok(())
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
