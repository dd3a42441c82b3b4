//! Crash safety on the simulated network with file data directories: a member is stopped
//! dead at each fail point, reopened from its directory, and nothing is lost, nothing is
//! duplicated, and the group converges. Also: a member that was offline catches up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pqmls::sim::{SimConfig, SimNetwork, SimTransport};
use pqmls::{Client, Config, Error, Event, Events, FailPoint, GroupId};

const ABC: [&str; 3] = ["alice", "bob", "carol"];
const ABCD: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// A member: its name, data directory, transport and client.
struct Member {
    name: String,
    dir: PathBuf,
    transport: Arc<SimTransport>,
    client: Client,
}

fn config(name: &str, dir: &Path, fail_point: Option<FailPoint>) -> Config {
    let mut c = Config::new(name)
        .with_data_dir(dir)
        .with_database_key(pqmls::DatabaseKey::from_bytes([3; 32]));
    c.self_update_interval = None;
    c.fail_point = fail_point;
    c.invitations = pqmls::InvitePolicy::Everyone;
    c
}

async fn open(net: &SimNetwork, name: &str, dir: &Path, fail: Option<FailPoint>) -> Member {
    let (transport, inbox) = net.attach();
    let client = Client::open(config(name, dir, fail), transport.clone(), inbox)
        .await
        .unwrap();
    Member {
        name: name.to_owned(),
        dir: dir.to_owned(),
        transport,
        client,
    }
}

/// Shuts a member down cleanly and reopens it from its directory on a new attachment.
async fn restart(net: &SimNetwork, m: Member, fail: Option<FailPoint>) -> Member {
    m.client.shutdown().await;
    m.transport.set_online(false);
    open(net, &m.name, &m.dir, fail).await
}

/// Reopens a member whose client died at a fail point: the dead client is dropped without
/// shutdown, its attachment goes away as a crashed process's would.
async fn reopen_after_crash(net: &SimNetwork, m: Member) -> Member {
    m.transport.set_online(false);
    let Member {
        name, dir, client, ..
    } = m;
    drop(client);
    open(net, &name, &dir, None).await
}

