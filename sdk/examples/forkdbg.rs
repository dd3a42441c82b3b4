//! Throwaway: reproduces the fuzz-found fork at loss 0 with traces.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Client, Config};
use std::time::Duration;

async fn client(net: &SimNetwork, name: &str) -> Client {
    let (t, inbox) = net.attach();
    let mut c = Config::new(name);
    c.self_update_interval = None;
    c.settle = Duration::from_millis(50);
    c.tick = Duration::from_millis(10);
    c.one_time_key_packages = 1;
    Client::open(c, t, inbox).await.unwrap()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(20);
    let mut fails = 0;
    for run in 0..runs {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let ok = rt.block_on(async {
            let net = SimNetwork::new(SimConfig {
                seed: std::env::var("SEED")
                    .map(|s| s.parse().unwrap())
                    .unwrap_or(0),
                loss: 0.0,
                ..SimConfig::default()
            });
            let a = client(&net, "a").await;
            let b = client(&net, "b").await;
            let c = client(&net, "c").await;
            tracing::info!("=== run {run}");
            let g = a.create_group().await.unwrap();
            if std::env::var_os("SCEN2").is_some() {
                a.invite(&g, "b").await.unwrap();
                tokio::time::sleep(Duration::from_millis(305)).await;
                a.invite(&g, "c").await.unwrap();
                tokio::time::sleep(Duration::from_millis(305)).await;
                let _ = a.update(&g).await;
                let _ = b.update(&g).await;
                let _ = c.update(&g).await;
                let _ = b.invite(&g, "zed").await;
                let _ = c.remove(&g, "a").await;
                tokio::time::sleep(Duration::from_millis(505)).await;
            } else {
                a.invite(&g, "c").await.unwrap();
                a.leave(&g).await.unwrap();
                let _ = a.invite(&g, "b").await;
                tokio::time::sleep(Duration::from_millis(205)).await;
            }
            let mut stable = 0;
            for _ in 0..30 {
                for x in [&a, &b, &c] {
                    let _ = x.sync().await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut views = Vec::new();
                for x in [&a, &b, &c] {
                    if let Ok(s) = x.status(&g).await {
                        views.push((s.epoch, s.epoch_authenticator, s.pending_commit));
                    }
                }
                if views.windows(2).all(|w| w[0] == w[1]) && views.iter().all(|v| !v.2) {
                    stable += 1;
                    if stable >= 2 {
                        return true;
                    }
                } else {
                    stable = 0;
                }
            }
            for (n, x) in [("a", &a), ("b", &b), ("c", &c)] {
                match x.status(&g).await {
                    Ok(s) => eprintln!(
                        "{n}: epoch {} members {:?} pending {} stats {:?}",
                        s.epoch,
                        s.members,
                        s.pending_commit,
                        x.stats().await
                    ),
                    Err(e) => eprintln!("{n}: {e}"),
                }
            }
            false
        });
        if !ok {
            fails += 1;
            eprintln!("run {run} FAILED");
            if std::env::var_os("STOP").is_some() {
                break;
            }
        }
    }
    eprintln!("{fails}/{runs} failed");
}
