//! The SDK over Waku on 127.0.0.1: a Waku node with relay and store v3, and clients on
//! [`WakuTransport`] (relay for traffic, store v3 for history and the key-package
//! directory), none of the transport's own protocols. Plus the transport alone: a 1 MiB
//! payload segmented, forged and duplicated segments, history reassembled from the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use pqmls::net_waku::{self, WakuTransport};
use pqmls::{Client, Config, Event, Events, GroupId, Inbox, Transport};
use pqmls_transport::multiaddr::Protocol;
use pqmls_transport::node::{Config as NodeConfig, RateLimits};
use pqmls_transport::store::Cursor;
use pqmls_transport::waku::relay;
use pqmls_transport::waku::segmentation::{self, SegmentMessage};
use pqmls_transport::waku::{WakuMessage, message_hash, relay::DEFAULT_MAX_MESSAGE_SIZE};
use pqmls_transport::{Message, MessageId, Multiaddr, Node, PeerId, Topic, store};

/// Longest wait for any one step (real time).
const STEP: Duration = Duration::from_secs(30);
const CLUSTER: u16 = 7;

async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let r = tokio::time::timeout(STEP, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}");
}

/// A loopback Waku relay node of [`CLUSTER`] with fast heartbeats, on TCP only.
fn waku_node() -> NodeConfig {
    waku_node_limited(DEFAULT_MAX_MESSAGE_SIZE)
}

/// The relay limit of the network where MLS traffic itself is segmented: a PQ Welcome
/// (about 8 KB) or commit (about 7 KB) of a small group does not fit in one message.
const SMALL_LIMIT: usize = 6 * 1024;

/// As [`waku_node`] with a relay message limit of `max` bytes.
fn waku_node_limited(max: usize) -> NodeConfig {
    let mut r = relay::Config::new(CLUSTER);
    r.heartbeat = Duration::from_millis(100);
    r.max_message_size = max;
    let mut c = NodeConfig::loopback();
    c.listen.retain(|a| a.to_string().contains("/tcp/"));
    c.limits.rate_limits = RateLimits::unlimited();
    c.with_waku(r)
}

/// A Waku node with relay and store v3 (and nothing of pqmls's own protocols is used).
async fn store_node(dir: &Path) -> (Node, Multiaddr) {
    store_node_limited(dir, DEFAULT_MAX_MESSAGE_SIZE).await
}

async fn store_node_limited(dir: &Path, max: usize) -> (Node, Multiaddr) {
    let (node, _) = Node::start(waku_node_limited(max).with_store(dir, store::Config::default()))
        .await
        .unwrap();
    let addr = node.listen_addrs().await.unwrap().remove(0);
    (node, addr)
}

fn peer_of(addr: &Multiaddr) -> PeerId {
    addr.iter()
        .find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .unwrap()
}

async fn transport(bootstrap: &Multiaddr) -> (Arc<WakuTransport>, Inbox) {
    transport_limited(bootstrap, DEFAULT_MAX_MESSAGE_SIZE).await
}

/// A transport whose relay limit is `max`; below the default, segments of 1 KiB.
async fn transport_limited(bootstrap: &Multiaddr, max: usize) -> (Arc<WakuTransport>, Inbox) {
    let mut config = net_waku::Config::default().with_store_peer(peer_of(bootstrap));
    if max < DEFAULT_MAX_MESSAGE_SIZE {
        config.segmentation.segment_size = 1024;
        config.segmentation.max_message_size = 128 * 1024;
    }
    let node = waku_node_limited(max).with_bootstrap(bootstrap.clone());
    let (t, inbox) = WakuTransport::start(node, config).await.unwrap();
    (Arc::new(t), inbox)
}

/// A client on its own Waku node bootstrapping to the store; returns its transport too.
async fn client(dir: &Path, name: &str, bootstrap: &Multiaddr) -> (Client, Arc<WakuTransport>) {
    client_limited(dir, name, bootstrap, DEFAULT_MAX_MESSAGE_SIZE).await
}

async fn client_limited(
    dir: &Path,
    name: &str,
    bootstrap: &Multiaddr,
    max: usize,
) -> (Client, Arc<WakuTransport>) {
    let (t, inbox) = transport_limited(bootstrap, max).await;
    let client = Client::open(client_config(dir, name), t.clone(), inbox)
        .await
        .unwrap();
    (client, t)
}

/// The tests' client settings: fast settling, no timed self-updates, every invitation
/// taken.
fn client_config(dir: &Path, name: &str) -> Config {
    let mut c = Config::new(name)
        .with_data_dir(dir.join(name))
        .with_database_key(pqmls::DatabaseKey::from_bytes([9; 32]));
    c.self_update_interval = None;
    c.settle = Duration::from_millis(200);
    c.removal_grace = Duration::from_millis(500);
    c.invitations = pqmls::InvitePolicy::Everyone;
    c
}