/// Waits (virtual time, at most 60 s) until `f` holds.
async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..3000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Lets virtual time run (for late duplicates to show up).
async fn settle_for(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Waits until all agree on epoch, authenticator and members with nothing pending, then
/// checks the epoch and the member list exactly.
async fn converge(members: &[&Member], g: &GroupId, epoch: u64, names: &[&str]) {
    let agreed = async || {
        let mut first: Option<(u64, Vec<u8>, Vec<String>)> = None;
        for m in members {
            let Ok(s) = m.client.status(g).await else {
                return false;
            };
            let ms: Vec<String> = s.members.iter().map(|m| m.name.clone()).collect();
            if s.pending_commit || s.epoch != epoch || ms != names {
                return false;
            }
            let v = (s.epoch, s.epoch_authenticator, ms);
            match &first {
                None => first = Some(v),
                Some(f) if *f != v => return false,
                Some(_) => {}
            }
        }
        true
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !agreed().await {
        if tokio::time::Instant::now() > deadline {
            let mut views = Vec::new();
            for m in members {
                let s = m.client.status(g).await;
                views.push(format!(
                    "{}: {:?}",
                    m.name,
                    s.map(|s| (s.epoch, s.members, s.pending_commit))
                ));
            }
            panic!("no convergence at epoch {epoch} with {names:?}: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// alice, bob and carol (and more names, not invited) with a group of the first three.
async fn group3(net: &SimNetwork, root: &Path, extra: &[&str]) -> (Vec<Member>, GroupId) {
    let mut ms = Vec::new();
    for name in ["alice", "bob", "carol"].iter().chain(extra) {
        ms.push(open(net, name, &root.join(name), None).await);
    }
    let g = ms[0].client.create_group().await.unwrap();
    for i in 1..3 {
        let id = ms[i].client.id();
        ms[0].client.invite(&g, &id).await.unwrap();
        until("join", async || {
            ms[i].client.groups().await.unwrap().contains(&g)
        })
        .await;
        let names = ["alice", "bob", "carol"];
        converge(
            &ms.iter().take(i + 1).collect::<Vec<_>>(),
            &g,
            i as u64,
            &names[..=i],
        )
        .await;
    }
    (ms, g)
}

/// How many times `body` is in a member's history.
async fn in_history(m: &Member, g: &GroupId, body: &[u8]) -> usize {
    m.client
        .history(g, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|h| h.body == body)
        .count()
}

/// Asserts no body appears twice in a member's history; returns the sorted bodies.
async fn history_bodies(m: &Member, g: &GroupId) -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = m
        .client
        .history(g, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.body)
        .collect();
    bodies.sort();
    let n = bodies.len();
    let mut unique = bodies.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        n,
        "duplicates in {}'s history: {bodies:?}",
        m.name
    );
    bodies
}

/// Message events with this body read so far from a stream (drains what is waiting).
fn events_with(events: &mut Events, body: &[u8]) -> usize {
    let mut n = 0;
    while let Some(e) = events.try_recv() {
        if let Event::Message(m) = e
            && m.body == body
        {
            n += 1;
        }
    }
    n
}

/// The client stopped dead: every call says so.
async fn assert_dead(m: &Member, g: &GroupId) {
    until(
        &format!("{} stopped at its fail point", m.name),
        async || matches!(m.client.status(g).await, Err(Error::Shutdown)),
    )
    .await;
    assert!(matches!(m.client.groups().await, Err(Error::Shutdown)));
    assert!(matches!(
        m.client.send(g, b"from the dead").await,
        Err(Error::Shutdown)
    ));
    assert!(matches!(m.client.update(g).await, Err(Error::Shutdown)));
}

/// After a crash of bob at `point` triggered by bob sending `body`: alice and carol got it
/// exactly once (history and events), bob has it once, and the group still works.
async fn check_sent_once(
    ms: &[Member],
    g: &GroupId,
    body: &[u8],
    ev: &mut [Events; 2],
    epoch: u64,
) {
    for m in [&ms[0], &ms[2]] {
        until(&format!("{} got the message", m.name), async || {
            in_history(m, g, body).await >= 1
        })
        .await;
    }
    settle_for(3000).await;
    for m in ms {
        assert_eq!(in_history(m, g, body).await, 1, "{} history", m.name);
        history_bodies(m, g).await;
    }
    assert_eq!(events_with(&mut ev[0], body), 1, "events at alice");
    assert_eq!(events_with(&mut ev[1], body), 1, "events at carol");
    converge(&ms.iter().collect::<Vec<_>>(), g, epoch, &ABC).await;
    group_still_works(ms, g).await;
}

/// Bob sends one more message; alice and carol get it once.
async fn group_still_works(ms: &[Member], g: &GroupId) {
    let body = b"after the restart";
    ms[1].client.send(g, body).await.unwrap();
    for m in [&ms[0], &ms[2]] {
        until(&format!("{} got the last message", m.name), async || {
            in_history(m, g, body).await == 1
        })
        .await;
    }
}

fn net() -> SimNetwork {
    SimNetwork::new(SimConfig::default())
}

#[tokio::test(start_paused = true)]
async fn crash_in_send_before_publish() {
    let net = net();
    let root = tempfile::tempdir().unwrap();
    let (mut ms, g) = group3(&net, root.path(), &[]).await;
    let bob = ms.remove(1);
    let bob = restart(&net, bob, Some(FailPoint::SendBeforePublish)).await;
    ms.insert(1, bob);
    let mut ev = [ms[0].client.events(), ms[2].client.events()];

    let body = b"sent as the power went out";
    assert!(matches!(
        ms[1].client.send(&g, body).await,
        Err(Error::Shutdown)
    ));
    assert_dead(&ms[1], &g).await;
    settle_for(1000).await;
    let bob = ms.remove(1);
    ms.insert(1, reopen_after_crash(&net, bob).await);
    // The message was in the history and the outbox: it goes out after the restart.
    assert_eq!(in_history(&ms[1], &g, body).await, 1, "bob's history");
    check_sent_once(&ms, &g, body, &mut ev, 2).await;
}

#[tokio::test(start_paused = true)]
async fn crash_in_send_after_publish() {
    let net = net();
    let root = tempfile::tempdir().unwrap();
    let (mut ms, g) = group3(&net, root.path(), &[]).await;
    let bob = ms.remove(1);
    let bob = restart(&net, bob, Some(FailPoint::SendAfterPublish)).await;
    ms.insert(1, bob);
    let mut ev = [ms[0].client.events(), ms[2].client.events()];

    let body = b"published, outbox not cleared";
    assert!(matches!(
        ms[1].client.send(&g, body).await,
        Err(Error::Shutdown)
    ));
    assert_dead(&ms[1], &g).await;
    settle_for(1000).await;
    let bob = ms.remove(1);
    let bob = reopen_after_crash(&net, bob).await;
    ms.insert(1, bob);
    check_sent_once(&ms, &g, body, &mut ev, 2).await;
    assert_eq!(ms[1].client.outbox_len().await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn crash_in_commit_before_publish() {
    let net = net();
    let root = tempfile::tempdir().unwrap();
    let (mut ms, g) = group3(&net, root.path(), &[]).await;
    let bob = ms.remove(1);
    let bob = restart(&net, bob, Some(FailPoint::CommitBeforePublish)).await;
    ms.insert(1, bob);

    assert!(matches!(
        ms[1].client.update(&g).await,
        Err(Error::Shutdown)
    ));
    assert_dead(&ms[1], &g).await;
    settle_for(1000).await;
    for m in [&ms[0], &ms[2]] {
        assert_eq!(m.client.status(&g).await.unwrap().epoch, 2);
    }
    let bob = ms.remove(1);
    ms.insert(1, reopen_after_crash(&net, bob).await);
    // The commit was in the outbox: published after the restart and merged by everyone.
    converge(&ms.iter().collect::<Vec<_>>(), &g, 3, &ABC).await;
    assert_eq!(ms[1].client.outbox_len().await.unwrap(), 0);
    group_still_works(&ms, &g).await;
}

#[tokio::test(start_paused = true)]
async fn crash_in_merge_before_commit() {
    let net = net();
    let root = tempfile::tempdir().unwrap();
    let (mut ms, g) = group3(&net, root.path(), &[]).await;
    let bob = ms.remove(1);
    let bob = restart(&net, bob, Some(FailPoint::MergeBeforeCommit)).await;
    ms.insert(1, bob);

    // Alice's update reaches bob, who dies while merging it.
    ms[0].client.update(&g).await.unwrap();
    assert_dead(&ms[1], &g).await;
    converge(&[&ms[0], &ms[2]], &g, 3, &ABC).await;
    let bob = ms.remove(1);
    ms.insert(1, reopen_after_crash(&net, bob).await);
    converge(&ms.iter().collect::<Vec<_>>(), &g, 3, &ABC).await;
    // And messages of the new epoch reach bob.
    let body = b"epoch three";
    ms[0].client.send(&g, body).await.unwrap();
    until("bob got the epoch-3 message", async || {
        in_history(&ms[1], &g, body).await == 1
    })
    .await;
    group_still_works(&ms, &g).await;
    for m in &ms {
        history_bodies(m, &g).await;
    }
}

#[tokio::test(start_paused = true)]
async fn crash_in_receive_before_commit() {
    let net = net();
    let root = tempfile::tempdir().unwrap();
    let (mut ms, g) = group3(&net, root.path(), &[]).await;
    let bob = ms.remove(1);
    let bob = restart(&net, bob, Some(FailPoint::ReceiveBeforeCommit)).await;
    ms.insert(1, bob);

    let body = b"arrived during the crash";
    ms[0].client.send(&g, body).await.unwrap();
    assert_dead(&ms[1], &g).await;
    until("carol got it", async || {
        in_history(&ms[2], &g, body).await == 1
    })
    .await;
    let bob = ms.remove(1);
    let bob = reopen_after_crash(&net, bob).await;
    let mut bob_ev = bob.client.events();
    ms.insert(1, bob);
    // Bob finds it again in the store's history.
    until("bob got it after the restart", async || {
        in_history(&ms[1], &g, body).await >= 1
    })
    .await;
    settle_for(3000).await;
    assert_eq!(in_history(&ms[1], &g, body).await, 1);
    assert_eq!(events_with(&mut bob_ev, body), 1);
    for m in &ms {
        history_bodies(m, &g).await;
    }
    converge(&ms.iter().collect::<Vec<_>>(), &g, 2, &ABC).await;
    group_still_works(&ms, &g).await;
}

/// Carol misses two messages, an update, an invitation and messages of the new member,
/// then comes back (`reopen`: restarted from her directory; else: back online + sync).
async fn offline_catch_up(reopen: bool) {
    let net = net();
    let root = tempfile::tempdir().unwrap();
    let (mut ms, g) = group3(&net, root.path(), &["dave"]).await;
    let carol = ms.remove(2);
    let carol = if reopen {
        carol.client.clone().shutdown().await;
        carol.transport.set_online(false);
        Err(carol)
    } else {
        carol.transport.set_online(false);
        Ok(carol)
    };
    // ms: alice, bob, dave.
    ms[0].client.send(&g, b"a1").await.unwrap();
    ms[1].client.send(&g, b"b1").await.unwrap();
    ms[1].client.update(&g).await.unwrap();
    until("update merged", async || {
        ms[0].client.status(&g).await.unwrap().epoch == 3
    })
    .await;
    let dave = ms[2].client.id();
    ms[0].client.invite(&g, &dave).await.unwrap();
    until("dave joined", async || {
        ms[2].client.groups().await.unwrap().contains(&g)
    })
    .await;
    converge(&[&ms[0], &ms[1], &ms[2]], &g, 4, &ABCD).await;
    ms[2].client.send(&g, b"d1").await.unwrap();
    ms[0].client.send(&g, b"a2").await.unwrap();
    until("alice and bob have everything", async || {
        history_bodies(&ms[0], &g).await.len() == 4 && history_bodies(&ms[1], &g).await.len() == 4
    })
    .await;

    let carol = match carol {
        Ok(c) => {
            c.transport.set_online(true);
            c.client.sync().await.unwrap();
            c
        }
        Err(c) => {
            // The old handle goes first: the database admits one opener at a time, as
            // after a real restart (the process that held it is gone).
            let Member {
                name, dir, client, ..
            } = c;
            drop(client);
            open(&net, &name, &dir, None).await
        }
    };
    ms.insert(2, carol);
    // ms: alice, bob, carol, dave.
    converge(&ms.iter().collect::<Vec<_>>(), &g, 4, &ABCD).await;
    until("carol has every message", async || {
        history_bodies(&ms[2], &g).await.len() == 4
    })
    .await;
    settle_for(3000).await;
    let expected: Vec<Vec<u8>> = [b"a1", b"a2", b"b1", b"d1"]
        .iter()
        .map(|b| b.to_vec())
        .collect();
    assert_eq!(history_bodies(&ms[2], &g).await, expected);
    assert_eq!(history_bodies(&ms[0], &g).await, expected);
    assert_eq!(
        history_bodies(&ms[3], &g).await,
        [b"a2".to_vec(), b"d1".to_vec()]
    );
    converge(&ms.iter().collect::<Vec<_>>(), &g, 4, &ABCD).await;
    // Carol talks again.
    ms[2].client.send(&g, b"c1").await.unwrap();
    for i in [0, 1, 3] {
        until("carol's message", async || {
            in_history(&ms[i], &g, b"c1").await == 1
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn offline_member_catches_up_after_going_back_online() {
    offline_catch_up(false).await;
}

#[tokio::test(start_paused = true)]
async fn offline_member_catches_up_after_a_restart() {
    offline_catch_up(true).await;
}
