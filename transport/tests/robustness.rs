//! Hostile input from a raw libp2p peer: malformed gossip frames, oversized messages,
//! unknown and malformed store requests. Each is rejected and counted, and the node keeps
//! serving honest peers.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{StreamProtocol, Swarm, gossipsub, noise, tcp, yamux};
use pqmls_transport::node::Config;
use pqmls_transport::store;
use pqmls_transport::{Node, STORE_PROTOCOL, Topic, Verdict};
use support::{config, recv, start, tcp_addr, temp_dir, wait_until};

/// Writes whatever bytes it is given and reads whatever comes back (bounded).
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
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
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Raw {
    gossipsub: gossipsub::Behaviour,
    rpc: request_response::Behaviour<RawCodec>,
}

fn raw_swarm() -> Swarm<Raw> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            let cfg = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::None)
                .max_transmit_size(1 << 20)
                .heartbeat_interval(Duration::from_millis(200))
                .heartbeat_initial_delay(Duration::from_millis(200))
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::new(&m.data[..m.data.len().min(64)])
                })
                .build()
                .unwrap();
            Raw {
                gossipsub: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Anonymous,
                    cfg,
                )
                .unwrap(),
                rpc: request_response::Behaviour::new(
                    [(
                        StreamProtocol::new(STORE_PROTOCOL),
                        ProtocolSupport::Outbound,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10)),
                ),
            }
        })
        .unwrap()
        .build()
}

