//! A [`Node`] in Waku mode on 127.0.0.1 over real libp2p sockets: relay between nodes in
//! both directions, shards kept apart, size limits, a hostile relay peer, and the metadata
//! protocol's cluster gate.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Swarm, gossipsub, noise, request_response, tcp, yamux};
use pqmls_transport::node::{Config, RelayInbound};
use pqmls_transport::waku::relay::{self, Received};
use pqmls_transport::waku::{ContentTopic, PubsubTopic, WakuMessage, message_hash, metadata};
use pqmls_transport::{Error, Node};
use support::{TIMEOUT, tcp_addr, wait_until};

const CLUSTER: u16 = 3;

/// A loopback Waku node of `cluster` relaying `shards`, with fast heartbeats.
fn waku_config(cluster: u16, shards: &[u16]) -> Config {
    let mut relay = relay::Config::new(cluster).with_shards(shards.iter().copied());
    relay.heartbeat = Duration::from_millis(100);
    let mut c = support::config();
    c.listen.retain(|a| a.to_string().contains("/tcp/"));
    c.with_waku(relay)
}

async fn start(c: Config) -> (Node, RelayInbound) {
    let (node, _) = Node::start(c).await.expect("node starts");
    let inbound = node.relay_inbound().expect("waku inbound, first take");
    assert!(node.relay_inbound().is_none(), "the stream is taken once");
    (node, inbound)
}

/// A content topic that autoshards to `shard` of 8.
fn topic_on(shard: u16) -> ContentTopic {
    (0..)
        .map(|i| ContentTopic::parse(&format!("/app{i}/1/chat/proto")).unwrap())
        .find(|t| t.shard(8) == Some(shard))
        .unwrap()
}

async fn recv(inbound: &mut RelayInbound) -> Received {
    tokio::time::timeout(TIMEOUT, inbound.recv())
        .await
        .expect("relay message within timeout")
        .expect("node running")
}

