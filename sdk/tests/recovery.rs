//! Recovery beyond the horizon (issue 11, item 4): a member whose branch lost after its
//! snapshots were deleted reports `Event::Unrecoverable`, asks to be added again, and a
//! member re-adds it; a removed member's request, a stranger's and a replayed one change
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use pqmls::sim::{SimConfig, SimNetwork, SimTransport};
use pqmls::{Client, Event, Events, GroupId, Transport};

/// Postcard variant index of a rejoin request.
const LOST: u8 = 6;

fn net() -> SimNetwork {
    let net = SimNetwork::new(SimConfig::default());
    net.set_directory_validator(pqmls::directory_validator().unwrap());
    net
}

fn drain(ev: &mut Events) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(e) = ev.try_recv() {
        out.push(e);
    }
    out
}

/// The three of a test, each with the transport the test controls.
struct Three {
    alice: Client,
    bob: Client,
    carol: Client,
    at: Arc<SimTransport>,
    bt: Arc<SimTransport>,
    ct: Arc<SimTransport>,
    g: GroupId,
}

/// Alice, bob and carol (carol with a zero horizon); carol commits alone while offline,
/// and the others finalise alice's commit for the same epoch (2) and go one epoch
/// further, to 4.
async fn carol_left_behind(net: &SimNetwork) -> Three {
    let (alice, at) = client_on(net, config("alice")).await;
    let (bob, bt) = client_on(net, config("bob")).await;
    let mut c = config("carol");
    c.fork_horizon = Duration::ZERO;
    // Past the horizon for every epoch, the first open one too.
    c.open_epoch_horizon = c.fork_horizon;
    let (carol, ct) = client_on(net, c).await;
    let g = group(&[&alice, &bob, &carol]).await;
    ct.set_online(false);
    carol.update(&g).await.unwrap();
    until("carol on her own branch", async || {
        carol.status(&g).await.unwrap().epoch == 3
    })
    .await;
    carol.send(&g, b"sent on the dead branch").await.unwrap();
    alice.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 3).await;
    bob.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 4).await;
    until("epoch 2 final at alice and bob", async || {
        alice.stats().await.epochs_final >= 3 && bob.stats().await.epochs_final >= 2
    })
    .await;
    Three {
        alice,
        bob,
        carol,
        at,
        bt,
        ct,
        g,
    }
}

#[tokio::test(start_paused = true)]
async fn a_member_past_the_horizon_is_added_again() {
    let net = net();
    let Three {
        alice,
        bob,
        carol,
        ct,
        g,
        ..
    } = carol_left_behind(&net).await;
    let mut ev = carol.events();
    ct.set_online(true);
    carol.sync().await.unwrap();
    until("carol back", async || carol.stats().await.rejoined == 1).await;
    // The re-add is one commit: the live group is one epoch further.
    converge(&[&alice, &bob, &carol], &g, 5).await;
    let events = drain(&mut ev);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Unrecoverable { epoch: 2, .. })),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Rejoined {
                lost_epoch: 2,
                epoch: 5,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(
        total(&[&alice, &bob], |s| s.rejoins_honoured).await,
        1,
        "one member re-added her (the other's turn came after it was done)"
    );
    assert_eq!(names(&carol, &g).await.len(), 3);
    // The group works with her again, both ways.
    carol.send(&g, b"back").await.unwrap();
    alice.send(&g, b"welcome back").await.unwrap();
    until("messages both ways", async || {
        let a = alice.history(&g, 10).await.unwrap();
        let c = carol.history(&g, 10).await.unwrap();
        a.iter().any(|m| m.body == b"back") && c.iter().any(|m| m.body == b"welcome back")
    })
    .await;
    // What she wrote while away went out again once she was back.
    for c in [&alice, &bob] {
        let h = c.history(&g, 10).await.unwrap();
        assert!(h.iter().any(|m| m.body == b"sent on the dead branch"));
    }
    // And it goes on: a later commit by her is merged by everyone.
    carol.update(&g).await.unwrap();
    converge(&[&alice, &bob, &carol], &g, 6).await;
}

