//! Recovery beyond the horizon (issue 11, item 4): a member that cannot reach its group's
//! final chain asks to be added again, and the members re-add it.
//!
//! A member whose branch lost after its snapshots were deleted (a partition longer than
//! `Config::fork_horizon`, a store that missed the commits it needed) reports
//! [`Event::Unrecoverable`]. It then publishes a [`Wire::Lost`] request on the group
//! topic: a fresh key package of its own and its signature over it, sealed under the keys
//! of the last epoch it shares with the group (the epoch whose final commit it cannot
//! reach; members keep those keys 64 epochs after finality). A member that opens it and
//! finds the requester still listed ([`crate::trust::rejoin_action`]) waits for its turn
//! ([`crate::trust::rejoin_turn`]), then commits the removal of the requester's old leaf
//! and the addition of its new key package in one commit, and sends it the Welcome. The
//! requester, whose state is dead to it, continues with that Welcome
//! ([`crate::trust::welcome_action`]) and reports [`Event::Rejoined`]. Messages of the
//! epochs in between are lost to it (MLS gives a new member nothing of them); its own
//! messages sent on the dead branch are sent again.

use std::collections::BTreeSet;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::signatures::Signer as _;
use rusqlite::{OptionalExtension, params};
use tokio::time::Instant;

use super::{Outcome, State, intents};
use crate::GroupId;
use crate::db::to_i64;
use crate::error::{Error, Result, mls};
use crate::identity::UserId;
use crate::trust::{self, RejoinRequest, rejoin_action, rejoin_turn};
use crate::wire::{self, LostBody, Wire};

/// The largest sealed rejoin request a member can make, in bytes: nonce, AEAD tag, and a
/// [`LostBody`] with a key package and a signature of our largest suite (ML-DSA-87 with
/// Ed25519 and X-Wing: about 12 KB), with room to spare.
const MAX_SEALED_LOST: usize = 32 * 1024;
/// Most abstentions kept per group (a member can make one per epoch it lost).
const MAX_ABSTENTIONS: i64 = 256;
/// How many members (the first after the requester in leaf order) forward an abstention
/// to members who joined after it was made: two, so that one of them being away does not
/// leave the newcomers without it; the inviter of each later add forwards too.
const FORWARDERS: u32 = 2;
/// Settle times between two of our requests.
const LOST_AFTER: u32 = 8;
/// Requests per lost epoch, at most.
const LOST_TIMES: u32 = 20;
/// Settle times between the turns of two members to re-add a requester.
const TURN: u32 = 8;

/// A request of ours, published until we are back.
#[derive(Debug, Clone)]
pub(crate) struct LostAsk {
    /// The epoch it is sealed for.
    pub epoch: u64,
    /// The encoded [`LostBody`] (one key package per lost epoch), sealed again under a
    /// fresh nonce each time, so that a member that dropped an earlier copy (it could
    /// not act on it then) does not drop this one as a duplicate.
    pub body: Vec<u8>,
    pub last: Instant,
    pub times: u32,
}

/// A request of another member that we will honour at our turn.
#[derive(Debug, Clone)]
pub(crate) struct PendingRejoin {
    pub due: Instant,
    pub key_package: Vec<u8>,
    pub kp_ref: Vec<u8>,
    /// The epoch the request was sealed for.
    pub epoch: u64,
}

