//! OpenMLS operations on pqmls-provider next to OpenMLS's own providers (issue 3).
//!
//! One criterion group per operation; every entry is `BenchmarkId::new(provider, suite)`,
//! so one run gives the ratios. Providers:
//! - `ours`: [`pqmls_provider::Provider`] on its default storage, SQLite
//!   (`SqliteStorage::open_in_memory`, postcard codec);
//! - `ours-mem`: the same crypto on OpenMLS's `MemoryStorage`, to tell crypto from storage;
//! - `ours-cold`: `ours` with the recipient-key cache turned off (capacity 0), in the
//!   self-update groups only, where a member commits again and again to the same keys;
//! - `rustcrypto`: `openmls_rust_crypto::OpenMlsRustCrypto` (its `MemoryStorage`);
//! - `libcrux`: `openmls_libcrux_crypto::Provider` (its `MemoryStorage`).
//!
//! Upstream members sign with `openmls_basic_credential::SignatureKeyPair` (Ed25519 and
//! ML-DSA-44 both), ours with [`pqmls_provider::SignatureKeyPair`].
//!
//! Suites: 0x0001 (all), 0x004D X-Wing (ours, libcrux), 0x004F ML-KEM-768+X25519 (all),
//! 0x0052 ML-KEM-768+X25519 with ML-DSA-44 (ours, RustCrypto): each upstream provider on
//! the suites its `supports()` accepts. RustCrypto has no 0x004D; libcrux signs only
//! Ed25519, so no 0x0052.
//!
//! What one timed iteration is (everything a member does, storage included):
//! - `key_package`: build a KeyPackage (keys, signature, storage) and serialize it;
//! - `create_add/N`: validate N serialized KeyPackages, create a group, add them in one
//!   commit, merge it, serialize commit and Welcome (fresh creator and KeyPackages each
//!   iteration, made untimed);
//! - `self_update/{sparse,populated}`: a 128-member group; member 0 self-updates with a
//!   path and merges its commit. Sparse: member 0 added everyone in one commit, so its
//!   copath resolves to 127 leaves; populated: every even member (hence every parent node)
//!   updated, so the copath resolves to 7 nodes. Member 0 commits again and again to the
//!   same copath keys, which `ours` prepares after 4 uses (cache warm); `ours-cold` shows
//!   a first commit.
//! - `process/{sparse,populated}`: member 127 deserializes, processes and merges member 0's
//!   next self-update (made untimed);
//! - `join_129`: a member joins a 129-member group from its Welcome (ratchet tree in the
//!   Welcome) into a fresh provider holding its KeyPackage;
//! - `app_encrypt_1KiB` / `app_decrypt_1KiB`: a 1 KiB application message in a
//!   two-member group, created and serialized / deserialized and processed.
//!
//! Quick subsets, by criterion filter (a regular expression over `group/provider/suite`):
//! `-- key_package`, `-- 'create_add/16'`, `-- 'self_update/sparse'`, `-- process`,
//! `-- join_129`, `-- app_`, `-- 0x004F`, `-- '/(ours|libcrux)/0x004D'`.
//!
//! Full run (about 25 minutes on one core):
//! `taskset -c 0 nice cargo bench -p pqmls-benches --bench mls -- --warm-up-time 1
//! --measurement-time 3 --noplot`.

// Benchmark setup on fixed inputs: a failure is a bug to stop at, so unwrap/expect are
// the right tools here (the workspace warns on them for library code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_memory_storage::MemoryStorage;
use openmls_traits::OpenMlsProvider;
use openmls_traits::signatures::Signer;
use openmls_traits::storage::StorageProvider as _;
use pqmls_provider::cache::CacheConfig;
use pqmls_provider::storage::{BinaryCodec, SqliteStorage};
use pqmls_provider::{CryptoConfig, PqCrypto};

/// Members of the large groups.
const GROUP_SIZE: u32 = 128;
/// Application message size.
const MESSAGE_LEN: usize = 1024;

