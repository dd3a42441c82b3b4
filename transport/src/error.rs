//! The crate's error type.

/// Everything that can go wrong in a call on a [`crate::Node`].
///
/// It holds no libp2p types, so a simulated network can return the same errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent (for example a store without a data directory).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listen or bootstrap address could not be used.
    #[error("invalid address {addr}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// A TCP listen address is already in use by another socket (another node, or any other
    /// program). Checked before listening, because libp2p's TCP listeners set
    /// `SO_REUSEPORT`, so a second node would otherwise share the port with the first and
    /// the kernel would split incoming connections between them.
    #[error("listen address {0} is already in use")]
    AddressInUse(String),
    /// Building the libp2p transport or behaviours failed.
    #[error("failed to build the libp2p node: {0}")]
    Setup(String),
    /// Reading or writing the data directory failed (identity key, database files).
    #[error("I/O error in the data directory: {0}")]
    Io(#[from] std::io::Error),
    /// The store's SQLite database failed.
    #[error("store database error: {0}")]
    Store(#[from] rusqlite::Error),
    /// The node has shut down; the handle can no longer be used.
    #[error("the node has shut down")]
    Shutdown,
    /// The payload is larger than the configured maximum message size.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Size of the rejected payload.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The same payload was already published on this topic recently (ids are content
    /// hashes, so republishing identical bytes is a duplicate).
    #[error("duplicate message: identical payload already published on this topic")]
    Duplicate,
    /// No connected peer subscribes to the topic, so the message reached nobody.
    #[error("no connected peer subscribes to this topic")]
    NoPeers,
    /// Every peer's send queue is full; retry later.
    #[error("all peer send queues are full")]
    QueueFull,
    /// Too many requests are outstanding; retry later.
    #[error("too many outstanding requests")]
    Busy,
    /// No connected peer offers the store protocol (directory and history).
    #[error("no store node is connected")]
    NoStore,
    /// A directory key or blob exceeds its size limit.
    #[error("directory entry too large: {what} is {len} bytes, limit {max}")]
    EntryTooLarge {
        /// `"key"` or `"blob"`.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A request to a store node failed (timeout, connection closed, protocol error).
    #[error("request to store node failed: {0}")]
    Request(String),
    /// A store node refused the request.
    #[error("store node refused the request: {0}")]
    Refused(String),
    /// A store node holds as many response bytes as its budget allows (for this node or
    /// in total, see [`crate::node::Limits::response_bytes_per_peer`]); retry later.
    #[error("store node is busy; retry later")]
    StoreBusy,
    /// The directory validator of a store (see [`crate::store::DirectoryValidator`]) refused
    /// the entry.
    #[error("directory entry rejected by the store's validator")]
    EntryRejected,
    /// The put would exceed this writer's directory quota on a store, or the store's
    /// directory is full (see [`crate::store::Config::max_entries_per_peer`]).
    #[error("directory quota exceeded")]
    QuotaExceeded,
    /// Subscribing to a topic failed in gossipsub.
    #[error("subscription failed: {0}")]
    Subscription(String),
    /// Publishing failed in gossipsub for a reason not listed above.
    #[error("publish failed: {0}")]
    Publish(String),
    /// A Waku content topic that cannot be autosharded (not
    /// `/{application}/{version}/{name}/{encoding}` of generation 0).
    #[error("content topic cannot be autosharded: {0}")]
    ContentTopic(String),
    /// A Waku shard that is not one of this node's cluster, or a shard number not below 1024.
    #[error("not a shard of this node's cluster: {0}")]
    Shard(String),
    /// A Waku lightpush service refused the message, with the status it answered.
    #[error(transparent)]
    LightPush(#[from] crate::waku::lightpush::Refused),
    /// A Waku filter service refused the request, with the status it answered.
    #[error(transparent)]
    Filter(#[from] crate::waku::filter::Refused),
    /// A `WakuMessage` the spec forbids.
    #[error(transparent)]
    WakuMessage(#[from] crate::waku::MessageError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
