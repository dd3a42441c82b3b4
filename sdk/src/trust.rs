//! The decisions that matter for safety when input comes from the network, as small pure
//! functions (no OpenMLS, no SQLite, no clock), each with the argument for it.
//!
//! The rule behind all of them: **nothing a stranger sends can make a client drop, replace
//! or redirect a group state.** Anyone can publish on a group's topic (its name is a hash
//! of the group id, which MLS framing shows in clear) and on a user's inbox. Only MLS
//! authenticates: a commit that merges was signed by a member of that epoch, a Welcome
//! names the member who sent it (its GroupInfo signature, RFC 9420 §12.4.3.1), and a
//! message that decrypts came from a member. Everything else (envelope fields, framing,
//! sizes) is a hint at most.

use crate::config::InvitePolicy;

/// What we hold of the group a Welcome is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Never a member of a group with this id.
    Unknown,
    /// A live state: we are a member and nothing authenticated says the state is dead.
    Live,
    /// A state that authenticated input ended: a merged commit removed us (still in the
    /// grace period, or gone), or the inviter of the Welcome we joined with withdrew it
    /// (a `Void` with its signature).
    Dead {
        /// We had asked to leave.
        left: bool,
        /// An epoch of the live chain up to which no Welcome can be the way back: after
        /// a merged commit removed us, the last epoch final here (through it we were a
        /// member on the chain everyone agreed on, so an add of us ending an epoch up to
        /// it is from a branch that lost; the removal's own epoch bounds nothing, as it
        /// may be on a branch whose epoch numbers ran ahead of the live chain's, and a
        /// bound on it kept members re-invited on the live chain out); after the group
        /// finalised a commit we cannot reach, the epoch it ended. `None` after a
        /// withdrawal (the way back is on another branch) and once a removed state is
        /// forgotten.
        ended_at: Option<u64>,
    },
}

/// What to do with a Welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WelcomeAction {
    /// An invitation: joined or held for the application, per the consent policy. Nothing
    /// of an earlier state of the group is carried into it (no message is re-sent).
    Invitation,
    /// Keep it aside, unused, in case our state turns out dead.
    KeepAside,
    /// Join: it continues a state of ours that is dead (our messages sent on that state
    /// may be re-sent into it).
    Continue,
    /// Drop it.
    Refuse,
}

/// Decides what a Welcome may do, given what we hold of its group, whether its sender
/// (the member whose signature is on its GroupInfo) is a key we have seen as a member of
/// this group, and whether we joined with this very Welcome before.
///
/// Argument. A group id is public (MLS framing), so anyone can create a group with the id
/// of ours and invite us into it with one of our published key packages: only the
/// sender's key tells a continuation of our group from a stranger's group. So:
/// - a live state is never replaced, whoever sends the Welcome: it is kept aside (within
///   a cap that keeps known senders' Welcomes before strangers'). Losing a live state
///   needs authenticated evidence ([`Held::Dead`]); unauthenticated hints (an
///   epoch-authenticator tag in an envelope, commits for our epoch that do not decrypt)
///   only make us catch up;
/// - a dead state is *continued* only by a Welcome from a key seen in the group: a
///   re-invitation after a removal, or the invitation again after the inviter moved
///   branch. Only then are our messages of the dead state re-sent into the new one;
/// - a Welcome from a key never seen in the group is, whatever we held, no more than an
///   invitation from a stranger: the consent policy decides, and nothing of the old
///   state goes into it. (It may be honest: a member who joined after we left. It may be
///   a stranger's group with our group's id: consent is what tells them apart.)
/// - a Welcome we already joined with is a replay (a relay can re-send it, and a
///   last-resort key package still opens it): refused;
/// - a Welcome for an epoch no later than [`Held::Dead`]'s `ended_at` (the last final
///   epoch of a removed state, or the epoch whose final commit a lost state cannot reach)
///   comes from a branch that lost (kept aside while we were live) or is replayed: an
///   invitation back ends a later epoch of the live chain. Refused: continuing with it
///   put a removed member back on a dead branch, at an epoch the group had left long ago
///   (seen in a simulated trial);
/// - after we left on purpose, even a known member's invitation asks again.
pub(crate) fn welcome_action(
    held: Held,
    welcome_epoch: u64,
    sender_known: bool,
    replayed: bool,
) -> WelcomeAction {
    if replayed {
        return WelcomeAction::Refuse;
    }
    match (held, sender_known) {
        (Held::Unknown, _) => WelcomeAction::Invitation,
        (Held::Live, _) => WelcomeAction::KeepAside,
        (
            Held::Dead {
                left: false,
                ended_at: Some(end),
            },
            true,
        ) if welcome_epoch <= end => WelcomeAction::Refuse,
        (Held::Dead { left: false, .. }, true) => WelcomeAction::Continue,
        (Held::Dead { .. }, _) => WelcomeAction::Invitation,
    }
}

