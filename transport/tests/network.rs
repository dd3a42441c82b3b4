//! Real libp2p swarms on 127.0.0.1: gossip over a line of nodes, large payloads, store
//! history across restarts, the directory, and a small version of the load benchmark.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::scenario;
use crate::support;

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
async fn store_follows_client_subscriptions_and_serves_their_history_to_a_latecomer() {
    let dir = temp_dir("follow");
    let (s, _s_in) = start(store_config(&dir)).await;
    let s_addr = tcp_addr(&s).await;
    let chat = Topic::from_group_id(b"followed chat");
    let later = Topic::from_group_id(b"followed later");

    // A subscribes before it connects: the store learns the subscription from A's
    // announcement of its existing subscriptions when the connection opens.
    let (a, mut a_in) = start(config()).await;
    a.subscribe(&chat).await.unwrap();
    a.dial(s_addr.clone()).await.unwrap();
    wait_until("store follows A's existing subscription", || async {
        s.mesh_peers(&chat).await.unwrap() >= 1
    })
    .await;
    // A subscription made while connected is followed too.
    a.subscribe(&later).await.unwrap();
    wait_until("store follows A's new subscription", || async {
        s.mesh_peers(&later).await.unwrap() >= 1
    })
    .await;
    assert_eq!(s.counters().topics_followed, 2);

    // B only knows the store; A and B reach each other through it.
    let (b, mut b_in) = start(config().with_bootstrap(s_addr.clone())).await;
    b.subscribe(&chat).await.unwrap();
    wait_until("mesh a-s-b", || async {
        s.mesh_peers(&chat).await.unwrap() >= 2
            && a.mesh_peers(&chat).await.unwrap() >= 1
            && b.mesh_peers(&chat).await.unwrap() >= 1
            && a.mesh_peers(&later).await.unwrap() >= 1
    })
    .await;
    let mut sent = HashMap::new();
    for i in 0..3 {
        let data = format!("from a {i}").into_bytes();
        sent.insert(a.publish(&chat, data.clone()).await.unwrap(), data);
        let data = format!("from b {i}").into_bytes();
        sent.insert(b.publish(&chat, data.clone()).await.unwrap(), data);
    }
    for (inbound, from) in [(&mut a_in, "from b"), (&mut b_in, "from a")] {
        for _ in 0..3 {
            let m = recv(inbound).await;
            assert!(m.data.starts_with(from.as_bytes()));
            assert_eq!(sent.get(&m.id), Some(&m.data));
        }
    }
    let later_data = b"only the store listens".to_vec();
    let later_id = a.publish(&later, later_data.clone()).await.unwrap();
    wait_until("store has all seven", || async { s.counters().stored == 7 }).await;

    // C was offline the whole time and never subscribes: one history request each.
    let (c, _c_in) = start(config().with_bootstrap(s_addr)).await;
    wait_until("c sees store", || async { c.counters().store_peers == 1 }).await;
    let page = c.history(&chat, Cursor::beginning()).await.unwrap();
    assert_eq!(page.next, None);
    assert_eq!(page.messages.len(), 6);
    let got: HashMap<_, _> = page.messages.into_iter().map(|m| (m.id, m.data)).collect();
    assert_eq!(got, sent);
    let page = c.history(&later, Cursor::beginning()).await.unwrap();
    let got: Vec<_> = page.messages.into_iter().map(|m| (m.id, m.data)).collect();
    assert_eq!(got, vec![(later_id, later_data)]);
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }

    // Followed topics are recorded like explicit ones: a restarted store serves them at
    // once, with following off and no peer connected.
    s.shutdown().await.unwrap();
    let no_follow = store::Config::default().with_follow_subscriptions(false);
    let (s, _s_in) = start(config().with_store(&dir, no_follow)).await;
    assert_eq!(all_history(&s, &chat).await.len(), 6);
    assert_eq!(all_history(&s, &later).await.len(), 1);
    s.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts a client connected to `store` that subscribes to `topics` in order once connected,
/// so each subscription reaches the store in its own message, in that order.
async fn client_subscribed_via(store: &Node, topics: &[&Topic]) -> (Node, Inbound) {
    let (a, a_in) = start(config().with_bootstrap(tcp_addr(store).await)).await;
    wait_until("client connected", || async {
        a.counters().connected_peers == 1
    })
    .await;
    for t in topics {
        a.subscribe(t).await.unwrap();
    }
    (a, a_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_with_following_off_does_not_follow_subscriptions() {
    let dir = temp_dir("no-follow");
    let explicit = Topic::from_group_id(b"explicit");
    let ignored = Topic::from_group_id(b"not followed");
    let no_follow = store::Config::default().with_follow_subscriptions(false);
    let (s, _s_in) = start(config().with_store(&dir, no_follow)).await;
    s.subscribe(&explicit).await.unwrap();
    let (a, _a_in) = client_subscribed_via(&s, &[&ignored, &explicit]).await;
    // The store handles A's subscriptions in order: once A is in its mesh for `explicit`, it
    // has seen the subscription to `ignored` and did not follow it.
    wait_until("mesh on the explicit topic", || async {
        s.mesh_peers(&explicit).await.unwrap() >= 1 && a.mesh_peers(&explicit).await.unwrap() >= 1
    })
    .await;
    assert_eq!(s.mesh_peers(&ignored).await.unwrap(), 0);
    let c = s.counters();
    assert_eq!((c.topics_followed, c.topics_not_followed), (0, 0));
    // Nobody else subscribes to `ignored`, so A's message reaches no one.
    assert!(matches!(
        a.publish(&ignored, b"lost".to_vec()).await,
        Err(Error::NoPeers)
    ));
    for n in [a, s] {
        n.shutdown().await.unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_stops_following_at_max_topics() {
    let dir = temp_dir("max-topics");
    let topics: Vec<Topic> = (0..3u8).map(|i| Topic::from_group_id(&[i])).collect();
    let refs: Vec<&Topic> = topics.iter().collect();
    let full_at_one = store::Config::default().with_max_topics(1);
    let (s, _s_in) = start(config().with_store(&dir, full_at_one)).await;
    let (a, _a_in) = client_subscribed_via(&s, &refs).await;
    wait_until("two subscriptions refused", || async {
        s.counters().topics_not_followed == 2
    })
    .await;
    assert_eq!(s.counters().topics_followed, 1);
    // The first one was followed, the later ones not.
    assert_eq!(s.mesh_peers(&topics[0]).await.unwrap(), 1);
    assert_eq!(s.mesh_peers(&topics[1]).await.unwrap(), 0);
    assert_eq!(s.mesh_peers(&topics[2]).await.unwrap(), 0);
    for n in [a, s] {
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
        protocol: scenario::Protocol::Pqmls,
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.delivered, report.expected);
    assert_eq!(report.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_load_scenario_on_waku_relay_delivers_everything() {
    let report = scenario::run(scenario::Params {
        nodes: 4,
        small_messages: 400,
        small_size: 1024,
        large_messages: 2,
        large_size: 100 * 1024,
        window: 100,
        deadline: Duration::from_secs(40),
        heartbeat: Duration::from_millis(200),
        protocol: scenario::Protocol::WakuRelay,
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
