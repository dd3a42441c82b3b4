//! A small MLS test harness: clients on any OpenMLS provider, driven through one object-safe
//! trait so that a group can mix our provider with OpenMLS's own. Messages travel as bytes
//! (TLS-serialized), as they would on a network.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::signatures::{Signer, SignerError};
use pqmls_provider::SignatureKeyPair;

/// Our provider as the tests use it: with its own storage, SQLite (in memory here).
pub type OurProvider = pqmls_provider::Provider<pqmls_provider::SqliteStorage>;

/// A fresh instance of our provider.
pub fn our_provider() -> OurProvider {
    our_provider_with(pqmls_provider::CryptoConfig::default())
}

/// A fresh instance of our provider with the given crypto settings.
pub fn our_provider_with(config: pqmls_provider::CryptoConfig) -> OurProvider {
    pqmls_provider::Provider::from_parts(
        pqmls_provider::PqCrypto::with_config(config).unwrap(),
        pqmls_provider::SqliteStorage::open_in_memory().unwrap(),
    )
}

/// The signing key of a client: ours, or raw bytes signed through the client's provider.
pub enum ClientSigner {
    Ours(SignatureKeyPair),
    Raw {
        scheme: SignatureScheme,
        private: Vec<u8>,
        public: Vec<u8>,
    },
}

struct CallSigner<'a, C: OpenMlsCrypto> {
    crypto: &'a C,
    signer: &'a ClientSigner,
}

impl<C: OpenMlsCrypto> Signer for CallSigner<'_, C> {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        match self.signer {
            ClientSigner::Ours(kp) => kp.sign(payload),
            ClientSigner::Raw {
                scheme, private, ..
            } => self
                .crypto
                .sign(*scheme, payload, private)
                .map_err(SignerError::CryptoError),
        }
    }

    fn signature_scheme(&self) -> SignatureScheme {
        match self.signer {
            ClientSigner::Ours(kp) => kp.scheme(),
            ClientSigner::Raw { scheme, .. } => *scheme,
        }
    }
}

/// What processing a message gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Application(Vec<u8>),
    Commit,
    Removed,
    Proposal,
}

/// One MLS client in one group, behind an object-safe interface.
pub trait Peer {
    fn name(&self) -> &str;
    fn provider_name(&self) -> &'static str;
    /// A fresh serialized KeyPackage (MlsMessage).
    fn key_package(&mut self) -> Vec<u8>;
    fn create_group(&mut self);
    fn join(&mut self, welcome: &[u8]);
    fn try_join(&mut self, welcome: &[u8]) -> Result<(), String>;
    /// Adds members; returns (commit, welcome); the own commit is merged.
    fn add(&mut self, key_packages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>);
    fn self_update(&mut self) -> Vec<u8>;
    fn remove(&mut self, leaves: &[u32]) -> Vec<u8>;
    fn send(&mut self, msg: &[u8]) -> Vec<u8>;
    fn process(&mut self, msg: &[u8]) -> Outcome;
    fn try_process(&mut self, msg: &[u8]) -> Result<Outcome, String>;
    fn epoch(&self) -> u64;
    fn group_id(&self) -> Vec<u8>;
    fn epoch_authenticator(&self) -> Vec<u8>;
    fn exporter(&self) -> Vec<u8>;
    fn leaf_index(&self) -> u32;
    fn leaf_of(&self, name: &str) -> Option<u32>;
    fn member_count(&self) -> usize;
    fn leave_group_state(&mut self);
}

pub struct Client<P: OpenMlsProvider> {
    pub name: String,
    pub provider_name: &'static str,
    pub provider: P,
    pub ciphersuite: Ciphersuite,
    pub signer: ClientSigner,
    pub credential: CredentialWithKey,
    pub group: Option<MlsGroup>,
}

fn ser(m: &MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().unwrap()
}

/// Leaf capabilities naming the group's suite (OpenMLS's defaults list only some suites).
pub fn capabilities(cs: Ciphersuite) -> Capabilities {
    Capabilities::new(None, Some(&[cs]), None, None, None)
}

pub fn group_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build()
}

impl<P: OpenMlsProvider> Client<P> {
    /// A client whose signing key comes from its own provider's crypto.
    pub fn new_raw(
        name: &str,
        provider_name: &'static str,
        provider: P,
        ciphersuite: Ciphersuite,
    ) -> Self {
        let scheme = ciphersuite.signature_algorithm();
        let (private, public) = provider.crypto().signature_key_gen(scheme).unwrap();
        let signer = ClientSigner::Raw {
            scheme,
            private,
            public: public.clone(),
        };
        Self::with_signer(name, provider_name, provider, ciphersuite, signer, public)
    }

    /// A client with our `SignatureKeyPair`.
    pub fn new_ours(name: &str, provider: P, ciphersuite: Ciphersuite) -> Self {
        let kp = SignatureKeyPair::generate(ciphersuite.signature_algorithm()).unwrap();
        let public = kp.public().to_vec();
        Self::with_signer(
            name,
            "pqmls",
            provider,
            ciphersuite,
            ClientSigner::Ours(kp),
            public,
        )
    }

