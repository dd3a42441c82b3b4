//! What the client puts on the wire around MLS messages, and the names it derives.
//!
//! Every gossip payload is a postcard-encoded [`Wire`] value. MLS does the authentication
//! and encryption; the envelope only says what kind of MLS message is inside, and for
//! application messages carries a hash of the sender's epoch authenticator so members on
//! different branches of a fork notice (RFC 9420 §8.7: the epoch authenticator is meant to
//! be compared to confirm a shared view of the group).

use pqmls_transport::Topic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Length of the truncated epoch-authenticator hash carried by application messages.
pub(crate) const AUTH_TAG_LEN: usize = 16;

/// A gossip payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Wire {
    /// A commit or proposal (an MLS `PrivateMessage`), on the group topic.
    Handshake {
        /// The serialized `MlsMessageOut`.
        mls: Vec<u8>,
    },
    /// An application message (an MLS `PrivateMessage`), on the group topic.
    Application {
        /// Truncated hash of the sender's epoch authenticator.
        auth: [u8; AUTH_TAG_LEN],
        /// The serialized `MlsMessageOut`.
        mls: Vec<u8>,
    },
    /// A Welcome, on the invitee's inbox topic.
    Welcome {
        /// The serialized `MlsMessageOut` holding the Welcome.
        mls: Vec<u8>,
    },
    /// A member stuck on a branch that lost asks to be removed and invited again, on the
    /// group topic. Signed with its credential's key (see [`rejoin_tbs`]).
    Rejoin {
        /// The member's name.
        name: String,
        /// The epoch it is stuck at.
        epoch: u64,
        /// Its epoch-authenticator tag there.
        auth: [u8; AUTH_TAG_LEN],
        /// Random, so repeated requests are distinct payloads.
        nonce: [u8; 16],
        /// Signature over [`rejoin_tbs`].
        sig: Vec<u8>,
    },
    /// The inviter withdraws a Welcome, on the invitee's inbox topic: the add commit it
    /// came with lost the ordering (the inviter moved to a branch without it), so the
    /// group state it gives is on a dead branch. Signed with the inviter's credential key
    /// (see [`void_tbs`]); the invitee checks it against the key of the Welcome's sender.
    Void {
        /// The group.
        group_id: Vec<u8>,
        /// [`welcome_hash`] of the Welcome withdrawn.
        welcome: [u8; 32],
        /// Signature over [`void_tbs`].
        sig: Vec<u8>,
    },
}

/// The hash that names a Welcome (over its serialized MLS message).
pub(crate) fn welcome_hash(mls: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"pqmls welcome v1");
    h.update(mls);
    h.finalize().into()
}

/// What a [`Wire::Void`] signature covers.
pub(crate) fn void_tbs(group_id: &[u8], welcome: &[u8; 32]) -> Vec<u8> {
    let mut out = b"pqmls void welcome v1".to_vec();
    out.extend_from_slice(&(group_id.len() as u64).to_be_bytes());
    out.extend_from_slice(group_id);
    out.extend_from_slice(welcome);
    out
}

/// What a rejoin request's signature covers.
pub(crate) fn rejoin_tbs(
    group_id: &[u8],
    name: &str,
    epoch: u64,
    auth: &[u8; AUTH_TAG_LEN],
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut out = b"pqmls rejoin request v1".to_vec();
    for field in [group_id, name.as_bytes()] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(auth);
    out.extend_from_slice(nonce);
    out
}

