//! The `sdk_api_ops` target: the public [`pqmls::Client`] API driven by fuzz input.
//!
//! Three real clients (`a`, `b`, `c`; in memory, [`SETTLE`] settle time, [`TICK`] tick, no
//! periodic self-updates, each other's contacts, invitations from contacts joined at once
//! and the others held for consent) run on one [`SimNetwork`] together with a fourth, bare endpoint
//! (the *injector*) that publishes raw or mutated payloads on group and inbox topics. Every
//! input gets a fresh network and a fresh current-thread tokio runtime with paused time,
//! so timers and network delays run on virtual time.
//!
//! Input: `loss: u8` (the network's loss rate is `loss % 31` percent, for the whole run),
//! `seed: u8` (the network's seed), then up to [`MAX_OPS`] operations, each an opcode byte
//! (`% 12`) and its arguments (missing bytes read as zero, see [`Reader`]):
//!
//! | op | name | arguments |
//! |---|---|---|
//! | 0 | [`OP_CREATE`] | `x` |
//! | 1 | [`OP_INVITE`] | `x`, `user`, `g` |
//! | 2 | [`OP_SEND`] | `x`, `g`, `mode`, body (`u16` length mod 1025, bytes) |
//! | 3 | [`OP_UPDATE`] | `x`, `g` |
//! | 4 | [`OP_REMOVE`] | `x`, `user`, `g` |
//! | 5 | [`OP_LEAVE`] | `x`, `g` |
//! | 6 | [`OP_SYNC`] | `x` |
//! | 7 | [`OP_ADVANCE`] | `n`: sleep `(n + 1) * 5` ms of virtual time |
//! | 8 | [`OP_INJECT_GROUP`] | `g`, payload (`u16` length mod 4097, bytes) |
//! | 9 | [`OP_INJECT_INBOX`] | `user`, payload as above |
//! | 10 | [`OP_ONLINE`] | `x`, `on` (bit 0): [`SimTransport::set_online`] |
//! | 11 | [`OP_REPLAY`] | `from`, `k`, `to`, XOR list (`n` mod 9, `n` times `pos: u16`, `mask`) |
//! | 12 | [`OP_FOREIGN_WELCOME`] | `g`, `user`: the outsider makes a group with `g`'s id, adds `user`'s last-resort key package, sends the Welcome to `user`'s inbox |
//! | 13 | [`OP_FORGE_SIGNALS`] | `g`, `k`, `tag`: message `k` of `g`'s history re-sent with another epoch-authenticator tag (if it is an application message), and a commit and a message of the outsider's fake group (from [`OP_FOREIGN_WELCOME`]) at its epoch |
//! | 14 | [`OP_REWRAP`] | `from`, `k`, `how`: message `k` of topic `from`'s history re-encoded (`how % 3`: a trailing byte, an overlong length, both) and re-published |
//! | 15 | [`OP_PLANT`] | `user`, `slot` (`% 5`, 4 = last resort): the outsider's key package, signed by the outsider, written under `user`'s slot, through the store's validator (refused) and as a malicious store would serve it (planted) |
//! | 16 | [`OP_FLOOD`] | `g`, `n` (`% 64 + 1`): `n` forged commits and messages with `g`'s id for epochs around and far beyond the current one, and `n` withdrawals on the inboxes |
//!
//! `x` is a client (`% 3`); `user` a user id (`% 4`: a's, b's, c's, an id nobody has); `g` a group (`% (groups + 1)`: the groups created so far in order, or an
//! unknown id); `from` / `to` a topic (`% (groups + 3)`: the group topics, then the inbox
//! topics of a, b, c). [`OP_SEND`] `mode % 4`: 0 and 1 send the body, 2 a body of exactly
//! the maximum size, 3 one byte over it. [`OP_REPLAY`] takes message `k` (mod the page
//! length) of the store's history of topic `from`, applies the XORs and publishes it on
//! topic `to` (an exact copy on the same topic is dropped by the network as a duplicate).
//!
//! The outsider (ops 12 to 16) has an MLS identity and provider of its own and can build
//! real MLS messages in groups it makes, but holds no secret of the clients' groups.
//!
//! Errors of the API are expected and ignored. What must hold:
//!
//! - nothing panics, in the API calls or in the clients' background tasks (counted by a
//!   chained panic hook, since tokio catches panics of spawned tasks);
//! - no API call hangs ([`CALL_LIMIT`] of virtual time);
//! - at the end, with the loss set to 0, every client online, and rounds of `sync()` on
//!   every client and [`ROUND`] of virtual time, every client for which `status(g)` is
//!   `Ok` agrees on the epoch and epoch authenticator of `g`, with no commit pending, for
//!   two rounds in a row within [`FINAL_ROUNDS`] rounds. Injected payloads never excuse a
//!   disagreement. The check is asserted only when the loss rate was 0: under loss a
//!   run can end before the SDK's repairs (branch moves, withdrawn Welcomes) have had
//!   the messages they need; lossy runs that do not converge are counted
//! - (always) the outsider never becomes a member of a group a client holds, and none of
//!   its fake groups can read any application message on the clients' group topics;
//!   ([`lossy_counts`]). With the environment
//!   variable `PQMLS_FUZZ_STRICT` set it is asserted for lossy runs too; with
//!   `PQMLS_FUZZ_LENIENT` set it is asserted never, and every input prints one line
//!   (`sdk_api_ops: loss N% converged B[: why]`) to stderr instead, for measuring how
//!   often runs fail to converge; `PQMLS_FUZZ_SAVE=<dir>` then keeps the failing inputs.
//!
//! An input replays exactly: the network (loss, delays) follows its seed byte, and every
//! random draw of the clients and the outsider (keys, nonces, the SDK's ids, hence commit
//! priorities) comes from ChaCha20 streams seeded from a hash of the whole input
//! (`pqmls::sim::insecure_replayable`, insecure by design and used only here and in the
//! simulation); the clients' wall clock is tokio's virtual one. To try other draws of
//! the same schedule, set `PQMLS_FUZZ_RNG_SALT=<u64>` (mixed into that hash).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use pqmls::sim::{SimConfig, SimNetwork, SimTransport};
use pqmls::{Client, Config, GroupId, InvitePolicy, Transport as _, UserId};
use pqmls_provider::{PqCrypto, Provider, SignatureKeyPair, SqliteStorage};
use pqmls_transport::Topic;
use pqmls_transport::store::Cursor;

