//! Events a client reports, and the stream they arrive on.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::GroupId;
use crate::identity::{Member, UserId};

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
        inviter: Member,
    },
    /// An invitation waits for the application's consent (see
    /// [`crate::Config::invitations`]): [`crate::Client::accept`] or
    /// [`crate::Client::decline`] it.
    Invited(Invitation),
    /// A member was added.
    MemberJoined {
        /// The group.
        group: GroupId,
        /// The new member.
        member: Member,
    },
    /// A member left or was removed.
    MemberLeft {
        /// The group.
        group: GroupId,
        /// The member.
        member: Member,
    },
    /// Someone carries the label of a contact under another key: the contact's key
    /// changed (a new device, a reinstall) or someone poses as them. Compare safety
    /// numbers before trusting the new id.
    ContactKeyChanged {
        /// The contact's label (and the display name seen).
        label: String,
        /// The id stored for the contact.
        known: UserId,
        /// The id seen with that name.
        seen: UserId,
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
    /// A member signed a valid commit for an epoch where we merged another one: the group
    /// forked. (Reported only on such authenticated evidence.)
    ForkDetected {
        /// The group.
        group: GroupId,
        /// The epoch number at which the views differ.
        epoch: u64,
    },
    /// This client cannot follow the group any more: the group finalised a commit for
    /// `epoch` that this client cannot reach from its state (it lacks what it would need
    /// to move there). It asks the members to add it again (a sealed request on the
    /// group topic); [`Event::Rejoined`] follows when one does.
    Unrecoverable {
        /// The group.
        group: GroupId,
        /// The epoch whose final commit it cannot reach.
        epoch: u64,
    },
    /// This client, which could not follow the group ([`Event::Unrecoverable`]), was
    /// added again by a member and holds the group's live state. Messages of the epochs
    /// from `lost_epoch` to `epoch` are not readable here (MLS gives a member nothing of
    /// epochs before it joined); its own messages sent meanwhile are sent again.
    Rejoined {
        /// The group.
        group: GroupId,
        /// The epoch whose final commit this client could not reach.
        lost_epoch: u64,
        /// The epoch it joined at.
        epoch: u64,
    },
    /// A store returned one of this client's own messages in a catch-up: a store holds it,
    /// so members that were away get it from there (the chat's "seen by a store" mark).
    /// Reported once per message, after the first catch-up that brings it back; a message
    /// sent again after a branch move is marked by either copy.
    Stored {
        /// The group.
        group: GroupId,
        /// The message's position in this client's history ([`ReceivedMessage::seq`]).
        seq: i64,
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
    /// The sender (id from their credential's key, name from its content).
    pub sender: Member,
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

/// An invitation waiting for consent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invitation {
    /// Its number, for [`crate::Client::accept`] and [`crate::Client::decline`].
    pub id: u64,
    /// The group.
    pub group: GroupId,
    /// Who invited us (the member whose signature is on the Welcome's GroupInfo).
    pub inviter: Member,
    /// When it arrived (milliseconds since the Unix epoch).
    pub received_ms: u64,
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