const SUITE_0001: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
const SUITE_004D: Ciphersuite = Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519;
const SUITE_004F: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;
const SUITE_0052: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_CHACHA20POLY1305_SHA384_MLDSA44;

// ---------------------------------------------------------------------------------------
// Providers

/// Our provider's default storage: SQLite (in memory here) with the binary codec.
type OursStorage = SqliteStorage<BinaryCodec>;

fn ours_storage() -> OursStorage {
    SqliteStorage::open_in_memory().unwrap()
}

/// A provider under test: how to make one, and the signing key its members use.
trait Kind: 'static {
    /// The name in the benchmark ids.
    const NAME: &'static str;
    type Provider: OpenMlsProvider;
    type Signer: Signer;

    fn provider() -> Self::Provider;
    /// A fresh signing key and its public key.
    fn signer(scheme: SignatureScheme) -> (Self::Signer, Vec<u8>);
}

fn ours_signer(scheme: SignatureScheme) -> (pqmls_provider::SignatureKeyPair, Vec<u8>) {
    let kp = pqmls_provider::SignatureKeyPair::generate(scheme).unwrap();
    let public = kp.public().to_vec();
    (kp, public)
}

fn basic_signer(scheme: SignatureScheme) -> (openmls_basic_credential::SignatureKeyPair, Vec<u8>) {
    let kp = openmls_basic_credential::SignatureKeyPair::new(scheme).unwrap();
    let public = kp.to_public_vec();
    (kp, public)
}

struct Ours;
impl Kind for Ours {
    const NAME: &'static str = "ours";
    type Provider = pqmls_provider::Provider<OursStorage>;
    type Signer = pqmls_provider::SignatureKeyPair;

    fn provider() -> Self::Provider {
        pqmls_provider::Provider::from_parts(PqCrypto::new().unwrap(), ours_storage())
    }

    fn signer(scheme: SignatureScheme) -> (Self::Signer, Vec<u8>) {
        ours_signer(scheme)
    }
}

struct OursMem;
impl Kind for OursMem {
    const NAME: &'static str = "ours-mem";
    type Provider = pqmls_provider::Provider<MemoryStorage>;
    type Signer = pqmls_provider::SignatureKeyPair;

    fn provider() -> Self::Provider {
        pqmls_provider::Provider::from_parts(PqCrypto::new().unwrap(), MemoryStorage::default())
    }

    fn signer(scheme: SignatureScheme) -> (Self::Signer, Vec<u8>) {
        ours_signer(scheme)
    }
}

struct OursCold;
impl Kind for OursCold {
    const NAME: &'static str = "ours-cold";
    type Provider = pqmls_provider::Provider<OursStorage>;
    type Signer = pqmls_provider::SignatureKeyPair;

    fn provider() -> Self::Provider {
        let config = CryptoConfig {
            cache: CacheConfig {
                capacity: 0,
                ..CacheConfig::default()
            },
            ..CryptoConfig::default()
        };
        pqmls_provider::Provider::from_parts(PqCrypto::with_config(config).unwrap(), ours_storage())
    }

    fn signer(scheme: SignatureScheme) -> (Self::Signer, Vec<u8>) {
        ours_signer(scheme)
    }
}

struct RustCrypto;
impl Kind for RustCrypto {
    const NAME: &'static str = "rustcrypto";
    type Provider = openmls_rust_crypto::OpenMlsRustCrypto;
    type Signer = openmls_basic_credential::SignatureKeyPair;

    fn provider() -> Self::Provider {
        openmls_rust_crypto::OpenMlsRustCrypto::default()
    }

    fn signer(scheme: SignatureScheme) -> (Self::Signer, Vec<u8>) {
        basic_signer(scheme)
    }
}

struct Libcrux;
impl Kind for Libcrux {
    const NAME: &'static str = "libcrux";
    type Provider = openmls_libcrux_crypto::Provider;
    type Signer = openmls_basic_credential::SignatureKeyPair;