/// A rejoin request replayed after it was honoured, which the members never saw (a relay
/// kept an early copy from them and sends it once carol updated her leaf), does not make
/// anyone swap her current leaf for the key package she used up: she stays in. Fails
/// without the record of honoured key packages.
#[tokio::test(start_paused = true)]
async fn a_replayed_rejoin_request_changes_nothing() {
    let net = net();
    let Three {
        alice,
        bob,
        carol,
        at,
        bt,
        ct,
        g,
    } = carol_left_behind(&net).await;
    let (obs, mut obs_in) = net.attach();
    let gt = group_topic(&g);
    obs.subscribe(&gt).await.unwrap();
    // Carol's first request reaches only the relay (the observer): the others are away
    // and the store misses it.
    at.set_online(false);
    bt.set_online(false);
    net.set_store_miss(1.0);
    ct.set_online(true);
    carol.sync().await.unwrap();
    let early = capture(&mut obs_in, &gt, LOST).await;
    net.set_store_miss(0.0);
    at.set_online(true);
    bt.set_online(true);
    until("carol back", async || carol.stats().await.rejoined == 1).await;
    converge(&[&alice, &bob, &carol], &g, 5).await;
    carol.update(&g).await.unwrap();
    converge(&[&alice, &bob, &carol], &g, 6).await;
    let honoured = total(&[&alice, &bob], |s| s.rejoins_honoured).await;
    publish(&obs, &gt, &[early]).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        total(&[&alice, &bob], |s| s.rejoins_honoured).await,
        honoured
    );
    converge(&[&alice, &bob, &carol], &g, 6).await;
    carol.send(&g, b"still here").await.unwrap();
    until("carol is still read", async || {
        alice
            .history(&g, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.body == b"still here")
    })
    .await;
}

/// A member removed while it was away asks to be added again: nobody does (a removal is
/// never undone by a rejoin request), and it learns nothing of the live group.
#[tokio::test(start_paused = true)]
async fn a_removed_member_is_not_added_again() {
    let net = net();
    let Three {
        alice,
        bob,
        carol,
        ct,
        g,
        ..
    } = carol_left_behind(&net).await;
    alice.remove(&g, &carol.id()).await.unwrap();
    converge(&[&alice, &bob], &g, 5).await;
    ct.set_online(true);
    carol.sync().await.unwrap();
    until("carol asked", async || {
        carol.stats().await.rejoins_asked >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(total(&[&alice, &bob], |s| s.rejoins_honoured).await, 0);
    assert_eq!(carol.stats().await.rejoined, 0);
    converge(&[&alice, &bob], &g, 5).await;
    assert_eq!(names(&alice, &g).await, vec!["alice", "bob"]);
}

/// Garbage and forged requests on the group topic (wrong tag, a valid tag with a
/// ciphertext that does not open, oversized) are dropped and change nothing.
#[tokio::test(start_paused = true)]
async fn forged_rejoin_requests_are_dropped() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let bob = client(&net, config("bob")).await;
    let g = group(&[&alice, &bob]).await;
    let (obs, mut obs_in) = net.attach();
    let gt = group_topic(&g);
    obs.subscribe(&gt).await.unwrap();
    bob.update(&g).await.unwrap();
    // A real vote shows an epoch's tag, as an outsider sees it.
    let vote = capture(&mut obs_in, &gt, VOTE).await;
    converge(&[&alice, &bob], &g, 2).await;
    let tag = vote[1..17].to_vec();
    let lost = |tag: &[u8], sealed: &[u8]| {
        let mut p = vec![LOST];
        p.extend_from_slice(tag);
        p.extend(leb128(sealed.len()));
        p.extend_from_slice(sealed);
        p
    };
    let before = total(&[&alice, &bob], |s| s.rejected + s.ignored).await;
    publish(
        &obs,
        &gt,
        &[
            lost(&[9; 16], &[1; 64]),
            lost(&tag, &[2; 200]),
            lost(&tag, &vec![3; 40 * 1024]),
        ],
    )
    .await;
    until("all dropped", async || {
        total(&[&alice, &bob], |s| s.rejected + s.ignored).await >= before + 6
    })
    .await;
    assert_eq!(total(&[&alice, &bob], |s| s.rejoins_honoured).await, 0);
    converge(&[&alice, &bob], &g, 2).await;
}

/// Found in a simulated partition (seed 100): a member cut off from the group invited a
/// user on its own branch; the Welcome went out when it came back, the user joined that
/// branch, and the member then learnt that the group had finalised another commit for an
/// epoch of its branch. It was added again, but its invitation on the dead branch was
/// never withdrawn, so the user held a group nobody else was in, for good. Once a member
/// reports a state unrecoverable, the Welcomes of its add commits on the dead part of it
/// are withdrawn (`Void`), and the invitee drops that state.
#[tokio::test(start_paused = true)]
async fn an_invitation_made_on_a_branch_past_the_horizon_is_withdrawn() {
    let net = net();
    let (alice, at) = client_on(&net, config("alice")).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let mut c = config("carol");
    c.fork_horizon = Duration::ZERO;
    // Past the horizon for every epoch, the first open one too.
    c.open_epoch_horizon = c.fork_horizon;
    let (carol, ct) = client_on(&net, c).await;
    let (dave, _dt) = client_on(&net, config("dave")).await;
    let g = group(&[&alice, &bob, &carol]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Alice and bob are cut off (and nothing reaches the stores): carol adds dave on a
    // branch of her own, and dave joins it.
    at.set_online(false);
    bt.set_online(false);
    net.set_store_miss(1.0);
    carol.invite(&g, &dave.id()).await.unwrap();
    until("dave joined carol's branch", async || {
        dave.groups().await.unwrap().contains(&g)
    })
    .await;
    // Now carol is away, and alice and bob end epoch 2 their way, final.
    ct.set_online(false);
    at.set_online(true);
    bt.set_online(true);
    net.set_store_miss(0.0);
    alice.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 3).await;
    bob.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 4).await;
    until("epoch 2 final at alice and bob", async || {
        alice.stats().await.epochs_final >= 3 && bob.stats().await.epochs_final >= 2
    })
    .await;
    // Carol comes back: her branch is past recovery (Unrecoverable, then added again),
    // and dave's state on it is withdrawn.
    ct.set_online(true);
    carol.sync().await.unwrap();
    until("carol back", async || carol.stats().await.rejoined == 1).await;
    until("dave's dead state withdrawn", async || {
        !dave.groups().await.unwrap().contains(&g)
    })
    .await;
    converge(&[&alice, &bob, &carol], &g, 5).await;
    assert!(!names(&alice, &g).await.contains(&"dave".to_string()));
}