/// What a member knows when a rejoin request ([`crate::wire::Wire::Lost`]) has been
/// opened and its signature checked: the requester's key signed it and a fresh key
/// package, and the request was sealed under the keys of an epoch we held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RejoinRequest {
    /// The requester is us.
    pub from_self: bool,
    /// The requester is a member of our live state now (listed in its tree).
    pub listed_now: bool,
    /// The requester was a member of the epoch the request is sealed for, on our branch.
    pub member_then: bool,
    /// We (or a member whose commit we merged) already honoured this key package.
    pub honoured: bool,
    /// Our state of the group is live (we are a member and can commit).
    pub we_are_live: bool,
}

/// Whether a member re-adds the requester of a rejoin request (removes its old leaf and
/// adds its new key package in one commit, and sends it the Welcome).
///
/// Argument. The request proves three things: the sender knew the keys of epoch `e`
/// (only members of `e` do: they are exported from it, RFC 9420 §8.5), the user it names
/// signed it (its signature over the group, the epoch and the key package, with the key
/// its user id is the hash of), and the key package is that user's (its own signature,
/// RFC 9420 §10.1). So:
/// - only a user who is still listed is re-added: a removal is never undone this way (a
///   removed member's request names a user the tree no longer lists), and nobody is added
///   who was not already a member;
/// - the user must have been a member of `e` on our branch: a request sealed under an
///   epoch it never held is someone else's (the same user's own signature still covers
///   it, so this only narrows what a replay can reach);
/// - a key package honoured once is not honoured again: a relay that replays an old
///   request cannot make the group swap a member's current leaf for a key package whose
///   private key was used up when it rejoined (that would lock it out). The record lasts
///   as long as the epoch's keys that open the request ([`crate::engine`] deletes both
///   64 epochs after finality), so a replay after that cannot be opened at all;
/// - a re-add is a commit like any other: the ordering decides between concurrent ones,
///   and the member's own requests are bounded in number, so a request costs at most one
///   commit per member that hears it (members act in turn, see `rejoin_delay`).
pub(crate) fn rejoin_action(r: RejoinRequest) -> bool {
    !r.from_self && r.listed_now && r.member_then && !r.honoured && r.we_are_live
}

/// The leaf an abstention applies to (`engine::recovery::record_abstention`), from our
/// record of the member's leaves at the epoch it lost the group (`recorded`, `None` if we
/// have no record of that epoch: we joined after it) and the leaf it signed in its
/// request (`signed`, `None` in requests without one).
///
/// - With a record, the member must have exactly one leaf in it, and a signed leaf must
///   be that one: the record is what we saw authenticated by MLS, and a request whose
///   signature names another leaf says something about a state we never shared.
/// - Without a record, the signed leaf: it is the member's own statement, under the
///   signature key MLS binds to its identity, so a member who forwarded the request
///   (sealed under a later epoch's key) vouches for nothing; the leaf then applies only
///   where our records show that member with that leaf (`order::abstains` stops at the
///   first record it reaches that differs).
pub(crate) fn abstaining_leaf(
    recorded: Option<&[[u8; 32]]>,
    signed: Option<&[u8; 32]>,
) -> Option<[u8; 32]> {
    match (recorded, signed) {
        (Some([one]), None) => Some(*one),
        (Some([one]), Some(s)) if one == s => Some(*one),
        (Some(_), _) | (None, None) => None,
        (None, Some(s)) => Some(*s),
    }
}

/// How many turns a member waits before re-adding a requester itself: its rank among the
/// live members other than the requester, in leaf order (the lowest leaf acts first; a
/// member later in the order acts only if the re-add has not happened by its turn).
/// `None` if we are not among them.
pub(crate) fn rejoin_turn(live_leaves: &[u32], own: u32, requester: u32) -> Option<u32> {
    let mut others: Vec<u32> = live_leaves
        .iter()
        .copied()
        .filter(|l| *l != requester)
        .collect();
    others.sort_unstable();
    others.dedup();
    others
        .iter()
        .position(|l| *l == own)
        .and_then(|p| u32::try_from(p).ok())
}

