//! The `sdk_api_ops` target: the public [`pqmls::Client`] API driven by fuzz input.
//!
//! Three real clients (`a`, `b`, `c`; in memory, [`SETTLE`] settle time, [`TICK`] tick, no
//! periodic self-updates) run on one [`SimNetwork`] together with a fourth, bare endpoint
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
//!
//! `x` is a client (`% 3`); `user` a user id (`% 4`: a's, b's, c's, an id nobody has); `g` a group (`% (groups + 1)`: the groups created so far in order, or an
//! unknown id); `from` / `to` a topic (`% (groups + 3)`: the group topics, then the inbox
//! topics of a, b, c). [`OP_SEND`] `mode % 4`: 0 and 1 send the body, 2 a body of exactly
//! the maximum size, 3 one byte over it. [`OP_REPLAY`] takes message `k` (mod the page
//! length) of the store's history of topic `from`, applies the XORs and publishes it on
//! topic `to` (an exact copy on the same topic is dropped by the network as a duplicate).
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
//!   ([`lossy_counts`]). With the environment
//!   variable `PQMLS_FUZZ_STRICT` set it is asserted for lossy runs too; with
//!   `PQMLS_FUZZ_LENIENT` set it is asserted never, and every input prints one line
//!   (`sdk_api_ops: loss N% converged B[: why]`) to stderr instead, for measuring how
//!   often runs fail to converge; `PQMLS_FUZZ_SAVE=<dir>` then keeps the failing inputs.
//!
//! The cryptography draws from the operating system, so an input does not replay
//! bit-for-bit; the network (loss, delays) is deterministic for a given seed.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pqmls::sim::{SimConfig, SimNetwork, SimTransport};
use pqmls::{Client, Config, GroupId, InvitePolicy, Transport as _, UserId};
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
/// Number of opcodes.
pub const OPS: u8 = 12;

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

struct World {
    net: SimNetwork,
    clients: Vec<Client>,
    transports: Vec<Arc<SimTransport>>,
    injector: Arc<SimTransport>,
    groups: Vec<GroupId>,
}

impl World {
    async fn new(seed: u64, loss: f64) -> World {
        let net = SimNetwork::new(SimConfig {
            seed,
            loss,
            ..SimConfig::default()
        });
        let mut clients = Vec::new();
        let mut transports = Vec::new();
        for name in NAMES {
            let (t, inbox) = net.attach();
            let mut c = Config::new(name);
            c.self_update_interval = None;
            c.settle = SETTLE;
            c.tick = TICK;
            c.one_time_key_packages = 1;
            c.max_message_size = MAX_MESSAGE_SIZE;
            c.invitations = InvitePolicy::Everyone;
            let client = Client::open(c, t.clone(), inbox)
                .await
                .expect("opening an in-memory client");
            clients.push(client);
            transports.push(t);
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    let mut outcome = rt.block_on(async {
        let mut world = World::new(seed, loss).await;
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
