//! The async client: a handle over the state machine of [`crate::engine`], a background
//! task that feeds it the network and its timer, and the outbox that publishes what it
//! produced.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use futures::{FutureExt, StreamExt};
use openmls::prelude::*;
use pqmls_provider::{PqCrypto, SqliteStorage};
use pqmls_transport::waku::PubsubTopic;
use pqmls_transport::{MessageId, Node, Topic};
use rusqlite::OptionalExtension;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, FailPoint};
use crate::db;
use crate::directory;
use crate::engine::{Group, Outcome, State, Todo, intents};
use crate::error::{Error, Result};
use crate::event::{Event, Events, Invitation, ReceivedMessage};
use crate::identity::{Member, UserId, safety_number};
use crate::net::{Inbox, Transport, full_history};
use crate::offline::check_name;
use crate::trust::Budget;
use crate::wire::{self, Slot, Wire};
use crate::{GroupId, GroupStatus, Stats};

mod retention;

/// A pqmls client: one identity, its groups, on one transport. Cheap to clone.
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    state: Mutex<State>,
    transport: Arc<dyn Transport>,
    listeners: StdMutex<Vec<mpsc::UnboundedSender<Event>>>,
    stop: watch::Sender<bool>,
    flush_lock: Mutex<()>,
    name: String,
    id: UserId,
    suite: Ciphersuite,
    public_key: Vec<u8>,
    /// Topics to catch up and when each was last caught up.
    syncs: StdMutex<SyncPlan>,
    /// Retry flags for work that failed on the network.
    outbox_pending: AtomicBool,
    key_packages_due: AtomicBool,
    /// When the timer next applies the history retention (`retention.rs`).
    retention_next: StdMutex<Option<Instant>>,
    node: Option<Node>,
    /// The Waku relay shard of the client's topics, when it runs over Waku.
    relay_shard: Option<PubsubTopic>,
    task: StdMutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct SyncPlan {
    wanted: BTreeMap<Topic, ()>,
    last: BTreeMap<Topic, Instant>,
    last_full: Option<Instant>,
    /// Payloads handled for good, which a catch-up skips before any work.
    handled: HandledIds,
    /// Per topic, where its cursor was last held by a deferred payload, in how many
    /// catch-ups in a row ([`SYNC_HOLD_TRIES`]), and the client's count of merged commits
    /// then.
    held: BTreeMap<Topic, (pqmls_transport::store::Cursor, u32, u64)>,
}

/// Catch-ups in a row that a topic's cursor stays held at one place by payloads deferred
/// there (`Outcome::Deferred`) while handling nothing new; the next one moves it past
/// them. A payload anyone can publish may never become usable (an epoch 2^64 - 1, a cap
/// that junk fills), and held for good it made every catch-up of the topic read the
/// same window again, every `sync_backoff`, and never further than one window past it.
/// An honest deferral (a budget spent for a moment, a cap until the next settle) makes
/// progress at each try (and so restarts the count) or ends within a few; what is still
/// deferred then can come again by gossip or a request.
const SYNC_HOLD_TRIES: u32 = 8;

/// Most ids [`HandledIds`] remembers (32 bytes each, twice).
const HANDLED_IDS: usize = 1 << 16;

/// The ids of payloads this client handled for good (marked seen, and for our own ones,
/// marked stored), the newest [`HANDLED_IDS`]. A catch-up reads every payload after the
/// topic's cursor, and the cursor moves only with catch-ups, so the periodic one brings
/// back what gossip delivered since the last, nearly all of it handled already (at 50
/// members, 25 000 to 37 000 payloads over the fleet at once, each costing a hash of the
/// payload and three statements before it was found a duplicate: BENCHMARKS.md). Those
/// are skipped in memory. An id enters only once handling it is over for good: from
/// gossip only when it was new to us (a copy of our own message relayed back to us is not
/// new, and its return from a store is what marks it stored), from a catch-up after the
/// store mark. Forgetting one costs only the statements again.
#[derive(Default)]
struct HandledIds {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
}

impl HandledIds {
    fn insert(&mut self, id: MessageId) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > HANDLED_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// The gossip validator of pqmls nodes: accepts a payload only if it is the canonical
/// encoding of a pqmls message (see [`crate::wire`]'s rules), and rejects the rest, which
/// penalises the neighbour that forwarded it. [`Client::start`] installs it; **install it
/// on every store node too** (`node::Config::with_validator`): a node that forwards
/// re-wrapped or garbage payloads unchecked is penalised by the clients it forwards them
/// to, and a client that penalises its only store is cut off.
pub fn gossip_validator(_topic: &Topic, data: &[u8]) -> pqmls_transport::Verdict {
    if Wire::decode(data).is_some() {
        pqmls_transport::Verdict::Accept
    } else {
        pqmls_transport::Verdict::Reject
    }
}

/// A store node for pqmls clients: `node` with a store in `data_dir` (history and the
/// key-package directory), the SDK's [`gossip_validator`] and its directory rule
/// ([`crate::directory_validator`]: entries only by their owner, signed) installed.
///
/// # Errors
/// [`Error::Crypto`] if the directory rule's crypto provider cannot be created.
pub fn store_node(
    node: pqmls_transport::node::Config,
    data_dir: impl Into<std::path::PathBuf>,
    store: pqmls_transport::store::Config,
) -> Result<pqmls_transport::node::Config> {
    let rule = crate::directory::directory_validator()?;
    let store =
        store.with_directory_validator(move |k: &[u8], o: Option<&[u8]>, n: &[u8]| rule(k, o, n));
    Ok(node
        .with_store(data_dir, store)
        .with_validator(gossip_validator))
}

/// The client's crypto provider: the operating system's randomness, or (feature `sim-rng`)
/// the simulation's seeded stream when [`Config::insecure_rng_seed`] is set.
fn client_crypto(config: &Config) -> Result<PqCrypto> {
    #[cfg(feature = "sim-rng")]
    if let Some(seed) = config.insecure_rng_seed {
        return Ok(PqCrypto::insecure_deterministic_for_simulation(seed));
    }
    let _ = config;
    PqCrypto::new().map_err(|e| Error::Crypto(format!("{e:?}")))
}

/// The identity signer as the client uses it: with the simulation's seeded randomness
/// for hedged signatures (drawn from `crypto`'s stream) when the provider is seeded.
fn client_signer(
    config: &Config,
    crypto: &PqCrypto,
    signer: pqmls_provider::SignatureKeyPair,
) -> Result<pqmls_provider::SignatureKeyPair> {
    #[cfg(feature = "sim-rng")]
    if config.insecure_rng_seed.is_some() {
        use openmls_traits::random::OpenMlsRand as _;
        let seed = crypto
            .random_array::<32>()
            .map_err(|e| Error::Crypto(format!("{e:?}")))?;
        return Ok(signer.insecure_deterministic_signing_for_simulation(seed));
    }
    let _ = (config, crypto);
    Ok(signer)
}

impl Client {
    /// Starts a libp2p node with `node` and opens a client on it. The node gets a validator
    /// that rejects payloads which are not pqmls messages, and is shut down with the client.
    ///
    /// # Errors
    /// As [`Client::open`], plus [`Error::Transport`] if the node cannot start.
    pub async fn start(config: Config, node: pqmls_transport::node::Config) -> Result<Client> {
        let node = node.with_validator(gossip_validator);
        let (node, inbound) = Node::start(node).await?;
        let transport: Arc<dyn Transport> = Arc::new(node.clone());
        Self::open_inner(config, transport, inbound.boxed(), Some(node), None).await
    }

