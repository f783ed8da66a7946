//! `meshward-ratelimit-service --limits limits.yaml [--listen 127.0.0.1:8081]
//! [--redis redis://127.0.0.1:6379]`: serves `ShouldRateLimit` until killed. Prints
//! `listening on <address>` once ready (port 0 picks a free one).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use meshward_ratelimit_service::{RateLimitService, Storage, read_limits, serve};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8081).into();
    let mut limits = None;
    let mut redis: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse().context("--listen")?,
            "--limits" => limits = Some(std::path::PathBuf::from(value()?)),
            "--redis" => redis = Some(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    let limits = read_limits(&limits.context("--limits is required")?)?;
    let storage = match redis {
        None => Storage::Memory { cache_size: 10_000 },
        #[cfg(feature = "redis")]
        Some(url) => Storage::Redis { url },
        #[cfg(not(feature = "redis"))]
        Some(_) => bail!("built without the `redis` feature"),
    };
    let service = Arc::new(RateLimitService::new(storage, limits).await?);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    serve(listener, service).await;
    Ok(())
}