/// Whether the view `a` (epoch, epoch-authenticator tag) is ahead of `b`: a later epoch,
/// or the same epoch with a smaller tag (an arbitrary but shared tie-break).
pub(crate) fn ahead(a: (u64, [u8; AUTH_TAG_LEN]), b: (u64, [u8; AUTH_TAG_LEN])) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl Wire {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing into a Vec cannot fail for these types.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The plaintext of an application message (inside MLS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct AppPayload {
    /// A random id chosen by the sender: receivers de-duplicate on it, which makes
    /// re-sending after a fork recovery or a crash safe.
    pub uid: [u8; 16],
    /// The sender's clock when it was written (milliseconds since the Unix epoch).
    pub sent_ms: u64,
    /// What it says.
    pub content: Content,
}

/// What an application message carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Content {
    /// The application's bytes.
    Text(Vec<u8>),
    /// The sender asks to be removed (MLS members cannot commit their own removal, and a
    /// pending remove proposal would block everyone's sending until committed).
    Leave,
}

impl AppPayload {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The truncated hash of an epoch authenticator that application messages carry.
pub(crate) fn auth_tag(epoch_authenticator: &[u8]) -> [u8; AUTH_TAG_LEN] {
    let mut h = Sha256::new();
    h.update(b"pqmls epoch-authenticator tag v1");
    h.update(epoch_authenticator);
    let d = h.finalize();
    let mut out = [0u8; AUTH_TAG_LEN];
    out.copy_from_slice(&d[..AUTH_TAG_LEN]);
    out
}

/// The hash that orders competing commits: SHA-256 over the whole gossip payload.
pub(crate) fn commit_hash(payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"pqmls commit order v1");
    h.update(payload);
    h.finalize().into()
}

/// The inbox topic of a user, where Welcomes for them are published.
pub(crate) fn inbox_topic(user: &str) -> Topic {
    let mut id = b"pqmls/inbox/v1/".to_vec();
    id.extend_from_slice(user.as_bytes());
    Topic::from_group_id(&id)
}

/// The topic of a group.
pub(crate) fn group_topic(group_id: &[u8]) -> Topic {
    let mut id = b"pqmls/group/v1/".to_vec();
    id.extend_from_slice(group_id);
    Topic::from_group_id(&id)
}

/// Which directory slot a key package is published in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A one-time key package, numbered from 0.
    OneTime(u32),
    /// The last-resort key package, used when every one-time slot is taken.
    LastResort,
}

impl Slot {
    pub(crate) fn code(self) -> i64 {
        match self {
            Slot::OneTime(i) => i64::from(i),
            Slot::LastResort => -1,
        }
    }

    #[cfg(test)]
    pub(crate) fn from_code(code: i64) -> Self {
        match u32::try_from(code) {
            Ok(i) => Slot::OneTime(i),
            Err(_) => Slot::LastResort,
        }
    }
}

/// The directory key of a user's key package slot.
pub(crate) fn key_package_key(user: &str, slot: Slot) -> Vec<u8> {
    let mut k = b"pqmls/kp/v1/".to_vec();
    k.extend_from_slice(user.as_bytes());
    match slot {
        Slot::OneTime(i) => k.extend_from_slice(format!("/{i}").as_bytes()),
        Slot::LastResort => k.extend_from_slice(b"/last-resort"),
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_garbage() {
        let w = Wire::Application {
            auth: [7; AUTH_TAG_LEN],
            mls: vec![1, 2, 3],
        };
        assert_eq!(Wire::decode(&w.encode()), Some(w));
        assert_eq!(Wire::decode(&[]), None);
        assert_eq!(Wire::decode(&[9, 9, 9]), None);
        let p = AppPayload {
            uid: [1; 16],
            sent_ms: 5,
            content: Content::Text(b"hi".to_vec()),
        };
        assert_eq!(AppPayload::decode(&p.encode()), Some(p));
    }

    #[test]
    fn names_are_distinct() {
        assert_ne!(inbox_topic("a"), group_topic(b"a"));
        assert_ne!(
            key_package_key("a", Slot::OneTime(0)),
            key_package_key("a", Slot::LastResort)
        );
        assert_eq!(Slot::from_code(Slot::LastResort.code()), Slot::LastResort);
        assert_eq!(Slot::from_code(Slot::OneTime(3).code()), Slot::OneTime(3));
    }
}
