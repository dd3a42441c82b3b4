//! Light-client mode's services: which lightpush and filter service a light client uses,
//! and moving to another when one fails.
//!
//! The named service ([`super::Config::light_service`]) comes first, then up to
//! [`super::Config::discovered_light_services`] connected peers that announce the
//! protocol and relay our shard (identify and metadata, `Node::service_peers_on`).
//! - **Lightpush**: a message goes to the first service that takes it; one that fails
//!   (no answer, no relay peers, 429, another error of the service's own) is asked after
//!   the others for a minute ([`super::STORE_COOL_DOWN`], as a store that failed). Refusals of the message itself (400, 413) are not
//!   retried elsewhere: every service would give them.
//! - **Filter**: the subscriptions are held with one service at a time. A subscription
//!   that fails there is made with the next service, and then every subscribed topic
//!   moves there. A watcher pings that service every
//!   [`super::Config::filter_ping_interval`] (filter v2's ping, which a service answers
//!   404 once it holds no subscription of ours, after a restart say): a failed ping moves
//!   the subscriptions to the next service, a 404 renews them where they are.
//!
//! A discovered service is not vouched for: it can drop what we push or withhold what it
//! should push to us. Neither can change a member's state (MLS authenticates every
//! message), and the catch-up from stores brings what filter did not; a service that
//! answers but never delivers is not detected here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pqmls_transport::waku::{ContentTopic, PubsubTopic, WakuMessage, filter, lightpush};
use pqmls_transport::{Error, Node, PeerId, Topic, WakuService};

use super::{Failures, SEGMENT, WHOLE, content_topic, topic_name};

/// The services of a light client, and which one holds its filter subscriptions.
pub(super) struct Light {
    node: Node,
    shard: PubsubTopic,
    named: PeerId,
    discovered: usize,
    /// The service holding the subscriptions now (`None` before the first one, or after
    /// every service failed).
    filter: tokio::sync::Mutex<Option<PeerId>>,
    pushes: Mutex<Failures>,
    filters: Mutex<Failures>,
    /// Times the subscriptions moved to another service.
    moves: std::sync::atomic::AtomicU64,
}

/// Whether a lightpush error is the message's own fault, so that every service would
/// refuse it alike.
fn refused_for_the_message(e: &Error) -> bool {
    matches!(
        e,
        Error::LightPush(r) if matches!(
            r.status,
            lightpush::Status::BadRequest | lightpush::Status::PayloadTooLarge
        )
    )
}

/// Whether a filter ping says the service is there but holds no subscription of ours.
fn not_subscribed(e: &Error) -> bool {
    matches!(e, Error::Filter(r) if r.status == filter::Status::NotFound)
}

impl Light {
    pub(super) fn new(node: Node, shard: PubsubTopic, named: PeerId, discovered: usize) -> Self {
        Self {
            node,
            shard,
            named,
            discovered,
            filter: tokio::sync::Mutex::new(None),
            pushes: Mutex::new(Failures::default()),
            filters: Mutex::new(Failures::default()),
            moves: Default::default(),
        }
    }

