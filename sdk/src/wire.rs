//! What the client puts on the wire around MLS messages, and the names it derives.
//!
//! Every gossip payload is a postcard-encoded [`Wire`] value. MLS does the authentication
//! and encryption; the envelope only says what kind of MLS message is inside.
//!
//! # Canonical encoding
//!
//! Anyone who relays a payload can re-encode it. postcard by itself ignores trailing bytes
//! and accepts overlong varints, and a re-encoded copy of a commit would have another
//! commit hash and another transport id while carrying the same MLS content: a relay could
//! choose which commit wins, and defeat de-duplication. So [`Wire::decode`] accepts a
//! payload only if it is *the* encoding of its value: the value re-encodes to exactly the
//! same bytes, and so does the MLS message inside (TLS presentation language, RFC 9420
//! §2.1, whose variable-length integers OpenMLS already requires to be minimal). Every hash
//! derived from a payload (commit hash, Welcome hash, transport id) is therefore a hash of
//! the one byte string that carries this MLS content. A payload that fails is counted as
//! malformed and changes nothing.
//!
//! # What an observer sees
//!
//! The topic (a hash of the group id or of the user id), the size, the timing, the kind of
//! payload, and the MLS framing in clear: for a `PrivateMessage` the group id, the epoch
//! and the content type (RFC 9420 §6.3.2), and for application messages a 16-byte hash of
//! the sender's epoch authenticator (shared by every member at that epoch). A `Void`
//! carries only values that look random to anyone but the invitee.

use hmac::{Hmac, KeyInit, Mac};
use openmls::prelude::MlsMessageIn;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use pqmls_transport::Topic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::UserId;

/// Length of the truncated epoch-authenticator hash carried by application messages.
pub(crate) const AUTH_TAG_LEN: usize = 16;

/// Whether an encoded payload is a [`Wire::Application`]: postcard writes an enum's
/// variant index first (a varint, one byte below 128), and `Application` is variant 1.
pub(crate) fn is_application(payload: &[u8]) -> bool {
    payload.first() == Some(&1)
}

/// Whether an encoded payload is a [`Wire::Again`] (variant 7): a copy, which
/// [`Wire::decode`] reads as what it carries.
pub(crate) fn is_again(payload: &[u8]) -> bool {
    payload.first() == Some(&7)
}

