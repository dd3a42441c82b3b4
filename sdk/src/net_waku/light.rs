//! Light-client mode's services: which lightpush and filter service a light client uses,
//! and moving to another when one fails.
//!
//! The named service ([`super::Config::light_service`]) comes first, then up to
//! [`super::Config::discovered_light_services`] connected peers that announce the
//! protocol and relay our shard (identify and metadata, `Node::service_peers_on`). A
//! service that failed is asked after the others for
//! [`super::Config::light_service_retry`]. What counts as failing is decided by
//! [`after_error`]: errors of our own node (busy, shut down) and rate limits (429) are
//! "try again later", never a reason to leave a service; a lightpush 429 from the named
//! service is not a reason to push through a discovered one either (whoever fills its
//! read slots would choose where our messages go): the outbox tries again later.
//! - **Lightpush**: a message goes to the first service that takes it. A refusal of the
//!   message itself (400, 413) ends the attempt only when the named service gives it; a
//!   discovered service's is its failure (a hostile one could otherwise stop every
//!   push). A message taken by a discovered service is also pushed through the next
//!   service if there is one, in the background: relay drops the second copy (same Waku
//!   hash), and one unvouched service cannot drop the message alone; it also tells a
//!   second stranger that this node sent the message.
//! - **Filter**: the subscriptions are held with one service at a time. `Light` keeps the
//!   topics wanted and those the current service holds, under one lock: subscribing a
//!   topic already held sends nothing (the node renews its criteria every minute itself),
//!   so the client's renewals at every full catch-up cost no requests and no rate. A
//!   subscription that fails for a reason of the service's moves every wanted topic to
//!   the next service; the old service's criteria are then dropped (unsubscribe-all,
//!   which the node applies locally at once even when the service does not answer), so
//!   nothing is renewed with it and its pushes are refused. A watcher runs every
//!   [`super::Config::filter_ping_interval`]: it moves back to the named service once that
//!   one is out of its cool-down and takes the subscriptions, else pings the current one
//!   (filter v2's ping; a 404 means it holds nothing of ours, after a restart say, and
//!   the topics are subscribed there again) or, if wanted topics are not held there yet
//!   (a 429 refused them), subscribes them instead of pinging; it moves on when that
//!   fails, and, when no service holds the topics, tries again. One request per watch
//!   at most when nothing fails (a ping every 30 s by default, against the 30 a minute a
//!   filter service allows a peer). While no service holds them, a subscription tries
//!   the services at most once per watch, so a service that stalls costs request
//!   timeouts per watch, not per topic; and a subscription made while a watch holds the
//!   state (waiting on a stalling service, say) does not wait for it: the topic is left
//!   for the next holder, the next watch at the latest.
//!
//! A discovered service is not vouched for. It can withhold what it should push to us
//! (the catch-up from stores brings that), and while it holds our subscriptions it
//! learns every topic we follow, the inbox topic among them, which is derived from the
//! user id: moving to a discovered service tells it who we are. It can take a push and
//! not relay it; a message that only it took is then in no store (the double push above
//! is the bound). None of it can change a member's state: MLS authenticates every
//! message. The watcher's return to the named service bounds how long a discovered
//! service keeps the subscriptions after the named one is back, as long as the named one
//! takes them: a stranger that fills the named service's subscriber table (503) keeps
//! the client at a discovered service meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pqmls_transport::waku::{ContentTopic, PubsubTopic, WakuMessage, filter, lightpush};
use pqmls_transport::{Error, Node, PeerId, Topic, WakuService};

use super::{Failures, SEGMENT, WHOLE, content_topic, topic_name};

/// What to do after a service answered a request with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Our own node's error (busy, shut down): stop, the caller retries later.
    Stop,
    /// The service is rate limiting us: not its failure; try another now, this one later.
    Later,
    /// The service failed: ask it after the others for a while, try the next.
    Failed,
}