    pub fn with_signer(
        name: &str,
        provider_name: &'static str,
        provider: P,
        ciphersuite: Ciphersuite,
        signer: ClientSigner,
        public: Vec<u8>,
    ) -> Self {
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: public.into(),
        };
        Client {
            name: name.to_string(),
            provider_name,
            provider,
            ciphersuite,
            signer,
            credential,
            group: None,
        }
    }

    fn signer(&self) -> CallSigner<'_, P::CryptoProvider> {
        CallSigner {
            crypto: self.provider.crypto(),
            signer: &self.signer,
        }
    }

    pub fn group(&self) -> &MlsGroup {
        self.group.as_ref().expect("in a group")
    }

    fn group_mut_and(&mut self) -> (&mut MlsGroup, &P, CallSigner<'_, P::CryptoProvider>) {
        let signer = CallSigner {
            crypto: self.provider.crypto(),
            signer: &self.signer,
        };
        (
            self.group.as_mut().expect("in a group"),
            &self.provider,
            signer,
        )
    }
}

impl<P: OpenMlsProvider> Peer for Client<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider_name(&self) -> &'static str {
        self.provider_name
    }

    fn key_package(&mut self) -> Vec<u8> {
        let signer = self.signer();
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(capabilities(self.ciphersuite))
            .build(
                self.ciphersuite,
                &self.provider,
                &signer,
                self.credential.clone(),
            )
            .unwrap();
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .unwrap()
    }

    fn create_group(&mut self) {
        let signer = self.signer();
        let group = MlsGroup::builder()
            .ciphersuite(self.ciphersuite)
            .use_ratchet_tree_extension(true)
            .with_capabilities(capabilities(self.ciphersuite))
            .build(&self.provider, &signer, self.credential.clone())
            .unwrap();
        self.group = Some(group);
    }

    fn try_join(&mut self, welcome: &[u8]) -> Result<(), String> {
        let msg = MlsMessageIn::tls_deserialize_exact(welcome).map_err(|e| format!("{e:?}"))?;
        let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
            return Err("not a welcome".into());
        };
        let staged =
            StagedWelcome::new_from_welcome(&self.provider, &group_config(), welcome, None)
                .map_err(|e| format!("{e:?}"))?;
        self.group = Some(
            staged
                .into_group(&self.provider)
                .map_err(|e| format!("{e:?}"))?,
        );
        Ok(())
    }

    fn join(&mut self, welcome: &[u8]) {
        let msg = MlsMessageIn::tls_deserialize_exact(welcome).unwrap();
        let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
            panic!("not a welcome")
        };
        let staged =
            StagedWelcome::new_from_welcome(&self.provider, &group_config(), welcome, None)
                .unwrap();
        self.group = Some(staged.into_group(&self.provider).unwrap());
    }

    fn add(&mut self, key_packages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
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
        let (group, provider, signer) = self.group_mut_and();
        let (commit, welcome, _) = group.add_members(provider, &signer, &kps).unwrap();
        group.merge_pending_commit(provider).unwrap();
        (ser(&commit), ser(&welcome))
    }

    fn self_update(&mut self) -> Vec<u8> {
        let (group, provider, signer) = self.group_mut_and();
        let bundle = group
            .self_update(provider, &signer, LeafNodeParameters::default())
            .unwrap();
        group.merge_pending_commit(provider).unwrap();
        ser(bundle.commit())
    }

    fn remove(&mut self, leaves: &[u32]) -> Vec<u8> {
        let idx: Vec<LeafNodeIndex> = leaves.iter().map(|i| LeafNodeIndex::new(*i)).collect();
        let (group, provider, signer) = self.group_mut_and();
        let (commit, _, _) = group.remove_members(provider, &signer, &idx).unwrap();
        group.merge_pending_commit(provider).unwrap();
        ser(&commit)
    }

    fn send(&mut self, msg: &[u8]) -> Vec<u8> {
        let (group, provider, signer) = self.group_mut_and();
        ser(&group.create_message(provider, &signer, msg).unwrap())
    }

    fn process(&mut self, msg: &[u8]) -> Outcome {
        let name = self.name.clone();
        self.try_process(msg)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn try_process(&mut self, msg: &[u8]) -> Result<Outcome, String> {
        let m = MlsMessageIn::tls_deserialize_exact(msg).map_err(|e| format!("decode: {e:?}"))?;
        let pm = m
            .try_into_protocol_message()
            .map_err(|e| format!("not a protocol message: {e:?}"))?;
        let (group, provider, _) = self.group_mut_and();
        let processed = group
            .process_message(provider, pm)
            .map_err(|e| format!("process: {e:?}"))?;
        Ok(match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(a) => Outcome::Application(a.into_bytes()),
            ProcessedMessageContent::StagedCommitMessage(sc) => {
                let removed = sc.self_removed();
                group
                    .merge_staged_commit(provider, *sc)
                    .map_err(|e| format!("merge: {e:?}"))?;
                if removed {
                    Outcome::Removed
                } else {
                    Outcome::Commit
                }
            }
            _ => Outcome::Proposal,
        })
    }

    fn epoch(&self) -> u64 {
        self.group().epoch().as_u64()
    }

    fn group_id(&self) -> Vec<u8> {
        self.group().group_id().as_slice().to_vec()
    }

    fn epoch_authenticator(&self) -> Vec<u8> {
        self.group().epoch_authenticator().as_slice().to_vec()
    }

    fn exporter(&self) -> Vec<u8> {
        self.group()
            .export_secret(self.provider.crypto(), "test", b"ctx", 32)
            .unwrap()
    }

    fn leaf_index(&self) -> u32 {
        self.group().own_leaf_index().u32()
    }

    fn leaf_of(&self, name: &str) -> Option<u32> {
        self.group().members().find_map(|m| {
            let c = BasicCredential::try_from(m.credential).ok()?;
            (c.identity() == name.as_bytes()).then_some(m.index.u32())
        })
    }

    fn member_count(&self) -> usize {
        self.group().members().count()
    }

    fn leave_group_state(&mut self) {
        if let Some(mut g) = self.group.take() {
            g.delete(self.provider.storage()).unwrap();
        }
    }
}