/// A gossip payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Wire {
    /// A commit (an MLS `PrivateMessage`), on the group topic.
    Handshake {
        /// The author's priority for this epoch (see [`crate::order`]): random-looking to
        /// anyone but the epoch's members, who check it against the author's leaf once MLS
        /// has authenticated the commit. It lets them rank candidates before decrypting.
        priority: [u8; 32],
        /// The serialized `MlsMessageOut`.
        mls: Vec<u8>,
    },
    /// An application message (an MLS `PrivateMessage`), on the group topic.
    Application {
        /// Truncated hash of the sender's epoch authenticator: an unauthenticated hint
        /// that the sender may be on another branch, used only to catch up sooner.
        auth: [u8; AUTH_TAG_LEN],
        /// The serialized `MlsMessageOut`.
        mls: Vec<u8>,
    },
    /// A Welcome, on the invitee's inbox topic.
    Welcome {
        /// The serialized `MlsMessageOut` holding the Welcome.
        mls: Vec<u8>,
    },
    /// The inviter withdraws a Welcome, on the invitee's inbox topic: the add commit it
    /// came with lost the ordering, so the state it gives is on a dead branch. See
    /// [`VoidKeys`]: `id` names the Welcome only to whoever joined with it, and `sealed`
    /// is the inviter's signature over [`void_tbs`], encrypted under a key only the
    /// members of the join epoch know, so that outsiders cannot link the invitee to the
    /// group or to the inviter.
    Void {
        /// [`VoidKeys::id`] of the Welcome withdrawn.
        id: [u8; 32],
        /// AEAD ciphertext of the inviter's signature.
        sealed: Vec<u8>,
    },
    /// A vote on which commit ends an epoch (see [`crate::order`]), on the group topic:
    /// `tag` names the epoch to its members only, `sealed` is the [`VoteBody`] sealed with
    /// the epoch's vote key (a random nonce first).
    Vote {
        /// [`EpochKeys::vote_tag`] of the epoch voted on.
        tag: [u8; 16],
        /// Nonce, then the AEAD ciphertext of the [`VoteBody`].
        sealed: Vec<u8>,
    },
    /// A member that holds an epoch but no commit ending it, while the group has gone
    /// further (it missed the commit, and so did the stores), asks for it on the group
    /// topic: members that merged a commit ending that epoch publish it again. `tag`
    /// names the epoch to its members only ([`EpochKeys::vote_tag`]); but the tag is in
    /// clear in every vote, so the request is authenticated by `mac`, under a key only
    /// the epoch's members hold ([`need_mac`]).
    Need {
        /// [`EpochKeys::vote_tag`] of the epoch whose ending commit is missing.
        tag: [u8; 16],
        /// Random, so that asking again is not dropped as a duplicate; its first byte
        /// counts the request (`finality::answers_need`).
        nonce: [u8; 8],
        /// Whether the votes on the epoch are wanted too (the epoch is undecided here),
        /// or only its commits (the asker holds votes naming a commit it lacks): at 50
        /// members on 0x004F the votes are four fifths of an answer's bytes.
        votes: bool,
        /// The asker's wall clock when it asked (milliseconds since the Unix epoch): a
        /// request further than [`NEED_FRESH_MS`] from the answerer's clock is not
        /// answered, so a request recorded by a store cannot be replayed for ever.
        sent_ms: u64,
        /// [`need_mac`] of the fields above under the epoch's vote key.
        mac: [u8; 16],
    },
    /// A member that cannot reach the group's final chain any more (its state is on a
    /// dead branch past the horizon: `Event::Unrecoverable`) asks to be added again, on
    /// the group topic. `tag` names the last epoch it shares with the group
    /// ([`EpochKeys::vote_tag`]); `sealed` is a [`LostBody`] sealed with that epoch's
    /// [`lost_key`] (a random nonce first), so only the epoch's members can read who asks.
    Lost {
        /// [`EpochKeys::vote_tag`] of the epoch the request is sealed for.
        tag: [u8; 16],
        /// Nonce, then the AEAD ciphertext of the [`LostBody`].
        sealed: Vec<u8>,
    },
    /// A payload published again: an answer to a [`Wire::Need`], or an own commit,
    /// Welcome or withdrawal that may not have arrived. `payload` is the canonical
    /// encoding of a `Handshake`, `Vote`, `Welcome` or `Void`, and [`Wire::decode`] reads
    /// the copy as that payload. Both our transports refuse to publish bytes they saw
    /// within their duplicate window (gossipsub's duplicate cache, 2 minutes;
    /// [`crate::Transport::duplicate_window`]), so a copy of the same bytes would go
    /// nowhere while it matters; the random `nonce` makes it new bytes to them. What the
    /// copy carries is the inner payload's: every hash derived from it (commit hash,
    /// Welcome hash, withdrawal id) is the same, so a copy can do nothing its original
    /// could not, and a receiver that has the original drops it as known. Anyone can
    /// wrap anything it saw, as anyone can publish anything: a copy costs a receiver a
    /// decode and a lookup, like any other payload.
    Again {
        /// Random, so that the copy is new bytes to the transports.
        nonce: [u8; 8],
        /// The canonical encoding of the payload published again.
        payload: Vec<u8>,
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
    let mut out = b"pqmls void welcome v2".to_vec();
    out.extend_from_slice(&(group_id.len() as u64).to_be_bytes());
    out.extend_from_slice(group_id);
    out.extend_from_slice(welcome);
    out
}

/// The exporter label (RFC 9420 §8.5) of the secret behind a Welcome's [`VoidKeys`].
pub(crate) const VOID_EXPORTER_LABEL: &str = "pqmls void v2";

