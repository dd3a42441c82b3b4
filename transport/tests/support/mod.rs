//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use pqmls_transport::multiaddr::Protocol;
use pqmls_transport::node::Config;
use pqmls_transport::{Inbound, Message, Multiaddr, Node};

/// Generous bound for anything that waits on the network in a test.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Loopback config with a fast gossip heartbeat, so meshes form quickly in tests.
pub fn config() -> Config {
    let mut c = Config::loopback();
    c.gossip_heartbeat = Duration::from_millis(200);
    c
}

/// Starts a node.
pub async fn start(config: Config) -> (Node, Inbound) {
    if let Ok(filter) = std::env::var("PQMLS_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    Node::start(config).await.expect("node starts")
}

/// The node's TCP listen address (with `/p2p/`).
pub async fn tcp_addr(node: &Node) -> Multiaddr {
    addr_with(node, |p| matches!(p, Protocol::Tcp(_))).await
}

/// The node's QUIC listen address (with `/p2p/`).
pub async fn quic_addr(node: &Node) -> Multiaddr {
    addr_with(node, |p| matches!(p, Protocol::QuicV1)).await
}

async fn addr_with(node: &Node, pred: impl Fn(&Protocol<'_>) -> bool) -> Multiaddr {
    let addrs = node.listen_addrs().await.expect("listen addrs");
    for a in &addrs {
        assert!(
            a.iter().any(|p| p == Protocol::Ip4([127, 0, 0, 1].into())),
            "test nodes listen on loopback only: {a}"
        );
    }
    addrs
        .into_iter()
        .find(|a| a.iter().any(|p| pred(&p)))
        .expect("listen address of the requested kind")
}

/// Polls `cond` every 20 ms until it holds, panicking with `what` after [`TIMEOUT`].
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receives the next message within [`TIMEOUT`].
pub async fn recv(inbound: &mut Inbound) -> Message {
    tokio::time::timeout(TIMEOUT, inbound.recv())
        .await
        .expect("message within timeout")
        .expect("node running")
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "pqmls-transport-{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