async fn expect_event(events: &mut Events, what: &str, pred: impl Fn(&Event) -> bool) {
    let mut seen = Vec::new();
    let r = tokio::time::timeout(STEP, async {
        loop {
            let e = events.recv().await.expect("event stream ended");
            let hit = pred(&e);
            seen.push(e);
            if hit {
                return;
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}; saw {seen:?}");
}

/// Reads events until `n` messages arrived; returns them as sorted (sender, body) pairs.
async fn messages(events: &mut Events, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let r = tokio::time::timeout(STEP, async {
        while got.len() < n {
            if let Event::Message(m) = events.recv().await.expect("event stream ended") {
                got.push((m.sender.name, String::from_utf8(m.body).unwrap()));
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {n} messages, got {got:?}");
    got.sort();
    got
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// Waits until every client is at `epoch` with the same authenticator and nothing pending.
async fn agree(clients: &[&Client], g: &GroupId, epoch: u64) {
    until(&format!("agreement on epoch {epoch}"), async || {
        let mut first: Option<pqmls::GroupStatus> = None;
        for c in clients {
            let Ok(s) = c.status(g).await else {
                return false;
            };
            if s.pending_commit || s.epoch != epoch {
                return false;
            }
            if let Some(f) = &first
                && f.epoch_authenticator != s.epoch_authenticator
            {
                return false;
            }
            first = Some(s);
        }
        true
    })
    .await;
}

/// Alice creates a group and invites bob, then carol (key packages found in the store);
/// returns it once all three agree on epoch 2.
async fn group_of_three(
    alice: &Client,
    (bob, bob_ev): (&Client, &mut Events),
    (carol, carol_ev): (&Client, &mut Events),
) -> GroupId {
    for who in [bob, carol] {
        pqmls::wait_for_key_packages(alice, &who.id())
            .await
            .unwrap();
    }
    let g = alice.create_group().await.unwrap();
    for (who, events, name) in [(bob, bob_ev, "bob"), (carol, carol_ev, "carol")] {
        alice.invite(&g, &who.id()).await.unwrap();
        expect_event(
            events,
            &format!("{name} joined"),
            |e| matches!(e, Event::Joined { group, .. } if *group == g),
        )
        .await;
    }
    agree(&[alice, bob, carol], &g, 2).await;
    g
}

/// Three clients on Waku: invitations through key packages found in the store, messages
/// both ways, a commit, and a member that was offline catching up from store v3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_over_waku_relay_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, _) = client(dir.path(), "alice", &bootstrap).await;
    let (bob, _) = client(dir.path(), "bob", &bootstrap).await;
    let (carol, carol_t) = client(dir.path(), "carol", &bootstrap).await;
    let mut alice_ev = alice.events();
    let mut bob_ev = bob.events();
    let mut carol_ev = carol.events();
    // Key packages are Waku messages on their owner's content topic, found by store v3.
    let g = group_of_three(&alice, (&bob, &mut bob_ev), (&carol, &mut carol_ev)).await;

    // Messages both ways, on relay.
    alice.send(&g, b"hello from alice").await.unwrap();
    bob.send(&g, b"hello from bob").await.unwrap();
    assert_eq!(
        messages(&mut carol_ev, 2).await,
        [
            pair("alice", "hello from alice"),
            pair("bob", "hello from bob")
        ]
    );
    assert_eq!(
        messages(&mut alice_ev, 1).await,
        [pair("bob", "hello from bob")]
    );
    assert_eq!(
        messages(&mut bob_ev, 1).await,
        [pair("alice", "hello from alice")]
    );

    // Carol goes offline (client and node); alice and bob talk and commit meanwhile.
    carol.shutdown().await;
    carol_t.node().clone().shutdown().await.unwrap();
    drop(carol_ev);
    alice.send(&g, b"while carol was away").await.unwrap();
    bob.update(&g).await.unwrap();
    agree(&[&alice, &bob], &g, 3).await;
    bob.send(&g, b"after the commit").await.unwrap();
    assert_eq!(
        messages(&mut alice_ev, 1).await,
        [pair("bob", "after the commit")]
    );

    // Carol comes back on a new node: everything comes from the store.
    let (carol, _carol_t) = client(dir.path(), "carol", &bootstrap).await;
    until("carol caught up", async || {
        carol.sync().await.is_ok()
            && carol.status(&g).await.is_ok_and(|s| s.epoch == 3)
            && carol.history(&g, 100).await.is_ok_and(|h| h.len() == 4)
    })
    .await;
    agree(&[&alice, &bob, &carol], &g, 3).await;
    let mut h: Vec<(String, String)> = carol
        .history(&g, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.sender.name, String::from_utf8(m.body).unwrap()))
        .collect();
    h.sort();
    assert_eq!(
        h,
        [
            pair("alice", "hello from alice"),
            pair("alice", "while carol was away"),
            pair("bob", "after the commit"),
            pair("bob", "hello from bob"),
        ]
    );
    // And she takes part again, live.
    let mut carol_ev = carol.events();
    carol.send(&g, b"back").await.unwrap();
    assert_eq!(messages(&mut alice_ev, 1).await, [pair("carol", "back")]);
    alice.send(&g, b"welcome back").await.unwrap();
    assert_eq!(
        messages(&mut carol_ev, 1).await,
        [pair("alice", "welcome back")]
    );

    for c in [alice, bob, carol] {
        c.shutdown().await;
    }
    store.shutdown().await.unwrap();
}

/// A pqmls payload of `len` bytes that the inbound side accepts: a withdrawal (`Void`)
/// envelope around pseudo-random bytes.
fn big_payload(len: usize, seed: u8) -> Vec<u8> {
    let body: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect();
    common::envelope(common::VOID, &[seed; 32], &body)
}

/// A forged twin of the encoded segment `segment` (one bit of its payload flipped) for
/// which `wanted` holds. Every bit is tried in turn: with only the low bits of the first
/// 64 bytes, a genuine message hash smaller than all 64 twins' (about one run in 65) made
/// the tests that need a twin ordered first fail.
fn forged_twin(segment: &[u8], wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let twin: SegmentMessage = prost::Message::decode(segment).unwrap();
    (0..twin.payload.len() * 8)
        .map(|bit| {
            let mut f = twin.clone();
            f.payload[bit / 8] ^= 1 << (bit % 8);
            prost::Message::encode_to_vec(&f)
        })
        .find(|f| wanted(f))
        .unwrap()
}

async fn next_message(inbox: &mut Inbox) -> Message {
    tokio::time::timeout(STEP, inbox.next())
        .await
        .expect("a message within the step")
        .expect("inbox open")
}

/// A 1 MiB payload goes through relay as segments under the relay limit, is delivered
/// once and whole, and comes back whole from store v3; duplicated and forged segments are
/// ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_payload_is_segmented_and_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, _alice_in) = transport(&bootstrap).await;
    let (bob, mut bob_in) = transport(&bootstrap).await;
    // A raw Waku node beside them: it watches what goes over relay and forges segments.
    let (mallory, _) = Node::start(waku_node().with_bootstrap(bootstrap.clone()))
        .await
        .unwrap();
    let mut watch = mallory.relay_inbound().unwrap();
    let topic = Topic::from_group_id(b"a big group");
    bob.subscribe(&topic).await.unwrap();
    let shard = alice.shard();
    for n in [alice.node(), bob.node(), &mallory] {
        until("relay mesh", async || {
            n.relay_mesh_peers(shard).await.unwrap() > 0
        })
        .await;
    }

    let payload = big_payload(1024 * 1024, 1);
    let id = alice.publish(&topic, payload.clone()).await.unwrap();
    assert_eq!(id, MessageId::compute(&topic, &payload));
    assert_eq!(alice.counters().segmented, 1);
    let got = next_message(&mut bob_in).await;
    assert_eq!((got.id, got.topic.clone()), (id, topic.clone()));
    assert!(got.data == payload, "reassembled payload differs");

    // What went over relay: segments, each under the limit, none whole.
    let mut segments = Vec::new();
    while segments.len() < 12 {
        let r = tokio::time::timeout(STEP, watch.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(r.message.to_bytes().len() <= DEFAULT_MAX_MESSAGE_SIZE);
        assert!(
            r.message.content_topic.ends_with("/seg"),
            "{}",
            r.message.content_topic
        );
        segments.push(r.message);
    }
    // 11 data segments of 100 KiB and 2 parity segments.
    let decoded: Vec<SegmentMessage> = segments
        .iter()
        .map(|m| prost::Message::decode(m.payload.as_slice()).unwrap())
        .collect();
    assert_eq!(decoded[0].data_segment_count, 11);
    assert_eq!(decoded[0].parity_segment_count, 2);

    // Replayed segments of the delivered payload (new timestamps, so relay passes them):
    // nothing is delivered again.
    for m in &segments[..3] {
        let again = m.clone().with_timestamp(m.timestamp.unwrap() + 1);
        mallory.relay_publish_on(shard, again).await.unwrap();
    }
    // A second payload, with a forged copy of its first segment sent after the genuine
    // one, and a forged segment of a message that never completes.
    let second = big_payload(300 * 1024, 2);
    let config = segmentation::Config::default();
    let genuine = segmentation::segment(&second, &config).unwrap();
    let seg_topic = segments[0].content_topic.clone();
    let ts = segments[0].timestamp.unwrap() + 1_000_000;
    let publish = async |bytes: Vec<u8>, ts: i64| {
        let m = WakuMessage::new(seg_topic.clone(), bytes).with_timestamp(ts);
        mallory.relay_publish_on(shard, m).await.unwrap();
    };
    let mut forged: SegmentMessage = prost::Message::decode(genuine[0].as_slice()).unwrap();
    forged.payload[0] ^= 1;
    let mut stray = forged.clone();
    stray.entire_message_hash = vec![7; 32];
    publish(prost::Message::encode_to_vec(&stray), ts).await;
    publish(genuine[0].clone(), ts).await;
    publish(prost::Message::encode_to_vec(&forged), ts + 1).await;
    for s in &genuine[1..] {
        publish(s.clone(), ts).await;
    }
    let got = next_message(&mut bob_in).await;
    assert_eq!(got.id, MessageId::compute(&topic, &second));
    assert!(got.data == second);
    // Nothing else: the replays and the forgeries deliver nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        futures::FutureExt::now_or_never(bob_in.next()).is_none(),
        "a replayed or forged segment was delivered"
    );

    // A third payload whose data segment 1 has a forged twin with the same timestamp that
    // the store orders first (ground until its message hash is the smaller): the first
    // reassembly from the store fails its hash, and the retry finds the genuine one.
    let third = big_payload(300 * 1024, 3);
    let genuine = segmentation::segment(&third, &config).unwrap();
    let ts3 = ts + 10_000_000;
    let seg_message =
        |bytes: Vec<u8>| WakuMessage::new(seg_topic.clone(), bytes).with_timestamp(ts3);
    let genuine_hash = message_hash(&shard.to_string(), &seg_message(genuine[1].clone()));
    let forged = forged_twin(&genuine[1], |f| {
        message_hash(&shard.to_string(), &seg_message(f.to_vec())) < genuine_hash
    });
    publish(forged, ts3).await;
    for s in &genuine {
        publish(s.clone(), ts3).await;
    }
    let third_id = MessageId::compute(&topic, &third);

    // History from store v3: every payload, whole, once each.
    let read_all = async || {
        let mut history = Vec::new();
        let mut from = Cursor::beginning();
        loop {
            let page = bob.history(&topic, from).await.unwrap();
            history.extend(page.messages);
            match page.next {
                Some(n) => from = n,
                None => return history,
            }
        }
    };
    // Wait until the store has every segment published (they arrive by relay): 13 of the
    // first payload and 3 replays; of the second (4 data, 1 parity) the stray, the forged
    // and the 5 genuine; of the third the forged and the 5 genuine.
    until("the store has every segment", async || {
        store.counters().stored >= 13 + 3 + 7 + 6
    })
    .await;
    let history = read_all().await;
    let ids: Vec<MessageId> = history.iter().map(|m| m.id).collect();
    assert_eq!(ids, [id, MessageId::compute(&topic, &second), third_id]);
    assert!(history[0].data == payload && history[1].data == second);
    assert!(history[2].data == third);

    store.shutdown().await.unwrap();
}

/// Anyone can publish on a key's content topic, and no Waku store checks writers: a
/// stranger's newer messages under bob's key-package keys (garbage, and an entry signed by
/// another key) are what a newest-only read returns, yet alice still invites bob with his
/// own key package, the valid entry with the highest sequence number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_directory_messages_hide_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, alice_t) = client(dir.path(), "alice", &bootstrap).await;
    let (bob, _) = client(dir.path(), "bob", &bootstrap).await;
    let (mallory, _) = client(dir.path(), "mallory", &bootstrap).await;
    let mut bob_ev = bob.events();
    pqmls::wait_for_key_packages(&alice, &bob.id())
        .await
        .unwrap();
    pqmls::wait_for_key_packages(&alice, &mallory.id())
        .await
        .unwrap();

    // Mallory's own last-resort entry: well-formed and signed, but by mallory's key.
    let mallory_key = format!("pqmls/kp/v2/{}/last-resort", mallory.id());
    let signed_by_mallory = alice_t
        .get(mallory_key.into_bytes())
        .await
        .unwrap()
        .unwrap();
    let bob_topic = format!("/pqmls/1/kp-{}/proto", bob.id());
    let (raw, _) = Node::start(waku_node().with_bootstrap(bootstrap.clone()))
        .await
        .unwrap();
    until("raw node in the mesh", async || {
        raw.relay_mesh_peers(alice_t.shard()).await.unwrap() > 0
    })
    .await;
    let slots: Vec<String> = (0..4)
        .map(|i| i.to_string())
        .chain(["last-resort".to_owned()])
        .collect();
    let mut planted = Vec::new();
    for slot in &slots {
        let key = format!("pqmls/kp/v2/{}/{slot}", bob.id()).into_bytes();
        for blob in [b"garbage".to_vec(), signed_by_mallory.clone()] {
            let mut payload = b"PQDW".to_vec();
            payload.extend_from_slice(&(key.len() as u32).to_be_bytes());
            payload.extend_from_slice(&key);
            payload.extend_from_slice(&blob);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64;
            let m = WakuMessage::new(bob_topic.clone(), payload).with_timestamp(now);
            let hash = raw.relay_publish_on(alice_t.shard(), m).await.unwrap();
            planted.push(hash.0.to_vec());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // The plants are the newest entries the store has for each slot.
    let store_peer = peer_of(&bootstrap);
    until("plants stored", async || {
        let lookup = pqmls_transport::waku::store::QueryRequest {
            message_hashes: planted.clone(),
            ..Default::default()
        };
        raw.store_query(store_peer, lookup)
            .await
            .is_ok_and(|r| r.messages.len() == planted.len())
    })
    .await;
    // A reader that keeps a single candidate per key still gets bob's own entry: the
    // plants fail the directory's rule and go before the cut (they were what a
    // newest-first cut returned: flood finding 6, sdk/DESIGN.md "Over Waku").
    let last_resort = format!("pqmls/kp/v2/{}/last-resort", bob.id()).into_bytes();
    let mut one = net_waku::Config::default().with_store_peer(store_peer);
    one.directory_candidates = 1;
    let (reader, _reader_in) =
        WakuTransport::start(waku_node().with_bootstrap(bootstrap.clone()), one)
            .await
            .unwrap();
    let rule = pqmls::directory_validator().unwrap();
    until("the reader finds bob's entry", async || {
        reader
            .get_all(last_resort.clone())
            .await
            .is_ok_and(|v| v.len() == 1 && rule(&last_resort, None, &v[0]))
    })
    .await;

    let g = alice.create_group().await.unwrap();
    alice.invite(&g, &bob.id()).await.unwrap();
    expect_event(
        &mut bob_ev,
        "bob joined",
        |e| matches!(e, Event::Joined { group, .. } if *group == g),
    )
    .await;
    agree(&[&alice, &bob], &g, 1).await;
    let members: Vec<_> = alice.status(&g).await.unwrap().members;
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        [alice.id(), bob.id()]
    );

    for c in [alice, bob, mallory] {
        c.shutdown().await;
    }
    store.shutdown().await.unwrap();
}

/// A client named `name` on a Waku node that relays no shard at all, bootstrapping to
/// each of `bootstraps`, with the transport settings `tweak` makes (light-client mode
/// needs [`net_waku::Config::light_service`]); returns its transport too.
async fn light_client(
    dir: &Path,
    name: &str,
    bootstraps: &[Multiaddr],
    tweak: impl FnOnce(&mut net_waku::Config),
) -> (Client, Arc<WakuTransport>) {
    let mut light = relay::Config::new(CLUSTER).with_shards([]);
    light.heartbeat = Duration::from_millis(100);
    let mut node = NodeConfig::loopback();
    node.listen.retain(|a| a.to_string().contains("/tcp/"));
    for b in bootstraps {
        node = node.with_bootstrap(b.clone());
    }
    let mut waku = net_waku::Config::default();
    tweak(&mut waku);
    let (t, inbox) = WakuTransport::start(node.with_waku(light), waku)
        .await
        .unwrap();
    let t = Arc::new(t);
    let client = Client::open(client_config(dir, name), t.clone(), inbox)
        .await
        .unwrap();
    (client, t)
}

/// A light client (no relay: lightpush to publish, filter to receive, store v3 for
/// history and key packages) in a group with a relay client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_client_talks_through_lightpush_and_filter() {
    use pqmls_transport::waku::{filter, lightpush};
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = Node::start(
        waku_node()
            .with_store(dir.path().join("store"), store::Config::default())
            .with_lightpush_service(lightpush::Config::default())
            .with_filter_service(filter::Config::default()),
    )
    .await
    .unwrap();
    let bootstrap = service.listen_addrs().await.unwrap().remove(0);
    let (alice, _) = client(dir.path(), "alice", &bootstrap).await;
    until("alice in the relay mesh", async || {
        service.counters().metadata_admitted > 0
    })
    .await;

    // Bob's node relays no shard at all.
    let peer = peer_of(&bootstrap);
    let (bob, bob_t) = light_client(dir.path(), "bob", &[bootstrap], |c| {
        *c = c.clone().with_store_peer(peer).with_light_service(peer);
    })
    .await;
    let mut alice_ev = alice.events();
    let mut bob_ev = bob.events();
    // Bob's key packages went out by lightpush, and alice finds them in the store.
    pqmls::wait_for_key_packages(&alice, &bob.id())
        .await
        .unwrap();

    let g = alice.create_group().await.unwrap();
    alice.invite(&g, &bob.id()).await.unwrap();
    // The Welcome reaches bob by a filter push on his inbox topic.
    expect_event(
        &mut bob_ev,
        "bob joined",
        |e| matches!(e, Event::Joined { group, .. } if *group == g),
    )
    .await;
    agree(&[&alice, &bob], &g, 1).await;
    bob.send(&g, b"pushed by a light client").await.unwrap();
    assert_eq!(
        messages(&mut alice_ev, 1).await,
        [pair("bob", "pushed by a light client")]
    );
    alice.send(&g, b"filtered to a light client").await.unwrap();
    assert_eq!(
        messages(&mut bob_ev, 1).await,
        [pair("alice", "filtered to a light client")]
    );
    bob.update(&g).await.unwrap();
    agree(&[&alice, &bob], &g, 2).await;

    // Bob relayed nothing: everything went through the service.
    let bob_node = bob_t.node().counters();
    assert_eq!((bob_node.relay_published, bob_node.relay_delivered), (0, 0));
    assert!(bob_node.filter_delivered > 0);
    assert!(service.counters().lightpush_served > 0);

    alice.shutdown().await;
    bob.shutdown().await;
    bob_t.node().clone().shutdown().await.unwrap();
    service.shutdown().await.unwrap();
}

/// A light-client service on loopback: relay, store, lightpush and filter, on `port`
/// with its files (and so its identity) in `dir`, so that it can be started again as the
/// same node; rate limits as `waku_node` (none) unless `rates` says otherwise.
async fn light_service(
    dir: &Path,
    port: u16,
    bootstrap: Option<&Multiaddr>,
    rates: Option<RateLimits>,
) -> (Node, Multiaddr) {
    use pqmls_transport::waku::{filter, lightpush};
    let mut c = waku_node()
        .with_store(dir, store::Config::default())
        .with_lightpush_service(lightpush::Config::default())
        .with_filter_service(filter::Config::default());
    c.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    if let Some(r) = rates {
        c.limits.rate_limits = r;
    }
    if let Some(b) = bootstrap {
        c = c.with_bootstrap(b.clone());
    }
    let (node, _) = Node::start(c).await.unwrap();
    let addr = node.listen_addrs().await.unwrap().remove(0);
    (node, addr)
}

/// Alice's new group with bob in it, invited once his key packages are in the store;
/// both at epoch 1.
async fn group_of_two(alice: &Client, bob: &Client) -> GroupId {
    pqmls::wait_for_key_packages(alice, &bob.id())
        .await
        .unwrap();
    let g = alice.create_group().await.unwrap();
    alice.invite(&g, &bob.id()).await.unwrap();
    agree(&[alice, bob], &g, 1).await;
    g
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A light client whose service stops goes on through another service it is connected
/// to: its pushes go to the next lightpush service, and the watcher moves its filter
/// subscriptions there; when the named service is back, the subscriptions go back to it
/// and the other service is left (net_waku `light`). Before, everything went to the
/// named service alone: nothing bob sent reached alice, and nothing of hers reached him.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_client_moves_to_another_service_when_its_own_stops() {
    let dir = tempfile::tempdir().unwrap();
    let one_port = free_port();
    let one_dir = dir.path().join("one");
    let (one, one_addr) = light_service(&one_dir, one_port, None, None).await;
    let (two, two_addr) =
        light_service(&dir.path().join("two"), free_port(), Some(&one_addr), None).await;
    let (alice, alice_t) = client(dir.path(), "alice", &two_addr).await;
    let shard = alice_t.shard();
    until("the services and alice in one relay mesh", async || {
        one.relay_mesh_peers(shard).await.unwrap_or(0) >= 1
            && two.relay_mesh_peers(shard).await.unwrap_or(0) >= 2
    })
    .await;
    let named = peer_of(&one_addr);
    let (bob, bob_t) = light_client(dir.path(), "bob", &[one_addr, two_addr.clone()], |c| {
        *c = c.clone().with_store_peer(named).with_light_service(named);
        c.filter_ping_interval = Duration::from_millis(300);
        c.light_service_retry = Duration::from_secs(1);
    })
    .await;
    until("bob connected to both services", async || {
        bob_t.node().counters().metadata_admitted >= 2
    })
    .await;
    let mut alice_ev = alice.events();
    let mut bob_ev = bob.events();
    let g = group_of_two(&alice, &bob).await;
    let served = (
        one.counters().lightpush_served,
        two.counters().lightpush_served,
    );
    bob.send(&g, b"through service one").await.unwrap();
    assert_eq!(
        messages(&mut alice_ev, 1).await,
        [pair("bob", "through service one")]
    );
    assert!(one.counters().lightpush_served > served.0);
    assert_eq!(
        two.counters().lightpush_served,
        served.1,
        "the named service took everything"
    );
    assert_eq!(bob_t.filter_service().await, Some(named));

    // Service one stops; bob's node still has service two.
    one.shutdown().await.unwrap();
    let served = two.counters().lightpush_served;
    bob.send(&g, b"through service two").await.unwrap();
    assert_eq!(
        messages(&mut alice_ev, 1).await,
        [pair("bob", "through service two")]
    );
    assert!(two.counters().lightpush_served > served);
    until("bob's subscriptions moved to service two", async || {
        bob_t.filter_service().await == Some(two.peer_id())
    })
    .await;
    assert!(bob_t.counters().filter_service_moves >= 1);
    let pushed = bob_t.node().counters().filter_delivered;
    alice.send(&g, b"filtered by service two").await.unwrap();
    assert_eq!(
        messages(&mut bob_ev, 1).await,
        [pair("alice", "filtered by service two")]
    );
    assert!(
        bob_t.node().counters().filter_delivered > pushed,
        "the message came by a filter push, not only a catch-up"
    );

    // Service one is back (same address and identity): bob's subscriptions go back to
    // it, and service two holds none of his any more.
    let (one, _) = light_service(&one_dir, one_port, Some(&two_addr), None).await;
    assert_eq!(one.peer_id(), named);
    until("bob's subscriptions back at service one", async || {
        bob_t.filter_service().await == Some(named)
    })
    .await;
    assert!(bob_t.counters().filter_service_moves >= 2);
    until("service two left", async || {
        two.counters().filter_subscribers == 0
    })
    .await;
    until("service one meshed again", async || {
        one.relay_mesh_peers(shard).await.unwrap_or(0) >= 1
    })
    .await;
    let pushed = bob_t.node().counters().filter_delivered;
    alice
        .send(&g, b"filtered by service one again")
        .await
        .unwrap();
    assert_eq!(
        messages(&mut bob_ev, 1).await,
        [pair("alice", "filtered by service one again")]
    );
    assert!(bob_t.node().counters().filter_delivered > pushed);

    alice.shutdown().await;
    bob.shutdown().await;
    bob_t.node().clone().shutdown().await.unwrap();
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

/// A light client renews its subscriptions at every full catch-up (`Transport::subscribe`
/// for every topic): against a filter service with the default rate limit (30 requests a
/// minute per peer, the Nim node's too), that must cost no requests for the topics its
/// service holds, and topics refused with 429 are taken later without leaving the
/// service. Before, every renewal was a request, and a 429 moved every subscription off
/// the named service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_many_subscriptions_stays_within_a_services_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (service, addr) = light_service(
        &dir.path().join("named"),
        free_port(),
        None,
        Some(RateLimits::default()),
    )
    .await;
    // Another service the light client is connected to, so that a 429 taken for a
    // failure would move the subscriptions there.
    let (other, other_addr) =
        light_service(&dir.path().join("other"), free_port(), Some(&addr), None).await;
    let (sender, _) = transport(&addr).await;
    let named = peer_of(&addr);
    let mut light = relay::Config::new(CLUSTER).with_shards([]);
    light.heartbeat = Duration::from_millis(100);
    let mut node = NodeConfig::loopback()
        .with_bootstrap(addr.clone())
        .with_bootstrap(other_addr);
    node.listen.retain(|a| a.to_string().contains("/tcp/"));
    let mut config = net_waku::Config::default()
        .with_store_peer(named)
        .with_light_service(named);
    // One request per watch: a slower pace than the service's refill (one every 2 s).
    config.filter_ping_interval = Duration::from_secs(3);
    let (t, mut inbox) = WakuTransport::start(node.with_waku(light), config)
        .await
        .unwrap();
    until("connected to both services", async || {
        t.node().counters().metadata_admitted >= 2
    })
    .await;
    let topics: Vec<Topic> = (0..40).map(|i| Topic::from_group_id(&[i; 16])).collect();
    for topic in &topics[..20] {
        t.subscribe(topic).await.unwrap();
    }
    let requests = || {
        let c = service.counters();
        c.filter_requests_served + c.filter_requests_refused
    };
    let before = requests();
    // Renewals of held topics send nothing.
    for _ in 0..3 {
        for topic in &topics[..20] {
            t.subscribe(topic).await.unwrap();
        }
    }
    // (At most one request is the watcher's ping, every 3 s.)
    assert!(
        requests() <= before + 1,
        "renewals of held topics cost no request: {} more",
        requests() - before
    );
    // Twenty more: the service's rate refuses some (429); they are taken with the
    // watcher's next request, and the subscriptions stay with the named service.
    let mut refused = 0;
    for topic in &topics[20..] {
        refused += usize::from(t.subscribe(topic).await.is_err());
    }
    assert!(refused > 0, "the rate limit was reached");
    assert!(service.counters().filter_requests_refused > 0);
    let last = topics.last().unwrap();
    let mut n = 0u8;
    until("the last topic is delivered by filter", async || {
        n += 1;
        let _ = sender.publish(last, big_payload(64, n)).await;
        tokio::time::timeout(Duration::from_millis(300), inbox.next())
            .await
            .ok()
            .flatten()
            .is_some_and(|m| m.topic == *last)
    })
    .await;
    assert_eq!(t.filter_service().await, Some(named));
    assert_eq!(t.counters().filter_service_moves, 0);
    assert_eq!(
        other.counters().filter_subscribers,
        0,
        "nothing went elsewhere"
    );
    t.node().clone().shutdown().await.unwrap();
    service.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

/// A hostile store: answers metadata as a node of [`CLUSTER`], and every store query with
/// one entry of another content topic and a pagination cursor, for ever.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct EndlessStore {
    metadata: libp2p::request_response::Behaviour<pqmls_transport::waku::metadata::Codec>,
    store: libp2p::request_response::Behaviour<pqmls_transport::waku::store::Codec>,
}

/// Starts an [`EndlessStore`] on loopback that answers each query `delay` after it came;
/// returns its address and the count of queries it received.
async fn endless_store(
    delay: Duration,
) -> (
    Multiaddr,
    Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    use libp2p::request_response::{self as rr, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{StreamProtocol, noise, tcp, yamux};
    use pqmls_transport::waku::metadata::{self, Metadata};
    use pqmls_transport::waku::store::{self as wstore, KeyValue, QueryResponse};
    use std::sync::atomic::{AtomicU64, Ordering};

    let behaviour = EndlessStore {
        metadata: rr::Behaviour::with_codec(
            metadata::Codec,
            [(
                StreamProtocol::new(metadata::PROTOCOL),
                ProtocolSupport::Full,
            )],
            rr::Config::default(),
        ),
        store: rr::Behaviour::with_codec(
            wstore::Codec::new("store", wstore::MAX_REQUEST, wstore::MAX_RESPONSE),
            [(
                StreamProtocol::new(wstore::PROTOCOL),
                ProtocolSupport::Inbound,
            )],
            rr::Config::default(),
        ),
    };
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
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
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address.with(Protocol::P2p(*swarm.local_peer_id()));
        }
    };
    let queries = Arc::new(AtomicU64::new(0));
    let counted = queries.clone();
    let server = tokio::spawn(async move {
        let mut n = 0u8;
        // Answers held back until their time.
        let mut held: std::collections::VecDeque<(tokio::time::Instant, _, QueryResponse)> =
            std::collections::VecDeque::new();
        loop {
            let due = held.front().map(|(t, _, _)| *t);
            let event = tokio::select! {
                e = swarm.select_next_some() => Some(e),
                () = async {
                    match due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => None,
            };
            let Some(event) = event else {
                if let Some((_, channel, response)) = held.pop_front() {
                    let _ = swarm.behaviour_mut().store.send_response(channel, response);
                }
                continue;
            };
            match event {
                SwarmEvent::Behaviour(EndlessStoreEvent::Metadata(rr::Event::Message {
                    message: rr::Message::Request { channel, .. },
                    ..
                })) => {
                    let ours = Metadata {
                        cluster_id: Some(u32::from(CLUSTER)),
                        shards: (0..8).collect(),
                    };
                    let _ = swarm.behaviour_mut().metadata.send_response(channel, ours);
                }
                SwarmEvent::Behaviour(EndlessStoreEvent::Store(rr::Event::Message {
                    message:
                        rr::Message::Request {
                            request, channel, ..
                        },
                    ..
                })) => {
                    let pqmls_transport::waku::framing::Framed::Message(request) = request else {
                        continue;
                    };
                    counted.fetch_add(1, Ordering::Relaxed);
                    n = n.wrapping_add(1);
                    let shard = request.pubsub_topic.clone().unwrap_or_default();
                    let m = WakuMessage::new("/other/1/app/proto", vec![n]).with_timestamp(1);
                    let entry = KeyValue {
                        message_hash: Some(message_hash(&shard, &m).0.to_vec()),
                        message: Some(m),
                        pubsub_topic: Some(shard),
                    };
                    let response = QueryResponse {
                        request_id: request.request_id,
                        status_code: Some(wstore::STATUS_OK),
                        status_desc: Some("OK".into()),
                        messages: vec![entry],
                        pagination_cursor: Some(vec![n; 32]),
                    };
                    held.push_back((tokio::time::Instant::now() + delay, channel, response));
                }
                _ => {}
            }
        }
    });
    (addr, queries, server)
}

/// History from a store that pages for ever ends, bounded, instead of following it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_pages_for_ever_is_not_followed_for_ever() {
    use std::sync::atomic::Ordering;

    let (addr, queries, server) = endless_store(Duration::ZERO).await;
    let mut config = net_waku::Config::default().with_store_peer(peer_of(&addr));
    config.history_messages = 10;
    let (t, _inbox) = WakuTransport::start(waku_node().with_bootstrap(addr), config)
        .await
        .unwrap();
    until("admitted by the metadata gate", async || {
        t.node().counters().metadata_admitted > 0
    })
    .await;
    let topic = Topic::from_group_id(b"any");
    let read = tokio::time::timeout(STEP, t.history(&topic, Cursor::beginning()))
        .await
        .expect("history returns");
    // It lists junk and looks nothing up: an error, so that the next store is asked.
    assert!(
        matches!(read, Err(pqmls_transport::Error::Request(_))),
        "{read:?}"
    );
    // At most twice the bound plus a page of entries are listed (one entry per page
    // here), then one lookup of the first 10 hashes listed (`history_messages`), whose
    // answer brings nothing asked for and so ends the lookups.
    let asked = queries.load(Ordering::Relaxed);
    assert!((100..=121).contains(&asked), "{asked} queries");
    server.abort();
}

/// A store that answers every query slowly (here 200 ms, a page for ever) holds a history
/// read at most `store_deadline`; then the read fails (so that the next store is asked),
/// where it would otherwise take the ~120 queries of the bounds, about 24 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_holds_a_read_no_longer_than_the_deadline() {
    use std::sync::atomic::Ordering;

    let (addr, queries, server) = endless_store(Duration::from_millis(200)).await;
    let mut config = net_waku::Config::default().with_store_peer(peer_of(&addr));
    config.history_messages = 10;
    config.store_deadline = Duration::from_secs(1);
    let (t, _inbox) = WakuTransport::start(waku_node().with_bootstrap(addr), config)
        .await
        .unwrap();
    until("admitted by the metadata gate", async || {
        t.node().counters().metadata_admitted > 0
    })
    .await;
    let topic = Topic::from_group_id(b"any");
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(STEP, t.history(&topic, Cursor::beginning()))
        .await
        .expect("history returns");
    let took = started.elapsed();
    assert!(
        matches!(&read, Err(pqmls_transport::Error::Request(why)) if why.contains("deadline")),
        "{read:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    let asked = queries.load(Ordering::Relaxed);
    // One query every 200 ms at most, for a second.
    assert!((1..=6).contains(&asked), "{asked} queries in {took:?}");
    server.abort();
}

/// On a network whose relay limit is below a PQ Welcome and commit (6 KiB), the client's
/// own traffic goes segmented: invitations, a commit, messages, and an offline member's
/// catch-up reassembling a segmented commit from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_traffic_above_the_relay_limit_goes_segmented() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node_limited(&dir.path().join("store"), SMALL_LIMIT).await;
    let start = async |name: &str| client_limited(dir.path(), name, &bootstrap, SMALL_LIMIT).await;
    let (alice, alice_t) = start("alice").await;
    let (bob, bob_t) = start("bob").await;
    let (carol, carol_t) = start("carol").await;
    let mut alice_ev = alice.events();
    let mut bob_ev = bob.events();
    let mut carol_ev = carol.events();
    let g = group_of_three(&alice, (&bob, &mut bob_ev), (&carol, &mut carol_ev)).await;
    // The Welcomes and add commits went out in segments and came back whole.
    assert!(
        alice_t.counters().segmented >= 2,
        "{:?}",
        alice_t.counters()
    );
    assert!(
        carol_t.counters().reassembled >= 1,
        "{:?}",
        carol_t.counters()
    );

    alice.send(&g, b"small message").await.unwrap();
    assert_eq!(
        messages(&mut bob_ev, 1).await,
        [pair("alice", "small message")]
    );
    // Carol goes away; bob commits (segmented); carol catches up from the store.
    carol.shutdown().await;
    carol_t.node().clone().shutdown().await.unwrap();
    drop(carol_ev);
    let before = bob_t.counters().segmented;
    bob.update(&g).await.unwrap();
    agree(&[&alice, &bob], &g, 3).await;
    assert!(bob_t.counters().segmented > before);
    // A message too large for one relay message: only the store has it for carol
    // (members send commits again to those who missed them, not application messages).
    let long = "x".repeat(10_000);
    bob.send(&g, long.as_bytes()).await.unwrap();
    assert_eq!(messages(&mut alice_ev, 1).await, [pair("bob", &long)]);
    let (carol, _) = start("carol").await;
    until(
        "carol caught up through segments in the store",
        async || {
            carol.sync().await.is_ok()
                && carol.status(&g).await.is_ok_and(|s| s.epoch == 3)
                && carol
                    .history(&g, 100)
                    .await
                    .is_ok_and(|h| h.iter().any(|m| m.body == long.as_bytes()))
        },
    )
    .await;
    agree(&[&alice, &bob, &carol], &g, 3).await;

    for c in [alice, bob, carol] {
        c.shutdown().await;
    }
    store.shutdown().await.unwrap();
}

/// The same payload published again, by its author or by another member (a republished
/// commit, an answer to a `Need`), goes over relay once within the duplicate window: the
/// copies are refused as duplicates, as the pqmls gossip refuses them, instead of each
/// being a new relay message (its timestamp differs) forwarded to every node and archived
/// by the store. Without this a 20-member group on 0x004F answered each `Need` with 19
/// copies of the commit and its votes (BENCHMARKS.md, "The SDK end-to-end cells on Waku").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_goes_over_relay_once_whoever_publishes_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, _alice_in) = transport(&bootstrap).await;
    let (bob, mut bob_in) = transport(&bootstrap).await;
    let (carol, mut carol_in) = transport(&bootstrap).await;
    let topic = Topic::from_group_id(b"a group that asks twice");
    for t in [&alice, &bob, &carol] {
        t.subscribe(&topic).await.unwrap();
    }
    let shard = alice.shard();
    for t in [&alice, &bob, &carol] {
        until("relay mesh", async || {
            t.node().relay_mesh_peers(shard).await.unwrap() > 0
        })
        .await;
    }
    let stored_before = store.counters().stored;

    let payload = big_payload(9 * 1024, 3);
    let id = alice.publish(&topic, payload.clone()).await.unwrap();
    assert_eq!(next_message(&mut bob_in).await.id, id);
    assert_eq!(next_message(&mut carol_in).await.id, id);
    // Published again by its author and by a member that received it: not sent.
    assert!(matches!(
        alice.publish(&topic, payload.clone()).await,
        Err(pqmls_transport::Error::Duplicate)
    ));
    assert!(matches!(
        bob.publish(&topic, payload.clone()).await,
        Err(pqmls_transport::Error::Duplicate)
    ));
    assert_eq!(alice.counters().duplicates_not_published, 1);
    assert_eq!(bob.counters().duplicates_not_published, 1);

    // A copy someone else publishes anyway (a member without the cache, a stranger) is
    // relayed, but not delivered again.
    let raw = WakuMessage::new(
        format!(
            "/pqmls/1/{}/proto",
            topic.as_str().trim_start_matches("/pqmls/group/1/")
        ),
        payload.clone(),
    )
    .with_timestamp(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        )
        .unwrap(),
    );
    store.relay_publish_on(shard, raw).await.unwrap();
    // Then a new payload, which goes: the copy, had it been delivered, would come first.
    let other = big_payload(1024, 4);
    let other_id = carol.publish(&topic, other).await.unwrap();
    assert_eq!(next_message(&mut bob_in).await.id, other_id);
    until("bob dropped the copy", async || {
        bob.counters().duplicates == 1
    })
    .await;
    // The store archived the first publication, the raw copy and the new payload: the
    // refused publications never reached relay.
    until("the store archived the new payload", async || {
        store.counters().stored - stored_before >= 3
    })
    .await;
    assert_eq!(store.counters().stored - stored_before, 3);

    store.shutdown().await.unwrap();
}

