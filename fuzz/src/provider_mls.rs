//! `provider_mls_process`: arbitrary MLS messages, Welcomes and KeyPackages processed by
//! OpenMLS 0.9 on our provider ([`pqmls_provider::Provider`] over OpenMLS's in-memory
//! storage), against a live group on suite 0x004F
//! (`MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519`). Nothing may panic; OpenMLS
//! returning errors is fine.
//!
//! # The fixture
//! [`Fixture::get`] builds, once per process, a group of three members (alice, who created
//! it, bob and carol, two epochs in: alice's add, then bob's self-update) and a fourth
//! client, dave, who holds a KeyPackage but is not a member, and keeps each client's
//! storage as a map of bytes. Every input starts from fresh copies of those maps, so inputs
//! never see each other's state.
//!
//! The fixture is built with [`DetProvider`]: our [`PqCrypto`] for every operation except
//! randomness (a SHA-512 counter generator seeded from a label) and `hpke_seal` (our
//! [`hpke::setup_base_sender_derand`] with encapsulation randomness from that generator);
//! signing keys come from fixed seeds and every leaf lifetime is fixed
//! ([`NOT_BEFORE`]..[`NOT_AFTER`]). So the fixture is the same in every process, and the seed
//! corpus, written by `tests/gen_corpus.rs` from the same fixture, holds real messages of
//! this group. The inputs themselves are processed with the plain [`Provider`].

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::tls_codec::{SecretVLBytes, VLBytes};
use openmls::prelude::*;
use openmls_memory_storage::MemoryStorage;
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::random::OpenMlsRand;
use openmls_traits::types::{
    CryptoError, ExporterSecret, HashType, HpkeCiphertext, HpkeConfig, HpkeKeyPair, KemOutput,
};
use pqmls_provider::hpke::{self, Suite};
use pqmls_provider::{PqCrypto, Provider, SignatureKeyPair};
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};

/// The group's cipher suite, 0x004F.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;
/// The group's id.
pub const GROUP_ID: &[u8] = b"pqmls-fuzz provider_mls_process group";
/// `not_before` of every leaf lifetime in the fixture (2023-11-14).
pub const NOT_BEFORE: u64 = 1_700_000_000;
/// `not_after` of every leaf lifetime in the fixture (2100-01-01), so that the seed corpus
/// does not expire.
pub const NOT_AFTER: u64 = 4_102_444_800;

/// Client indices into [`NAMES`].
pub const ALICE: usize = 0;
/// Bob, a member.
pub const BOB: usize = 1;
/// Carol, a member.
pub const CAROL: usize = 2;
/// Dave, not a member; holds the KeyPackage [`Fixture::dave_key_package`].
pub const DAVE: usize = 3;
/// Eve, not in the fixture at all ([`Fixture::stranger`]).
pub const EVE: usize = 4;
/// The clients' names (their credentials' identities).
pub const NAMES: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];

/// Mode (first byte mod 3): the rest is MLS messages for a member.
pub const MODE_MESSAGE: u8 = 0;
/// Mode: the rest is a Welcome for dave, then messages for his new group.
pub const MODE_WELCOME: u8 = 1;
/// Mode: the rest is a KeyPackage alice adds.
pub const MODE_KEY_PACKAGE: u8 = 2;
/// At most this many messages are processed per input.
pub const MAX_MESSAGES: usize = 4;

/// The leaf lifetime of every fixture leaf.
pub fn lifetime() -> Lifetime {
    Lifetime::init(NOT_BEFORE, NOT_AFTER)
}

/// Leaf capabilities naming the group's suite (OpenMLS's defaults list only some suites).
pub fn capabilities() -> Capabilities {
    Capabilities::new(None, Some(&[CIPHERSUITE]), None, None, None)
}

/// The join configuration of every client.
pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build()
}

// ---------------------------------------------------------------------------------------
// A deterministic provider for building the fixture and the seed corpus
// ---------------------------------------------------------------------------------------

/// Deterministic bytes: SHA-512(`key` || counter) blocks. For building fixtures only.
struct DetRng {
    key: [u8; 64],
    counter: u64,
}