/// Whether an invitation to a group we were never in is joined at once (`true`) or held
/// for the application to accept or decline.
pub(crate) fn join_without_asking(policy: InvitePolicy, inviter_is_contact: bool) -> bool {
    match policy {
        InvitePolicy::Everyone => true,
        InvitePolicy::Contacts => inviter_is_contact,
        InvitePolicy::Nobody => false,
    }
}

/// Where an epoch named in a message's (unauthenticated) framing stands relative to ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochSlot {
    /// Before the rollback window: nothing we hold can use it.
    TooOld,
    /// Within the rollback window, before ours.
    Past,
    /// Ours.
    Current,
    /// After ours, within the future window.
    Future,
    /// Further ahead than the future window: not kept now, left for a later catch-up.
    TooFar,
}

/// Classifies `epoch` against our `current` one with a rollback window of `window` past
/// epochs and a future window of `future` epochs.
///
/// Argument. A non-member can name any epoch in the framing. Keeping only epochs in
/// `[current - window, current + future]` bounds what it can make us store per group (with
/// the per-epoch and per-group caps); honest traffic outside the window is either useless
/// to us (too old: no snapshot can read it) or will be fetched again from the stores once
/// we have advanced (too far: the catch-up cursor does not move past it).
pub(crate) fn epoch_slot(current: u64, epoch: u64, window: u64, future: u64) -> EpochSlot {
    if epoch == current {
        EpochSlot::Current
    } else if epoch < current {
        if current - epoch > window {
            EpochSlot::TooOld
        } else {
            EpochSlot::Past
        }
    } else if epoch - current > future {
        EpochSlot::TooFar
    } else {
        EpochSlot::Future
    }
}

/// A token bucket on a monotonic clock given in milliseconds: `rate` tokens per second,
/// at most `burst` saved. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    tokens: f64,
    at_ms: u64,
}