/// A catch-up asks the store for hashes first and fetches only what the client has not
/// handled: messages it handled off relay are left out (the cursor goes past them), a
/// message it deferred and one it missed are fetched, and its own publications come from
/// memory (they are the delivery evidence it reads back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_fetches_only_what_the_client_has_not_handled() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, _alice_in) = transport(&bootstrap).await;
    let (bob, mut bob_in) = transport(&bootstrap).await;
    let topic = Topic::from_group_id(b"a group that catches up by hash");
    for t in [&alice, &bob] {
        t.subscribe(&topic).await.unwrap();
    }
    let shard = alice.shard();
    for t in [&alice, &bob] {
        until("relay mesh", async || {
            t.node().relay_mesh_peers(shard).await.unwrap() > 0
        })
        .await;
    }
    let stored_before = store.counters().stored;
    let (p1, p2, p3) = (
        big_payload(9 * 1024, 11),
        big_payload(9 * 1024, 12),
        big_payload(9 * 1024, 13),
    );
    let id1 = alice.publish(&topic, p1.clone()).await.unwrap();
    assert_eq!(next_message(&mut bob_in).await.id, id1);
    let id2 = alice.publish(&topic, p2.clone()).await.unwrap();
    assert_eq!(next_message(&mut bob_in).await.id, id2);
    // Bob handles the first; the second he defers (never reported).
    bob.handled(&id1);
    // The third he misses: not subscribed while it goes out.
    bob.unsubscribe(&topic).await.unwrap();
    let id3 = alice.publish(&topic, p3.clone()).await.unwrap();
    until("the store archived all three", async || {
        store.counters().stored - stored_before >= 3
    })
    .await;
    bob.subscribe(&topic).await.unwrap();

    let page = bob.history(&topic, Cursor::beginning()).await.unwrap();
    let ids: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&id2) && ids.contains(&id3) && !ids.contains(&id1));
    assert!(page.next.is_none());
    let c = bob.counters();
    assert_eq!((c.history_fetched, c.history_left_out), (2, 1));
    // The bytes came as asked: each payload whole and intact.
    for m in &page.messages {
        assert!(m.data == p2 || m.data == p3);
    }

    // Once he has handled everything, a read fetches nothing and moves past it all.
    bob.handled(&id2);
    bob.handled(&id3);
    let again = bob.history(&topic, Cursor::beginning()).await.unwrap();
    assert!(again.messages.is_empty());
    let resume = again
        .resume
        .expect("the cursor goes past what was left out");
    let last = page
        .messages
        .iter()
        .map(|m| Cursor::after(m).after_ms())
        .max()
        .unwrap();
    assert!(resume.after_ms() >= last);
    assert_eq!(bob.counters().history_fetched, 2);
    assert_eq!(bob.counters().history_left_out, 4);

    // Alice's own publications come from memory: nothing fetched, all three returned.
    let own = alice.history(&topic, Cursor::beginning()).await.unwrap();
    let mut own_ids: Vec<MessageId> = own.messages.iter().map(|m| m.id).collect();
    own_ids.sort();
    let mut want = vec![id1, id2, id3];
    want.sort();
    assert_eq!(own_ids, want);
    assert_eq!(alice.counters().history_fetched, 0);
    assert_eq!(alice.counters().history_left_out, 3);

    store.shutdown().await.unwrap();
}

