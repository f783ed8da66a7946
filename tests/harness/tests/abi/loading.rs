//! Load-time behaviour: what Envoy refuses, NACKs or traps on while starting a VM.

use meshward_host::{HostEngine, LoadError, Plugin, PluginSpec, SharedState};

use crate::support::module;

fn load(name: &str, config: &str) -> Result<Plugin, LoadError> {
    let spec = PluginSpec::new("t", "t")
        .with_configuration(config)
        .with_workers(2);
    Plugin::load(
        HostEngine::global().unwrap(),
        &module(name),
        spec,
        &SharedState::new(),
    )
}

#[test]
fn module_without_abi_version_export_is_refused() {
    assert!(matches!(
        load("no_abi_version.wat", ""),
        Err(LoadError::MissingAbiVersion)
    ));
}

#[test]
fn unknown_import_fails_the_load_with_its_name() {
    match load("unknown_import.wat", "") {
        Err(LoadError::UnknownImport { module, name }) => assert_eq!(
            (module.as_str(), name.as_str()),
            ("env", "proxy_does_not_exist")
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn module_without_allocator_is_refused() {
    match load("no_allocator.wat", "") {
        Err(LoadError::MissingExport(what)) => assert!(what.contains("malloc"), "{what}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn proxy_hostcalls_during_initialize_trap_like_v8() {
    match load("restricted_init.wat", "") {
        Err(LoadError::StartFailed {
            phase,
            reason,
            logs,
        }) => {
            assert_eq!(phase, "_initialize");
            assert!(
                reason.contains("proxy_set_tick_period_milliseconds"),
                "{reason}"
            );
            assert_eq!(
                logs.first().map(|l| l.message.as_str()),
                Some("starting"),
                "proxy_log is allowed"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn configure_returning_false_is_a_rejection_with_the_filter_logs() {
    match load("probe.wat", "x") {
        Err(LoadError::Rejected { reason, logs }) => {
            assert_eq!(reason, "returned false");
            assert!(
                logs.iter()
                    .any(|l| l.message == "bad config: starts with x")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn zero_workers_is_an_invalid_spec() {
    let spec = PluginSpec::new("t", "t").with_workers(0);
    let result = Plugin::load(
        HostEngine::global().unwrap(),
        &module("probe.wat"),
        spec,
        &SharedState::new(),
    );
    assert!(matches!(result, Err(LoadError::InvalidSpec(_))));
}

#[test]
fn canary_and_every_worker_run_the_start_sequence() {
    let plugin = load("probe.wat", "n").unwrap();
    let starts = plugin
        .logs()
        .iter()
        .filter(|l| l.message == "initialized")
        .map(|l| l.worker)
        .collect::<Vec<_>>();
    assert_eq!(starts, vec![None, Some(0), Some(1)]);
}

#[test]
fn modules_are_compiled_once_and_cached_by_content() {
    let engine = HostEngine::global().unwrap();
    let a = engine
        .load_file(crate::support::wat_fixture("probe.wat"))
        .unwrap();
    let b = engine
        .load_file(crate::support::wat_fixture("probe.wat"))
        .unwrap();
    assert_eq!(a.size_bytes(), b.size_bytes());
    assert!(matches!(
        engine.load_bytes(b"not wasm"),
        Err(LoadError::Compile(_))
    ));
}
