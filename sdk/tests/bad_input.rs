//! Bad input on the simulated network: wrong calls through the public API get the right
//! errors, and garbage, truncated, bit-flipped and forged payloads from the network are
//! counted and dropped while the group keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::*;
use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Ciphersuite, Client, Error, GroupId, Transport, UserId};

#[tokio::test(start_paused = true)]
async fn group_ids_parse_only_from_hex() {
    assert!(matches!("zz".parse::<GroupId>(), Err(Error::Config(_))));
    assert!(matches!("".parse::<GroupId>(), Err(Error::Config(_))));
    assert!(matches!("abc".parse::<GroupId>(), Err(Error::Config(_))));
    assert!(matches!("0g".parse::<GroupId>(), Err(Error::Config(_))));
    assert!(matches!(
        "00".repeat(65).parse::<GroupId>(),
        Err(Error::Config(_))
    ));
    let g: GroupId = "00ff10Ab".parse().unwrap();
    assert_eq!(g.as_bytes(), [0x00, 0xff, 0x10, 0xab]);
    assert_eq!(g.to_string(), "00ff10ab");
    assert_eq!(g.to_string().parse::<GroupId>().unwrap(), g);
}

#[test]
fn group_ids_reject_signs() {
    for s in ["+1", "+1+2", "0+1f"] {
        let r = s.parse::<GroupId>();
        assert!(matches!(r, Err(Error::Config(_))), "{s:?} parsed as {r:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_names_are_refused() {
    let net = SimNetwork::new(SimConfig::default());
    let long = "a".repeat(65);
    for name in ["", long.as_str(), "a/b", "a b", " ", "alice\n", "x\u{0}"] {
        let (t, inbox) = net.attach();
        let r = Client::open(config(name), t, inbox).await;
        assert!(
            matches!(r, Err(Error::Config(_))),
            "name {name:?}: {:?}",
            r.map(|c| c.name().to_owned())
        );
    }
    // 64 bytes is the longest name.
    let max = "b".repeat(64);
    let c = client(&net, config(&max)).await;
    assert_eq!(c.name(), max);
    // Invitations take ids; ids parse from 64 hex digits only.
    for id in ["", "bob", &"0".repeat(63), &"x".repeat(64)] {
        assert!(
            matches!(id.parse::<UserId>(), Err(Error::Config(_))),
            "{id:?}"
        );
    }
    // Bad limits.
    let mut z = config("zed");
    z.tick = Duration::ZERO;
    let (t, inbox) = net.attach();
    assert!(matches!(
        Client::open(z, t, inbox).await,
        Err(Error::Config(_))
    ));
    // More past epochs' secrets than snapshots: refused.
    let mut p = config("pat");
    p.past_epoch_secrets = p.rollback_window + 1;
    let (t, inbox) = net.attach();
    assert!(matches!(
        Client::open(p, t, inbox).await,
        Err(Error::Config(_))
    ));
    let mut p = config("pat");
    p.past_epoch_secrets = 0;
    let (t, inbox) = net.attach();
    assert!(Client::open(p, t, inbox).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn api_errors() {
    let net = SimNetwork::new(SimConfig::default());
    let mut ac = config("alice");
    ac.max_message_size = 1000;
    let alice = client(&net, ac).await;
    let bob = client(&net, config("bob")).await;
    let carol = client(&net, config("carol")).await;

    // Unknown group, for every call that takes one.
    let nowhere = GroupId::from_bytes(&[7; 16]);
    let unknown = |r: &Error| matches!(r, Error::UnknownGroup(g) if *g == nowhere);
    assert!(unknown(&alice.send(&nowhere, b"x").await.unwrap_err()));
    assert!(unknown(&alice.status(&nowhere).await.unwrap_err()));
    assert!(unknown(&alice.members(&nowhere).await.unwrap_err()));
    assert!(unknown(&alice.history(&nowhere, 10).await.unwrap_err()));
    assert!(unknown(&alice.update(&nowhere).await.unwrap_err()));
    assert!(unknown(&alice.leave(&nowhere).await.unwrap_err()));
    assert!(unknown(
        &alice.remove(&nowhere, &bob.id()).await.unwrap_err()
    ));
    assert!(unknown(
        &alice.invite(&nowhere, &bob.id()).await.unwrap_err()
    ));

    let g = group(&[&alice, &bob]).await;

    // Too large, and exactly the limit.
    let r = alice.send(&g, &[1; 1001]).await;
    assert!(
        matches!(
            r,
            Err(Error::MessageTooLarge {
                len: 1001,
                max: 1000
            })
        ),
        "{r:?}"
    );
    assert_eq!(alice.send(&g, &[1; 1000]).await.unwrap().body.len(), 1000);
    until("bob got the 1000 bytes", async || {
        bob.history(&g, 10).await.unwrap().len() == 1
    })
    .await;
    assert_eq!(bob.history(&g, 10).await.unwrap()[0].body, [1; 1000]);
    // The default limit is 64 KiB.
    let r = bob.send(&g, &vec![0; 64 * 1024 + 1]).await;
    assert!(
        matches!(
            r,
            Err(Error::MessageTooLarge {
                len: 65537,
                max: 65536
            })
        ),
        "{r:?}"
    );

    // Nobody with that id has key packages.
    let nobody = UserId::from_bytes([9; 32]);
    let r = alice.invite(&g, &nobody).await;
    assert!(
        matches!(&r, Err(Error::NoKeyPackage(u)) if *u == nobody),
        "{r:?}"
    );
    // Already in.
    for who in [bob.id(), alice.id()] {
        let r = alice.invite(&g, &who).await;
        assert!(
            matches!(&r, Err(Error::AlreadyMember { group, user }) if *group == g && *user == who),
            "{r:?}"
        );
    }
    // Oneself: `leave` is the way out.
    let r = alice.remove(&g, &alice.id()).await;
    assert!(matches!(&r, Err(Error::RemoveSelf(x)) if *x == g), "{r:?}");
    // Not in.
    for who in [carol.id(), nobody] {
        let r = alice.remove(&g, &who).await;
        assert!(
            matches!(&r, Err(Error::UnknownMember { group, user }) if *group == g && *user == who),
            "{r:?}"
        );
    }
    // None of that changed the group.
    converge(&[&alice, &bob], &g, 1).await;
    assert_eq!(names(&alice, &g).await, ["alice", "bob"]);

    // Carol is not in the group: unknown to her.
    assert!(matches!(
        carol.send(&g, b"x").await,
        Err(Error::UnknownGroup(_))
    ));

    // Removed: NotMember for everything but the history.
    alice.remove(&g, &bob.id()).await.unwrap();
    until("bob removed", async || {
        matches!(bob.status(&g).await, Err(Error::NotMember(_)))
    })
    .await;
    let not_member = |r: &Error| matches!(r, Error::NotMember(x) if *x == g);
    assert!(not_member(&bob.send(&g, b"hello?").await.unwrap_err()));
    assert!(not_member(&bob.status(&g).await.unwrap_err()));
    assert!(not_member(&bob.members(&g).await.unwrap_err()));
    assert!(not_member(&bob.update(&g).await.unwrap_err()));
    assert!(not_member(&bob.leave(&g).await.unwrap_err()));
    assert!(not_member(&bob.remove(&g, &alice.id()).await.unwrap_err()));
    assert!(not_member(&bob.invite(&g, &carol.id()).await.unwrap_err()));
    assert_eq!(bob.history(&g, 10).await.unwrap().len(), 1);
    assert_eq!(bob.groups().await.unwrap(), []);
    converge(&[&alice], &g, 2).await;
    assert_eq!(names(&alice, &g).await, ["alice"]);
    // Alice still works, with carol.
    alice.invite(&g, &carol.id()).await.unwrap();
    converge(&[&alice, &carol], &g, 3).await;
    for c in [alice, bob, carol] {
        c.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn data_dir_of_another_identity() {
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let dora = client(
        &net,
        config("dora")
            .with_data_dir(dir.path())
            .with_database_key(pqmls::DatabaseKey::from_bytes([1; 32])),
    )
    .await;
    let key = dora.public_key().to_vec();
    dora.shutdown().await;

    let (t, inbox) = net.attach();
    let r = Client::open(
        config("eve")
            .with_data_dir(dir.path())
            .with_database_key(pqmls::DatabaseKey::from_bytes([1; 32])),
        t,
        inbox,
    )
    .await;
    match r {
        Err(Error::IdentityMismatch {
            found,
            found_suite,
            wanted,
            wanted_suite,
        }) => {
            assert_eq!((found.as_str(), found_suite), ("dora", 0x004F));
            assert_eq!((wanted.as_str(), wanted_suite), ("eve", 0x004F));
        }
        other => panic!("{:?}", other.map(|c| c.name().to_owned())),
    }
    let other_suite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    let (t, inbox) = net.attach();
    let r = Client::open(
        config("dora")
            .with_data_dir(dir.path())
            .with_database_key(pqmls::DatabaseKey::from_bytes([1; 32]))
            .with_suite(other_suite),
        t,
        inbox,
    )
    .await;
    match r {
        Err(Error::IdentityMismatch {
            found,
            found_suite,
            wanted,
            wanted_suite,
        }) => {
            assert_eq!((found.as_str(), found_suite), ("dora", 0x004F));
            assert_eq!((wanted.as_str(), wanted_suite), ("dora", 0x0001));
        }
        other => panic!("{:?}", other.map(|c| c.name().to_owned())),
    }
    // The directory is still dora's, unharmed.
    let dora = client(
        &net,
        config("dora")
            .with_data_dir(dir.path())
            .with_database_key(pqmls::DatabaseKey::from_bytes([1; 32])),
    )
    .await;
    assert_eq!(dora.public_key(), key);
}

// ----- garbage from the network -----

/// An MLS variable-length integer (RFC 9000 style): (value, bytes used).
fn varint(b: &[u8]) -> (usize, usize) {
    match b[0] >> 6 {
        0 => (usize::from(b[0] & 0x3f), 1),
        1 => ((usize::from(b[0] & 0x3f) << 8) | usize::from(b[1]), 2),
        2 => (
            (usize::from(b[0] & 0x3f) << 24)
                | (usize::from(b[1]) << 16)
                | (usize::from(b[2]) << 8)
                | usize::from(b[3]),
            4,
        ),
        _ => panic!("bad varint"),
    }
}

/// Where the first `new_member` key package reference of a Welcome MLS message sits.
fn welcome_ref_range(mls: &[u8]) -> std::ops::Range<usize> {
    // version (2), wire format (2) = welcome (3), cipher suite (2), secrets<V>.
    assert_eq!(&mls[..4], [0, 1, 0, 3], "not an MLS Welcome");
    let (_, n) = varint(&mls[6..]);
    let at = 6 + n;
    let (len, m) = varint(&mls[at..]);
    at + m..at + m + len
}

#[tokio::test(start_paused = true)]
async fn garbage_from_the_network() {
    let net = SimNetwork::new(SimConfig::default());
    let alice = client(&net, config("alice")).await;
    let bob = client(&net, config("bob")).await;
    let carol = client(&net, config("carol")).await;
    let dave = client(&net, config("dave")).await;
    let erin = client(&net, config("erin")).await;
    let (obs, mut obs_in) = net.attach();

    let g = group(&[&alice, &bob, &carol]).await;
    let gt = group_topic(&g);
    for t in [&gt, &inbox_topic(&dave.id()), &inbox_topic(&erin.id())] {
        obs.subscribe(t).await.unwrap();
    }
    // Real payloads: a commit, a Welcome (for dave), an application message.
    bob.update(&g).await.unwrap();
    let commit = capture(&mut obs_in, &gt, HANDSHAKE).await;
    converge(&[&alice, &bob, &carol], &g, 3).await;
    alice.invite(&g, &dave.id()).await.unwrap();
    let welcome = capture(&mut obs_in, &inbox_topic(&dave.id()), WELCOME).await;
    let members = [&alice, &bob, &carol, &dave];
    converge(&members, &g, 4).await;
    alice.send(&g, b"real").await.unwrap();
    let app = capture(&mut obs_in, &gt, APPLICATION).await;
    until("all got it", async || {
        carol.history(&g, 10).await.unwrap().len() == 1
            && dave.history(&g, 10).await.unwrap().len() == 1
    })
    .await;
    let (_, auth, app_mls) = open_envelope(&app);
    let (_, _, commit_mls) = open_envelope(&commit);
    let (_, _, welcome_mls) = open_envelope(&welcome);

    // 1. Malformed on the group topic: not envelopes, truncated envelopes, envelopes
    //    holding no MLS message, a Welcome on a group topic.
    let t0 = each(&members, |s| s.malformed).await;
    let malformed = vec![
        Vec::new(),
        b"garbage".to_vec(),
        vec![0xff; 100],
        app[..app.len() / 2].to_vec(),
        app[..app.len() - 1].to_vec(),
        commit[..commit.len() - 1].to_vec(),
        envelope(HANDSHAKE, &[0; 32], b"not mls"),
        envelope(APPLICATION, &auth, &[0; 40]),
        envelope(APPLICATION, &auth, &app_mls[..app_mls.len() - 1]),
        envelope(HANDSHAKE, &[0; 32], &commit_mls[..commit_mls.len() / 2]),
        welcome.clone(),
    ];
    publish(&obs, &gt, &malformed).await;
    let want: Vec<u64> = t0.iter().map(|n| n + malformed.len() as u64).collect();
    until("malformed counted", async || {
        each(&members, |s| s.malformed).await == want
    })
    .await;

    // 2. Refused by MLS: application messages at the current epoch with a broken
    //    ciphertext (the sender data decrypts, the content does not).
    let t0 = each(&members, |s| s.rejected).await;
    let broken = vec![
        envelope(
            APPLICATION,
            &auth,
            &flip(app_mls.clone(), app_mls.len() - 1),
        ),
        envelope(
            APPLICATION,
            &auth,
            &flip(app_mls.clone(), app_mls.len() - 20),
        ),
    ];
    publish(&obs, &gt, &broken).await;
    let want: Vec<u64> = t0.iter().map(|n| n + 2).collect();
    until("rejected counted", async || {
        each(&members, |s| s.rejected).await == want
    })
    .await;

    // 3. Commits with flipped bits, for an old epoch: the group does not move.
    publish(
        &obs,
        &gt,
        &[
            envelope(
                HANDSHAKE,
                &[],
                &flip(commit_mls.clone(), commit_mls.len() - 1),
            ),
            envelope(
                HANDSHAKE,
                &[],
                &flip(commit_mls.clone(), commit_mls.len() / 2),
            ),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 4. Broken Welcomes for dave (already in): malformed, or ignored before any
    //    decryption (they name no key package dave holds: the one he joined with was
    //    used up, and a flipped byte may change the reference).
    let dave_in = inbox_topic(&dave.id());
    let s0 = dave.stats().await;
    let (m0, r0, i0) = (s0.malformed, s0.rejected, s0.ignored);
    publish(
        &obs,
        &dave_in,
        &[
            welcome[..welcome.len() - 1].to_vec(),
            envelope(WELCOME, &[], &welcome_mls[..welcome_mls.len() / 2]),
            app.clone(),
            envelope(
                WELCOME,
                &[],
                &flip(welcome_mls.clone(), welcome_mls.len() - 1),
            ),
            envelope(WELCOME, &[], &flip(welcome_mls.clone(), 100)),
        ],
    )
    .await;
    until("dave counted the broken Welcomes", async || {
        let s = dave.stats().await;
        (s.malformed, s.rejected, s.ignored) == (m0 + 3, r0, i0 + 2)
    })
    .await;

    // 4b. Withdrawals (`Wire::Void`) naming nothing of dave's: an outsider cannot compute
    //     the id of the Welcome he joined with (it comes from the join epoch's exporter),
    //     so these are kept aside for a Welcome that may come, and change nothing.
    let i0 = dave.stats().await.ignored;
    publish(
        &obs,
        &dave_in,
        &[
            envelope(VOID, &[7; 32], &[7; 64]),
            envelope(VOID, &[9; 32], &[]),
            envelope(VOID, &[0; 32], &[1; 100]),
        ],
    )
    .await;
    until("dave counted the forged withdrawals", async || {
        dave.stats().await.ignored == i0 + 3
    })
    .await;
    assert!(dave.groups().await.unwrap().contains(&g));

    // 5. Forged Welcomes for erin naming her first one-time key package, copied from
    //    dave's with the reference swapped, then corrupted further.
    let erin_ref = key_package_ref(&obs, &erin.id(), "0").await;
    let range = welcome_ref_range(&welcome_mls);
    assert_eq!(range.len(), erin_ref.len());
    let mut forged = welcome_mls.clone();
    forged[range.clone()].copy_from_slice(&erin_ref);
    let erin_before = erin.stats().await;
    let erin_in = inbox_topic(&erin.id());
    publish(
        &obs,
        &erin_in,
        &[
            envelope(WELCOME, &[], &forged),
            envelope(WELCOME, &[], &flip(forged.clone(), forged.len() - 1)),
            envelope(WELCOME, &[], &flip(forged.clone(), range.end + 10)),
            envelope(WELCOME, &[], &forged[..forged.len() - 3]),
            flip(welcome.clone(), welcome.len() - 1),
        ],
    )
    .await;
    until("erin counted the forged Welcomes", async || {
        let s = erin.stats().await;
        // The last names dave's key package, none of erin's: ignored before decryption.
        (s.malformed, s.rejected, s.ignored)
            == (
                erin_before.malformed + 1,
                erin_before.rejected + 3,
                erin_before.ignored + 1,
            )
    })
    .await;
    assert_eq!(erin.groups().await.unwrap(), []);

    // Let everything settle: nobody moved, nobody forked, and the counts stay exact.
    tokio::time::sleep(Duration::from_secs(3)).await;
    converge(&members, &g, 4).await;
    assert_eq!(total(&members, |s| s.forks_detected).await, 0);
    assert_eq!(total(&members, |s| s.forks_recovered).await, 0);
    assert_eq!(
        each(&[&erin], |s| s.malformed).await,
        [erin_before.malformed + 1]
    );
    assert_eq!(
        each(&[&erin], |s| s.rejected).await,
        [erin_before.rejected + 3]
    );

    // The group still works, and erin's key package was not burnt: the invitation claims
    // the very key package the forgeries named, and she joins.
    bob.send(&g, b"still here").await.unwrap();
    for c in [&alice, &carol, &dave] {
        until("the message after the garbage", async || {
            c.history(&g, 10)
                .await
                .unwrap()
                .iter()
                .any(|m| m.body == b"still here" && m.sender.id == bob.id())
        })
        .await;
    }
    alice.invite(&g, &erin.id()).await.unwrap();
    let real = capture(&mut obs_in, &erin_in, WELCOME).await;
    let (_, _, real_mls) = open_envelope(&real);
    assert_eq!(real_mls[welcome_ref_range(&real_mls)], erin_ref[..]);
    until("erin joined", async || {
        erin.groups().await.unwrap() == std::slice::from_ref(&g)
    })
    .await;
    let all = [&alice, &bob, &carol, &dave, &erin];
    converge(&all, &g, 5).await;
    assert_eq!(
        names(&erin, &g).await,
        ["alice", "bob", "carol", "dave", "erin"]
    );
    erin.send(&g, b"hi, I am in").await.unwrap();
    until("erin's message", async || {
        alice
            .history(&g, 10)
            .await
            .unwrap()
            .iter()
            .any(|m| m.body == b"hi, I am in")
    })
    .await;
}
