//! Helpers shared by the SDK's test files on the simulated network: clients, waiting,
//! convergence, the wire format as an outsider sees it, and an outsider ("mallory") with an
//! MLS identity and provider of its own, who can build real MLS messages.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use pqmls::sim::{SimNetwork, SimTransport};
use pqmls::{Client, Config, GroupId, Inbox, InvitePolicy, Stats, Transport, UserId};
use pqmls_provider::{PqCrypto, Provider, SignatureKeyPair, SqliteStorage};
use pqmls_transport::Topic;

/// A test client's configuration: no periodic self-updates, invitations joined at once.
pub fn config(name: &str) -> Config {
    let mut c = Config::new(name);
    c.self_update_interval = None;
    c.invitations = InvitePolicy::Everyone;
    c
}

pub async fn client(net: &SimNetwork, c: Config) -> Client {
    let (t, inbox) = net.attach();
    Client::open(c, t, inbox).await.unwrap()
}

/// A test client and the transport the test controls (online, offline).
pub async fn client_on(net: &SimNetwork, c: Config) -> (Client, Arc<SimTransport>) {
    let (t, inbox) = net.attach();
    (Client::open(c, t.clone(), inbox).await.unwrap(), t)
}

/// The display names of a group's members, in leaf order.
pub async fn names(c: &Client, g: &GroupId) -> Vec<String> {
    c.members(g)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect()
}

/// Waits (virtual time, at most 60 s) until `f` holds.
pub async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..3000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until all clients agree on `epoch`, authenticator and members, nothing pending.
pub async fn converge(clients: &[&Client], g: &GroupId, epoch: u64) {
    until(&format!("convergence at epoch {epoch}"), async || {
        let mut first = None;
        for c in clients {
            let Ok(s) = c.status(g).await else {
                return false;
            };
            if s.pending_commit || s.epoch != epoch {
                return false;
            }
            match &first {
                None => first = Some((s.epoch_authenticator, s.members)),
                Some(f) => {
                    if *f != (s.epoch_authenticator, s.members) {
                        return false;
                    }
                }
            }
        }
        true
    })
    .await;
}

/// Waits until all clients agree on epoch, authenticator and members, whatever the epoch,
/// nothing pending and none holding a state it reported lost.
pub async fn converge_anywhere(what: &str, clients: &[&Client], g: &GroupId) {
    until(what, async || {
        let mut seen = None;
        for c in clients {
            let Ok(s) = c.status(g).await else {
                return false;
            };
            if s.pending_commit || s.lost_at.is_some() {
                return false;
            }
            let now = (s.epoch, s.epoch_authenticator, s.members);
            match &seen {
                None => seen = Some(now),
                Some(first) if *first != now => return false,
                Some(_) => {}
            }
        }
        true
    })
    .await;
}

/// The group of the first client and the others, invited in order.
pub async fn group(clients: &[&Client]) -> GroupId {
    let g = clients[0].create_group().await.unwrap();
    for (i, c) in clients.iter().enumerate().skip(1) {
        clients[0].invite(&g, &c.id()).await.unwrap();
        until("join", async || c.groups().await.unwrap().contains(&g)).await;
        converge(&clients[..=i], &g, i as u64).await;
    }
    g
}

pub fn group_topic(g: &GroupId) -> Topic {
    Topic::from_group_id(&[b"pqmls/group/v1/".as_slice(), g.as_bytes()].concat())
}

pub fn inbox_topic(user: &UserId) -> Topic {
    Topic::from_group_id(&[b"pqmls/inbox/v2/".as_slice(), user.as_bytes()].concat())
}

/// Postcard variant indices of the SDK's gossip envelope.
pub const HANDSHAKE: u8 = 0;
pub const APPLICATION: u8 = 1;
pub const WELCOME: u8 = 2;
pub const VOID: u8 = 3;
pub const VOTE: u8 = 4;
pub const AGAIN: u8 = 7;

/// `payload` wrapped as a copy published again (`Wire::Again`): the variant, an 8-byte
/// nonce, the payload's length and the payload.
pub fn again(payload: &[u8], nonce: u8) -> Vec<u8> {
    let mut out = vec![AGAIN];
    out.extend_from_slice(&[nonce; 8]);
    out.extend_from_slice(&leb128(payload.len()));
    out.extend_from_slice(payload);
    out
}