/// The same for a payload relay brought in segments: once handled, none of its segments
/// is fetched again (parity segments that came after it completed included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_leaves_out_the_segments_of_a_handled_payload() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node_limited(&dir.path().join("store"), SMALL_LIMIT).await;
    let (alice, _alice_in) = transport_limited(&bootstrap, SMALL_LIMIT).await;
    let (bob, mut bob_in) = transport_limited(&bootstrap, SMALL_LIMIT).await;
    let topic = Topic::from_group_id(b"a group with segmented traffic");
    for t in [&alice, &bob] {
        t.subscribe(&topic).await.unwrap();
    }
    let shard = alice.shard();
    for t in [&alice, &bob] {
        until("relay mesh", async || {
            t.node().relay_mesh_peers(shard).await.unwrap() > 0
        })
        .await;
    }
    let stored_before = store.counters().stored;
    let payload = big_payload(12 * 1024, 21);
    let id = alice.publish(&topic, payload.clone()).await.unwrap();
    assert_eq!(alice.counters().segmented, 1);
    assert_eq!(next_message(&mut bob_in).await.id, id);
    // 12 KiB in 1 KiB segments: 13 data segments and their parity.
    until("the store archived the segments", async || {
        store.counters().stored - stored_before >= 13
    })
    .await;
    // Let the last segments (parity after completion) reach Bob and the store too.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Not handled yet: the catch-up fetches the segments and reassembles the payload.
    let page = bob.history(&topic, Cursor::beginning()).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].data, payload);
    let listed = bob.counters().history_fetched;
    assert!(listed >= 13, "{listed} segments");
    // Handled: nothing is fetched, every segment is left out: those relay brought, and
    // those it did not (parity sent after the payload completed), remembered from the
    // read above as segments of a payload relay completed.
    bob.handled(&id);
    let again = bob.history(&topic, Cursor::beginning()).await.unwrap();
    assert!(again.messages.is_empty());
    assert_eq!(bob.counters().history_fetched, listed);
    assert_eq!(bob.counters().history_left_out, listed);

    store.shutdown().await.unwrap();
}