    /// Starts a Waku node with `node` (which must have Waku relay on,
    /// `node::Config::with_waku`) and opens a client on it over
    /// [`WakuTransport`](crate::net_waku::WakuTransport): relay for group and inbox
    /// traffic, the store nodes of `waku` for history and the key-package directory. The
    /// node is shut down with the client.
    ///
    /// # Errors
    /// As [`Client::open`], plus [`Error::Transport`] if the node cannot start or Waku is
    /// off in `node`.
    pub async fn start_waku(
        config: Config,
        node: pqmls_transport::node::Config,
        waku: crate::net_waku::Config,
    ) -> Result<Client> {
        let (transport, inbox) = crate::net_waku::WakuTransport::start(node, waku).await?;
        let node = transport.node().clone();
        let shard = transport.shard();
        let transport: Arc<dyn Transport> = Arc::new(transport);
        Self::open_inner(config, transport, inbox, Some(node), Some(shard)).await
    }

    /// Opens a client on a transport: loads (or on first run creates) the identity from the
    /// data directory, resumes every group, re-sends what the outbox still holds, publishes
    /// key packages and starts catching up from the store nodes in the background.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad name, [`Error::UnsupportedSuite`],
    /// [`Error::IdentityMismatch`] if the data directory holds another identity,
    /// [`Error::Io`], [`Error::Storage`] or [`Error::Database`] if the database cannot be used.
    pub async fn open(
        config: Config,
        transport: Arc<dyn Transport>,
        inbox: Inbox,
    ) -> Result<Client> {
        Self::open_inner(config, transport, inbox, None, None).await
    }

    async fn open_inner(
        config: Config,
        transport: Arc<dyn Transport>,
        inbox: Inbox,
        node: Option<Node>,
        relay_shard: Option<PubsubTopic>,
    ) -> Result<Client> {
        check_name(&config.name)?;
        if !pqmls_provider::SUPPORTED_CIPHERSUITES.contains(&config.suite) {
            return Err(Error::UnsupportedSuite(u16::from(config.suite)));
        }
        if config.rollback_window == 0 || config.tick.is_zero() {
            return Err(Error::Config(
                "rollback_window and tick must be positive".into(),
            ));
        }
        if config.past_epoch_secrets > config.rollback_window {
            return Err(Error::Config(
                "past_epoch_secrets must be at most rollback_window".into(),
            ));
        }
        // Opening stretches a passphrase (Argon2id, 64 MiB) and may migrate the schema:
        // work that blocks, kept off the runtime's workers as every step is.
        let storage = blocking(|| -> Result<SqliteStorage> {
            let storage = match &config.data_dir {
                Some(dir) => crate::at_rest::open(
                    dir,
                    config.database_key.as_ref(),
                    config.history_retention,
                )?,
                None => SqliteStorage::open_in_memory()?,
            };
            db::migrate(storage.connection())?;
            Ok(storage)
        })?;
        let crypto = client_crypto(&config)?;
        let (signer, _) = crate::offline::load_or_create_signer(
            storage.connection(),
            &config,
            &mut crypto.rng(),
        )?;
        let signer = client_signer(&config, &crypto, signer)?;
        let public_key = signer.public().to_vec();
        let id = UserId::of_key(config.suite.signature_algorithm(), &public_key);
        let credential = CredentialWithKey {
            credential: BasicCredential::new(config.name.as_bytes().to_vec()).into(),
            signature_key: public_key.clone().into(),
        };
        let provider = pqmls_provider::Provider::from_parts(crypto, storage);
        let inbox_topic = wire::inbox_topic(&id);
        let welcome_burst = config.limits.welcomes_per_min.max(1);
        let mut state = State {
            provider,
            signer,
            credential,
            name: config.name.clone(),
            id,
            config: config.clone(),
            groups: BTreeMap::new(),
            topics: BTreeMap::new(),
            inbox: inbox_topic.clone(),
            events: Vec::new(),
            todo: Todo::default(),
            stats: Stats::default(),
            crashed: false,
            armed: None,
            in_batch: false,
            republished: BTreeMap::new(),
            fetching: Default::default(),
            member_records: Default::default(),
            last_followup: None,
            past_secrets_cleared: BTreeMap::new(),
            origin: tokio::time::Instant::now(),
            origin_wall_ms: config
                .virtual_wall_clock_ms
                .unwrap_or_else(crate::engine::now_ms),
            needs: BTreeMap::new(),
            aired: BTreeMap::new(),
            answers: BTreeMap::new(),
            refused_welcomes: BTreeMap::new(),
            votes_asked: BTreeMap::new(),
            votes_from_stores: BTreeMap::new(),
            vote_progress: BTreeMap::new(),
            lost_asks: BTreeMap::new(),
            rejoins: BTreeMap::new(),
            clock_skew_ms: 0,
            welcome_budget: Budget::new(welcome_burst, 0),
            key_changes: Default::default(),
            seen_marks: 0,
        };
        state.reload_groups()?;
        let mut subscribe = vec![inbox_topic];
        subscribe.extend(state.groups.values().map(|g: &Group| g.topic.clone()));
        let (stop, stop_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            transport,
            listeners: StdMutex::new(Vec::new()),
            stop,
            flush_lock: Mutex::new(()),
            name: config.name.clone(),
            id,
            suite: config.suite,
            public_key,
            syncs: StdMutex::new(SyncPlan::default()),
            outbox_pending: AtomicBool::new(true),
            key_packages_due: AtomicBool::new(true),
            retention_next: StdMutex::new(None),
            node,
            relay_shard,
            task: StdMutex::new(None),
        });
        for topic in &subscribe {
            // Offline at start is not an error: subscriptions are renewed at every full
            // catch-up, and the outbox and key packages wait for the network.
            if let Err(e) = inner.transport.subscribe(topic).await {
                tracing::debug!("subscribing failed (retried later): {e}");
            }
            inner.want_sync(topic.clone());
        }
        inner.flush().await;
        inner.publish_key_packages().await;
        let task = tokio::spawn(run(Arc::downgrade(&inner), inbox, stop_rx, config.tick));
        if let Ok(mut t) = inner.task.lock() {
            *t = Some(task);
        }
        Ok(Client { inner })
    }