/// What an error of a request to a service means, `named` whether it is the named one.
/// A refusal of the message itself (400, 413) from the named service stops the attempt
/// (every service would refuse it, and that one is vouched for); from a discovered one it
/// is the service's failure. A lightpush 429 from the named service stops the attempt
/// too; a filter 429 never moves the subscriptions.
pub(super) fn after_error(e: &Error, named: bool) -> Step {
    match e {
        Error::Busy | Error::Shutdown | Error::Config(_) => Step::Stop,
        Error::LightPush(r) => match r.status {
            // The named service's 429 is not a reason to give a message to strangers
            // (whoever fills its read slots would choose where our pushes go): the
            // outbox tries it again later.
            lightpush::Status::TooManyRequests if named => Step::Stop,
            lightpush::Status::TooManyRequests => Step::Later,
            lightpush::Status::BadRequest | lightpush::Status::PayloadTooLarge if named => {
                Step::Stop
            }
            _ => Step::Failed,
        },
        Error::Filter(r) if r.status == filter::Status::TooManyRequests => Step::Later,
        _ => Step::Failed,
    }
}

/// Whether a filter ping says the service is there but holds no subscription of ours.
fn not_subscribed(e: &Error) -> bool {
    matches!(e, Error::Filter(r) if r.status == filter::Status::NotFound)
}

/// The filter subscriptions: wanted, and held where.
#[derive(Debug, Default)]
struct Subscriptions {
    /// The topics the client subscribed.
    wanted: HashSet<Topic>,
    /// The service holding the subscriptions now (`None` before the first one, or after
    /// every service failed), and which of `wanted` it holds.
    current: Option<PeerId>,
    held: HashSet<Topic>,
    /// When the last move found no service: subscriptions wait for the next watch.
    no_service_since: Option<Instant>,
}

/// The services of a light client, and which one holds its filter subscriptions.
pub(super) struct Light {
    node: Node,
    shard: PubsubTopic,
    named: PeerId,
    discovered: usize,
    retry: Duration,
    watch_every: Duration,
    filter: tokio::sync::Mutex<Subscriptions>,
    /// Topics subscribed while a watch held `filter`, for the next holder to take.
    pending: Mutex<HashSet<Topic>>,
    pushes: Arc<Mutex<Failures>>,
    filters: Mutex<Failures>,
    /// Times the subscriptions moved to another service.
    moves: AtomicU64,
}

/// Notes in `failures` that `peer` answered (`ok`) or failed (asked last for `retry`).
fn note(failures: &Mutex<Failures>, peer: PeerId, ok: bool, retry: Duration) {
    if let Ok(mut f) = failures.lock() {
        if ok {
            f.succeeded(&peer);
        } else {
            f.failed_for(peer, Instant::now(), retry);
        }
    }
}

/// The settings of [`Light`].
pub(super) struct Settings {
    pub named: PeerId,
    pub discovered: usize,
    pub retry: Duration,
    pub watch_every: Duration,
}

impl Light {
    pub(super) fn new(node: Node, shard: PubsubTopic, s: Settings) -> Self {
        Self {
            node,
            shard,
            named: s.named,
            discovered: s.discovered,
            retry: s.retry,
            watch_every: s.watch_every,
            filter: tokio::sync::Mutex::new(Subscriptions::default()),
            pending: Mutex::new(HashSet::new()),
            pushes: Arc::new(Mutex::new(Failures::default())),
            filters: Mutex::new(Failures::default()),
            moves: AtomicU64::new(0),
        }
    }

    /// Times the filter subscriptions moved to another service.
    pub(super) fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// The service holding the filter subscriptions now.
    pub(super) async fn filter_service(&self) -> Option<PeerId> {
        self.filter.lock().await.current
    }

    /// The services of `service` to try, in order: the named one, then discovered ones,
    /// those that failed lately after the others.
    async fn candidates(&self, service: WakuService, failures: &Mutex<Failures>) -> Vec<PeerId> {
        let mut peers = vec![self.named];
        if self.discovered > 0 {
            let found = self
                .node
                .service_peers_on(service, self.shard.shard)
                .await
                .unwrap_or_default();
            peers.extend(
                found
                    .into_iter()
                    .filter(|p| *p != self.named)
                    .take(self.discovered),
            );
        }
        match failures.lock() {
            Ok(f) => f.order(peers, Instant::now()),
            Err(_) => peers,
        }
    }

    fn note(&self, failures: &Mutex<Failures>, peer: PeerId, ok: bool) {
        note(failures, peer, ok, self.retry);
    }