/// Names and key of a possible [`Wire::Void`] for one Welcome, derived from
/// `MLS-Exporter("pqmls void v2", welcome hash, 32)` of the epoch the Welcome joins: the
/// inviter computes it when its add commit merges, the invitee when it joins. Nobody else
/// outside that epoch's members can compute either value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct VoidKeys {
    /// What the Void carries to name the Welcome.
    pub id: [u8; 32],
    /// The AEAD key that seals the inviter's signature (the first bytes of a 32-byte
    /// derivation, as many as the suite's AEAD needs; the nonce is all zero: one message
    /// per key).
    pub key: [u8; 32],
}

impl VoidKeys {
    pub(crate) fn derive(exported: &[u8]) -> Self {
        let label = |l: &[u8]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(l);
            h.update(exported);
            h.finalize().into()
        };
        VoidKeys {
            id: label(b"pqmls void id v2"),
            key: label(b"pqmls void key v2"),
        }
    }
}

impl std::fmt::Debug for VoidKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VoidKeys(..)")
    }
}

/// Whether `mls` is the canonical TLS encoding of an MLS message: it parses with nothing
/// left over, and the parsed message serializes back to the same bytes.
pub(crate) fn canonical_mls(mls: &[u8]) -> bool {
    MlsMessageIn::tls_deserialize_exact(mls)
        .ok()
        .and_then(|m| m.tls_serialize_detached().ok())
        .is_some_and(|again| again == mls)
}

impl Wire {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing into a Vec cannot fail for these types.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a payload; `None` unless it is the canonical encoding of a [`Wire`] value
    /// whose MLS message (if any) is canonical too (see the module docs). A
    /// [`Wire::Again`] decodes as the payload it carries, which must be canonical itself
    /// and one of the kinds that are published again (never a copy of a copy, an
    /// application message, a request): the rest of the client never sees the wrapper.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        match Self::decode_one(bytes)? {
            Wire::Again { payload, .. } => {
                Self::decode_one(&payload).filter(Self::is_published_again)
            }
            w => Some(w),
        }
    }

    /// The kinds a [`Wire::Again`] may carry: what the client publishes again. Never an
    /// application message (a copy would be a second delivery to tell apart), a request
    /// (`Need`, `Lost`: asked afresh, with fresh nonces) or a copy.
    fn is_published_again(&self) -> bool {
        matches!(
            self,
            Wire::Handshake { .. } | Wire::Vote { .. } | Wire::Welcome { .. } | Wire::Void { .. }
        )
    }

    /// [`Wire::decode`] without looking inside a [`Wire::Again`].
    fn decode_one(bytes: &[u8]) -> Option<Self> {
        let w: Wire = postcard::from_bytes(bytes).ok()?;
        if w.encode() != bytes {
            return None;
        }
        match &w {
            Wire::Handshake { mls, .. } | Wire::Application { mls, .. } | Wire::Welcome { mls } => {
                canonical_mls(mls).then_some(w)
            }
            Wire::Void { .. }
            | Wire::Vote { .. }
            | Wire::Need { .. }
            | Wire::Lost { .. }
            | Wire::Again { .. } => Some(w),
        }
    }

    /// `payload` (a canonical encoding) wrapped to be published again: see [`Wire::Again`].
    pub(crate) fn again(payload: Vec<u8>, nonce: [u8; 8]) -> Vec<u8> {
        Wire::Again { nonce, payload }.encode()
    }
}

/// Secrets of one epoch that the ordering uses, exported from it (RFC 9420 §8.5) when a
/// member enters it: only the epoch's members know them.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct EpochKeys {
    /// Ranks the epoch's candidate commits (see [`crate::order::priority`]).
    pub order_key: [u8; 32],
    /// Seals the votes on the epoch.
    pub vote_key: [u8; 32],
    /// Names the epoch on the wire to its members.
    pub vote_tag: [u8; 16],
}

/// The exporter labels of [`EpochKeys`].
pub(crate) const ORDER_EXPORTER_LABEL: &str = "pqmls order v1";
pub(crate) const VOTE_EXPORTER_LABEL: &str = "pqmls vote v1";