use crate::{Reader, xor_mutations};

/// The clients' names.
pub const NAMES: [&str; 3] = ["a", "b", "c"];
/// Users an operation can pick: the clients, and an id nobody has.
pub const USERS: usize = 4;
/// Most operations decoded from one input.
pub const MAX_OPS: usize = 64;
/// Most groups created in one input (further creates are skipped).
pub const MAX_GROUPS: usize = 4;
/// The clients' settle time.
pub const SETTLE: Duration = Duration::from_millis(50);
/// The clients' tick.
pub const TICK: Duration = Duration::from_millis(10);
/// Virtual time between two rounds of the final phase.
pub const ROUND: Duration = Duration::from_millis(300);
/// Rounds of the final phase before agreement is given up.
pub const FINAL_ROUNDS: usize = 30;
/// Longest an API call may take (virtual time) before it counts as hung.
pub const CALL_LIMIT: Duration = Duration::from_secs(120);
/// The clients' largest message body.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Opcode: `create_group` by `x`.
pub const OP_CREATE: u8 = 0;
/// Opcode: `x` invites `user` to `g`.
pub const OP_INVITE: u8 = 1;
/// Opcode: `x` sends to `g`.
pub const OP_SEND: u8 = 2;
/// Opcode: `x` commits a self-update in `g`.
pub const OP_UPDATE: u8 = 3;
/// Opcode: `x` removes `user` from `g`.
pub const OP_REMOVE: u8 = 4;
/// Opcode: `x` leaves `g`.
pub const OP_LEAVE: u8 = 5;
/// Opcode: `x` syncs.
pub const OP_SYNC: u8 = 6;
/// Opcode: advance virtual time.
pub const OP_ADVANCE: u8 = 7;
/// Opcode: raw payload on a group topic.
pub const OP_INJECT_GROUP: u8 = 8;
/// Opcode: raw payload on an inbox topic.
pub const OP_INJECT_INBOX: u8 = 9;
/// Opcode: take `x` off the network or bring it back.
pub const OP_ONLINE: u8 = 10;
/// Opcode: re-publish a mutated message from the store's history.
pub const OP_REPLAY: u8 = 11;
/// Opcode: the outsider's Welcome into a fake group with a victim group's id.
pub const OP_FOREIGN_WELCOME: u8 = 12;
/// Opcode: forged fork signals (a changed tag, a fake group's commit and message).
pub const OP_FORGE_SIGNALS: u8 = 13;
/// Opcode: a message from history re-wrapped non-canonically.
pub const OP_REWRAP: u8 = 14;
/// Opcode: a key package planted under a client's directory slot.
pub const OP_PLANT: u8 = 15;
/// Opcode: a flood of forged commits, messages and withdrawals.
pub const OP_FLOOD: u8 = 16;
/// Number of opcodes.
pub const OPS: u8 = 17;

