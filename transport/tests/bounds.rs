//! Attacks on a store's memory and a node's connection slots, each reproduced against a real
//! node on loopback, asserting the secure outcome: what the attacker holds stays under its
//! cap and honest peers are still served.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::bound_tcp;
use crate::support;

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, Swarm, noise, tcp, yamux};
use pqmls_transport::node::Config;
use pqmls_transport::store::{self, Cursor};
use pqmls_transport::{Inbound, Multiaddr, Node, STORE_PROTOCOL, Topic};
use support::{config, start, tcp_addr, temp_dir, wait_until};

/// Sends the request bytes it is given and never reads a response: a reader that makes the
/// store hold whatever it answers.
#[derive(Clone, Default)]
struct StallingCodec;

impl request_response::Codec for StallingCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        futures::future::pending().await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[derive(NetworkBehaviour)]
struct Stalling {
    rpc: request_response::Behaviour<StallingCodec>,
}

fn stalling_swarm() -> Swarm<Stalling> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| Stalling {
            rpc: request_response::Behaviour::new(
                [(
                    StreamProtocol::new(STORE_PROTOCOL),
                    ProtocolSupport::Outbound,
                )],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(120))
                    .with_max_concurrent_streams(1000),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// A history request of the store protocol for the whole of `topic`, framed.
fn history_request(topic: &Topic) -> Vec<u8> {
    let mut body = vec![3u8];
    body.extend_from_slice(&u32::try_from(topic.as_str().len()).unwrap().to_be_bytes());
    body.extend_from_slice(topic.as_str().as_bytes());
    body.extend_from_slice(&0u64.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Drives `swarm` in the background of `fut`.
async fn with_swarm<B: NetworkBehaviour, T>(
    swarm: &mut Swarm<B>,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = swarm.select_next_some() => {}
        }
    }
}

/// Limits small enough to make the attack cheap but with pages larger than a yamux stream
/// window (256 KiB), so a reader that does not read blocks the store's write as on a real
/// network.
fn small_limits(c: &mut Config) {
    c.limits.max_message_size = 128 * 1024;
    c.limits.history_page_bytes = 1024 * 1024;
    c.limits.response_bytes_per_peer = 1536 * 1024;
    c.limits.response_bytes_in_flight = 3 * 1024 * 1024;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_read_cannot_make_a_store_hold_more_than_its_budget() {
    let dir = temp_dir("history-flood");
    let topic = Topic::from_group_id(b"history flood");
    let mut c = config().with_store(&dir, store::Config::default());
    small_limits(&mut c);
    let (store_node, _store_in) = start(c).await;
    store_node.subscribe(&topic).await.unwrap();
    let store_addr = tcp_addr(&store_node).await;

    // An honest member fills the topic with 2 MB of history (20 x 100 KB).
    let mut c = config().with_bootstrap(store_addr.clone());
    small_limits(&mut c);
    let (honest, _honest_in) = start(c).await;
    honest.subscribe(&topic).await.unwrap();
    wait_until("mesh", || async {
        honest.mesh_peers(&topic).await.unwrap() >= 1
    })
    .await;
    for i in 0..20u8 {
        honest.publish(&topic, vec![i; 100_000]).await.unwrap();
    }
    wait_until("history stored", || async {
        store_node.counters().stored == 20
    })
    .await;

    // The attacker asks for the whole history 64 times and reads nothing. Without a
    // budget each answer is a 1 MiB page held by the store: 32 streams at once, 32 MiB.
    let mut attacker = stalling_swarm();
    attacker.dial(store_addr).unwrap();
    let request = history_request(&topic);
    with_swarm(
        &mut attacker,
        wait_until("attacker connected", || async {
            store_node.counters().connected_peers >= 2
        }),
    )
    .await;
    for _ in 0..64 {
        attacker
            .behaviour_mut()
            .rpc
            .send_request(&store_node.peer_id(), request.clone());
    }
    with_swarm(
        &mut attacker,
        wait_until("the store answered the attacker's open streams", || async {
            let c = store_node.counters();
            c.requests_served + c.requests_busy >= 32
        }),
    )
    .await;
    let held = store_node.counters();
    assert!(
        held.response_bytes_in_flight > 0,
        "the attacker holds some responses: {held:?}"
    );
    assert!(
        held.response_bytes_in_flight_peak <= 1536 * 1024,
        "one peer holds at most its budget: {held:?}"
    );
    assert!(held.requests_busy > 0, "{held:?}");

    // While the attacker still holds its share, the honest member gets all of the history.
    let mut got = 0;
    let mut cursor = Cursor::beginning();
    with_swarm(&mut attacker, async {
        loop {
            let page = honest.history(&topic, cursor).await.unwrap();
            got += page.messages.len();
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
    })
    .await;
    assert_eq!(got, 20);
    let after = store_node.counters();
    assert!(
        after.response_bytes_in_flight_peak <= 3 * 1024 * 1024,
        "all peers together hold at most the total budget: {after:?}"
    );

    // Once the attacker is gone, everything it held is released.
    drop(attacker);
    wait_until("responses released", || async {
        store_node.counters().response_bytes_in_flight == 0
    })
    .await;
    honest.shutdown().await.unwrap();
    store_node.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// An owner-only directory, as the SDK will have with signatures: the owner is the key's
/// first '/'-separated part and a blob is "signed" when it starts with it.
fn owner_signed(key: &[u8], _old: Option<&[u8]>, new: &[u8]) -> bool {
    let owner = key.split(|b| *b == b'/').next().unwrap_or_default();
    !owner.is_empty() && new.starts_with(owner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_writers_are_held_to_quotas_and_to_the_validator() {
    let dir = temp_dir("directory-quota");
    let store_config = store::Config::default()
        .with_peer_quota(8, 64 * 1024)
        .with_directory_validator(owner_signed);
    let (store_node, _in) = start(config().with_store(&dir, store_config)).await;
    let addr = tcp_addr(&store_node).await;
    let (mallory, _m_in) = start(config().with_bootstrap(addr.clone())).await;
    let (alice, _a_in) = start(config().with_bootstrap(addr)).await;
    for n in [&mallory, &alice] {
        wait_until("store known", || async { n.counters().store_peers == 1 }).await;
    }

    // Mallory floods her own keys: the ninth and later are refused.
    let mut refused = 0;
    for i in 0..20 {
        let key = format!("mallory/{i}").into_bytes();
        match mallory.put(key, b"mallory signed".to_vec()).await {
            Ok(()) => assert!(i < 8, "put {i} accepted over the quota"),
            Err(pqmls_transport::Error::QuotaExceeded) => refused += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(refused, 12);
    assert_eq!(store_node.counters().puts_over_quota, 12);

    // Alice is not affected by Mallory's quota; Mallory cannot plant or replace her entry.
    assert!(matches!(
        mallory.put(b"alice/kp".to_vec(), b"mallory".to_vec()).await,
        Err(pqmls_transport::Error::EntryRejected)
    ));
    alice
        .put(b"alice/kp".to_vec(), b"alice signed 1".to_vec())
        .await
        .unwrap();
    assert!(matches!(
        mallory.put(b"alice/kp".to_vec(), b"mallory".to_vec()).await,
        Err(pqmls_transport::Error::EntryRejected)
    ));
    alice
        .put(b"alice/kp".to_vec(), b"alice signed 2".to_vec())
        .await
        .unwrap();
    assert_eq!(
        mallory.get(b"alice/kp".to_vec()).await.unwrap(),
        Some(b"alice signed 2".to_vec())
    );
    assert_eq!(store_node.counters().puts_rejected, 2);
    // The store's own puts are checked too.
    assert!(matches!(
        store_node
            .put(b"alice/kp".to_vec(), b"store".to_vec())
            .await,
        Err(pqmls_transport::Error::EntryRejected)
    ));

    for n in [mallory, alice, store_node] {
        n.shutdown().await.unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_directory_entries_are_not_served() {
    let dir = temp_dir("directory-ttl");
    let store_config = store::Config::default().with_directory_ttl(Duration::from_millis(300));
    let (store_node, _in) = start(config().with_store(&dir, store_config)).await;
    let (client, _c_in) = start(config().with_bootstrap(tcp_addr(&store_node).await)).await;
    wait_until("store known", || async {
        client.counters().store_peers == 1
    })
    .await;
    client.put(b"k".to_vec(), b"v".to_vec()).await.unwrap();
    assert_eq!(
        client.get(b"k".to_vec()).await.unwrap(),
        Some(b"v".to_vec())
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.get(b"k".to_vec()).await.unwrap(), None);
    client.shutdown().await.unwrap();
    store_node.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// Limits as a real deployment would set them (the loopback preset lifts the per-address
/// ones), with a small peer table so the attack is cheap.
fn realistic(max_peers: usize) -> Config {
    let mut c = config();
    c.limits.max_peers = max_peers;
    c.limits.max_connections_per_ip = 4;
    c.limits.max_pending_per_ip = 4;
    c.limits.loopback_exempt = false;
    c.limits.max_pending_incoming = 8;
    c
}

/// Starts `n` attacker swarms (each its own peer id) connecting from `src` to `target`,
/// each driven by its own task; abort the handles to stop them.
fn attack_from(src: [u8; 4], target: &Multiaddr, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let mut swarm =
                bound_tcp::swarm_from(std::net::IpAddr::from(src), libp2p::swarm::dummy::Behaviour);
            swarm.dial(target.clone()).unwrap();
            tokio::spawn(async move {
                loop {
                    swarm.select_next_some().await;
                }
            })
        })
        .collect()
}

async fn honest_peers(target: &Multiaddr, n: usize) -> Vec<(Node, Inbound)> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(start(config().with_bootstrap(target.clone())).await);
    }
    for (node, _) in &v {
        wait_until("honest peer connected", || async {
            node.counters().connected_peers == 1
        })
        .await;
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_peer_slot() {
    let (target, _in) = start(realistic(16)).await;
    let addr = tcp_addr(&target).await;
    // 30 peer ids, ten on each of 127.0.0.2, .3 and .4, try to fill the 16 slots; without
    // limits per address they took them all and honest peers were refused.
    let mut attackers = Vec::new();
    for src in 2..=4 {
        attackers.extend(attack_from([127, 0, 0, src], &addr, 10));
    }
    wait_until("every attacker admitted or refused", || async {
        let c = target.counters();
        c.connected_peers + c.connections_refused + c.handshakes_refused == 30
    })
    .await;
    let admitted = target.counters().connected_peers;
    assert!(
        admitted <= 12,
        "at most four per address: {:?}",
        target.counters()
    );
    // Honest peers from 127.0.0.1 (up to that address's limit) all get in.
    let honest = honest_peers(&addr, 4).await;
    assert_eq!(target.counters().connected_peers, admitted + 4);
    for a in attackers {
        a.abort();
    }
    for (n, _) in honest {
        n.shutdown().await.unwrap();
    }
    target.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowded_address_gives_way_to_a_new_one() {
    let (target, _in) = start(realistic(8)).await;
    let addr = tcp_addr(&target).await;
    let mut attackers = attack_from([127, 0, 0, 2], &addr, 4);
    wait_until("first four", || async {
        target.counters().connected_peers == 4
    })
    .await;
    attackers.extend(attack_from([127, 0, 0, 3], &addr, 4));
    wait_until("full", || async { target.counters().connected_peers == 8 }).await;
    let honest = honest_peers(&addr, 1).await;
    wait_until("one evicted", || async {
        let c = target.counters();
        c.peers_evicted == 1 && c.connected_peers == 8
    })
    .await;
    assert_eq!(honest[0].0.counters().connected_peers, 1);
    for a in attackers {
        a.abort();
    }
    for (n, _) in honest {
        n.shutdown().await.unwrap();
    }
    target.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_are_bounded() {
    let (target, _in) = start(realistic(16)).await;
    let addr = tcp_addr(&target).await;
    let Some(libp2p::multiaddr::Protocol::Tcp(port)) = addr.iter().nth(1) else {
        panic!("tcp address {addr}");
    };
    // 20 TCP connections from 127.0.0.3 that never start the handshake.
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        sockets.push(s.connect(([127, 0, 0, 1], port).into()).await.unwrap());
    }
    wait_until("handshakes refused", || async {
        target.counters().handshakes_refused >= 16
    })
    .await;
    let honest = honest_peers(&addr, 2).await;
    assert_eq!(target.counters().connected_peers, 2);
    drop(sockets);
    for (n, _) in honest {
        n.shutdown().await.unwrap();
    }
    target.shutdown().await.unwrap();
}

/// What a store node reads of pqmls requests at once is bounded in bytes, over all peers
/// and per connection: one peer opening every stream a connection may and announcing a
/// request of the largest size on each (a directory put) holds at most one such frame,
/// the rest are not read, and another peer's history request is served meanwhile.
/// Before, every frame was allocated in full as it came, with no bound over all peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_hold_at_most_a_connections_share_of_a_stores_reads() {
    let dir = temp_dir("rpc-read-share");
    let topic = Topic::from_group_id(b"rpc read share");
    let c = config().with_store(&dir, store::Config::default());
    let largest = c.limits.max_directory_key + c.limits.max_directory_blob + 1024;
    let (store_node, _in) = start(c).await;
    store_node.subscribe(&topic).await.unwrap();
    let addr = tcp_addr(&store_node).await;
    let mut raw = crate::waku_support::RawPeer::spawn(
        STORE_PROTOCOL,
        Duration::from_secs(60),
        store_node.peer_id(),
        addr.clone(),
    );
    // A 4-byte big-endian length announcing the largest request, and 3 bytes of it.
    let mut stalled = u32::try_from(largest).unwrap().to_be_bytes().to_vec();
    stalled.extend_from_slice(&[1, 2, 3]);
    for _ in 0..32 {
        raw.send(stalled.clone(), true);
    }
    let frame = largest as u64;
    wait_until("every stalled frame held or refused", || async {
        let c = store_node.counters();
        c.rpc_request_read_bytes / frame + c.rpc_reads_refused >= 32
    })
    .await;
    let c = store_node.counters();
    assert_eq!(
        (c.rpc_request_read_bytes, c.rpc_reads_refused),
        (frame, 31),
        "one frame held, the rest not read"
    );

    let (honest, _honest_in) = start(config().with_bootstrap(addr)).await;
    wait_until("connected", || async { honest.counters().store_peers >= 1 }).await;
    honest.history(&topic, Cursor::default()).await.unwrap();
    assert_eq!(store_node.counters().rpc_request_read_bytes, frame);
}
