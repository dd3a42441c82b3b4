//! `Client::invite_many`: several users added by one commit on the simulated network
//! (no loss), through the same intents as `invite`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{client, config, converge, converge_anywhere, group, names, until};
use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Client, Error, Event, GroupId, InvitePolicy, UserId};

async fn clients(net: &SimNetwork, names: &[&str]) -> Vec<Client> {
    let mut out = Vec::new();
    for n in names {
        out.push(client(net, config(n)).await);
    }
    out
}

/// For each member that joined, the epoch the commit adding it led to, from the
/// inviter's events (`MemberJoined` comes just before the `EpochChanged` of its merge).
fn join_epochs(events: &mut pqmls::Events) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut joined = Vec::new();
    while let Some(e) = events.try_recv() {
        match e {
            Event::MemberJoined { member, .. } => joined.push(member.name),
            Event::EpochChanged { epoch, .. } => {
                for name in joined.drain(..) {
                    out.insert(name, epoch);
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_batch_joins_in_one_commit_and_reads() {
    let net = SimNetwork::new(SimConfig::default());
    let cs = clients(&net, &["alice", "bob", "carol", "dave"]).await;
    let alice = &cs[0];
    let g = alice.create_group().await.unwrap();
    let ids: Vec<UserId> = cs[1..].iter().map(Client::id).collect();
    alice.invite_many(&g, &ids).await.unwrap();
    for c in &cs[1..] {
        until("invitee joined", async || {
            c.groups().await.unwrap().contains(&g)
        })
        .await;
    }
    let all: Vec<&Client> = cs.iter().collect();
    // One commit: the group went from epoch 0 to 1.
    converge(&all, &g, 1).await;
    assert_eq!(names(alice, &g).await, ["alice", "bob", "carol", "dave"]);

    alice.send(&g, b"hello, three").await.unwrap();
    cs[3].send(&g, b"hi from dave").await.unwrap();
    for c in &cs {
        until("both messages read", async || {
            c.history(&g, 10).await.unwrap().len() == 2
        })
        .await;
    }
    let bodies: Vec<Vec<u8>> = cs[1]
        .history(&g, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert!(bodies.contains(&b"hello, three".to_vec()), "{bodies:?}");
    assert!(bodies.contains(&b"hi from dave".to_vec()), "{bodies:?}");
}

/// More users than one commit takes: the first `MAX_ADDS_PER_COMMIT` go in one commit,
/// the rest in the next epoch.
#[tokio::test(start_paused = true)]
async fn a_batch_above_the_bound_takes_two_commits() {
    let net = SimNetwork::new(SimConfig::default());
    let n = pqmls::MAX_ADDS_PER_COMMIT + 2;
    let mut cs = vec![client(&net, config("owner")).await];
    for i in 0..n {
        cs.push(client(&net, config(&format!("u{i}"))).await);
    }
    let owner = &cs[0];
    let mut events = owner.events();
    let g = owner.create_group().await.unwrap();
    let ids: Vec<UserId> = cs[1..].iter().map(Client::id).collect();
    owner.invite_many(&g, &ids).await.unwrap();
    let all: Vec<&Client> = cs.iter().collect();
    converge(&all, &g, 2).await;
    assert_eq!(names(owner, &g).await.len(), n + 1);
    let epochs = join_epochs(&mut events);
    assert_eq!(epochs.len(), n, "{epochs:?}");
    let first = epochs.values().filter(|e| **e == 1).count();
    let second = epochs.values().filter(|e| **e == 2).count();
    assert_eq!(
        (first, second),
        (pqmls::MAX_ADDS_PER_COMMIT, 2),
        "{epochs:?}"
    );
}

/// Alice's batch competes with two updates for the same epoch, round after round, until
/// it lost once (with three candidates it loses two rounds in three). It is committed
/// again in a later epoch, as one commit, and everyone joins.
#[tokio::test(start_paused = true)]
async fn a_batch_that_loses_its_epoch_is_proposed_again() {
    let net = SimNetwork::new(SimConfig::default());
    let cs = clients(&net, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&cs[0], &cs[1], &cs[2]);
    let g = group(&[alice, bob, carol]).await;
    let mut invitees: Vec<Client> = Vec::new();
    let mut lost = false;
    for round in 0..8 {
        let pair = [
            client(&net, config(&format!("x{round}"))).await,
            client(&net, config(&format!("y{round}"))).await,
        ];
        let mut events = alice.events();
        let before = alice.status(&g).await.unwrap().epoch;
        alice
            .invite_many(&g, &[pair[0].id(), pair[1].id()])
            .await
            .unwrap();
        bob.update(&g).await.unwrap();
        carol.update(&g).await.unwrap();
        for c in &pair {
            until("invitee joined", async || {
                c.groups().await.unwrap().contains(&g)
            })
            .await;
        }
        invitees.extend(pair);
        let all: Vec<&Client> = cs.iter().chain(&invitees).collect();
        converge_anywhere("after the round", &all, &g).await;
        let epochs = join_epochs(&mut events);
        let (x, y) = (epochs[&format!("x{round}")], epochs[&format!("y{round}")]);
        assert_eq!(x, y, "round {round}: one commit adds both: {epochs:?}");
        if x > before + 1 {
            lost = true;
            break;
        }
    }
    assert!(
        lost,
        "alice's batch never lost its epoch: the test tested nothing"
    );
    assert!(names(alice, &g).await.contains(&"y0".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn invalid_invitations_are_refused_and_commit_nothing() {
    let net = SimNetwork::new(SimConfig::default());
    let cs = clients(&net, &["alice", "bob", "carol", "dave"]).await;
    let (alice, bob, carol, dave) = (&cs[0], &cs[1], &cs[2], &cs[3]);
    let g = group(&[alice, bob]).await;

    let refused = alice.invite_many(&g, &[carol.id(), bob.id()]).await;
    assert!(
        matches!(refused, Err(Error::AlreadyMember { user, .. }) if user == bob.id()),
        "{refused:?}"
    );
    let refused = alice.invite_many(&g, &[alice.id()]).await;
    assert!(
        matches!(refused, Err(Error::AlreadyMember { user, .. }) if user == alice.id()),
        "{refused:?}"
    );
    let refused = alice
        .invite_many(&g, &[carol.id(), dave.id(), carol.id()])
        .await;
    assert!(
        matches!(refused, Err(Error::DuplicateInvitee { user, .. }) if user == carol.id()),
        "{refused:?}"
    );
    // A user nobody has seen: no key package in the directory.
    let elsewhere = SimNetwork::new(SimConfig::default());
    let stranger = client(&elsewhere, config("stranger")).await;
    let refused = alice.invite_many(&g, &[carol.id(), stranger.id()]).await;
    assert!(
        matches!(refused, Err(Error::NoKeyPackage(user)) if user == stranger.id()),
        "{refused:?}"
    );
    let unknown = GroupId::from_bytes(&[7; 16]);
    assert!(matches!(
        alice.invite_many(&unknown, &[carol.id()]).await,
        Err(Error::UnknownGroup(_))
    ));
    alice.invite_many(&g, &[]).await.unwrap();

    // Nothing was committed by any of these.
    tokio::time::sleep(Duration::from_secs(2)).await;
    converge(&[alice, bob], &g, 1).await;
    assert!(!carol.groups().await.unwrap().contains(&g));

    // And the client is fine: a valid batch goes through.
    alice
        .invite_many(&g, &[carol.id(), dave.id()])
        .await
        .unwrap();
    converge(&[alice, bob, carol, dave], &g, 2).await;
    assert_eq!(names(bob, &g).await, ["alice", "bob", "carol", "dave"]);
}

/// `a` invites `c`, then asks to leave and invites `b` and `d` in one commit. That add
/// and `c`'s removal of `a` compete; when the add merged at `a` first and its Welcome went
/// out to both, but the removal wins, `b` and `d` hold a group on a dead branch: `a` must
/// withdraw the Welcome from each of them.
#[test]
fn a_batch_welcome_from_a_losing_branch_is_withdrawn_from_every_invitee() {
    for seed in 0..6 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let net = SimNetwork::new(SimConfig {
                seed,
                ..SimConfig::default()
            });
            let mut cs = Vec::new();
            for name in ["a", "b", "c", "d"] {
                let mut c = config(name);
                c.settle = Duration::from_millis(50);
                c.one_time_key_packages = 1;
                c.invitations = InvitePolicy::Everyone;
                cs.push(client(&net, c).await);
            }
            let (a, b, c, d) = (&cs[0], &cs[1], &cs[2], &cs[3]);
            let g = a.create_group().await.unwrap();
            a.invite(&g, &c.id()).await.unwrap();
            a.leave(&g).await.unwrap();
            a.invite_many(&g, &[b.id(), d.id()]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(205)).await;
            let mut stable = 0;
            let mut views = Vec::new();
            for _ in 0..30 {
                for x in &cs {
                    let _ = x.sync().await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                views.clear();
                for x in &cs {
                    if let Ok(s) = x.status(&g).await {
                        views.push(s);
                    }
                }
                let agree = views.windows(2).all(|w| {
                    (w[0].epoch, &w[0].epoch_authenticator)
                        == (w[1].epoch, &w[1].epoch_authenticator)
                }) && views.iter().all(|v| !v.pending_commit);
                stable = if agree { stable + 1 } else { 0 };
                if stable == 2 {
                    break;
                }
            }
            assert_eq!(stable, 2, "seed {seed}: no agreement: {views:?}");
            // Exactly the members hold the group, and `a` is not one.
            let members: Vec<String> = views[0].members.iter().map(|m| m.name.clone()).collect();
            assert_eq!(
                views.len(),
                members.len(),
                "seed {seed}: holders vs members: {views:?}"
            );
            assert!(
                !members.contains(&"a".to_owned()),
                "seed {seed}: {members:?}"
            );
        });
    }
}
