//! Waku peer exchange between nodes on loopback: discovery beyond the bootstrap peer,
//! answers checked record by record against a hostile responder, and the rate limit.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::waku_support;

use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::secp256k1;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{StreamProtocol, request_response};
use pqmls_transport::node::{Config, RateLimits};
use pqmls_transport::rate_limit::Rate;
use pqmls_transport::waku::enr::{self, Enr};
use pqmls_transport::waku::peer_exchange::{self, PeerInfo, Rpc};
use pqmls_transport::{Error, Node};
use prost::Message as _;
use support::{TIMEOUT, tcp_addr, wait_until};
use waku_support::{CLUSTER, listen, metadata_behaviour, our_metadata, waku_config};

fn px_config(c: Config) -> Config {
    let mut px = peer_exchange::Config::default();
    px.interval = Duration::from_millis(200);
    px.redial_after = Duration::from_secs(1);
    c.with_peer_exchange(px)
}

/// Peer exchange that asks nothing by itself (no peers to find).
fn quiet() -> peer_exchange::Config {
    let mut px = peer_exchange::Config::default();
    px.target_peers = 0;
    px
}

async fn start(c: Config) -> Node {
    Node::start(c).await.expect("node starts").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_finds_and_dials_peers_beyond_its_bootstrap_peer() {
    let a = start(px_config(waku_config(&[0]))).await;
    let a_addr = tcp_addr(&a).await;
    let own = a
        .enr()
        .expect("a Waku node with peer exchange has a record");
    assert_eq!(
        own.peer_id(),
        Some(a.peer_id()),
        "signed by the node's own key"
    );
    assert_eq!(own.relay_shards(), Some((CLUSTER, vec![0])));
    assert_eq!(own.waku2(), Some(enr::WAKU2_RELAY));
    assert!(!own.addresses().is_empty());

    let b = start(px_config(waku_config(&[0])).with_bootstrap(a_addr.clone())).await;
    let c = start(px_config(waku_config(&[0])).with_bootstrap(a_addr.clone())).await;
    // B and C only know A; each learns the other through A and dials it.
    for x in [&b, &c] {
        wait_until("a peer found through peer exchange", || async {
            x.counters().connected_peers >= 2
        })
        .await;
    }
    assert!(b.counters().px_dials + c.counters().px_dials >= 1);
    assert!(b.counters().px_records_learnt >= 1);
    // Asked directly, A names itself and the other node, never the requester.
    let records = b.peer_exchange(a.peer_id(), 10).await.unwrap();
    let peers: Vec<_> = records.iter().filter_map(Enr::peer_id).collect();
    assert!(peers.contains(&a.peer_id()), "{peers:?}");
    assert!(peers.contains(&c.peer_id()), "{peers:?}");
    assert!(!peers.contains(&b.peer_id()));
    assert!(a.counters().px_served >= 3);
    // Asking for none gives none.
    assert!(b.peer_exchange(a.peer_id(), 0).await.unwrap().is_empty());
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

/// A node learns which of its peers serve store, lightpush and filter from what they
/// announce over identify, also for a service node it found through peer exchange only;
/// a relay-only peer is never listed, peers that dialed us come after those we dialed,
/// and a service that goes away is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_learns_which_peers_serve_store_lightpush_and_filter() {
    use pqmls_transport::WakuService;
    use pqmls_transport::waku::{filter, lightpush};

    let dir = support::temp_dir("px-services");
    let a = start(
        px_config(waku_config(&[0]))
            .with_store(&dir, pqmls_transport::store::Config::default())
            .with_lightpush_service(lightpush::Config::default())
            .with_filter_service(filter::Config::default()),
    )
    .await;
    let b = start(px_config(waku_config(&[0])).with_bootstrap(tcp_addr(&a).await)).await;
    // C knows only B; it finds A through B's peer exchange.
    let c = start(px_config(waku_config(&[0])).with_bootstrap(tcp_addr(&b).await)).await;
    for svc in [
        WakuService::Store,
        WakuService::Lightpush,
        WakuService::Filter,
    ] {
        wait_until("service found", || async {
            c.service_peers(svc).await.unwrap() == vec![a.peer_id()]
        })
        .await;
        assert_eq!(b.service_peers(svc).await.unwrap(), vec![a.peer_id()]);
        assert!(a.service_peers(svc).await.unwrap().is_empty(), "{svc:?}");
    }
    // Neither knew the other's address: one dialed the other through peer exchange.
    assert!(
        a.counters().px_dials + c.counters().px_dials >= 1,
        "A and C met through peer exchange"
    );
    // A store that dials C is listed too, after A (connected before it).
    let dir_d = support::temp_dir("px-services-d");
    let d = start(
        waku_config(&[0])
            .with_store(&dir_d, pqmls_transport::store::Config::default())
            .with_bootstrap(tcp_addr(&c).await),
    )
    .await;
    wait_until("the inbound store listed", || async {
        c.service_peers(WakuService::Store).await.unwrap() == vec![a.peer_id(), d.peer_id()]
    })
    .await;
    // A store that relays (and so archives) another shard only is a store, but not one
    // for shard 0.
    let dir_e = support::temp_dir("px-services-e");
    let e = start(
        waku_config(&[1])
            .with_store(&dir_e, pqmls_transport::store::Config::default())
            .with_bootstrap(tcp_addr(&c).await),
    )
    .await;
    wait_until("the store of shard 1 listed", || async {
        c.service_peers(WakuService::Store)
            .await
            .unwrap()
            .contains(&e.peer_id())
    })
    .await;
    assert_eq!(
        c.service_peers_on(WakuService::Store, 0).await.unwrap(),
        vec![a.peer_id(), d.peer_id()]
    );
    assert_eq!(
        c.service_peers_on(WakuService::Store, 1).await.unwrap(),
        vec![e.peer_id()]
    );
    e.shutdown().await.unwrap();
    d.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    wait_until("service forgotten", || async {
        c.service_peers(WakuService::Store)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    assert!(
        c.service_peers(WakuService::Filter)
            .await
            .unwrap()
            .is_empty()
    );
    for n in [b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_limit_are_answered_429() {
    let mut server = px_config(waku_config(&[0]));
    server.limits.rate_limits = RateLimits::unlimited();
    server.limits.rate_limits.peer_exchange = Some(Rate::new(2, Duration::from_secs(600)));
    let a = start(server).await;
    // The client asks nothing by itself: a large interval and no target to fill.
    let mut client = waku_config(&[0]).with_bootstrap(tcp_addr(&a).await);
    client = client.with_peer_exchange(quiet());
    let b = start(client).await;
    wait_until("connected", || async { b.counters().connected_peers >= 1 }).await;
    // The request on connection may or may not have gone out yet; spend what is left.
    let mut refused = None;
    for _ in 0..3 {
        match b.peer_exchange(a.peer_id(), 5).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the third request at the latest is refused");
    assert!(matches!(&e, Error::Refused(d) if d.contains("429")), "{e}");
    assert!(a.counters().rate_limited >= 1);
    assert!(a.counters().px_refused >= 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A responder that answers every peer exchange request with the same raw frame body.
#[derive(Clone)]
struct RawAnswer(Vec<u8>);

impl request_response::Codec for RawAnswer {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<()>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        use futures::AsyncReadExt;
        let mut len = [0u8; 1];
        io.read_exact(&mut len).await?;
        let mut body = vec![0u8; usize::from(len[0])];
        io.read_exact(&mut body).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<()>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: (),
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        _: (),
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        let mut framed = Vec::new();
        prost::encoding::encode_varint(self.0.len() as u64, &mut framed);
        framed.extend_from_slice(&self.0);
        io.write_all(&framed).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct RawServer {
    metadata: request_response::Behaviour<waku_support_metadata::Codec>,
    px: request_response::Behaviour<RawAnswer>,
}

use pqmls_transport::waku::metadata as waku_support_metadata;

/// Runs a raw responder answering `body`; returns its peer id and address.
async fn raw_responder(body: Vec<u8>) -> (libp2p::PeerId, libp2p::Multiaddr) {
    let mut s = waku_support::swarm(RawServer {
        metadata: metadata_behaviour(),
        px: request_response::Behaviour::with_codec(
            RawAnswer(body),
            [(
                StreamProtocol::new(peer_exchange::PROTOCOL),
                request_response::ProtocolSupport::Inbound,
            )],
            request_response::Config::default(),
        ),
    });
    let addr = listen(&mut s).await;
    let peer = *s.local_peer_id();
    tokio::spawn(async move {
        loop {
            match s.select_next_some().await {
                SwarmEvent::Behaviour(RawServerEvent::Metadata(
                    request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    },
                )) => {
                    let _ = s
                        .behaviour_mut()
                        .metadata
                        .send_response(channel, our_metadata());
                }
                SwarmEvent::Behaviour(RawServerEvent::Px(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                })) => {
                    let _ = s.behaviour_mut().px.send_response(channel, ());
                }
                _ => {}
            }
        }
    });
    (peer, addr)
}

fn record(seed: u8, cluster: u16) -> Enr {
    let secret = secp256k1::SecretKey::try_from_bytes([seed; 32]).unwrap();
    enr::Builder::new(1)
        .ip4_tcp([127, 0, 0, 1].into(), 9)
        .relay_shards(cluster, &[0])
        .sign(&secret)
        .unwrap()
}

async fn ask(body: Vec<u8>) -> pqmls_transport::Result<Vec<Enr>> {
    let (peer, addr) = raw_responder(body).await;
    let mut c = waku_config(&[0]);
    c = c.with_peer_exchange(quiet());
    let node = start(c.with_bootstrap(addr)).await;
    wait_until("connected", || async {
        node.counters().metadata_admitted >= 1
    })
    .await;
    let r = tokio::time::timeout(TIMEOUT, node.peer_exchange(peer, 4))
        .await
        .expect("an answer or an error in time");
    node.shutdown().await.unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_responders_records_are_checked_one_by_one() {
    let good = record(1, CLUSTER);
    let mut forged = record(2, CLUSTER).as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let mut answer = Rpc::answer(&[good.clone(), record(3, CLUSTER + 1)]);
    let infos = &mut answer.response.as_mut().unwrap().peer_infos;
    infos.push(PeerInfo { enr: forged });
    infos.push(PeerInfo {
        enr: vec![0xc0; 400],
    });
    infos.push(PeerInfo {
        enr: good.as_bytes()[..50].to_vec(),
    });
    for seed in 10..20 {
        infos.push(PeerInfo {
            enr: record(seed, CLUSTER).as_bytes().to_vec(),
        });
    }
    let records = ask(answer.encode_to_vec()).await.unwrap();
    assert_eq!(records.len(), 4, "no more than asked");
    assert_eq!(records[0], good);
    assert!(
        records
            .iter()
            .all(|r| r.relay_shards() == Some((CLUSTER, vec![0])))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_malformed_answers_fail_the_request() {
    // More bytes than any honest answer needs: refused before it is read.
    let big = Rpc::answer(&vec![record(1, CLUSTER); 300]).encode_to_vec();
    assert!(big.len() > peer_exchange::MAX_RESPONSE);
    assert!(matches!(ask(big).await, Err(Error::Request(_))));
    assert!(matches!(
        ask(vec![0xff, 0xff]).await,
        Err(Error::Request(_))
    ));
    // A well-formed error answer is a refusal with its status.
    let e = ask(Rpc::error(503, "no peers").encode_to_vec())
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Refused(d) if d.contains("503")), "{e}");
}