impl EpochKeys {
    pub(crate) fn new(order_key: [u8; 32], vote_key: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"pqmls vote tag v1");
        h.update(vote_key);
        let d = h.finalize();
        let mut vote_tag = [0u8; 16];
        vote_tag.copy_from_slice(&d[..16]);
        EpochKeys {
            order_key,
            vote_key,
            vote_tag,
        }
    }
}

impl std::fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochKeys(..)")
    }
}

/// A vote, inside [`Wire::Vote`]: the voter's signature (with its leaf's key, given here
/// and checked against the epoch's member list) over [`vote_tbs`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct VoteBody {
    pub epoch: u64,
    pub round: u8,
    pub commit: [u8; 32],
    pub leaf: u32,
    pub public_key: Vec<u8>,
    pub sig: Vec<u8>,
}

impl VoteBody {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a vote; `None` unless it is the canonical encoding of one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let v: VoteBody = postcard::from_bytes(bytes).ok()?;
        (v.encode() == bytes).then_some(v)
    }
}

/// What a vote's signature covers.
pub(crate) fn vote_tbs(
    group_id: &[u8],
    epoch: u64,
    round: u8,
    commit: &[u8; 32],
    leaf: u32,
) -> Vec<u8> {
    let mut out = b"pqmls vote v1".to_vec();
    out.extend_from_slice(&(group_id.len() as u64).to_be_bytes());
    out.extend_from_slice(group_id);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(round);
    out.extend_from_slice(commit);
    out.extend_from_slice(&leaf.to_be_bytes());
    out
}

/// A rejoin request, inside [`Wire::Lost`]: a fresh key package of the requester (an
/// `MlsMessageOut`) and the requester's signature, with the key in that key package's
/// leaf, over [`lost_tbs`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LostBody {
    pub epoch: u64,
    pub key_package: Vec<u8>,
    /// The requester's abstention: the vote tags it voted under in epochs after `epoch`
    /// (it votes no more once it knows it lost the group). In every other later epoch
    /// where its leaf of `epoch` is listed, it casts no vote (`order::ABSTAIN`). `None`:
    /// no statement (more tags than [`MAX_VOTED_TAGS`]).
    pub voted: Option<Vec<[u8; 16]>>,
    /// The abstaining leaf: SHA-256 of the requester's leaf HPKE key at `epoch`, as the
    /// members' epoch records name it. Signed, so that a member who joined after `epoch`
    /// (and has no record of it) can count the abstention when another member forwards
    /// the request under a later epoch's key (`recovery::forward_abstention`). `None`
    /// exactly when `voted` is.
    pub leaf: Option<[u8; 32]>,
    pub sig: Vec<u8>,
}

/// Most vote tags an abstention lists.
pub(crate) const MAX_VOTED_TAGS: usize = 256;

impl LostBody {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a request; `None` unless it is the canonical encoding of one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let v: LostBody = postcard::from_bytes(bytes).ok()?;
        (v.encode() == bytes).then_some(v)
    }
}

/// What a rejoin request's signature covers: the group, the epoch it lost the group at,
/// the key package and the abstention (tags and leaf), so that none of them can be moved
/// to another request.
pub(crate) fn lost_tbs(
    group_id: &[u8],
    epoch: u64,
    key_package: &[u8],
    voted: Option<&[[u8; 16]]>,
    leaf: Option<&[u8; 32]>,
) -> Vec<u8> {
    let mut out = b"pqmls lost v3".to_vec();
    out.extend_from_slice(&(group_id.len() as u64).to_be_bytes());
    out.extend_from_slice(group_id);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&Sha256::digest(key_package));
    match voted {
        None => out.push(0),
        Some(tags) => {
            out.push(1);
            out.extend_from_slice(&(tags.len() as u64).to_be_bytes());
            for t in tags {
                out.extend_from_slice(t);
            }
        }
    }
    match leaf {
        None => out.push(0),
        Some(l) => {
            out.push(1);
            out.extend_from_slice(l);
        }
    }
    out
}

/// The key that seals rejoin requests for an epoch, derived from its vote key under a
/// label of its own (a vote never opens as a request, nor the reverse).
pub(crate) fn lost_key(vote_key: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"pqmls lost key v1");
    h.update(vote_key);
    h.finalize().into()
}

