//! Waku measurements on loopback (issue 13 item 6): delivery time of segmented payloads
//! over Waku relay, and store v3 query throughput.
//!
//! ```text
//! cargo build --release -p pqmls-transport --example waku_numbers
//! ./target/release/examples/waku_numbers segments [nodes rounds line|mesh]
//! ./target/release/examples/waku_numbers store [messages topics payload secs]
//! ```
//!
//! Defaults: `segments 5 10 line`, `store 10000 4 1024 5`.
//!
//! `segments`: `nodes` Waku relay nodes in one process on 127.0.0.1 (TCP/Noise/Yamux), one
//! shard, the Nim node's relay settings (heartbeat 1 s, mesh 6, flood publishing). In a
//! `line` node `i` dials node `i-1`, so node `k` is `k` hops from the publisher (node 0);
//! in a `mesh` every node dials every earlier one. Node 0 publishes one payload at a time
//! and waits until every other node has delivered it (or 60 s), then pauses 100 ms. The
//! cases are interleaved within each round, so load on the machine hits them alike:
//! a 100 KiB payload as one `WakuMessage`, and 1 MiB and 4 MiB payloads segmented
//! (`waku::segmentation`, 100 KiB segments), without and with parity (rate 0.125), and
//! with parity while the publisher withholds data segment 0, so every receiver must
//! recover it with Reed-Solomon; and, for comparison on the same nodes and sockets, 1 MiB
//! and 4 MiB payloads as one message of the crate's own gossip (`Node::publish`, 4 MiB
//! limit, same 1 s heartbeat). The clock starts before the payload is segmented (parity
//! encoding included; "published" is when the publisher's node task had taken the last
//! message) and stops when a receiver's reassembler returns the verified
//! payload. Every `WakuMessage` is checked against the relay's 150 KiB limit before it
//! is published, and every receiver records the largest one it got.
//!
//! `store`: a store node whose SQLite archive is filled before it starts with `messages`
//! messages of `payload` bytes, round robin over `topics` content topics on shard 0,
//! timestamps 10 ms apart ending a minute ago; its per-peer store rate limit is off (the
//! default, 100 queries a minute per peer as the Nim node, would cap one client at under
//! 2 a second). 1, 4 and 8 light clients (separate nodes, each dialling the store) ask
//! queries in closed loops, one outstanding each, for `secs` seconds after a 1 s warm-up:
//! - `range`: a random content topic and a time range holding 400 messages (100 per topic
//!   with 4 topics), with data, forward, no page size (the store's default, 20), paged
//!   with the cursor to the end; every page counts as one query;
//! - `hash`: a lookup of one random stored hash, with data;
//! - `hash20`: a lookup of 20 random stored hashes, with data.
//!
//! Prints queries per second, latency percentiles and the sizes of the responses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use pqmls_transport::node::{Config, RateLimits};
use pqmls_transport::waku::segmentation::{self, Reassembler, SegmentMessage};
use pqmls_transport::waku::store::{Archive, QueryRequest};
use pqmls_transport::waku::{PubsubTopic, WakuMessage, message_hash, relay};
use pqmls_transport::{Error, Node, Topic, store};
use prost::Message as _;
use tokio::sync::mpsc;

const CLUSTER: u16 = 3;
const WHOLE_TOPIC: &str = "/pqmls-bench/1/whole/proto";
const SEGMENT_TOPIC: &str = "/pqmls-bench/1/segment/proto";
const KIB: usize = 1024;

fn arg(n: usize) -> Option<String> {
    std::env::args().nth(n)
}

