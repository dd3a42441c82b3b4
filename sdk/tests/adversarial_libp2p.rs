//! The takeover and re-wrapping attacks of `adversarial.rs` again, over real libp2p on
//! 127.0.0.1: a store node running the SDK's directory validator, three clients, and an
//! attacker's node with no validator at all, which publishes whatever it likes on the
//! group topic and on a victim's inbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::*;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{KeyPackage, MlsMessageBodyIn, MlsMessageIn, ProtocolVersion};
use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Client, Event, GroupId, UserId};
use pqmls_transport::node::Config as NodeConfig;
use pqmls_transport::{Inbound, Multiaddr, Node, Topic, store};

const STEP: Duration = Duration::from_secs(30);

/// Waits (real time, at most [`STEP`]) until `f` holds.
async fn soon<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let r = tokio::time::timeout(STEP, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}");
}

struct Net {
    _dir: tempfile::TempDir,
    store: Node,
    bootstrap: Multiaddr,
}

async fn network() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Node::start(
        pqmls::store_node(
            NodeConfig::loopback(),
            dir.path().join("store"),
            store::Config::default(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let bootstrap = store.listen_addrs().await.unwrap().remove(0);
    Net {
        _dir: dir,
        store,
        bootstrap,
    }
}

async fn start(net: &Net, name: &str) -> Client {
    let c = config(name);
    Client::start(
        c,
        NodeConfig::loopback().with_bootstrap(net.bootstrap.clone()),
    )
    .await
    .unwrap()
}

/// Converges within [`STEP`] of real time.
async fn agree(clients: &[&Client], g: &GroupId, epoch: u64) {
    soon(&format!("agreement at epoch {epoch}"), async || {
        let mut first = None;
        for c in clients {
            let Ok(s) = c.status(g).await else {
                return false;
            };
            if s.pending_commit || s.epoch != epoch {
                return false;
            }
            match &first {
                None => first = Some((s.epoch_authenticator, s.members)),
                Some(f) if *f != (s.epoch_authenticator, s.members) => return false,
                Some(_) => {}
            }
        }
        true
    })
    .await;
}

async fn group(clients: &[&Client]) -> GroupId {
    let g = clients[0].create_group().await.unwrap();
    for (i, c) in clients.iter().enumerate().skip(1) {
        pqmls::wait_for_key_packages(clients[0], &c.id())
            .await
            .unwrap();
        clients[0].invite(&g, &c.id()).await.unwrap();
        soon("join", async || c.groups().await.unwrap().contains(&g)).await;
        agree(&clients[..=i], &g, i as u64).await;
    }
    for c in clients {
        pqmls::wait_for_mesh(c, &g).await.unwrap();
    }
    g
}

/// The attacker's node: no validator, subscribed to `topics`, with a mesh on each.
async fn attacker(net: &Net, topics: &[&Topic]) -> (Node, Inbound) {
    let (node, inbound) = Node::start(NodeConfig::loopback().with_bootstrap(net.bootstrap.clone()))
        .await
        .unwrap();
    for t in topics {
        node.subscribe(t).await.unwrap();
    }
    for t in topics {
        soon("the attacker's mesh", async || {
            node.mesh_peers(t).await.unwrap_or(0) > 0
        })
        .await;
    }
    (node, inbound)
}

/// The next payload of `variant` the attacker's node receives on `topic`.
async fn next(inbound: &mut Inbound, topic: &Topic, variant: u8) -> Vec<u8> {
    tokio::time::timeout(STEP, async {
        loop {
            let m = inbound.recv().await.expect("attacker inbound ended");
            if m.topic == *topic && m.data.first() == Some(&variant) {
                return m.data;
            }
        }
    })
    .await
    .expect("nothing captured")
}

/// A user's last-resort key package, as the store serves it.
async fn last_resort(store: &Node, user: &UserId) -> KeyPackage {
    let blob = store
        .get(format!("pqmls/kp/v2/{user}/last-resort").into_bytes())
        .await
        .unwrap()
        .expect("no entry");
    let MlsMessageBodyIn::KeyPackage(kp) = MlsMessageIn::tls_deserialize_exact(entry_value(&blob))
        .unwrap()
        .extract()
    else {
        panic!("not a key package")
    };
    kp.validate(
        &pqmls_provider::PqCrypto::new().unwrap(),
        ProtocolVersion::Mls10,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_cannot_take_over_a_members_group_over_libp2p() {
    let net = network().await;
    let alice = start(&net, "alice").await;
    let bob = start(&net, "bob").await;
    let carol = start(&net, "carol").await;
    let g = group(&[&alice, &bob, &carol]).await;
    let gt = group_topic(&g);
    let bob_inbox = inbox_topic(&bob.id());
    let (node, mut inbound) = attacker(&net, &[&gt, &bob_inbox]).await;
    let mallory = Mallory::new(&SimNetwork::new(SimConfig::default()), "alice");
    let before = bob.status(&g).await.unwrap();
    let mut bob_ev = bob.events();

    let mut fake = mallory.group_with_id(&g);
    let (_, welcome) = mallory.add(&mut fake, &[last_resort(&net.store, &bob.id()).await]);
    node.publish(&bob_inbox, envelope(WELCOME, &[], &welcome))
        .await
        .unwrap();
    alice.send(&g, b"real").await.unwrap();
    let app = next(&mut inbound, &gt, APPLICATION).await;
    let (_, _, app_mls) = open_envelope(&app);
    while fake.epoch().as_u64() < before.epoch {
        mallory.update(&mut fake);
    }
    let fake_msg = mallory.message(&mut fake, b"mallory at your epoch");
    let fake_commit = mallory.update(&mut fake);
    for p in [
        envelope(APPLICATION, &[0x55; 16], &app_mls),
        envelope(HANDSHAKE, &[0; 32], &fake_commit),
        envelope(APPLICATION, &[0x66; 16], &fake_msg),
    ] {
        node.publish(&gt, p).await.unwrap();
    }
    soon("bob kept the Welcome aside and saw the hints", async || {
        bob.stats().await.fork_hints >= 1 && bob.table_sizes().await.unwrap()["pqmls_welcomes"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    agree(&[&alice, &bob, &carol], &g, before.epoch).await;
    assert_eq!(bob.status(&g).await.unwrap(), before);
    while let Some(e) = bob_ev.try_recv() {
        assert!(
            !matches!(
                e,
                Event::Joined { .. } | Event::Invited(_) | Event::Removed { .. }
            ),
            "{e:?}"
        );
    }
    let s = bob.stats().await;
    assert_eq!(
        (s.forks_detected, s.forks_recovered, s.resent),
        (0, 0, 0),
        "{s:?}"
    );
    bob.send(&g, b"after the attack").await.unwrap();
    soon("delivered after the attack", async || {
        carol
            .history(&g, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.body == b"after the attack")
    })
    .await;
    // What the attacker's node received on the group topic, it cannot read. (Its copy of
    // the message above can arrive after carol's: gossip gives no order between peers.)
    let mut got = Vec::new();
    soon(
        "the attacker's node to get the group's traffic",
        async || {
            while let Some(m) = inbound.try_recv() {
                got.push(m);
            }
            got.iter().any(|m| m.topic == gt)
        },
    )
    .await;
    assert!(!mallory.reads_any(&mut fake, &got));
    for c in [alice, bob, carol] {
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrapped_payloads_change_nothing_over_libp2p() {
    let net = network().await;
    let a = start(&net, "a").await;
    let b = start(&net, "b").await;
    let c = start(&net, "c").await;
    let all = [&a, &b, &c];
    let g = group(&all).await;
    let gt = group_topic(&g);
    let (node, mut inbound) = attacker(&net, &[&gt]).await;
    let rewraps = |payload: &[u8]| -> Vec<Vec<u8>> {
        let (variant, prefix, mls) = open_envelope(payload);
        let mut trailing = payload.to_vec();
        trailing.push(0);
        let mut overlong = vec![variant];
        overlong.extend_from_slice(&prefix);
        let mut len = leb128(mls.len());
        let last = len.len() - 1;
        len[last] |= 0x80;
        len.push(0);
        overlong.extend_from_slice(&len);
        overlong.extend_from_slice(&mls);
        vec![trailing, overlong]
    };
    let merged0: Vec<u64> = {
        let mut v = Vec::new();
        for x in all {
            v.push(x.stats().await.commits_merged);
        }
        v
    };
    b.update(&g).await.unwrap();
    c.update(&g).await.unwrap();
    let c1 = next(&mut inbound, &gt, HANDSHAKE).await;
    let c2 = next(&mut inbound, &gt, HANDSHAKE).await;
    agree(&all, &g, 4).await;
    a.send(&g, b"once").await.unwrap();
    let app = next(&mut inbound, &gt, APPLICATION).await;
    // Everything captured, then re-wrapped (the first copies get the attacker's node
    // penalised by the store that validates them, so it hears nothing afterwards).
    for p in [c1, c2, app].iter().flat_map(|p| rewraps(p)) {
        node.publish(&gt, p).await.unwrap();
    }
    let rejected_by = |n: &Node| n.counters().rejected;
    soon("the honest nodes refused the copies", async || {
        let mut total = rejected_by(&net.store);
        for x in all {
            total += rejected_by(x.node().unwrap());
        }
        total >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    agree(&all, &g, 4).await;
    for (x, m0) in all.iter().zip(&merged0) {
        let s = x.stats().await;
        assert_eq!(s.commits_merged, m0 + 2, "{s:?}");
        assert_eq!((s.forks_detected, s.forks_recovered), (0, 0), "{s:?}");
    }
    for x in [&b, &c] {
        let h = x.history(&g, 10).await.unwrap();
        assert_eq!(h.iter().filter(|m| m.body == b"once").count(), 1);
    }
    // The group still works.
    c.send(&g, b"after").await.unwrap();
    soon("delivered after", async || {
        a.history(&g, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.body == b"after")
    })
    .await;
    for x in [a, b, c] {
        x.shutdown().await;
    }
}