/// A stranger's flood of junk stamped at one instant, more than one page may fetch, does
/// not stop a catch-up: the pages go on after that millisecond (the flood rule) and reach
/// the genuine message behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_at_one_instant_does_not_stop_a_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, _alice_in) = transport(&bootstrap).await;
    let mut config = net_waku::Config::default().with_store_peer(peer_of(&bootstrap));
    config.history_messages = 5;
    let (bob, _bob_in) =
        WakuTransport::start(waku_node().with_bootstrap(bootstrap.clone()), config)
            .await
            .unwrap();
    let topic = Topic::from_group_id(b"a flooded group");
    alice.subscribe(&topic).await.unwrap();
    let shard = alice.shard();
    until("relay mesh", async || {
        alice.node().relay_mesh_peers(shard).await.unwrap() > 0
    })
    .await;
    let stored_before = store.counters().stored;
    let now_ns = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    let content_topic = format!(
        "/pqmls/1/{}/proto",
        topic.as_str().trim_start_matches("/pqmls/group/1/")
    );
    for i in 0..8u8 {
        let junk = WakuMessage::new(content_topic.clone(), vec![0xEE, i, 1, 2, 3])
            .with_timestamp(now_ns - 10_000_000_000);
        store.relay_publish_on(shard, junk).await.unwrap();
    }
    let id = alice.publish(&topic, big_payload(1024, 31)).await.unwrap();
    until("the store archived the flood and the message", async || {
        store.counters().stored - stored_before >= 9
    })
    .await;

    let mut from = Cursor::beginning();
    let mut got = Vec::new();
    for _ in 0..6 {
        let page = bob.history(&topic, from).await.unwrap();
        got.extend(page.messages.iter().map(|m| m.id));
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(got, vec![id]);

    store.shutdown().await.unwrap();
}

