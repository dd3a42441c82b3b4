//! Data at rest (issue 12 item 3) on the simulated network with file data directories:
//! after a conversation no message body, identity seed or stored key bytes appear in any
//! file of the data directories; a wrong key, an empty or truncated database, a second
//! opener are clear errors and never a new identity; files 0600, directories 0700;
//! retention (delete a message, a group's history, history retention) and wiping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Client, Config, DatabaseKey, Error, GroupId, InvitePolicy};
use pqmls_provider::{CipherKey, SqliteStorage, StorageError};

use crate::scan;

fn key(b: u8) -> DatabaseKey {
    DatabaseKey::from_bytes([b; 32])
}

fn config(name: &str, dir: &Path, k: DatabaseKey) -> Config {
    let mut c = Config::new(name).with_data_dir(dir).with_database_key(k);
    c.self_update_interval = None;
    c.invitations = InvitePolicy::Everyone;
    c
}

async fn open(net: &SimNetwork, c: Config) -> Result<Client, Error> {
    let (t, inbox) = net.attach();
    Client::open(c, t, inbox).await
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

/// Alice makes a group with Bob; both send `n` messages that the other receives.
async fn conversation(alice: &Client, bob: &Client, n: usize) -> (GroupId, Vec<Vec<u8>>) {
    let g = alice.create_group().await.unwrap();
    alice.invite(&g, &bob.id()).await.unwrap();
    until("bob joins", async || {
        bob.groups().await.unwrap().contains(&g)
    })
    .await;
    let mut bodies = Vec::new();
    for i in 0..n {
        for (c, who) in [(alice, "alice"), (bob, "bob")] {
            let body = format!("{who} says secret #{i}: the eagle lands at dawn, tell no one")
                .into_bytes();
            c.send(&g, &body).await.unwrap();
            bodies.push(body);
        }
    }
    until("both histories complete", async || {
        alice.history(&g, 1000).await.unwrap().len() == 2 * n
            && bob.history(&g, 1000).await.unwrap().len() == 2 * n
    })
    .await;
    (g, bodies)
}

/// Every 32-byte-aligned chunk of every blob stored in the (decrypted) database of `dir`:
/// keys, secrets, states, bodies; whatever the SDK or OpenMLS keeps, known to
/// [`scan::secrets`] or not.
fn blob_chunks(storage: &SqliteStorage) -> Vec<Vec<u8>> {
    let c = storage.connection();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let mut stmt = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let cols = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..cols {
                if let Ok(rusqlite::types::ValueRef::Blob(b)) = row.get_ref(i) {
                    for chunk in b.chunks_exact(32) {
                        if chunk.iter().any(|x| *x != 0) {
                            out.push(chunk.to_vec());
                        }
                    }
                }
            }
        }
    }
    out
}

/// Waits until every client is at the same epoch, at least `epoch`; returns it.
async fn agree(clients: &[&Client], g: &GroupId, epoch: u64) -> u64 {
    let mut at = 0;
    until("the members agree on the epoch", async || {
        let mut epochs = Vec::new();
        for c in clients {
            let s = c.status(g).await.unwrap();
            if s.pending_commit {
                return false;
            }
            epochs.push(s.epoch);
        }
        at = epochs[0];
        epochs.iter().all(|e| *e == at) && at >= epoch
    })
    .await;
    at
}

/// Every member of `senders` sends one message of round `round` with a distinctive body.
async fn round(senders: &[(&Client, &str)], g: &GroupId, round: usize) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for (c, who) in senders {
        let body = format!("{who} says secret #{round}: the eagle lands at dawn, tell no one")
            .into_bytes();
        c.send(g, &body).await.unwrap();
        bodies.push(body);
    }
    bodies
}