async fn wait_mesh(node: &Node, shard: PubsubTopic, n: usize) {
    wait_until("relay mesh", || async {
        node.relay_mesh_peers(shard).await.unwrap() >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_relay_waku_messages_both_ways_on_one_shard() {
    let (a, mut a_in) = start(waku_config(CLUSTER, &[0, 1])).await;
    let a_addr = tcp_addr(&a).await;
    let (b, mut b_in) = start(waku_config(CLUSTER, &[0, 1]).with_bootstrap(a_addr.clone())).await;
    // c relays shard 0 only, and reaches b through a.
    let (c, mut c_in) = start(waku_config(CLUSTER, &[0]).with_bootstrap(a_addr)).await;
    let s0 = PubsubTopic::new(CLUSTER, 0).unwrap();
    let s1 = PubsubTopic::new(CLUSTER, 1).unwrap();
    wait_mesh(&a, s0, 2).await;
    wait_mesh(&b, s0, 1).await;
    wait_mesh(&c, s0, 1).await;
    wait_mesh(&b, s1, 1).await;

    // a -> b and c.
    let t0 = topic_on(0);
    let hash = a.relay_publish(&t0, b"from a".to_vec()).await.unwrap();
    for inbound in [&mut b_in, &mut c_in] {
        let got = recv(inbound).await;
        assert_eq!(got.shard, s0);
        assert_eq!(got.message.payload, b"from a");
        assert_eq!(got.message.content_topic, t0.to_string());
        assert!(got.message.timestamp.is_some());
        assert_eq!(got.hash, hash);
        assert_eq!(got.hash, message_hash(&s0.to_string(), &got.message));
    }

    // b -> a, and c two hops away (a forwards).
    let sent = WakuMessage::new(t0.to_string(), b"from b".to_vec()).with_meta(vec![9; 64]);
    let (shard, hash) = b.relay_publish_message(sent.clone()).await.unwrap();
    assert_eq!(shard, s0);
    for inbound in [&mut a_in, &mut c_in] {
        let got = recv(inbound).await;
        assert_eq!((got.shard, got.hash, &got.message), (s0, hash, &sent));
    }

    // A message on shard 1 reaches b, not c; c's next message is the one on shard 0.
    let on_s1 = WakuMessage::new(topic_on(1).to_string(), b"shard 1".to_vec());
    let (shard, _) = a.relay_publish_message(on_s1).await.unwrap();
    assert_eq!(shard, s1);
    assert_eq!(recv(&mut b_in).await.message.payload, b"shard 1");
    a.relay_publish(&t0, b"shard 0 again".to_vec())
        .await
        .unwrap();
    assert_eq!(recv(&mut c_in).await.message.payload, b"shard 0 again");
    assert_eq!(recv(&mut b_in).await.message.payload, b"shard 0 again");
    assert!(c_in.try_recv().is_none());
    assert!(
        a_in.try_recv().is_none(),
        "a does not receive its own messages"
    );
    assert_eq!(a.counters().relay_published, 3);
    assert_eq!(c.counters().relay_delivered, 3);
    assert_eq!(b.counters().relay_rejected, 0);
    // Both sides asked and admitted each other.
    assert_eq!(a.counters().metadata_admitted, 2);
    assert_eq!(a.counters().metadata_refused, 0);

    // The pqmls protocols still run beside relay.
    let group = pqmls_transport::Topic::from_group_id(b"beside waku");
    a.subscribe(&group).await.unwrap();
    b.subscribe(&group).await.unwrap();
    wait_until("pqmls mesh", || async {
        a.mesh_peers(&group).await.unwrap() > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_invalid_and_foreign_publications_are_refused() {
    let (a, _a_in) = start(waku_config(CLUSTER, &[0])).await;
    let t0 = topic_on(0);
    let too_big = vec![0u8; relay::DEFAULT_MAX_MESSAGE_SIZE];
    assert!(matches!(
        a.relay_publish(&t0, too_big).await,
        Err(Error::MessageTooLarge { max, .. }) if max == relay::DEFAULT_MAX_MESSAGE_SIZE
    ));
    // Just under the limit passes the size check (and fails only for lack of peers).
    let fits = vec![0u8; relay::DEFAULT_MAX_MESSAGE_SIZE - 100];
    assert!(matches!(
        a.relay_publish(&t0, fits).await,
        Err(Error::NoPeers)
    ));
    let not_autosharded = WakuMessage::new("no-slashes", vec![1]);
    assert!(matches!(
        a.relay_publish_message(not_autosharded).await,
        Err(Error::ContentTopic(_))
    ));
    let other_cluster = PubsubTopic::new(CLUSTER + 1, 0).unwrap();
    assert!(matches!(
        a.relay_publish_on(other_cluster, WakuMessage::new(t0.to_string(), vec![1]))
            .await,
        Err(Error::Shard(_))
    ));
    let long_meta = WakuMessage::new(t0.to_string(), vec![1]).with_meta(vec![0; 65]);
    assert!(matches!(
        a.relay_publish_message(long_meta).await,
        Err(Error::WakuMessage(_))
    ));
    assert!(matches!(
        a.relay_subscribe(1024).await,
        Err(Error::Shard(_))
    ));
    // A node without Waku refuses the relay calls.
    let (plain, _) = Node::start(support::config()).await.unwrap();
    assert!(plain.relay_inbound().is_none());
    assert!(matches!(
        plain.relay_publish(&t0, vec![1]).await,
        Err(Error::Config(_))
    ));
}

/// A raw swarm speaking relay (with a larger limit than the node's) and metadata.
#[derive(NetworkBehaviour)]
struct Raw {
    relay: gossipsub::Behaviour,
    metadata: request_response::Behaviour<metadata::Codec>,
}

fn raw_swarm(cluster: u16) -> Swarm<Raw> {
    let mut rc = relay::Config::new(cluster);
    rc.heartbeat = Duration::from_millis(100);
    rc.max_message_size = 1024 * 1024;
    let behaviour = Raw {
        relay: relay::behaviour(&rc).unwrap(),
        metadata: request_response::Behaviour::with_codec(
            metadata::Codec,
            [(
                libp2p::StreamProtocol::new(metadata::PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default(),
        ),
    };
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// Drives `raw` (answering metadata as `cluster`) until `done` holds.
async fn drive(raw: &mut Swarm<Raw>, cluster: u16, mut done: impl FnMut(&mut Swarm<Raw>) -> bool) {
    let run = async {
        loop {
            if done(raw) {
                return;
            }
            let ev = tokio::time::timeout(Duration::from_millis(50), raw.select_next_some()).await;
            if let Ok(SwarmEvent::Behaviour(RawEvent::Metadata(
                request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                },
            ))) = ev
            {
                let mine = metadata::Metadata {
                    cluster_id: Some(u32::from(cluster)),
                    shards: vec![0],
                };
                let _ = raw.behaviour_mut().metadata.send_response(channel, mine);
            }
        }
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .expect("raw peer done in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_relay_peer_gets_only_valid_messages_through() {
    let (a, mut a_in) = start(waku_config(CLUSTER, &[0])).await;
    let s0 = PubsubTopic::new(CLUSTER, 0).unwrap();
    let topic = gossipsub::IdentTopic::new(s0.to_string());
    let mut raw = raw_swarm(CLUSTER);
    raw.behaviour_mut().relay.subscribe(&topic).unwrap();
    raw.dial(tcp_addr(&a).await).unwrap();
    drive(&mut raw, CLUSTER, |r| {
        r.behaviour()
            .relay
            .all_peers()
            .any(|(_, t)| t.contains(&&topic.hash()))
    })
    .await;

    let t0 = topic_on(0).to_string();
    let valid = WakuMessage::new(t0.clone(), b"valid".to_vec());
    // Over the node's 150 KiB limit, under its gossip frame limit: refused by the check.
    let oversized = WakuMessage::new(t0.clone(), vec![7; relay::DEFAULT_MAX_MESSAGE_SIZE + 1024]);
    let long_meta = WakuMessage::new(t0.clone(), b"meta".to_vec()).with_meta(vec![0; 65]);
    for data in [
        vec![0xff, 0xff, 0xff],
        oversized.to_bytes(),
        valid.to_bytes(),
        long_meta.to_bytes(),
    ] {
        raw.behaviour_mut()
            .relay
            .publish(topic.clone(), data)
            .unwrap();
    }
    drive(&mut raw, CLUSTER, |_| a.counters().relay_rejected >= 3).await;
    let got = recv(&mut a_in).await;
    assert_eq!(got.message, valid);
    assert!(a_in.try_recv().is_none());
    let counters = a.counters();
    assert_eq!((counters.relay_rejected, counters.relay_delivered), (3, 1));
    assert_eq!(counters.connected_peers, 1, "a same-cluster peer stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_keeps_the_same_cluster_and_disconnects_others() {
    let (a, _a_in) = start(waku_config(CLUSTER, &[0])).await;
    let a_addr = tcp_addr(&a).await;
    let (same, _s_in) = start(waku_config(CLUSTER, &[0]).with_bootstrap(a_addr.clone())).await;
    wait_until("both admitted", || async {
        a.counters().metadata_admitted == 1 && same.counters().metadata_admitted == 1
    })
    .await;

    // Both sides gate, so whichever reads the other's answer first disconnects.
    // (Dialed once, not as bootstrap peers, which would be dialed again with backoff.)
    let (other, _o_in) = start(waku_config(CLUSTER + 1, &[0])).await;
    other.dial(a_addr.clone()).await.unwrap();
    wait_until("other cluster refused", || async {
        a.counters().metadata_refused + other.counters().metadata_refused >= 1
            && other.counters().connected_peers == 0
    })
    .await;

    // A pqmls node without Waku cannot answer metadata: disconnected too. (Each case
    // below has its own Waku node, so its counters count that case only: both sides of
    // the cross-cluster case above may count their refusal, in either order.)
    let (b, _b_in) = start(waku_config(CLUSTER, &[0])).await;
    let (plain, _) = Node::start(support::config()).await.unwrap();
    plain.dial(tcp_addr(&b).await).await.unwrap();
    wait_until("node without metadata refused", || async {
        b.counters().metadata_refused == 1 && plain.counters().connected_peers == 0
    })
    .await;

    // A raw peer answering with another cluster is dropped as well.
    let (c, _c_in) = start(waku_config(CLUSTER, &[0])).await;
    let mut raw = raw_swarm(CLUSTER + 7);
    raw.dial(tcp_addr(&c).await).unwrap();
    drive(&mut raw, CLUSTER + 7, |_| {
        c.counters().metadata_refused == 1
    })
    .await;
    drive(&mut raw, CLUSTER + 7, |r| r.connected_peers().count() == 0).await;
    assert_eq!(c.counters().metadata_admitted, 0);

    // The same-cluster peer is still there after all that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(same.counters().connected_peers, 1);
    assert_eq!(a.counters().connected_peers, 1);
    assert_eq!(a.counters().metadata_admitted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_node_answers_store_v3_queries_by_topic_time_and_hash() {
    use pqmls_transport::store;
    use pqmls_transport::waku::store::{MAX_PAGE_BYTES, QueryRequest};

    let dir = support::temp_dir("waku-store");
    let (server, _s_in) =
        start(waku_config(CLUSTER, &[0]).with_store(&dir, store::Config::default())).await;
    let server_addr = tcp_addr(&server).await;
    let (client, _c_in) = start(waku_config(CLUSTER, &[0]).with_bootstrap(server_addr)).await;
    let s0 = PubsubTopic::new(CLUSTER, 0).unwrap();
    wait_mesh(&client, s0, 1).await;
    wait_mesh(&server, s0, 1).await;

    // Twelve messages of 140 KiB on two content topics, timestamps 1..=12 s.
    let chat = topic_on(0);
    let other = (1..)
        .map(|i| ContentTopic::parse(&format!("/other{i}/1/x/proto")).unwrap())
        .find(|t| t.shard(8) == Some(0))
        .unwrap();
    let mut hashes = Vec::new();
    for i in 1..=12i64 {
        let topic = if i % 3 == 0 { &other } else { &chat };
        let m = WakuMessage::new(topic.to_string(), vec![i as u8; 140 * 1024])
            .with_timestamp(i * 1_000_000_000);
        hashes.push(client.relay_publish_message(m).await.unwrap().1);
    }
    // Ephemeral and timestamp-less messages are relayed but not archived.
    client
        .relay_publish_message(WakuMessage::new(chat.to_string(), vec![1]).with_ephemeral(true))
        .await
        .unwrap();
    client
        .relay_publish_message(WakuMessage::new(chat.to_string(), vec![2]))
        .await
        .unwrap();
    wait_until("archived", || async {
        server.counters().relay_delivered == 14
    })
    .await;
    assert_eq!(server.counters().stored, 12);

    // Everything, forward, with data: pages cut by bytes, not by the limit of 100.
    let peer = server.peer_id();
    let mut req = QueryRequest {
        request_id: "all".into(),
        include_data: true,
        pagination_forward: true,
        pagination_limit: Some(100),
        ..Default::default()
    };
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let r = client.store_query(peer, req.clone()).await.unwrap();
        pages += 1;
        assert_eq!(r.request_id, "all");
        let bytes: usize = r.messages.iter().map(prost::Message::encoded_len).sum();
        assert!(bytes <= MAX_PAGE_BYTES, "page of {bytes} bytes");
        assert!(!r.messages.is_empty());
        got.extend(r.messages.iter().map(|kv| kv.message_hash.clone().unwrap()));
        match r.pagination_cursor {
            Some(c) => req.pagination_cursor = Some(c),
            None => break,
        }
    }
    assert!(pages >= 2, "1.7 MB does not fit one page");
    assert_eq!(got, hashes.iter().map(|h| h.0.to_vec()).collect::<Vec<_>>());

    // Content topic and time range, backward, hashes only.
    let r = client
        .store_query(
            peer,
            QueryRequest {
                request_id: "chat".into(),
                pubsub_topic: Some(s0.to_string()),
                content_topics: vec![chat.to_string()],
                time_start: Some(2_000_000_000),
                time_end: Some(8_000_000_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let want: Vec<Vec<u8>> = [2, 4, 5, 7]
        .iter()
        .map(|i| hashes[i - 1].0.to_vec())
        .collect();
    assert_eq!(
        r.messages
            .iter()
            .map(|kv| kv.message_hash.clone().unwrap())
            .collect::<Vec<_>>(),
        want
    );
    assert!(r.messages.iter().all(|kv| kv.message.is_none()));

    // Lookup by hash, with data.
    let r = client
        .store_query(
            peer,
            QueryRequest {
                include_data: true,
                message_hashes: vec![hashes[10].0.to_vec(), vec![0; 32]],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].message.as_ref().unwrap().payload[0], 11);

    // A bad request is refused; a peer that is no store has no such protocol.
    assert!(matches!(
        client
            .store_query(
                peer,
                QueryRequest {
                    pubsub_topic: Some(s0.to_string()),
                    ..Default::default()
                },
            )
            .await,
        Err(Error::Refused(_))
    ));
    assert!(matches!(
        server
            .store_query(client.peer_id(), QueryRequest::default())
            .await,
        Err(Error::Request(_))
    ));
    assert_eq!(server.counters().response_bytes_in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_archives_only_what_gossipsub_took_from_its_own_publications() {
    use pqmls_transport::store;
    use pqmls_transport::waku::store::QueryRequest;

    let (server, _s_in) = start(
        waku_config(CLUSTER, &[0, 1])
            .with_store(support::temp_dir("waku-own"), store::Config::default()),
    )
    .await;
    let (client, _c_in) =
        start(waku_config(CLUSTER, &[0, 1]).with_bootstrap(tcp_addr(&server).await)).await;
    let (s0, s1) = (
        PubsubTopic::new(CLUSTER, 0).unwrap(),
        PubsubTopic::new(CLUSTER, 1).unwrap(),
    );
    for s in [s0, s1] {
        wait_mesh(&server, s, 1).await;
        wait_mesh(&client, s, 1).await;
    }

    // Published on shard 0: archived. The same bytes on shard 1 have the same gossipsub
    // message id (SHA-256 of the data), so gossipsub refuses them as a duplicate; their
    // Waku hash on shard 1 is another, and nothing was relayed on shard 1.
    let m = WakuMessage::new(topic_on(0).to_string(), b"once".to_vec()).with_timestamp(1_000);
    let on_0 = server.relay_publish_on(s0, m.clone()).await.unwrap();
    assert!(matches!(
        server.relay_publish_on(s1, m.clone()).await,
        Err(Error::Duplicate)
    ));
    let on_1 = message_hash(&s1.to_string(), &m);
    assert_ne!(on_0, on_1);
    assert_eq!(
        server.counters().stored,
        1,
        "the refused publication is not stored"
    );
    let r = client
        .store_query(
            server.peer_id(),
            QueryRequest {
                message_hashes: vec![on_0.0.to_vec(), on_1.0.to_vec()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let found: Vec<Vec<u8>> = r
        .messages
        .iter()
        .map(|kv| kv.message_hash.clone().unwrap())
        .collect();
    assert_eq!(found, vec![on_0.0.to_vec()], "served only as published");

    // A store without relay peers archives its publication, as the Nim node does, and
    // tells the caller nobody got it.
    let (alone, _a_in) = start(
        waku_config(CLUSTER, &[0])
            .with_store(support::temp_dir("waku-alone"), store::Config::default()),
    )
    .await;
    let lonely = WakuMessage::new(topic_on(0).to_string(), b"alone".to_vec()).with_timestamp(2);
    assert!(matches!(
        alone.relay_publish_on(s0, lonely).await,
        Err(Error::NoPeers)
    ));
    assert_eq!(alone.counters().stored, 1);
}

/// Writes its request bytes as they are and reads whatever comes back (up to 1 MiB).
#[derive(Debug, Clone, Copy, Default)]
struct RawBytes;

impl request_response::Codec for RawBytes {
    type Protocol = libp2p::StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &Self::Protocol, _: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        use futures::AsyncReadExt;
        let mut out = Vec::new();
        io.take(1 << 20).read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        io.write_all(&req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[derive(NetworkBehaviour)]
struct RawStoreClient {
    metadata: request_response::Behaviour<metadata::Codec>,
    store: request_response::Behaviour<RawBytes>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_survives_garbage_queries_and_still_answers() {
    use pqmls_transport::store;
    use pqmls_transport::waku::store::{PROTOCOL, QueryRequest};

    let dir = support::temp_dir("waku-store-garbage");
    let (server, _s_in) =
        start(waku_config(CLUSTER, &[0]).with_store(&dir, store::Config::default())).await;
    let addr = tcp_addr(&server).await;
    let full = request_response::ProtocolSupport::Full;
    let behaviour = RawStoreClient {
        metadata: request_response::Behaviour::with_codec(
            metadata::Codec,
            [(
                libp2p::StreamProtocol::new(metadata::PROTOCOL),
                full.clone(),
            )],
            request_response::Config::default(),
        ),
        store: request_response::Behaviour::with_codec(
            RawBytes,
            [(
                libp2p::StreamProtocol::new(PROTOCOL),
                request_response::ProtocolSupport::Outbound,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
        ),
    };
    let mut raw = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    raw.dial(addr).unwrap();
    let peer = server.peer_id();
    let valid = prost::Message::encode_length_delimited_to_vec(&QueryRequest {
        request_id: "ok".into(),
        ..Default::default()
    });
    let garbage: Vec<Vec<u8>> = vec![
        vec![0x80, 0x80, 0x80, 0x80, 0x04], // 1 GiB announced
        vec![0xff, 0xff, 0x04],             // 64 KiB + a bit announced
        vec![4, 0xff, 0xff, 0xff, 0xff],    // a malformed protobuf
        vec![100, 1, 2, 3],                 // truncated
    ];
    let run = async {
        let mut answers = 0;
        let mut failures = 0;
        let mut sent = false;
        loop {
            if !sent && raw.is_connected(&peer) {
                for g in &garbage {
                    raw.behaviour_mut().store.send_request(&peer, g.clone());
                }
                raw.behaviour_mut().store.send_request(&peer, valid.clone());
                sent = true;
            }
            match raw.select_next_some().await {
                SwarmEvent::Behaviour(RawStoreClientEvent::Metadata(
                    request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    },
                )) => {
                    let mine = metadata::Metadata {
                        cluster_id: Some(u32::from(CLUSTER)),
                        shards: vec![0],
                    };
                    let _ = raw.behaviour_mut().metadata.send_response(channel, mine);
                }
                SwarmEvent::Behaviour(RawStoreClientEvent::Store(
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    },
                )) if response.is_empty() => failures += 1, // closed without an answer
                SwarmEvent::Behaviour(RawStoreClientEvent::Store(
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    },
                )) => {
                    // The valid request gets status 200 and an empty page; the malformed
                    // protobuf 400 with request id N/A, as at the Nim node.
                    let r: pqmls_transport::waku::store::QueryResponse =
                        prost::Message::decode_length_delimited(response.as_slice()).unwrap();
                    if r.request_id == "N/A" {
                        assert_eq!(r.status_code, Some(400));
                    } else {
                        assert_eq!((r.request_id.as_str(), r.status_code), ("ok", Some(200)));
                    }
                    assert!(r.messages.is_empty() && r.pagination_cursor.is_none());
                    answers += 1;
                }
                SwarmEvent::Behaviour(RawStoreClientEvent::Store(
                    request_response::Event::OutboundFailure { .. },
                )) => failures += 1,
                _ => {}
            }
            if answers + failures == garbage.len() + 1 {
                return (answers, failures);
            }
        }
    };
    let (answers, failures) = tokio::time::timeout(TIMEOUT, run).await.unwrap();
    assert_eq!((answers, failures), (2, garbage.len() - 1));
    wait_until("unreadable requests counted", || async {
        server.counters().requests_malformed == garbage.len() as u64
    })
    .await;
    assert_eq!(server.counters().requests_served, 1);
    assert_eq!(
        server.counters().connected_peers,
        1,
        "still connected and serving"
    );
}