/// How far from the answerer's clock the `sent_ms` of a [`Wire::Need`] may be, either way,
/// for the request to be answered (clocks of members may differ by that much).
pub(crate) const NEED_FRESH_MS: u64 = 10 * 60 * 1000;

/// The MAC of a [`Wire::Need`]: HMAC-SHA256 (RFC 2104), truncated to its first 16
/// bytes, under a key derived from the epoch's vote key under a label of its own (so it
/// is no key of a vote or a rejoin request), over a label and every other field of the
/// request. Only the epoch's members hold the vote key (an exporter secret of the epoch,
/// RFC 9420 §8.5), so only they can ask; 128 bits of tag bound a forger's chance per try
/// to 2^-128.
pub(crate) fn need_mac(
    vote_key: &[u8; 32],
    tag: &[u8; 16],
    nonce: &[u8; 8],
    votes: bool,
    sent_ms: u64,
) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Some(m) = need_hmac(vote_key, tag, nonce, votes, sent_ms) {
        out.copy_from_slice(&m.finalize().into_bytes()[..16]);
    }
    out
}

/// Whether `mac` is [`need_mac`] of the rest, compared in constant time.
pub(crate) fn need_mac_ok(
    vote_key: &[u8; 32],
    tag: &[u8; 16],
    nonce: &[u8; 8],
    votes: bool,
    sent_ms: u64,
    mac: &[u8; 16],
) -> bool {
    need_hmac(vote_key, tag, nonce, votes, sent_ms)
        .is_some_and(|m| m.verify_truncated_left(mac).is_ok())
}

fn need_hmac(
    vote_key: &[u8; 32],
    tag: &[u8; 16],
    nonce: &[u8; 8],
    votes: bool,
    sent_ms: u64,
) -> Option<Hmac<Sha256>> {
    let mut h = Sha256::new();
    h.update(b"pqmls need key v1");
    h.update(vote_key);
    let key = zeroize::Zeroizing::new(<[u8; 32]>::from(h.finalize()));
    // HMAC takes keys of any length: this does not fail.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key[..]).ok()?;
    m.update(b"pqmls need v1");
    m.update(tag);
    m.update(nonce);
    m.update(&[u8::from(votes)]);
    m.update(&sent_ms.to_be_bytes());
    Some(m)
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

    /// Decodes a plaintext; `None` unless it is the canonical encoding of one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let p: AppPayload = postcard::from_bytes(bytes).ok()?;
        (p.encode() == bytes).then_some(p)
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

/// The hash that orders competing commits: SHA-256 over the commit's canonical MLS
/// message (which names the group and the epoch in its framing).
pub(crate) fn commit_hash(mls: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"pqmls commit order v2");
    h.update(mls);
    h.finalize().into()
}

