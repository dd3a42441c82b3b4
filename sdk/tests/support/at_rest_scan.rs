//! Looking for secrets in the files of data directories (issue 12 item 3), shared by the
//! SDK's and the CLI's at-rest tests (included with `#[path]`).
//!
//! - [`files`]: every file under a directory, whatever its name (database, `-wal`, `-shm`,
//!   journals, lock, salt, anything else).
//! - [`secrets`]: the secrets a client's database holds, read through the key: the identity
//!   seed, every HPKE private key (leaf keys, parent-node keys, key-package init and leaf
//!   keys, snapshot copies), the epoch secrets OpenMLS keeps (init, exporter, external,
//!   resumption; the epoch authenticator is public and left out) and the SDK's
//!   exporter-derived ordering keys.
//! - [`decrypt_database`], [`decrypt_wal`]: the pages of an SQLCipher 4 file decrypted with
//!   the raw key, as SQLite itself sees them, free pages and all. The tests use them as the
//!   control: every secret looked for must be found in the decrypted bytes of the same
//!   files, so a scan that finds nothing in the stored bytes is not blind.
//!
//! SQLCipher 4 page format (SQLCipher's `sqlcipher_page_cipher`, default settings): 4096-byte
//! pages; the last 80 bytes of each are the reserve (a 16-byte IV, then a 64-byte
//! HMAC-SHA512); the rest is AES-256-CBC with that IV, no padding. Page 1 starts with the
//! 16-byte salt in clear and is encrypted from byte 16. A raw key (`x'..'` of 64 hex digits,
//! what `SqliteStorage::open_file_encrypted` uses) is the AES key itself. A WAL file is a
//! 32-byte header, then frames of a 24-byte header (page number first, big-endian) and one
//! encrypted page.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use aes::cipher::{BlockDecrypt as _, KeyInit as _, generic_array::GenericArray};
use openmls::prelude::KeyPackage;
use pqmls_provider::storage::Codec as _;
use pqmls_provider::{BinaryCodec, SignatureKeyPair, SqliteStorage};

/// SQLCipher 4's default page size.
pub const PAGE: usize = 4096;
/// IV (16) + HMAC-SHA512 (64) at the end of each page.
const RESERVE: usize = 80;
const IV: usize = 16;
/// Page 1's clear salt.
const SALT: usize = 16;
const WAL_HEADER: usize = 32;
const WAL_FRAME_HEADER: usize = 24;

/// Every regular file under `dir`, recursively, with its contents.
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.push((p, bytes));
        }
    }
    out
}

/// Whether `needle` (of any length) occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Shortest needle [`found`] takes: 32 bytes (a key, a seed, a secret; message bodies are
/// made longer).
pub const NEEDLE: usize = 32;