/// A client told of no store finds one among its peers (the store announces store v3 over
/// identify) and reads history from it (the directory's reads go the same way); a
/// relay-only peer is not taken
/// for one, and with discovery off a client without named stores has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_told_of_no_store_finds_one_among_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, _alice_in) = transport(&bootstrap).await;
    let topic = Topic::from_group_id(b"a group whose store nobody named");
    alice.subscribe(&topic).await.unwrap();
    let shard = alice.shard();
    until("relay mesh", async || {
        alice.node().relay_mesh_peers(shard).await.unwrap() > 0
    })
    .await;
    let id = alice.publish(&topic, big_payload(512, 21)).await.unwrap();
    until("the store archived it", async || {
        store.counters().stored >= 1
    })
    .await;

    // A relay-only node between: connected to it, it is not a store.
    let (relay_only, _) = Node::start(waku_node().with_bootstrap(bootstrap.clone()))
        .await
        .unwrap();
    let relay_addr = relay_only.listen_addrs().await.unwrap().remove(0);
    let unnamed = |discovered: usize| {
        let mut config = net_waku::Config::default();
        config.discovered_stores = discovered;
        config
    };
    let node = |addr: &Multiaddr| {
        waku_node()
            .with_bootstrap(addr.clone())
            .with_bootstrap(bootstrap.clone())
    };
    let (bob, _bob_in) = WakuTransport::start(node(&relay_addr), unnamed(2))
        .await
        .unwrap();
    let (carol, _carol_in) = WakuTransport::start(node(&relay_addr), unnamed(0))
        .await
        .unwrap();
    until("bob sees the store", async || {
        bob.node()
            .service_peers(pqmls_transport::WakuService::Store)
            .await
            .unwrap()
            == vec![store.peer_id()]
    })
    .await;
    let page = bob.history(&topic, Cursor::beginning()).await.unwrap();
    let ids: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![id]);

    // Carol is connected to the same store but asks only named ones: none.
    until("carol is connected to the store", async || {
        carol.node().counters().metadata_admitted >= 2
    })
    .await;
    assert!(matches!(
        carol.history(&topic, Cursor::beginning()).await,
        Err(pqmls_transport::Error::NoStore)
    ));
    relay_only.shutdown().await.unwrap();
    store.shutdown().await.unwrap();
}

