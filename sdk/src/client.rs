//! The async client: a handle over the state machine of [`crate::engine`], a background
//! task that feeds it the network and its timer, and the outbox that publishes what it
//! produced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use futures::StreamExt;
use openmls::prelude::*;
use pqmls_provider::{PqCrypto, SqliteStorage};
use pqmls_transport::{Node, Topic};
use rusqlite::OptionalExtension;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, DATABASE_FILE, FailPoint};
use crate::db;
use crate::engine::{Group, State, Todo};
use crate::error::{Error, Result};
use crate::event::{Event, Events, ReceivedMessage};
use crate::net::{Inbox, Transport, full_history};
use crate::offline::check_name;
use crate::wire::{self, Slot, Wire};
use crate::{GroupId, GroupStatus, Stats};

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
    suite: Ciphersuite,
    public_key: Vec<u8>,
    /// Topics to catch up and when each was last caught up.
    syncs: StdMutex<SyncPlan>,
    /// Retry flags for work that failed on the network.
    outbox_pending: AtomicBool,
    key_packages_due: AtomicBool,
    node: Option<Node>,
    task: StdMutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct SyncPlan {
    wanted: BTreeMap<Topic, ()>,
    last: BTreeMap<Topic, Instant>,
    last_full: Option<Instant>,
}

impl Client {
    /// Starts a libp2p node with `node` and opens a client on it. The node gets a validator
    /// that rejects payloads which are not pqmls messages, and is shut down with the client.
    ///
    /// # Errors
    /// As [`Client::open`], plus [`Error::Transport`] if the node cannot start.
    pub async fn start(config: Config, node: pqmls_transport::node::Config) -> Result<Client> {
        let node = node.with_validator(|_: &Topic, data: &[u8]| {
            if Wire::decode(data).is_some() {
                pqmls_transport::Verdict::Accept
            } else {
                pqmls_transport::Verdict::Reject
            }
        });
        let (node, inbound) = Node::start(node).await?;
        let transport: Arc<dyn Transport> = Arc::new(node.clone());
        Self::open_inner(config, transport, inbound.boxed(), Some(node)).await
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
        Self::open_inner(config, transport, inbox, None).await
    }