/// The same partition trace (seed 100), the other half: the member had already reported
/// its state unrecoverable when it made that invitation. A state known to be dead makes
/// no commits: its operations wait for the way back.
#[tokio::test(start_paused = true)]
async fn a_state_known_to_be_dead_makes_no_commits() {
    let net = net();
    let Three {
        alice,
        carol,
        at,
        bt,
        ct,
        g,
        ..
    } = carol_left_behind(&net).await;
    let (dave, _dt) = client_on(&net, config("dave")).await;
    // Carol learns from the store that her branch is past recovery; nobody is there to
    // add her again.
    at.set_online(false);
    bt.set_online(false);
    ct.set_online(true);
    carol.sync().await.unwrap();
    until("carol reports the group unrecoverable", async || {
        carol.status(&g).await.unwrap().lost_at == Some(2)
    })
    .await;
    let epoch = carol.status(&g).await.unwrap().epoch;
    carol.invite(&g, &dave.id()).await.unwrap();
    carol.update(&g).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!dave.groups().await.unwrap().contains(&g));
    assert_eq!(carol.status(&g).await.unwrap().epoch, epoch);
    // Once alice and bob are back, carol is added again, and what she asked for while
    // she waited is done on the live group: dave is in it.
    at.set_online(true);
    bt.set_online(true);
    until("carol back", async || carol.stats().await.rejoined == 1).await;
    until("dave in the live group", async || {
        dave.groups().await.unwrap().contains(&g)
            && names(&alice, &g).await.contains(&"dave".to_string())
    })
    .await;
}