    fn provider() -> Self::Provider {
        openmls_libcrux_crypto::Provider::new().unwrap()
    }

    fn signer(scheme: SignatureScheme) -> (Self::Signer, Vec<u8>) {
        basic_signer(scheme)
    }
}

// ---------------------------------------------------------------------------------------
// One MLS client

fn capabilities(cs: Ciphersuite) -> Capabilities {
    Capabilities::new(None, Some(&[cs]), None, None, None)
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build()
}

fn ser(m: &MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().unwrap()
}

struct Member<K: Kind> {
    cs: Ciphersuite,
    provider: K::Provider,
    signer: K::Signer,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
}

impl<K: Kind> Member<K> {
    fn new(cs: Ciphersuite, name: &str) -> Self {
        let (signer, public) = K::signer(cs.signature_algorithm());
        Member {
            cs,
            provider: K::provider(),
            signer,
            credential: CredentialWithKey {
                credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
                signature_key: public.into(),
            },
            group: None,
        }
    }

    fn key_package_bundle(&self) -> KeyPackageBundle {
        KeyPackage::builder()
            .leaf_node_capabilities(capabilities(self.cs))
            .build(
                self.cs,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .unwrap()
    }

    /// A KeyPackage of another client (its own signing key and credential) made with
    /// this member's provider, as it goes on the wire.
    fn foreign_key_package(&self, name: &str) -> Vec<u8> {
        let (signer, public) = K::signer(self.cs.signature_algorithm());
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: public.into(),
        };
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(capabilities(self.cs))
            .build(self.cs, &self.provider, &signer, credential)
            .unwrap();
        ser(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    /// A fresh KeyPackage as it goes on the wire.
    fn key_package(&self) -> Vec<u8> {
        ser(&MlsMessageOut::from(
            self.key_package_bundle().key_package().clone(),
        ))
    }

    fn create_group(&mut self) {
        let group = MlsGroup::builder()
            .ciphersuite(self.cs)
            .use_ratchet_tree_extension(true)
            .with_capabilities(capabilities(self.cs))
            .build(&self.provider, &self.signer, self.credential.clone())
            .unwrap();
        self.group = Some(group);
    }

    /// Validates the serialized key packages and commits to adding them; the commit is
    /// left pending. Returns (commit, welcome).
    fn add_pending(&mut self, key_packages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let kps: Vec<KeyPackage> = key_packages
            .iter()
            .map(|b| {
                let m = MlsMessageIn::tls_deserialize_exact(b).unwrap();
                let MlsMessageBodyIn::KeyPackage(kp) = m.extract() else {
                    panic!("not a key package")
                };
                kp.validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .unwrap()
            })
            .collect();
        let group = self.group.as_mut().expect("in a group");
        let (commit, welcome, _) = group
            .add_members(&self.provider, &self.signer, &kps)
            .unwrap();
        (ser(&commit), ser(&welcome))
    }

    /// Adds the members and merges the commit. Returns (commit, welcome).
    fn add(&mut self, key_packages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let out = self.add_pending(key_packages);
        let group = self.group.as_mut().expect("in a group");
        group.merge_pending_commit(&self.provider).unwrap();
        out
    }

    fn join(&mut self, welcome: &[u8]) {
        self.group = Some(join(&self.provider, welcome));
    }

    /// A self-update commit with a path, merged. Returns the commit.
    fn self_update(&mut self) -> Vec<u8> {
        let group = self.group.as_mut().expect("in a group");
        let bundle = group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .unwrap();
        let commit = ser(bundle.commit());
        group.merge_pending_commit(&self.provider).unwrap();
        commit
    }

    /// Processes a commit (merging it) or an application message (returning it).
    fn process(&mut self, msg: &[u8]) -> Option<Vec<u8>> {
        let m = MlsMessageIn::tls_deserialize_exact(msg).unwrap();
        let pm = m.try_into_protocol_message().unwrap();
        let group = self.group.as_mut().expect("in a group");
        let processed = group.process_message(&self.provider, pm).unwrap();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(a) => Some(a.into_bytes()),
            ProcessedMessageContent::StagedCommitMessage(sc) => {
                group.merge_staged_commit(&self.provider, *sc).unwrap();
                None
            }
            _ => panic!("unexpected message"),
        }
    }

    fn send(&mut self, msg: &[u8]) -> Vec<u8> {
        let group = self.group.as_mut().expect("in a group");
        ser(&group
            .create_message(&self.provider, &self.signer, msg)
            .unwrap())
    }
}

fn join<P: OpenMlsProvider>(provider: &P, welcome: &[u8]) -> MlsGroup {
    let msg = MlsMessageIn::tls_deserialize_exact(welcome).unwrap();
    let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
        panic!("not a welcome")
    };
    StagedWelcome::new_from_welcome(provider, &join_config(), welcome, None)
        .unwrap()
        .into_group(provider)
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Fixtures: the state each operation starts from, built once (untimed) and reused

/// The tree of the 128-member groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tree {
    /// Member 0 added the 127 others in one commit: no parent node but its own path.
    Sparse,
    /// Then every even member updated: every parent node is set, no unmerged leaves.
    Populated,
}