    fn cooling(&self, failures: &Mutex<Failures>, peer: &PeerId) -> bool {
        failures
            .lock()
            .is_ok_and(|f| f.cooling(peer, Instant::now()))
    }

    /// Publishes `m` through the first service that takes it (and, if that one is not the
    /// named service, through the next one too).
    pub(super) async fn push(&self, m: WakuMessage) -> pqmls_transport::Result<()> {
        let mut last = Error::Request("no lightpush service".into());
        let candidates = self.candidates(WakuService::Lightpush, &self.pushes).await;
        for (i, peer) in candidates.iter().enumerate() {
            match self
                .node
                .lightpush(*peer, Some(self.shard), m.clone())
                .await
            {
                Ok(_) => {
                    self.note(&self.pushes, *peer, true);
                    if *peer != self.named
                        && let Some(second) = candidates.get(i + 1)
                    {
                        self.push_in_background(*second, m);
                    }
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!("lightpush through {peer} failed: {e}");
                    match after_error(&e, *peer == self.named) {
                        Step::Stop => return Err(e),
                        Step::Later => {}
                        Step::Failed => self.note(&self.pushes, *peer, false),
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Pushes `m` through `peer` too, without waiting (a stalling service must not hold up
    /// the caller); a failure is noted as for any push.
    fn push_in_background(&self, peer: PeerId, m: WakuMessage) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (node, shard, pushes, retry) = (
            self.node.clone(),
            self.shard,
            self.pushes.clone(),
            self.retry,
        );
        let named = peer == self.named;
        rt.spawn(async move {
            match node.lightpush(peer, Some(shard), m).await {
                Ok(_) => note(&pushes, peer, true, retry),
                Err(e) if after_error(&e, named) == Step::Failed => {
                    note(&pushes, peer, false, retry);
                }
                Err(_) => {}
            }
        });
    }

    /// The two filter content topics of `topic`.
    fn filter_topics(topic: &Topic) -> Vec<ContentTopic> {
        [WHOLE, SEGMENT]
            .iter()
            .filter_map(|e| ContentTopic::parse(&content_topic(topic_name(topic), e)))
            .collect()
    }

    /// Subscribes every topic of `topics` with `peer`.
    async fn subscribe_all<'a>(
        &self,
        peer: PeerId,
        topics: impl IntoIterator<Item = &'a Topic>,
    ) -> pqmls_transport::Result<()> {
        let content: Vec<ContentTopic> = topics.into_iter().flat_map(Self::filter_topics).collect();
        // Filter v2 takes at most 100 content topics per request (12/WAKU2-FILTER,
        // "Subscriber"); the node refuses more.
        for chunk in content.chunks(filter::MAX_CONTENT_TOPICS_PER_REQUEST) {
            self.node.filter_subscribe(peer, self.shard, chunk).await?;
        }
        Ok(())
    }

    /// Drops every criterion held with `peer`, in the background: the node forgets them at
    /// once, whatever the service answers.
    fn drop_service(&self, peer: PeerId) {
        let node = self.node.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = node.filter_unsubscribe_all(peer).await;
            });
        }
    }

    /// Subscribes `topic` with the service holding the subscriptions (nothing is sent if
    /// it holds it already); if that service fails, every wanted topic moves to the next.
    pub(super) async fn subscribe(&self, topic: &Topic) -> pqmls_transport::Result<()> {
        let Ok(mut f) = self.filter.try_lock() else {
            // A watch is running, and may be waiting on a stalling service: the topic is
            // left for the next holder of the lock (the next watch at the latest) rather
            // than holding up the caller.
            if let Ok(mut p) = self.pending.lock() {
                p.insert(topic.clone());
            }
            return Ok(());
        };
        self.take_pending(&mut f);
        f.wanted.insert(topic.clone());
        let Some(peer) = f.current else {
            if f.no_service_since
                .is_some_and(|t| t.elapsed() < self.watch_every)
            {
                return Err(Error::Request(
                    "no filter service; the next watch tries again".into(),
                ));
            }
            return self.move_all(&mut f).await;
        };
        if f.held.contains(topic) {
            return Ok(());
        }
        match self.subscribe_all(peer, [topic]).await {
            Ok(()) => {
                f.held.insert(topic.clone());
                Ok(())
            }
            Err(e) => match after_error(&e, peer == self.named) {
                Step::Stop | Step::Later => Err(e),
                Step::Failed => {
                    tracing::info!("filter service {peer} failed a subscription: {e}");
                    self.note(&self.filters, peer, false);
                    self.move_all(&mut f).await
                }
            },
        }
    }

    /// Moves every wanted topic to the first service that takes them all, the current
    /// one last, and drops the criteria of the service left.
    async fn move_all(&self, f: &mut Subscriptions) -> pqmls_transport::Result<()> {
        self.move_all_but(f, None).await
    }

    /// As [`Light::move_all`], not asking `skip` (a service that just failed this watch).
    async fn move_all_but(
        &self,
        f: &mut Subscriptions,
        skip: Option<PeerId>,
    ) -> pqmls_transport::Result<()> {
        let old = f.current;
        let mut candidates = self.candidates(WakuService::Filter, &self.filters).await;
        candidates.retain(|p| Some(*p) != skip);
        if let Some(o) = old {
            candidates.retain(|p| *p != o);
            candidates.push(o);
        }
        let mut last = Error::Request("no filter service".into());
        for peer in candidates {
            match self.subscribe_all(peer, &f.wanted).await {
                Ok(()) => {
                    self.note(&self.filters, peer, true);
                    self.take_subscriptions(f, peer);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!("filter service {peer} failed: {e}");
                    let step = after_error(&e, peer == self.named);
                    if step == Step::Failed {
                        self.note(&self.filters, peer, false);
                    }
                    if Some(peer) != old {
                        // Some chunks may have been taken before one failed.
                        self.drop_service(peer);
                    }
                    last = e;
                    if step == Step::Stop {
                        return Err(last);
                    }
                }
            }
        }
        if let Some(o) = old.filter(|o| self.cooling(&self.filters, o)) {
            self.drop_service(o);
            f.current = None;
            f.held.clear();
        }
        f.no_service_since = Some(Instant::now());
        Err(last)
    }

    /// `peer` now holds every wanted topic; the service that held them before is dropped.
    fn take_subscriptions(&self, f: &mut Subscriptions, peer: PeerId) {
        if let Some(old) = f.current.filter(|o| *o != peer) {
            self.drop_service(old);
            self.moves.fetch_add(1, Ordering::Relaxed);
            tracing::info!("filter subscriptions moved from {old} to {peer}");
        }
        f.current = Some(peer);
        f.held = f.wanted.clone();
        f.no_service_since = None;
    }

    /// Moves the topics subscribed while a watch held the lock into `wanted`.
    fn take_pending(&self, f: &mut Subscriptions) {
        if let Ok(mut p) = self.pending.lock() {
            f.wanted.extend(p.drain());
        }
    }

    /// Unsubscribes `topic` at the service holding it.
    pub(super) async fn unsubscribe(&self, topic: &Topic) -> pqmls_transport::Result<()> {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(topic);
        }
        let mut f = self.filter.lock().await;
        self.take_pending(&mut f);
        f.wanted.remove(topic);
        let held = f.held.remove(topic);
        match f.current {
            Some(peer) if held => {
                self.node
                    .filter_unsubscribe(peer, self.shard, &Self::filter_topics(topic))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// One watch, see the module documentation.
    pub(super) async fn watch(&self) {
        let mut f = self.filter.lock().await;
        self.take_pending(&mut f);
        if f.wanted.is_empty() {
            return;
        }
        let Some(peer) = f.current else {
            if let Err(e) = self.move_all(&mut f).await {
                tracing::warn!("no filter service takes our subscriptions: {e}");
            }
            return;
        };
        // Back to the named service once it may be asked again.
        let mut skip = None;
        if peer != self.named && !self.cooling(&self.filters, &self.named) {
            match self.subscribe_all(self.named, &f.wanted).await {
                Ok(()) => {
                    self.note(&self.filters, self.named, true);
                    self.take_subscriptions(&mut f, self.named);
                    return;
                }
                Err(e) => {
                    if after_error(&e, true) == Step::Failed {
                        self.note(&self.filters, self.named, false);
                    }
                    self.drop_service(self.named);
                    skip = Some(self.named);
                }
            }
        }
        let missing: Vec<Topic> = f.wanted.difference(&f.held).cloned().collect();
        // A subscription answers as a ping does: one request per watch, not two, within
        // the service's rate.
        let ping = if missing.is_empty() {
            self.node.filter_ping(peer).await
        } else {
            Ok(())
        };
        let retake = match ping {
            Ok(()) => missing,
            // It holds nothing of ours (and the node forgot its criteria there).
            Err(e) if not_subscribed(&e) => {
                f.held.clear();
                f.wanted.iter().cloned().collect()
            }
            Err(e) => match after_error(&e, peer == self.named) {
                Step::Stop | Step::Later => return,
                Step::Failed => {
                    tracing::info!("filter service {peer} did not answer a ping: {e}");
                    self.note(&self.filters, peer, false);
                    if let Err(e) = self.move_all_but(&mut f, skip).await {
                        tracing::warn!("no filter service takes our subscriptions: {e}");
                    }
                    return;
                }
            },
        };
        if retake.is_empty() {
            return;
        }
        match self.subscribe_all(peer, &retake).await {
            Ok(()) => f.held.extend(retake),
            Err(e) if after_error(&e, peer == self.named) == Step::Failed => {
                self.note(&self.filters, peer, false);
                if let Err(e) = self.move_all_but(&mut f, skip).await {
                    tracing::warn!("no filter service takes our subscriptions: {e}");
                }
            }
            Err(_) => {}
        }
    }
}

/// Watches `light` every `every` while it lives.
fn spawn_watcher(light: Weak<Light>, every: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no runtime: filter subscriptions are not watched");
        return;
    };
    rt.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(light) = light.upgrade() else {
                return;
            };
            light.watch().await;
        }
    });
}

