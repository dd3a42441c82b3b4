//! Real clients on the simulated network, no loss: the whole group life cycle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Client, Config, Event, GroupId};

async fn client(net: &SimNetwork, name: &str) -> Client {
    let (t, inbox) = net.attach();
    let mut c = Config::new(name);
    c.self_update_interval = None;
    c.invitations = pqmls::InvitePolicy::Everyone;
    Client::open(c, t, inbox).await.unwrap()
}

async fn names(c: &Client, g: &GroupId) -> Vec<String> {
    c.members(g)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect()
}

/// Waits (virtual time) until `f` holds.
async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..3000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn same_view(clients: &[&Client], group: &GroupId) -> bool {
    let mut first = None;
    for c in clients {
        let Ok(s) = c.status(group).await else {
            return false;
        };
        if s.pending_commit {
            return false;
        }
        match &first {
            None => first = Some((s.epoch, s.epoch_authenticator)),
            Some(f) => {
                if *f != (s.epoch, s.epoch_authenticator) {
                    return false;
                }
            }
        }
    }
    true
}

#[tokio::test(start_paused = true)]
async fn create_invite_send_remove_leave() {
    let net = SimNetwork::new(SimConfig::default());
    let alice = client(&net, "alice").await;
    let bob = client(&net, "bob").await;
    let carol = client(&net, "carol").await;
    let mut bob_events = bob.events();

    let g = alice.create_group().await.unwrap();
    alice.invite(&g, &bob.id()).await.unwrap();
    until("bob joined", async || {
        bob.groups().await.unwrap().contains(&g)
    })
    .await;
    alice.invite(&g, &carol.id()).await.unwrap();
    until("carol joined", async || {
        carol.groups().await.unwrap().contains(&g)
    })
    .await;
    until("same view", async || {
        same_view(&[&alice, &bob, &carol], &g).await
    })
    .await;
    assert_eq!(names(&alice, &g).await, ["alice", "bob", "carol"]);

    alice.send(&g, b"hi all").await.unwrap();
    carol.send(&g, b"hi from carol").await.unwrap();
    until("bob got both", async || {
        bob.history(&g, 10).await.unwrap().len() == 2
    })
    .await;
    let mut got = Vec::new();
    while let Some(e) = bob_events.try_recv() {
        if let Event::Message(m) = e {
            got.push((m.sender.name, m.body));
        }
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("alice".to_string(), b"hi all".to_vec()),
            ("carol".to_string(), b"hi from carol".to_vec())
        ]
    );

    // Self-update, then remove carol.
    bob.update(&g).await.unwrap();
    until("update merged", async || {
        same_view(&[&alice, &bob, &carol], &g).await && alice.status(&g).await.unwrap().epoch == 3
    })
    .await;
    alice.remove(&g, &carol.id()).await.unwrap();
    until("carol removed", async || {
        carol.groups().await.unwrap().is_empty()
    })
    .await;
    until("same view", async || same_view(&[&alice, &bob], &g).await).await;
    assert_eq!(names(&bob, &g).await, ["alice", "bob"]);
    assert!(matches!(
        carol.send(&g, b"x").await,
        Err(pqmls::Error::NotMember(_))
    ));
    assert_eq!(
        carol.history(&g, 10).await.unwrap().len(),
        2,
        "history survives removal"
    );

    // Bob leaves: alice commits his removal.
    bob.leave(&g).await.unwrap();
    until("bob gone", async || bob.groups().await.unwrap().is_empty()).await;
    until("alice alone", async || names(&alice, &g).await == ["alice"]).await;
}

/// Alice's group with bob in it.
async fn alice_and_bob(net: &SimNetwork) -> (Client, Client, GroupId) {
    let alice = client(net, "alice").await;
    let bob = client(net, "bob").await;
    let g = alice.create_group().await.unwrap();
    alice.invite(&g, &bob.id()).await.unwrap();
    until("bob joins", async || {
        bob.groups().await.unwrap().contains(&g)
    })
    .await;
    (alice, bob, g)
}

/// The delivery mark: an own message is reported `Stored` once a store returns it in a
/// catch-up (scheduled one backoff after publishing), and never while the stores keep
/// nothing; nobody else's message is reported so.
#[tokio::test(start_paused = true)]
async fn own_messages_are_marked_once_a_store_returns_them() {
    let net = SimNetwork::new(SimConfig::default());
    let (alice, bob, g) = alice_and_bob(&net).await;
    let mut alice_events = alice.events();
    let mut bob_events = bob.events();
    let stored_within = async |events: &mut pqmls::Events, limit: Duration| {
        let mut seqs = Vec::new();
        let _ = tokio::time::timeout(limit, async {
            while let Some(e) = events.recv().await {
                if let Event::Stored { group, seq } = e {
                    assert_eq!(group, g);
                    seqs.push(seq);
                }
            }
        })
        .await;
        seqs
    };

    // The stores keep nothing: sent, never seen by one (a minute of virtual time, past
    // the periodic catch-up too).
    net.set_store_miss(1.0);
    let lost = alice.send(&g, b"nobody keeps this").await.unwrap();
    assert!(
        stored_within(&mut alice_events, Duration::from_secs(70))
            .await
            .is_empty()
    );

    // The stores keep everything again: the next message is marked, once, soon.
    net.set_store_miss(0.0);
    let kept = alice.send(&g, b"a store keeps this").await.unwrap();
    let marked = stored_within(&mut alice_events, Duration::from_secs(5)).await;
    assert_eq!(marked, vec![kept.seq], "lost was #{}", lost.seq);
    // Bob's catch-ups bring alice's message too: not his, never marked for him.
    assert!(
        stored_within(&mut bob_events, Duration::from_secs(70))
            .await
            .is_empty()
    );
    alice.shutdown().await;
    bob.shutdown().await;
}

/// A catch-up skips payloads already handled for good, in memory (`client::HandledIds`),
/// but our own message relayed back to us on gossip is not one of them: its return from
/// a store is what marks it `Stored`. A relay that plays alice's message back to her at
/// once, before her catch-up, does not cost her the mark (it did with every handled id
/// skipped).
#[tokio::test(start_paused = true)]
async fn an_own_message_relayed_back_is_still_marked_when_a_store_returns_it() {
    let net = SimNetwork::new(SimConfig::default());
    let (alice, _bob, g) = alice_and_bob(&net).await;
    let topic = pqmls_transport::Topic::from_group_id(
        &[b"pqmls/group/v1/".as_slice(), g.as_bytes()].concat(),
    );
    let before = net.history_of(&topic).len();
    let mut alice_events = alice.events();
    let sent = alice.send(&g, b"played back").await.unwrap();
    let mut mine = None;
    until("published", async || {
        mine = net.history_of(&topic).into_iter().nth(before);
        mine.is_some()
    })
    .await;
    net.replay(&mine.unwrap());
    let marked = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = alice_events.recv().await {
            if let Event::Stored { seq, .. } = e {
                return seq;
            }
        }
        -1
    })
    .await;
    assert_eq!(marked.ok(), Some(sent.seq));
}