    async fn open_inner(
        config: Config,
        transport: Arc<dyn Transport>,
        inbox: Inbox,
        node: Option<Node>,
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
        let storage = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                SqliteStorage::open_file(dir.join(DATABASE_FILE))?
            }
            None => SqliteStorage::open_in_memory()?,
        };
        db::migrate(storage.connection())?;
        let (signer, _) = crate::offline::load_or_create_signer(storage.connection(), &config)?;
        let public_key = signer.public().to_vec();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(config.name.as_bytes().to_vec()).into(),
            signature_key: public_key.clone().into(),
        };
        let crypto = PqCrypto::new().map_err(|e| Error::Crypto(format!("{e:?}")))?;
        let provider = pqmls_provider::Provider::from_parts(crypto, storage);
        let inbox_topic = wire::inbox_topic(&config.name);
        let mut state = State {
            provider,
            signer,
            credential,
            name: config.name.clone(),
            config: config.clone(),
            groups: BTreeMap::new(),
            topics: BTreeMap::new(),
            inbox: inbox_topic.clone(),
            events: Vec::new(),
            todo: Todo::default(),
            stats: Stats::default(),
            crashed: false,
            armed: None,
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
            suite: config.suite,
            public_key,
            syncs: StdMutex::new(SyncPlan::default()),
            outbox_pending: AtomicBool::new(true),
            key_packages_due: AtomicBool::new(true),
            node,
            task: StdMutex::new(None),
        });
        for topic in &subscribe {
            inner.transport.subscribe(topic).await?;
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

    /// This client's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This client's cipher suite.
    pub fn suite(&self) -> Ciphersuite {
        self.inner.suite
    }

    /// This client's signature public key (as in its credential).
    pub fn public_key(&self) -> &[u8] {
        &self.inner.public_key
    }

    /// The libp2p node, when the client was started with [`Client::start`].
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

    /// Invites `user`: fetches one of their key packages from the directory and commits
    /// their addition. Returns once the commit is published; the user is a member when it is
    /// merged ([`Event::MemberJoined`]), and joins on their side from the Welcome that is
    /// then sent to them. If a competing commit wins the epoch, the invitation is committed
    /// again in the next one.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`], [`Error::AlreadyMember`],
    /// [`Error::NoKeyPackage`] if the directory has none for the user,
    /// [`Error::InvalidKeyPackage`] if what it has is unusable, [`Error::Transport`].
    pub async fn invite(&self, group: &GroupId, user: &str) -> Result<()> {
        check_name(user)?;
        self.inner
            .locked(|s| {
                if s.member_list_checked(group)?.iter().any(|(_, n)| n == user) {
                    return Err(Error::AlreadyMember {
                        group: group.clone(),
                        user: user.to_owned(),
                    });
                }
                Ok(())
            })
            .await?;
        let kp = self.inner.fetch_key_package(user).await?;
        self.inner
            .locked(|s| s.add_intent(group, "add", user, Some(kp)))
            .await?;
        self.inner.drive().await;
        Ok(())
    }

    /// Removes `user` from the group (committed like an invitation).
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`], [`Error::UnknownMember`],
    /// [`Error::RemoveSelf`] for the client's own name.
    pub async fn remove(&self, group: &GroupId, user: &str) -> Result<()> {
        self.inner
            .locked(|s| {
                if user == s.name {
                    s.member_list_checked(group)?;
                    return Err(Error::RemoveSelf(group.clone()));
                }
                if !s.member_list_checked(group)?.iter().any(|(_, n)| n == user) {
                    return Err(Error::UnknownMember {
                        group: group.clone(),
                        user: user.to_owned(),
                    });
                }
                s.add_intent(group, "remove", user, None)
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
                s.add_intent(group, "leave", "", None)
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
                s.add_intent(group, "update", "", None)
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

    /// The member names of a group, in leaf order.
    ///
    /// # Errors
    /// [`Error::UnknownGroup`], [`Error::NotMember`].
    pub async fn members(&self, group: &GroupId) -> Result<Vec<String>> {
        self.inner
            .locked(|s| {
                Ok(s.member_list_checked(group)?
                    .into_iter()
                    .map(|(_, n)| n)
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
                    .map(|(_, n)| n)
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
                        "SELECT seq, sender, body, epoch, sent_ms, own FROM pqmls_messages
                         WHERE group_id = ?1 ORDER BY seq DESC LIMIT ?2",
                    )?
                    .query_map(rusqlite::params![group.0, db::to_i64(limit as u64)], |r| {
                        Ok(ReceivedMessage {
                            group: group.clone(),
                            seq: r.get(0)?,
                            sender: r.get(1)?,
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
    /// not in the group then, or the epoch is older than the rollback window's records).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn members_at(&self, group: &GroupId, epoch: u64) -> Result<Option<Vec<String>>> {
        self.inner.locked(|s| s.members_at(group, epoch)).await
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

    /// Waits (up to 20 s) until the directory holds `user`'s last-resort key package.
    pub(crate) async fn wait_for_key_packages(&self, user: &str) -> Result<()> {
        let key = wire::key_package_key(user, Slot::LastResort);
        for _ in 0..400 {
            if let Ok(Some(b)) = self.inner.transport.get(key.clone()).await
                && !b.is_empty()
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(Error::NoKeyPackage(user.to_owned()))
    }

    /// Waits (up to 20 s) until the group's topic has a gossip peer (libp2p only).
    pub(crate) async fn wait_for_mesh(&self, group: &GroupId) -> Result<()> {
        let Some(node) = &self.inner.node else {
            return Ok(());
        };
        let topic = wire::group_topic(&group.0);
        for _ in 0..400 {
            if node.mesh_peers(&topic).await? > 0 {
                return Ok(());
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
    fn member_list_checked(&self, gid: &GroupId) -> Result<Vec<(u32, String)>> {
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
        let r = f(&mut s);
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
            for (seq, topic, payload) in rows {
                after = seq;
                if blocked.contains(&topic) {
                    continue;
                }
                let done = match Topic::parse(&topic) {
                    None => true,
                    Some(t) => match self.transport.publish(&t, payload).await {
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
                if let Err(e) = s
                    .db()
                    .prepare_cached("DELETE FROM pqmls_outbox WHERE seq = ?1")
                    .and_then(|mut st| st.execute([seq]))
                {
                    tracing::error!("outbox delete failed: {e}");
                    return;
                }
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

    /// A usable key package of `user` from the directory: a one-time one if any is left
    /// (claimed by overwriting its slot with an empty entry), else the last-resort one.
    async fn fetch_key_package(&self, user: &str) -> Result<Vec<u8>> {
        let mut last_error = None;
        for i in 0..64u32 {
            let key = wire::key_package_key(user, Slot::OneTime(i));
            let Some(blob) = self.transport.get(key.clone()).await? else {
                break;
            };
            if blob.is_empty() {
                continue;
            }
            match self
                .locked(|s| s.check_key_package(user, &blob).map(|_| ()))
                .await
            {
                Ok(()) => {
                    self.transport.put(key, Vec::new()).await?;
                    return Ok(blob);
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(blob) = self
            .transport
            .get(wire::key_package_key(user, Slot::LastResort))
            .await?
            .filter(|b| !b.is_empty())
        {
            self.locked(|s| s.check_key_package(user, &blob).map(|_| ()))
                .await?;
            return Ok(blob);
        }
        Err(last_error.unwrap_or_else(|| Error::NoKeyPackage(user.to_owned())))
    }

    /// Reads `topic`'s history after the saved cursor and handles it.
    async fn sync_topic(&self, topic: &Topic) -> Result<()> {
        let from = self.locked(|s| s.cursor(topic)).await?;
        let (messages, cursor) = full_history(self.transport.as_ref(), topic, from).await?;
        self.locked(|s| {
            for m in &messages {
                s.handle(m)?;
            }
            s.set_cursor(topic, cursor)
        })
        .await?;
        if let Ok(mut p) = self.syncs.lock() {
            p.last.insert(topic.clone(), Instant::now());
        }
        Ok(())
    }

    /// One tick of the timer.
    async fn tick(&self) {
        let now = Instant::now();
        let settled = self
            .locked(|s| {
                s.settle_due(now)?;
                s.finalize_removals(now)?;
                s.request_rejoins(now)?;
                s.schedule_updates()
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
                self.want_sync(t);
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

    /// Handles one inbound payload.
    async fn inbound(&self, msg: pqmls_transport::Message) {
        if let Err(e) = self.locked(|s| s.handle(&msg)).await {
            tracing::warn!("{}: handling a message failed: {e}", self.name);
        }
        self.drive().await;
    }
}

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
                    Some(m) => match inner.upgrade() {
                        Some(i) => i.inbound(m).await,
                        None => break,
                    },
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
