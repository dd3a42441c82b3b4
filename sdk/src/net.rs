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
    /// Whether any peer is connected now (timers that commit wait while none is);
    /// `true` when the transport cannot tell.
    fn connected(&self) -> bool {
        true
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
}

/// Fetches every page of `topic`'s history after `from`.
pub(crate) async fn full_history(
    transport: &dyn Transport,
    topic: &Topic,
    mut from: Cursor,
) -> Result<(Vec<Message>, Cursor)> {
    let mut out = Vec::new();
    loop {
        let page = transport.history(topic, from).await?;
        let last = page.messages.last().map(Cursor::after);
        out.extend(page.messages);
        match page.next {
            Some(next) => from = next,
            None => {
                if let Some(last) = last {
                    from = last;
                }
                return Ok((out, from));
            }
        }
    }
}
