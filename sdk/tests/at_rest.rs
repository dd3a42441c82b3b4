//! Data at rest (issue 12 item 3) on the simulated network with file data directories:
//! after a conversation no message body, identity seed or stored key bytes appear in any
//! file of the data directories; a wrong key, an empty or truncated database, a second
//! opener are clear errors and never a new identity; files 0600, directories 0700;
//! retention (delete a message, a group's history, history retention) and wiping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use pqmls::sim::{SimConfig, SimNetwork};
use pqmls::{Client, Config, DatabaseKey, Error, GroupId, InvitePolicy};
use pqmls_provider::{CipherKey, SqliteStorage, StorageError};

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

/// Every file under `dir`, recursively, concatenated (with separators).
fn raw_files(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(raw_files(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
            out.extend([0u8; 64]);
        }
    }
    out
}

/// The identity seed and every 32-byte-aligned chunk of every blob stored in the
/// (decrypted) database: keys, secrets, states, bodies.
fn stored_secrets(dir: &Path, k: u8) -> Vec<Vec<u8>> {
    let s: SqliteStorage = SqliteStorage::open_file_encrypted(
        dir.join(pqmls::DATABASE_FILE),
        &CipherKey::from_bytes([k; 32]),
    )
    .unwrap();
    let c = s.connection();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    let seed: Vec<u8> = c
        .query_row("SELECT signer FROM pqmls_identity", [], |r| r.get(0))
        .unwrap();
    out.push(seed[2..].to_vec());
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

/// Whether any 32-byte needle occurs in `hay`.
fn any_found(hay: &[u8], needles: &[Vec<u8>]) -> usize {
    let set: HashSet<&[u8]> = needles
        .iter()
        .filter(|n| n.len() >= 32)
        .map(|n| &n[..32])
        .collect();
    hay.windows(32).filter(|w| set.contains(w)).count()
}

#[tokio::test(start_paused = true)]
async fn no_plaintext_in_the_data_directories() {
    let net = SimNetwork::new(SimConfig::default());
    let root = tempfile::tempdir().unwrap();
    let (da, db) = (root.path().join("alice"), root.path().join("bob"));
    let alice = open(&net, config("alice", &da, key(1))).await.unwrap();
    let bob = open(&net, config("bob", &db, key(2))).await.unwrap();
    let (_, bodies) = conversation(&alice, &bob, 5).await;
    alice.shutdown().await;
    bob.shutdown().await;
    let raw = raw_files(root.path());
    assert!(raw.len() > 100_000, "{} bytes", raw.len());
    for body in &bodies {
        assert!(
            !raw.windows(body.len()).any(|w| w == body.as_slice()),
            "a message body is in clear on disk"
        );
    }
    assert!(!raw.windows(15).any(|w| w == b"SQLite format 3"));
    for (dir, k) in [(&da, 1), (&db, 2)] {
        let secrets = stored_secrets(dir, k);
        assert!(secrets.len() > 50, "{}", secrets.len());
        assert_eq!(
            any_found(&raw, &secrets),
            0,
            "stored bytes of {} are in clear on disk",
            dir.display()
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