/// A request for the commit ending the epoch `tag` names (`Wire::Need`), as anyone who
/// saw the tag can make it: variant 5, the tag, the nonce (its first byte the attempt),
/// whether votes are wanted, the sender's clock (now, a LEB128 varint as postcard
/// writes a u64) and a MAC (`mac`: the outsider does not hold the epoch's key).
pub fn need(tag: &[u8], nonce: [u8; 8], votes: bool, mac: [u8; 16]) -> Vec<u8> {
    let mut out = vec![5];
    out.extend_from_slice(tag);
    out.extend_from_slice(&nonce);
    out.push(u8::from(votes));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    out.extend_from_slice(&leb128(now as usize));
    out.extend_from_slice(&mac);
    out
}

/// LEB128, as postcard writes lengths.
pub fn leb128(mut n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            v.push(b);
            return v;
        }
        v.push(b | 0x80);
    }
}

/// An envelope: variant, fixed prefix (the 32-byte priority claim of a commit, the auth tag
/// of application messages, the id of a withdrawal), then the bytes with a LEB128 length, as postcard writes it.
pub fn envelope(variant: u8, prefix: &[u8], mls: &[u8]) -> Vec<u8> {
    let mut v = vec![variant];
    v.extend_from_slice(prefix);
    v.extend_from_slice(&leb128(mls.len()));
    v.extend_from_slice(mls);
    v
}

/// (variant, prefix, MLS bytes) of an envelope.
pub fn open_envelope(payload: &[u8]) -> (u8, Vec<u8>, Vec<u8>) {
    let variant = payload[0];
    let prefix_len = match variant {
        HANDSHAKE | VOID => 32,
        APPLICATION | VOTE => 16,
        _ => 0,
    };
    let prefix = payload[1..1 + prefix_len].to_vec();
    let mut i = 1 + prefix_len;
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let b = payload[i];
        i += 1;
        n |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(payload.len(), i + n, "not an envelope");
    (variant, prefix, payload[i..].to_vec())
}

/// Reads the observer's inbox until a payload of `variant` on `topic` arrives.
pub async fn capture(inbox: &mut Inbox, topic: &Topic, variant: u8) -> Vec<u8> {
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = inbox.next().await.expect("observer inbox ended");
            if m.topic == *topic && m.data.first() == Some(&variant) {
                return m.data;
            }
        }
    })
    .await;
    r.expect("nothing captured")
}

/// The value of a signed directory entry (`PQD1`, scheme, key, seq, expiry, value, sig).
pub fn entry_value(blob: &[u8]) -> Vec<u8> {
    assert_eq!(&blob[..4], b"PQD1");
    let len = |at: usize| u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
    let key_len = len(6);
    let at = 6 + 4 + key_len + 16;
    blob[at + 4..at + 4 + len(at)].to_vec()
}

/// The key package in a user's directory slot (`"0"`, `"1"`, …, `"last-resort"`).
pub async fn key_package(t: &SimTransport, user: &UserId, slot: &str) -> KeyPackage {
    let blob = t
        .get(format!("pqmls/kp/v2/{user}/{slot}").into_bytes())
        .await
        .unwrap()
        .expect("no key package entry");
    let MlsMessageBodyIn::KeyPackage(kp) = MlsMessageIn::tls_deserialize_exact(entry_value(&blob))
        .unwrap()
        .extract()
    else {
        panic!("not a key package");
    };
    let crypto = PqCrypto::new().unwrap();
    kp.validate(&crypto, ProtocolVersion::Mls10).unwrap()
}

/// The reference of the key package in a user's directory slot.
pub async fn key_package_ref(t: &SimTransport, user: &UserId, slot: &str) -> Vec<u8> {
    let crypto = PqCrypto::new().unwrap();
    key_package(t, user, slot)
        .await
        .hash_ref(&crypto)
        .unwrap()
        .as_slice()
        .to_vec()
}

pub fn flip(mut v: Vec<u8>, at: usize) -> Vec<u8> {
    v[at] ^= 0x01;
    v
}

/// Sum of a counter over clients.
pub async fn total(clients: &[&Client], f: impl Fn(&Stats) -> u64) -> u64 {
    let mut n = 0;
    for c in clients {
        n += f(&c.stats().await);
    }
    n
}

/// Per-client values of a counter.
pub async fn each(clients: &[&Client], f: impl Fn(&Stats) -> u64) -> Vec<u64> {
    let mut v = Vec::new();
    for c in clients {
        v.push(f(&c.stats().await));
    }
    v
}

pub async fn publish(obs: &Arc<SimTransport>, topic: &Topic, payloads: &[Vec<u8>]) {
    for p in payloads {
        obs.publish(topic, p.clone()).await.unwrap();
    }
}