impl DetRng {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(64) {
            let block = Sha512::new()
                .chain_update(self.key)
                .chain_update(self.counter.to_le_bytes())
                .finalize();
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

/// [`PqCrypto`] with deterministic randomness (see the module docs). Not for real use:
/// its randomness is a function of a public label.
pub struct DetCrypto {
    inner: PqCrypto,
    rng: Mutex<DetRng>,
}

impl DetCrypto {
    /// Randomness from `label`.
    pub fn new(label: &str) -> Self {
        DetCrypto {
            inner: PqCrypto::new().unwrap(),
            rng: Mutex::new(DetRng {
                key: Sha512::digest(label.as_bytes()).into(),
                counter: 0,
            }),
        }
    }

    fn bytes(&self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        self.rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fill(&mut out);
        out
    }

    /// SetupBaseS with encapsulation randomness from the generator.
    fn sender(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
    ) -> Result<(Vec<u8>, hpke::Context), CryptoError> {
        let suite = hpke_suite(config);
        let ikm_e = self.bytes(crate::provider_hpke::eseed_len(suite.kem));
        hpke::setup_base_sender_derand(suite, pk_r, info, &ikm_e)
            .map_err(|_| CryptoError::SenderSetupError)
    }
}

/// The HPKE suite of an OpenMLS HPKE configuration (inverse of
/// [`crate::provider_hpke::hpke_config`]).
fn hpke_suite(config: HpkeConfig) -> Suite {
    // Selectors 0..96 pick each of the 8 x 3 x 4 suites once.
    (0..96u8)
        .map(crate::provider_hpke::suite_of)
        .find(|s| {
            let HpkeConfig(kem, kdf, aead) = crate::provider_hpke::hpke_config(*s);
            (kem, kdf, aead) == (config.0, config.1, config.2)
        })
        .unwrap()
}

impl OpenMlsRand for DetCrypto {
    type Error = std::convert::Infallible;

    fn random_array<const N: usize>(&self) -> Result<[u8; N], Self::Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes(N));
        Ok(out)
    }

    fn random_vec(&self, len: usize) -> Result<Vec<u8>, Self::Error> {
        Ok(self.bytes(len))
    }
}

impl OpenMlsCrypto for DetCrypto {
    fn supports(&self, ciphersuite: Ciphersuite) -> Result<(), CryptoError> {
        self.inner.supports(ciphersuite)
    }

    fn supported_ciphersuites(&self) -> Vec<Ciphersuite> {
        self.inner.supported_ciphersuites()
    }

    fn hkdf_extract(
        &self,
        hash_type: HashType,
        salt: &[u8],
        ikm: &[u8],
    ) -> Result<SecretVLBytes, CryptoError> {
        self.inner.hkdf_extract(hash_type, salt, ikm)
    }

    fn hmac(
        &self,
        hash_type: HashType,
        key: &[u8],
        message: &[u8],
    ) -> Result<SecretVLBytes, CryptoError> {
        self.inner.hmac(hash_type, key, message)
    }

    fn hkdf_expand(
        &self,
        hash_type: HashType,
        prk: &[u8],
        info: &[u8],
        okm_len: usize,
    ) -> Result<SecretVLBytes, CryptoError> {
        self.inner.hkdf_expand(hash_type, prk, info, okm_len)
    }

    fn hash(&self, hash_type: HashType, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.hash(hash_type, data)
    }