/// The topic of a group, as the SDK computes it.
pub fn group_topic(gid: &GroupId) -> Topic {
    Topic::from_group_id(&[b"pqmls/group/v1/".as_slice(), gid.as_bytes()].concat())
}

/// The inbox topic of a user, as the SDK computes it.
pub fn inbox_topic(user: &UserId) -> Topic {
    Topic::from_group_id(&[b"pqmls/inbox/v2/".as_slice(), user.as_bytes()].concat())
}

/// What one run gave (for the seed-corpus checks in `tests/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Operations executed.
    pub ops: usize,
    /// Operations whose API call returned `Ok`.
    pub ok_ops: usize,
    /// Per group created: (members, epoch) as the agreeing clients see it at the end, or
    /// `None` if nobody holds it.
    pub groups: Vec<Option<(usize, u64)>>,
    /// Whether the final phase reached agreement.
    pub converged: bool,
    /// The network's loss rate during the operations, in percent.
    pub loss_percent: u8,
    /// Why it did not converge.
    pub failure: Option<String>,
}

thread_local! {
    /// Panics on this thread (the runtime is current-thread, so the clients' tasks run
    /// here too).
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

/// Chains a panic hook (once per process) that counts panics per thread, then calls the
/// previous hook (libFuzzer's aborts).
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

static LOSSY_RUNS: AtomicU64 = AtomicU64::new(0);
static LOSSY_FAILURES: AtomicU64 = AtomicU64::new(0);

/// (lossy runs, lossy runs that did not converge) in this process so far.
pub fn lossy_counts() -> (u64, u64) {
    (
        LOSSY_RUNS.load(Ordering::Relaxed),
        LOSSY_FAILURES.load(Ordering::Relaxed),
    )
}

/// The outsider: an MLS identity and provider of its own, and its fake groups (one per
/// victim group id it targeted).
struct Outsider {
    provider: Provider<SqliteStorage>,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    fakes: Vec<MlsGroup>,
}

const SUITE: Ciphersuite = pqmls::DEFAULT_SUITE;

impl Outsider {
    fn new(seed: [u8; 32]) -> Outsider {
        use openmls_traits::random::OpenMlsRand as _;
        let provider = Provider::from_parts(
            PqCrypto::insecure_deterministic_for_simulation(seed),
            SqliteStorage::open_in_memory().expect("storage"),
        );
        let signer = SignatureKeyPair::generate_with_rng(
            SUITE.signature_algorithm(),
            &mut provider.pq_crypto().rng(),
        )
        .expect("a key");
        let signing_seed = provider.pq_crypto().random_array::<32>().expect("a seed");
        let signer = signer.insecure_deterministic_signing_for_simulation(signing_seed);
        // It poses with a client's name.
        let credential = CredentialWithKey {
            credential: BasicCredential::new(b"a".to_vec()).into(),
            signature_key: signer.public().to_vec().into(),
        };
        Outsider {
            provider,
            signer,
            credential,
            fakes: Vec::new(),
        }
    }

    fn capabilities() -> Capabilities {
        Capabilities::new(
            None,
            Some(&[SUITE]),
            Some(&[ExtensionType::LastResort]),
            None,
            None,
        )
    }

    /// A fake group with `gid`'s id (a previous one with that id is dropped): its index.
    fn fake(&mut self, gid: &GroupId) -> Option<usize> {
        let id = openmls::group::GroupId::from_slice(gid.as_bytes());
        self.fakes.retain(|g| g.group_id() != &id);
        if let Ok(Some(mut old)) = MlsGroup::load(self.provider.storage(), &id) {
            let _ = old.delete(self.provider.storage());
        }
        let g = MlsGroup::builder()
            .with_group_id(id)
            .ciphersuite(SUITE)
            .use_ratchet_tree_extension(true)
            .with_capabilities(Self::capabilities())
            .lifetime(pqmls::sim::sim_lifetime())
            .build(&self.provider, &self.signer, self.credential.clone())
            .ok()?;
        self.fakes.push(g);
        Some(self.fakes.len() - 1)
    }

    fn key_package(&self) -> Vec<u8> {
        KeyPackage::builder()
            .leaf_node_capabilities(Self::capabilities())
            .key_package_lifetime(pqmls::sim::sim_lifetime())
            .build(SUITE, &self.provider, &self.signer, self.credential.clone())
            .ok()
            .and_then(|b| {
                MlsMessageOut::from(b.key_package().clone())
                    .tls_serialize_detached()
                    .ok()
            })
            .unwrap_or_default()
    }

    /// A directory entry in the SDK's format (`PQD1`...), signed by the outsider.
    fn entry(&self, key: &[u8], value: &[u8]) -> Vec<u8> {
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
        let sig = self.signer.sign(&tbs).unwrap_or_default();
        body.extend_from_slice(&(sig.len() as u32).to_be_bytes());
        body.extend_from_slice(&sig);
        body
    }

    fn id(&self) -> UserId {
        UserId::of_key(SUITE.signature_algorithm(), self.signer.public())
    }

    /// Whether a fake group can read an application message among `messages`.
    fn reads_any(&mut self, messages: &[pqmls_transport::Message]) -> bool {
        let provider = &self.provider;
        messages.iter().any(|m| {
            let Some((1, _, mls)) = unwire(&m.data) else {
                return false;
            };
            self.fakes.iter_mut().any(|g| {
                let Some(pm) = MlsMessageIn::tls_deserialize_exact(&mls)
                    .ok()
                    .and_then(|m| m.try_into_protocol_message().ok())
                else {
                    return false;
                };
                matches!(
                    g.process_message(provider, pm).map(|p| p.into_content()),
                    Ok(ProcessedMessageContent::ApplicationMessage(_))
                )
            })
        })
    }
}

/// LEB128, as postcard writes lengths.
fn leb128(mut n: usize) -> Vec<u8> {
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

/// A pqmls envelope: variant, prefix (16-byte tag of application messages, 32-byte id of
/// withdrawals), LEB128 length, bytes.
pub fn wire(variant: u8, prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = vec![variant];
    v.extend_from_slice(prefix);
    v.extend_from_slice(&leb128(body.len()));
    v.extend_from_slice(body);
    v
}

/// (variant, prefix, body) of an envelope, if it is one.
fn unwire(payload: &[u8]) -> Option<(u8, Vec<u8>, Vec<u8>)> {
    let variant = *payload.first()?;
    let prefix_len = match variant {
        0 | 3 => 32,
        1 => 16,
        2 => 0,
        _ => return None,
    };
    let prefix = payload.get(1..1 + prefix_len)?.to_vec();
    let mut i = 1 + prefix_len;
    let (mut n, mut shift) = (0usize, 0u32);
    loop {
        let b = *payload.get(i)?;
        i += 1;
        n |= usize::from(b & 0x7f).checked_shl(shift)?;
        shift += 7;
        if b & 0x80 == 0 || shift > 28 {
            break;
        }
    }
    (payload.len() == i.checked_add(n)?).then(|| (variant, prefix, payload[i..].to_vec()))
}

/// An MLS `PrivateMessage` with `gid`'s id, `epoch` and `content_type` in the framing and
/// noise inside (RFC 9420 §6.3, canonical varints).
fn fake_private(gid: &GroupId, epoch: u64, content_type: u8, noise: u8) -> Vec<u8> {
    fn vec(out: &mut Vec<u8>, b: &[u8]) {
        if b.len() < 64 {
            out.push(b.len() as u8);
        } else {
            out.extend_from_slice(&(0x4000 | b.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(b);
    }
    let mut out = vec![0, 1, 0, 2];
    vec(&mut out, gid.as_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(content_type);
    vec(&mut out, &[]);
    vec(&mut out, &[noise; 16]);
    vec(&mut out, &[noise ^ 0x5a; 80]);
    out
}

/// The seeds of one input's randomness: SHA-256 of the input (and the salt
/// `PQMLS_FUZZ_RNG_SALT`, 0 if unset), one stream per party.
struct RngSeeds([u8; 32]);

impl RngSeeds {
    fn of(data: &[u8]) -> RngSeeds {
        use sha2::Digest as _;
        let salt: u64 = std::env::var("PQMLS_FUZZ_RNG_SALT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut h = sha2::Sha256::new();
        h.update(b"pqmls fuzz sdk_api_ops rng v1");
        h.update(salt.to_be_bytes());
        h.update(data);
        RngSeeds(h.finalize().into())
    }

    /// Party `i`'s seed (the clients 0..3, the outsider `u8::MAX`).
    fn party(&self, i: u8) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.0);
        h.update([i]);
        h.finalize().into()
    }
}

struct World {
    net: SimNetwork,
    clients: Vec<Client>,
    transports: Vec<Arc<SimTransport>>,
    injector: Arc<SimTransport>,
    groups: Vec<GroupId>,
    outsider: Outsider,
}

impl World {
    async fn new(seed: u64, loss: f64, rng: &RngSeeds) -> World {
        let net = SimNetwork::new(SimConfig {
            seed,
            loss,
            ..SimConfig::default()
        });
        let mut clients = Vec::new();
        let mut transports = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let (t, inbox) = net.attach();
            let mut c = pqmls::sim::insecure_replayable(Config::new(*name), rng.party(i as u8));
            c.self_update_interval = None;
            c.settle = SETTLE;
            c.tick = TICK;
            c.one_time_key_packages = 1;
            c.max_message_size = MAX_MESSAGE_SIZE;
            // Invitations from each other join at once, the outsider's wait for consent.
            c.invitations = InvitePolicy::Contacts;
            let client = Client::open(c, t.clone(), inbox)
                .await
                .expect("opening an in-memory client");
            clients.push(client);
            transports.push(t);
        }
        for c in &clients {
            for other in &clients {
                if other.id() != c.id() {
                    c.add_contact(&other.id(), other.name())
                        .await
                        .expect("a contact");
                }
            }
        }
        net.set_directory_validator(pqmls::directory_validator().expect("a validator"));
        // The injector only publishes and reads history: its inbox stays empty.
        let (injector, _inbox) = net.attach();
        World {
            net,
            clients,
            transports,
            injector,
            groups: Vec::new(),
            outsider: Outsider::new(rng.party(u8::MAX)),
        }
    }

    fn group(&self, sel: u8) -> GroupId {
        let i = usize::from(sel) % (self.groups.len() + 1);
        self.groups
            .get(i)
            .cloned()
            .unwrap_or_else(|| GroupId::from_bytes(&[0xee; 16]))
    }

    fn topic(&self, sel: u8) -> Topic {
        let i = usize::from(sel) % (self.groups.len() + NAMES.len());
        match self.groups.get(i) {
            Some(g) => group_topic(g),
            None => inbox_topic(&self.clients[i - self.groups.len()].id()),
        }
    }

    /// Runs one operation; whether its API call returned `Ok`.
    async fn op(&mut self, r: &mut Reader<'_>) -> bool {
        let op = r.byte() % OPS;
        let client = |b: u8| usize::from(b) % NAMES.len();
        let ids: Vec<UserId> = self.clients.iter().map(Client::id).collect();
        let user = |b: u8| {
            ids.get(usize::from(b) % USERS)
                .copied()
                .unwrap_or(UserId::from_bytes([0xee; 32]))
        };
        match op {
            OP_CREATE => {
                let x = client(r.byte());
                if self.groups.len() >= MAX_GROUPS {
                    return false;
                }
                match call(self.clients[x].create_group()).await {
                    Ok(g) => {
                        self.groups.push(g);
                        true
                    }
                    Err(_) => false,
                }
            }
            OP_INVITE => {
                let (x, u, g) = (client(r.byte()), user(r.byte()), self.group(r.byte()));
                call(self.clients[x].invite(&g, &u)).await.is_ok()
            }
            OP_SEND => {
                let (x, g, mode) = (client(r.byte()), self.group(r.byte()), r.byte() % 4);
                let body = r.var(1024);
                let body = match mode {
                    2 => fill(body, MAX_MESSAGE_SIZE),
                    3 => fill(body, MAX_MESSAGE_SIZE + 1),
                    _ => body.to_vec(),
                };
                call(self.clients[x].send(&g, &body)).await.is_ok()
            }
            OP_UPDATE => {
                let (x, g) = (client(r.byte()), self.group(r.byte()));
                call(self.clients[x].update(&g)).await.is_ok()
            }
            OP_REMOVE => {
                let (x, u, g) = (client(r.byte()), user(r.byte()), self.group(r.byte()));
                call(self.clients[x].remove(&g, &u)).await.is_ok()
            }
            OP_LEAVE => {
                let (x, g) = (client(r.byte()), self.group(r.byte()));
                call(self.clients[x].leave(&g)).await.is_ok()
            }
            OP_SYNC => {
                let x = client(r.byte());
                call(self.clients[x].sync()).await.is_ok()
            }
            OP_ADVANCE => {
                let n = u64::from(r.byte()) + 1;
                tokio::time::sleep(Duration::from_millis(n * 5)).await;
                true
            }
            OP_INJECT_GROUP => {
                let g = self.group(r.byte());
                let payload = r.var(4096).to_vec();
                self.injector
                    .publish(&group_topic(&g), payload)
                    .await
                    .is_ok()
            }
            OP_INJECT_INBOX => {
                let u = user(r.byte());
                let payload = r.var(4096).to_vec();
                self.injector
                    .publish(&inbox_topic(&u), payload)
                    .await
                    .is_ok()
            }
            OP_ONLINE => {
                let (x, on) = (client(r.byte()), r.byte() & 1 == 1);
                self.transports[x].set_online(on);
                true
            }
            OP_FOREIGN_WELCOME => {
                let (g, u) = (self.group(r.byte()), user(r.byte()));
                let Ok(Some(blob)) = self
                    .injector
                    .get(format!("pqmls/kp/v2/{u}/last-resort").into_bytes())
                    .await
                else {
                    return false;
                };
                let Some(kp) = entry_key_package(&blob) else {
                    return false;
                };
                let Some(i) = self.outsider.fake(&g) else {
                    return false;
                };
                let o = &mut self.outsider;
                let (provider, signer) = (&o.provider, &o.signer);
                let welcome = {
                    let fake = &mut o.fakes[i];
                    let Ok((_, welcome, _)) = fake.add_members(provider, signer, &[kp]) else {
                        return false;
                    };
                    let _ = fake.merge_pending_commit(provider);
                    welcome.tls_serialize_detached().unwrap_or_default()
                };
                self.injector
                    .publish(&inbox_topic(&u), wire(2, &[], &welcome))
                    .await
                    .is_ok()
            }
            OP_FORGE_SIGNALS => {
                let (g, k, tag) = (self.group(r.byte()), r.byte(), r.byte());
                let topic = group_topic(&g);
                let mut ok = false;
                if let Ok(page) = self.injector.history(&topic, Cursor::beginning()).await
                    && !page.messages.is_empty()
                    && let Some((1, _, mls)) =
                        unwire(&page.messages[usize::from(k) % page.messages.len()].data)
                {
                    ok |= self
                        .injector
                        .publish(&topic, wire(1, &[tag; 16], &mls))
                        .await
                        .is_ok();
                }
                let o = &mut self.outsider;
                let (provider, signer) = (&o.provider, &o.signer);
                let id = openmls::group::GroupId::from_slice(g.as_bytes());
                let forged = o
                    .fakes
                    .iter_mut()
                    .find(|f| f.group_id() == &id)
                    .map(|fake| {
                        let msg = fake
                            .create_message(provider, signer, b"outsider")
                            .ok()
                            .and_then(|m| m.tls_serialize_detached().ok());
                        let commit = fake
                            .self_update(provider, signer, LeafNodeParameters::default())
                            .ok()
                            .and_then(|b| b.commit().tls_serialize_detached().ok());
                        let _ = fake.merge_pending_commit(provider);
                        (msg, commit)
                    });
                if let Some((msg, commit)) = forged {
                    for p in [
                        msg.map(|m| wire(1, &[tag; 16], &m)),
                        commit.map(|c| wire(0, &[0; 32], &c)),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        ok |= self.injector.publish(&topic, p).await.is_ok();
                    }
                }
                ok
            }
            OP_REWRAP => {
                let (from, k, how) = (self.topic(r.byte()), r.byte(), r.byte() % 3);
                let Ok(page) = self.injector.history(&from, Cursor::beginning()).await else {
                    return false;
                };
                if page.messages.is_empty() {
                    return false;
                }
                let data = &page.messages[usize::from(k) % page.messages.len()].data;
                let Some((variant, prefix, body)) = unwire(data) else {
                    return false;
                };
                let mut out = vec![variant];
                out.extend_from_slice(&prefix);
                let mut len = leb128(body.len());
                if how != 0 {
                    let last = len.len() - 1;
                    len[last] |= 0x80;
                    len.push(0);
                }
                out.extend_from_slice(&len);
                out.extend_from_slice(&body);
                if how != 1 {
                    out.push(0);
                }
                self.injector.publish(&from, out).await.is_ok()
            }
            OP_PLANT => {
                let (u, slot) = (user(r.byte()), r.byte() % 5);
                let slot = if slot == 4 {
                    "last-resort".to_owned()
                } else {
                    slot.to_string()
                };
                let key = format!("pqmls/kp/v2/{u}/{slot}").into_bytes();
                let entry = self.outsider.entry(&key, &self.outsider.key_package());
                // Through a store with the validator: refused.
                let refused = self.injector.put(key.clone(), entry.clone()).await.is_err();
                // As a malicious store would serve it.
                self.net.plant(key, entry);
                refused
            }
            OP_FLOOD => {
                let (g, n) = (self.group(r.byte()), r.byte() % 64 + 1);
                let epoch = match self.clients.first() {
                    Some(c) => c.status(&g).await.map(|s| s.epoch).unwrap_or(0),
                    None => 0,
                };
                let topic = group_topic(&g);
                for i in 0..n {
                    let e = match i % 4 {
                        0 => epoch,
                        1 => epoch + 1,
                        2 => epoch + u64::from(i),
                        _ => u64::MAX - u64::from(i),
                    };
                    let _ = self
                        .injector
                        .publish(&topic, wire(0, &[0; 32], &fake_private(&g, e, 3, i)))
                        .await;
                    let _ = self
                        .injector
                        .publish(&topic, wire(1, &[i; 16], &fake_private(&g, e, 1, i)))
                        .await;
                    let inbox = inbox_topic(&user(i));
                    let _ = self
                        .injector
                        .publish(&inbox, wire(3, &[i; 32], &[i; 64]))
                        .await;
                }
                true
            }
            _ => {
                let (from, k, to) = (self.topic(r.byte()), r.byte(), self.topic(r.byte()));
                let Ok(page) = self.injector.history(&from, Cursor::beginning()).await else {
                    return false;
                };
                if page.messages.is_empty() {
                    // Keep the input aligned: the XOR list is read either way.
                    xor_mutations(r, &mut []);
                    return false;
                }
                let mut data = page.messages[usize::from(k) % page.messages.len()]
                    .data
                    .clone();
                xor_mutations(r, &mut data);
                self.injector.publish(&to, data).await.is_ok()
            }
        }
    }

    /// Whether every holder of every group agrees (and nothing is pending); the view of
    /// each group.
    async fn agreement(&self) -> (Result<(), String>, Vec<Option<(usize, u64)>>) {
        let mut verdict = Ok(());
        let mut views = Vec::new();
        for g in &self.groups {
            let mut first: Option<(usize, u64, Vec<u8>)> = None;
            for (c, name) in self.clients.iter().zip(NAMES) {
                let Ok(st) = call(c.status(g)).await else {
                    continue;
                };
                if st.pending_commit && verdict.is_ok() {
                    verdict = Err(format!("{name} has commits pending in {g}"));
                }
                match &first {
                    None => first = Some((st.members.len(), st.epoch, st.epoch_authenticator)),
                    Some((_, epoch, auth)) => {
                        if (*epoch, auth) != (st.epoch, &st.epoch_authenticator) && verdict.is_ok()
                        {
                            verdict = Err(format!(
                                "{name} is at epoch {} of {g}, the first holder at epoch {epoch} \
                                 (or another authenticator)",
                                st.epoch
                            ));
                        }
                    }
                }
            }
            views.push(first.map(|(n, e, _)| (n, e)));
        }
        if let Err(why) = &mut verdict {
            why.push_str(&self.describe().await);
        }
        (verdict, views)
    }

    /// Every client's view of every group, for failure messages.
    async fn describe(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            out.push_str(&format!("\n  group {g}:"));
            for (c, name) in self.clients.iter().zip(NAMES) {
                let view = match call(c.status(g)).await {
                    Ok(st) => format!(
                        "epoch {} auth {} members {:?}{}",
                        st.epoch,
                        st.epoch_authenticator
                            .iter()
                            .take(4)
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>(),
                        st.members,
                        if st.pending_commit { " (pending)" } else { "" }
                    ),
                    Err(e) => format!("{e}"),
                };
                let st = c.stats().await;
                out.push_str(&format!(
                    "\n    {name}: {view}; merged {} rejected {} forks {}/{} buffered {}",
                    st.commits_merged,
                    st.commits_rejected,
                    st.forks_detected,
                    st.forks_recovered,
                    st.buffered
                ));
            }
        }
        out
    }

    /// The final phase: no loss, all online, sync rounds until two agreeing rounds.
    async fn settle(&self) -> (Result<(), String>, Vec<Option<(usize, u64)>>) {
        self.net.set_loss(0.0);
        for t in &self.transports {
            t.set_online(true);
        }
        let mut stable = 0;
        let mut last = (Ok(()), Vec::new());
        for _ in 0..FINAL_ROUNDS {
            for c in &self.clients {
                let _ = call(c.sync()).await;
            }
            tokio::time::sleep(ROUND).await;
            last = self.agreement().await;
            if last.0.is_ok() {
                stable += 1;
                if stable >= 2 {
                    break;
                }
            } else {
                stable = 0;
            }
        }
        last
    }
}

/// The key package in a signed directory entry, validated.
fn entry_key_package(blob: &[u8]) -> Option<KeyPackage> {
    let len = |at: usize| -> Option<usize> {
        Some(u32::from_be_bytes(blob.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let at = 6 + 4 + len(6)? + 16;
    let value = blob.get(at + 4..at + 4 + len(at)?)?;
    let MlsMessageBodyIn::KeyPackage(kp) =
        MlsMessageIn::tls_deserialize_exact(value).ok()?.extract()
    else {
        return None;
    };
    kp.validate(&PqCrypto::new().ok()?, ProtocolVersion::Mls10)
        .ok()
}

/// `body` repeated (or zeros) up to exactly `len` bytes.
fn fill(body: &[u8], len: usize) -> Vec<u8> {
    if body.is_empty() {
        return vec![0; len];
    }
    body.iter().copied().cycle().take(len).collect()
}

/// Awaits an API call, panicking if it does not return within [`CALL_LIMIT`].
async fn call<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_LIMIT, f)
        .await
        .expect("an API call hung")
}

/// [`sdk_api_ops`], returning what happened.
pub fn run(data: &[u8]) -> Outcome {
    count_panics();
    let panics_before = PANICS.with(Cell::get);
    let mut r = Reader::new(data);
    let loss_pct = r.byte() % 31;
    let seed = u64::from(r.byte());
    let loss = f64::from(loss_pct) / 100.0;
    let rng = RngSeeds::of(data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    let mut outcome = rt.block_on(async {
        let mut world = World::new(seed, loss, &rng).await;
        let mut outcome = Outcome {
            loss_percent: loss_pct,
            ..Outcome::default()
        };
        while !r.is_empty() && outcome.ops < MAX_OPS {
            outcome.ops += 1;
            if world.op(&mut r).await {
                outcome.ok_ops += 1;
            }
        }
        let (verdict, views) = world.settle().await;
        outcome.converged = verdict.is_ok();
        outcome.failure = verdict.err();
        outcome.groups = views;
        // The outsider is no member of anything, and reads nothing.
        let outsider = world.outsider.id();
        for g in &world.groups {
            for c in &world.clients {
                if let Ok(members) = c.members(g).await {
                    assert!(
                        members.iter().all(|m| m.id != outsider),
                        "the outsider is a member of {g}: {members:?}, outsider {outsider:?}"
                    );
                }
            }
            let history = world.net.history_of(&group_topic(g));
            assert!(
                !world.outsider.reads_any(&history),
                "the outsider read a message of {g}"
            );
        }
        for c in world.clients {
            c.shutdown().await;
        }
        outcome
    });
    drop(rt);
    let panics = PANICS.with(Cell::get) - panics_before;
    assert_eq!(panics, 0, "a client task panicked");
    if outcome.loss_percent > 0 {
        LOSSY_RUNS.fetch_add(1, Ordering::Relaxed);
        if !outcome.converged {
            LOSSY_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
    }
    if std::env::var_os("PQMLS_FUZZ_LENIENT").is_some() {
        // Long runs that measure convergence instead of stopping at the first failure:
        // one line per input on stderr, failing inputs saved for replay.
        eprintln!(
            "sdk_api_ops: loss {}% converged {}{}",
            outcome.loss_percent,
            outcome.converged,
            match &outcome.failure {
                Some(why) => format!(": {}", why.lines().next().unwrap_or_default()),
                None => String::new(),
            }
        );
        if !outcome.converged
            && let Some(dir) = std::env::var_os("PQMLS_FUZZ_SAVE")
        {
            let name = format!(
                "loss{:02}-{:016x}",
                outcome.loss_percent,
                data.iter()
                    .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b))
                        .wrapping_mul(0x100_0000_01b3))
            );
            let _ = std::fs::write(std::path::Path::new(&dir).join(name), data);
        }
    } else if outcome.loss_percent == 0 || std::env::var_os("PQMLS_FUZZ_STRICT").is_some() {
        assert!(
            outcome.converged,
            "no agreement at the end (loss {}%): {}",
            outcome.loss_percent,
            outcome.failure.take().unwrap_or_default()
        );
    }
    outcome
}

/// The public client API against fuzz input (format and checks in the module docs).
pub fn sdk_api_ops(data: &[u8]) {
    run(data);
}