    /// Times the filter subscriptions moved to another service.
    pub(super) fn moves(&self) -> u64 {
        self.moves.load(std::sync::atomic::Ordering::Relaxed)
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

    fn note(failures: &Mutex<Failures>, peer: PeerId, ok: bool) {
        if let Ok(mut f) = failures.lock() {
            if ok {
                f.succeeded(&peer);
            } else {
                f.failed(peer, Instant::now());
            }
        }
    }

    /// Publishes `m` through the first service that takes it.
    pub(super) async fn push(&self, m: WakuMessage) -> pqmls_transport::Result<()> {
        let mut last = Error::Request("no lightpush service".into());
        for peer in self.candidates(WakuService::Lightpush, &self.pushes).await {
            match self.node.lightpush(peer, Some(self.shard), m.clone()).await {
                Ok(_) => {
                    Self::note(&self.pushes, peer, true);
                    return Ok(());
                }
                Err(e) if refused_for_the_message(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!("lightpush through {peer} failed: {e}");
                    Self::note(&self.pushes, peer, false);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// The two filter content topics of `topic`.
    fn filter_topics(topic: &Topic) -> Vec<ContentTopic> {
        [WHOLE, SEGMENT]
            .iter()
            .filter_map(|e| ContentTopic::parse(&content_topic(topic_name(topic), e)))
            .collect()
    }

    /// Subscribes every topic of `topics` with `peer`.
    async fn subscribe_all(&self, peer: PeerId, topics: &[Topic]) -> pqmls_transport::Result<()> {
        let content: Vec<ContentTopic> = topics.iter().flat_map(Self::filter_topics).collect();
        // Filter v2 takes at most 100 content topics per request (logos-lips 12/WAKU2-
        // FILTER, "Subscriber"); the node refuses more.
        for chunk in content.chunks(filter::MAX_CONTENT_TOPICS_PER_REQUEST) {
            self.node.filter_subscribe(peer, self.shard, chunk).await?;
        }
        Ok(())
    }

    /// Subscribes `topic` with the service holding the subscriptions, or, if that fails,
    /// with the next service, moving every topic of `all` there.
    pub(super) async fn subscribe(
        &self,
        topic: &Topic,
        all: &HashSet<Topic>,
    ) -> pqmls_transport::Result<()> {
        let mut current = self.filter.lock().await;
        if let Some(peer) = *current {
            match self.subscribe_all(peer, std::slice::from_ref(topic)).await {
                Ok(()) => {
                    Self::note(&self.filters, peer, true);
                    return Ok(());
                }
                Err(e) => {
                    tracing::info!("filter service {peer} failed a subscription: {e}");
                    Self::note(&self.filters, peer, false);
                }
            }
        }
        let mut topics: Vec<Topic> = all.iter().cloned().collect();
        if !all.contains(topic) {
            topics.push(topic.clone());
        }
        self.move_to_next(&mut current, &topics).await
    }

    /// Moves the subscriptions of `topics` to the first service that takes them (the
    /// current one last, since it failed).
    async fn move_to_next(
        &self,
        current: &mut Option<PeerId>,
        topics: &[Topic],
    ) -> pqmls_transport::Result<()> {
        let failed = *current;
        let mut candidates = self.candidates(WakuService::Filter, &self.filters).await;
        if let Some(f) = failed {
            candidates.retain(|p| *p != f);
            candidates.push(f);
        }
        let mut last = Error::Request("no filter service".into());
        for peer in candidates {
            match self.subscribe_all(peer, topics).await {
                Ok(()) => {
                    Self::note(&self.filters, peer, true);
                    if failed.is_some_and(|f| f != peer) {
                        self.moves
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!("filter subscriptions moved to {peer}");
                    }
                    *current = Some(peer);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!("filter service {peer} failed: {e}");
                    Self::note(&self.filters, peer, false);
                    last = e;
                }
            }
        }
        *current = None;
        Err(last)
    }

    /// Unsubscribes `topic` at the service holding the subscriptions.
    pub(super) async fn unsubscribe(&self, topic: &Topic) -> pqmls_transport::Result<()> {
        let current = *self.filter.lock().await;
        match current {
            Some(peer) => {
                self.node
                    .filter_unsubscribe(peer, self.shard, &Self::filter_topics(topic))
                    .await
            }
            None => Ok(()),
        }
    }

    /// One watch: pings the service holding the subscriptions of `topics`; renews them
    /// there if it holds none, moves them if it does not answer, and makes them if no
    /// service holds them.
    pub(super) async fn watch(&self, topics: &HashSet<Topic>) {
        if topics.is_empty() {
            return;
        }
        let topics: Vec<Topic> = topics.iter().cloned().collect();
        let mut current = self.filter.lock().await;
        if let Some(peer) = *current {
            match self.node.filter_ping(peer).await {
                Ok(()) => return,
                Err(e) if not_subscribed(&e) => {
                    if self.subscribe_all(peer, &topics).await.is_ok() {
                        return;
                    }
                }
                Err(e) => tracing::info!("filter service {peer} did not answer a ping: {e}"),
            }
            Self::note(&self.filters, peer, false);
        }
        if let Err(e) = self.move_to_next(&mut current, &topics).await {
            tracing::warn!("no filter service takes our subscriptions: {e}");
        }
    }
}

/// Watches `light` every `every` while it lives, with the topics `topics` gives.
pub(super) fn spawn_watcher(
    light: Weak<Light>,
    every: Duration,
    topics: impl Fn() -> HashSet<Topic> + Send + 'static,
) {
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
            light.watch(&topics()).await;
        }
    });
}

/// `Arc` of a new [`Light`] and its watcher.
pub(super) fn start(
    light: Light,
    every: Duration,
    topics: impl Fn() -> HashSet<Topic> + Send + 'static,
) -> Arc<Light> {
    let light = Arc::new(light);
    spawn_watcher(Arc::downgrade(&light), every, topics);
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
    fn only_refusals_of_the_message_itself_are_not_tried_elsewhere() {
        use lightpush::Status::*;
        for status in [BadRequest, PayloadTooLarge] {
            assert!(refused_for_the_message(&push_refusal(status)), "{status:?}");
        }
        for status in [
            UnsupportedPubsubTopic,
            TooManyRequests,
            InternalServerError,
            NoPeersToRelay,
            Other(599),
        ] {
            assert!(
                !refused_for_the_message(&push_refusal(status)),
                "{status:?}"
            );
        }
        assert!(!refused_for_the_message(&Error::Request("timeout".into())));
        assert!(!refused_for_the_message(&Error::Busy));
    }

    #[test]
    fn only_a_404_ping_renews_the_subscriptions_where_they_are() {
        let ping = |status: filter::Status| {
            let response = filter::SubscribeResponse {
                status_code: status.code(),
                ..Default::default()
            };
            Error::Filter(filter::Refused::of(&response).unwrap())
        };
        assert!(not_subscribed(&ping(filter::Status::NotFound)));
        assert!(!not_subscribed(&ping(filter::Status::TooManyRequests)));
        assert!(!not_subscribed(&Error::Request("no connection".into())));
    }
}