    /// This client's display name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This client's id: what others invite it by (see [`UserId`]).
    pub fn id(&self) -> UserId {
        self.inner.id
    }

    /// The safety number of this client and `other`: read it to each other over a channel
    /// you trust; if it matches, each of you holds the other's real id.
    pub fn safety_number(&self, other: &UserId) -> String {
        safety_number(&self.inner.id, other)
    }

    /// This client's cipher suite.
    pub fn suite(&self) -> Ciphersuite {
        self.inner.suite
    }

    /// This client's signature public key (as in its credential).
    pub fn public_key(&self) -> &[u8] {
        &self.inner.public_key
    }

    /// The libp2p node, when the client was started with [`Client::start`] or
    /// [`Client::start_waku`].
    pub fn node(&self) -> Option<&Node> {
        self.inner.node.as_ref()
    }

    /// A new stream of this client's events from now on. Each call gives an independent
    /// stream that sees every later event.
    pub fn events(&self) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut l) = self.inner.listeners.lock() {
            l.push(tx);
        }
        Events { rx }
    }

    /// Creates a group with this client as its only member, in the client's suite.
    ///
    /// # Errors
    /// [`Error::Mls`] or [`Error::Database`] if the group cannot be created.
    pub async fn create_group(&self) -> Result<GroupId> {
        let gid = self.inner.locked(|s| s.create_group()).await?;
        self.inner.drive().await;
        Ok(gid)
    }

    /// Invites the user with id `user`: fetches one of their key packages from the
    /// directory (signed by their key: nobody else can put one there for them) and commits
    /// their addition. Returns once the commit is published; the user is a member when it
    /// is merged ([`Event::MemberJoined`]), and joins on their side from the Welcome that is
    /// then sent to them (subject to their consent policy). If a competing commit wins the
    /// epoch, the invitation is committed again in the next one.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`], [`Error::AlreadyMember`],
    /// [`Error::NoKeyPackage`] if the directory has none for the user,
    /// [`Error::InvalidKeyPackage`] if what it has is unusable, [`Error::Transport`].
    pub async fn invite(&self, group: &GroupId, user: &UserId) -> Result<()> {
        self.inner
            .locked(|s| {
                if s.member_list_checked(group)?
                    .iter()
                    .any(|(_, m)| m.id == *user)
                {
                    return Err(Error::AlreadyMember {
                        group: group.clone(),
                        user: *user,
                    });
                }
                Ok(())
            })
            .await?;
        let kp = self.inner.fetch_key_package(user).await?;
        self.inner
            .locked(|s| s.add_intent(group, intents::ADD, Some(user), Some(kp)))
            .await?;
        self.inner.drive().await;
        Ok(())
    }

    /// Invites several users in one commit: one MLS commit with an Add proposal for
    /// each (up to [`crate::MAX_ADDS_PER_COMMIT`]; a longer list goes into several
    /// commits, one per epoch), and one Welcome for all of them that goes to each
    /// invitee's inbox once the commit is merged. Otherwise as [`Client::invite`]: one key
    /// package is claimed for each user from the directory first, and if a competing
    /// commit wins the epoch, the invitations are committed again in the next one (with
    /// fresh key packages). An empty list does nothing.
    ///
    /// # Errors
    /// Checked before anything is fetched or committed: [`Error::UnknownGroup`],
    /// [`Error::NotMember`], [`Error::AlreadyMember`] for a user who is a member
    /// already (this client included), [`Error::DuplicateInvitee`] for a user listed
    /// twice. Then, as for `invite`, [`Error::NoKeyPackage`], [`Error::InvalidKeyPackage`]
    /// or [`Error::Transport`] for the first user whose key package cannot be had: nothing
    /// is committed then, and the one-time key packages already claimed for the users
    /// before it are used up (their owners replace claimed ones).
    pub async fn invite_many(&self, group: &GroupId, users: &[UserId]) -> Result<()> {
        self.inner
            .locked(|s| {
                let members = s.member_list_checked(group)?;
                for (i, user) in users.iter().enumerate() {
                    if members.iter().any(|(_, m)| m.id == *user) {
                        return Err(Error::AlreadyMember {
                            group: group.clone(),
                            user: *user,
                        });
                    }
                    if users.get(..i).is_some_and(|before| before.contains(user)) {
                        return Err(Error::DuplicateInvitee {
                            group: group.clone(),
                            user: *user,
                        });
                    }
                }
                Ok(())
            })
            .await?;
        if users.is_empty() {
            return Ok(());
        }
        let mut adds = Vec::with_capacity(users.len());
        for user in users {
            adds.push((*user, self.inner.fetch_key_package(user).await?));
        }
        self.inner.locked(|s| s.add_intents(group, adds)).await?;
        self.inner.drive().await;
        Ok(())
    }

    /// Removes the member with id `user` from the group (committed like an invitation).
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`], [`Error::UnknownMember`],
    /// [`Error::RemoveSelf`] for the client's own id.
    pub async fn remove(&self, group: &GroupId, user: &UserId) -> Result<()> {
        self.inner
            .locked(|s| {
                if *user == s.id {
                    s.member_list_checked(group)?;
                    return Err(Error::RemoveSelf(group.clone()));
                }
                if !s
                    .member_list_checked(group)?
                    .iter()
                    .any(|(_, m)| m.id == *user)
                {
                    return Err(Error::UnknownMember {
                        group: group.clone(),
                        user: *user,
                    });
                }
                s.add_intent(group, intents::REMOVE, Some(user), None)
            })
            .await?;
        self.inner.drive().await;
        Ok(())
    }

    /// Asks the other members to remove this client (MLS members cannot commit their own
    /// removal). The request is repeated every epoch until a member commits it; then
    /// [`Event::Removed`] is reported and the group's state is deleted.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`].
    pub async fn leave(&self, group: &GroupId) -> Result<()> {
        self.inner
            .locked(|s| {
                s.member_list_checked(group)?;
                s.add_intent(group, intents::LEAVE, None, None)
            })
            .await?;
        self.inner.drive().await;
        Ok(())
    }

    /// Commits a fresh leaf key for this client (post-compromise security). Also done
    /// every [`Config::self_update_interval`].
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`].
    pub async fn update(&self, group: &GroupId) -> Result<()> {
        self.inner
            .locked(|s| {
                s.member_list_checked(group)?;
                s.add_intent(group, intents::UPDATE, None, None)
            })
            .await?;
        self.inner.drive().await;
        Ok(())
    }

    /// Sends an application message to the group. It is stored in the history and the
    /// outbox before it is published, so it is sent even if the client stops right after.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`], [`Error::UnknownGroup`], [`Error::NotMember`].
    pub async fn send(&self, group: &GroupId, body: &[u8]) -> Result<ReceivedMessage> {
        let m = self.inner.locked(|s| s.send(group, body)).await?;
        self.inner.drive().await;
        if self.inner.state.lock().await.crashed {
            return Err(Error::Shutdown);
        }
        Ok(m)
    }

    /// The groups this client is in.
    ///
    /// # Errors
    /// [`Error::Shutdown`] after a fail point.
    pub async fn groups(&self) -> Result<Vec<GroupId>> {
        self.inner
            .locked(|s| {
                Ok(s.groups
                    .iter()
                    .filter(|(_, g)| g.mls.is_active())
                    .map(|(id, _)| id.clone())
                    .collect())
            })
            .await
    }

    /// The members of a group, in leaf order.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`].
    pub async fn members(&self, group: &GroupId) -> Result<Vec<Member>> {
        self.inner
            .locked(|s| {
                Ok(s.member_list_checked(group)?
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect())
            })
            .await
    }

    /// Epoch, epoch authenticator and members of a group.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`].
    pub async fn status(&self, group: &GroupId) -> Result<GroupStatus> {
        self.inner
            .locked(|s| {
                let members = s
                    .member_list_checked(group)?
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect();
                let g = s
                    .groups
                    .get(group)
                    .ok_or_else(|| Error::UnknownGroup(group.clone()))?;
                Ok(GroupStatus {
                    epoch: g.mls.epoch().as_u64(),
                    epoch_authenticator: g.mls.epoch_authenticator().as_slice().to_vec(),
                    members,
                    pending_commit: g.mls.pending_commit().is_some() || g.settle_at.is_some(),
                    lost_at: g.unrecoverable,
                })
            })
            .await
    }

    /// The last `limit` application messages of a group (sent and received), oldest first.
    /// Also works for groups this client has left.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`] if the client was never in the group.
    pub async fn history(&self, group: &GroupId, limit: usize) -> Result<Vec<ReceivedMessage>> {
        self.inner
            .locked(|s| {
                let known = s
                    .db()
                    .query_row(
                        "SELECT 1 FROM pqmls_groups WHERE group_id = ?1",
                        [&group.0],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !known {
                    return Err(Error::UnknownGroup(group.clone()));
                }
                let mut rows: Vec<ReceivedMessage> = s
                    .db()
                    .prepare(
                        "SELECT seq, sender, body, epoch, sent_ms, own, sender_id FROM pqmls_messages
                         WHERE group_id = ?1 ORDER BY seq DESC LIMIT ?2",
                    )?
                    .query_map(rusqlite::params![group.0, db::to_i64(limit as u64)], |r| {
                        let id: Option<Vec<u8>> = r.get(6)?;
                        Ok(ReceivedMessage {
                            group: group.clone(),
                            seq: r.get(0)?,
                            sender: Member {
                                id: UserId::from_bytes(
                                    id.and_then(|i| i.try_into().ok()).unwrap_or([0; 32]),
                                ),
                                name: r.get(1)?,
                            },
                            body: r.get(2)?,
                            epoch: db::to_u64(r.get(3)?),
                            sent_ms: db::to_u64(r.get(4)?),
                            own: r.get(5)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                rows.reverse();
                Ok(rows)
            })
            .await
    }

    /// Who was in the group at `epoch` on this client's branch (`None` if this client was
    /// not in the group then, or the epoch is older than the records kept: 256 epochs).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn members_at(&self, group: &GroupId, epoch: u64) -> Result<Option<Vec<Member>>> {
        self.inner.locked(|s| s.members_at(group, epoch)).await
    }

    /// The invitations waiting for consent, oldest first.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn invitations(&self) -> Result<Vec<Invitation>> {
        self.inner.locked(|s| s.invitations()).await
    }

    /// Accepts a pending invitation: joins the group from its Welcome ([`Event::Joined`]).
    ///
    /// # Errors
    /// [`Error::UnknownInvitation`]; [`Error::InvitationUnusable`] if its Welcome can no
    /// longer be used (its key package was used or replaced meanwhile).
    pub async fn accept(&self, invitation: u64) -> Result<()> {
        let joined = self
            .inner
            .locked(|s| s.accept_invitation(invitation))
            .await?;
        self.inner.drive().await;
        if joined {
            Ok(())
        } else {
            Err(Error::InvitationUnusable(invitation))
        }
    }

    /// Declines a pending invitation (it is forgotten; the inviter is not told).
    ///
    /// # Errors
    /// [`Error::UnknownInvitation`].
    pub async fn decline(&self, invitation: u64) -> Result<()> {
        self.inner
            .locked(|s| s.decline_invitation(invitation))
            .await
    }

    /// Stores `user` as a contact under `label` (replacing the label if they are one).
    /// Invitations from contacts are joined without asking under
    /// [`crate::InvitePolicy::Contacts`], and someone showing a contact's label under
    /// another key is reported ([`Event::ContactKeyChanged`]).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn add_contact(&self, user: &UserId, label: &str) -> Result<()> {
        self.inner
            .locked(|s| {
                s.db().execute(
                    "INSERT OR REPLACE INTO pqmls_contacts (user_id, label, added_ms) VALUES (?1, ?2, ?3)",
                    rusqlite::params![&user.as_bytes()[..], label, db::to_i64(s.wall_ms())],
                )?;
                Ok(())
            })
            .await
    }

    /// Forgets a contact.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn remove_contact(&self, user: &UserId) -> Result<()> {
        self.inner
            .locked(|s| {
                s.db().execute(
                    "DELETE FROM pqmls_contacts WHERE user_id = ?1",
                    [&user.as_bytes()[..]],
                )?;
                Ok(())
            })
            .await
    }

    /// The contacts, by label (`name` is the label).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn contacts(&self) -> Result<Vec<Member>> {
        self.inner
            .locked(|s| {
                let rows: Vec<(Vec<u8>, String)> = s
                    .db()
                    .prepare("SELECT user_id, label FROM pqmls_contacts ORDER BY label, user_id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(id, label)| {
                        Some(Member {
                            id: UserId::from_bytes(id.try_into().ok()?),
                            name: label,
                        })
                    })
                    .collect())
            })
            .await
    }

    /// Catches up every group and the inbox from the store nodes now, and waits for it.
    ///
    /// # Errors
    /// [`Error::Transport`] if no store answers.
    pub async fn sync(&self) -> Result<()> {
        let topics = self.inner.all_topics().await;
        for t in topics {
            self.inner.sync_topic(&t).await?;
        }
        self.inner.drive().await;
        Ok(())
    }

    /// Counters of what this client handled.
    pub async fn stats(&self) -> Stats {
        self.inner.state.lock().await.stats.clone()
    }

    /// Number of payloads still waiting in the outbox.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn outbox_len(&self) -> Result<usize> {
        self.inner
            .locked(|s| {
                let n: i64 = s
                    .db()
                    .query_row("SELECT COUNT(*) FROM pqmls_outbox", [], |r| r.get(0))?;
                Ok(usize::try_from(n).unwrap_or(0))
            })
            .await
    }

    /// Simulation hook ([`crate::sim`]): runs `f` on the client's state machine under its
    /// lock.
    pub(crate) async fn with_state<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        self.inner.locked(f).await
    }

    /// Waits (up to 20 s) until the directory holds `user`'s last-resort key package.
    pub(crate) async fn wait_for_key_packages(&self, user: &UserId) -> Result<()> {
        let key = directory::key_package_key(user, Slot::LastResort);
        for _ in 0..400 {
            if let Ok(Some(b)) = self.inner.transport.get(key.clone()).await
                && !b.is_empty()
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(Error::NoKeyPackage(*user))
    }

    /// Test hook: row counts of the tables others can make this client fill.
    #[doc(hidden)]
    pub async fn table_sizes(&self) -> Result<BTreeMap<&'static str, u64>> {
        self.inner.locked(|s| s.table_sizes()).await
    }

    /// Test hook: moves this client's wall clock forward (key-package rotation and
    /// expiry), as if that much time had passed.
    #[doc(hidden)]
    pub async fn skew_clock(&self, by: std::time::Duration) {
        let mut s = self.inner.state.lock().await;
        s.clock_skew_ms = s
            .clock_skew_ms
            .saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        drop(s);
        self.inner.key_packages_due.store(true, Ordering::Relaxed);
    }

    /// Test hook: refreshes this client's key packages in the directory now (rotation,
    /// claimed slots) instead of at the next periodic check.
    #[doc(hidden)]
    pub async fn refresh_key_packages(&self) {
        self.inner.check_claims().await;
        self.inner.key_packages_due.store(true, Ordering::Relaxed);
        self.inner.publish_key_packages().await;
    }

    /// Number of peers in this client's gossip mesh for the group's topic (over Waku, the
    /// relay mesh of the group's shard): the peers it forwards the group's messages to at
    /// once. `None` for a client without a network node. A client connected only to a
    /// node whose mesh is full (gossipsub keeps at most 12 mesh peers per topic, 8 on
    /// Waku relay) is pruned from it and has none: it then gets the group's messages only
    /// by gossip or catch-up.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the node has stopped.
    pub async fn mesh_peers(&self, group: &GroupId) -> Result<Option<usize>> {
        let Some(node) = &self.inner.node else {
            return Ok(None);
        };
        let peers = match self.inner.relay_shard {
            Some(shard) => node.relay_mesh_peers(shard).await?,
            None => node.mesh_peers(&wire::group_topic(&group.0)).await?,
        };
        Ok(Some(peers))
    }

    /// Waits (up to 20 s) until the group's topic has a gossip peer (libp2p only; over
    /// Waku, the relay shard of the group's content topic).
    pub(crate) async fn wait_for_mesh(&self, group: &GroupId) -> Result<()> {
        for _ in 0..400 {
            match self.mesh_peers(group).await? {
                None => return Ok(()),
                Some(peers) if peers > 0 => return Ok(()),
                Some(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(Error::Transport(pqmls_transport::Error::NoPeers))
    }

    /// Stops the background task (and the node, if the client started it). Everything is
    /// already persisted; reopening the data directory resumes.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Some(node) = &self.inner.node {
            let _ = node.clone().shutdown().await;
        }
    }
}