/// Which of `needles` (each at least [`NEEDLE`] bytes) occur in `hay`: one pass over `hay`,
/// looking up each window of [`NEEDLE`] bytes, then the whole needle compared.
pub fn found(hay: &[u8], needles: &[&[u8]]) -> std::collections::BTreeSet<usize> {
    let mut by_prefix: std::collections::HashMap<&[u8], Vec<usize>> = Default::default();
    for (i, n) in needles.iter().enumerate() {
        assert!(n.len() >= NEEDLE, "needle {i} has {} bytes", n.len());
        by_prefix.entry(&n[..NEEDLE]).or_default().push(i);
    }
    let mut out = std::collections::BTreeSet::new();
    for (at, w) in hay.windows(NEEDLE).enumerate() {
        if let Some(candidates) = by_prefix.get(w) {
            for &i in candidates {
                if hay[at..].starts_with(needles[i]) {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Decrypts one page (`PAGE` bytes) in place of a copy; the reserve is dropped.
fn decrypt_page(page: &[u8], pgno: u32, key: &[u8; 32]) -> Vec<u8> {
    assert_eq!(page.len(), PAGE);
    let start = if pgno == 1 { SALT } else { 0 };
    let end = PAGE - RESERVE;
    let cipher = aes::Aes256::new(GenericArray::from_slice(key));
    let mut prev: [u8; 16] = page[end..end + IV].try_into().unwrap();
    let mut out = Vec::with_capacity(end - start);
    for block in page[start..end].chunks_exact(16) {
        let mut b = GenericArray::clone_from_slice(block);
        cipher.decrypt_block(&mut b);
        out.extend(b.iter().zip(prev).map(|(x, p)| x ^ p));
        prev.copy_from_slice(block);
    }
    out
}

/// The decrypted pages of an SQLCipher database file, concatenated (page 1 without its salt).
pub fn decrypt_database(file: &[u8], key: &[u8; 32]) -> Vec<u8> {
    assert_eq!(
        file.len() % PAGE,
        0,
        "not whole pages: {} bytes",
        file.len()
    );
    let mut out = Vec::with_capacity(file.len());
    for (i, page) in file.chunks_exact(PAGE).enumerate() {
        out.extend(decrypt_page(page, u32::try_from(i + 1).unwrap(), key));
    }
    out
}

/// The decrypted pages of every frame of an SQLCipher WAL file, concatenated.
pub fn decrypt_wal(file: &[u8], key: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::new();
    if file.len() < WAL_HEADER {
        return out;
    }
    for frame in file[WAL_HEADER..].chunks_exact(WAL_FRAME_HEADER + PAGE) {
        let pgno = u32::from_be_bytes(frame[..4].try_into().unwrap());
        out.extend(decrypt_page(&frame[WAL_FRAME_HEADER..], pgno, key));
    }
    out
}

/// The decrypted database and WAL of a data directory's `pqmls.sqlite3`, as they are now.
pub fn decrypt_data_dir(dir: &Path, key: &[u8; 32]) -> Vec<u8> {
    let db = dir.join(pqmls::DATABASE_FILE);
    let mut out = decrypt_database(&std::fs::read(&db).unwrap(), key);
    let mut wal = db.into_os_string();
    wal.push("-wal");
    if let Ok(bytes) = std::fs::read(&wal) {
        out.extend(decrypt_wal(&bytes, key));
    }
    out
}

/// A secret read from a database, and what it is.
pub struct Secret {
    pub kind: &'static str,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.kind, self.bytes.len())
    }
}

/// OpenMLS's `EncryptionKeyPair` as postcard lays it out: public key, private key.
#[derive(serde::Deserialize)]
struct HpkePair {
    _public: Vec<u8>,
    private: Vec<u8>,
}

/// OpenMLS's `KeyPackageBundle` as postcard lays it out (its leaf private key has no
/// public accessor).
#[derive(serde::Deserialize)]
struct KeyPackageBundle {
    _key_package: KeyPackage,
    init_private: Vec<u8>,
    leaf_private: Vec<u8>,
}

/// OpenMLS's `GroupEpochSecrets` as postcard lays it out.
#[derive(serde::Deserialize)]
struct EpochSecrets {
    init: Vec<u8>,
    exporter: Vec<u8>,
    _epoch_authenticator: Vec<u8>,
    external: Vec<u8>,
    resumption: Vec<u8>,
}

fn blobs(storage: &SqliteStorage, sql: &str) -> Vec<Vec<u8>> {
    let c = storage.connection();
    let mut stmt = c.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The secrets held in a client's (open, decrypted) database; see the module doc.
pub fn secrets(storage: &SqliteStorage) -> Vec<Secret> {
    let mut out = Vec::new();
    let mut push = |kind, bytes: &[u8]| {
        assert!(bytes.len() >= 32, "{kind}: {} bytes", bytes.len());
        out.push(Secret {
            kind,
            bytes: bytes.to_vec(),
        });
    };
    for signer in blobs(storage, "SELECT signer FROM pqmls_identity") {
        let signer = SignatureKeyPair::from_bytes(&signer).unwrap();
        push("identity seed", signer.seed());
    }
    for sql in [
        "SELECT key_pair FROM openmls_encryption_keys",
        "SELECT key_pair FROM pqmls_snap_enc_keys",
    ] {
        for pair in blobs(storage, sql) {
            let pair: HpkePair = BinaryCodec::from_slice(&pair).unwrap();
            push("HPKE key-package leaf private key", &pair.private);
        }
    }
    for sql in [
        "SELECT key_pairs FROM openmls_epoch_keys_pairs",
        "SELECT key_pairs FROM pqmls_snap_epoch_keys",
    ] {
        for pairs in blobs(storage, sql) {
            let pairs: Vec<HpkePair> = BinaryCodec::from_slice(&pairs).unwrap();
            for pair in pairs {
                push("HPKE tree private key (own leaf, path)", &pair.private);
            }
        }
    }
    for bundle in blobs(storage, "SELECT key_package FROM openmls_key_packages") {
        let bundle: KeyPackageBundle = BinaryCodec::from_slice(&bundle).unwrap();
        push("key-package init private key", &bundle.init_private);
        push("key-package leaf private key", &bundle.leaf_private);
    }
    for sql in [
        "SELECT group_data FROM openmls_group_data WHERE data_type = 'group_epoch_secrets'",
        "SELECT group_data FROM pqmls_snap_group_data WHERE data_type = 'group_epoch_secrets'",
    ] {
        for secrets in blobs(storage, sql) {
            let s: EpochSecrets = BinaryCodec::from_slice(&secrets).unwrap();
            push("init secret", &s.init);
            push("exporter secret", &s.exporter);
            push("external secret", &s.external);
            push("resumption secret", &s.resumption);
        }
    }
    for sql in [
        "SELECT order_key FROM pqmls_epoch_keys",
        "SELECT vote_key FROM pqmls_epoch_keys",
    ] {
        for k in blobs(storage, sql) {
            push("ordering exporter key", &k);
        }
    }
    out
}

/// How many secrets of each kind.
pub fn kinds(secrets: &[Secret]) -> std::collections::BTreeMap<&'static str, usize> {
    let mut m = std::collections::BTreeMap::new();
    for s in secrets {
        *m.entry(s.kind).or_insert(0) += 1;
    }
    m
}