/// The inbox topic of a user, where Welcomes for them are published.
pub(crate) fn inbox_topic(user: &UserId) -> Topic {
    let mut id = b"pqmls/inbox/v2/".to_vec();
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

    pub(crate) fn from_code(code: i64) -> Self {
        match u32::try_from(code) {
            Ok(i) => Slot::OneTime(i),
            Err(_) => Slot::LastResort,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_garbage() {
        let w = Wire::Void {
            id: [7; 32],
            sealed: vec![1, 2, 3],
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
    fn non_canonical_encodings_are_refused() {
        let w = Wire::Void {
            id: [7; 32],
            sealed: vec![1, 2, 3],
        };
        let good = w.encode();
        // Trailing bytes.
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Wire::decode(&trailing), None);
        // An overlong varint for the length of `sealed` (3 as 0x83 0x00).
        let len_at = good.len() - 4;
        assert_eq!(good[len_at], 3);
        let mut overlong = good[..len_at].to_vec();
        overlong.extend_from_slice(&[0x83, 0x00, 1, 2, 3]);
        assert!(
            postcard::from_bytes::<Wire>(&overlong).is_ok(),
            "postcard alone accepts it"
        );
        assert_eq!(Wire::decode(&overlong), None);
        // The same for the application plaintext.
        let p = AppPayload {
            uid: [1; 16],
            sent_ms: 300,
            content: Content::Leave,
        };
        let mut t = p.encode();
        t.push(1);
        assert_eq!(AppPayload::decode(&t), None);
        // A Handshake whose bytes are not an MLS message.
        let junk = Wire::Handshake {
            priority: [0; 32],
            mls: vec![0, 1],
        }
        .encode();
        assert_eq!(Wire::decode(&junk), None);
    }

    /// A request's MAC verifies under the key of its epoch only, and binds every field:
    /// changing the tag, the nonce (the attempt), the votes flag or the clock, or using
    /// another epoch's key, makes it fail; so does a MAC cut short or changed in any bit.
    #[test]
    fn a_request_verifies_under_its_epochs_key_only() {
        let key = [1u8; 32];
        let (tag, nonce, votes, sent) = ([2u8; 16], [3u8; 8], true, 1_700_000_000_000u64);
        let mac = need_mac(&key, &tag, &nonce, votes, sent);
        assert!(need_mac_ok(&key, &tag, &nonce, votes, sent, &mac));
        assert!(!need_mac_ok(&[9; 32], &tag, &nonce, votes, sent, &mac));
        assert!(!need_mac_ok(&key, &[7; 16], &nonce, votes, sent, &mac));
        let mut other = nonce;
        other[0] = 4;
        assert!(!need_mac_ok(&key, &tag, &other, votes, sent, &mac));
        assert!(!need_mac_ok(&key, &tag, &nonce, !votes, sent, &mac));
        assert!(!need_mac_ok(&key, &tag, &nonce, votes, sent + 1, &mac));
        for bit in 0..128 {
            let mut m = mac;
            m[bit / 8] ^= 1 << (bit % 8);
            assert!(!need_mac_ok(&key, &tag, &nonce, votes, sent, &m));
        }
        // Known answer, computed independently (Python's `hmac` and `hashlib`):
        // HMAC-SHA256 with key SHA-256("pqmls need key v1" || key) over "pqmls need v1"
        // || tag || nonce || votes || sent_ms (8 bytes, big-endian), first 16 bytes.
        assert_eq!(hex(&mac), "3c12545ac65d2a9ea4f500036304653f");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A copy reads as what it carries, and only as a kind that is published again.
    #[test]
    fn a_copy_reads_as_its_payload_and_only_as_one_published_again() {
        let vote = Wire::Vote {
            tag: [3; 16],
            sealed: vec![4; 40],
        };
        let void = Wire::Void {
            id: [5; 32],
            sealed: vec![6; 48],
        };
        for w in [&vote, &void] {
            let copy = Wire::again(w.encode(), [9; 8]);
            assert_ne!(copy, w.encode(), "new bytes to the transports");
            assert!(is_again(&copy) && !is_again(&w.encode()));
            assert_ne!(copy, Wire::again(w.encode(), [8; 8]));
            assert_eq!(Wire::decode(&copy).as_ref(), Some(w));
        }
        // Never a copy of a copy, of a request, or of anything that does not decode.
        let copy = Wire::again(vote.encode(), [9; 8]);
        assert_eq!(Wire::decode(&Wire::again(copy.clone(), [1; 8])), None);
        let need = Wire::Need {
            tag: [3; 16],
            nonce: [0; 8],
            votes: true,
            sent_ms: 1,
            mac: [4; 16],
        };
        assert_eq!(Wire::decode(&need.encode()), Some(need.clone()));
        // The byte after the tag and the nonce says whether the votes are wanted: 0 or 1,
        // nothing else.
        let mut bad = need.encode();
        assert_eq!(bad[1 + 16 + 8], 1);
        bad[1 + 16 + 8] = 2;
        assert_eq!(Wire::decode(&bad), None);
        assert_eq!(Wire::decode(&Wire::again(need.encode(), [1; 8])), None);
        let lost = Wire::Lost {
            tag: [3; 16],
            sealed: vec![1],
        };
        assert_eq!(Wire::decode(&Wire::again(lost.encode(), [1; 8])), None);
        let mut trailing = vote.encode();
        trailing.push(0);
        assert_eq!(Wire::decode(&Wire::again(trailing, [1; 8])), None);
        // The kinds a copy may carry.
        let mls = vec![0, 1];
        let kinds = [
            (
                Wire::Handshake {
                    priority: [0; 32],
                    mls: mls.clone(),
                },
                true,
            ),
            (Wire::Welcome { mls: mls.clone() }, true),
            (vote.clone(), true),
            (void.clone(), true),
            (
                Wire::Application {
                    auth: [0; AUTH_TAG_LEN],
                    mls,
                },
                false,
            ),
            (need.clone(), false),
            (lost.clone(), false),
            (
                Wire::Again {
                    nonce: [0; 8],
                    payload: vote.encode(),
                },
                false,
            ),
        ];
        for (w, again) in kinds {
            assert_eq!(w.is_published_again(), again, "{w:?}");
        }
        // The copy itself must be canonical: a trailing byte after it.
        let mut outer = copy;
        outer.push(0);
        assert_eq!(Wire::decode(&outer), None);
        // And it is no application message to `is_application`.
        assert!(!is_application(&Wire::again(vote.encode(), [1; 8])));
    }

    #[test]
    fn rejoin_requests_round_trip_and_bind_their_fields() {
        let w = Wire::Lost {
            tag: [3; 16],
            sealed: vec![4; 40],
        };
        assert_eq!(Wire::decode(&w.encode()), Some(w));
        let b = LostBody {
            epoch: 9,
            key_package: vec![1, 2, 3],
            voted: Some(vec![[6; 16]]),
            leaf: Some([8; 32]),
            sig: vec![5; 8],
        };
        assert_eq!(LostBody::decode(&b.encode()), Some(b.clone()));
        let mut t = b.encode();
        t.push(0);
        assert_eq!(LostBody::decode(&t), None);
        // The signed bytes change with each field.
        let tags = [[1; 16], [2; 16]];
        let base = lost_tbs(b"g", 9, b"kp", Some(&tags), Some(&[8; 32]));
        assert_ne!(base, lost_tbs(b"h", 9, b"kp", Some(&tags), Some(&[8; 32])));
        assert_ne!(base, lost_tbs(b"g", 10, b"kp", Some(&tags), Some(&[8; 32])));
        assert_ne!(base, lost_tbs(b"g", 9, b"kq", Some(&tags), Some(&[8; 32])));
        assert_ne!(
            base,
            lost_tbs(b"g", 9, b"kp", Some(&tags[..1]), Some(&[8; 32]))
        );
        assert_ne!(base, lost_tbs(b"g", 9, b"kp", None, Some(&[8; 32])));
        assert_ne!(
            lost_tbs(b"g", 9, b"kp", None, Some(&[8; 32])),
            lost_tbs(b"g", 9, b"kp", Some(&[]), Some(&[8; 32]))
        );
        assert_ne!(base, lost_tbs(b"g", 9, b"kp", Some(&tags), Some(&[9; 32])));
        assert_ne!(base, lost_tbs(b"g", 9, b"kp", Some(&tags), None));
        // Its key is not the vote key it comes from.
        assert_ne!(lost_key(&[7; 32]), [7; 32]);
        assert_ne!(lost_key(&[7; 32]), lost_key(&[8; 32]));
    }

    #[test]
    fn void_keys_are_independent_labels() {
        let a = VoidKeys::derive(&[1; 32]);
        let b = VoidKeys::derive(&[2; 32]);
        assert_ne!(a.id, a.key);
        assert_ne!(a.id, b.id);
        assert_eq!(a, VoidKeys::derive(&[1; 32]));
    }

    #[test]
    fn names_are_distinct() {
        let u = UserId::from_bytes([1; 32]);
        assert_ne!(inbox_topic(&u), group_topic(u.as_bytes()));
        assert_eq!(Slot::from_code(Slot::LastResort.code()), Slot::LastResort);
        assert_eq!(Slot::from_code(Slot::OneTime(3).code()), Slot::OneTime(3));
    }
}
