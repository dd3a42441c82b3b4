//! The load scenario, shared by the `load` example (full size) and a CI test (small size).
//!
//! `nodes` nodes on 127.0.0.1, node `i` dialling nodes `i - 1` and `i - 2` (a sparse graph,
//! not a full mesh), all subscribed to one topic. The nodes take turns publishing
//! `small_messages` payloads of `small_size` bytes, with `large_messages` payloads of
//! `large_size` bytes spread among them. At most `window` messages are in flight (published
//! but not yet delivered everywhere). Every payload carries its sequence number and
//! publication time, so receivers measure latency and detect loss or duplication.
//!
//! Over [`Protocol::Pqmls`] (pqmls gossip on a `/pqmls/group/1/…` topic) or
//! [`Protocol::WakuRelay`] (Waku relay nodes of one cluster, every payload a `WakuMessage`
//! on shard 0, through the metadata gate; Waku's message limit is 150 KiB, so large
//! payloads must stay under it).

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pqmls_transport::node::Config;
use pqmls_transport::waku::{PubsubTopic, WakuMessage, relay};
use pqmls_transport::{Error, Node, Topic};

/// The wire protocol a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// pqmls gossip (`/pqmls/group/1/…` topics).
    Pqmls,
    /// Waku relay (`/vac/waku/relay/2.0.0`), shard 0 of cluster [`WAKU_CLUSTER`].
    WakuRelay,
}

/// The cluster of a Waku run.
pub const WAKU_CLUSTER: u16 = 3;
/// The content topic of a Waku run's messages.
const WAKU_CONTENT_TOPIC: &str = "/pqmls-load/1/scenario/proto";

/// Size of the scenario.
#[derive(Debug, Clone)]
pub struct Params {
    /// Number of nodes.
    pub nodes: usize,
    /// Number of small messages.
    pub small_messages: usize,
    /// Size of a small message in bytes (at least 16).
    pub small_size: usize,
    /// Number of large messages.
    pub large_messages: usize,
    /// Size of a large message in bytes.
    pub large_size: usize,
    /// Most messages in flight at once.
    pub window: usize,
    /// The whole run fails after this long.
    pub deadline: Duration,
    /// Gossip heartbeat of every node.
    pub heartbeat: Duration,
    /// The wire protocol.
    pub protocol: Protocol,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Deliveries expected: every message at every node but its publisher.
    pub expected: u64,
    /// Deliveries seen.
    pub delivered: u64,
    /// Deliveries of a message a node had already received.
    pub duplicates: u64,
    /// From the first publication to the last delivery.
    pub elapsed: Duration,
    /// Latency percentiles of small messages (publication to delivery).
    pub small_p50: Duration,
    /// 99th percentile, small messages.
    pub small_p99: Duration,
    /// Median latency of large messages.
    pub large_p50: Duration,
    /// 99th percentile, large messages.
    pub large_p99: Duration,
    /// Payload bytes delivered in total.
    pub delivered_bytes: u64,
    /// Peak resident memory of the whole process (all nodes), in KiB, if known.
    pub peak_rss_kib: Option<u64>,
    /// Times gossipsub reported a peer too slow to take its messages (messages abandoned
    /// in a send queue), summed over the nodes.
    pub slow_peers: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "delivered {}/{} ({:.2}%), duplicates {}",
            self.delivered,
            self.expected,
            100.0 * self.delivered as f64 / self.expected.max(1) as f64,
            self.duplicates
        )?;
        writeln!(
            f,
            "elapsed {:.2} s, {:.0} deliveries/s, {:.1} MiB/s delivered payload",
            secs,
            self.delivered as f64 / secs,
            self.delivered_bytes as f64 / secs / (1024.0 * 1024.0)
        )?;
        writeln!(
            f,
            "small latency p50 {:.1} ms, p99 {:.1} ms; large latency p50 {:.1} ms, p99 {:.1} ms",
            ms(self.small_p50),
            ms(self.small_p99),
            ms(self.large_p50),
            ms(self.large_p99)
        )?;
        match self.peak_rss_kib {
            Some(k) => writeln!(f, "peak RSS {:.1} MiB (whole process)", k as f64 / 1024.0)?,
            None => writeln!(f, "peak RSS unknown")?,
        }
        write!(f, "slow-peer reports {}", self.slow_peers)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Latencies and duplicates seen by all receivers.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    duplicates: AtomicU64,
    last_delivery_ns: AtomicU64,
    small: Mutex<Vec<Duration>>,
    large: Mutex<Vec<Duration>>,
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Records one delivery of `data` seen by a receiver that has seen `seen`.
fn record(tally: &Tally, seen: &mut HashSet<u64>, data: &[u8], now_ns: u64, large_size: usize) {
    if data.len() < 16 {
        return;
    }
    let seq = u64::from_be_bytes(data[..8].try_into().unwrap_or_default());
    let sent = u64::from_be_bytes(data[8..16].try_into().unwrap_or_default());
    if !seen.insert(seq) {
        tally.duplicates.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let lat = Duration::from_nanos(now_ns.saturating_sub(sent));
    let list = if data.len() == large_size {
        &tally.large
    } else {
        &tally.small
    };
    list.lock().unwrap_or_else(|e| e.into_inner()).push(lat);
    tally
        .delivered_bytes
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    tally.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
    tally.delivered.fetch_add(1, Ordering::Relaxed);
}

fn payload(seq: u64, sent_ns: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0xa5u8; size.max(16)];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    v
}