/// Checks that all `peers` (indices into `all`) agree on the epoch, its authenticator and
/// an exported secret.
pub fn assert_agree(all: &[Box<dyn Peer>], peers: &[usize], context: &str) {
    let first = &all[peers[0]];
    for &i in &peers[1..] {
        let p = &all[i];
        assert_eq!(
            p.epoch(),
            first.epoch(),
            "{context}: epoch of {} vs {}",
            p.name(),
            first.name()
        );
        assert_eq!(
            p.epoch_authenticator(),
            first.epoch_authenticator(),
            "{context}: epoch authenticator of {} ({}) vs {} ({})",
            p.name(),
            p.provider_name(),
            first.name(),
            first.provider_name()
        );
        assert_eq!(
            p.exporter(),
            first.exporter(),
            "{context}: exporter of {}",
            p.name()
        );
        assert_eq!(
            p.member_count(),
            first.member_count(),
            "{context}: members of {}",
            p.name()
        );
    }
}

/// Delivers `msg` from `from` to every other peer in `to` and checks each outcome.
pub fn deliver(all: &mut [Box<dyn Peer>], from: usize, to: &[usize], msg: &[u8], expect: &Outcome) {
    for &i in to {
        if i == from {
            continue;
        }
        let got = all[i].process(msg);
        assert_eq!(
            &got,
            expect,
            "{} processing a message of {}",
            all[i].name(),
            all[from].name()
        );
    }
}

/// Every member in `members` sends a message that all others decrypt.
pub fn chat_round(all: &mut [Box<dyn Peer>], members: &[usize], tag: &str) {
    for &s in members {
        let text = format!("{tag}: hello from {}", all[s].name()).into_bytes();
        let ct = all[s].send(&text);
        deliver(all, s, members, &ct, &Outcome::Application(text.clone()));
    }
}

/// `committer` self-updates; everyone else processes it; all agree.
pub fn update_round(all: &mut [Box<dyn Peer>], members: &[usize], committer: usize, tag: &str) {
    let commit = all[committer].self_update();
    deliver(all, committer, members, &commit, &Outcome::Commit);
    assert_agree(
        all,
        members,
        &format!("{tag}: after update by {}", all[committer].name()),
    );
}

/// `adder` adds `new` (fresh key packages); members process the commit, the new ones join.
pub fn add_round(
    all: &mut [Box<dyn Peer>],
    members: &mut Vec<usize>,
    adder: usize,
    new: &[usize],
    tag: &str,
) {
    let kps: Vec<Vec<u8>> = new.iter().map(|&i| all[i].key_package()).collect();
    let (commit, welcome) = all[adder].add(&kps);
    let old = members.clone();
    deliver(all, adder, &old, &commit, &Outcome::Commit);
    for &i in new {
        all[i].join(&welcome);
        members.push(i);
    }
    assert_agree(
        all,
        members,
        &format!("{tag}: after {} added {:?}", all[adder].name(), new),
    );
}

/// `remover` removes `gone`; the rest process it; the removed see they were removed.
pub fn remove_round(
    all: &mut [Box<dyn Peer>],
    members: &mut Vec<usize>,
    remover: usize,
    gone: &[usize],
    tag: &str,
) {
    let leaves: Vec<u32> = gone
        .iter()
        .map(|&g| all[remover].leaf_of(all[g].name()).expect("member"))
        .collect();
    let commit = all[remover].remove(&leaves);
    for &i in members.iter() {
        if i == remover {
            continue;
        }
        let expect = if gone.contains(&i) {
            Outcome::Removed
        } else {
            Outcome::Commit
        };
        let got = all[i].process(&commit);
        assert_eq!(
            got,
            expect,
            "{} processing removal by {}",
            all[i].name(),
            all[remover].name()
        );
    }
    members.retain(|m| !gone.contains(m));
    for &g in gone {
        all[g].leave_group_state();
    }
    assert_agree(
        all,
        members,
        &format!("{tag}: after {} removed {:?}", all[remover].name(), gone),
    );
}