/// Member 0 (the committer) and member 127 (the receiver) of a 128-member group.
struct Pair<K: Kind> {
    committer: Member<K>,
    receiver: Member<K>,
    /// False once the committer has merged commits the receiver did not see.
    in_sync: bool,
}

fn build_pair<K: Kind>(cs: Ciphersuite, tree: Tree) -> Pair<K> {
    let mut creator = Member::<K>::new(cs, "member 0");
    creator.create_group();
    let mut others: Vec<Member<K>> = (1..GROUP_SIZE)
        .map(|i| Member::new(cs, &format!("member {i}")))
        .collect();
    let kps: Vec<Vec<u8>> = others.iter().map(Member::key_package).collect();
    let (_, welcome) = creator.add(&kps);
    // Leaves are filled left to right: `others[i]` is leaf i + 1.
    let mut receiver = others.pop().expect("127 others");
    receiver.join(&welcome);
    if tree == Tree::Populated {
        let mut updaters: VecDeque<Member<K>> = others
            .into_iter()
            .enumerate()
            .filter(|(i, _)| (i + 1) % 2 == 0)
            .map(|(_, mut m)| {
                m.join(&welcome);
                m
            })
            .collect();
        while let Some(mut updater) = updaters.pop_front() {
            let commit = updater.self_update();
            for m in updaters.iter_mut() {
                m.process(&commit);
            }
            creator.process(&commit);
            receiver.process(&commit);
        }
        let commit = creator.self_update();
        receiver.process(&commit);
    }
    Pair {
        committer: creator,
        receiver,
        in_sync: true,
    }
}

/// What `join_129` starts from: a Welcome into a 129-member group and the joiner's
/// KeyPackage with its private keys, written into a fresh provider each iteration.
struct JoinFixture {
    welcome: Vec<u8>,
    bundle: KeyPackageBundle,
}

/// All fixtures of one provider on one suite, built on first use.
struct Fixture<K: Kind> {
    cs: Ciphersuite,
    sparse: Option<Pair<K>>,
    populated: Option<Pair<K>>,
    join: Option<JoinFixture>,
    /// A two-member group: (member 0, member 1).
    chat: Option<(Member<K>, Member<K>)>,
    key_packages: Option<Member<K>>,
}

impl<K: Kind> Fixture<K> {
    fn new(cs: Ciphersuite) -> Self {
        Fixture {
            cs,
            sparse: None,
            populated: None,
            join: None,
            chat: None,
            key_packages: None,
        }
    }

    fn pair(&mut self, tree: Tree) -> &mut Pair<K> {
        let cs = self.cs;
        let slot = match tree {
            Tree::Sparse => &mut self.sparse,
            Tree::Populated => &mut self.populated,
        };
        slot.get_or_insert_with(|| build_pair(cs, tree))
    }