/// Runs the scenario.
///
/// # Errors
///
/// A description of what went wrong: a node failed, or the deadline passed (with the
/// deliveries seen so far).
pub async fn run(p: Params) -> Result<Report, String> {
    let start_deadline = Instant::now() + p.deadline;
    let topic = Topic::from_group_id(b"load scenario");
    let shard0 = PubsubTopic::new(WAKU_CLUSTER, 0).ok_or("no shard 0")?;
    let mut nodes: Vec<Node> = Vec::new();
    let mut degrees = vec![0usize; p.nodes];
    let tally = Arc::new(Tally::default());
    let base = Instant::now();
    let mut receivers = Vec::new();
    for i in 0..p.nodes {
        let mut c = Config::loopback();
        c.gossip_heartbeat = p.heartbeat;
        c.limits.inbound_queue = 65_536;
        for back in 1..=2 {
            if i >= back {
                let addrs = nodes[i - back]
                    .listen_addrs()
                    .await
                    .map_err(|e| e.to_string())?;
                let tcp = addrs
                    .into_iter()
                    .find(|a| a.to_string().contains("/tcp/"))
                    .ok_or("no tcp address")?;
                c = c.with_bootstrap(tcp);
                degrees[i] += 1;
                degrees[i - back] += 1;
            }
        }
        let waku = p.protocol == Protocol::WakuRelay;
        if waku {
            let mut relay = relay::Config::new(WAKU_CLUSTER).with_shards([0]);
            relay.heartbeat = p.heartbeat;
            c = c.with_waku(relay);
        }
        let (node, mut inbound) = Node::start(c).await.map_err(|e| e.to_string())?;
        let tally = tally.clone();
        let large_size = p.large_size;
        if waku {
            let mut relay_in = node.relay_inbound().ok_or("no relay inbound")?;
            receivers.push(tokio::spawn(async move {
                let mut seen = HashSet::new();
                while let Some(r) = relay_in.recv().await {
                    let now_ns = base.elapsed().as_nanos() as u64;
                    record(&tally, &mut seen, &r.message.payload, now_ns, large_size);
                }
            }));
        } else {
            node.subscribe(&topic).await.map_err(|e| e.to_string())?;
            receivers.push(tokio::spawn(async move {
                let mut seen = HashSet::new();
                while let Some(m) = inbound.recv().await {
                    let now_ns = base.elapsed().as_nanos() as u64;
                    record(&tally, &mut seen, &m.data, now_ns, large_size);
                }
            }));
        }
        nodes.push(node);
    }
    // Wait for every node to have all its neighbours in the mesh.
    for (i, node) in nodes.iter().enumerate() {
        loop {
            let mesh = match p.protocol {
                Protocol::Pqmls => node.mesh_peers(&topic).await,
                Protocol::WakuRelay => node.relay_mesh_peers(shard0).await,
            }
            .map_err(|e| e.to_string())?;
            if mesh >= degrees[i] {
                break;
            }
            if Instant::now() > start_deadline {
                return Err(format!("node {i}: mesh has {mesh} of {} peers", degrees[i]));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let total = p.small_messages + p.large_messages;
    let receivers_per_message = (p.nodes as u64).saturating_sub(1);
    let expected = total as u64 * receivers_per_message;
    let large_every = total
        .checked_div(p.large_messages)
        .map_or(usize::MAX, |n| n.max(1));
    let first_publish_ns = base.elapsed().as_nanos() as u64;
    let (mut small_left, mut large_left) = (p.small_messages, p.large_messages);
    let mut failure = None;
    'publish: for k in 0..total {
        // Flow control: at most `window` messages not yet delivered everywhere.
        let need = (k.saturating_sub(p.window) as u64) * receivers_per_message;
        while tally.delivered.load(Ordering::Relaxed) < need {
            if Instant::now() > start_deadline {
                failure = Some("deadline passed while publishing".to_string());
                break 'publish;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let large = large_left > 0 && (k % large_every == large_every - 1 || small_left == 0);
        let size = if large {
            large_left -= 1;
            p.large_size
        } else {
            small_left -= 1;
            p.small_size
        };
        let node = &nodes[k % p.nodes];
        loop {
            let data = payload(k as u64, base.elapsed().as_nanos() as u64, size);
            let published = match p.protocol {
                Protocol::Pqmls => node.publish(&topic, data).await.map(|_| ()),
                Protocol::WakuRelay => node
                    .relay_publish_on(shard0, WakuMessage::new(WAKU_CONTENT_TOPIC, data))
                    .await
                    .map(|_| ()),
            };
            match published {
                Ok(()) => break,
                Err(Error::QueueFull) if Instant::now() < start_deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    failure = Some(format!("publish {k} failed: {e}"));
                    break 'publish;
                }
            }
        }
    }
    while failure.is_none() && tally.delivered.load(Ordering::Relaxed) < expected {
        if Instant::now() > start_deadline {
            failure = Some("deadline passed while waiting for deliveries".to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Catch late duplicates for a moment before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = tally.last_delivery_ns.load(Ordering::Relaxed);
    let mut small = std::mem::take(&mut *tally.small.lock().unwrap_or_else(|e| e.into_inner()));
    let mut large = std::mem::take(&mut *tally.large.lock().unwrap_or_else(|e| e.into_inner()));
    let report = Report {
        expected,
        delivered: tally.delivered.load(Ordering::Relaxed),
        duplicates: tally.duplicates.load(Ordering::Relaxed),
        elapsed: Duration::from_nanos(last.saturating_sub(first_publish_ns)),
        small_p50: percentile(&mut small, 0.50),
        small_p99: percentile(&mut small, 0.99),
        large_p50: percentile(&mut large, 0.50),
        large_p99: percentile(&mut large, 0.99),
        delivered_bytes: tally.delivered_bytes.load(Ordering::Relaxed),
        peak_rss_kib: peak_rss_kib(),
        slow_peers: nodes.iter().map(|n| n.counters().slow_peers).sum(),
    };
    for node in nodes {
        let _ = node.shutdown().await;
    }
    for r in receivers {
        let _ = r.await;
    }
    match failure {
        None => Ok(report),
        Some(f) => Err(format!("{f}\n{report}")),
    }
}