    fn aead_encrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        data: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.inner.aead_encrypt(alg, key, data, nonce, aad)
    }

    fn aead_decrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        ct_tag: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.inner.aead_decrypt(alg, key, ct_tag, nonce, aad)
    }

    fn signature_key_gen(&self, _alg: SignatureScheme) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        // The fixture's signing keys come from fixed seeds; OpenMLS never asks for one.
        Err(CryptoError::UnsupportedSignatureScheme)
    }

    fn verify_signature(
        &self,
        alg: SignatureScheme,
        data: &[u8],
        pk: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner.verify_signature(alg, data, pk, signature)
    }

    fn sign(&self, alg: SignatureScheme, data: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.sign(alg, data, key)
    }

    fn hpke_seal(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        aad: &[u8],
        ptxt: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError> {
        let (enc, mut ctx) = self.sender(config, pk_r, info)?;
        let ct = ctx
            .seal(aad, ptxt)
            .map_err(|_| CryptoError::HpkeEncryptionError)?;
        Ok(HpkeCiphertext {
            kem_output: VLBytes::from(enc),
            ciphertext: VLBytes::from(ct),
        })
    }

    fn hpke_open(
        &self,
        config: HpkeConfig,
        input: &HpkeCiphertext,
        sk_r: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.inner.hpke_open(config, input, sk_r, info, aad)
    }

    fn hpke_setup_sender_and_export(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<(KemOutput, ExporterSecret), CryptoError> {
        let (enc, ctx) = self.sender(config, pk_r, info)?;
        let secret = ctx
            .export(exporter_context, exporter_length)
            .map_err(|_| CryptoError::ExporterError)?;
        Ok((enc, secret.to_vec().into()))
    }

    fn hpke_setup_receiver_and_export(
        &self,
        config: HpkeConfig,
        enc: &[u8],
        sk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<ExporterSecret, CryptoError> {
        self.inner.hpke_setup_receiver_and_export(
            config,
            enc,
            sk_r,
            info,
            exporter_context,
            exporter_length,
        )
    }

    fn derive_hpke_keypair(
        &self,
        config: HpkeConfig,
        ikm: &[u8],
    ) -> Result<HpkeKeyPair, CryptoError> {
        self.inner.derive_hpke_keypair(config, ikm)
    }
}

/// [`DetCrypto`] and an in-memory storage as an OpenMLS provider.
pub struct DetProvider {
    crypto: DetCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for DetProvider {
    type CryptoProvider = DetCrypto;
    type RandProvider = DetCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &MemoryStorage {
        &self.storage
    }

    fn crypto(&self) -> &DetCrypto {
        &self.crypto
    }

    fn rand(&self) -> &DetCrypto {
        &self.crypto
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// What one processing step gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An application message, decrypted.
    Application(Vec<u8>),
    /// A proposal, now queued.
    Proposal,
    /// A commit, merged.
    Commit,
    /// The client's own commit or private message, recognised.
    Own,
    /// A Welcome, joined.
    Joined,
    /// A KeyPackage, added (and the commit processed by bob).
    Added,
}

/// One MLS client on provider `P`, with its signing key and (if a member) its group.
pub struct Client<P: OpenMlsProvider> {
    /// The provider (crypto, randomness, this client's storage).
    pub provider: P,
    /// The signing key (from a fixed seed).
    pub signer: SignatureKeyPair,
    /// The credential with the signing key.
    pub credential: CredentialWithKey,
    /// The group, if a member.
    pub group: Option<MlsGroup>,
}

/// The signing key of client `who` (Ed25519, from a fixed seed).
fn signer(who: usize) -> SignatureKeyPair {
    let seed = Sha512::digest(format!(
        "pqmls-fuzz provider_mls_process signer {}",
        NAMES[who]
    ));
    SignatureKeyPair::from_seed(CIPHERSUITE.signature_algorithm(), &seed[..32]).unwrap()
}

fn ser(m: &MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().unwrap()
}

impl<P: OpenMlsProvider> Client<P> {
    /// Client `who` on `provider`, with `storage`'s group loaded if there is one.
    fn new(who: usize, provider: P) -> Self {
        let signer = signer(who);
        let credential = CredentialWithKey {
            credential: BasicCredential::new(NAMES[who].as_bytes().to_vec()).into(),
            signature_key: signer.public().to_vec().into(),
        };
        let group = MlsGroup::load(provider.storage(), &GroupId::from_slice(GROUP_ID)).unwrap();
        Client {
            provider,
            signer,
            credential,
            group,
        }
    }

    /// A fresh KeyPackage, serialized as an MlsMessage (its private keys go to storage).
    pub fn key_package(&mut self) -> Vec<u8> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(capabilities())
            .key_package_lifetime(lifetime())
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .unwrap();
        ser(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    /// Creates the group (fixed id).
    pub fn create_group(&mut self) {
        let group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(GROUP_ID))
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .with_capabilities(capabilities())
            .lifetime(lifetime())
            .build(&self.provider, &self.signer, self.credential.clone())
            .unwrap();
        self.group = Some(group);
    }

    /// Adds the serialized KeyPackages; merges; returns `(commit, welcome)`.
    pub fn add(&mut self, key_packages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let kps: Vec<KeyPackage> = key_packages
            .iter()
            .map(|b| {
                let kp = key_package_in(b).unwrap();
                kp.validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .unwrap()
            })
            .collect();
        let group = self.group.as_mut().unwrap();
        let (commit, welcome, _) = group
            .add_members(&self.provider, &self.signer, &kps)
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        (ser(&commit), ser(&welcome))
    }

    /// A self-update commit, merged.
    pub fn self_update(&mut self) -> Vec<u8> {
        let group = self.group.as_mut().unwrap();
        let bundle = group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        ser(bundle.commit())
    }

    /// A commit removing `leaves`, merged.
    pub fn remove(&mut self, leaves: &[u32]) -> Vec<u8> {
        let idx: Vec<LeafNodeIndex> = leaves.iter().map(|i| LeafNodeIndex::new(*i)).collect();
        let group = self.group.as_mut().unwrap();
        let (commit, _, _) = group
            .remove_members(&self.provider, &self.signer, &idx)
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        ser(&commit)
    }

    /// A standalone proposal to remove `leaf` (queued in the own proposal store).
    pub fn propose_remove(&mut self, leaf: u32) -> Vec<u8> {
        let group = self.group.as_mut().unwrap();
        let (proposal, _) = group
            .propose_remove_member(&self.provider, &self.signer, LeafNodeIndex::new(leaf))
            .unwrap();
        ser(&proposal)
    }

    /// A standalone proposal to add the serialized KeyPackage (queued in the own proposal
    /// store).
    pub fn propose_add(&mut self, key_package: &[u8]) -> Vec<u8> {
        let kp = key_package_in(key_package)
            .unwrap()
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .unwrap();
        let group = self.group.as_mut().unwrap();
        let (proposal, _) = group
            .propose_add_member(&self.provider, &self.signer, &kp)
            .unwrap();
        ser(&proposal)
    }

    /// A commit to the queued proposals, merged; returns `(commit, welcome)` (the Welcome
    /// empty if nobody was added).
    pub fn commit_pending(&mut self) -> (Vec<u8>, Vec<u8>) {
        let group = self.group.as_mut().unwrap();
        let (commit, welcome, _) = group
            .commit_to_pending_proposals(&self.provider, &self.signer)
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        (ser(&commit), welcome.as_ref().map(ser).unwrap_or_default())
    }

    /// An application message.
    pub fn send(&mut self, msg: &[u8]) -> Vec<u8> {
        let group = self.group.as_mut().unwrap();
        ser(&group
            .create_message(&self.provider, &self.signer, msg)
            .unwrap())
    }

    /// Processes one message: decrypts, queues a proposal, merges a commit.
    ///
    /// # Errors
    /// Whatever OpenMLS says, as text.
    pub fn process(&mut self, msg: MlsMessageIn) -> Result<Step, String> {
        let pm = msg
            .try_into_protocol_message()
            .map_err(|e| format!("not a protocol message: {e:?}"))?;
        let Some(group) = self.group.as_mut() else {
            return Err("not in a group".into());
        };
        let processed = group
            .process_message(&self.provider, pm)
            .map_err(|e| format!("process: {e:?}"))?;
        Ok(match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(a) => Step::Application(a.into_bytes()),
            ProcessedMessageContent::ProposalMessage(p)
            | ProcessedMessageContent::ExternalJoinProposalMessage(p) => {
                group
                    .store_pending_proposal(self.provider.storage(), *p)
                    .map_err(|e| format!("store proposal: {e:?}"))?;
                Step::Proposal
            }
            ProcessedMessageContent::StagedCommitMessage(sc) => {
                group
                    .merge_staged_commit(&self.provider, *sc)
                    .map_err(|e| format!("merge: {e:?}"))?;
                Step::Commit
            }
            ProcessedMessageContent::OwnPendingCommit
            | ProcessedMessageContent::OwnPrivateMessage => Step::Own,
        })
    }

    /// Joins from a Welcome (the KeyPackage's private keys must be in storage).
    ///
    /// # Errors
    /// Whatever OpenMLS says, as text.
    pub fn join(&mut self, welcome: Welcome) -> Result<Step, String> {
        let staged = StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None)
            .map_err(|e| format!("welcome: {e:?}"))?;
        let group = staged
            .into_group(&self.provider)
            .map_err(|e| format!("into group: {e:?}"))?;
        self.group = Some(group);
        Ok(Step::Joined)
    }

    /// The storage's contents.
    fn snapshot(&self) -> HashMap<Vec<u8>, Vec<u8>>
    where
        P: OpenMlsProvider<StorageProvider = MemoryStorage>,
    {
        self.provider
            .storage()
            .values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The KeyPackage in a serialized MlsMessage.
fn key_package_in(bytes: &[u8]) -> Option<KeyPackageIn> {
    match MlsMessageIn::tls_deserialize_exact(bytes).ok()?.extract() {
        MlsMessageBodyIn::KeyPackage(kp) => Some(kp),
        _ => None,
    }
}

fn storage(values: &HashMap<Vec<u8>, Vec<u8>>) -> MemoryStorage {
    MemoryStorage {
        values: RwLock::new(values.clone()),
    }
}

// ---------------------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------------------

/// The group state every input starts from (see the module docs).
pub struct Fixture {
    storages: Vec<HashMap<Vec<u8>, Vec<u8>>>,
    /// Dave's KeyPackage (an MlsMessage); its private keys are in his storage.
    pub dave_key_package: Vec<u8>,
}

impl Fixture {
    /// The fixture, built on first use.
    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(Fixture::build)
    }

    fn build() -> Fixture {
        let mut c: Vec<Client<DetProvider>> = (0..NAMES.len())
            .map(|who| {
                Client::new(
                    who,
                    DetProvider {
                        crypto: DetCrypto::new(&format!("pqmls-fuzz fixture {}", NAMES[who])),
                        storage: MemoryStorage::default(),
                    },
                )
            })
            .collect();
        c[ALICE].create_group();
        let kps = vec![c[BOB].key_package(), c[CAROL].key_package()];
        let (_, welcome) = c[ALICE].add(&kps);
        for who in [BOB, CAROL] {
            c[who].join(welcome_in(&welcome).unwrap()).unwrap();
        }
        let update = c[BOB].self_update();
        for who in [ALICE, CAROL] {
            let step = c[who].process(message_in(&update)).unwrap();
            assert_eq!(step, Step::Commit);
        }
        let dave_key_package = c[DAVE].key_package();
        Fixture {
            storages: c.iter().map(Client::snapshot).collect(),
            dave_key_package,
        }
    }

    /// Client `who` on our [`Provider`], from a fresh copy of the fixture state.
    pub fn client(&self, who: usize) -> Client<Provider<MemoryStorage>> {
        let provider = Provider::from_parts(PqCrypto::new().unwrap(), storage(&self.storages[who]));
        Client::new(who, provider)
    }

    /// Eve, who is in no group and has an empty storage, on a [`DetProvider`] with
    /// randomness from `label`.
    pub fn stranger(label: &str) -> Client<DetProvider> {
        let provider = DetProvider {
            crypto: DetCrypto::new(label),
            storage: MemoryStorage::default(),
        };
        Client::new(EVE, provider)
    }

    /// Client `who` on a [`DetProvider`] with randomness from `label`, from a fresh copy of
    /// the fixture state: for writing seed inputs deterministically.
    pub fn det_client(&self, who: usize, label: &str) -> Client<DetProvider> {
        let provider = DetProvider {
            crypto: DetCrypto::new(label),
            storage: storage(&self.storages[who]),
        };
        Client::new(who, provider)
    }
}

/// Parses a serialized MlsMessage (panics on failure: for well-formed, own messages).
pub fn message_in(bytes: &[u8]) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(bytes).unwrap()
}

/// The Welcome in a serialized MlsMessage.
pub fn welcome_in(bytes: &[u8]) -> Option<Welcome> {
    match MlsMessageIn::tls_deserialize_exact(bytes).ok()?.extract() {
        MlsMessageBodyIn::Welcome(w) => Some(w),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// The body
// ---------------------------------------------------------------------------------------

/// Processes up to [`MAX_MESSAGES`] MlsMessages read back to back from `rest` as `client`;
/// stops at the first that does not parse or is rejected.
fn process_messages<P: OpenMlsProvider>(
    client: &mut Client<P>,
    mut rest: &[u8],
    steps: &mut Vec<Step>,
) {
    for _ in 0..MAX_MESSAGES {
        if rest.is_empty() {
            return;
        }
        let Ok(msg) = MlsMessageIn::tls_deserialize(&mut rest) else {
            return;
        };
        match client.process(msg) {
            Ok(step) => steps.push(step),
            Err(_) => return,
        }
    }
}

/// [`provider_mls_process`], returning the steps that succeeded (for the seed-corpus
/// checks in `tests/`).
pub fn process(data: &[u8]) -> Vec<Step> {
    let fixture = Fixture::get();
    let mut steps = Vec::new();
    let Some((&sel, rest)) = data.split_first() else {
        return steps;
    };
    match sel % 3 {
        MODE_MESSAGE => {
            let who = usize::from(sel / 3) % 3;
            let mut client = fixture.client(who);
            process_messages(&mut client, rest, &mut steps);
        }
        MODE_WELCOME => {
            let mut rest = rest;
            let Ok(msg) = MlsMessageIn::tls_deserialize(&mut rest) else {
                return steps;
            };
            let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
                return steps;
            };
            let mut dave = fixture.client(DAVE);
            if let Ok(step) = dave.join(welcome) {
                steps.push(step);
                process_messages(&mut dave, rest, &mut steps);
            }
        }
        _ => {
            let Ok(msg) = MlsMessageIn::tls_deserialize_exact(rest) else {
                return steps;
            };
            let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
                return steps;
            };
            let mut alice = fixture.client(ALICE);
            let Ok(kp) = kp.validate(alice.provider.crypto(), ProtocolVersion::Mls10) else {
                return steps;
            };
            let ours = rest == fixture.dave_key_package.as_slice();
            let group = alice.group.as_mut().unwrap();
            let Ok((commit, welcome, _)) = group.add_members(&alice.provider, &alice.signer, &[kp])
            else {
                assert!(!ours, "alice cannot add dave's key package");
                return steps;
            };
            group.merge_pending_commit(&alice.provider).unwrap();
            // What alice committed to, bob must accept; dave must be able to join.
            let mut bob = fixture.client(BOB);
            let step = bob.process(message_in(&ser(&commit)));
            assert_eq!(
                step,
                Ok(Step::Commit),
                "bob rejects alice's commit adding a KeyPackage alice validated"
            );
            if ours {
                let mut dave = fixture.client(DAVE);
                let welcome = welcome_in(&ser(&welcome)).unwrap();
                assert_eq!(dave.join(welcome), Ok(Step::Joined), "dave cannot join");
            }
            steps.push(Step::Added);
        }
    }
    steps
}

/// MLS processing of arbitrary input against the fixture group.
///
/// Input: `sel: u8`, then by `sel % 3`:
/// - [`MODE_MESSAGE`]: up to [`MAX_MESSAGES`] TLS-serialized MlsMessages back to back,
///   processed in order by member `(sel / 3) % 3` (alice, bob, carol); a proposal is
///   queued, a commit merged; stops at the first rejected message;
/// - [`MODE_WELCOME`]: an MlsMessage holding a Welcome, staged and joined by dave, then
///   messages for dave's new group as above;
/// - [`MODE_KEY_PACKAGE`]: an MlsMessage holding a KeyPackage (nothing after it), validated
///   and, if valid, added by alice; then bob must accept alice's commit, and if it was
///   dave's KeyPackage, dave must be able to join from the Welcome.
pub fn provider_mls_process(data: &[u8]) {
    process(data);
}
