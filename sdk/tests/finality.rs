//! Finality (issue 11): once the votes of a majority of an epoch's members make its
//! ending final, what was kept to move away from it is deleted; without a majority, the
//! snapshots last until `Config::fork_horizon`, a bound in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::*;
use std::sync::Arc;

use pqmls::sim::{SimConfig, SimNetwork, SimTransport};
use pqmls::{Client, GroupId, Transport};

fn net() -> SimNetwork {
    let net = SimNetwork::new(SimConfig::default());
    net.set_directory_validator(pqmls::directory_validator().unwrap());
    net
}

type Member = (Client, Arc<SimTransport>);

/// Alice, bob, carol and dave in one group at epoch 3, settled for a second, and erin
/// outside it; each with the transport the test controls.
async fn four_and_erin(net: &SimNetwork) -> ([Member; 5], GroupId) {
    let mut v = Vec::new();
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        v.push(client_on(net, config(name)).await);
    }
    let four: Vec<&Client> = v.iter().take(4).map(|(c, _)| c).collect();
    let g = group(&four).await;
    converge(&four, &g, 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    (v.try_into().ok().unwrap(), g)
}

/// Clients the test can take offline (`away`, with their transports) and `holders`
/// other clients named m0, m1, ...
async fn away_and_holders(
    net: &SimNetwork,
    away: &[&str],
    holders: usize,
) -> (Vec<Client>, Vec<Arc<SimTransport>>, Vec<Client>) {
    let mut clients = Vec::new();
    let mut transports = Vec::new();
    for name in away {
        let (c, t) = client_on(net, config(name)).await;
        clients.push(c);
        transports.push(t);
    }
    let mut others = Vec::new();
    for i in 0..holders {
        others.push(client(net, config(&format!("m{i}"))).await);
    }
    (clients, transports, others)
}

async fn size(c: &Client, table: &str) -> u64 {
    c.table_sizes().await.unwrap()[table]
}

#[tokio::test(start_paused = true)]
async fn final_epochs_keep_no_snapshots_candidates_or_votes() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let bob = client(&net, config("bob")).await;
    let carol = client(&net, config("carol")).await;
    let g = group(&[&alice, &bob, &carol]).await;
    bob.update(&g).await.unwrap();
    converge(&[&alice, &bob, &carol], &g, 3).await;
    // Epochs 0-2 final at alice (she held them all), 1-2 at bob, 2 at carol.
    until("final", async || {
        alice.stats().await.epochs_final >= 3
            && bob.stats().await.epochs_final >= 2
            && carol.stats().await.epochs_final >= 1
    })
    .await;
    for c in [&alice, &bob, &carol] {
        let finals = c.stats().await.epochs_final;
        assert!(c.stats().await.votes_cast >= 1);
        assert_eq!(size(c, "pqmls_snap_group_data").await, 0);
        assert_eq!(size(c, "pqmls_votes").await, 0);
        // Of the candidates, only each final epoch's commit (a public ciphertext, kept
        // to answer a member that missed it), with the epochs' tags.
        assert!(size(c, "pqmls_commits").await <= finals);
        assert!(size(c, "pqmls_epoch_keys").await <= finals + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_majority_snapshots_last_until_the_horizons() {
    let net = net();
    let mut short = config("alice");
    short.fork_horizon = Duration::ZERO;
    // The first open epoch's snapshot (round 2 may need it) lasts longer.
    short.open_epoch_horizon = Duration::from_secs(3);
    let alice = client(&net, short).await;
    let bob = client(&net, config("bob")).await;
    let (ct, cin) = net.attach();
    let carol = Client::open(config("carol"), ct.clone(), cin)
        .await
        .unwrap();
    let (dt, din) = net.attach();
    let dave = Client::open(config("dave"), dt.clone(), din).await.unwrap();
    let g = group(&[&alice, &bob, &carol, &dave]).await;
    // Two of four offline: alice's and bob's votes are no majority.
    ct.set_online(false);
    dt.set_online(false);
    let before = (
        alice.stats().await.epochs_final,
        bob.stats().await.epochs_final,
    );
    bob.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Epoch 3 is alice's first open epoch: past her fork horizon (zero) its snapshot
    // stays, for a round-2 choice or a move to its final commit, until her open-epoch
    // horizon (3 s).
    assert!(size(&alice, "pqmls_snap_group_data").await >= 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        (
            alice.stats().await.epochs_final,
            bob.stats().await.epochs_final
        ),
        before,
        "epoch 3 final without a majority"
    );
    // Bob keeps epoch 3's snapshot (he could still move); alice's horizons are past.
    assert!(size(&bob, "pqmls_snap_group_data").await >= 1);
    assert_eq!(size(&alice, "pqmls_snap_group_data").await, 0);
    // Back online, the votes complete and bob's snapshot goes too.
    ct.set_online(true);
    dt.set_online(true);
    for c in [&carol, &dave] {
        c.sync().await.unwrap();
    }
    converge(&[&alice, &bob, &carol, &dave], &g, 4).await;
    until("final with the majority back", async || {
        size(&bob, "pqmls_snap_group_data").await == 0
    })
    .await;
}

/// Delivery evidence: alice's commit reaches nobody (bob is offline, the store misses
/// it). She merged it, but it is not final; she publishes it again once she has peers,
/// bob merges it, votes, and it becomes final. Before, an author whose commit reached no
/// store stayed on a branch of its own for good.
#[tokio::test(start_paused = true)]
async fn a_commit_that_reached_no_one_is_published_again() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let (bt, bin) = net.attach();
    let bob = Client::open(config("bob"), bt.clone(), bin).await.unwrap();
    let g = group(&[&alice, &bob]).await;
    bt.set_online(false);
    net.set_store_miss(1.0);
    alice.update(&g).await.unwrap();
    until("alice merged her commit", async || {
        alice.status(&g).await.unwrap().epoch == 2
    })
    .await;
    net.set_store_miss(0.0);
    bt.set_online(true);
    bob.sync().await.unwrap();
    assert_eq!(bob.status(&g).await.unwrap().epoch, 1, "the store had it");
    converge(&[&alice, &bob], &g, 2).await;
    assert!(alice.stats().await.republished >= 1);
    until("final at both", async || {
        alice.stats().await.epochs_final >= 2 && bob.stats().await.epochs_final >= 1
    })
    .await;
}

/// The other side of the rule above: a commit that reached a member (its vote names it)
/// is not published again while its epoch waits for a quorum. Alice and bob of five
/// are online; carol, dave and erin are away, so bob's update is not final; alice's vote
/// says it reached her, and bob sends no copy. (At 50 members every commit
/// took over 800 ms to be final, and each author's copy, 67 kB to every member, slowed
/// the members the commit was still on its way to.)
#[tokio::test(start_paused = true)]
async fn a_commit_that_reached_members_is_not_published_again() {
    let net = net();
    let mut v = Vec::new();
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        v.push(client_on(&net, config(name)).await);
    }
    let all: Vec<&Client> = v.iter().map(|(c, _)| c).collect();
    let g = group(&all).await;
    converge(&all, &g, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bob = &v[1].0;
    let finals = bob.stats().await.epochs_final;
    let before = bob.stats().await.republished;
    for (_, t) in &v[2..] {
        t.set_online(false);
    }
    bob.update(&g).await.unwrap();
    converge(&all[..2], &g, 5).await;
    // Four republication gaps (8 settle times each).
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        bob.stats().await.epochs_final,
        finals,
        "final without a quorum"
    );
    assert_eq!(
        bob.stats().await.republished,
        before,
        "a copy of a commit others have"
    );
}

