//! Listening on a TCP port that is already in use is an error, not a silent split of the
//! network; and bootstrap peers that go away are dialed again.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use pqmls_transport::multiaddr::Protocol;
use pqmls_transport::node::Config;
use pqmls_transport::store;
use pqmls_transport::{Error, Multiaddr, Node};
use support::{tcp_addr, wait_until};

fn tcp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap()
}

fn listen_tcp(ip: [u8; 4], port: u16) -> Config {
    let mut c = support::config();
    c.listen = vec![
        Multiaddr::empty()
            .with(Protocol::Ip4(ip.into()))
            .with(Protocol::Tcp(port)),
    ];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_port_in_use_is_a_clear_error() {
    let (first, _) = Node::start(support::config()).await.unwrap();
    let port = tcp_port(&tcp_addr(&first).await);

    // The reason for the check: libp2p's own TCP listener sets SO_REUSEPORT, so a second
    // one on the same port comes up without complaint.
    let mut raw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
        .unwrap()
        .build();
    raw.listen_on(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap())
        .unwrap();
    let up = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match raw.select_next_some().await {
                SwarmEvent::NewListenAddr { .. } => return true,
                SwarmEvent::ListenerError { .. } | SwarmEvent::ListenerClosed { .. } => {
                    return false;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(up, "a plain libp2p listener shares the port (SO_REUSEPORT)");
    drop(raw);

    // A node refuses: same address, and the wildcard address over it.
    for ip in [[127, 0, 0, 1], [0, 0, 0, 0]] {
        match Node::start(listen_tcp(ip, port)).await {
            Err(Error::AddressInUse(addr)) => assert!(addr.contains(&port.to_string())),
            other => panic!("expected AddressInUse, got {other:?}"),
        }
    }
    // Any other program's socket counts too.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    assert!(matches!(
        Node::start(listen_tcp([127, 0, 0, 1], port)).await,
        Err(Error::AddressInUse(_))
    ));
    drop(other);
    // Once the port is free again the node starts on it.
    let (again, _) = Node::start(listen_tcp([127, 0, 0, 1], port)).await.unwrap();
    assert_eq!(tcp_port(&tcp_addr(&again).await), port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dials_its_store_again_after_the_store_restarts() {
    let dir = support::temp_dir("redial");
    let store_config =
        |port| listen_tcp([127, 0, 0, 1], port).with_store(&dir, store::Config::default());
    let (store, _) = Node::start(store_config(0)).await.unwrap();
    let addr = tcp_addr(&store).await;
    let port = tcp_port(&addr);
    let (client, _) = Node::start(support::config().with_bootstrap(addr.clone()))
        .await
        .unwrap();
    wait_until("store connected", || async {
        client.counters().store_peers == 1
    })
    .await;

    store.shutdown().await.unwrap();
    wait_until("store gone", || async {
        client.counters().connected_peers == 0
    })
    .await;
    // Down long enough for the first redial to fail.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(client.counters().connected_peers, 0);

    let (store, _) = Node::start(store_config(port)).await.unwrap();
    assert_eq!(tcp_addr(&store).await, addr, "same peer id and port");
    wait_until("store connected again", || async {
        client.counters().store_peers == 1
    })
    .await;
    // The directory works again through it.
    client.put(b"k".to_vec(), b"v".to_vec()).await.unwrap();
    assert_eq!(store.get(b"k".to_vec()).await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_started_before_its_bootstrap_peer_reaches_it_later() {
    // A port that was free a moment ago, and a peer that is not there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (client, _) = Node::start(
        support::config().with_bootstrap(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (late, _) = Node::start(listen_tcp([127, 0, 0, 1], port)).await.unwrap();
    wait_until("client connected", || async {
        late.counters().connected_peers == 1 && client.counters().connected_peers == 1
    })
    .await;
}