    fn chat(&mut self) -> &mut (Member<K>, Member<K>) {
        let cs = self.cs;
        self.chat.get_or_insert_with(|| {
            let mut a = Member::<K>::new(cs, "alice");
            let mut b = Member::<K>::new(cs, "bob");
            a.create_group();
            let (_, welcome) = a.add(&[b.key_package()]);
            b.join(&welcome);
            (a, b)
        })
    }
}

/// The operations, object-safe so that one list holds every provider and suite.
trait Bench {
    fn provider(&self) -> &'static str;
    fn suite(&self) -> Ciphersuite;
    /// Whether the provider is in the groups other than `self_update`.
    fn in_all_groups(&self) -> bool;
    fn key_package(&mut self, iters: u64) -> Duration;
    fn create_add(&mut self, n: usize, iters: u64) -> Duration;
    fn self_update(&mut self, tree: Tree, iters: u64) -> Duration;
    fn process(&mut self, tree: Tree, iters: u64) -> Duration;
    fn join(&mut self, iters: u64) -> Duration;
    fn encrypt(&mut self, iters: u64) -> Duration;
    fn decrypt(&mut self, iters: u64) -> Duration;
}

impl<K: Kind> Bench for Fixture<K> {
    fn provider(&self) -> &'static str {
        K::NAME
    }

    fn suite(&self) -> Ciphersuite {
        self.cs
    }

    fn in_all_groups(&self) -> bool {
        K::NAME != OursCold::NAME
    }

    fn key_package(&mut self, iters: u64) -> Duration {
        let cs = self.cs;
        let member = self
            .key_packages
            .get_or_insert_with(|| Member::new(cs, "key packages"));
        let start = Instant::now();
        for _ in 0..iters {
            black_box(member.key_package());
        }
        start.elapsed()
    }

    fn create_add(&mut self, n: usize, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            // Untimed: a fresh creator, and KeyPackages of n new clients (one provider).
            let mut creator = Member::<K>::new(self.cs, "creator");
            let source = Member::<K>::new(self.cs, "new members");
            let kps: Vec<Vec<u8>> = (0..n)
                .map(|i| source.foreign_key_package(&format!("member {}", i + 1)))
                .collect();

            let start = Instant::now();
            creator.create_group();
            black_box(creator.add(&kps));
            total += start.elapsed();
        }
        total
    }

    fn self_update(&mut self, tree: Tree, iters: u64) -> Duration {
        let pair = self.pair(tree);
        pair.in_sync = false;
        let start = Instant::now();
        for _ in 0..iters {
            black_box(pair.committer.self_update());
        }
        start.elapsed()
    }

    fn process(&mut self, tree: Tree, iters: u64) -> Duration {
        if !self.pair(tree).in_sync {
            // The receiver missed commits (a self-update run came first): start again.
            match tree {
                Tree::Sparse => self.sparse = None,
                Tree::Populated => self.populated = None,
            }
        }
        let pair = self.pair(tree);
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let commit = pair.committer.self_update();
            let start = Instant::now();
            black_box(pair.receiver.process(&commit));
            total += start.elapsed();
        }
        total
    }

    fn join(&mut self, iters: u64) -> Duration {
        if self.join.is_none() {
            let cs = self.cs;
            let joiner = Member::<K>::new(cs, "member 128");
            let bundle = joiner.key_package_bundle();
            let kp = ser(&MlsMessageOut::from(bundle.key_package().clone()));
            let committer = &mut self.pair(Tree::Sparse).committer;
            let (_, welcome) = committer.add_pending(&[kp]);
            // Leave the 128-member group as it was, for the other benchmarks.
            let group = committer.group.as_mut().expect("in a group");
            group
                .clear_pending_commit(committer.provider.storage())
                .unwrap();
            self.join = Some(JoinFixture { welcome, bundle });
        }
        let fixture = self.join.as_ref().expect("set above");
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            // Untimed: a fresh provider holding the joiner's KeyPackage and private keys.
            let provider = K::provider();
            let hash_ref = fixture
                .bundle
                .key_package()
                .hash_ref(provider.crypto())
                .unwrap();
            provider
                .storage()
                .write_key_package(&hash_ref, &fixture.bundle)
                .unwrap();

            let start = Instant::now();
            let group = join(&provider, &fixture.welcome);
            total += start.elapsed();
            drop(group);
        }
        total
    }

    fn encrypt(&mut self, iters: u64) -> Duration {
        let (alice, _) = self.chat();
        let text = vec![0x5a; MESSAGE_LEN];
        let start = Instant::now();
        for _ in 0..iters {
            black_box(alice.send(&text));
        }
        start.elapsed()
    }

    fn decrypt(&mut self, iters: u64) -> Duration {
        // Bob sends (only here), Alice receives in order.
        let (alice, bob) = self.chat();
        let text = vec![0xa5; MESSAGE_LEN];
        let messages: Vec<Vec<u8>> = (0..iters).map(|_| bob.send(&text)).collect();
        let start = Instant::now();
        for m in &messages {
            black_box(alice.process(m));
        }
        start.elapsed()
    }
}