impl State {
    /// Publishes our rejoin request for each group we cannot follow any more, on the
    /// schedule of [`LOST_AFTER`] and [`LOST_TIMES`].
    pub(crate) fn ask_rejoin(&mut self, now: Instant) -> Result<()> {
        let gap = self.config.settle.saturating_mul(LOST_AFTER);
        let lost: Vec<(GroupId, u64)> = self
            .groups
            .iter()
            .filter_map(|(gid, g)| g.unrecoverable.map(|e| (gid.clone(), e)))
            .collect();
        self.lost_asks
            .retain(|gid, _| lost.iter().any(|(g, _)| g == gid));
        for (gid, epoch) in lost {
            let stale = self.lost_asks.get(&gid).is_none_or(|a| a.epoch != epoch);
            if stale {
                // A Welcome kept aside from a member may already be our way back.
                self.retry_welcomes(&gid)?;
                if self
                    .groups
                    .get(&gid)
                    .is_none_or(|g| g.unrecoverable != Some(epoch))
                {
                    continue;
                }
                let Some(body) = self.lost_request(&gid, epoch)? else {
                    continue;
                };
                self.lost_asks.insert(
                    gid.clone(),
                    LostAsk {
                        epoch,
                        body,
                        last: now,
                        times: 0,
                    },
                );
            }
            let Some(ask) = self.lost_asks.get(&gid).cloned() else {
                continue;
            };
            if ask.times >= LOST_TIMES || (ask.times > 0 && now < ask.last + gap) {
                continue;
            }
            tracing::debug!(
                "{}: group {gid}: asking to be added again (lost at epoch {epoch})",
                self.name
            );
            if !self.publish_lost(&gid, epoch, &ask.body)? {
                continue;
            }
            if let Some(a) = self.lost_asks.get_mut(&gid) {
                a.last = now;
                a.times += 1;
            }
            self.stats.rejoins_asked += 1;
        }
        Ok(())
    }