fn num(n: usize, default: usize) -> usize {
    arg(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn shard0() -> PubsubTopic {
    PubsubTopic {
        cluster: CLUSTER,
        shard: 0,
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A loopback Waku node on TCP only; `shards` empty makes a light client.
fn waku_config(shards: &[u16]) -> Config {
    let mut c = Config::loopback();
    c.listen
        .retain(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))));
    c.with_waku(relay::Config::new(CLUSTER).with_shards(shards.iter().copied()))
}

async fn tcp_addr(node: &Node) -> Result<Multiaddr, String> {
    node.listen_addrs()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .ok_or_else(|| "no TCP listen address".to_string())
}

/// Percentile `p` (0..=100) of sorted `v`, nearest rank.
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Deterministic filler, different for every message.
fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    size: usize,
    segmented: bool,
    parity: bool,
    withhold_first: bool,
    /// On the crate's own gossip (`Node::publish`, one message) instead of Waku relay.
    gossip: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "100 KiB, one message",
        size: 100 * KIB,
        segmented: false,
        parity: false,
        withhold_first: false,
        gossip: false,
    },
    Case {
        name: "1 MiB, segmented",
        size: 1024 * KIB,
        segmented: true,
        parity: false,
        withhold_first: false,
        gossip: false,
    },
    Case {
        name: "1 MiB, + parity",
        size: 1024 * KIB,
        segmented: true,
        parity: true,
        withhold_first: false,
        gossip: false,
    },
    Case {
        name: "1 MiB, + parity, segment 0 withheld",
        size: 1024 * KIB,
        segmented: true,
        parity: true,
        withhold_first: true,
        gossip: false,
    },
    Case {
        name: "4 MiB, segmented",
        size: 4096 * KIB,
        segmented: true,
        parity: false,
        withhold_first: false,
        gossip: false,
    },
    Case {
        name: "4 MiB, + parity",
        size: 4096 * KIB,
        segmented: true,
        parity: true,
        withhold_first: false,
        gossip: false,
    },
    Case {
        name: "4 MiB, + parity, segment 0 withheld",
        size: 4096 * KIB,
        segmented: true,
        parity: true,
        withhold_first: true,
        gossip: false,
    },
    Case {
        name: "1 MiB, pqmls gossip, one message",
        size: 1024 * KIB,
        segmented: false,
        parity: false,
        withhold_first: false,
        gossip: true,
    },
    Case {
        name: "4 MiB, pqmls gossip, one message",
        size: 4096 * KIB,
        segmented: false,
        parity: false,
        withhold_first: false,
        gossip: true,
    },
];

/// What one case accumulated over the rounds.
#[derive(Default)]
struct Tally {
    /// Per receiver (index = node - 1), delivery latencies in ms.
    per_node: Vec<Vec<f64>>,
    /// Latency of the last receiver of each message, ms.
    all: Vec<f64>,
    /// Time to build the `WakuMessage`s (segmenting, parity), ms.
    encode: Vec<f64>,
    /// Time until the publisher's node had taken the last of them, ms.
    handed: Vec<f64>,
    /// Messages and encoded bytes published per payload.
    messages: usize,
    bytes: usize,
    largest: usize,
    lost: usize,
}

/// A reassembled delivery: (node, sequence number, when, length).
type Delivery = (usize, u64, Instant, usize);