impl State {
    /// The members of an active group, or the right error.
    fn member_list_checked(&self, gid: &GroupId) -> Result<Vec<(u32, Member)>> {
        self.active_members(gid)
    }
}

impl Inner {
    /// Runs `f` on the state, then reports its events.
    async fn locked<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut s = self.state.lock().await;
        if s.crashed {
            return Err(Error::Shutdown);
        }
        let r = blocking(|| f(&mut s));
        let events = std::mem::take(&mut s.events);
        if s.crashed {
            let _ = self.stop.send(true);
        }
        drop(s);
        self.emit(events);
        r
    }

    fn emit(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.retain(|l| events.iter().all(|e| l.send(e.clone()).is_ok()));
        }
    }

    async fn all_topics(&self) -> Vec<Topic> {
        let s = self.state.lock().await;
        let mut t = vec![s.inbox.clone()];
        t.extend(s.groups.values().map(|g| g.topic.clone()));
        t
    }

    fn want_sync(&self, topic: Topic) {
        if let Ok(mut p) = self.syncs.lock() {
            p.wanted.insert(topic, ());
        }
    }

    /// After we published one of our messages on `topic`: a catch-up of the topic one
    /// `sync_backoff` later (not at once: the stores need the time to take it), which
    /// brings our message back if a store took it ([`Event::Stored`]). Messages sent in a
    /// burst share one catch-up.
    fn want_sync_after_publish(&self, topic: Topic) {
        if let Ok(mut p) = self.syncs.lock() {
            let now = Instant::now();
            p.last.insert(topic.clone(), now);
            p.wanted.insert(topic, ());
        }
    }

    /// Does what the state machine asked for, until it asks for nothing more.
    async fn drive(&self) {
        for _ in 0..16 {
            let todo = {
                let mut s = self.state.lock().await;
                if s.crashed {
                    return;
                }
                std::mem::take(&mut s.todo)
            };
            let mut idle = true;
            for t in todo.unsubscribe {
                let _ = self.transport.unsubscribe(&t).await;
            }
            for t in todo.subscribe {
                idle = false;
                if let Err(e) = self.transport.subscribe(&t).await {
                    tracing::warn!("subscribing failed: {e}");
                }
                self.want_sync(t);
            }
            if todo.flush {
                self.flush().await;
            }
            if todo.key_packages {
                self.key_packages_due.store(true, Ordering::Relaxed);
                self.publish_key_packages().await;
            }
            for (id, user) in todo.fetch {
                idle = false;
                let group = self.intent_group(id).await;
                match (self.fetch_key_package(&user).await, group) {
                    (Ok(kp), Some(gid)) => {
                        let _ = self
                            .locked(|s| s.set_intent_key_package(&gid, id, kp))
                            .await;
                    }
                    (Err(Error::NoKeyPackage(_)), _) | (_, None) => {
                        let _ = self.locked(|s| s.abandon_intent(id)).await;
                    }
                    (Err(e), _) => tracing::warn!("fetching a key package for {user} failed: {e}"),
                }
                self.state.lock().await.fetching.remove(&id);
            }
            let topics: Vec<Topic> = {
                let s = self.state.lock().await;
                todo.sync
                    .iter()
                    .filter_map(|g| s.groups.get(g).map(|g| g.topic.clone()))
                    .collect()
            };
            for t in topics {
                self.want_sync(t);
            }
            if idle {
                return;
            }
        }
    }

    async fn intent_group(&self, id: i64) -> Option<GroupId> {
        let s = self.state.lock().await;
        s.db()
            .query_row(
                "SELECT group_id FROM pqmls_intents WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
            .map(GroupId)
    }

    /// Publishes the outbox in order; what the transport refuses stays for the next try.
    /// Order is kept per topic: a refused payload holds back the later ones of its topic
    /// only (a group nobody else has joined yet must not block a Welcome to an inbox).
    async fn flush(&self) {
        let _guard = self.flush_lock.lock().await;
        let mut blocked: Vec<String> = Vec::new();
        let mut after = 0i64;
        loop {
            let rows: Vec<(i64, String, Vec<u8>)> = {
                let s = self.state.lock().await;
                if s.crashed {
                    return;
                }
                let rows = s
                    .db()
                    .prepare_cached(
                        "SELECT seq, topic, payload FROM pqmls_outbox WHERE seq > ?1 ORDER BY seq LIMIT 64",
                    )
                    .and_then(|mut st| {
                        st.query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                            .collect::<Result<Vec<_>, _>>()
                    });
                match rows {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!("reading the outbox failed: {e}");
                        return;
                    }
                }
            };
            if rows.is_empty() {
                self.outbox_pending
                    .store(!blocked.is_empty(), Ordering::Relaxed);
                return;
            }
            // Rows the transport took, deleted together after the batch: one transaction
            // (one fsync) per batch instead of one per row. A crash before the delete
            // publishes them again after the restart, which receivers drop as duplicates
            // (the same as a crash right after publishing one row).
            let mut sent: Vec<i64> = Vec::new();
            for (seq, topic, payload) in rows {
                after = seq;
                if blocked.contains(&topic) {
                    continue;
                }
                let own_message = crate::wire::is_application(&payload);
                let done = match Topic::parse(&topic) {
                    None => true,
                    Some(t) => match self.transport.publish(&t, payload).await {
                        Ok(_) if own_message => {
                            self.want_sync_after_publish(t);
                            true
                        }
                        Ok(_) | Err(pqmls_transport::Error::Duplicate) => true,
                        Err(pqmls_transport::Error::MessageTooLarge { .. }) => {
                            tracing::error!(
                                "dropping an outbox payload the transport cannot carry"
                            );
                            true
                        }
                        Err(e) => {
                            tracing::debug!("publish deferred: {e}");
                            false
                        }
                    },
                };
                let mut s = self.state.lock().await;
                if !done {
                    s.stats.publish_failures += 1;
                    blocked.push(topic);
                    continue;
                }
                s.stats.published += 1;
                if s.fail(FailPoint::SendAfterPublish).is_err() {
                    let _ = self.stop.send(true);
                    return;
                }
                sent.push(seq);
            }
            if sent.is_empty() {
                continue;
            }
            let s = self.state.lock().await;
            if s.crashed {
                return;
            }
            if let Err(e) = blocking(|| delete_outbox_rows(s.db(), &sent)) {
                tracing::error!("outbox delete failed: {e}");
                return;
            }
        }
    }

    /// Refreshes this client's key packages in the directory.
    async fn publish_key_packages(&self) {
        if !self.key_packages_due.load(Ordering::Relaxed) {
            return;
        }
        let todo = match self.locked(|s| s.key_packages_to_publish()).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("key packages: {e}");
                return;
            }
        };
        let mut ok = true;
        for (slot, key, blob) in todo {
            match self.transport.put(key, blob).await {
                Ok(()) => {
                    let _ = self.locked(|s| s.key_package_published(slot)).await;
                }
                Err(e) => {
                    tracing::debug!("publishing a key package failed: {e}");
                    ok = false;
                }
            }
        }
        self.key_packages_due.store(!ok, Ordering::Relaxed);
    }

    /// A usable key package of `user` from the directory, as bytes: a one-time one if one
    /// is left unclaimed (claimed here, see [`crate::directory`]), else the last-resort one.
    /// Every entry must be signed by `user`'s key over its directory key; what is not is
    /// skipped, whoever wrote it and whichever store served it. Of the candidates a
    /// directory returns for a slot ([`Transport::get_all`]), the valid one with the highest
    /// sequence number is used, so a newer blob planted by someone else hides nothing.
    async fn fetch_key_package(&self, user: &UserId) -> Result<Vec<u8>> {
        let mut last_error = None;
        for i in 0..64u32 {
            let key = directory::key_package_key(user, Slot::OneTime(i));
            let blobs = self.transport.get_all(key.clone()).await?;
            if blobs.is_empty() {
                break;
            }
            let kp = match self
                .locked(|s| s.best_key_package(user, &key, &blobs))
                .await
            {
                Ok(kp) => kp,
                Err(e) => {
                    tracing::debug!("skipping key package {i} of {}: {e}", user.short());
                    last_error = Some(e);
                    continue;
                }
            };
            let claim = directory::claim_key(user, &kp);
            if self.transport.get(claim.clone()).await?.is_some() {
                continue;
            }
            match self.transport.put(claim, Vec::new()).await {
                Ok(()) => return Ok(kp),
                // Another inviter claimed it first (the store keeps the first claim).
                Err(pqmls_transport::Error::Refused(_) | pqmls_transport::Error::EntryRejected) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let key = directory::key_package_key(user, Slot::LastResort);
        let blobs = self.transport.get_all(key.clone()).await?;
        if !blobs.is_empty() {
            return self
                .locked(|s| s.best_key_package(user, &key, &blobs))
                .await;
        }
        Err(last_error.unwrap_or(Error::NoKeyPackage(*user)))
    }

    /// Marks our one-time key packages that an inviter claimed, so they are replaced.
    async fn check_claims(&self) {
        let claims = match self.locked(|s| s.own_claim_keys()).await {
            Ok(c) => c,
            Err(_) => return,
        };
        let mut claimed = false;
        for (slot, key) in claims {
            if let Ok(Some(_)) = self.transport.get(key).await {
                claimed = true;
                let _ = self.locked(|s| s.mark_claimed(slot)).await;
            }
        }
        if claimed {
            self.key_packages_due.store(true, Ordering::Relaxed);
        }
    }

    /// Reads `topic`'s history after the saved cursor and handles it.
    /// The cursor does not move past the first payload that was deferred (see
    /// [`Outcome::Deferred`]), so the next catch-up brings it again; what was handled is
    /// then skipped cheaply by its seen id.
    async fn sync_topic(&self, topic: &Topic) -> Result<()> {
        let from = self.locked(|s| s.cursor(topic)).await?;
        let (messages, cursor, more) = full_history(self.transport.as_ref(), topic, from).await?;
        let skip: Vec<bool> = match self.syncs.lock() {
            Ok(p) => messages
                .iter()
                .map(|m| p.handled.set.contains(&m.id))
                .collect(),
            Err(_) => vec![false; messages.len()],
        };
        let (handled, held, fresh, merged) = self
            .locked(|s| {
                let mut held: Option<pqmls_transport::store::Cursor> = None;
                let mut before = from;
                let mut handled = Vec::new();
                let mut fresh = 0usize;
                for (m, skip) in messages.iter().zip(&skip) {
                    if *skip {
                        before = pqmls_transport::store::Cursor::after(m);
                        continue;
                    }
                    // Our own message back from a store: the delivery mark.
                    s.mark_stored(&MessageId::compute(&m.topic, &m.data))?;
                    let known = s.is_seen(&m.id)?;
                    if s.handle(m)? == Outcome::Deferred {
                        if held.is_none() {
                            held = Some(before);
                        }
                    } else if s.is_seen(&m.id)? {
                        fresh += usize::from(!known);
                        handled.push(m.id);
                    }
                    before = pqmls_transport::store::Cursor::after(m);
                }
                Ok((handled, held, fresh, s.stats.commits_merged))
            })
            .await?;
        // A cursor held at one place for SYNC_HOLD_TRIES catch-ups in a row moves on,
        // unless they made progress: a payload handled for the first time (as one
        // working through a budget does), or a commit merged since the last (the epoch
        // a deferred payload waits for may have come by other ways), which start the
        // count again.
        let hold = held.filter(|at| {
            let Ok(mut p) = self.syncs.lock() else {
                return true;
            };
            let tries = match p.held.get(topic) {
                Some((c, n, m)) if c == at && fresh == 0 && *m == merged => n.saturating_add(1),
                _ => 1,
            };
            if tries > SYNC_HOLD_TRIES {
                p.held.remove(topic);
                tracing::debug!(
                    "catch-up of {topic}: deferred payloads held the cursor {SYNC_HOLD_TRIES} times: moving on"
                );
                false
            } else {
                p.held.insert(topic.clone(), (*at, tries, merged));
                true
            }
        });
        if hold.is_none()
            && let Ok(mut p) = self.syncs.lock()
        {
            p.held.remove(topic);
        }
        self.locked(|s| s.set_cursor(topic, hold.unwrap_or(cursor)))
            .await?;
        for id in &handled {
            self.transport.handled(id);
        }
        if let Ok(mut p) = self.syncs.lock() {
            for id in handled {
                p.handled.insert(id);
            }
            p.last.insert(topic.clone(), Instant::now());
            if more {
                // Bounded per catch-up (`net::full_history`): the rest after the backoff.
                p.wanted.insert(topic.clone(), ());
            }
        }
        Ok(())
    }

    /// One tick of the timer.
    async fn tick(&self) {
        let now = Instant::now();
        let connected = self.transport.connected();
        let settled = self
            .locked(|s| {
                s.settle_due(now)?;
                s.finalize_removals(now)?;
                s.expire_snapshots()?;
                s.rejoin_due(now)?;
                let followup = s.last_followup.is_none_or(|t| now >= t + s.config.settle);
                if followup {
                    // Ages are minutes (the replaced states' grace 30 s); once per
                    // settle time is enough.
                    s.expire_past_secrets()?;
                    s.expire_replaced()?;
                }
                if connected && followup {
                    s.last_followup = Some(now);
                    s.republish_own(now)?;
                    s.ask_missing(now)?;
                }
                if connected {
                    s.ask_rejoin(now)?;
                    // A self-update made without peers would be a branch of one.
                    s.schedule_updates()?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = settled {
            tracing::warn!("{}: settling failed: {e}", self.name);
        }
        self.drive().await;
        if self.outbox_pending.load(Ordering::Relaxed) {
            self.flush().await;
        }
        if self.key_packages_due.load(Ordering::Relaxed) {
            self.publish_key_packages().await;
        }
        self.retention_due(now).await;
        // Catch-ups: wanted ones once the backoff allows, all of them periodically.
        let (backoff, interval) = {
            let s = self.state.lock().await;
            (s.config.sync_backoff, s.config.sync_interval)
        };
        let full = match self.syncs.lock() {
            Ok(mut p) => {
                let due = interval.is_some_and(|i| p.last_full.is_none_or(|t| now >= t + i));
                if due {
                    p.last_full = Some(now);
                }
                due
            }
            Err(_) => false,
        };
        if full {
            for t in self.all_topics().await {
                // Renewed (idempotent): a subscription may have failed while offline.
                let _ = self.transport.subscribe(&t).await;
                self.want_sync(t);
            }
            // Housekeeping at the same pace: forget old seen ids, notice claimed and
            // expiring key packages.
            let due = self
                .locked(|s| {
                    s.tx(|s| s.prune_seen())?;
                    s.key_packages_due()
                })
                .await;
            self.check_claims().await;
            if due.unwrap_or(false) {
                self.key_packages_due.store(true, Ordering::Relaxed);
            }
        }
        let due: Vec<Topic> = match self.syncs.lock() {
            Ok(mut p) => {
                let due: Vec<Topic> = p
                    .wanted
                    .keys()
                    .filter(|t| p.last.get(*t).is_none_or(|l| now >= *l + backoff))
                    .cloned()
                    .collect();
                for t in &due {
                    p.wanted.remove(t);
                }
                due
            }
            Err(_) => Vec::new(),
        };
        for t in due {
            if let Err(e) = self.sync_topic(&t).await {
                tracing::debug!("{}: catch-up failed: {e}", self.name);
                if let Ok(mut p) = self.syncs.lock() {
                    p.last.insert(t.clone(), now);
                    p.wanted.insert(t, ());
                }
            }
        }
        self.drive().await;
    }

    /// Handles inbound payloads that arrived together, in one transaction
    /// ([`State::batch`]), each as its own step.
    async fn inbound(&self, msgs: Vec<pqmls_transport::Message>) {
        // Each outcome with whether the payload is now marked seen: only those are
        // reported handled to the transport (a payload of a group we do not hold is
        // `Done` but not seen, so that the catch-up after a (re)join reads it).
        let outcomes = self
            .locked(|s| {
                s.batch(|s| {
                    msgs.iter()
                        .map(|m| {
                            let (o, new) = s.handle_new(m)?;
                            let seen = o == Outcome::Done && s.is_seen(&m.id)?;
                            Ok((o, seen, new))
                        })
                        .collect::<Vec<Result<_>>>()
                })
            })
            .await;
        match outcomes {
            Ok(outcomes) => {
                for (msg, outcome) in msgs.iter().zip(outcomes) {
                    match outcome {
                        // Left for the store: catch this topic up later.
                        Ok((Outcome::Deferred, _, _)) => self.want_sync(msg.topic.clone()),
                        Ok((Outcome::Done, seen, new)) => {
                            if seen {
                                self.transport.handled(&msg.id);
                                if new && let Ok(mut p) = self.syncs.lock() {
                                    p.handled.insert(msg.id);
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!("{}: handling a message failed: {e}", self.name);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("{}: handling messages failed: {e}", self.name),
        }
        self.drive().await;
    }
}

/// Runs `f`, which may block on the database (SQLite, and an fsync at each commit), so
/// that it stalls no other task: on a multi-thread runtime the worker hands its other
/// tasks (this client's transport, other clients in the process, the application) to
/// another thread for the duration ([`tokio::task::block_in_place`]); on a current-thread
/// runtime, where that is not possible, `f` runs as it is.
///
/// Measured: with 50 clients on a 2-worker runtime (`e2e_commit_to_epoch/0x004F/50`),
/// the process used under one CPU of two while a commit was in flight, both workers
/// waiting in fsync with gossip to forward (BENCHMARKS.md, nineteenth session).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Deletes published outbox rows in one transaction.
fn delete_outbox_rows(db: &rusqlite::Connection, seqs: &[i64]) -> rusqlite::Result<()> {
    db.execute_batch("BEGIN IMMEDIATE")?;
    let deleted = seqs.iter().try_for_each(|seq| {
        db.prepare_cached("DELETE FROM pqmls_outbox WHERE seq = ?1")?
            .execute([seq])
            .map(drop)
    });
    match deleted {
        Ok(()) => db.execute_batch("COMMIT"),
        Err(e) => {
            let _ = db.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Most inbound payloads handled in one transaction (see [`State::batch`]).
const INBOUND_BATCH: usize = 32;

/// The background task: inbound messages and the timer, until stopped.
async fn run(
    inner: std::sync::Weak<Inner>,
    mut inbox: Inbox,
    mut stop: watch::Receiver<bool>,
    tick: std::time::Duration,
) {
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbox_open = true;
    loop {
        tokio::select! {
            biased;
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
            m = inbox.next(), if inbox_open => {
                match m {
                    Some(m) => {
                        // What is queued already joins it, up to a bound.
                        let mut msgs = vec![m];
                        while msgs.len() < INBOUND_BATCH {
                            match inbox.next().now_or_never() {
                                Some(Some(m)) => msgs.push(m),
                                Some(None) => {
                                    inbox_open = false;
                                    break;
                                }
                                None => break,
                            }
                        }
                        match inner.upgrade() {
                            Some(i) => i.inbound(msgs).await,
                            None => break,
                        }
                    }
                    None => inbox_open = false,
                }
            }
            _ = timer.tick() => match inner.upgrade() {
                Some(i) => i.tick().await,
                None => break,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::blocking;

    /// While `blocking` runs on the only worker of a multi-thread runtime, the worker's
    /// other tasks still run: here the one that `f` waits for. Run inline (what the state
    /// machine did before), `f` holds the only worker and the sender never runs.
    #[test]
    fn blocking_work_leaves_the_other_tasks_running() {
        #![allow(clippy::unwrap_used)]
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
            // Sends once the waiter is inside `blocking`, waiting.
            let sender = tokio::spawn(async move {
                if ready_rx.await.is_ok() {
                    let _ = tx.send(7);
                }
            });
            let waiter = tokio::spawn(async move {
                blocking(move || {
                    let _ = ready_tx.send(());
                    rx.recv_timeout(std::time::Duration::from_secs(5)).ok()
                })
            });
            let got = waiter.await.unwrap();
            sender.await.unwrap();
            got
        });
        assert_eq!(got, Some(7));
    }

    /// On a current-thread runtime (the simulation, most tests) `f` runs as it is
    /// (`block_in_place` would panic there).
    #[tokio::test]
    async fn blocking_runs_inline_on_a_current_thread_runtime() {
        assert_eq!(blocking(|| 7), 7);
    }
}