    /// Our request for `gid`, for `epoch` (encoded, not sealed yet): a fresh key package
    /// (its private keys stay in our storage until a Welcome uses them) and our signature.
    fn lost_request(&mut self, gid: &GroupId, epoch: u64) -> Result<Option<Vec<u8>>> {
        if self.epoch_keys(gid, epoch)?.is_none() {
            tracing::warn!(
                "{}: group {gid}: no keys of epoch {epoch} left to ask to be added again",
                self.name
            );
            return Ok(None);
        };
        // Last resort (OpenMLS keeps its private key after a join): a re-add whose commit
        // loses is redone by the inviter with this same key package, and its Welcome must
        // still open here (seen in a simulated partition: the first join consumed it, the
        // first Welcome was withdrawn, and the member could never come back).
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(super::capabilities(self.config.suite))
            .key_package_lifetime(self.leaf_lifetime())
            .mark_as_last_resort()
            .build(
                self.config.suite,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(mls)?;
        let key_package = super::ser(&MlsMessageOut::from(bundle.key_package().clone()))?;
        // Our abstention: every tag we voted under after `epoch` (a dead state votes no
        // more, so the list is complete). Our own votes are deleted only by finalisation,
        // which stops before `epoch` here.
        let tags: Vec<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT DISTINCT vote_tag FROM pqmls_votes WHERE group_id = ?1 AND voter = ?2 AND epoch > ?3",
            )?
            .query_map(params![gid.0, &self.id.0[..], to_i64(epoch)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        // Members count it for our leaf of `epoch` as they list it (one leaf of ours, by
        // its HPKE key); we hold the same state of that epoch, so the same leaf. Before
        // it goes out we bind ourselves never to join or vote in a state with that leaf
        // again (a leaf from a key package can recur on other branches): otherwise no
        // abstention.
        let own_leaf: Option<[u8; 32]> = self.epoch_leaf_keys(gid, epoch)?.and_then(|leaves| {
            let ours: Vec<[u8; 32]> = leaves
                .into_iter()
                .filter(|(id, _)| *id == self.id)
                .map(|(_, leaf)| leaf.key)
                .collect();
            match ours[..] {
                [key] => Some(key),
                _ => None,
            }
        });
        let voted: Option<Vec<[u8; 16]>> = match own_leaf {
            Some(key) if tags.len() <= wire::MAX_VOTED_TAGS => {
                self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_abstained_leaves (group_id, leaf_key) VALUES (?1, ?2)")?.execute(
                    params![gid.0, &key[..]],
                )?;
                Some(
                    tags.iter()
                        .filter_map(|t| t.as_slice().try_into().ok())
                        .collect(),
                )
            }
            _ => {
                tracing::debug!(
                    "{}: group {gid}: no abstention with our request (own leaf of epoch {epoch} known: {}, {} tags)",
                    self.name,
                    own_leaf.is_some(),
                    tags.len()
                );
                None
            }
        };
        let leaf = voted.as_ref().and(own_leaf);
        let sig = self
            .signer
            .sign(&wire::lost_tbs(
                &gid.0,
                epoch,
                &key_package,
                voted.as_deref(),
                leaf.as_ref(),
            ))
            .map_err(|e| Error::Crypto(format!("{e:?}")))?;
        Ok(Some(
            LostBody {
                epoch,
                key_package,
                voted,
                leaf,
                sig,
            }
            .encode(),
        ))
    }

    /// A rejoin request on the group topic. Anything that does not open under the keys
    /// of an epoch we hold, or whose signatures fail, is dropped; a valid one from a
    /// listed member is honoured at our turn ([`State::rejoin_due`]).
    pub(crate) fn on_lost(
        &mut self,
        gid: &GroupId,
        tag: &[u8; 16],
        sealed: &[u8],
        now: Instant,
    ) -> Result<Outcome> {
        if sealed.len() > MAX_SEALED_LOST {
            self.stats.rejected += 1;
            return Ok(Outcome::Done);
        }
        let Some(epoch) = self.epoch_of_tag(gid, tag)? else {
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        };
        let Some(keys) = self.epoch_keys(gid, epoch)? else {
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        };
        // Sealed for the epoch it lost the group at, or forwarded by a member under a
        // later epoch's key for members who joined since (`forward_abstention`).
        let Some((body, raw)) = self
            .open_for_epoch(&wire::lost_key(&keys.vote_key), &keys.vote_tag, sealed)
            .and_then(|p| LostBody::decode(&p).map(|b| (b, p)))
            .filter(|(b, _)| b.epoch <= epoch && (b.voted.is_some() == b.leaf.is_some()))
        else {
            self.stats.rejected += 1;
            return Ok(Outcome::Done);
        };
        // The key package names its user (its leaf's signature key); `validate` checks
        // its own signature and lifetime.
        let Some((user, kp)) = self.key_package_owner(&body.key_package) else {
            self.stats.rejected += 1;
            return Ok(Outcome::Done);
        };
        let scheme = self.config.suite.signature_algorithm();
        let signed = self
            .provider
            .crypto()
            .verify_signature(
                scheme,
                &wire::lost_tbs(
                    &gid.0,
                    body.epoch,
                    &body.key_package,
                    body.voted.as_deref(),
                    body.leaf.as_ref(),
                ),
                kp.leaf_node().signature_key().as_slice(),
                &body.sig,
            )
            .is_ok();
        if !signed {
            self.stats.rejected += 1;
            return Ok(Outcome::Done);
        }
        if user != self.id
            && let Some(voted) = &body.voted
        {
            // Its abstention may complete a split round 1 that waited for it.
            let listed = epoch == body.epoch
                || self
                    .epoch_members(gid, epoch)?
                    .is_some_and(|ms| ms.iter().any(|(_, m)| m.id == user));
            if listed
                && self.record_abstention(
                    gid,
                    &user,
                    body.epoch,
                    voted,
                    body.leaf.as_ref(),
                    &raw,
                )?
            {
                self.forward_abstention(gid, &user, body.epoch, &raw)?;
            }
            self.evaluate_finality(gid)?;
        }
        if body.epoch < epoch {
            // A forwarded copy: only its abstention is news (the request itself is
            // honoured by members of the epoch it was sealed for).
            return Ok(Outcome::Done);
        }
        let kp_ref = kp
            .hash_ref(self.provider.crypto())
            .map_err(mls)?
            .tls_serialize_detached()
            .map_err(mls)?;
        let g = self.group(gid)?;
        let we_are_live = g.mls.is_active() && g.unrecoverable.is_none();
        let listed = self.member_list(gid)?;
        let requester = listed.iter().find(|(_, m)| m.id == user).map(|(l, _)| *l);
        let member_then = self
            .epoch_members(gid, epoch)?
            .is_some_and(|ms| ms.iter().any(|(_, m)| m.id == user));
        let request = RejoinRequest {
            from_self: user == self.id,
            listed_now: requester.is_some(),
            member_then,
            honoured: self.rejoin_honoured(gid, &kp_ref)?,
            we_are_live,
        };
        let (true, Some(requester)) = (rejoin_action(request), requester) else {
            tracing::debug!(
                "{}: group {gid}: not re-adding {}: {request:?}",
                self.name,
                user.short()
            );
            self.stats.ignored += 1;
            return Ok(Outcome::Done);
        };
        let own = g.mls.own_leaf_index().u32();
        let leaves: Vec<u32> = listed.iter().map(|(l, _)| *l).collect();
        let Some(turn) = rejoin_turn(&leaves, own, requester) else {
            return Ok(Outcome::Done);
        };
        let due = now + self.config.settle.saturating_mul(TURN.saturating_mul(turn));
        tracing::debug!(
            "{}: group {gid}: {} asks to be added again (epoch {epoch}); our turn is {turn}",
            self.name,
            user.short()
        );
        // One pending request per requester: a newer one replaces it (keeping our turn).
        let entry = self
            .rejoins
            .entry((gid.clone(), user))
            .or_insert(PendingRejoin {
                due,
                key_package: Vec::new(),
                kp_ref: Vec::new(),
                epoch,
            });
        entry.key_package = body.key_package;
        entry.kp_ref = kp_ref;
        entry.epoch = epoch;
        self.rejoin_due(now)?;
        Ok(Outcome::Done)
    }

    /// Keeps a member's signed abstention (see [`LostBody::voted`]) for its leaf of
    /// `epoch`: the leaf as we recorded it, which must be the one it signed
    /// ([`LostBody::leaf`]); the signed one if we have no record of `epoch` (we joined
    /// after it). Nothing if the two differ, or our record lists several leaves of it
    /// then. `raw` is the request as signed, kept to forward. Whether it is new here.
    fn record_abstention(
        &self,
        gid: &GroupId,
        user: &UserId,
        epoch: u64,
        voted: &[[u8; 16]],
        signed_leaf: Option<&[u8; 32]>,
        raw: &[u8],
    ) -> Result<bool> {
        if voted.len() > wire::MAX_VOTED_TAGS {
            // More than any member makes (it sends none then): kept nowhere.
            return Ok(false);
        }
        let recorded = self.epoch_leaf_keys(gid, epoch)?.map(|leaves| {
            leaves
                .into_iter()
                .filter(|(id, _)| id == user)
                .map(|(_, leaf)| leaf.key)
                .collect::<Vec<[u8; 32]>>()
        });
        let Some(leaf_key) = trust::abstaining_leaf(recorded.as_deref(), signed_leaf) else {
            tracing::debug!(
                "{}: group {gid}: no abstention of {} at epoch {epoch}: our record {:?} leaves of it, signed leaf given: {}",
                self.name,
                user.short(),
                recorded.as_ref().map(Vec::len),
                signed_leaf.is_some()
            );
            return Ok(false);
        };
        tracing::debug!(
            "{}: group {gid}: {} abstains after epoch {epoch} (voted under {} tags)",
            self.name,
            user.short(),
            voted.len()
        );
        let added = self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_abstentions (group_id, voter, epoch, leaf_key, voted_tags, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
            params![
                gid.0,
                &user.0[..],
                to_i64(epoch),
                &leaf_key[..],
                voted.concat(),
                raw
            ],
        )?;
        // Bounded per group: the newest rows by epoch.
        self.db().prepare_cached("DELETE FROM pqmls_abstentions WHERE group_id = ?1 AND rowid NOT IN
             (SELECT rowid FROM pqmls_abstentions WHERE group_id = ?1 ORDER BY epoch DESC LIMIT ?2)")?.execute(
            params![gid.0, MAX_ABSTENTIONS],
        )?;
        Ok(added == 1)
    }

    /// Forwards an abstention we just recorded, sealed under our current epoch's key,
    /// when members listed now were not members when it lost the group: they cannot open
    /// the request as sent (sealed under that epoch's key), and without it a split
    /// round 1 that its leaf would have voted in never completes for them (partition
    /// seeds 98 and 369: a member that joined later could never see the epoch final and
    /// stayed on the losing branch without a word). Its leaf is signed by its owner
    /// ([`LostBody::leaf`]), so a forwarder vouches for nothing. Only the first
    /// [`FORWARDERS`] members after the requester in leaf order forward, once each.
    fn forward_abstention(
        &mut self,
        gid: &GroupId,
        user: &UserId,
        lost_at: u64,
        raw: &[u8],
    ) -> Result<()> {
        let g = self.group(gid)?;
        if !g.mls.is_active() || g.unrecoverable.is_some() {
            return Ok(());
        }
        let now = g.mls.epoch().as_u64();
        let own = g.mls.own_leaf_index().u32();
        if now <= lost_at {
            return Ok(());
        }
        let listed = self.member_list(gid)?;
        let Some(requester) = listed.iter().find(|(_, m)| m.id == *user).map(|(l, _)| *l) else {
            return Ok(());
        };
        let then: Option<BTreeSet<UserId>> = self
            .epoch_members(gid, lost_at)?
            .map(|ms| ms.iter().map(|(_, m)| m.id).collect());
        // Without a record of that epoch we joined after it ourselves.
        let newcomers = then.is_none_or(|t| listed.iter().any(|(_, m)| !t.contains(&m.id)));
        let leaves: Vec<u32> = listed.iter().map(|(l, _)| *l).collect();
        let turn = rejoin_turn(&leaves, own, requester);
        if newcomers && turn.is_some_and(|t| t < FORWARDERS) {
            tracing::debug!(
                "{}: group {gid}: forwarding the abstention of {} (lost at {lost_at}) under epoch {now}",
                self.name,
                user.short()
            );
            self.send_lost_copy(gid, now, raw)?;
        }
        Ok(())
    }

    /// After our commit added members: every abstention we hold of a member still
    /// listed, sealed under the new epoch's key, so that the new members can count it
    /// (see [`State::forward_abstention`]).
    pub(crate) fn forward_abstentions_to_newcomers(&mut self, gid: &GroupId) -> Result<()> {
        let now = self.group(gid)?.mls.epoch().as_u64();
        let listed: BTreeSet<UserId> = self
            .member_list(gid)?
            .into_iter()
            .map(|(_, m)| m.id)
            .collect();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT voter, body FROM pqmls_abstentions WHERE group_id = ?1 AND epoch < ?2 AND body IS NOT NULL
                 ORDER BY epoch DESC",
            )?
            .query_map(params![gid.0, to_i64(now)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        // The newest of each listed member only: at most one copy per member, whatever
        // the table holds.
        let mut sent = BTreeSet::new();
        for (voter, body) in rows {
            let Ok(voter) = <[u8; 32]>::try_from(voter.as_slice()).map(UserId) else {
                continue;
            };
            if listed.contains(&voter) && sent.insert(voter) {
                self.send_lost_copy(gid, now, &body)?;
            }
        }
        Ok(())
    }

    /// Publishes a copy of `body` (a signed [`LostBody`]) for members who joined since.
    fn send_lost_copy(&mut self, gid: &GroupId, epoch: u64, body: &[u8]) -> Result<()> {
        if self.publish_lost(gid, epoch, body)? {
            self.stats.abstentions_forwarded += 1;
        }
        Ok(())
    }

    /// Publishes `body` (a signed [`LostBody`]) on the group topic sealed under `epoch`'s
    /// rejoin key; `false` if we hold no keys of `epoch`.
    fn publish_lost(&mut self, gid: &GroupId, epoch: u64, body: &[u8]) -> Result<bool> {
        let Some(keys) = self.epoch_keys(gid, epoch)? else {
            return Ok(false);
        };
        let sealed = self.seal_for_epoch(&wire::lost_key(&keys.vote_key), &keys.vote_tag, body)?;
        let payload = Wire::Lost {
            tag: keys.vote_tag,
            sealed,
        }
        .encode();
        let topic = self.group(gid)?.topic.clone();
        self.enqueue(&topic, payload)?;
        Ok(true)
    }

    /// Honours the requests whose turn has come and that nobody honoured before us:
    /// records the key package as honoured and makes the re-add an intent (committed
    /// again in later epochs if ours loses, dropped once the group has it).
    pub(crate) fn rejoin_due(&mut self, now: Instant) -> Result<()> {
        let due: Vec<((GroupId, UserId), PendingRejoin)> = self
            .rejoins
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        for ((gid, user), p) in due {
            self.rejoins.remove(&(gid.clone(), user));
            if !self.groups.contains_key(&gid) || self.rejoin_honoured(&gid, &p.kp_ref)? {
                continue;
            }
            if self.readd_done(&gid, &p.key_package)? {
                continue;
            }
            self.db().prepare_cached("INSERT OR IGNORE INTO pqmls_rejoins (group_id, kp_ref, epoch) VALUES (?1, ?2, ?3)")?.execute(
                params![gid.0, p.kp_ref, to_i64(p.epoch)],
            )?;
            tracing::debug!("{}: group {gid}: re-adding {}", self.name, user.short());
            self.db().prepare_cached("INSERT INTO pqmls_intents (group_id, kind, user, key_package) VALUES (?1, ?2, ?3, ?4)")?.execute(
                params![gid.0, intents::READD, user.to_string(), p.key_package],
            )?;
            self.stats.rejoins_honoured += 1;
            self.drive_intents(&gid)?;
        }
        Ok(())
    }

    /// The references of the key packages a commit adds.
    pub(crate) fn added_key_packages(&self, commit: &StagedCommit) -> Vec<Vec<u8>> {
        commit
            .add_proposals()
            .filter_map(|p| {
                p.add_proposal()
                    .key_package()
                    .hash_ref(self.provider.crypto())
                    .ok()?
                    .tls_serialize_detached()
                    .ok()
            })
            .collect()
    }

    /// Whether this key package was honoured here before, or added to the group by a
    /// commit we merged.
    fn rejoin_honoured(&self, gid: &GroupId, kp_ref: &[u8]) -> Result<bool> {
        Ok(self
            .db()
            .prepare_cached("SELECT 1 FROM pqmls_rejoins WHERE group_id = ?1 AND kp_ref = ?2")?
            .query_row(params![gid.0, kp_ref], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Whether the group already holds the leaf of this key package (someone's re-add
    /// of it was merged).
    pub(crate) fn readd_done(&self, gid: &GroupId, key_package: &[u8]) -> Result<bool> {
        let Some((_, kp)) = self.key_package_owner(key_package) else {
            return Ok(true);
        };
        let Some(key) = super::key_package_leaf_key(&kp) else {
            return Ok(true);
        };
        Ok(self
            .group(gid)?
            .mls
            .members()
            .any(|m| super::leaf_key_hash(&m.encryption_key) == key))
    }

    /// A key package's user and the validated key package, if it is a valid one of our
    /// suite.
    fn key_package_owner(&self, bytes: &[u8]) -> Option<(UserId, KeyPackage)> {
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).ok()?;
        let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
            return None;
        };
        // Who it claims to be; `validate_key_package` checks the claim (its signature,
        // suite and lifetime).
        let claimed = kp.unverified_credential();
        let user = self
            .member_of(&claimed.credential, claimed.signature_key.as_slice())
            .id;
        let kp = self.validate_key_package(&user, bytes).ok()?;
        Some((user, kp))
    }
}