/// Partition seed 6, reduced: on a branch that loses at epoch 6, alice removes erin and
/// carol invites her again; erin joins with carol's Welcome, which replaces her state.
/// Bob, dave, frank and gina (4 of 7) make bob's commit for 6 final: the live chain lists
/// erin with her earlier leaf. Carol, back, moves to it and withdraws her Welcome (an
/// add through a commit that lost). Erin must not just drop the group: nobody re-adds a
/// listed member unasked, so she asks to be added again as a member that lost the group
/// at her earlier state's last final epoch (5), and is back. Alice is gone for good (her
/// removal, done again on the live chain, would hide the case). Fails without
/// `joins::on_void`'s way back: erin listed, holding nothing.
#[tokio::test(start_paused = true)]
async fn a_member_whose_second_welcome_is_withdrawn_asks_to_be_added_again() {
    let net = net();
    let mut clients = Vec::new();
    for name in ["alice", "bob", "carol", "dave", "erin", "frank", "gina"] {
        clients.push(client_on(&net, config(name)).await);
    }
    let all: Vec<&Client> = clients.iter().map(|(c, _)| c).collect();
    let t = |i: usize| clients[i].1.clone();
    let (alice, bob, carol, erin) = (all[0], all[1], all[2], all[4]);
    let g = group(&all).await;
    converge(&all, &g, 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let live = [1, 3, 5, 6];
    for i in live {
        t(i).set_online(false);
    }
    alice.remove(&g, &erin.id()).await.unwrap();
    converge(&[alice, carol], &g, 7).await;
    until("erin removed on alice's branch", async || {
        !erin.groups().await.unwrap().contains(&g)
    })
    .await;
    carol.invite(&g, &erin.id()).await.unwrap();
    until("erin back on alice's branch", async || {
        erin.status(&g).await.is_ok_and(|s| s.epoch == 8)
    })
    .await;
    for i in [0, 2, 4] {
        t(i).set_online(false);
    }
    for i in live {
        t(i).set_online(true);
    }
    let final_before = bob.stats().await.epochs_final;
    bob.update(&g).await.unwrap();
    let live_clients: Vec<&Client> = live.iter().map(|i| all[*i]).collect();
    converge(&live_clients, &g, 7).await;
    until("epoch 6 final at bob", async || {
        bob.stats().await.epochs_final > final_before
    })
    .await;
    assert!(names(bob, &g).await.contains(&"erin".to_string()));
    // Carol and erin are back; alice stays away.
    let mut events = erin.events();
    t(2).set_online(true);
    t(4).set_online(true);
    let back: Vec<&Client> = [1, 2, 3, 4, 5, 6].iter().map(|i| all[*i]).collect();
    converge_anywhere("erin added again on the live chain", &back, &g).await;
    let mut rejoined = false;
    while let Some(e) = events.try_recv() {
        rejoined |= matches!(e, Event::Rejoined { .. });
    }
    assert!(rejoined, "erin came back as a member that lost the group");
}

/// Honest simulation seeds 104 and 48 (and 62 of an earlier build), by hand: dave is added
/// at epoch 2, removed at 3 before that Welcome reached him, and added again at 4. The
/// message sent in epoch 2 was for him (the chain lists him there), but the state he joined
/// at 4 has no secret of epoch 2. When the first Welcome arrives at last, it is kept aside
/// (a live state is never replaced) and read with: the message of epoch 2 is his. (To hold
/// the first Welcome back, dave takes invitations from contacts only, bob and not alice;
/// alice's waits for consent, and comes again after he is back: published again by alice,
/// or played again by the relay.)
#[tokio::test(start_paused = true)]
async fn a_member_added_again_reads_the_epoch_of_a_welcome_that_came_late() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let bob = client(&net, config("bob")).await;
    let mut dc = config("dave");
    dc.invitations = pqmls::InvitePolicy::Contacts;
    dc.limits.seen = 1; // forgets seen ids at once: the replay gets through
    let dave = client(&net, dc).await;
    dave.add_contact(&bob.id(), "bob").await.unwrap();
    let g = group(&[&alice, &bob]).await;
    alice.invite(&g, &dave.id()).await.unwrap();
    converge(&[&alice, &bob], &g, 2).await;
    let inbox = inbox_topic(&dave.id());
    let mut first = None;
    until("alice's Welcome for dave", async || {
        first = net
            .history_of(&inbox)
            .into_iter()
            .find(|m| m.data.first() == Some(&WELCOME));
        first.is_some()
    })
    .await;
    let first = first.unwrap();
    bob.send(&g, b"for dave, at epoch 2").await.unwrap();
    until("delivered", async || {
        alice.history(&g, 10).await.unwrap().len() == 1
    })
    .await;
    alice.remove(&g, &dave.id()).await.unwrap();
    converge(&[&alice, &bob], &g, 3).await;
    bob.invite(&g, &dave.id()).await.unwrap();
    until("dave in", async || {
        dave.groups().await.unwrap().contains(&g)
    })
    .await;
    converge(&[&alice, &bob, &dave], &g, 4).await;
    let read = async || {
        dave.history(&g, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.body == b"for dave, at epoch 2")
    };
    // Alice publishes her Welcome again while her add is not final (`republish_own`,
    // wrapped so that no transport refuses it), which may bring it first; the relay's
    // copy does otherwise.
    net.replay(&first);
    until("the message of epoch 2 read", read).await;
    // Read only: the state dave holds is the one he joined at 4, and it works.
    converge(&[&alice, &bob, &dave], &g, 4).await;
    assert_eq!(dave.status(&g).await.unwrap().lost_at, None);
    alice.send(&g, b"after").await.unwrap();
    until("dave reads on", async || {
        dave.history(&g, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.body == b"after")
    })
    .await;
}
