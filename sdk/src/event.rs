//! Events a client reports, and the stream they arrive on.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::GroupId;

/// Something that happened in one of the client's groups. Messages are persisted before
/// they are reported, so an event missed because the application was not listening can be
/// read back with [`crate::Client::history`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An application message from another member.
    Message(ReceivedMessage),
    /// This client joined a group from a Welcome.
    Joined {
        /// The group.
        group: GroupId,
        /// The member whose commit added us.
        inviter: String,
    },
    /// A member was added.
    MemberJoined {
        /// The group.
        group: GroupId,
        /// The new member's name.
        member: String,
    },
    /// A member left or was removed.
    MemberLeft {
        /// The group.
        group: GroupId,
        /// The member's name.
        member: String,
    },
    /// The group moved to a new epoch.
    EpochChanged {
        /// The group.
        group: GroupId,
        /// The new epoch.
        epoch: u64,
    },
    /// This client is no longer a member (it left or was removed).
    Removed {
        /// The group.
        group: GroupId,
    },
    /// A member at our epoch number holds a different epoch authenticator: the group forked.
    ForkDetected {
        /// The group.
        group: GroupId,
        /// The epoch number at which the views differ.
        epoch: u64,
    },
    /// This client moved from a losing branch to the winning one.
    ForkRecovered {
        /// The group.
        group: GroupId,
        /// The epoch whose commit was replaced by the winning one.
        from_epoch: u64,
        /// The epoch reached on the winning branch.
        epoch: u64,
    },
}

/// An application message as delivered and as kept in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The group.
    pub group: GroupId,
    /// The sender's name (from their MLS credential).
    pub sender: String,
    /// The application's bytes.
    pub body: Vec<u8>,
    /// The epoch it was sent in.
    pub epoch: u64,
    /// The sender's clock when it was sent (milliseconds since the Unix epoch).
    pub sent_ms: u64,
    /// Whether this client sent it.
    pub own: bool,
    /// Its position in this client's history of the group (increasing).
    pub seq: i64,
}

/// The stream of [`Event`]s of a client, from [`crate::Client::events`]. Unbounded, so a
/// slow reader never stalls the client; it ends when the client shuts down.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event, or `None` after shutdown.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
