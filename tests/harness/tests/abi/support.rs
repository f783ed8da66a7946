use std::path::PathBuf;

use meshward_host::{
    FailPolicy, HostEngine, HttpOutcome, LogEntry, Module, Plugin, PluginSpec, SharedState,
};

pub(crate) fn wat_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/wat")
        .join(name)
}

pub(crate) fn module(name: &str) -> Module {
    HostEngine::global()
        .unwrap()
        .load_file(wat_fixture(name))
        .unwrap()
}

/// The multi-scenario probe guest configured with `scenario` (its first config byte).
pub(crate) fn probe_with(
    scenario: &str,
    workers: usize,
    policy: FailPolicy,
    shared: &SharedState,
) -> Plugin {
    let spec = PluginSpec::new("probe", "probe_root")
        .with_configuration(scenario)
        .with_workers(workers)
        .with_fail_policy(policy);
    Plugin::load(
        HostEngine::global().unwrap(),
        &module("probe.wat"),
        spec,
        shared,
    )
    .unwrap()
}

pub(crate) fn probe(scenario: &str) -> (SharedState, Plugin) {
    let shared = SharedState::new();
    let plugin = probe_with(scenario, 1, FailPolicy::FailClosed, &shared);
    (shared, plugin)
}

/// Status codes the probe logged with `$log_status` (one-character log lines).
pub(crate) fn statuses(logs: &[LogEntry]) -> Vec<u32> {
    logs.iter()
        .filter(|l| l.message.len() == 1)
        .map(|l| u32::from(l.message.as_bytes()[0]) - u32::from(b'0'))
        .collect()
}

pub(crate) fn messages(outcome: &HttpOutcome) -> Vec<String> {
    outcome.logs.iter().map(|l| l.message.clone()).collect()
}