/// A member whose relay lost a commit (everything else arrives) learns from the others'
/// votes that it misses the commit ending its epoch, catches the group's topic up at
/// once, and fetches by hash what it does not hold, the commit among it: it reaches the
/// new epoch long before the periodic catch-up (60 s), and without the members' answers
/// to its `Need` (a payload seen on relay within two minutes is not published again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_a_commit_on_relay_fetches_it_from_the_store_by_hash() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, _) = client(dir.path(), "alice", &bootstrap).await;
    let (carol, _) = client(dir.path(), "carol", &bootstrap).await;
    // Bob's relay inbox drops the first commit (MLS handshake envelope) once armed.
    let (bob_t, bob_inbox) = transport(&bootstrap).await;
    let armed = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (a, d) = (armed.clone(), dropped.clone());
    let bob_inbox: pqmls::Inbox = bob_inbox
        .filter(move |m| {
            let lose =
                m.data.first() == Some(&common::HANDSHAKE) && a.swap(false, Ordering::SeqCst);
            if lose {
                d.fetch_add(1, Ordering::SeqCst);
            }
            futures::future::ready(!lose)
        })
        .boxed();
    let c = client_config(dir.path(), "bob");
    assert_eq!(c.sync_interval, Some(Duration::from_secs(60)));
    let bob = Client::open(c, bob_t.clone(), bob_inbox).await.unwrap();

    let mut bob_ev = bob.events();
    let mut carol_ev = carol.events();
    let g = group_of_three(&alice, (&bob, &mut bob_ev), (&carol, &mut carol_ev)).await;

    let before = bob_t.counters();
    armed.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    carol.update(&g).await.unwrap();
    agree(&[&alice, &bob, &carol], &g, 3).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "bob's relay lost the commit"
    );
    let after = bob_t.counters();
    assert!(
        after.history_fetched > before.history_fetched,
        "the commit came from the store: {before:?} -> {after:?}"
    );
    assert!(
        after.history_left_out > before.history_left_out,
        "what bob held was not fetched again: {before:?} -> {after:?}"
    );
    // And the group goes on with bob in it.
    bob.send(&g, b"back at the new epoch").await.unwrap();
    assert_eq!(
        messages(&mut carol_ev, 1).await,
        [pair("bob", "back at the new epoch")]
    );
    for c in [alice, bob, carol] {
        c.shutdown().await;
    }
    store.shutdown().await.unwrap();
}

/// A store, alice's transport on it, and mallory: a raw Waku node beside them that
/// watches what goes over relay and publishes what it likes; all in one relay mesh.
struct Stage {
    _dir: tempfile::TempDir,
    store: Node,
    bootstrap: Multiaddr,
    alice: Arc<WakuTransport>,
    _alice_in: Inbox,
    mallory: Node,
    watch: pqmls_transport::node::RelayInbound,
}

async fn stage() -> Stage {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, alice_in) = transport(&bootstrap).await;
    let (mallory, _) = Node::start(waku_node().with_bootstrap(bootstrap.clone()))
        .await
        .unwrap();
    let watch = mallory.relay_inbound().unwrap();
    let shard = alice.shard();
    for n in [alice.node(), &mallory] {
        until("relay mesh", async || {
            n.relay_mesh_peers(shard).await.unwrap() > 0
        })
        .await;
    }
    Stage {
        _dir: dir,
        store,
        bootstrap,
        alice,
        _alice_in: alice_in,
        mallory,
        watch,
    }
}

impl Stage {
    /// Alice publishes a segmented payload (200 KiB) on `topic`; returns the first of its
    /// segments mallory saw on relay (so its content topic and timestamp) and how many
    /// segments it went out in.
    async fn probe(&mut self, topic: &Topic, seed: u8) -> (WakuMessage, usize) {
        let probe = big_payload(200 * 1024, seed);
        let segments = segmentation::segment(&probe, &segmentation::Config::default())
            .unwrap()
            .len();
        self.alice.publish(topic, probe).await.unwrap();
        let first = tokio::time::timeout(STEP, self.watch.recv())
            .await
            .unwrap()
            .unwrap()
            .message;
        assert!(
            first.content_topic.ends_with("/seg"),
            "{}",
            first.content_topic
        );
        (first, segments)
    }
}

/// A stranger's fake first segments by the hundred, stored between a genuine segmented
/// payload's segments, do not push that payload out of a history read: segments are
/// reassembled message by message (DESIGN, "Over Waku", flood finding 2; with one shared
/// reassembler of 64 pending messages, 70 fakes after each segment evicted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_first_segments_do_not_push_a_payload_out_of_history() {
    let mut stage = stage().await;
    let topic = Topic::from_group_id(b"a group with a flooded segment topic");
    // Alice's own payload goes out segmented; mallory learns its segment topic from it.
    let (first, probe_segments) = stage.probe(&topic, 5).await;
    let Stage {
        _dir,
        store,
        bootstrap,
        alice,
        _alice_in,
        mallory,
        ..
    } = stage;
    let shard = alice.shard();
    let seg_topic = first.content_topic.clone();

    // The genuine payload, published by mallory as anyone could, each of its segments
    // followed by 70 fake first segments of 70 other messages (more than the 64 messages a
    // reassembler holds at once, so that parity cannot make up for the evicted ones).
    let payload = big_payload(300 * 1024, 6);
    let genuine = segmentation::segment(&payload, &segmentation::Config::default()).unwrap();
    assert!(genuine.len() >= 3);
    let ts = first.timestamp.unwrap() + 1_000_000_000;
    let publish = async |bytes: Vec<u8>, ts: i64| {
        let m = WakuMessage::new(seg_topic.clone(), bytes).with_timestamp(ts);
        mallory.relay_publish_on(shard, m).await.unwrap();
    };
    let mut fakes = 0usize;
    for (k, segment) in genuine.iter().enumerate() {
        let at = ts + 1_000_000 * k as i64;
        publish(segment.clone(), at).await;
        for i in 0..70u8 {
            let mut fake: SegmentMessage = prost::Message::decode(genuine[0].as_slice()).unwrap();
            fake.entire_message_hash = vec![i; 32];
            fake.entire_message_hash[0] = k as u8;
            fake.payload.truncate(64);
            publish(prost::Message::encode_to_vec(&fake), at + 1 + i64::from(i)).await;
            fakes += 1;
        }
    }
    let stored = probe_segments + genuine.len() + fakes;
    until("the store has every segment", async || {
        store.counters().stored as usize >= stored
    })
    .await;

    let (bob, _bob_in) = transport(&bootstrap).await;
    let page = bob.history(&topic, Cursor::beginning()).await.unwrap();
    assert!(
        page.messages.iter().any(|m| m.data == payload),
        "the genuine payload is missing: {} messages, {:?}",
        page.messages.len(),
        bob.counters(),
    );
    assert!(page.next.is_none(), "one page holds it all");
    store.shutdown().await.unwrap();
}

/// Junk stamped with an honest message's very timestamp (anyone may stamp anything), more
/// than one history page holds and all ordered before it by the store: the catch-up goes
/// on within that millisecond from the store's own position and still brings the honest
/// message (DESIGN, "Over Waku", flood finding 1; before, the page after the flood
/// started at the next millisecond and the message was skipped for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_at_an_honest_messages_instant_does_not_hide_it_from_a_catch_up() {
    let Stage {
        _dir,
        store,
        bootstrap,
        alice,
        _alice_in,
        mallory,
        mut watch,
    } = stage().await;
    let shard = alice.shard();
    let topic = Topic::from_group_id(b"a group flooded at one instant");
    let honest = big_payload(64, 8);
    let id = alice.publish(&topic, honest.clone()).await.unwrap();
    let seen = tokio::time::timeout(STEP, watch.recv())
        .await
        .unwrap()
        .unwrap()
        .message;
    let honest_hash = message_hash(&shard.to_string(), &seen);
    // 40 junk messages on the same content topic and timestamp, each ordered before the
    // honest one (ground: smaller message hash).
    let mut junk = 0usize;
    for n in 0u32.. {
        if junk == 40 {
            break;
        }
        let m = WakuMessage::new(seen.content_topic.clone(), n.to_be_bytes().to_vec())
            .with_timestamp(seen.timestamp.unwrap());
        if message_hash(&shard.to_string(), &m) < honest_hash {
            mallory.relay_publish_on(shard, m).await.unwrap();
            junk += 1;
        }
    }
    until("the store has them all", async || {
        store.counters().stored >= 41
    })
    .await;

    // Bob catches up 10 messages a page: 4 pages of junk before the honest message.
    let mut config = net_waku::Config::default().with_store_peer(peer_of(&bootstrap));
    config.history_messages = 10;
    let (bob, _bob_in) =
        WakuTransport::start(waku_node().with_bootstrap(bootstrap.clone()), config)
            .await
            .unwrap();
    until("bob admitted", async || {
        bob.node().counters().metadata_admitted > 0
    })
    .await;
    let mut got = Vec::new();
    let mut from = Cursor::beginning();
    let mut pages = 0;
    let resume = loop {
        let page = bob.history(&topic, from).await.unwrap();
        pages += 1;
        got.extend(page.messages.into_iter().map(|m| m.id));
        match page.next {
            Some(n) if pages < 20 => from = n,
            _ => break page.resume,
        }
    };
    assert_eq!(got, vec![id], "after {pages} pages");
    assert!(pages >= 5, "{pages} pages");
    // The last page sends the cursor past the flooded millisecond, so that the next
    // catch-up does not read the flood again.
    let flood_ms = u64::try_from(seen.timestamp.unwrap() / 1_000_000).unwrap();
    assert_eq!(resume, Some(Cursor::from_parts(flood_ms + 1, None)));
    // Each junk message fetched once, but for the first page's 10: read from the start
    // of time, it was cut at the flood's millisecond and kept only what came before it
    // (nothing), as any page cut after its first millisecond does.
    assert_eq!(bob.counters().history_fetched, 41 + 10);
    store.shutdown().await.unwrap();
}

