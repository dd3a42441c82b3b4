//! The storage codec of `pqmls-provider` (binary) next to JSON, for suite 0x004F
//! (MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519), all in in-memory SQLite:
//!
//! | group | what is timed |
//! |---|---|
//! | `storage_codec/self_update_32` | a self-update commit and its merge in a 32-member group (crypto included) |
//! | `storage_codec/load_32` | `MlsGroup::load` of that group |
//! | `storage_codec/tree_encode_32`, `tree_decode_32` | encode / decode of the stored ratchet tree (`TreeSync`), the largest value |
//! | `storage_at_rest/self_update_32`, `load_32` | the same two on the binary codec in memory, in a plain file (`open_file`) and in an encrypted file (`open_file_encrypted`, SQLCipher): the cost of encryption at rest |
//! | `storage_at_rest/message_row` | the rows the SDK writes for one message sent (history + outbox, one transaction), on the same three storages |
//!
//! The setup prints the bytes each codec stored per table. Run with
//! `taskset -c 0 nice cargo bench -p pqmls-benches --bench storage_codec -- --warm-up-time 1
//! --measurement-time 3`.
//!
//! Crypto and randomness come from `openmls_rust_crypto` so that only the codec differs.

// Benchmark setup on fixed inputs: a failure is a bug to stop at.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use openmls::{prelude::*, treesync::TreeSync};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use pqmls_provider::storage::{BinaryCodec, Codec, JsonCodec, SqliteStorage};
use std::hint::black_box;

const SUITE: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;
const MEMBERS: usize = 32;
const PARAM: &str = "0x004F";

/// `RustCrypto` with our SQLite storage using codec `C`.
struct Provider<C: Codec> {
    crypto: RustCrypto,
    storage: SqliteStorage<C>,
}

impl<C: Codec> Provider<C> {
    fn new() -> Self {
        Self::with_storage(SqliteStorage::open_in_memory().unwrap())
    }

    fn with_storage(storage: SqliteStorage<C>) -> Self {
        Self {
            crypto: RustCrypto::default(),
            storage,
        }
    }
}

impl<C: Codec> OpenMlsProvider for Provider<C> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorage<C>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }
    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }
    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

fn credential(name: String, signer: &SignatureKeyPair) -> CredentialWithKey {
    CredentialWithKey {
        credential: BasicCredential::new(name.into_bytes()).into(),
        signature_key: signer.public().into(),
    }
}

/// A `MEMBERS`-member group seen by its creator, whose state is in `C`-encoded SQLite.
/// The other members' key packages come from a throwaway provider.
fn group<C: Codec>() -> (Provider<C>, SignatureKeyPair, MlsGroup) {
    group_in(Provider::<C>::new())
}

/// As [`group`], in the given provider.
fn group_in<C: Codec>(provider: Provider<C>) -> (Provider<C>, SignatureKeyPair, MlsGroup) {
    let signer = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
    let mut group = MlsGroup::builder()
        .ciphersuite(SUITE)
        .use_ratchet_tree_extension(true)
        .build(&provider, &signer, credential("creator".into(), &signer))
        .unwrap();
    let others = Provider::<C>::new();
    let key_packages: Vec<KeyPackage> = (1..MEMBERS)
        .map(|i| {
            let s = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
            KeyPackage::builder()
                .build(SUITE, &others, &s, credential(format!("member {i}"), &s))
                .unwrap()
                .key_package()
                .clone()
        })
        .collect();
    group
        .add_members(&provider, &signer, &key_packages)
        .unwrap();
    group.merge_pending_commit(&provider).unwrap();
    // One self-update so that the tree has full paths, as in a group in use.
    group
        .self_update(&provider, &signer, LeafNodeParameters::default())
        .unwrap();
    group.merge_pending_commit(&provider).unwrap();
    assert_eq!(group.members().count(), MEMBERS);
    (provider, signer, group)
}

