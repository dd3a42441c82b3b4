//! The cost of encryption at rest end to end through the SDK (issue 12 item 3).
//!
//! Two [`pqmls::Client`]s (suite 0x004F) on the SDK's simulated network with no delay and no
//! loss, in one group, on a tokio multi-thread runtime. One iteration of
//! `sdk_at_rest/send_receive_20/{storage}`: alice sends 20 application messages
//! ([`Client::send`]: MLS encryption, her history and outbox rows, publishing) and the time
//! runs until bob has reported all 20 as [`Event::Message`] (MLS decryption, his history
//! row). Storages:
//! - `memory`: no data directory (SQLite in memory, nothing on disk);
//! - `file-plain`: data directories in plain SQLite with the same settings
//!   ([`DatabaseKey::InsecurePlaintext`], the sdk's `insecure-plain-database` feature,
//!   enabled for this crate only): the cost of the file without the encryption;
//! - `file-encrypted`: data directories as applications use them (SQLCipher, WAL,
//!   `synchronous = FULL`, `secure_delete`).
//!
//! `file-encrypted` against `file-plain` is the cost of encryption at rest end to end;
//! against `memory`, the whole cost of persistence.
//!
//! `taskset -c 0 nice cargo bench -p pqmls-benches --bench sdk_at_rest -- --warm-up-time 1
//! --measurement-time 5`.

// Benchmark setup on a fixed scenario: a failure is a bug to stop at.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Client, Config, DatabaseKey, Event, Events, GroupId, InvitePolicy};
use tokio::runtime::Runtime;
use tokio::time::Instant;

/// Messages per iteration.
const MESSAGES: usize = 20;
const PARAM: &str = "0x004F";

async fn client(net: &SimNetwork, name: &str, dir: Option<(&std::path::Path, bool)>) -> Client {
    let mut c = Config::new(name);
    if let Some((dir, encrypted)) = dir {
        let key = if encrypted {
            DatabaseKey::from_bytes([9; 32])
        } else {
            DatabaseKey::InsecurePlaintext
        };
        c = c.with_data_dir(dir.join(name)).with_database_key(key);
    }
    c.self_update_interval = None;
    c.invitations = InvitePolicy::Everyone;
    let (t, inbox) = net.attach();
    Client::open(c, t, inbox).await.unwrap()
}

/// Alice and bob in one group; bob's event stream.
async fn pair(dir: Option<(&std::path::Path, bool)>) -> (Client, Client, GroupId, Events) {
    let net = SimNetwork::new(SimConfig {
        min_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        ..SimConfig::default()
    });
    let alice = client(&net, "alice", dir).await;
    let bob = client(&net, "bob", dir).await;
    let events = bob.events();
    let g = alice.create_group().await.unwrap();
    alice.invite(&g, &bob.id()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !bob.groups().await.unwrap().contains(&g) {
        assert!(Instant::now() < deadline, "bob never joined");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (alice, bob, g, events)
}

fn send_receive(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let plain = tempfile::tempdir().unwrap();
    let encrypted = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group(format!("sdk_at_rest/send_receive_{MESSAGES}"));
    g.sample_size(10);
    for (name, dir) in [
        ("memory", None),
        ("file-plain", Some((plain.path(), false))),
        ("file-encrypted", Some((encrypted.path(), true))),
    ] {
        let (alice, bob, group, mut events) = rt.block_on(pair(dir));
        let body = vec![b'x'; 100];
        g.bench_function(BenchmarkId::new(name, PARAM), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        for _ in 0..MESSAGES {
                            alice.send(&group, &body).await.unwrap();
                        }
                        let mut got = 0;
                        while got < MESSAGES {
                            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await
                            {
                                Ok(Some(Event::Message(_))) => got += 1,
                                Ok(Some(_)) => {}
                                _ => panic!("bob stopped receiving after {got}"),
                            }
                        }
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
        rt.block_on(async {
            alice.shutdown().await;
            bob.shutdown().await;
        });
    }
}

criterion_group!(benches, send_receive);
criterion_main!(benches);