/// An outsider: an MLS identity and provider of its own and a bare attachment to the
/// network. It can build any MLS message a member of a group *it* made could, and put
/// anything on any topic, but holds no secret of anyone else's group.
pub struct Mallory {
    pub provider: Provider<SqliteStorage>,
    pub signer: SignatureKeyPair,
    pub credential: CredentialWithKey,
    pub transport: Arc<SimTransport>,
    pub inbox: Inbox,
}

pub const SUITE: Ciphersuite = pqmls::DEFAULT_SUITE;

impl Mallory {
    pub fn new(net: &SimNetwork, name: &str) -> Mallory {
        let provider = Provider::from_parts(
            PqCrypto::new().unwrap(),
            SqliteStorage::open_in_memory().unwrap(),
        );
        let signer = SignatureKeyPair::generate(SUITE.signature_algorithm()).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().to_vec().into(),
        };
        let (transport, inbox) = net.attach();
        Mallory {
            provider,
            signer,
            credential,
            transport,
            inbox,
        }
    }

    pub fn id(&self) -> UserId {
        UserId::of_key(SUITE.signature_algorithm(), self.signer.public())
    }

    /// A group of mallory's with the id `gid` (a victim's, read from any MLS framing); a
    /// previous one with that id is dropped.
    pub fn group_with_id(&self, gid: &GroupId) -> MlsGroup {
        let id = openmls::group::GroupId::from_slice(gid.as_bytes());
        if let Some(mut old) = MlsGroup::load(self.provider.storage(), &id).unwrap() {
            old.delete(self.provider.storage()).unwrap();
        }
        MlsGroup::builder()
            .with_group_id(openmls::group::GroupId::from_slice(gid.as_bytes()))
            .ciphersuite(SUITE)
            .use_ratchet_tree_extension(true)
            .with_capabilities(Capabilities::new(
                None,
                Some(&[SUITE]),
                Some(&[ExtensionType::LastResort]),
                None,
                None,
            ))
            .build(&self.provider, &self.signer, self.credential.clone())
            .unwrap()
    }

    /// Adds `kps` to `group`: the commit and the Welcome, as MLS bytes (the commit merged).
    pub fn add(&self, group: &mut MlsGroup, kps: &[KeyPackage]) -> (Vec<u8>, Vec<u8>) {
        let (commit, welcome, _) = group
            .add_members(&self.provider, &self.signer, kps)
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        (
            commit.tls_serialize_detached().unwrap(),
            welcome.tls_serialize_detached().unwrap(),
        )
    }

    /// A self-update commit in `group` (for its current epoch), as MLS bytes; merged.
    pub fn update(&self, group: &mut MlsGroup) -> Vec<u8> {
        let bundle = group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .unwrap();
        let bytes = bundle.commit().tls_serialize_detached().unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        bytes
    }

    /// An application message in `group`, as MLS bytes.
    pub fn message(&self, group: &mut MlsGroup, body: &[u8]) -> Vec<u8> {
        group
            .create_message(&self.provider, &self.signer, body)
            .unwrap()
            .tls_serialize_detached()
            .unwrap()
    }

    /// A key package of mallory's, as MLS bytes.
    pub fn key_package(&self) -> Vec<u8> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(Capabilities::new(
                None,
                Some(&[SUITE]),
                Some(&[ExtensionType::LastResort]),
                None,
                None,
            ))
            .build(SUITE, &self.provider, &self.signer, self.credential.clone())
            .unwrap();
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .unwrap()
    }

    /// A directory entry holding `value` under `key`, in the SDK's format, signed by
    /// mallory (valid in form, but mallory's key is not the owner's).
    pub fn entry(&self, key: &[u8], value: &[u8]) -> Vec<u8> {
        use openmls_traits::signatures::Signer as _;
        let mut body = b"PQD1".to_vec();
        body.extend_from_slice(&(SUITE.signature_algorithm() as u16).to_be_bytes());
        body.extend_from_slice(&(self.signer.public().len() as u32).to_be_bytes());
        body.extend_from_slice(self.signer.public());
        body.extend_from_slice(&1u64.to_be_bytes());
        body.extend_from_slice(&u64::MAX.to_be_bytes());
        body.extend_from_slice(&(value.len() as u32).to_be_bytes());
        body.extend_from_slice(value);
        let mut tbs = b"pqmls directory entry v1".to_vec();
        tbs.extend_from_slice(&(key.len() as u32).to_be_bytes());
        tbs.extend_from_slice(key);
        tbs.extend_from_slice(&body);
        let sig = self.signer.sign(&tbs).unwrap();
        body.extend_from_slice(&(sig.len() as u32).to_be_bytes());
        body.extend_from_slice(&sig);
        body
    }

    /// Publishes a key package of mallory's in her own (signed) directory slot 0, so a
    /// member can invite her by her user id.
    pub async fn publish_key_package(&self) {
        let key = format!("pqmls/kp/v2/{}/0", self.id()).into_bytes();
        let entry = self.entry(&key, &self.key_package());
        self.transport.put(key, entry).await.unwrap();
    }

    /// Joins with a Welcome envelope from mallory's inbox: a member state of her own.
    pub fn join(&self, welcome_envelope: &[u8]) -> MlsGroup {
        let (_, _, mls) = open_envelope(welcome_envelope);
        let MlsMessageBodyIn::Welcome(welcome) =
            MlsMessageIn::tls_deserialize_exact(&mls).unwrap().extract()
        else {
            panic!("not a Welcome");
        };
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .build();
        StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .unwrap()
            .into_group(&self.provider)
            .unwrap()
    }

    /// An exporter secret of `group`'s current epoch (RFC 9420 §8.5).
    pub fn export(&self, group: &MlsGroup, label: &str) -> [u8; 32] {
        group
            .export_secret(self.provider.crypto(), label, &[], 32)
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// The ordering priority of `leaf` at `group`'s current epoch, as members compute it.
    pub fn priority(&self, group: &MlsGroup, leaf: u32) -> [u8; 32] {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, b"pqmls commit priority v1");
        sha2::Digest::update(&mut h, self.export(group, "pqmls order v1"));
        sha2::Digest::update(&mut h, leaf.to_be_bytes());
        sha2::Digest::finalize(h).into()
    }

    /// A vote of mallory's (round 1) for `commit` as the end of `group`'s current epoch,
    /// as a member casts it: signed with her leaf key, sealed with the epoch's vote key.
    pub fn vote(&self, group: &MlsGroup, commit: &[u8; 32]) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct VoteBody {
            epoch: u64,
            round: u8,
            commit: [u8; 32],
            leaf: u32,
            public_key: Vec<u8>,
            sig: Vec<u8>,
        }
        use openmls_traits::signatures::Signer as _;
        let epoch = group.epoch().as_u64();
        let leaf = group.own_leaf_index().u32();
        let gid = group.group_id().as_slice();
        let mut tbs = b"pqmls vote v1".to_vec();
        tbs.extend_from_slice(&(gid.len() as u64).to_be_bytes());
        tbs.extend_from_slice(gid);
        tbs.extend_from_slice(&epoch.to_be_bytes());
        tbs.push(1);
        tbs.extend_from_slice(commit);
        tbs.extend_from_slice(&leaf.to_be_bytes());
        let body = VoteBody {
            epoch,
            round: 1,
            commit: *commit,
            leaf,
            public_key: self.signer.public().to_vec(),
            sig: self.signer.sign(&tbs).unwrap(),
        };
        let vote_key = self.export(group, "pqmls vote v1");
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, b"pqmls vote tag v1");
        sha2::Digest::update(&mut h, vote_key);
        let tag: [u8; 16] = sha2::Digest::finalize(h)[..16].try_into().unwrap();
        let aead = SUITE.aead_algorithm();
        let nonce = [7u8; 12];
        let mut sealed = nonce.to_vec();
        sealed.extend(
            self.provider
                .crypto()
                .aead_encrypt(
                    aead,
                    &vote_key[..aead.key_size()],
                    &postcard::to_stdvec(&body).unwrap(),
                    &nonce,
                    &tag,
                )
                .unwrap(),
        );
        envelope(VOTE, &tag, &sealed)
    }

    /// Whether mallory's `group` can read any application message in `messages`.
    pub fn reads_any(&self, group: &mut MlsGroup, messages: &[pqmls_transport::Message]) -> bool {
        messages.iter().any(|m| {
            if m.data.first() != Some(&APPLICATION) {
                return false;
            }
            let (_, _, mls) = open_envelope(&m.data);
            let Ok(msg) = MlsMessageIn::tls_deserialize_exact(&mls) else {
                return false;
            };
            let Ok(pm) = msg.try_into_protocol_message() else {
                return false;
            };
            matches!(
                group
                    .process_message(&self.provider, pm)
                    .map(|p| p.into_content()),
                Ok(ProcessedMessageContent::ApplicationMessage(_))
            )
        })
    }
}
