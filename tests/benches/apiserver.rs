//! Throughput of the API server double: writes per second over HTTP through
//! kube-rs, and how many concurrent watches each receive every event.
//! Run with `cargo bench -p ferrolb-tests --bench apiserver`; prints medians
//! of several runs and finishes in well under a minute.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ferrolb_tests::apiserver::{ApiServerConfig, ApiServerHandle};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const RUNS: usize = 5;
const WRITERS: usize = 32;
const WRITE_WINDOW: Duration = Duration::from_secs(2);
const WATCH_EVENTS: usize = 500;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or_default()
}

async fn start() -> anyhow::Result<ApiServerHandle> {
    ApiServerHandle::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        ApiServerConfig::default(),
    )
    .await
}

fn config_map(name: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "data": {"n": "0"}}),
    )?)
}

/// How the watches attached during the write benchmark read their events.
#[derive(Clone, Copy, PartialEq)]
enum Watchers {
    None,
    /// kube-rs typed watches: includes the client's decoding cost, which
    /// shares the machine's cores with the server.
    KubeRs(usize),
    /// Plain HTTP connections that only read bytes: the server's own cost.
    RawHttp(usize),
}

impl std::fmt::Display for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Watchers::None => write!(f, "no watches"),
            Watchers::KubeRs(n) => write!(f, "{n} kube-rs watches"),
            Watchers::RawHttp(n) => write!(f, "{n} raw HTTP watches"),
        }
    }
}

async fn raw_watch(address: std::net::SocketAddr) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "GET /api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=30 HTTP/1.1\r\nHost: {address}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut newlines = 0;
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(newlines);
        }
        newlines += buffer[..read].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

/// Writes (a create, then merge patches) from concurrent writers for a
/// fixed window, with watches draining every change meanwhile.
async fn writes_per_second(run: usize, watchers: Watchers) -> anyhow::Result<f64> {
    let server = start().await?;
    let watched: Api<ConfigMap> = Api::namespaced(server.client()?, "default");
    let mut drains = Vec::new();
    match watchers {
        Watchers::None => {}
        Watchers::KubeRs(count) => {
            for _ in 0..count {
                let stream = watched
                    .watch(&WatchParams::default().timeout(30), "0")
                    .await?;
                drains.push(tokio::spawn(async move {
                    let mut stream = stream.boxed();
                    while let Ok(Some(_)) = stream.try_next().await {}
                }));
            }
        }
        Watchers::RawHttp(count) => {
            let address = server.address();
            for _ in 0..count {
                drains.push(tokio::spawn(async move {
                    let _ = raw_watch(address).await;
                }));
            }
            // Let the connections reach the server before writing.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + WRITE_WINDOW;
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        // One client per writer, so requests use separate connections.
        let maps: Api<ConfigMap> = Api::namespaced(server.client()?, "default");
        writers.push(tokio::spawn(async move {
            let name = format!("bench-{run}-{writer}");
            maps.create(&PostParams::default(), &config_map(&name)?)
                .await?;
            let mut writes = 1u64;
            while Instant::now() < deadline {
                let patch = Patch::Merge(json!({"data": {"n": writes.to_string()}}));
                maps.patch(&name, &PatchParams::default(), &patch).await?;
                writes += 1;
            }
            Ok::<u64, anyhow::Error>(writes)
        }));
    }
    let mut total = 0;
    for writer in writers {
        total += writer.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.shutdown().await;
    for drain in drains {
        drain.abort();
    }
    Ok(total as f64 / elapsed)
}

/// Starts `watchers` watches, makes WATCH_EVENTS writes, and counts the
/// watches that received every event within the time limit.
async fn watches_sustained(watchers: usize) -> anyhow::Result<(usize, f64)> {
    let server = start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client()?, "default");
    let from = server.current_resource_version().to_string();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let watch_maps = maps.clone();
        let stream = watch_maps
            .watch(&WatchParams::default().timeout(60), &from)
            .await?;
        tasks.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut received = 0usize;
            let limit = tokio::time::sleep(Duration::from_secs(20));
            tokio::pin!(limit);
            loop {
                tokio::select! {
                    event = stream.try_next() => match event {
                        Ok(Some(WatchEvent::Added(_) | WatchEvent::Modified(_))) => {
                            received += 1;
                            if received == WATCH_EVENTS {
                                return received;
                            }
                        }
                        Ok(Some(_)) => {}
                        _ => return received,
                    },
                    _ = &mut limit => return received,
                }
            }
        }));
    }
    let started = Instant::now();
    for i in 0..WATCH_EVENTS {
        maps.create(&PostParams::default(), &config_map(&format!("w-{i}"))?)
            .await?;
    }
    let mut complete = 0;
    for task in tasks {
        if task.await? == WATCH_EVENTS {
            complete += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.shutdown().await;
    Ok((complete, elapsed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    for watchers in [
        Watchers::None,
        Watchers::KubeRs(100),
        Watchers::RawHttp(100),
    ] {
        let mut write_rates = Vec::new();
        for run in 0..RUNS {
            let rate = writes_per_second(run, watchers).await?;
            println!("run {run}: {rate:.0} writes/s ({WRITERS} concurrent writers, {watchers})");
            write_rates.push(rate);
        }
        println!(
            "median writes/s with {watchers}: {:.0}",
            median(write_rates)
        );
    }

    for watchers in [100usize, 250, 500] {
        let mut complete = Vec::new();
        let mut seconds = Vec::new();
        for run in 0..RUNS {
            let (done, elapsed) = watches_sustained(watchers).await?;
            println!(
                "run {run}: {done}/{watchers} watches received all {WATCH_EVENTS} events in {elapsed:.2}s"
            );
            complete.push(done as f64);
            seconds.push(elapsed);
        }
        println!(
            "median: {:.0}/{watchers} concurrent watches received every event; median {:.2}s for {WATCH_EVENTS} events",
            median(complete),
            median(seconds)
        );
    }
    Ok(())
}
