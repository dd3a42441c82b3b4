//! Helpers of the Waku service tests (lightpush, filter): loopback Waku nodes, content
//! topics on a chosen shard, and a raw libp2p peer that answers metadata and sends
//! hand-made bytes on one request-response protocol.

#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, request_response, tcp, yamux};
use pqmls_transport::Node;
use pqmls_transport::node::{Config, RelayInbound};
use pqmls_transport::waku::relay::{self, Received};
use pqmls_transport::waku::{ContentTopic, PubsubTopic, metadata};
use tokio::sync::mpsc;

use crate::support::{TIMEOUT, wait_until};

/// The cluster of every test network.
pub const CLUSTER: u16 = 3;

/// A loopback Waku node of [`CLUSTER`] relaying `shards` (none: a light client), with fast
/// heartbeats, on TCP only.
pub fn waku_config(shards: &[u16]) -> Config {
    let mut relay = relay::Config::new(CLUSTER).with_shards(shards.iter().copied());
    relay.heartbeat = Duration::from_millis(100);
    let mut c = crate::support::config();
    c.listen.retain(|a| a.to_string().contains("/tcp/"));
    c.with_waku(relay)
}

/// Starts a node and takes its relay stream.
pub async fn start(c: Config) -> (Node, RelayInbound) {
    let (node, _) = Node::start(c).await.expect("node starts");
    let inbound = node.relay_inbound().expect("waku inbound");
    (node, inbound)
}

/// Waits until `node` has admitted `n` peers through the metadata gate.
pub async fn wait_admitted(node: &Node, n: u64) {
    wait_until("metadata admitted", || async {
        node.counters().metadata_admitted >= n
    })
    .await;
}

/// The `i`-th content topic (from `/t{i}-0/1/chat/proto` on) that autoshards to `shard`
/// of 8.
pub fn topic_on(shard: u16, i: usize) -> ContentTopic {
    (0..)
        .map(|j| ContentTopic::parse(&format!("/t{i}-{j}/1/chat/proto")).unwrap())
        .find(|t| t.shard(8) == Some(shard))
        .unwrap()
}

/// Shard `n` of [`CLUSTER`].
pub fn shard(n: u16) -> PubsubTopic {
    PubsubTopic::new(CLUSTER, n).unwrap()
}

/// The next relay message within the timeout.
pub async fn recv(inbound: &mut RelayInbound) -> Received {
    tokio::time::timeout(TIMEOUT, inbound.recv())
        .await
        .expect("relay message within timeout")
        .expect("node running")
}

/// Waits until `node` has `n` relay mesh peers on `shard`.
pub async fn wait_mesh(node: &Node, shard: PubsubTopic, n: usize) {
    wait_until("relay mesh", || async {
        node.relay_mesh_peers(shard).await.unwrap() >= n
    })
    .await;
}

/// What a raw peer sends: bytes as they are, and whether to keep the stream open afterwards
/// without closing its side (a sender that stalls).
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub bytes: Vec<u8>,
    pub stall: bool,
}

/// Writes its request's bytes as they are and reads whatever comes back (up to 1 MiB);
/// receives nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl request_response::Codec for RawBytes {
    type Protocol = StreamProtocol;
    type Request = RawRequest;
    type Response = Vec<u8>;

    async fn read_request<T>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
    ) -> std::io::Result<RawRequest>
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
        req: RawRequest,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        io.write_all(&req.bytes).await?;
        io.flush().await?;
        if req.stall {
            futures::future::pending::<()>().await;
        }
        Ok(())
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

/// A raw peer: answers metadata as a node of [`CLUSTER`], sends raw bytes on one protocol.
#[derive(NetworkBehaviour)]
pub struct RawClient {
    pub metadata: request_response::Behaviour<metadata::Codec>,
    pub raw: request_response::Behaviour<RawBytes>,
}

