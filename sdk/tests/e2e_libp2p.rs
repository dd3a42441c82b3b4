//! End to end over real libp2p on 127.0.0.1: a store node and three clients go through a
//! whole group life cycle, for the default suite and for an ML-DSA suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pqmls::{Ciphersuite, Client, Config, Error, Event, Events, GroupId};
use pqmls_transport::node::Config as NodeConfig;
use pqmls_transport::{Node, store};

/// Longest wait for any one step (real time).
const STEP: Duration = Duration::from_secs(30);

/// Waits until `f` holds, polling every 25 ms, for at most [`STEP`].
async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let r = tokio::time::timeout(STEP, async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}");
}

/// Reads events until `pred` matches one, for at most [`STEP`]; returns the events read.
async fn expect_event(
    events: &mut Events,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Vec<Event> {
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
    seen
}

/// Reads events until `n` messages arrived; returns them as sorted (sender, body) pairs.
async fn messages(events: &mut Events, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    let r = tokio::time::timeout(STEP, async {
        while got.len() < n {
            if let Event::Message(m) = events.recv().await.expect("event stream ended") {
                assert!(!m.own, "own message delivered as an event: {m:?}");
                got.push((m.sender.name, m.body));
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {n} messages, got {got:?}");
    got.sort();
    got
}

/// Waits until every client reports the same epoch and authenticator, nothing pending, and
/// the given members; returns the common status after checking its epoch.
async fn agree(clients: &[&Client], g: &GroupId, epoch: u64, members: &[&str]) {
    until(
        &format!("agreement on epoch {epoch} with {members:?}"),
        async || {
            let mut first: Option<pqmls::GroupStatus> = None;
            for c in clients {
                let Ok(s) = c.status(g).await else {
                    return false;
                };
                if s.pending_commit || s.epoch != epoch || names(&s) != members {
                    return false;
                }
                if let Some(f) = &first
                    && (f.epoch, &f.epoch_authenticator) != (s.epoch, &s.epoch_authenticator)
                {
                    return false;
                }
                first = Some(s);
            }
            true
        },
    )
    .await;
    // And exactly, once more, now that it held.
    let first = clients[0].status(g).await.unwrap();
    assert_eq!(first.epoch, epoch);
    assert_eq!(names(&first), members);
    assert!(!first.epoch_authenticator.is_empty());
    for c in &clients[1..] {
        let s = c.status(g).await.unwrap();
        assert_eq!(
            (s.epoch, &s.epoch_authenticator, &s.members),
            (first.epoch, &first.epoch_authenticator, &first.members),
            "{} disagrees with {}",
            c.name(),
            clients[0].name()
        );
    }
}

fn names(s: &pqmls::GroupStatus) -> Vec<String> {
    s.members.iter().map(|m| m.name.clone()).collect()
}

fn pair(sender: &str, body: &str) -> (String, Vec<u8>) {
    (sender.to_owned(), body.as_bytes().to_vec())
}

async fn scenario(suite: Ciphersuite) {
    let dir = tempfile::tempdir().unwrap();
    let (store_node, _inbound) = Node::start(
        pqmls::store_node(
            NodeConfig::loopback(),
            dir.path().join("store"),
            store::Config::default(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let bootstrap = store_node.listen_addrs().await.unwrap().remove(0);
    let start = async |name: &str| {
        let mut c = Config::new(name)
            .with_data_dir(dir.path().join(name))
            .with_database_key(pqmls::DatabaseKey::from_bytes([5; 32]))
            .with_suite(suite);
        c.self_update_interval = None;
        c.removal_grace = Duration::from_millis(500);
        c.invitations = pqmls::InvitePolicy::Everyone;
        Client::start(c, NodeConfig::loopback().with_bootstrap(bootstrap.clone()))
            .await
            .unwrap()
    };
    let alice = start("alice").await;
    let bob = start("bob").await;
    let carol = start("carol").await;
    assert_eq!(alice.suite(), suite);
    let mut alice_ev = alice.events();
    let mut bob_ev = bob.events();
    let mut carol_ev = carol.events();
    pqmls::wait_for_key_packages(&alice, &bob.id())
        .await
        .unwrap();
    pqmls::wait_for_key_packages(&alice, &carol.id())
        .await
        .unwrap();

    // Create, invite bob, invite carol.
    let g = alice.create_group().await.unwrap();
    assert_eq!(alice.status(&g).await.unwrap().epoch, 0);
    alice.invite(&g, &bob.id()).await.unwrap();
    expect_event(
        &mut bob_ev,
        "bob joined",
        |e| matches!(e, Event::Joined { group, inviter } if *group == g && inviter.name == "alice"),
    )
    .await;
    agree(&[&alice, &bob], &g, 1, &["alice", "bob"]).await;
    alice.invite(&g, &carol.id()).await.unwrap();
    expect_event(
        &mut carol_ev,
        "carol joined",
        |e| matches!(e, Event::Joined { group, inviter } if *group == g && inviter.name == "alice"),
    )
    .await;
    expect_event(&mut bob_ev, "bob saw carol join", |e| {
        matches!(e, Event::MemberJoined { group, member } if *group == g && member.name == "carol")
    })
    .await;
    agree(&[&alice, &bob, &carol], &g, 2, &["alice", "bob", "carol"]).await;
    for c in [&alice, &bob, &carol] {
        pqmls::wait_for_mesh(c, &g).await.unwrap();
        assert_eq!(c.groups().await.unwrap(), std::slice::from_ref(&g));
    }

    // Everyone sends; everyone receives the two others' messages.
    for c in [&alice, &bob, &carol] {
        let body = format!("hello from {}", c.name());
        let m = c.send(&g, body.as_bytes()).await.unwrap();
        assert!(m.own);
        assert_eq!(
            (m.sender.name.as_str(), m.sender.id, m.epoch),
            (c.name(), c.id(), 2)
        );
        assert_eq!(m.body, body.as_bytes());
    }
    assert_eq!(
        messages(&mut alice_ev, 2).await,
        [
            pair("bob", "hello from bob"),
            pair("carol", "hello from carol")
        ]
    );
    assert_eq!(
        messages(&mut bob_ev, 2).await,
        [
            pair("alice", "hello from alice"),
            pair("carol", "hello from carol")
        ]
    );
    assert_eq!(
        messages(&mut carol_ev, 2).await,
        [
            pair("alice", "hello from alice"),
            pair("bob", "hello from bob")
        ]
    );
    for c in [&alice, &bob, &carol] {
        let mut h: Vec<(String, Vec<u8>)> = c
            .history(&g, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.sender.name, m.body))
            .collect();
        h.sort();
        assert_eq!(
            h,
            [
                pair("alice", "hello from alice"),
                pair("bob", "hello from bob"),
                pair("carol", "hello from carol")
            ],
            "history of {}",
            c.name()
        );
    }
    agree(&[&alice, &bob, &carol], &g, 2, &["alice", "bob", "carol"]).await;

    // Alice removes carol.
    alice.remove(&g, &carol.id()).await.unwrap();
    expect_event(&mut bob_ev, "bob saw carol leave", |e| {
        matches!(e, Event::MemberLeft { group, member } if *group == g && member.name == "carol")
    })
    .await;
    agree(&[&alice, &bob], &g, 3, &["alice", "bob"]).await;
    until("carol knows she was removed", async || {
        matches!(carol.status(&g).await, Err(Error::NotMember(_)))
    })
    .await;
    assert!(matches!(
        carol.send(&g, b"still here?").await,
        Err(Error::NotMember(_))
    ));
    expect_event(&mut carol_ev, "carol removed", |e| {
        *e == Event::Removed { group: g.clone() }
    })
    .await;
    assert_eq!(carol.groups().await.unwrap(), []);
    assert_eq!(carol.history(&g, 100).await.unwrap().len(), 3);

    // The two remaining still talk.
    bob.send(&g, b"just us").await.unwrap();
    assert_eq!(messages(&mut alice_ev, 1).await, [pair("bob", "just us")]);

    // Bob leaves: alice commits his removal and ends alone.
    bob.leave(&g).await.unwrap();
    expect_event(
        &mut alice_ev,
        "alice saw bob leave",
        |e| matches!(e, Event::MemberLeft { group, member } if *group == g && member.name == "bob"),
    )
    .await;
    agree(&[&alice], &g, 4, &["alice"]).await;
    expect_event(&mut bob_ev, "bob removed", |e| {
        *e == Event::Removed { group: g.clone() }
    })
    .await;
    assert!(matches!(
        bob.send(&g, b"bye").await,
        Err(Error::NotMember(_))
    ));
    assert_eq!(bob.groups().await.unwrap(), []);
    assert_eq!(alice.groups().await.unwrap(), std::slice::from_ref(&g));
    // Carol never got anything after her removal.
    assert_eq!(carol.history(&g, 100).await.unwrap().len(), 3);
    let alice_history = alice.history(&g, 100).await.unwrap();
    assert_eq!(alice_history.len(), 4);
    assert_eq!(alice_history[3].body, b"just us");

    for c in [alice, bob, carol] {
        c.shutdown().await;
    }
    store_node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_cycle_default_suite() {
    assert_eq!(u16::from(pqmls::DEFAULT_SUITE), 0x004F);
    scenario(pqmls::DEFAULT_SUITE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_cycle_ml_dsa_suite() {
    let suite = Ciphersuite::MLS_192_MLKEM768_AES256GCM_SHA384_MLDSA65;
    assert!(pqmls_provider::SUPPORTED_CIPHERSUITES.contains(&suite));
    assert_eq!(
        suite.signature_algorithm(),
        openmls_traits::types::SignatureScheme::MLDSA65
    );
    scenario(suite).await;
}