async fn publish(node: &Node, m: WakuMessage) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match node.relay_publish_on(shard0(), m.clone()).await {
            Ok(_) => return Ok(()),
            Err(Error::QueueFull) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn segments() -> Result<(), String> {
    let n = num(2, 5).max(2);
    let rounds = num(3, 10).max(1);
    let mesh = match arg(4).as_deref() {
        None | Some("line") => false,
        Some("mesh") => true,
        Some(other) => return Err(format!("unknown topology {other}: line or mesh")),
    };
    println!(
        "segments: {n} nodes in a {}, {rounds} rounds",
        if mesh { "mesh" } else { "line" }
    );
    let largest_seen = Arc::new(AtomicUsize::new(0));
    let topic = Topic::from_group_id(b"waku_numbers");
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let mut nodes: Vec<Node> = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    for i in 0..n {
        let (node, mut gossip_in) = Node::start(waku_config(&[0]))
            .await
            .map_err(|e| e.to_string())?;
        node.subscribe(&topic).await.map_err(|e| e.to_string())?;
        let mut inbound = node.relay_inbound().ok_or("no relay inbound")?;
        let dials: Vec<usize> = if mesh {
            (0..i).collect()
        } else {
            i.checked_sub(1).into_iter().collect()
        };
        for &j in &dials {
            node.dial(addrs[j].clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        addrs.push(tcp_addr(&node).await?);
        if i > 0 {
            let gossip_tx = tx.clone();
            tokio::spawn(async move {
                while let Some(m) = gossip_in.recv().await {
                    let at = Instant::now();
                    let seq = m
                        .data
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(u64::MAX, u64::from_le_bytes);
                    if gossip_tx.send((i, seq, at, m.data.len())).is_err() {
                        break;
                    }
                }
            });
            let tx = tx.clone();
            let largest_seen = largest_seen.clone();
            tokio::spawn(async move {
                let mut reassembler = Reassembler::new(segmentation::Config::default());
                while let Some(r) = inbound.recv().await {
                    largest_seen.fetch_max(r.message.encoded_len(), Ordering::Relaxed);
                    let whole = if r.message.content_topic == WHOLE_TOPIC {
                        Some(r.message.payload)
                    } else {
                        match reassembler.push(&r.message.payload, Instant::now()) {
                            Ok(p) => p,
                            Err(e) => {
                                eprintln!("node {i}: segment refused: {e}");
                                None
                            }
                        }
                    };
                    if let Some(p) = whole {
                        let at = Instant::now();
                        let seq = p
                            .get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map_or(u64::MAX, u64::from_le_bytes);
                        if tx.send((i, seq, at, p.len())).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        nodes.push(node);
    }
    // Every node has its neighbours in its relay mesh.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, node) in nodes.iter().enumerate() {
        let want = if mesh {
            (n - 1).min(6)
        } else if i == 0 || i == n - 1 {
            1
        } else {
            2
        };
        while node
            .relay_mesh_peers(shard0())
            .await
            .map_err(|e| e.to_string())?
            < want
            || node.mesh_peers(&topic).await.map_err(|e| e.to_string())? < want
        {
            if Instant::now() > deadline {
                return Err(format!("node {i}: relay mesh incomplete"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("mesh formed");

    let mut tallies: Vec<Tally> = CASES
        .iter()
        .map(|_| Tally {
            per_node: vec![Vec::new(); n - 1],
            ..Tally::default()
        })
        .collect();
    let mut seq = 0u64;
    for round in 0..rounds {
        for (c, case) in CASES.iter().enumerate() {
            seq += 1;
            let data = payload(seq, case.size);
            let start = Instant::now();
            if case.gossip {
                let t = &mut tallies[c];
                t.messages = 1;
                t.bytes = data.len();
                let deadline = start + Duration::from_secs(30);
                loop {
                    match nodes[0].publish(&topic, data.clone()).await {
                        Ok(_) => break,
                        Err(Error::QueueFull) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                t.handed.push(start.elapsed().as_secs_f64() * 1e3);
            }
            let now = now_nanos();
            let messages: Vec<WakuMessage> = if case.gossip {
                Vec::new()
            } else if case.segmented {
                let mut config = segmentation::Config::default();
                if !case.parity {
                    config.parity_rate = 0.0;
                }
                segmentation::segment(&data, &config)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|s| {
                        !(case.withhold_first
                            && SegmentMessage::decode(s.as_slice())
                                .is_ok_and(|m| !m.is_parity && m.data_segment_index == 0))
                    })
                    .map(|s| WakuMessage::new(SEGMENT_TOPIC, s).with_timestamp(now))
                    .collect()
            } else {
                vec![WakuMessage::new(WHOLE_TOPIC, data).with_timestamp(now)]
            };
            let encoded = start.elapsed();
            let t = &mut tallies[c];
            if !case.gossip {
                t.encode.push(encoded.as_secs_f64() * 1e3);
                t.messages = messages.len();
                t.bytes = messages.iter().map(WakuMessage::encoded_len).sum();
            }
            for m in messages {
                let len = m.encoded_len();
                if len > relay::DEFAULT_MAX_MESSAGE_SIZE {
                    return Err(format!("{}: a message of {len} bytes", case.name));
                }
                t.largest = t.largest.max(len);
                publish(&nodes[0], m).await?;
            }
            if !case.gossip {
                t.handed.push(start.elapsed().as_secs_f64() * 1e3);
            }
            let mut got: HashMap<usize, f64> = HashMap::new();
            let wait_until = start + Duration::from_secs(60);
            while got.len() < n - 1 {
                match tokio::time::timeout_at(wait_until.into(), rx.recv()).await {
                    Ok(Some((node, s, at, len))) if s == seq => {
                        if len != case.size {
                            return Err(format!("node {node}: {len} bytes for {}", case.size));
                        }
                        got.insert(node, (at - start).as_secs_f64() * 1e3);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("receivers stopped".into()),
                    Err(_) => break,
                }
            }
            t.lost += n - 1 - got.len();
            for (node, ms) in &got {
                t.per_node[node - 1].push(*ms);
            }
            if got.len() == n - 1 {
                t.all.push(got.values().copied().fold(0.0, f64::max));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }

    println!(
        "\n| payload | messages (bytes) | encode p50 | published p50 | every receiver p50 / max | last receiver p50 / max | lost | per-receiver p50 (node 1..{}) |",
        n - 1
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (case, t) in CASES.iter().zip(&tallies) {
        let every = sorted(t.per_node.iter().flatten().copied().collect());
        let all = sorted(t.all.clone());
        let per: Vec<String> = t
            .per_node
            .iter()
            .map(|v| format!("{:.1}", pct(&sorted(v.clone()), 50.0)))
            .collect();
        println!(
            "| {} | {} ({:.2} MiB) | {} | {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {} | {} |",
            case.name,
            t.messages,
            t.bytes as f64 / (1024.0 * 1024.0),
            if t.encode.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1} ms", pct(&sorted(t.encode.clone()), 50.0))
            },
            pct(&sorted(t.handed.clone()), 50.0),
            pct(&every, 50.0),
            pct(&every, 100.0),
            pct(&all, 50.0),
            pct(&all, 100.0),
            t.lost,
            per.join(" / "),
        );
    }
    let published = tallies.iter().map(|t| t.largest).max().unwrap_or(0);
    let seen = largest_seen.load(Ordering::Relaxed);
    println!(
        "\nlargest WakuMessage published: {published} bytes, received: {seen} bytes (limit {})",
        relay::DEFAULT_MAX_MESSAGE_SIZE
    );
    for node in nodes {
        node.shutdown().await.map_err(|e| e.to_string())?;
    }
    let lost: usize = tallies.iter().map(|t| t.lost).sum();
    if lost > 0 {
        return Err(format!("{lost} deliveries missing"));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    Range,
    Hash,
    Hash20,
}

/// What the clients of one cell counted.
#[derive(Default)]
struct QueryTally {
    latencies: Vec<f64>,
    response_bytes: u64,
    entries: u64,
    errors: u64,
}

struct Fill {
    hashes: Vec<[u8; 32]>,
    topics: Vec<String>,
    /// Timestamp of message `i` is `t0 + i * step`.
    t0: i64,
    step: i64,
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

async fn client_loop(
    client: Node,
    server: libp2p::PeerId,
    kind: Query,
    fill: Arc<Fill>,
    seed: u64,
    warm_until: Instant,
    stop_at: Instant,
) -> QueryTally {
    let mut t = QueryTally::default();
    let mut x = seed | 1;
    let n = fill.hashes.len();
    let window = 400usize.min(n);
    let mut id = 0u64;
    while Instant::now() < stop_at {
        let mut pending_range: Option<QueryRequest> = None;
        loop {
            id += 1;
            let request = match (kind, pending_range.take()) {
                (Query::Range, Some(r)) => r,
                (Query::Range, None) => {
                    let topic = (xorshift(&mut x) as usize) % fill.topics.len();
                    let first = (xorshift(&mut x) as usize) % (n - window + 1);
                    QueryRequest {
                        request_id: id.to_string(),
                        include_data: true,
                        pubsub_topic: Some(shard0().to_string()),
                        content_topics: vec![fill.topics[topic].clone()],
                        time_start: Some(fill.t0 + first as i64 * fill.step),
                        time_end: Some(fill.t0 + (first + window) as i64 * fill.step),
                        pagination_forward: true,
                        ..QueryRequest::default()
                    }
                }
                (Query::Hash | Query::Hash20, _) => {
                    let k = if kind == Query::Hash { 1 } else { 20 };
                    QueryRequest {
                        request_id: id.to_string(),
                        include_data: true,
                        message_hashes: (0..k)
                            .map(|_| fill.hashes[(xorshift(&mut x) as usize) % n].to_vec())
                            .collect(),
                        ..QueryRequest::default()
                    }
                }
            };
            let start = Instant::now();
            let result = client.store_query(server, request.clone()).await;
            let done = Instant::now();
            let measured = start >= warm_until && done <= stop_at;
            match result {
                Ok(r) => {
                    if measured {
                        t.latencies.push((done - start).as_secs_f64() * 1e3);
                        t.response_bytes += r.encoded_len() as u64;
                        t.entries += r.messages.len() as u64;
                    }
                    if kind == Query::Range
                        && let Some(c) = r.pagination_cursor
                    {
                        pending_range = Some(QueryRequest {
                            pagination_cursor: Some(c),
                            request_id: (id + 1).to_string(),
                            ..request
                        });
                    }
                }
                Err(e) => {
                    if measured {
                        t.errors += 1;
                    }
                    eprintln!("query failed: {e}");
                }
            }
            if pending_range.is_none() || Instant::now() >= stop_at {
                break;
            }
        }
    }
    t
}

async fn store_run() -> Result<(), String> {
    let messages = num(2, 10_000).max(1000);
    let topics = num(3, 4).max(1);
    let size = num(4, 1024).max(8);
    let secs = num(5, 5).max(1) as u64;
    println!(
        "store: {messages} messages of {size} bytes on {topics} content topics, {secs} s per cell"
    );

    let dir = std::env::temp_dir().join(format!(
        "pqmls-waku-numbers-{}-{}",
        std::process::id(),
        now_nanos()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let topic_names: Vec<String> = (0..topics)
        .map(|t| format!("/pqmls-bench/1/topic-{t}/proto"))
        .collect();
    let step = 10_000_000i64; // 10 ms
    let t0 = now_nanos() - 60_000_000_000 - messages as i64 * step;
    let shard = shard0().to_string();
    let mut hashes = Vec::with_capacity(messages);
    let fill_start = Instant::now();
    {
        let archive = Archive::open(&dir).map_err(|e| e.to_string())?;
        for i in 0..messages {
            let m = WakuMessage::new(topic_names[i % topics].clone(), payload(i as u64, size))
                .with_timestamp(t0 + i as i64 * step);
            let h = message_hash(&shard, &m);
            archive.insert(&shard, &h, &m).map_err(|e| e.to_string())?;
            hashes.push(h.0);
        }
    }
    println!(
        "archive filled in {:.1} s ({} bytes on disk with its WAL)",
        fill_start.elapsed().as_secs_f64(),
        std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>()
    );
    let fill = Arc::new(Fill {
        hashes,
        topics: topic_names,
        t0,
        step,
    });

    let mut server_config = waku_config(&[0]).with_store(&dir, store::Config::default());
    server_config.limits.rate_limits = RateLimits::unlimited();
    let (server, _) = Node::start(server_config)
        .await
        .map_err(|e| e.to_string())?;
    let server_addr = tcp_addr(&server).await?;
    let max_clients = 8;
    let mut clients = Vec::new();
    for _ in 0..max_clients {
        let (client, _) = Node::start(waku_config(&[]).with_bootstrap(server_addr.clone()))
            .await
            .map_err(|e| e.to_string())?;
        clients.push(client);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.counters().metadata_admitted < max_clients as u64 {
        if Instant::now() > deadline {
            return Err("clients not admitted".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "\n| query | clients | queries/s | latency p50 / p99 / max | entries per response | response bytes (mean) | errors |"
    );
    println!("|---|---|---|---|---|---|---|");
    let busy_before = server.counters().requests_busy;
    let counter = Arc::new(AtomicU64::new(0));
    for kind in [Query::Range, Query::Hash, Query::Hash20] {
        for c in [1usize, 4, 8] {
            let warm_until = Instant::now() + Duration::from_secs(1);
            let stop_at = warm_until + Duration::from_secs(secs);
            let tasks: Vec<_> = clients[..c]
                .iter()
                .map(|client| {
                    let seed = counter.fetch_add(1, Ordering::Relaxed) + 0x1234_5678;
                    tokio::spawn(client_loop(
                        client.clone(),
                        server.peer_id(),
                        kind,
                        fill.clone(),
                        seed,
                        warm_until,
                        stop_at,
                    ))
                })
                .collect();
            let mut all = QueryTally::default();
            for task in tasks {
                let t = task.await.map_err(|e| e.to_string())?;
                all.latencies.extend(t.latencies);
                all.response_bytes += t.response_bytes;
                all.entries += t.entries;
                all.errors += t.errors;
            }
            let q = all.latencies.len().max(1) as f64;
            let lat = sorted(all.latencies.clone());
            println!(
                "| {} | {c} | {:.0} | {:.2} / {:.2} / {:.2} ms | {:.1} | {:.0} | {} |",
                match kind {
                    Query::Range => "topic + time range, pages of 20",
                    Query::Hash => "1 hash",
                    Query::Hash20 => "20 hashes",
                },
                all.latencies.len() as f64 / secs as f64,
                pct(&lat, 50.0),
                pct(&lat, 99.0),
                pct(&lat, 100.0),
                all.entries as f64 / q,
                all.response_bytes as f64 / q,
                all.errors,
            );
        }
    }
    println!(
        "\nstore answered 503 (busy) {} times",
        server.counters().requests_busy - busy_before
    );
    for client in clients {
        client.shutdown().await.map_err(|e| e.to_string())?;
    }
    server.shutdown().await.map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    match arg(1).as_deref() {
        Some("segments") => segments().await,
        Some("store") => store_run().await,
        _ => Err("usage: waku_numbers segments [nodes rounds line|mesh] | store [messages topics payload secs]".into()),
    }
}