/// Timers that commit wait while the client has no peers: an offline device does not
/// run its self-update alone (it would be a branch of one).
#[tokio::test(start_paused = true)]
async fn self_updates_wait_for_peers() {
    let net = net();
    let (at, ain) = net.attach();
    let mut c = config("alice");
    c.self_update_interval = Some(Duration::from_secs(3600));
    let alice = Client::open(c, at.clone(), ain).await.unwrap();
    let bob = client(&net, config("bob")).await;
    let g = group(&[&alice, &bob]).await;
    at.set_online(false);
    // A day passes offline.
    alice.skew_clock(Duration::from_secs(24 * 3600)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(alice.status(&g).await.unwrap().epoch, 1, "updated alone");
    at.set_online(true);
    until("updated with peers", async || {
        alice.status(&g).await.unwrap().epoch >= 2
    })
    .await;
}

/// A commit that a member missed and the store missed too: the member sees the group go
/// on (later commits and messages wait in its buffers), asks for the commit ending its
/// epoch, and a member that merged it publishes it again. Before, it stayed behind for
/// good (77 of 87 simulated trials with the store missing 10 % of messages).
#[tokio::test(start_paused = true)]
async fn a_member_asks_for_a_commit_it_and_the_store_missed() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let (ct, cin) = net.attach();
    let carol = Client::open(config("carol"), ct.clone(), cin)
        .await
        .unwrap();
    let bob = client(&net, config("bob")).await;
    let g = group(&[&alice, &carol, &bob]).await;
    // Bob's update reaches alice only: carol is offline and the store misses it.
    ct.set_online(false);
    net.set_store_miss(1.0);
    bob.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 3).await;
    net.set_store_miss(0.0);
    ct.set_online(true);
    // The group goes on; carol sees it but cannot follow without the commit.
    alice.update(&g).await.unwrap();
    alice.send(&g, b"after both updates").await.unwrap();
    converge(&[&alice, &bob, &carol], &g, 4).await;
    assert!(carol.stats().await.needs_sent >= 1);
    assert!(total(&[&alice, &bob], |s| s.needs_answered).await >= 1);
    until("delivered", async || {
        carol
            .history(&g, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.body == b"after both updates")
    })
    .await;
}

/// The same in a group of nine: carol's request is answered, and by a few of the eight
/// members that hold the commit, not by all of them (`answers_need`: 3 on a first
/// request, 3 more on each later one). Before, each of the eight answered each
/// request, republishing the commit and its votes: at 50 members that was most of what a
/// commit cost when members were only slow (BENCHMARKS.md).
#[tokio::test(start_paused = true)]
async fn a_request_for_a_missing_commit_is_answered_by_a_few_members_not_all() {
    let net = net();
    let (ct, cin) = net.attach();
    let carol = Client::open(config("carol"), ct.clone(), cin)
        .await
        .unwrap();
    let mut others = Vec::new();
    for i in 0..8 {
        others.push(client(&net, config(&format!("m{i}"))).await);
    }
    let mut all: Vec<&Client> = others.iter().collect();
    all.push(&carol);
    let g = group(&all).await;
    converge(&all, &g, 8).await;
    let holders: Vec<&Client> = others.iter().collect();
    let answered_before = total(&holders, |s| s.needs_answered).await;
    let sent_before = carol.stats().await.needs_sent;
    // An update carol and the store miss.
    ct.set_online(false);
    net.set_store_miss(1.0);
    others[1].update(&g).await.unwrap();
    converge(&holders, &g, 9).await;
    net.set_store_miss(0.0);
    ct.set_online(true);
    others[0].update(&g).await.unwrap();
    converge(&all, &g, 10).await;
    let sent = carol.stats().await.needs_sent - sent_before;
    let answered = total(&holders, |s| s.needs_answered).await - answered_before;
    assert!(
        sent >= 1 && answered >= 1,
        "sent {sent}, answered {answered}"
    );
    // At most 3, 6, 9, ... per request, and fewer than every holder each time.
    let bound: u64 = (1..=sent).map(|a| 3 * a).sum();
    assert!(
        answered <= bound && answered < 8 * sent,
        "{answered} answers to {sent} request(s)"
    );
}