impl Budget {
    pub(crate) fn new(burst: u32, now_ms: u64) -> Self {
        Budget {
            tokens: f64::from(burst),
            at_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, rate_per_sec: f64, burst: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate_per_sec).min(f64::from(burst));
        self.at_ms = now_ms.max(self.at_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_never_replace_or_continue_a_group() {
        let dead = Held::Dead {
            left: false,
            ended_at: None,
        };
        // Nobody replaces a live state: kept aside.
        for known in [false, true] {
            assert_eq!(
                welcome_action(Held::Live, 7, known, false),
                WelcomeAction::KeepAside
            );
        }
        // Only a known member continues a dead state; a stranger only invites.
        assert_eq!(
            welcome_action(dead, 7, true, false),
            WelcomeAction::Continue
        );
        assert_eq!(
            welcome_action(dead, 7, false, false),
            WelcomeAction::Invitation
        );
        // A replayed Welcome does nothing, whoever sent it.
        for held in [Held::Unknown, Held::Live, dead] {
            for known in [false, true] {
                assert_eq!(welcome_action(held, 7, known, true), WelcomeAction::Refuse);
            }
        }
        // After leaving on purpose, consent again.
        let left = Held::Dead {
            left: true,
            ended_at: None,
        };
        assert_eq!(
            welcome_action(left, 7, true, false),
            WelcomeAction::Invitation
        );
        // A group never seen is an invitation, whoever sends it.
        for known in [false, true] {
            assert_eq!(
                welcome_action(Held::Unknown, 7, known, false),
                WelcomeAction::Invitation
            );
        }
    }

    /// Seen in a simulated trial (store misses, seed 62): a removed member retried a
    /// Welcome kept aside from epoch 11 (an add on a branch that lost) and continued with
    /// it, holding the group at an epoch the others had left for good. Here its last
    /// final epoch is 21.
    #[test]
    fn a_state_ended_at_an_epoch_is_continued_only_by_a_later_welcome() {
        let removed = Held::Dead {
            left: false,
            ended_at: Some(21),
        };
        for stale in [0, 11, 20, 21] {
            assert_eq!(
                welcome_action(removed, stale, true, false),
                WelcomeAction::Refuse
            );
        }
        assert_eq!(
            welcome_action(removed, 22, true, false),
            WelcomeAction::Continue
        );
        // A stranger's Welcome stays an invitation (consent decides; nothing carried).
        assert_eq!(
            welcome_action(removed, 22, false, false),
            WelcomeAction::Invitation
        );
        // Without a bound (after a withdrawal), any epoch may continue.
        let withdrawn = Held::Dead {
            left: false,
            ended_at: None,
        };
        assert_eq!(
            welcome_action(withdrawn, 3, true, false),
            WelcomeAction::Continue
        );
    }

    #[test]
    fn rejoin_needs_a_listed_member_of_the_epoch_and_a_fresh_key_package() {
        let ok = RejoinRequest {
            from_self: false,
            listed_now: true,
            member_then: true,
            honoured: false,
            we_are_live: true,
        };
        assert!(rejoin_action(ok));
        // Each condition alone refuses.
        for bad in [
            RejoinRequest {
                from_self: true,
                ..ok
            },
            // A removed member: the removal stands.
            RejoinRequest {
                listed_now: false,
                ..ok
            },
            RejoinRequest {
                member_then: false,
                ..ok
            },
            // A replay of a request already honoured.
            RejoinRequest {
                honoured: true,
                ..ok
            },
            RejoinRequest {
                we_are_live: false,
                ..ok
            },
        ] {
            assert!(!rejoin_action(bad), "{bad:?}");
        }
    }

    #[test]
    fn rejoin_turns_follow_leaf_order_without_the_requester() {
        let live = [5, 0, 2, 7];
        assert_eq!(rejoin_turn(&live, 0, 2), Some(0));
        assert_eq!(rejoin_turn(&live, 5, 2), Some(1));
        assert_eq!(rejoin_turn(&live, 7, 2), Some(2));
        assert_eq!(rejoin_turn(&live, 2, 2), None, "the requester itself");
        assert_eq!(rejoin_turn(&live, 3, 2), None, "not a member");
        // Every member other than the requester has its own turn.
        let turns: Vec<_> = [0, 5, 7]
            .iter()
            .map(|o| rejoin_turn(&live, *o, 2).unwrap())
            .collect();
        assert_eq!(turns, vec![0, 1, 2]);
    }

    #[test]
    fn consent_policy() {
        assert!(join_without_asking(InvitePolicy::Everyone, false));
        assert!(join_without_asking(InvitePolicy::Contacts, true));
        assert!(!join_without_asking(InvitePolicy::Contacts, false));
        assert!(!join_without_asking(InvitePolicy::Nobody, true));
    }

    #[test]
    fn epoch_windows() {
        assert_eq!(epoch_slot(10, 10, 16, 64), EpochSlot::Current);
        assert_eq!(epoch_slot(10, 0, 16, 64), EpochSlot::Past);
        assert_eq!(epoch_slot(20, 3, 16, 64), EpochSlot::TooOld);
        assert_eq!(epoch_slot(20, 4, 16, 64), EpochSlot::Past);
        assert_eq!(epoch_slot(10, 74, 16, 64), EpochSlot::Future);
        assert_eq!(epoch_slot(10, 75, 16, 64), EpochSlot::TooFar);
        assert_eq!(epoch_slot(0, u64::MAX, 16, 64), EpochSlot::TooFar);
        assert_eq!(epoch_slot(u64::MAX, 0, 16, 64), EpochSlot::TooOld);
    }

    #[test]
    fn budget_refills_at_its_rate_up_to_its_burst() {
        let mut b = Budget::new(4, 0);
        assert!((0..4).all(|_| b.take(2.0, 4, 0)));
        assert!(!b.take(2.0, 4, 0));
        assert!(!b.take(2.0, 4, 400));
        assert!(b.take(2.0, 4, 500));
        assert!(!b.take(2.0, 4, 500));
        // A long pause refills only up to the burst.
        assert_eq!((0..10).filter(|_| b.take(2.0, 4, 100_000)).count(), 4);
        // A clock that goes back does not mint tokens.
        assert!(!b.take(2.0, 4, 0));
    }

    #[test]
    fn an_abstention_names_the_recorded_leaf_or_without_a_record_the_signed_one() {
        let (a, b) = ([1; 32], [2; 32]);
        // Our record decides; a signature naming another leaf is refused.
        assert_eq!(abstaining_leaf(Some(&[a]), None), Some(a));
        assert_eq!(abstaining_leaf(Some(&[a]), Some(&a)), Some(a));
        assert_eq!(abstaining_leaf(Some(&[a]), Some(&b)), None);
        // Not in our record of that epoch, or twice in it: nothing.
        assert_eq!(abstaining_leaf(Some(&[]), Some(&a)), None);
        assert_eq!(abstaining_leaf(Some(&[a, b]), Some(&a)), None);
        assert_eq!(abstaining_leaf(Some(&[a, b]), None), None);
        // Joined after that epoch: the leaf its owner signed, or nothing.
        assert_eq!(abstaining_leaf(None, Some(&b)), Some(b));
        assert_eq!(abstaining_leaf(None, None), None);
    }
}