/// A swarm on 127.0.0.1 with `behaviour`, TCP, Noise and yamux.
pub fn swarm<B: NetworkBehaviour>(behaviour: B) -> Swarm<B> {
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

/// Makes `s` listen on a random TCP port of 127.0.0.1; returns the address once bound.
pub async fn listen<B: NetworkBehaviour>(s: &mut Swarm<B>) -> Multiaddr {
    s.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            return address;
        }
    }
}

/// The metadata behaviour of a raw peer.
pub fn metadata_behaviour() -> request_response::Behaviour<metadata::Codec> {
    request_response::Behaviour::with_codec(
        metadata::Codec,
        [(
            StreamProtocol::new(metadata::PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default(),
    )
}

/// Our metadata, as a raw peer of [`CLUSTER`] answers it.
pub fn our_metadata() -> metadata::Metadata {
    metadata::Metadata {
        cluster_id: Some(u32::from(CLUSTER)),
        shards: vec![0],
    }
}

/// What became of a raw request.
#[derive(Debug)]
pub enum RawOutcome {
    /// The bytes the service answered (empty if it closed the stream without a word).
    Answer(Vec<u8>),
    /// The request failed (reset stream, timeout).
    Failed,
}

/// A raw client of one protocol on its own task, so it keeps running while the test awaits
/// nodes: requests are numbered in the order sent, and outcomes come back with the number.
pub struct RawPeer {
    requests: mpsc::UnboundedSender<RawRequest>,
    outcomes: mpsc::UnboundedReceiver<(usize, RawOutcome)>,
    sent: usize,
}

impl RawPeer {
    /// Starts a raw client of `protocol` (requests time out after `timeout`) talking to
    /// `server` at `addr`.
    pub fn spawn(
        protocol: &'static str,
        timeout: Duration,
        server: PeerId,
        addr: Multiaddr,
    ) -> Self {
        let mut s = swarm(RawClient {
            metadata: metadata_behaviour(),
            raw: request_response::Behaviour::with_codec(
                RawBytes,
                [(
                    StreamProtocol::new(protocol),
                    request_response::ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(timeout),
            ),
        });
        s.dial(addr).unwrap();
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<RawRequest>();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut ids = std::collections::HashMap::new();
            loop {
                tokio::select! {
                    req = req_rx.recv() => match req {
                        Some(req) => {
                            let id = s.behaviour_mut().raw.send_request(&server, req);
                            let n = ids.len();
                            ids.insert(id, n);
                        }
                        None => return,
                    },
                    ev = s.select_next_some() => {
                        let (id, outcome) = match ev {
                            SwarmEvent::Behaviour(RawClientEvent::Metadata(
                                request_response::Event::Message {
                                    message: request_response::Message::Request { channel, .. },
                                    ..
                                },
                            )) => {
                                let _ = s.behaviour_mut().metadata.send_response(channel, our_metadata());
                                continue;
                            }
                            SwarmEvent::Behaviour(RawClientEvent::Raw(
                                request_response::Event::Message {
                                    message: request_response::Message::Response { request_id, response },
                                    ..
                                },
                            )) => (request_id, RawOutcome::Answer(response)),
                            SwarmEvent::Behaviour(RawClientEvent::Raw(
                                request_response::Event::OutboundFailure { request_id, .. },
                            )) => (request_id, RawOutcome::Failed),
                            _ => continue,
                        };
                        if let Some(n) = ids.get(&id) {
                            let _ = out_tx.send((*n, outcome));
                        }
                    }
                }
            }
        });
        Self {
            requests: req_tx,
            outcomes: out_rx,
            sent: 0,
        }
    }

    /// Sends `bytes` (kept open without closing if `stall`); returns the request's number.
    pub fn send(&mut self, bytes: Vec<u8>, stall: bool) -> usize {
        self.requests.send(RawRequest { bytes, stall }).unwrap();
        self.sent += 1;
        self.sent - 1
    }

    /// The next outcome, within the timeout.
    pub async fn next(&mut self) -> (usize, RawOutcome) {
        tokio::time::timeout(TIMEOUT, self.outcomes.recv())
            .await
            .expect("raw outcome in time")
            .expect("raw peer running")
    }
}