/// `Arc` of a new [`Light`] and its watcher.
pub(super) fn start(light: Light) -> Arc<Light> {
    let every = light.watch_every;
    let light = Arc::new(light);
    spawn_watcher(Arc::downgrade(&light), every);
    light
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_refusal(status: lightpush::Status) -> Error {
        let response = lightpush::LightPushResponse {
            status_code: status.code(),
            ..Default::default()
        };
        Error::LightPush(lightpush::Refused::of(&response).unwrap())
    }

    #[test]
    fn what_a_services_error_means() {
        use lightpush::Status::*;
        // A refusal of the message itself: final from the named service only.
        for status in [BadRequest, PayloadTooLarge] {
            assert_eq!(
                after_error(&push_refusal(status), true),
                Step::Stop,
                "{status:?}"
            );
            assert_eq!(
                after_error(&push_refusal(status), false),
                Step::Failed,
                "{status:?}"
            );
        }
        for status in [
            UnsupportedPubsubTopic,
            InternalServerError,
            NoPeersToRelay,
            Other(599),
        ] {
            for named in [true, false] {
                assert_eq!(after_error(&push_refusal(status), named), Step::Failed);
            }
        }
        // Rate limits are not failures, of lightpush or filter; the named lightpush
        // service's 429 is not a reason to push through strangers.
        assert_eq!(
            after_error(&push_refusal(TooManyRequests), true),
            Step::Stop
        );
        assert_eq!(
            after_error(&push_refusal(TooManyRequests), false),
            Step::Later
        );
        assert_eq!(
            after_error(&filter_refusal(filter::Status::TooManyRequests), false),
            Step::Later
        );
        assert_eq!(
            after_error(&filter_refusal(filter::Status::ServiceUnavailable), true),
            Step::Failed
        );
        // Our own node's errors are not the service's.
        for e in [Error::Busy, Error::Shutdown, Error::Config("off".into())] {
            assert_eq!(after_error(&e, false), Step::Stop, "{e}");
        }
        assert_eq!(
            after_error(&Error::Request("timeout".into()), true),
            Step::Failed
        );
    }

    fn filter_refusal(status: filter::Status) -> Error {
        let response = filter::SubscribeResponse {
            status_code: status.code(),
            ..Default::default()
        };
        Error::Filter(filter::Refused::of(&response).unwrap())
    }

    #[test]
    fn only_a_404_ping_renews_the_subscriptions_where_they_are() {
        assert!(not_subscribed(&filter_refusal(filter::Status::NotFound)));
        assert!(!not_subscribed(&filter_refusal(
            filter::Status::TooManyRequests
        )));
        assert!(!not_subscribed(&Error::Request("no connection".into())));
    }
}
