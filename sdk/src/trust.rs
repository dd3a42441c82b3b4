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
    /// (a `Void` with its signature). `last_epoch`: the last epoch of that state that a
    /// continuation must be later than (the last epoch we were a member at, or the epoch
    /// of the withdrawn join). `left`: we asked to leave.
    Dead {
        /// See above.
        last_epoch: u64,
        /// We left on purpose: being invited back needs consent again.
        left: bool,
    },
}

/// What to do with a Welcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WelcomeAction {
    /// A group we never were in: an invitation, joined or held per the consent policy.
    Invitation,
    /// Keep it aside, unused, in case our state turns out dead.
    KeepAside,
    /// Join: it continues a state of ours that is dead.
    Continue,
    /// Drop it.
    Refuse,
}

/// Decides what a Welcome for epoch `epoch` may do, given what we hold of its group and
/// whether its sender (the member whose signature is on its GroupInfo) is a key we have
/// seen as a member of this group.
///
/// Argument. A group id is public (MLS framing), so anyone can create a group with the id
/// of ours and invite us into it with one of our published key packages: only the
/// sender's key tells the two apart. So:
/// - for a group we were ever in, a Welcome from a key we never saw in it is refused: it
///   cannot be a continuation of our group (a member who joined after we left would have
///   to be introduced by one we know; being refused here costs at most a re-invitation by
///   a member we know);
/// - a live state is never replaced, whoever sends the Welcome: the Welcome is kept aside.
///   Loss of a live state needs authenticated evidence ([`Held::Dead`]);
/// - a dead state is replaced by a Welcome from a known member for a *later* epoch than
///   the dead state's last one: a re-invitation after a removal, or the invitation again
///   after the inviter moved branch. An older Welcome is a replay (a relay can re-send the
///   Welcome we once joined with, and a last-resort key package still opens it): refused;
/// - after we left on purpose, a re-invitation is a new invitation again (consent);
/// - a group we were never in is a new invitation: the consent policy decides.
///
/// Unauthenticated hints (an epoch-authenticator tag in an envelope, commits for our epoch
/// that do not decrypt) never make a state [`Held::Dead`]; they only make us catch up.
pub(crate) fn welcome_action(held: Held, sender_known: bool, epoch: u64) -> WelcomeAction {
    match (held, sender_known) {
        (Held::Unknown, _) => WelcomeAction::Invitation,
        (_, false) => WelcomeAction::Refuse,
        (Held::Live, true) => WelcomeAction::KeepAside,
        (Held::Dead { last_epoch, .. }, true) if epoch <= last_epoch => WelcomeAction::Refuse,
        (Held::Dead { left: true, .. }, true) => WelcomeAction::Invitation,
        (Held::Dead { left: false, .. }, true) => WelcomeAction::Continue,
    }
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
            last_epoch: 4,
            left: false,
        };
        for held in [Held::Live, dead] {
            for epoch in [0, 4, 5, u64::MAX] {
                assert_eq!(welcome_action(held, false, epoch), WelcomeAction::Refuse);
            }
        }
        // Not even a known member replaces a live state.
        assert_eq!(
            welcome_action(Held::Live, true, 9),
            WelcomeAction::KeepAside
        );
        assert_eq!(welcome_action(dead, true, 5), WelcomeAction::Continue);
        // A replayed (older) Welcome does not bring a dead state back.
        assert_eq!(welcome_action(dead, true, 4), WelcomeAction::Refuse);
        assert_eq!(welcome_action(dead, true, 1), WelcomeAction::Refuse);
        // After leaving on purpose, consent again.
        let left = Held::Dead {
            last_epoch: 4,
            left: true,
        };
        assert_eq!(welcome_action(left, true, 5), WelcomeAction::Invitation);
        // A group never seen is an invitation, whoever sends it.
        assert_eq!(
            welcome_action(Held::Unknown, false, 0),
            WelcomeAction::Invitation
        );
        assert_eq!(
            welcome_action(Held::Unknown, true, 7),
            WelcomeAction::Invitation
        );
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
}
