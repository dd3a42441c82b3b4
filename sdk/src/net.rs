//! The network interface the client runs on: a real libp2p [`Node`] or the simulated
//! network of [`crate::sim`], behind one object-safe trait.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use pqmls_transport::store::{Cursor, Page};
use pqmls_transport::{Message, MessageId, Node, Topic};

use crate::error::Result;

/// What the client needs from a network: gossip topics, a directory and store history.
///
/// Implemented by [`pqmls_transport::Node`] and by [`crate::sim::SimTransport`]; an
/// application can bring its own. Every method reports failures with the transport's error
/// type, which holds no libp2p types.
pub trait Transport: Send + Sync + 'static {
    /// Starts receiving messages on `topic`.
    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>>;
    /// Stops receiving messages on `topic`.
    fn unsubscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>>;
    /// Publishes `data` on `topic`.
    fn publish<'a>(
        &'a self,
        topic: &'a Topic,
        data: Vec<u8>,
    ) -> BoxFuture<'a, pqmls_transport::Result<MessageId>>;
    /// Writes a directory entry.
    fn put(&self, key: Vec<u8>, blob: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<()>>;
    /// Reads a directory entry.
    fn get(&self, key: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<Option<Vec<u8>>>>;
    /// Every entry the directory holds for `key`, as candidates (the default: what
    /// [`Transport::get`] returns). A directory whose stores cannot check writers (Waku:
    /// anyone may publish on any content topic) returns all it found, so that a planted
    /// newer blob cannot hide the owner's; the SDK keeps the newest one that validates.
    fn get_all(&self, key: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<Vec<Vec<u8>>>> {
        Box::pin(async move { Ok(self.get(key).await?.into_iter().collect()) })
    }
    /// One page of a topic's history from a store node.
    fn history<'a>(
        &'a self,
        topic: &'a Topic,
        from: Cursor,
    ) -> BoxFuture<'a, pqmls_transport::Result<Page>>;
    /// Tells the transport that the client handled message `id` for good (it will not need
    /// it from a store again), so that a transport able to leave such messages out of
    /// later history reads may do so ([`crate::WakuTransport`] does). Messages the client
    /// deferred are never reported. The default does nothing.
    fn handled(&self, _id: &MessageId) {}
    /// Whether any peer is connected now (timers that commit wait while none is);
    /// `true` when the transport cannot tell.
    fn connected(&self) -> bool {
        true
    }
    /// How long after this node first saw a payload (published or received it) a
    /// publication of the same bytes is refused as a duplicate, if the transport does
    /// that (the default: it does not, or cannot tell). The client never publishes the
    /// same bytes twice on purpose: what it publishes again (answers to a request for a
    /// missing commit, own commits not final, Welcomes, withdrawals) it wraps with a fresh
    /// nonce (`Wire::Again`). The simulation refuses as the real transports do.
    fn duplicate_window(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The inbound side of a [`Transport`]: every accepted message of the subscribed topics.
pub type Inbox = BoxStream<'static, Message>;

impl Transport for Node {
    fn subscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>> {
        Box::pin(async move { Node::subscribe(self, topic).await.map(|_| ()) })
    }

    fn unsubscribe<'a>(&'a self, topic: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>> {
        Box::pin(async move { Node::unsubscribe(self, topic).await.map(|_| ()) })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a Topic,
        data: Vec<u8>,
    ) -> BoxFuture<'a, pqmls_transport::Result<MessageId>> {
        Box::pin(Node::publish(self, topic, data))
    }

    fn put(&self, key: Vec<u8>, blob: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<()>> {
        Box::pin(Node::put(self, key, blob))
    }

    fn get(&self, key: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<Option<Vec<u8>>>> {
        Box::pin(Node::get(self, key))
    }

    fn history<'a>(
        &'a self,
        topic: &'a Topic,
        from: Cursor,
    ) -> BoxFuture<'a, pqmls_transport::Result<Page>> {
        Box::pin(Node::history(self, topic, from))
    }

    fn connected(&self) -> bool {
        self.counters().connected_peers > 0
    }

    fn duplicate_window(&self) -> Option<std::time::Duration> {
        // Gossipsub's duplicate cache time (`pqmls_transport::node`): publishing the same
        // bytes on a topic within it is refused as `Error::Duplicate`.
        Some(pqmls_transport::node::DUPLICATE_WINDOW)
    }
}

/// Most messages one catch-up of a topic holds at once ([`full_history`]).
pub(crate) const SYNC_MAX_MESSAGES: usize = 4096;
/// Most payload bytes one catch-up of a topic holds at once.
pub(crate) const SYNC_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Most pages one catch-up reads, whatever they hold: pages that bring no message (junk
/// a transport drops, or a store's pages within one flooded instant) count too, so no
/// store can hold a catch-up in a loop of empty pages.
pub(crate) const SYNC_MAX_PAGES: usize = 64;

/// Fetches the pages of `topic`'s history after `from`, until none is left or the pages
/// read hold [`SYNC_MAX_MESSAGES`] messages or [`SYNC_MAX_BYTES`] bytes: anyone can
/// publish on a topic (and a store can answer with anything), so what one catch-up holds
/// in memory is bounded; the rest comes with the next one, from the cursor returned.
/// The flag says whether it stopped there.
pub(crate) async fn full_history(
    transport: &dyn Transport,
    topic: &Topic,
    mut from: Cursor,
) -> Result<(Vec<Message>, Cursor, bool)> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut pages = 0usize;
    loop {
        let page = transport.history(topic, from).await?;
        pages += 1;
        let last = page.messages.last().map(Cursor::after);
        bytes = page
            .messages
            .iter()
            .fold(bytes, |b, m| b.saturating_add(m.data.len()));
        out.extend(page.messages);
        match page.next {
            Some(next) => {
                from = next;
                if out.len() >= SYNC_MAX_MESSAGES
                    || bytes >= SYNC_MAX_BYTES
                    || pages >= SYNC_MAX_PAGES
                {
                    return Ok((out, from, true));
                }
            }
            None => {
                if let Some(resume) = page.resume.or(last) {
                    from = resume;
                }
                return Ok((out, from, false));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that always has another page: of 100 messages (`Endless(true)`), or of
    /// none that goes nowhere (`Endless(false)`: junk the transport drops, pages of one
    /// flooded instant).
    struct Endless(bool);

    impl Transport for Endless {
        fn subscribe<'a>(&'a self, _: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn unsubscribe<'a>(&'a self, _: &'a Topic) -> BoxFuture<'a, pqmls_transport::Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn publish<'a>(
            &'a self,
            topic: &'a Topic,
            data: Vec<u8>,
        ) -> BoxFuture<'a, pqmls_transport::Result<MessageId>> {
            Box::pin(async move { Ok(MessageId::compute(topic, &data)) })
        }
        fn put(&self, _: Vec<u8>, _: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn get(&self, _: Vec<u8>) -> BoxFuture<'_, pqmls_transport::Result<Option<Vec<u8>>>> {
            Box::pin(async { Ok(None) })
        }
        fn history<'a>(
            &'a self,
            topic: &'a Topic,
            from: Cursor,
        ) -> BoxFuture<'a, pqmls_transport::Result<Page>> {
            Box::pin(async move {
                if !self.0 {
                    return Ok(Page {
                        messages: Vec::new(),
                        next: Some(from),
                        resume: None,
                    });
                }
                let base = from.after_ms();
                let messages = (0..100u64)
                    .map(|i| {
                        let data = (base + i).to_be_bytes().to_vec();
                        Message {
                            topic: topic.clone(),
                            id: MessageId::compute(topic, &data),
                            data,
                            received: std::time::UNIX_EPOCH
                                + std::time::Duration::from_millis(base + i),
                        }
                    })
                    .collect();
                Ok(Page {
                    messages,
                    next: Some(Cursor::from_parts(base + 100, None)),
                    resume: None,
                })
            })
        }
    }

    /// Pages that bring nothing and go nowhere end the catch-up after [`SYNC_MAX_PAGES`]
    /// (the rest comes with a later one); without the bound this never returns.
    #[tokio::test]
    async fn a_catch_up_of_empty_pages_that_go_nowhere_ends() {
        let topic = Topic::from_group_id(b"g");
        let from = Cursor::from_parts(7, None);
        let (got, cursor, more) = full_history(&Endless(false), &topic, from).await.unwrap();
        assert!(got.is_empty() && more);
        assert_eq!(cursor, from);
    }

    /// A topic whose history never ends (a flood, or a store that pages for ever) is read
    /// in bounded parts: each catch-up stops at the bound and says so, and the next one
    /// goes on from where it stopped. Without the bound this never returns.
    #[tokio::test]
    async fn a_catch_up_holds_a_bounded_part_of_an_endless_history() {
        let topic = Topic::from_group_id(b"g");
        let (first, cursor, more) = full_history(&Endless(true), &topic, Cursor::default())
            .await
            .unwrap();
        assert!(more);
        assert!(first.len() >= SYNC_MAX_MESSAGES && first.len() < SYNC_MAX_MESSAGES + 100);
        let (second, _, more) = full_history(&Endless(true), &topic, cursor).await.unwrap();
        assert!(more);
        assert_eq!(
            first.last().map(|m| m.received),
            second
                .first()
                .map(|m| m.received - std::time::Duration::from_millis(1))
        );
    }
}