/// Found at 50 members on real libp2p (BENCHMARKS.md, seventeenth session): once answers
/// got through the duplicate window, every answer carried the commit and all the votes
/// on its epoch (49 of 5.3 kB each on 0x004F: four fifths of the bytes), and members
/// that were only slow asked by the hundred; the answers swamped the gossip and the
/// commit did not reach every member in a minute. A member whose requests come from
/// votes naming a commit it lacks, or from a group that went on, holds or does not need
/// those votes: it asks for the commits alone. Here three members miss an update and
/// then see the group go on; the answers to their requests are the commit, no vote.
#[tokio::test(start_paused = true)]
async fn members_that_lack_only_the_commit_are_sent_only_the_commit() {
    let net = net();
    let (away, away_t, holders) = away_and_holders(&net, &["carol", "dave", "erin"], 6).await;
    let all: Vec<&Client> = holders.iter().chain(away.iter()).collect();
    let holders: Vec<&Client> = holders.iter().collect();
    let g = group(&all).await;
    converge(&all, &g, 8).await;
    // The inviter's Welcomes are published again 3 times, 8 settle times apart: done
    // before the count starts.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let answered_before = total(&holders, |s| s.needs_answered).await;
    let again_before = total(&holders, |s| s.published_again).await;
    let finals = each(&holders, |s| s.epochs_final).await;
    for t in &away_t {
        t.set_online(false);
    }
    net.set_store_miss(1.0);
    holders[1].update(&g).await.unwrap();
    converge(&holders, &g, 9).await;
    // Final at the six (a quorum of nine), so its author does not publish it again.
    until("epoch 8 final", async || {
        each(&holders, |s| s.epochs_final)
            .await
            .iter()
            .zip(&finals)
            .all(|(now, before)| now > before)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    net.set_store_miss(0.0);
    for t in &away_t {
        t.set_online(true);
    }
    holders[0].update(&g).await.unwrap();
    converge(&all, &g, 10).await;
    let answered = total(&holders, |s| s.needs_answered).await - answered_before;
    let again = total(&holders, |s| s.published_again).await - again_before;
    assert!(answered >= 1, "no request answered");
    // One commit per answer: the votes (six or more per answer) stayed home.
    assert!(again <= answered, "{again} payloads for {answered} answers");
}

/// Many members lacking one commit cost the group as few answers as one does: every
/// request for an epoch in one round goes to the same members, ranked by the epoch's tag
/// (`answers_need`), and each answers once a gap, and not at all within a gap of seeing
/// another's answer go by (`aired`). Ten of sixteen members miss an update (the store
/// too) and see the group go on; they ask, each at its first attempt, and at most the
/// three members ranked first answer, whatever the number of askers. With the ranking
/// per request (by its nonce) put back, the bound failed in 2 of 7 runs (4 answers): the
/// `aired` rule alone stops most extra answers, the ranking the rest.
#[tokio::test(start_paused = true)]
async fn many_members_asking_for_one_commit_get_the_answers_of_one() {
    let net = net();
    let names: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (away, away_t, holders) = away_and_holders(&net, &names, 6).await;
    let all: Vec<&Client> = holders.iter().chain(away.iter()).collect();
    let holders: Vec<&Client> = holders.iter().collect();
    let away: Vec<&Client> = away.iter().collect();
    let g = group(&all).await;
    converge(&all, &g, 15).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let answered_before = total(&holders, |s| s.needs_answered).await;
    let sent_before = each(&away, |s| s.needs_sent).await;
    for t in &away_t {
        t.set_online(false);
    }
    net.set_store_miss(1.0);
    holders[1].update(&g).await.unwrap();
    converge(&holders, &g, 16).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    net.set_store_miss(0.0);
    for t in &away_t {
        t.set_online(true);
    }
    holders[0].update(&g).await.unwrap();
    converge(&all, &g, 17).await;
    let answered = total(&holders, |s| s.needs_answered).await - answered_before;
    let sent: Vec<u64> = each(&away, |s| s.needs_sent)
        .await
        .iter()
        .zip(&sent_before)
        .map(|(now, before)| now - before)
        .collect();
    let askers = sent.iter().filter(|n| **n > 0).count();
    let most = sent.iter().copied().max().unwrap_or(0);
    assert!(askers >= 6, "only {askers} of 10 asked: {sent:?}");
    // A member ranked first answers at most once a gap; requests of one epoch at their
    // a-th attempt reach the first 3a members, whoever sends them.
    let bound: u64 = (1..=most).map(|a| 3 * a).sum();
    assert!(
        answered >= 1 && answered <= bound,
        "{answered} answers to requests {sent:?} (at most {bound})"
    );
}

/// On a transport that refuses to publish again what it saw within a window (gossipsub's
/// duplicate cache: 2 minutes on both of ours, modelled by the simulation), a member
/// whose copy of a commit was lost, and which the store missed too, gets it from the
/// answers to its request within that window: answers are wrapped with a fresh nonce
/// (`Wire::Again`). Sent as the original bytes, every answer was refused by the
/// answerer's own node, and the member could only wait for the window to pass (or report
/// `Unrecoverable` when its requests ran out first).
#[tokio::test(start_paused = true)]
async fn an_answer_reaches_the_member_that_asked_within_the_duplicate_window() {
    let net = SimNetwork::new(SimConfig {
        duplicate_window: Some(Duration::from_secs(120)),
        ..SimConfig::default()
    });
    net.set_directory_validator(pqmls::directory_validator().unwrap());
    let (ct, cin) = net.attach();
    let carol = Client::open(config("carol"), ct.clone(), cin)
        .await
        .unwrap();
    let mut others = Vec::new();
    for i in 0..4 {
        others.push(client(&net, config(&format!("m{i}"))).await);
    }
    let mut all: Vec<&Client> = others.iter().collect();
    all.push(&carol);
    let g = group(&all).await;
    converge(&all, &g, 4).await;
    let holders: Vec<&Client> = others.iter().collect();
    // An update carol and the store miss.
    ct.set_online(false);
    net.set_store_miss(1.0);
    others[1].update(&g).await.unwrap();
    converge(&holders, &g, 5).await;
    net.set_store_miss(0.0);
    ct.set_online(true);
    let start = tokio::time::Instant::now();
    others[0].update(&g).await.unwrap();
    converge(&all, &g, 6).await;
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "carol caught up only after {:?}",
        start.elapsed()
    );
    assert!(carol.stats().await.needs_sent >= 1);
    assert!(total(&holders, |s| s.needs_answered).await >= 1);
    assert!(total(&holders, |s| s.published_again).await >= 1);
    assert_eq!(carol.stats().await.unrecoverable, 0);
}

/// Votes for epochs a member does not hold are kept for when it enters them, bounded in
/// rows (1024) and, since anyone can publish one, in bytes: a "vote" larger than any
/// member's is kept nowhere.
#[tokio::test(start_paused = true)]
async fn votes_from_strangers_are_bounded_in_bytes() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let bob = client(&net, config("bob")).await;
    let g = group(&[&alice, &bob]).await;
    let mallory = Mallory::new(&net, "mallory");
    let gt = group_topic(&g);
    publish(
        &mallory.transport,
        &gt,
        &[
            envelope(VOTE, &[1; 16], &vec![0x42; 20 * 1024]),
            envelope(VOTE, &[2; 16], &[0x42; 200]),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The small one waits (it could be a vote for an epoch not reached yet); the large
    // one is dropped.
    assert_eq!(size(&alice, "pqmls_votes_pending").await, 1);
}

/// An outsider that reads the group topic sees every vote's epoch tag in clear, and a
/// request for a missing commit (`Wire::Need`) named its epoch by that tag alone: anyone
/// could make members publish a commit and every vote on it again (330 kB at 50 members
/// on 0x004F) for a request of 26 bytes, each claimed round of answerers once per gap and
/// epoch, whatever the number of members. A request now carries a MAC under a key of the
/// epoch it names, so only that epoch's members can ask; here mallory asks for every
/// epoch she saw a vote of, in every round of answerers, and nobody answers.
#[tokio::test(start_paused = true)]
async fn requests_for_commits_from_outsiders_are_not_answered() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let bob = client(&net, config("bob")).await;
    let carol = client(&net, config("carol")).await;
    let all = [&alice, &bob, &carol];
    let g = group(&all).await;
    alice.update(&g).await.unwrap();
    converge(&all, &g, 3).await;
    // Welcomes and own commits are published again for a while: done before the count.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let gt = group_topic(&g);
    let tags: std::collections::BTreeSet<Vec<u8>> = net
        .history_of(&gt)
        .iter()
        .filter(|m| m.data.first() == Some(&VOTE))
        .map(|m| m.data[1..17].to_vec())
        .collect();
    assert!(tags.len() >= 2, "votes seen on {} epoch(s)", tags.len());
    let answered = total(&all, |s| s.needs_answered).await;
    let again = total(&all, |s| s.published_again).await;
    let mallory = Mallory::new(&net, "mallory");
    for tag in &tags {
        let mut requests = Vec::new();
        for attempt in 1..=u8::MAX {
            requests.push(need(
                tag,
                [attempt, 7, 7, 7, 7, 7, 7, 7],
                true,
                [attempt; 16],
            ));
        }
        publish(&mallory.transport, &gt, &requests).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(total(&all, |s| s.needs_answered).await, answered);
    assert_eq!(total(&all, |s| s.published_again).await, again);
    // Refused as forged, not ignored as unknown: the tags were the epochs' own.
    assert!(total(&all, |s| s.needs_refused).await >= 255);
}

/// A member's request, recorded by a store or a relay, replayed by anyone later: within
/// `NEED_FRESH_MS` (10 minutes) of the answerer's clock it is answered as the original
/// was (its MAC is good; the rate limits bound it as they bound the member's own
/// requests), further away it is not. Here carol asks for an update she and the store
/// missed; her request is replayed once gossip's duplicate window has passed (it is
/// answered), and again with the members' clocks 11 minutes on (it is refused). Alice
/// and bob remember one seen payload id only (`Limits::seen`), as if a flood had pushed
/// carol's out of their tables (200 000 by default), which would drop a replay
/// otherwise.
#[tokio::test(start_paused = true)]
async fn a_request_replayed_late_is_not_answered() {
    let net = net();
    let forgetful = |name: &str| {
        let mut c = config(name);
        c.limits.seen = 1;
        c
    };
    let alice = client(&net, forgetful("alice")).await;
    let (ct, cin) = net.attach();
    let carol = Client::open(config("carol"), ct.clone(), cin)
        .await
        .unwrap();
    let bob = client(&net, forgetful("bob")).await;
    let g = group(&[&alice, &carol, &bob]).await;
    ct.set_online(false);
    net.set_store_miss(1.0);
    bob.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 3).await;
    net.set_store_miss(0.0);
    ct.set_online(true);
    alice.update(&g).await.unwrap();
    converge(&[&alice, &bob, &carol], &g, 4).await;
    let gt = group_topic(&g);
    let request = net
        .history_of(&gt)
        .into_iter()
        .find(|m| m.data.first() == Some(&5))
        .expect("carol asked");
    let holders = [&alice, &bob];
    // Past gossip's duplicate window (2 minutes) and the answerers' gaps.
    tokio::time::sleep(Duration::from_secs(180)).await;
    let answered = total(&holders, |s| s.needs_answered).await;
    let refused = total(&holders, |s| s.needs_refused).await;
    net.replay(&request);
    until("the replay answered", async || {
        total(&holders, |s| s.needs_answered).await > answered
    })
    .await;
    assert_eq!(total(&holders, |s| s.needs_refused).await, refused);
    // Eleven minutes on (the members' clocks; the window of the transports has passed
    // again): refused.
    tokio::time::sleep(Duration::from_secs(180)).await;
    for c in holders {
        c.skew_clock(Duration::from_secs(11 * 60)).await;
    }
    let answered = total(&holders, |s| s.needs_answered).await;
    net.replay(&request);
    until("the late replay refused", async || {
        total(&holders, |s| s.needs_refused).await >= refused + 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(total(&holders, |s| s.needs_answered).await, answered);
}

/// Votes lost for good: carol is away and the store misses alice's commit and every vote
/// on it; alice and bob make it final and stop sending their votes. Back, carol sees a
/// later message, asks for the commit, and gets it with the votes that made it final, so
/// the epoch is final at her too. Before, she merged the commit but the epoch never became
/// final at her (the votes were nowhere), and her finality stopped there for good.
#[tokio::test(start_paused = true)]
async fn votes_lost_for_good_come_back_with_the_final_commit() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let bob = client(&net, config("bob")).await;
    let (ct, cin) = net.attach();
    let carol = Client::open(config("carol"), ct.clone(), cin)
        .await
        .unwrap();
    let g = group(&[&alice, &bob, &carol]).await;
    let (a0, b0, c0) = (
        alice.stats().await.epochs_final,
        bob.stats().await.epochs_final,
        carol.stats().await.epochs_final,
    );
    ct.set_online(false);
    net.set_store_miss(1.0);
    alice.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 3).await;
    until("epoch 2 final at alice and bob", async || {
        alice.stats().await.epochs_final > a0 && bob.stats().await.epochs_final > b0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    net.set_store_miss(0.0);
    ct.set_online(true);
    alice.send(&g, b"later").await.unwrap();
    carol.sync().await.unwrap();
    converge(&[&alice, &bob, &carol], &g, 3).await;
    until("epoch 2 final at carol", async || {
        carol.stats().await.epochs_final > c0
    })
    .await;
    assert!(carol.stats().await.needs_sent >= 1);
}

/// Found in a simulated trial (seed 6, store misses 10 %): the creator's first add is
/// epoch 0's commit, final at once (the creator is its only member). Finalising epoch `e`
/// deleted every kept commit of epoch `e - 64` and before, computed with a saturating
/// subtraction: for `e` below 64 that bound was 0, so epoch 0's own commit went at once,
/// and with it the Welcome that was to be sent again. An invitee whose first copy gossip
/// dropped and the stores missed never joined; the creator's epoch 1 (creator and that
/// invitee) could then never be final, and its snapshots piled up to the rollback window.
#[tokio::test(start_paused = true)]
async fn the_first_welcome_of_a_group_is_sent_again_when_it_was_lost() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let g = alice.create_group().await.unwrap();
    // Bob's key package is in the directory; the Welcome itself reaches neither him
    // (offline) nor the stores (they miss everything for now).
    bt.set_online(false);
    net.set_store_miss(1.0);
    alice.invite(&g, &bob.id()).await.unwrap();
    until("alice's add merged", async || {
        alice.status(&g).await.unwrap().epoch == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    bt.set_online(true);
    net.set_store_miss(0.0);
    until("bob joined from a copy sent again", async || {
        bob.groups().await.unwrap().contains(&g)
    })
    .await;
    converge(&[&alice, &bob], &g, 1).await;
    // And the epoch they share ends in a commit that becomes final at both.
    bob.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 2).await;
    until("epoch 1 final", async || {
        alice.stats().await.epochs_final >= 2 && bob.stats().await.epochs_final >= 1
    })
    .await;
}

/// Found in simulated trials (store misses 10 %): the last commit of a quiet group, missed
/// by one member's gossip and by the stores. The votes of the others made it final, and
/// the member had read them (they are sealed under the epoch it is in), but it asked only
/// for commits of epochs it had left, or when later messages were waiting: nothing more
/// ever came, and it stayed an epoch behind for good.
#[tokio::test(start_paused = true)]
async fn a_member_that_missed_the_last_commit_asks_for_it_by_the_votes() {
    let net = net();
    let alice = client(&net, config("alice")).await;
    let bob = client(&net, config("bob")).await;
    let (carol, ct) = client_on(&net, config("carol")).await;
    let g = group(&[&alice, &bob, &carol]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Bob's commit reaches alice only: carol is away and the stores miss it. The votes
    // that follow a settle time later reach everyone.
    ct.set_online(false);
    net.set_store_miss(1.0);
    bob.update(&g).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    ct.set_online(true);
    net.set_store_miss(0.0);
    converge(&[&alice, &bob], &g, 3).await;
    until("epoch 2 final at alice and bob", async || {
        alice.stats().await.epochs_final >= 3 && bob.stats().await.epochs_final >= 2
    })
    .await;
    // Nothing else is sent: carol has the votes and nothing more.
    converge(&[&alice, &bob, &carol], &g, 3).await;
    assert!(carol.stats().await.needs_sent >= 1);
}

/// Issue 11, recovery: "when nothing works, an explicit unrecoverable event, never a silent
/// fork". A member holds the votes that make a commit final for its epoch but can get the
/// commit from nobody (the stores missed it, and the members that hold it are gone). Once
/// its requests are spent it reports `Unrecoverable` (and asks to be added again), rather
/// than waiting an epoch behind for good.
#[tokio::test(start_paused = true)]
async fn a_final_commit_nobody_can_send_ends_in_unrecoverable_not_silence() {
    use pqmls::Transport as _;
    let net = net();
    let (alice, at) = client_on(&net, config("alice")).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let (carol, ct) = client_on(&net, config("carol")).await;
    let g = group(&[&alice, &bob, &carol]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut events = carol.events();
    // A relay (the observer) sees the group topic.
    let (obs, mut obs_in) = net.attach();
    let gt = group_topic(&g);
    obs.subscribe(&gt).await.unwrap();
    // Carol is away and the stores miss everything: bob's commit and the two votes that
    // make it final reach alice, bob and the relay only.
    ct.set_online(false);
    net.set_store_miss(1.0);
    bob.update(&g).await.unwrap();
    let votes = [
        capture(&mut obs_in, &gt, VOTE).await,
        capture(&mut obs_in, &gt, VOTE).await,
    ];
    converge(&[&alice, &bob], &g, 3).await;
    // Then alice and bob are gone, and carol is back: the relay gives her the votes, and
    // nobody can send her the commit.
    at.set_online(false);
    bt.set_online(false);
    ct.set_online(true);
    publish(&obs, &gt, &votes).await;
    until("carol reports the group unrecoverable", async || {
        carol.status(&g).await.unwrap().lost_at == Some(2)
    })
    .await;
    assert_eq!(carol.status(&g).await.unwrap().epoch, 2);
    assert!(carol.stats().await.needs_sent >= 20);
    let mut reported = false;
    while let Some(e) = events.try_recv() {
        reported |= matches!(e, pqmls::Event::Unrecoverable { epoch: 2, .. });
    }
    assert!(reported, "an Unrecoverable event for epoch 2");
}

/// Issue 11, "never a silent fork": the path the sixteenth session left open. Carol,
/// away, commits alone for epoch 2 while alice and bob finalise bob's commit for it;
/// the stores miss everything. When carol is back, alice and bob are gone: all her
/// requests for that epoch, open at her, go unanswered. Then they are back, and quiet
/// (nobody commits, nobody sends). Carol, on a branch nobody else is on, must still
/// learn how epoch 2 ended (her requests go on, at a slow rate, after the first 20) and
/// get back to the group, not stay on her own branch for good.
#[tokio::test(start_paused = true)]
async fn a_member_whose_requests_went_unanswered_asks_again_later() {
    let net = net();
    let (alice, at) = client_on(&net, config("alice")).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let (carol, ct) = client_on(&net, config("carol")).await;
    let g = group(&[&alice, &bob, &carol]).await;
    // A relay: carol has a peer while alice and bob are away (a client asks nothing
    // without one), and it can answer nothing.
    let (_relay, _relay_in) = net.attach();
    tokio::time::sleep(Duration::from_secs(1)).await;
    ct.set_online(false);
    net.set_store_miss(1.0);
    bob.update(&g).await.unwrap();
    converge(&[&alice, &bob], &g, 3).await;
    until("epoch 2 final at alice and bob", async || {
        alice.stats().await.epochs_final >= 3 && bob.stats().await.epochs_final >= 2
    })
    .await;
    carol.update(&g).await.unwrap();
    until("carol on her own commit", async || {
        carol.status(&g).await.unwrap().epoch == 3
    })
    .await;
    at.set_online(false);
    bt.set_online(false);
    ct.set_online(true);
    // A gap (8 settle times: 2 s) before the first request, 20 requests a gap apart.
    tokio::time::sleep(Duration::from_secs(50)).await;
    let sent = carol.stats().await.needs_sent;
    assert!(sent >= 20, "carol asked {sent} times");
    let mine = carol.status(&g).await.unwrap();
    assert_eq!(mine.lost_at, None, "nothing told carol anything yet");
    at.set_online(true);
    bt.set_online(true);
    // Alice and bob hold the final commit of epoch 2 and its votes; carol asks once a
    // minute or so: within two minutes she is on their chain.
    tokio::time::sleep(Duration::from_secs(120)).await;
    converge_anywhere(
        "carol back on the group's chain",
        &[&alice, &bob, &carol],
        &g,
    )
    .await;
    assert_ne!(
        carol.status(&g).await.unwrap().epoch_authenticator,
        mine.epoch_authenticator,
        "carol left her own branch"
    );
}

/// Found in a simulated partition (seed 67): an epoch that can never be final (a round-1
/// split whose deciding vote belongs to a member away for good: round 2 waits for every
/// round-1 vote) stops finality, which goes in epoch order. A later epoch was then split
/// again, and the members on the losing side, their snapshots expired, never learned
/// their branch was dead: a fork nobody reported. The votes of that later epoch, sealed
/// under its keys, come from members on the same branch up to it; a quorum of them for
/// another commit ends our branch in every future. So carol, on her own commit of epoch
/// 6 while epoch 4 is stalled, reads that quorum and reports `Unrecoverable` (her
/// snapshot is gone), and is added again.
#[tokio::test(start_paused = true)]
async fn a_quorum_past_a_stalled_epoch_ends_a_dead_branch_out_loud() {
    let net = net();
    let (alice, at) = client_on(&net, config("alice")).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let mut short = config("carol");
    short.fork_horizon = Duration::from_secs(8);
    // Past the horizon for every epoch, the first open one too.
    short.open_epoch_horizon = short.fork_horizon;
    let (carol, ct) = client_on(&net, short).await;
    let (dave, dt) = client_on(&net, config("dave")).await;
    let (erin, et) = client_on(&net, config("erin")).await;
    let g = group(&[&alice, &bob, &carol, &dave, &erin]).await;
    converge(&[&alice, &bob, &carol, &dave, &erin], &g, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Erin is away for good; the stores miss everything from now on.
    et.set_online(false);
    net.set_store_miss(1.0);
    // Epoch 4 splits 2-2: alice and carol have alice's commit, bob and dave bob's.
    bt.set_online(false);
    dt.set_online(false);
    alice.update(&g).await.unwrap();
    converge(&[&alice, &carol], &g, 5).await;
    at.set_online(false);
    ct.set_online(false);
    bt.set_online(true);
    dt.set_online(true);
    bob.update(&g).await.unwrap();
    converge(&[&bob, &dave], &g, 5).await;
    at.set_online(true);
    ct.set_online(true);
    // Everyone moves to the better commit, and the author of the other commits again
    // (its update is still to do): epoch 5. Epoch 4 stays open without erin's vote.
    converge(&[&alice, &bob, &carol, &dave], &g, 6).await;
    let final_before = alice.stats().await.epochs_final;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        alice.stats().await.epochs_final,
        final_before,
        "epoch 4 final without erin's vote"
    );
    // Epoch 6 splits: carol, away, commits alone; the three others commit another, a
    // quorum of epoch 6's five members.
    let mut events = carol.events();
    ct.set_online(false);
    carol.update(&g).await.unwrap();
    until("carol on her own commit", async || {
        carol.status(&g).await.unwrap().epoch == 7
    })
    .await;
    alice.update(&g).await.unwrap();
    converge(&[&alice, &bob, &dave], &g, 7).await;
    // Carol's snapshot of epoch 6 expires; then she is back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    ct.set_online(true);
    until("carol reports her branch dead at epoch 6", async || {
        carol.status(&g).await.unwrap().lost_at == Some(6)
    })
    .await;
    let mut reported = false;
    while let Some(e) = events.try_recv() {
        reported |= matches!(e, pqmls::Event::Unrecoverable { epoch: 6, .. });
    }
    assert!(reported, "an Unrecoverable event for epoch 6");
    // And she is added again: one group of four (erin's leaf is still listed).
    converge_anywhere(
        "carol back in the group",
        &[&alice, &bob, &carol, &dave],
        &g,
    )
    .await;
    drop(erin);
}

/// Found in simulated partitions (a listed member whose state said "not a member any
/// more"): a member removed by a commit of a branch that then lost dropped the group when
/// the removal grace ended, final or not, while the group, on the live branch, still
/// listed it. And while removed it never asked what became of that epoch. Here alice
/// removes carol on a branch only the two of them see, and is then gone; bob, dave and
/// erin finalise bob's update for that epoch; carol, away through the grace period, comes
/// back, learns the final commit, moves to it, and is a member again, with no `Removed`.
#[tokio::test(start_paused = true)]
async fn a_removal_on_a_branch_that_lost_does_not_end_the_group_for_its_target() {
    let net = net();
    let (alice, at) = client_on(&net, config("alice")).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let (carol, ct) = client_on(&net, config("carol")).await;
    let (dave, dt) = client_on(&net, config("dave")).await;
    let (erin, et) = client_on(&net, config("erin")).await;
    let g = group(&[&alice, &bob, &carol, &dave, &erin]).await;
    converge(&[&alice, &bob, &carol, &dave, &erin], &g, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    net.set_store_miss(1.0);
    let mut events = carol.events();
    // Alice removes carol where only carol sees it; then alice is gone for good.
    for t in [&bt, &dt, &et] {
        t.set_online(false);
    }
    alice.remove(&g, &carol.id()).await.unwrap();
    until("carol removed on alice's branch", async || {
        !carol.groups().await.unwrap().contains(&g)
    })
    .await;
    at.set_online(false);
    ct.set_online(false);
    // Bob, dave and erin: a quorum of epoch 4's five members, for bob's update.
    for t in [&bt, &dt, &et] {
        t.set_online(true);
    }
    bob.update(&g).await.unwrap();
    converge(&[&bob, &dave, &erin], &g, 5).await;
    assert!(names(&bob, &g).await.contains(&"carol".to_string()));
    // Carol is away past the removal grace, then back.
    tokio::time::sleep(Duration::from_secs(40)).await;
    ct.set_online(true);
    converge(&[&bob, &carol, &dave, &erin], &g, 5).await;
    while let Some(e) = events.try_recv() {
        assert!(
            !matches!(e, pqmls::Event::Removed { .. }),
            "carol told she was removed by a commit that lost"
        );
    }
    drop(alice);
}

/// The stall above, ended: a member that lost the group says, with its signed rejoin
/// request, that it casts no vote in later epochs (but under the tags it lists), and a
/// round 1 that split and waited for its vote goes to round 2. Erin commits alone while
/// away, the others finalise another commit for that epoch (5), then split 2-2 on epoch
/// 6, where erin's old leaf (her own commit's) is still listed; erin comes back past her
/// horizon, reports `Unrecoverable` at 5, and her abstention lets epoch 6 become final. She is added again.
#[tokio::test(start_paused = true)]
async fn an_abstention_from_a_member_that_lost_the_group_ends_a_stalled_split() {
    stalled_split_ended_by_an_abstention(true).await;
}

/// Found in a simulated partition (seed 71, "voted twice" at an invitee): a member that
/// voted on a branch that then lost, and moved to the winner, published its vote again
/// sealed under the winner's keys of the same epoch number, for a commit of the branch it
/// left. The members of the winner then saw it vote twice in one round, an honest member
/// equivocating: its vote counts for both commits, and a commit nobody on the branch can
/// merge is "voted" in round 1. Here both halves of a 2-2 partition commit twice; whoever
/// moves has a vote of epoch 5 on the branch it left; once every vote was published again,
/// nobody has seen anyone vote twice.
#[tokio::test(start_paused = true)]
async fn votes_of_a_branch_left_are_never_published_on_the_winner() {
    let net = net();
    let (alice, at) = client_on(&net, config("alice")).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let (carol, ct) = client_on(&net, config("carol")).await;
    let (dave, dt) = client_on(&net, config("dave")).await;
    let all = [&alice, &bob, &carol, &dave];
    let g = group(&all).await;
    converge(&all, &g, 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    net.set_store_miss(1.0);
    // Alice and carol: epochs 3 and 4 on their side; bob and dave on theirs.
    bt.set_online(false);
    dt.set_online(false);
    alice.update(&g).await.unwrap();
    converge(&[&alice, &carol], &g, 4).await;
    carol.update(&g).await.unwrap();
    converge(&[&alice, &carol], &g, 5).await;
    at.set_online(false);
    ct.set_online(false);
    bt.set_online(true);
    dt.set_online(true);
    bob.update(&g).await.unwrap();
    converge(&[&bob, &dave], &g, 4).await;
    dave.update(&g).await.unwrap();
    converge(&[&bob, &dave], &g, 5).await;
    let voted = each(&all, |s| s.votes_cast).await;
    assert!(
        voted.iter().all(|v| *v >= 2),
        "votes on both sides: {voted:?}"
    );
    at.set_online(true);
    ct.set_online(true);
    net.set_store_miss(0.0);
    converge_anywhere("one branch", &all, &g).await;
    // Long enough for every vote not final to be published again, several times.
    tokio::time::sleep(Duration::from_secs(30)).await;
    converge_anywhere("one branch, later", &all, &g).await;
    assert_eq!(
        each(&all, |s| s.equivocations_seen).await,
        [0, 0, 0, 0],
        "a member seen voting twice"
    );
}

/// As above, with erin's leaf from the key package she was added with (she never
/// committed on the live chain): the split stalled for good before, since such a leaf
/// can be in states of other branches too and named no abstaining leaf (seeds 45, 57 and
/// 71 of the partition runs). Erin now binds herself never to join or vote in a state
/// with that leaf again before she abstains with it, and the split ends.
#[tokio::test(start_paused = true)]
async fn an_abstention_with_a_leaf_from_a_key_package_ends_a_stalled_split() {
    stalled_split_ended_by_an_abstention(false).await;
}

/// The scenario of the two tests above. With `erin_commits_first`, erin's leaf is her own
/// commit's; without, the one she was added with, from her key package. Epochs from the
/// group of five at `base`: erin commits alone for `base`, the four others finalise
/// alice's; `base + 1` splits 2-2, and only erin's abstention lets it be final.
async fn stalled_split_ended_by_an_abstention(erin_commits_first: bool) {
    let net = net();
    let (alice, at) = client_on(&net, config("alice")).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let (carol, ct) = client_on(&net, config("carol")).await;
    let (dave, dt) = client_on(&net, config("dave")).await;
    let mut short = config("erin");
    short.fork_horizon = Duration::from_secs(2);
    // Past the horizon for every epoch, the first open one too.
    short.open_epoch_horizon = short.fork_horizon;
    let (erin, et) = client_on(&net, short).await;
    let five = [&alice, &bob, &carol, &dave, &erin];
    let g = group(&five).await;
    if erin_commits_first {
        erin.update(&g).await.unwrap();
    }
    let base = if erin_commits_first { 5 } else { 4 };
    converge(&five, &g, base).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    net.set_store_miss(1.0);
    et.set_online(false);
    erin.update(&g).await.unwrap();
    until("erin on her own commit", async || {
        erin.status(&g).await.unwrap().epoch == base + 1
    })
    .await;
    alice.update(&g).await.unwrap();
    converge(&[&alice, &bob, &carol, &dave], &g, base + 1).await;
    bt.set_online(false);
    dt.set_online(false);
    bob.update(&g).await.unwrap();
    alice.update(&g).await.unwrap();
    converge(&[&alice, &carol], &g, base + 2).await;
    at.set_online(false);
    ct.set_online(false);
    bt.set_online(true);
    dt.set_online(true);
    converge(&[&bob, &dave], &g, base + 2).await;
    at.set_online(true);
    ct.set_online(true);
    converge(&[&alice, &bob, &carol, &dave], &g, base + 3).await;
    let four = [&alice, &bob, &carol, &dave];
    let stalled = each(&four, |s| s.epochs_final).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        each(&four, |s| s.epochs_final).await,
        stalled,
        "the split epoch final without erin"
    );
    // Erin is back: past her horizon she cannot follow, says so, and abstains.
    et.set_online(true);
    until("erin reports the group lost", async || {
        erin.status(&g).await.is_ok_and(|s| s.lost_at == Some(base))
    })
    .await;
    until("the split epoch final at the four", async || {
        let now = each(&four, |s| s.epochs_final).await;
        now.iter().zip(&stalled).all(|(n, s)| n > s)
    })
    .await;
    // Bound before she abstained: never a state with that leaf again.
    assert_eq!(size(&erin, "pqmls_abstained_leaves").await, 1);
    converge_anywhere("erin back in the group", &five, &g).await;
    assert_eq!(each(&five, |s| s.equivocations_seen).await, [0; 5]);
}

/// Found in a simulated run with a store that misses messages (seed 78): an inviter whose
/// add commit lost withdraws its Welcome once that epoch is final, and the withdrawal was
/// sent once; lost, it left the invitee alone on the dead branch for good, without a word.
/// Here alice adds erin on a branch only the two of them see; bob, carol and dave
/// finalise bob's commit for that epoch; alice moves, and withdraws her Welcome while erin
/// is away and the stores miss everything. Erin, back, gets the withdrawal published
/// again, leaves the dead branch, and is in the group with the others.
#[tokio::test(start_paused = true)]
async fn a_withdrawal_is_published_again() {
    let net = net();
    let ([(alice, at), (bob, bt), (carol, ct), (dave, dt), (erin, et)], g) =
        four_and_erin(&net).await;
    net.set_store_miss(1.0);
    for t in [&bt, &ct, &dt] {
        t.set_online(false);
    }
    alice.invite(&g, &erin.id()).await.unwrap();
    until("erin joined alice's branch", async || {
        erin.groups().await.unwrap().contains(&g)
    })
    .await;
    et.set_online(false);
    at.set_online(false);
    for t in [&bt, &ct, &dt] {
        t.set_online(true);
    }
    bob.update(&g).await.unwrap();
    converge(&[&bob, &carol, &dave], &g, 4).await;
    // Alice is back: she moves to bob's final commit and withdraws her Welcome, which
    // nobody stores and erin, away, does not get.
    at.set_online(true);
    until("alice on bob's commit", async || {
        alice.status(&g).await.unwrap().epoch_authenticator
            == bob.status(&g).await.unwrap().epoch_authenticator
            || alice.status(&g).await.unwrap().epoch > 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    et.set_online(true);
    converge_anywhere(
        "erin in the group with the others",
        &[&alice, &bob, &carol, &dave, &erin],
        &g,
    )
    .await;
    assert!(names(&bob, &g).await.contains(&"erin".to_string()));
}

/// Partition seed 185, reduced: alice commits for epoch 3 where only erin sees it and
/// adds erin on top of it (epoch 4 of her branch); bob, carol and dave make bob's commit
/// for epoch 3 final. Alice, back, moves to it. Her add went through her own commit for
/// 3, so nobody can ever merge it: its Welcome is withdrawn at once, while epoch 4 of the
/// live chain is still open (carol and dave are away: no quorum of its four members), and
/// erin leaves the dead branch for the live one (alice's new Welcome). Before, the
/// withdrawal waited for epoch 4 to be final; in the simulation that wait was for good,
/// as the invitee's own vote was the one missing there. Fails without
/// `joins::void_lost_to`'s later adds: erin stays on alice's dead branch.
#[tokio::test(start_paused = true)]
async fn an_add_through_a_commit_that_lost_is_withdrawn_before_its_epoch_is_final() {
    let net = net();
    let ([(alice, at), (bob, bt), (carol, ct), (dave, dt), (erin, et)], g) =
        four_and_erin(&net).await;
    // Alice's branch: her update for epoch 3, erin's add for epoch 4; erin joins it.
    for t in [&bt, &ct, &dt] {
        t.set_online(false);
    }
    alice.update(&g).await.unwrap();
    until("alice on her own commit", async || {
        alice.status(&g).await.unwrap().epoch == 4
    })
    .await;
    alice.invite(&g, &erin.id()).await.unwrap();
    until("erin joined alice's branch", async || {
        erin.groups().await.unwrap().contains(&g)
    })
    .await;
    let dead = erin.status(&g).await.unwrap().epoch_authenticator;
    at.set_online(false);
    et.set_online(false);
    // Bob, carol and dave: 3 of epoch 3's 4 members, a quorum for bob's update.
    for t in [&bt, &ct, &dt] {
        t.set_online(true);
    }
    let final_before = bob.stats().await.epochs_final;
    bob.update(&g).await.unwrap();
    converge(&[&bob, &carol, &dave], &g, 4).await;
    until("epoch 3 final at bob", async || {
        bob.stats().await.epochs_final > final_before
    })
    .await;
    // Carol and dave leave; alice and erin are back. Epoch 4 of the live chain can have
    // no quorum now (alice and bob are 2 of its 4 members).
    ct.set_online(false);
    dt.set_online(false);
    let bob_final = bob.stats().await.epochs_final;
    at.set_online(true);
    et.set_online(true);
    until("erin off alice's dead branch", async || {
        erin.status(&g)
            .await
            .map_or(true, |s| s.epoch_authenticator != dead)
    })
    .await;
    assert_eq!(
        bob.stats().await.epochs_final,
        bob_final,
        "live epoch 4 became final: the test no longer shows the early withdrawal"
    );
    converge_anywhere("erin on the live chain", &[&alice, &bob, &erin], &g).await;
    assert!(names(&bob, &g).await.contains(&"erin".to_string()));
    ct.set_online(true);
    dt.set_online(true);
    converge_anywhere(
        "everyone on one chain",
        &[&alice, &bob, &carol, &dave, &erin],
        &g,
    )
    .await;
}

/// Found in a simulated partition (seed 71): the member that lost the group can be the
/// author of the commit that ended the lost epoch. It moved away from its own commit to a
/// better one that the majority never saw, its snapshot expired, and its own commit
/// became final. Its leaf after that epoch is the one its commit made, not the one it
/// abstains with, so its abstention counted for nothing and the split after it stayed
/// open for good. Here alice and erin each commit for `base` where only the other and a
/// relay see it; the relay gives the worse of the two to bob, carol and dave, who
/// finalise it; both authors are lost (the better one never had the worse commit, the
/// worse one moved away from it). `base + 1` splits 2-1 among the three, and only with
/// both abstentions is it final.
#[tokio::test(start_paused = true)]
async fn the_author_of_the_final_commit_can_abstain() {
    let net = net();
    let mut short = config("alice");
    short.fork_horizon = Duration::from_secs(4);
    // Past the horizon for every epoch, the first open one too.
    short.open_epoch_horizon = short.fork_horizon;
    let (alice, at) = client_on(&net, short.clone()).await;
    let (bob, bt) = client_on(&net, config("bob")).await;
    let (carol, ct) = client_on(&net, config("carol")).await;
    let (dave, dt) = client_on(&net, config("dave")).await;
    short.name = "erin".into();
    let (erin, et) = client_on(&net, short).await;
    let (relay, mut relay_in) = net.attach();
    let five = [&alice, &bob, &carol, &dave, &erin];
    let g = group(&five).await;
    let gt = group_topic(&g);
    relay.subscribe(&gt).await.unwrap();
    let base = 4;
    converge(&five, &g, base).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    net.set_store_miss(1.0);
    for t in [&at, &bt, &ct, &dt] {
        t.set_online(false);
    }
    erin.update(&g).await.unwrap();
    let from_erin = capture(&mut relay_in, &gt, HANDSHAKE).await;
    converge(&[&erin], &g, base + 1).await;
    let erin_auth = erin.status(&g).await.unwrap().epoch_authenticator;
    et.set_online(false);
    at.set_online(true);
    alice.update(&g).await.unwrap();
    let from_alice = loop {
        let c = capture(&mut relay_in, &gt, HANDSHAKE).await;
        if c != from_erin {
            break c;
        }
    };
    converge(&[&alice], &g, base + 1).await;
    let alice_auth = alice.status(&g).await.unwrap().epoch_authenticator;
    // The relay passes alice's commit to erin alone (well within their horizon): erin
    // moves to it if it is the better one; otherwise erin's is, and alice moves to it.
    // Either way the author of the worse commit moved away from it, and the author of
    // the better one never saw the worse.
    at.set_online(false);
    et.set_online(true);
    relay.publish(&gt, from_alice.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let worse = if erin.status(&g).await.unwrap().epoch_authenticator != erin_auth {
        from_erin
    } else {
        et.set_online(false);
        at.set_online(true);
        relay.publish(&gt, from_erin.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_ne!(
            alice.status(&g).await.unwrap().epoch_authenticator,
            alice_auth,
            "neither moved to the other's commit"
        );
        from_alice
    };
    // The relay gives only the worse commit to the three others, who finalise it.
    at.set_online(false);
    et.set_online(false);
    for t in [&bt, &ct, &dt] {
        t.set_online(true);
    }
    relay.publish(&gt, worse).await.unwrap();
    converge(&[&bob, &carol, &dave], &g, base + 1).await;
    // `base + 1` splits 2-1 among them: bob and dave finalise nothing without carol.
    ct.set_online(false);
    bob.update(&g).await.unwrap();
    converge(&[&bob, &dave], &g, base + 2).await;
    bt.set_online(false);
    dt.set_online(false);
    ct.set_online(true);
    carol.update(&g).await.unwrap();
    converge(&[&carol], &g, base + 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for t in [&bt, &dt] {
        t.set_online(true);
    }
    // Carol moves to the better of the two and commits her update again.
    converge_anywhere("one branch at the three", &[&bob, &carol, &dave], &g).await;
    let three = [&bob, &carol, &dave];
    let stalled = each(&three, |s| s.epochs_final).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        each(&three, |s| s.epochs_final).await,
        stalled,
        "the split epoch final without alice and erin"
    );
    // Both authors are back: past their horizon they cannot follow, and abstain.
    at.set_online(true);
    et.set_online(true);
    until("alice and erin report the group lost", async || {
        alice
            .status(&g)
            .await
            .is_ok_and(|s| s.lost_at == Some(base))
            && erin.status(&g).await.is_ok_and(|s| s.lost_at == Some(base))
    })
    .await;
    until("the split epoch final at the three", async || {
        let now = each(&three, |s| s.epochs_final).await;
        now.iter().zip(&stalled).all(|(n, s)| n > s)
    })
    .await;
    converge_anywhere("alice and erin back in the group", &five, &g).await;
    assert_eq!(each(&five, |s| s.equivocations_seen).await, [0; 5]);
}

/// Whether c reads b's message of an epoch c left before the message reached it, when c
/// keeps past epochs' message secrets at most `max_age` after entering them. b's message
/// reaches nobody by gossip; a self-update moves everyone on; 5 s pass; then c fetches it
/// from the store.
async fn late_message_read(max_age: Duration) -> bool {
    let net = net();
    let a = client(&net, config("a")).await;
    let b = client(&net, config("b")).await;
    let mut cc = config("c");
    cc.sync_interval = None;
    cc.sync_backoff = Duration::from_secs(3600);
    cc.past_epoch_secrets_max_age = max_age;
    let c = client(&net, cc).await;
    let g = group(&[&a, &b, &c]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    net.set_loss(1.0);
    b.send(&g, b"from b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    net.set_loss(0.0);
    a.update(&g).await.unwrap();
    converge(&[&a, &b, &c], &g, 3).await;
    // The snapshot of the epoch left goes at finality; what remains is OpenMLS's store.
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.sync().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.history(&g, 10)
        .await
        .unwrap()
        .iter()
        .any(|m| m.body == b"from b")
}

/// Forward secrecy in time for late messages: a past epoch's message secrets are deleted
/// `past_epoch_secrets_max_age` after the member entered it, so a late message of that
/// epoch is no longer readable; with the default age (10 minutes) it is.
#[tokio::test(start_paused = true)]
async fn past_epoch_secrets_are_deleted_for_age() {
    assert!(
        late_message_read(Duration::from_secs(600)).await,
        "a late message within the age must be read"
    );
    assert!(
        !late_message_read(Duration::from_secs(2)).await,
        "a late message of an epoch entered longer ago than the age was read"
    );
}