/// Drives the raw swarm until `done` returns true for one of its events.
async fn drive(
    swarm: &mut Swarm<Raw>,
    what: &str,
    mut done: impl FnMut(&SwarmEvent<RawEvent>) -> bool,
) {
    tokio::time::timeout(support::TIMEOUT, async {
        loop {
            let ev = swarm.select_next_some().await;
            if done(&ev) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("raw peer timed out waiting for {what}"));
}

/// Drives the raw swarm in the background of `fut`.
async fn with_swarm<T>(swarm: &mut Swarm<Raw>, fut: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = swarm.select_next_some() => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_unknown_input_is_rejected_counted_and_survived() {
    let dir = temp_dir("robust");
    let topic = Topic::from_group_id(b"robust");
    // A store node with a 64 KiB message limit (keeps the oversized case cheap) and a
    // validator that rejects payloads starting with "bad".
    let mut c: Config = config().with_store(&dir, store::Config::default());
    c.limits.max_message_size = 64 * 1024;
    let c = c.with_validator(|_: &Topic, data: &[u8]| {
        if data.starts_with(b"bad") {
            Verdict::Reject
        } else {
            Verdict::Accept
        }
    });
    let (node, mut node_in) = start(c).await;
    node.subscribe(&topic).await.unwrap();
    let node_addr = tcp_addr(&node).await;

    let mut raw = raw_swarm();
    let gtopic = gossipsub::IdentTopic::new(topic.as_str());
    raw.behaviour_mut().gossipsub.subscribe(&gtopic).unwrap();
    raw.dial(node_addr.clone()).unwrap();
    drive(&mut raw, "node subscription", |ev| {
        matches!(
            ev,
            SwarmEvent::Behaviour(RawEvent::Gossipsub(gossipsub::Event::Subscribed { .. }))
        )
    })
    .await;

    // Gossip from the first raw peer: rejected by the validator, no envelope, unknown
    // envelope version.
    let sends: Vec<Vec<u8>> = vec![b"\x01bad content".to_vec(), vec![], vec![9, 9, 9]];
    for data in sends {
        raw.behaviour_mut()
            .gossipsub
            .publish(gtopic.clone(), data)
            .unwrap();
    }
    with_swarm(
        &mut raw,
        wait_until("gossip rejections counted", || async {
            let c = node.counters();
            c.malformed >= 2 && c.rejected >= 1
        }),
    )
    .await;
    // Three invalid messages put the raw peer below gossipsub's graylist threshold: a valid
    // message from it is now ignored (checked at the end: only the honest one is stored).
    raw.behaviour_mut()
        .gossipsub
        .publish(
            gtopic.clone(),
            b"\x01valid but from a graylisted peer".to_vec(),
        )
        .unwrap();

    // A second raw peer sends a message over the node's 64 KiB limit (but within gossipsub's
    // frame limit, so it reaches the transport's own check).
    let mut raw2 = raw_swarm();
    with_swarm(&mut raw, async {
        raw2.behaviour_mut().gossipsub.subscribe(&gtopic).unwrap();
        raw2.dial(node_addr.clone()).unwrap();
        drive(&mut raw2, "node subscription (second raw peer)", |ev| {
            matches!(
                ev,
                SwarmEvent::Behaviour(RawEvent::Gossipsub(gossipsub::Event::Subscribed { .. }))
            )
        })
        .await;
        let mut oversized = vec![1u8];
        oversized.extend(vec![0u8; 64 * 1024 + 1]);
        raw2.behaviour_mut()
            .gossipsub
            .publish(gtopic.clone(), oversized)
            .unwrap();
        with_swarm(
            &mut raw2,
            wait_until("oversized counted", || async {
                node.counters().oversized >= 1
            }),
        )
        .await;
    })
    .await;
    let counters = node.counters();
    assert_eq!(
        (counters.malformed, counters.oversized, counters.rejected),
        (2, 1, 1)
    );
    assert_eq!(counters.delivered, 0);
    assert_eq!(counters.stored, 0);

    // Store protocol: unknown request tag, a frame claiming 4 GiB, trailing garbage, and a
    // truncated frame.
    let bad_requests: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 1, 99],
        vec![0xff, 0xff, 0xff, 0xff, 2],
        vec![0, 0, 0, 7, 2, 0, 0, 0, 1, b'k', 0],
        vec![0, 0, 0, 10, 2],
    ];
    for req in bad_requests {
        raw.behaviour_mut().rpc.send_request(&node.peer_id(), req);
    }
    with_swarm(
        &mut raw,
        wait_until("request failures counted", || async {
            node.counters().requests_malformed >= 4
        }),
    )
    .await;
    assert_eq!(node.counters().requests_malformed, 4);
    assert_eq!(node.counters().requests_served, 0);

    // A well-formed request still gets an answer on a new stream from the same peer:
    // Get("k") -> NotFound (tag 3).
    raw.behaviour_mut()
        .rpc
        .send_request(&node.peer_id(), vec![0, 0, 0, 6, 2, 0, 0, 0, 1, b'k']);
    let mut answer = None;
    drive(&mut raw, "answer to a good request", |ev| {
        if let SwarmEvent::Behaviour(RawEvent::Rpc(request_response::Event::Message {
            message: request_response::Message::Response { response, .. },
            ..
        })) = ev
        {
            answer = Some(response.clone());
            true
        } else {
            false
        }
    })
    .await;
    assert_eq!(answer, Some(vec![0, 0, 0, 1, 3]));

    // The node still serves honest peers: gossip and the directory.
    let (honest, _h_in) = start(config().with_bootstrap(node_addr)).await;
    honest.subscribe(&topic).await.unwrap();
    with_swarm(
        &mut raw,
        wait_until("honest mesh", || async {
            honest.mesh_peers(&topic).await.unwrap() >= 1
        }),
    )
    .await;
    let id = honest
        .publish(&topic, b"good content".to_vec())
        .await
        .unwrap();
    let m = with_swarm(&mut raw, recv(&mut node_in)).await;
    assert_eq!((m.id, m.data.as_slice()), (id, &b"good content"[..]));
    with_swarm(
        &mut raw,
        wait_until("honest sees store", || async {
            honest.counters().store_peers == 1
        }),
    )
    .await;
    with_swarm(&mut raw, honest.put(b"k".to_vec(), b"v".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        with_swarm(&mut raw, honest.get(b"k".to_vec()))
            .await
            .unwrap(),
        Some(b"v".to_vec())
    );
    let c = node.counters();
    assert_eq!(c.stored, 1, "only the honest message was accepted");
    assert_eq!(c.delivered, 1);
    assert!(c.requests_served >= 2);

    honest.shutdown().await.unwrap();
    Node::shutdown(node).await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