/// A session as the demo runs one, on file data directories: a group of three, messages
/// from everyone, two self-updates, a removal, more messages; every client shut down
/// cleanly. Then every file under the data directories (database, WAL, shared memory,
/// lock, anything) is scanned for each message body and for every secret the databases
/// hold (`scan::secrets`: identity seeds, HPKE private keys, key-package private keys,
/// epoch secrets, the ordering's exporter keys; plus every 32-byte chunk of every stored
/// blob). None may appear. Controls, so the scan cannot pass by being blind: every body and
/// every secret is found in the same files once their pages are decrypted with the key,
/// and in a plain (unencrypted) export of a database.
#[tokio::test(start_paused = true)]
async fn no_secret_bytes_in_any_file_after_a_session() {
    let net = SimNetwork::new(SimConfig::default());
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| root.path().join(n))
        .collect();
    let alice = open(&net, config("alice", &dirs[0], key(1))).await.unwrap();
    let bob = open(&net, config("bob", &dirs[1], key(2))).await.unwrap();
    let carol = open(&net, config("carol", &dirs[2], key(3))).await.unwrap();

    let g = alice.create_group().await.unwrap();
    for c in [&bob, &carol] {
        alice.invite(&g, &c.id()).await.unwrap();
        until("the invitee joins", async || {
            c.groups().await.unwrap().contains(&g)
        })
        .await;
    }
    let all = [&alice, &bob, &carol];
    let e = agree(&all, &g, 2).await;
    let three = [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")];
    let mut bodies = round(&three, &g, 0).await;
    bob.update(&g).await.unwrap();
    let e = agree(&all, &g, e + 1).await;
    carol.update(&g).await.unwrap();
    let e = agree(&all, &g, e + 1).await;
    bodies.extend(round(&three, &g, 1).await);
    until("round 1 everywhere", async || {
        for c in all {
            if c.history(&g, 1000).await.unwrap().len() != 6 {
                return false;
            }
        }
        true
    })
    .await;
    alice.remove(&g, &carol.id()).await.unwrap();
    agree(&[&alice, &bob], &g, e + 1).await;
    bodies.extend(round(&[(&alice, "alice"), (&bob, "bob")], &g, 2).await);
    until("every message in alice's and bob's histories", async || {
        alice.history(&g, 1000).await.unwrap().len() == bodies.len()
            && bob.history(&g, 1000).await.unwrap().len() == bodies.len()
    })
    .await;
    for c in [alice, bob, carol] {
        c.shutdown().await;
    }

    // The files as the session left them.
    let stored = scan::files(root.path());
    assert!(stored.len() >= 6, "{} files", stored.len());
    // Their pages decrypted, and the secrets read through the key.
    let mut decrypted = Vec::new();
    let mut secrets = Vec::new();
    let mut chunks = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let k = [u8::try_from(i + 1).unwrap(); 32];
        decrypted.push(scan::decrypt_data_dir(dir, &k));
        let s: SqliteStorage = SqliteStorage::open_file_encrypted(
            dir.join(pqmls::DATABASE_FILE),
            &CipherKey::from_bytes(k),
        )
        .unwrap();
        secrets.push(scan::secrets(&s));
        chunks.push(blob_chunks(&s));
    }
    for (dir, s) in dirs.iter().zip(&secrets) {
        let kinds = scan::kinds(s);
        eprintln!("{}: {kinds:?}", dir.display());
        for kind in [
            "identity seed",
            "HPKE tree private key (own leaf, path)",
            "key-package init private key",
            "key-package leaf private key",
            "init secret",
            "exporter secret",
            "ordering exporter key",
        ] {
            assert!(kinds.contains_key(kind), "no {kind} in {}", dir.display());
        }
    }
    assert!(chunks.iter().all(|c| c.len() > 50));

    // Control 1: the same files, decrypted, hold every body and every secret.
    let body_refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    assert_eq!(
        scan::found(&decrypted[0], &body_refs).len(),
        bodies.len(),
        "alice's decrypted pages lack a body"
    );
    for ((dir, s), plain) in dirs.iter().zip(&secrets).zip(&decrypted) {
        let refs: Vec<&[u8]> = s.iter().map(|s| s.bytes.as_slice()).collect();
        let hits = scan::found(plain, &refs);
        let missing: Vec<_> = (0..s.len()).filter(|i| !hits.contains(i)).collect();
        assert!(
            missing.is_empty(),
            "{}: not in the decrypted pages: {:?}",
            dir.display(),
            missing.iter().map(|i| &s[*i]).collect::<Vec<_>>()
        );
    }

    // Control 2: a plain export of alice's database (as with encryption off) shows the
    // bodies and her secrets to the same scan.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain_db = plain_dir.path().join("plain.sqlite3");
    {
        let s: SqliteStorage = SqliteStorage::open_file_encrypted(
            dirs[0].join(pqmls::DATABASE_FILE),
            &CipherKey::from_bytes([1; 32]),
        )
        .unwrap();
        s.connection()
            .execute(
                "ATTACH DATABASE ?1 AS plaintext KEY ''",
                [plain_db.to_str().unwrap()],
            )
            .unwrap();
        s.connection()
            .query_row("SELECT sqlcipher_export('plaintext')", [], |_| Ok(()))
            .unwrap();
        s.connection()
            .execute_batch("DETACH DATABASE plaintext")
            .unwrap();
    }
    let plain: Vec<u8> = scan::files(plain_dir.path())
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    assert!(plain.starts_with(b"SQLite format 3\0"));
    assert_eq!(scan::found(&plain, &body_refs).len(), bodies.len());
    let alice_refs: Vec<&[u8]> = secrets[0].iter().map(|s| s.bytes.as_slice()).collect();
    assert_eq!(scan::found(&plain, &alice_refs).len(), alice_refs.len());

    // The test: nothing of it in any stored file.
    let mut needles: Vec<(String, &[u8])> = bodies
        .iter()
        .map(|b| ("a message body".to_string(), b.as_slice()))
        .collect();
    for (dir, s) in dirs.iter().zip(&secrets) {
        needles.extend(
            s.iter()
                .map(|s| (format!("{:?} of {}", s, dir.display()), s.bytes.as_slice())),
        );
    }
    for (dir, c) in dirs.iter().zip(&chunks) {
        needles.extend(
            c.iter()
                .map(|c| (format!("a stored blob of {}", dir.display()), c.as_slice())),
        );
    }
    let refs: Vec<&[u8]> = needles.iter().map(|(_, n)| *n).collect();
    for (path, bytes) in &stored {
        assert!(
            !bytes.starts_with(b"SQLite format 3"),
            "{} is plain SQLite",
            path.display()
        );
        let hits = scan::found(bytes, &refs);
        assert!(
            hits.is_empty(),
            "{} holds in clear: {:?}",
            path.display(),
            hits.iter().map(|i| &needles[*i].0).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn wrong_key_is_an_error_never_a_new_identity() {
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let dora = open(&net, config("dora", dir.path(), key(1)))
        .await
        .unwrap();
    let id = dora.id();
    dora.shutdown().await;
    let r = open(&net, config("dora", dir.path(), key(2))).await;
    assert!(
        matches!(r, Err(Error::Storage(StorageError::WrongKey(_)))),
        "{:?}",
        r.map(|c| c.id())
    );
    let msg = match open(&net, config("dora", dir.path(), key(2))).await {
        Err(e) => e.to_string(),
        Ok(_) => unreachable!(),
    };
    assert!(msg.contains("database key is wrong"), "{msg}");
    let dora = open(&net, config("dora", dir.path(), key(1)))
        .await
        .unwrap();
    assert_eq!(dora.id(), id);
    dora.shutdown().await;
    // A data directory without a key is refused before anything is opened.
    let mut c = config("dora", dir.path(), key(1));
    c.database_key = None;
    assert!(matches!(open(&net, c).await, Err(Error::Config(_))));
}

#[tokio::test(start_paused = true)]
async fn empty_or_truncated_database_is_an_error() {
    let net = SimNetwork::new(SimConfig::default());
    let root = tempfile::tempdir().unwrap();
    // Empty: a 0-byte database file.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join(pqmls::DATABASE_FILE), b"").unwrap();
    let r = open(&net, config("erin", &empty, key(1))).await;
    assert!(
        matches!(r, Err(Error::Storage(StorageError::EmptyFile(_)))),
        "{:?}",
        r.map(|c| c.id())
    );
    // Truncated: half of a real database (WAL folded in first).
    let cut = root.path().join("cut");
    let alice = open(&net, config("alice", &cut, key(1))).await.unwrap();
    let bob = open(&net, config("bob", &root.path().join("bob"), key(2)))
        .await
        .unwrap();
    conversation(&alice, &bob, 3).await;
    alice.shutdown().await;
    bob.shutdown().await;
    {
        let s: SqliteStorage = SqliteStorage::open_file_encrypted(
            cut.join(pqmls::DATABASE_FILE),
            &CipherKey::from_bytes([1; 32]),
        )
        .unwrap();
        s.checkpoint_truncate().unwrap();
    }
    let file = cut.join(pqmls::DATABASE_FILE);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = open(&net, config("alice", &cut, key(1))).await;
    assert!(
        matches!(r, Err(Error::Storage(StorageError::Damaged { .. }))),
        "{:?}",
        r.map(|c| c.id())
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_opener_is_refused() {
    let net = SimNetwork::new(SimConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let first = open(&net, config("fay", dir.path(), key(1))).await.unwrap();
    let second = open(&net, config("fay", dir.path(), key(1))).await;
    let msg = match second {
        Err(e @ Error::Storage(StorageError::Locked(_))) => e.to_string(),
        other => panic!("{:?}", other.map(|c| c.id())),
    };
    assert!(msg.contains("in use by another process"), "{msg}");
    first.shutdown().await;
    open(&net, config("fay", dir.path(), key(1))).await.unwrap();
}

#[cfg(unix)]
#[tokio::test(start_paused = true)]
async fn files_0600_directories_0700() {
    use std::os::unix::fs::PermissionsExt;
    let net = SimNetwork::new(SimConfig::default());
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("gus");
    let gus = open(
        &net,
        config("gus", &dir, DatabaseKey::passphrase("correct horse")),
    )
    .await
    .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        files += 1;
    }
    assert!(files >= 3, "database, WAL, lock, salt: {files}");
    assert!(dir.join(pqmls::SALT_FILE).is_file());
    gus.shutdown().await;
    // The passphrase reopens; another one does not.
    let r = open(
        &net,
        config("gus", &dir, DatabaseKey::passphrase("wrong horse")),
    )
    .await;
    assert!(matches!(r, Err(Error::Storage(StorageError::WrongKey(_)))));
    open(
        &net,
        config("gus", &dir, DatabaseKey::passphrase("correct horse")),
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn retention_and_wipe() {
    let net = SimNetwork::new(SimConfig::default());
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("alice"), root.path().join("bob"));
    let alice = open(&net, config("alice", &da, key(1))).await.unwrap();
    let bob = open(&net, config("bob", &db, key(2))).await.unwrap();
    let (g, _) = conversation(&alice, &bob, 3).await;
    let history = alice.history(&g, 100).await.unwrap();
    assert_eq!(history.len(), 6);
    assert!(alice.delete_message(&g, history[0].seq).await.unwrap());
    assert!(!alice.delete_message(&g, history[0].seq).await.unwrap());
    let after = alice.history(&g, 100).await.unwrap();
    assert_eq!(after.len(), 5);
    assert!(after.iter().all(|m| m.seq != history[0].seq));
    assert_eq!(
        bob.history(&g, 100).await.unwrap().len(),
        6,
        "only our copy goes"
    );
    assert_eq!(alice.delete_history(&g).await.unwrap(), 5);
    assert!(alice.history(&g, 100).await.unwrap().is_empty());
    alice.shutdown().await;

    // History retention: bob keeps messages for 1 ms; after a real 20 ms they are gone at
    // the next open.
    bob.shutdown().await;
    std::thread::sleep(Duration::from_millis(20));
    let mut c = config("bob", &db, key(2));
    c.history_retention = Some(Duration::from_millis(1));
    let bob = open(&net, c).await.unwrap();
    assert!(bob.history(&g, 100).await.unwrap().is_empty());
    assert_eq!(bob.expire_history().await.unwrap(), 0);

    // Wipe: the directory goes; the next client there is a new identity.
    let id = bob.id();
    bob.wipe().await.unwrap();
    assert!(
        !db.exists(),
        "{:?}",
        std::fs::read_dir(&db).map(|d| d.count())
    );
    let again = open(&net, config("bob", &db, key(2))).await.unwrap();
    assert_ne!(again.id(), id);
}

/// History retention on the client's timer, with no call to `expire_history`: alice keeps
/// messages 60 s. 30 s (virtual) after a conversation she still has them; 90 s after they
/// are gone, while bob (no retention) keeps his. The rows are gone from her file too: her
/// decrypted pages (database and WAL) held every body before and hold none after
/// (`secure_delete` overwrote them, the WAL was truncated); bob's still hold them all.
#[tokio::test(start_paused = true)]
async fn history_retention_runs_on_the_timer() {
    let net = SimNetwork::new(SimConfig::default());
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("alice"), root.path().join("bob"));
    let mut c = config("alice", &da, key(1));
    c.history_retention = Some(Duration::from_secs(60));
    let alice = open(&net, c).await.unwrap();
    let bob = open(&net, config("bob", &db, key(2))).await.unwrap();
    let (g, bodies) = conversation(&alice, &bob, 3).await;
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    assert_eq!(
        scan::found(&scan::decrypt_data_dir(&da, &[1; 32]), &refs).len(),
        bodies.len(),
        "the bodies were on alice's disk"
    );

    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(alice.history(&g, 100).await.unwrap().len(), 6, "kept 30 s");

    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(alice.history(&g, 100).await.unwrap().is_empty());
    assert_eq!(bob.history(&g, 100).await.unwrap().len(), 6);
    let hits = scan::found(&scan::decrypt_data_dir(&da, &[1; 32]), &refs);
    assert!(
        hits.is_empty(),
        "{} deleted bodies are still in alice's pages",
        hits.len()
    );
    assert_eq!(
        scan::found(&scan::decrypt_data_dir(&db, &[2; 32]), &refs).len(),
        bodies.len()
    );
    alice.shutdown().await;
    bob.shutdown().await;
    assert!(scan::found(&scan::decrypt_data_dir(&da, &[1; 32]), &refs).is_empty());
}

/// The benchmarks' plain mode (`insecure-plain-database`) is what it claims to be: the
/// same conversation leaves its bodies readable in the files (so the end-to-end bench
/// compares encryption against none, not against another encryption), it opens again, and
/// it never opens a directory made with a key (nor the other way round).
#[cfg(feature = "insecure-plain-database")]
#[tokio::test(start_paused = true)]
async fn the_benchmarks_plain_mode_is_plain_and_refuses_encrypted_directories() {
    let root = tempfile::tempdir().unwrap();
    let net = SimNetwork::new(SimConfig::default());
    let plain_alice = || {
        config(
            "alice",
            &root.path().join("alice"),
            DatabaseKey::InsecurePlaintext,
        )
    };
    let alice = open(&net, plain_alice()).await.unwrap();
    let bob = open(&net, config("bob", &root.path().join("bob"), key(2)))
        .await
        .unwrap();
    let (g, bodies) = conversation(&alice, &bob, 2).await;
    alice.shutdown().await;
    bob.shutdown().await;

    let plain: Vec<u8> = scan::files(&root.path().join("alice"))
        .into_iter()
        .flat_map(|(_, bytes)| bytes)
        .collect();
    for body in &bodies {
        assert!(
            scan::contains(&plain, body),
            "a body missing from the plain files"
        );
    }
    let encrypted: Vec<u8> = scan::files(&root.path().join("bob"))
        .into_iter()
        .flat_map(|(_, bytes)| bytes)
        .collect();
    for body in &bodies {
        assert!(
            !scan::contains(&encrypted, body),
            "a body in the encrypted files"
        );
    }

    // Reopened plain: the same identity and history.
    let again = open(&net, plain_alice()).await.unwrap();
    assert_eq!(again.history(&g, 100).await.unwrap().len(), bodies.len());
    again.shutdown().await;

    // Neither mode opens the other's directory, and neither makes a new identity there.
    let err = open(
        &net,
        config(
            "bob",
            &root.path().join("bob"),
            DatabaseKey::InsecurePlaintext,
        ),
    )
    .await
    .expect_err("an encrypted directory opened as plain");
    assert!(
        matches!(err, Error::Storage(_) | Error::Database(_)),
        "{err:?}"
    );
    let err = open(&net, config("alice", &root.path().join("alice"), key(1)))
        .await
        .expect_err("a plain directory opened with a key");
    assert!(
        matches!(err, Error::Storage(StorageError::NotEncrypted(_))),
        "{err:?}"
    );
}