/// Bytes stored per table (value columns only), and the `tree` row alone.
fn stored_bytes<C: Codec>(storage: &SqliteStorage<C>) -> (Vec<(String, i64)>, Vec<u8>) {
    let conn = storage.connection();
    let tables = [
        ("openmls_group_data", "group_data"),
        ("openmls_encryption_keys", "key_pair"),
        ("openmls_epoch_keys_pairs", "key_pairs"),
        ("openmls_own_leaf_nodes", "leaf_node"),
        ("openmls_signature_keys", "signature_key"),
    ];
    let sizes = tables
        .iter()
        .map(|(table, column)| {
            let n: i64 = conn
                .query_row(
                    &format!("SELECT coalesce(sum(length({column})), 0) FROM {table}"),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            (table.to_string(), n)
        })
        .collect();
    let tree = conn
        .query_row(
            "SELECT group_data FROM openmls_group_data WHERE data_type = 'tree'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (sizes, tree)
}

fn report<C: Codec>(name: &str, provider: &Provider<C>) -> Vec<u8> {
    let (sizes, tree) = stored_bytes(&provider.storage);
    let total: i64 = sizes.iter().map(|(_, n)| n).sum();
    eprintln!(
        "{name}: {total} bytes stored ({sizes:?}); tree row {} bytes",
        tree.len()
    );
    tree
}

fn self_update_and_load<C: Codec>(c: &mut Criterion, name: &str) {
    let (provider, signer, mut group) = group::<C>();
    report(name, &provider);
    {
        let mut g = c.benchmark_group("storage_codec/self_update_32");
        g.bench_function(BenchmarkId::new(name, PARAM), |b| {
            b.iter(|| {
                group
                    .self_update(&provider, &signer, LeafNodeParameters::default())
                    .unwrap();
                group.merge_pending_commit(&provider).unwrap();
            })
        });
    }
    let mut g = c.benchmark_group("storage_codec/load_32");
    let id = group.group_id().clone();
    g.bench_function(BenchmarkId::new(name, PARAM), |b| {
        b.iter(|| black_box(MlsGroup::load(&provider.storage, black_box(&id)).unwrap()))
    });
}

fn codecs(c: &mut Criterion) {
    self_update_and_load::<BinaryCodec>(c, "binary");
    self_update_and_load::<JsonCodec>(c, "json");

    // The stored tree, decoded once, then encoded and decoded by each codec.
    let (provider, _, _) = group::<BinaryCodec>();
    let tree: TreeSync = BinaryCodec::from_slice(&report("binary", &provider)).unwrap();
    let binary = BinaryCodec::to_vec(&tree).unwrap();
    let json = JsonCodec::to_vec(&tree).unwrap();
    eprintln!(
        "TreeSync ({MEMBERS} members): binary {} bytes, json {} bytes",
        binary.len(),
        json.len()
    );
    {
        let mut g = c.benchmark_group("storage_codec/tree_encode_32");
        g.bench_function(BenchmarkId::new("binary", PARAM), |b| {
            b.iter(|| BinaryCodec::to_vec(black_box(&tree)).unwrap())
        });
        g.bench_function(BenchmarkId::new("json", PARAM), |b| {
            b.iter(|| JsonCodec::to_vec(black_box(&tree)).unwrap())
        });
    }
    let mut g = c.benchmark_group("storage_codec/tree_decode_32");
    g.bench_function(BenchmarkId::new("binary", PARAM), |b| {
        b.iter(|| BinaryCodec::from_slice::<TreeSync>(black_box(&binary)).unwrap())
    });
    g.bench_function(BenchmarkId::new("json", PARAM), |b| {
        b.iter(|| JsonCodec::from_slice::<TreeSync>(black_box(&json)).unwrap())
    });
}

/// Opens one of the storages compared in [`at_rest`].
type Opener<'a> = Box<dyn Fn() -> SqliteStorage<BinaryCodec> + 'a>;

/// Encryption at rest: the binary codec in memory, in a plain file and in an encrypted file.
fn at_rest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let stores: [(&str, Opener<'_>); 3] = [
        (
            "memory",
            Box::new(|| SqliteStorage::open_in_memory().unwrap()),
        ),
        (
            "file",
            Box::new(|| SqliteStorage::open_file(dir.path().join("plain.sqlite3")).unwrap()),
        ),
        (
            "file-encrypted",
            Box::new(|| {
                SqliteStorage::open_file_encrypted(
                    dir.path().join("encrypted.sqlite3"),
                    &pqmls_provider::CipherKey::from_bytes([7; 32]),
                )
                .unwrap()
            }),
        ),
    ];
    for (name, open) in &stores {
        let (provider, signer, mut group) = group_in(Provider::with_storage(open()));
        {
            let mut g = c.benchmark_group("storage_at_rest/self_update_32");
            g.bench_function(BenchmarkId::new(*name, PARAM), |b| {
                b.iter(|| {
                    group
                        .self_update(&provider, &signer, LeafNodeParameters::default())
                        .unwrap();
                    group.merge_pending_commit(&provider).unwrap();
                })
            });
        }
        {
            let mut g = c.benchmark_group("storage_at_rest/load_32");
            let id = group.group_id().clone();
            g.bench_function(BenchmarkId::new(*name, PARAM), |b| {
                b.iter(|| black_box(MlsGroup::load(&provider.storage, black_box(&id)).unwrap()))
            });
        }
        // What the SDK writes for one message sent, without MLS: a history row (a 100-byte
        // body) and an outbox row (a 222-byte ciphertext, the demo's size) in one transaction.
        let db = provider.storage.connection();
        db.execute_batch(
            "CREATE TABLE bench_messages (seq INTEGER PRIMARY KEY, group_id BLOB, body BLOB);
             CREATE TABLE bench_outbox (id INTEGER PRIMARY KEY, payload BLOB);",
        )
        .unwrap();
        let (body, payload) = ([b'x'; 100], [7u8; 222]);
        let mut g = c.benchmark_group("storage_at_rest/message_row");
        g.bench_function(BenchmarkId::new(*name, PARAM), |b| {
            b.iter(|| {
                let tx = db.unchecked_transaction().unwrap();
                tx.execute(
                    "INSERT INTO bench_messages (group_id, body) VALUES (?1, ?2)",
                    (&[1u8; 16][..], &body[..]),
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO bench_outbox (payload) VALUES (?1)",
                    [&payload[..]],
                )
                .unwrap();
                tx.commit().unwrap();
            })
        });
    }
}

criterion_group!(benches, codecs, at_rest);
criterion_main!(benches);
