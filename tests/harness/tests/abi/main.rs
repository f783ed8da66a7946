#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation should abort the test"
)]

//! Self-tests of meshward-host: ABI edge cases with WAT guests (`tests/fixtures/wat/`),
//! load failures, failure policies, the Prometheus export, chains, and the lifecycle of the
//! real no-op filter on four worker VMs.

mod bench_profile;
mod chain;
mod grpc;
mod loading;
mod noop;
mod probe;
mod root_resume;
mod support;