/// A segment forged under one subscribed topic ahead of a genuine payload on another does
/// not take a slot of it: relay reassembles per content topic (DESIGN, "Over Waku", flood
/// finding 3; keyed by the payload hash alone, the genuine payload failed its hash and
/// was lost on relay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_forged_under_another_topic_does_not_spoil_a_payload_on_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (store, bootstrap) = store_node(&dir.path().join("store")).await;
    let (alice, _alice_in) = transport(&bootstrap).await;
    let (bob, mut bob_in) = transport(&bootstrap).await;
    let (mallory, _) = Node::start(waku_node().with_bootstrap(bootstrap.clone()))
        .await
        .unwrap();
    let mut watch = mallory.relay_inbound().unwrap();
    let (t1, t2) = (
        Topic::from_group_id(b"first group"),
        Topic::from_group_id(b"second group"),
    );
    for t in [&t1, &t2] {
        bob.subscribe(t).await.unwrap();
    }
    let shard = alice.shard();
    for n in [alice.node(), bob.node(), &mallory] {
        until("relay mesh", async || {
            n.relay_mesh_peers(shard).await.unwrap() > 0
        })
        .await;
    }
    // Mallory learns both topics' segment content topics from alice's segmented traffic.
    async fn seg_topic(
        t: &Topic,
        alice: &WakuTransport,
        watch: &mut pqmls_transport::node::RelayInbound,
        bob_in: &mut pqmls::Inbox,
    ) -> String {
        let probe = big_payload(200 * 1024, 9);
        alice.publish(t, probe).await.unwrap();
        assert_eq!(&next_message(bob_in).await.topic, t);
        loop {
            let m = tokio::time::timeout(STEP, watch.recv())
                .await
                .unwrap()
                .unwrap()
                .message;
            if m.content_topic.ends_with("/seg") {
                // The probe's other segments.
                for _ in 0..3 {
                    let _ = tokio::time::timeout(STEP, watch.recv()).await;
                }
                return m.content_topic;
            }
        }
    }
    let seg1 = seg_topic(&t1, &alice, &mut watch, &mut bob_in).await;
    let seg2 = seg_topic(&t2, &alice, &mut watch, &mut bob_in).await;
    assert_ne!(seg1, seg2);

    // A payload for the first group, published whole by anyone; its segment 0 forged and
    // sent first under the second group's topic.
    let payload = big_payload(300 * 1024, 10);
    let genuine = segmentation::segment(&payload, &segmentation::Config::default()).unwrap();
    let mut forged: SegmentMessage = prost::Message::decode(genuine[0].as_slice()).unwrap();
    forged.payload[0] ^= 1;
    let ts = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    let forged_msg =
        WakuMessage::new(seg2.clone(), prost::Message::encode_to_vec(&forged)).with_timestamp(ts);
    mallory.relay_publish_on(shard, forged_msg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &genuine {
        let m = WakuMessage::new(seg1.clone(), s.clone()).with_timestamp(ts);
        mallory.relay_publish_on(shard, m).await.unwrap();
    }
    let got = next_message(&mut bob_in).await;
    assert_eq!(got.topic, t1);
    assert!(got.data == payload);
    store.shutdown().await.unwrap();
}

/// A store that failed a read (here by passing the deadline) is asked after the others for
/// a while: the next read goes to the honest store first and does not wait on it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_failed_is_asked_last_for_a_while() {
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let (honest, honest_addr) = store_node(&dir.path().join("store")).await;
    let (slow_addr, queries, server) = endless_store(Duration::from_millis(200)).await;
    let mut config = net_waku::Config::default()
        .with_store_peer(peer_of(&slow_addr))
        .with_store_peer(peer_of(&honest_addr));
    config.history_messages = 10;
    config.store_deadline = Duration::from_secs(1);
    let node = waku_node()
        .with_bootstrap(slow_addr)
        .with_bootstrap(honest_addr);
    let (t, _inbox) = WakuTransport::start(node, config).await.unwrap();
    until("both admitted", async || {
        t.node().counters().metadata_admitted >= 2
    })
    .await;
    let topic = Topic::from_group_id(b"any");
    let started = std::time::Instant::now();
    t.history(&topic, Cursor::beginning()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the slow store first"
    );
    let asked = queries.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    t.history(&topic, Cursor::beginning()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        queries.load(Ordering::Relaxed),
        asked,
        "the slow store was not asked"
    );
    server.abort();
    honest.shutdown().await.unwrap();
}

/// A member that comes back while its store is down catches up by itself once the store
/// is back (same address and identity): its node dials the store again with backoff and
/// the client tries the failed catch-up again, with nobody calling `sync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_resumes_when_the_store_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store_dir = dir.path().join("store");
    let start_store = async || {
        let mut c = waku_node().with_store(&store_dir, store::Config::default());
        c.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
        c.data_dir = Some(store_dir.clone());
        let (node, _) = Node::start(c).await.unwrap();
        let addr = node.listen_addrs().await.unwrap().remove(0);
        (node, addr)
    };
    let (store, bootstrap) = start_store().await;
    let (alice, _) = client(dir.path(), "alice", &bootstrap).await;
    let (bob, bob_t) = client(dir.path(), "bob", &bootstrap).await;
    let mut bob_ev = bob.events();
    pqmls::wait_for_key_packages(&alice, &bob.id())
        .await
        .unwrap();
    let g = alice.create_group().await.unwrap();
    alice.invite(&g, &bob.id()).await.unwrap();
    expect_event(
        &mut bob_ev,
        "bob joined",
        |e| matches!(e, Event::Joined { group, .. } if *group == g),
    )
    .await;
    agree(&[&alice, &bob], &g, 1).await;

    // Bob goes away; alice writes; the store takes it and then goes down.
    bob.shutdown().await;
    bob_t.node().clone().shutdown().await.unwrap();
    drop(bob_ev);
    let stored = store.counters().stored;
    alice.send(&g, b"while bob was away").await.unwrap();
    until("the store took it", async || {
        store.counters().stored > stored
    })
    .await;
    store.shutdown().await.unwrap();

    // Bob comes back while the store is down: his catch-up fails.
    let (bob, bob_t) = client(dir.path(), "bob", &bootstrap).await;
    let mut bob_ev = bob.events();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bob_t.node().counters().connected_peers, 0);
    assert!(
        bob.history(&g, 10)
            .await
            .unwrap()
            .iter()
            .all(|m| m.body != b"while bob was away")
    );

    // The store comes back at the same address: bob catches up by himself.
    let (store, again) = start_store().await;
    assert_eq!(again, bootstrap);
    assert_eq!(
        messages(&mut bob_ev, 1).await,
        [pair("alice", "while bob was away")]
    );
    for c in [alice, bob] {
        c.shutdown().await;
    }
    store.shutdown().await.unwrap();
}

/// Twenty cheap messages that fail their hash (a single tiny segment each), stored before
/// a real payload one of whose segments has a forged twin the store orders first, do not
/// use up the history read's retries (16): the largest failing messages are retried
/// first, and the payload comes (in order of appearance, it was the 21st).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheap_failing_messages_do_not_use_up_the_retries() {
    let mut stage = stage().await;
    let topic = Topic::from_group_id(b"a group whose retries are wanted");
    let (first, probe_segments) = stage.probe(&topic, 11).await;
    let Stage {
        _dir,
        store,
        bootstrap,
        alice,
        _alice_in,
        mallory,
        ..
    } = stage;
    let shard = alice.shard();
    let seg_topic = first.content_topic.clone();
    let ts = first.timestamp.unwrap() + 1_000_000_000;
    let message =
        |bytes: Vec<u8>, ts: i64| WakuMessage::new(seg_topic.clone(), bytes).with_timestamp(ts);
    // 20 single segments whose payload does not hash to the hash they claim.
    for i in 0..20u8 {
        let junk = SegmentMessage {
            entire_message_hash: vec![i; 32],
            data_segment_index: 0,
            data_segment_count: 1,
            payload: vec![i; 16],
            ..SegmentMessage::default()
        };
        let m = message(prost::Message::encode_to_vec(&junk), ts + i64::from(i));
        mallory.relay_publish_on(shard, m).await.unwrap();
    }
    // The payload, its segment 1 with a forged twin ordered before it (same timestamp,
    // smaller message hash: ground).
    let payload = big_payload(300 * 1024, 12);
    let genuine = segmentation::segment(&payload, &segmentation::Config::default()).unwrap();
    let at = ts + 1_000_000;
    let genuine_hash = message_hash(&shard.to_string(), &message(genuine[1].clone(), at));
    let forged = forged_twin(&genuine[1], |f| {
        message_hash(&shard.to_string(), &message(f.to_vec(), at)) < genuine_hash
    });
    mallory
        .relay_publish_on(shard, message(forged, at))
        .await
        .unwrap();
    for s in &genuine {
        mallory
            .relay_publish_on(shard, message(s.clone(), at))
            .await
            .unwrap();
    }
    let stored = probe_segments + 20 + 1 + genuine.len();
    until("the store has every segment", async || {
        store.counters().stored as usize >= stored
    })
    .await;
    let (bob, _bob_in) = transport(&bootstrap).await;
    let page = bob.history(&topic, Cursor::beginning()).await.unwrap();
    assert!(
        page.messages.iter().any(|m| m.data == payload),
        "the payload is missing: {} messages",
        page.messages.len()
    );
    store.shutdown().await.unwrap();
}
