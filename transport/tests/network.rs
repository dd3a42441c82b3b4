//! Real libp2p swarms on 127.0.0.1: gossip over a line of nodes, large payloads, store
//! history across restarts, the directory, and a small version of the load benchmark.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/scenario.rs"]
mod scenario;
mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pqmls_transport::node::Config;
use pqmls_transport::store::{self, Cursor};
use pqmls_transport::{Error, Inbound, MessageId, Node, Topic};
use support::{config, quic_addr, recv, start, tcp_addr, temp_dir, wait_until};

/// Starts `n` nodes where node `i` dials node `i - 1` only: a line, not a full mesh.
async fn line(n: usize) -> Vec<(Node, Inbound)> {
    let mut nodes: Vec<(Node, Inbound)> = Vec::new();
    for i in 0..n {
        let mut c = config();
        if i > 0 {
            c = c.with_bootstrap(tcp_addr(&nodes[i - 1].0).await);
        }
        nodes.push(start(c).await);
    }
    nodes
}

/// Waits until every node of a line has its neighbours in the topic's mesh.
async fn wait_for_line_mesh(nodes: &[(Node, Inbound)], topic: &Topic) {
    let n = nodes.len();
    for (i, (node, _)) in nodes.iter().enumerate() {
        let want = if i == 0 || i == n - 1 { 1 } else { 2 };
        wait_until("line mesh", || async {
            node.mesh_peers(topic).await.unwrap() >= want
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_in_a_line_deliver_every_message_exactly_once() {
    let mut nodes = line(6).await;
    let topic = Topic::from_group_id(b"six in a line");
    for (node, _) in &nodes {
        assert!(node.subscribe(&topic).await.unwrap());
    }
    wait_for_line_mesh(&nodes, &topic).await;
    // Not a full mesh: the ends have exactly one peer.
    assert_eq!(nodes[0].0.counters().connected_peers, 1);
    assert_eq!(nodes[5].0.counters().connected_peers, 1);

    // Every node publishes 5 messages; the ends' messages cross 5 hops.
    let mut sent: HashMap<usize, HashSet<MessageId>> = HashMap::new();
    for round in 0..5u8 {
        for (i, (node, _)) in nodes.iter().enumerate() {
            let data = format!("node {i} message {round}").into_bytes();
            let id = node.publish(&topic, data).await.unwrap();
            sent.entry(i).or_default().insert(id);
        }
    }
    for (i, (node, inbound)) in nodes.iter_mut().enumerate() {
        let expected: HashSet<MessageId> = sent
            .iter()
            .filter(|(from, _)| **from != i)
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        let mut got = HashSet::new();
        while got.len() < expected.len() {
            let m = recv(inbound).await;
            assert_eq!(m.topic, topic);
            assert_eq!(m.id, MessageId::compute(&topic, &m.data));
            assert!(got.insert(m.id), "node {i} got {} twice", m.id);
        }
        assert_eq!(got, expected, "node {i}");
        assert_eq!(node.counters().delivered, 25);
    }
    // Let gossip (IHAVE/IWANT) run a few heartbeats: still nothing delivered twice.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (i, (node, inbound)) in nodes.iter_mut().enumerate() {
        assert!(
            inbound.try_recv().is_none(),
            "node {i} got an extra message"
        );
        assert_eq!(node.counters().delivered, 25, "node {i}");
    }
    for (node, _) in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Deterministic pseudo-random bytes, so corruption anywhere would be noticed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_four_mib_payloads_arrive_intact_over_tcp_and_quic() {
    // a -(QUIC)- b -(TCP)- c: the payloads are forwarded once on the way.
    let (a, _a_in) = start(config()).await;
    let (b, _b_in) = start(config().with_bootstrap(quic_addr(&a).await)).await;
    let (c, mut c_in) = start(config().with_bootstrap(tcp_addr(&b).await)).await;
    let topic = Topic::from_group_id(b"large");
    for n in [&a, &b, &c] {
        n.subscribe(&topic).await.unwrap();
    }
    wait_until("mesh a-b", || async {
        a.mesh_peers(&topic).await.unwrap() >= 1
    })
    .await;
    wait_until("mesh b-c", || async {
        c.mesh_peers(&topic).await.unwrap() >= 1
    })
    .await;
    wait_until("mesh b", || async {
        b.mesh_peers(&topic).await.unwrap() >= 2
    })
    .await;

    let one = pattern(1 << 20, 1);
    let four = pattern(4 << 20, 4);
    let id1 = a.publish(&topic, one.clone()).await.unwrap();
    let id4 = a.publish(&topic, four.clone()).await.unwrap();
    let mut got = HashMap::new();
    while got.len() < 2 {
        let m = recv(&mut c_in).await;
        got.insert(m.id, m.data);
    }
    assert!(got[&id1] == one, "1 MiB payload corrupted");
    assert!(got[&id4] == four, "4 MiB payload corrupted");
    assert_eq!(c.counters().delivered_bytes, (5 << 20) as u64);

    // One byte over the limit is refused locally.
    let too_big = vec![0u8; (4 << 20) + 1];
    assert!(matches!(
        a.publish(&topic, too_big).await,
        Err(Error::MessageTooLarge { .. })
    ));
    // Republishing identical bytes is a duplicate (content-hash ids).
    assert!(matches!(
        a.publish(&topic, one).await,
        Err(Error::Duplicate)
    ));
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

/// Fetches the whole history of `topic` from `node`, page by page.
async fn all_history(node: &Node, topic: &Topic) -> Vec<pqmls_transport::Message> {
    let mut out = Vec::new();
    let mut cursor = Cursor::beginning();
    for _ in 0..1000 {
        let page = node.history(topic, cursor).await.unwrap();
        out.extend(page.messages);
        match page.next {
            Some(next) => cursor = next,
            None => return out,
        }
    }
    panic!("history did not end");
}

fn store_config(dir: &std::path::Path) -> Config {
    config().with_store(dir, store::Config::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_subscriber_gets_history_from_store_also_after_store_restart() {
    let dir = temp_dir("history");
    let topic = Topic::from_group_id(b"history");
    let (s, _s_in) = start(store_config(&dir)).await;
    let store_id = s.peer_id();
    s.subscribe(&topic).await.unwrap();
    let (p, _p_in) = start(config().with_bootstrap(tcp_addr(&s).await)).await;
    p.subscribe(&topic).await.unwrap();
    wait_until("mesh p-s", || async {
        p.mesh_peers(&topic).await.unwrap() >= 1
    })
    .await;

    // Published while the subscriber is offline; one of them large.
    let mut published = Vec::new();
    for i in 0..6u64 {
        let data = if i == 3 {
            pattern(1 << 20, 77)
        } else {
            format!("missed {i}").into_bytes()
        };
        published.push((p.publish(&topic, data.clone()).await.unwrap(), data));
    }
    wait_until("store has all", || async { s.counters().stored == 6 }).await;

    // A subscriber comes online, pages through history two at a time.
    let mut qc = config().with_bootstrap(tcp_addr(&s).await);
    qc.limits.history_page_messages = 2;
    let (q, _q_in) = start(qc.clone()).await;
    wait_until("q sees store", || async { q.counters().store_peers == 1 }).await;
    let got = all_history(&q, &topic).await;
    let got: Vec<_> = got.into_iter().map(|m| (m.id, m.data)).collect();
    assert_eq!(got.len(), 6);
    let mut want = published.clone();
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);
    q.shutdown().await.unwrap();

    // The store restarts from its data directory: same identity, same history, and it
    // resubscribes to the topics it served.
    s.shutdown().await.unwrap();
    let (s, _s_in) = start(store_config(&dir)).await;
    assert_eq!(s.peer_id(), store_id);
    wait_until("p notices the old connection closed", || async {
        p.counters().connected_peers == 0
    })
    .await;
    p.dial(tcp_addr(&s).await).await.unwrap();
    wait_until("mesh p-s again", || async {
        s.mesh_peers(&topic).await.unwrap() >= 1 && p.mesh_peers(&topic).await.unwrap() >= 1
    })
    .await;
    let late = b"after restart".to_vec();
    let late_id = p.publish(&topic, late.clone()).await.unwrap();
    wait_until("store has the new one", || async {
        s.counters().stored == 1
    })
    .await;

    let (q, _q_in) = start(qc.with_bootstrap(tcp_addr(&s).await)).await;
    wait_until("q sees store", || async { q.counters().store_peers >= 1 }).await;
    let got = all_history(&q, &topic).await;
    assert_eq!(got.len(), 7);
    let last = got.last().unwrap();
    assert_eq!((last.id, &last.data), (late_id, &late));
    for m in &got {
        assert_eq!(m.topic, topic);
        assert_eq!(m.id, MessageId::compute(&topic, &m.data));
    }
    // Paging from a time: only the message after the restart is that recent.
    let page = q
        .history(&topic, Cursor::since(last.received))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);

    for n in [q, p, s] {
        n.shutdown().await.unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_put_on_one_node_get_from_another_survives_store_restart() {
    let dir = temp_dir("directory");
    let (s, _s_in) = start(store_config(&dir)).await;
    let (a, _a_in) = start(config().with_bootstrap(tcp_addr(&s).await)).await;
    let (b, _b_in) = start(config().with_bootstrap(tcp_addr(&s).await)).await;
    // A client with no store in reach cannot use the directory.
    let (lonely, _l_in) = start(config()).await;
    assert!(matches!(
        lonely.get(b"x".to_vec()).await,
        Err(Error::NoStore)
    ));
    lonely.shutdown().await.unwrap();

    wait_until("a sees store", || async { a.counters().store_peers == 1 }).await;
    wait_until("b sees store", || async { b.counters().store_peers == 1 }).await;
    let key_package = pattern(10_000, 5);
    a.put(b"alice".to_vec(), key_package.clone()).await.unwrap();
    assert_eq!(
        b.get(b"alice".to_vec()).await.unwrap(),
        Some(key_package.clone())
    );
    assert_eq!(b.get(b"bob".to_vec()).await.unwrap(), None);
    assert!(matches!(
        a.put(vec![0; 257], vec![]).await,
        Err(Error::EntryTooLarge { what: "key", .. })
    ));

    s.shutdown().await.unwrap();
    let (s, _s_in) = start(store_config(&dir)).await;
    wait_until("b notices the old connection closed", || async {
        b.counters().store_peers == 0
    })
    .await;
    b.dial(tcp_addr(&s).await).await.unwrap();
    wait_until("b sees restarted store", || async {
        b.counters().store_peers == 1
    })
    .await;
    assert_eq!(b.get(b"alice".to_vec()).await.unwrap(), Some(key_package));
    for n in [a, b, s] {
        n.shutdown().await.unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_load_scenario_delivers_everything() {
    let report = scenario::run(scenario::Params {
        nodes: 4,
        small_messages: 400,
        small_size: 1024,
        large_messages: 2,
        large_size: 1 << 20,
        window: 100,
        deadline: Duration::from_secs(40),
        heartbeat: Duration::from_millis(200),
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.delivered, report.expected);
    assert_eq!(report.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_node_no_longer_receives() {
    let (a, _a_in) = start(config()).await;
    let (b, mut b_in) = start(config().with_bootstrap(tcp_addr(&a).await)).await;
    let topic = Topic::from_group_id(b"unsubscribe");
    a.subscribe(&topic).await.unwrap();
    assert!(b.subscribe(&topic).await.unwrap());
    assert!(!b.subscribe(&topic).await.unwrap(), "already subscribed");
    wait_until("mesh", || async {
        a.mesh_peers(&topic).await.unwrap() == 1
    })
    .await;
    let id = a.publish(&topic, b"before".to_vec()).await.unwrap();
    assert_eq!(recv(&mut b_in).await.id, id);

    assert!(b.unsubscribe(&topic).await.unwrap());
    assert!(
        !b.unsubscribe(&topic).await.unwrap(),
        "already unsubscribed"
    );
    wait_until("mesh gone", || async {
        a.mesh_peers(&topic).await.unwrap() == 0
    })
    .await;
    // b was the only other subscriber: nobody to send to.
    assert!(matches!(
        a.publish(&topic, b"after".to_vec()).await,
        Err(Error::NoPeers)
    ));
    assert!(b_in.try_recv().is_none());
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_discovers_peers_beyond_the_bootstrap_node() {
    let kad_config = || {
        let mut c = config();
        c.kademlia = true;
        c
    };
    let (a, _a_in) = start(kad_config()).await;
    let (b, _b_in) = start(kad_config().with_bootstrap(tcp_addr(&a).await)).await;
    wait_until("b connected to a", || async {
        a.counters().connected_peers == 1
    })
    .await;
    // c only knows b; Kademlia's bootstrap walk finds a through b and connects to it.
    let (c, _c_in) = start(kad_config().with_bootstrap(tcp_addr(&b).await)).await;
    wait_until("c discovers a", || async {
        c.counters().connected_peers == 2
    })
    .await;
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbound_stream_drops_and_counts_instead_of_blocking() {
    let (a, _a_in) = start(config()).await;
    let mut slow = config().with_bootstrap(tcp_addr(&a).await);
    slow.limits.inbound_queue = 2;
    let (b, mut b_in) = start(slow).await;
    let topic = Topic::from_group_id(b"slow reader");
    a.subscribe(&topic).await.unwrap();
    b.subscribe(&topic).await.unwrap();
    wait_until("mesh", || async {
        a.mesh_peers(&topic).await.unwrap() == 1
    })
    .await;
    for i in 0..5u8 {
        a.publish(&topic, vec![i]).await.unwrap();
    }
    wait_until("all five handled", || async {
        let c = b.counters();
        c.delivered + c.inbound_dropped == 5
    })
    .await;
    let c = b.counters();
    assert_eq!((c.delivered, c.inbound_dropped), (2, 3));
    // The node is not stuck: the two queued messages are readable, and it still answers.
    assert_eq!(recv(&mut b_in).await.data, vec![0]);
    assert_eq!(recv(&mut b_in).await.data, vec![1]);
    assert_eq!(b.mesh_peers(&topic).await.unwrap(), 1);
    for n in [a, b] {
        n.shutdown().await.unwrap();
    }
}