/// Every provider on every suite it supports.
fn fixtures() -> Vec<Box<dyn Bench>> {
    let mut all: Vec<Box<dyn Bench>> = Vec::new();
    for cs in [SUITE_0001, SUITE_004D, SUITE_004F, SUITE_0052] {
        all.push(Box::new(Fixture::<Ours>::new(cs)));
        all.push(Box::new(Fixture::<OursMem>::new(cs)));
        all.push(Box::new(Fixture::<OursCold>::new(cs)));
        if cs != SUITE_004D {
            all.push(Box::new(Fixture::<RustCrypto>::new(cs)));
        }
        if cs != SUITE_0052 {
            all.push(Box::new(Fixture::<Libcrux>::new(cs)));
        }
    }
    all
}

fn suite_name(cs: Ciphersuite) -> String {
    format!("0x{:04X}", u16::from(cs))
}

/// One criterion group running `op` on every fixture that takes part.
fn group(
    c: &mut Criterion,
    fixtures: &mut [Box<dyn Bench>],
    name: &str,
    cold_too: bool,
    mut op: impl FnMut(&mut dyn Bench, u64) -> Duration,
) {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    for f in fixtures.iter_mut() {
        if !(f.in_all_groups() || cold_too) {
            continue;
        }
        let id = BenchmarkId::new(f.provider(), suite_name(f.suite()));
        g.bench_function(id, |b| b.iter_custom(|iters| op(f.as_mut(), iters)));
    }
    g.finish();
}

fn mls(c: &mut Criterion) {
    let mut all = fixtures();
    group(c, &mut all, "key_package", false, |f, i| f.key_package(i));
    for n in [1, 16, 128] {
        group(c, &mut all, &format!("create_add/{n}"), false, |f, i| {
            f.create_add(n, i)
        });
    }
    // Processing before self-updating: it keeps the receiver in step with the committer.
    group(c, &mut all, "process/sparse", false, |f, i| {
        f.process(Tree::Sparse, i)
    });
    group(c, &mut all, "join_129", false, |f, i| f.join(i));
    group(c, &mut all, "self_update/sparse", true, |f, i| {
        f.self_update(Tree::Sparse, i)
    });
    group(c, &mut all, "process/populated", false, |f, i| {
        f.process(Tree::Populated, i)
    });
    group(c, &mut all, "self_update/populated", true, |f, i| {
        f.self_update(Tree::Populated, i)
    });
    group(c, &mut all, "app_encrypt_1KiB", false, |f, i| f.encrypt(i));
    group(c, &mut all, "app_decrypt_1KiB", false, |f, i| f.decrypt(i));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = mls
}
criterion_main!(benches);
