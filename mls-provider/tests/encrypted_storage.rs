//! The encrypted database (`SqliteStorage::open_file_encrypted`): nothing readable in the
//! files, the right key reopens, a wrong key / empty / plain / truncated file is a clear
//! error, one opener at a time, 0600 files, secure delete and WAL truncation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_provider::{CipherKey, SqliteStorage, StorageError};

const MARKER: &[u8] = b"a secret message body that must never be on disk in clear";

fn key(b: u8) -> CipherKey {
    CipherKey::from_bytes([b; 32])
}

/// Every file in `dir`, concatenated.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.extend(std::fs::read(p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A database with a table holding MARKER, a few hundred rows, closed.
fn make(path: &std::path::Path, k: &CipherKey) {
    let s: SqliteStorage = SqliteStorage::open_file_encrypted(path, k).unwrap();
    let c = s.connection();
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
        .unwrap();
    for i in 0..300 {
        c.execute(
            "INSERT INTO t (id, body) VALUES (?1, ?2)",
            rusqlite::params![i, [MARKER, &[i as u8; 64]].concat()],
        )
        .unwrap();
    }
}

#[test]
fn nothing_in_clear_and_the_key_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    make(&path, &key(1));
    let bytes = all_bytes(dir.path());
    assert!(!contains(&bytes, MARKER), "a row is readable in the files");
    assert!(!contains(&bytes, b"SQLite format 3"), "plain SQLite header");
    assert!(!contains(&bytes, b"CREATE TABLE"), "the schema is readable");
    let s: SqliteStorage = SqliteStorage::open_file_encrypted(&path, &key(1)).unwrap();
    let n: i64 = s
        .connection()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 300);
}

#[test]
fn wrong_key_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    make(&path, &key(1));
    let before = std::fs::read(&path).unwrap();
    let r = SqliteStorage::<pqmls_provider::BinaryCodec>::open_file_encrypted(&path, &key(2));
    assert!(matches!(r, Err(StorageError::WrongKey(_))), "{r:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // And the right key still works.
    SqliteStorage::<pqmls_provider::BinaryCodec>::open_file_encrypted(&path, &key(1)).unwrap();
}

#[test]
fn empty_plain_and_truncated_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let r = SqliteStorage::<pqmls_provider::BinaryCodec>::open_file_encrypted(&empty, &key(1));
    assert!(matches!(r, Err(StorageError::EmptyFile(_))), "{r:?}");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

    let plain = dir.path().join("plain");
    rusqlite::Connection::open(&plain)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let r = SqliteStorage::<pqmls_provider::BinaryCodec>::open_file_encrypted(&plain, &key(1));
    assert!(matches!(r, Err(StorageError::NotEncrypted(_))), "{r:?}");

    let cut = dir.path().join("cut");
    make(&cut, &key(1));
    {
        // Fold the WAL into the file first, then cut the file in half.
        let s: SqliteStorage = SqliteStorage::open_file_encrypted(&cut, &key(1)).unwrap();
        s.checkpoint_truncate().unwrap();
    }
    let len = std::fs::metadata(&cut).unwrap().len();
    assert!(len > 8192, "{len}");
    let f = std::fs::OpenOptions::new().write(true).open(&cut).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let r = SqliteStorage::<pqmls_provider::BinaryCodec>::open_file_encrypted(&cut, &key(1));
    assert!(
        matches!(r, Err(StorageError::Damaged { .. })),
        "{:?}",
        r.map(|_| ())
    );
}

#[test]
fn one_opener_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let first: SqliteStorage = SqliteStorage::open_file_encrypted(&path, &key(1)).unwrap();
    let second = SqliteStorage::<pqmls_provider::BinaryCodec>::open_file_encrypted(&path, &key(1));
    assert!(matches!(second, Err(StorageError::Locked(_))), "{second:?}");
    drop(first);
    SqliteStorage::<pqmls_provider::BinaryCodec>::open_file_encrypted(&path, &key(1)).unwrap();
}

#[cfg(unix)]
#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s: SqliteStorage = SqliteStorage::open_file_encrypted(&path, &key(1)).unwrap();
    s.connection()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}

#[test]
fn deleted_rows_are_gone_after_a_truncating_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s: SqliteStorage = SqliteStorage::open_file_encrypted(&path, &key(1)).unwrap();
    let secure: i64 = s
        .connection()
        .query_row("PRAGMA secure_delete", [], |r| r.get(0))
        .unwrap();
    assert_eq!(secure, 1);
    s.connection()
        .execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (randomblob(100000));")
        .unwrap();
    s.connection().execute_batch("DELETE FROM t").unwrap();
    s.checkpoint_truncate().unwrap();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert_eq!(std::fs::metadata(wal).unwrap().len(), 0);
}
