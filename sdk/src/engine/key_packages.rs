//! Our key packages in the directory: signed entries under our id, rotated before they
//! expire, replaced when consumed or claimed, and never multiplied while the directory is
//! unreachable.
//!
//! Each slot (`one_time_key_packages` one-time slots and the last-resort one) has one row
//! in `pqmls_key_packages`: the key package's hash reference and bytes, the directory
//! entry's sequence number, when it was made, whether it is in the directory yet, and
//! whether an inviter claimed it. A slot gets a fresh key package when
//! - it has none, or ours was consumed by a join (OpenMLS deleted it),
//! - it is older than [`crate::Config::key_package_rotation`],
//! - an inviter claimed it (at most once per [`CLAIM_REPLACE_MS`]: claims are
//!   unauthenticated, so a stranger claiming all day costs us one key package per slot
//!   every few minutes, not one per claim).
//!
//! A replaced key package's private keys stay for [`crate::Config::key_package_grace`]
//! (a Welcome for it may be on its way), then are deleted. While the directory is
//! unreachable the same bytes are offered again and again: nothing new is generated.

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use openmls_traits::signatures::Signer as _;
use openmls_traits::storage::StorageProvider as _;
use rusqlite::{OptionalExtension, params};

use super::{State, capabilities, credential_name, ser};
use crate::db::{to_i64, to_u64};
use crate::directory::{self, Entry};
use crate::error::{Error, Result, mls};
use crate::identity::UserId;
use crate::wire::Slot;

/// A key package to publish: its slot, directory key and signed entry.
pub(crate) type KeyPackageEntry = (Slot, Vec<u8>, Vec<u8>);

/// The shortest time between two replacements of a claimed slot.
pub(crate) const CLAIM_REPLACE_MS: u64 = 5 * 60 * 1000;

struct SlotRow {
    kp_ref: Vec<u8>,
    published: bool,
    bytes: Option<Vec<u8>>,
    seq: u64,
    created_ms: u64,
    claimed: bool,
}

impl State {
    /// A fresh key package (stored in the provider): its hash reference, its bytes as an
    /// `MlsMessageOut`, and the end of its lifetime (ms since the Unix epoch).
    fn new_key_package(&mut self, last_resort: bool) -> Result<(Vec<u8>, Vec<u8>, u64)> {
        let mut builder = KeyPackage::builder()
            .leaf_node_capabilities(capabilities(self.config.suite))
            .key_package_lifetime(self.leaf_lifetime());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                self.config.suite,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(mls)?;
        let kp_ref = bundle
            .key_package()
            .hash_ref(self.provider.crypto())
            .map_err(mls)?;
        let not_after_ms = bundle
            .key_package()
            .life_time()
            .not_after()
            .saturating_mul(1000);
        let bytes = ser(&MlsMessageOut::from(bundle.key_package().clone()))?;
        self.stats.key_package_bytes = bytes.len() as u64;
        Ok((
            kp_ref.tls_serialize_detached().map_err(mls)?,
            bytes,
            not_after_ms,
        ))
    }

    fn slot_row(&self, slot: Slot) -> Result<Option<SlotRow>> {
        Ok(self
            .db()
            .query_row(
                "SELECT kp_ref, published, bytes, seq, created_ms, claimed FROM pqmls_key_packages WHERE slot = ?1",
                [slot.code()],
                |r| {
                    Ok(SlotRow {
                        kp_ref: r.get(0)?,
                        published: r.get(1)?,
                        bytes: r.get(2)?,
                        seq: to_u64(r.get(3)?),
                        created_ms: to_u64(r.get(4)?),
                        claimed: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    fn key_package_alive(&self, kp_ref: &[u8]) -> Result<bool> {
        let Ok(r) = KeyPackageRef::tls_deserialize_exact(kp_ref) else {
            return Ok(false);
        };
        Ok(self
            .provider
            .storage()
            .key_package::<KeyPackageRef, KeyPackageBundle>(&r)
            .map_err(Error::Database)?
            .is_some())
    }

    /// The signed directory entry for a key package.
    fn sign_entry(&self, key: &[u8], seq: u64, bytes: Vec<u8>) -> Result<Vec<u8>> {
        // The entry expires with the key package inside it.
        let expires_ms = MlsMessageIn::tls_deserialize_exact(&bytes)
            .ok()
            .and_then(|m| match m.extract() {
                MlsMessageBodyIn::KeyPackage(kp) => Some(kp),
                _ => None,
            })
            .and_then(|kp| {
                kp.validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .ok()
            })
            .map(|kp| kp.life_time().not_after().saturating_mul(1000))
            .ok_or_else(|| Error::Mls("own key package does not parse".into()))?;
        let mut entry = Entry {
            scheme: self.config.suite.signature_algorithm() as u16,
            public_key: self.signer.public().to_vec(),
            seq,
            expires_ms,
            value: bytes,
            sig: Vec::new(),
        };
        entry.sig = self
            .signer
            .sign(&entry.tbs(key))
            .map_err(|e| Error::Crypto(format!("{e:?}")))?;
        Ok(entry.encode())
    }

    /// The slots whose key package must be (re)published, with their signed entries; new
    /// key packages are generated (and recorded as unpublished) only where one is due.
    pub(crate) fn key_packages_to_publish(&mut self) -> Result<Vec<KeyPackageEntry>> {
        let mut slots: Vec<Slot> = (0..self.config.one_time_key_packages)
            .map(Slot::OneTime)
            .collect();
        slots.push(Slot::LastResort);
        let mut out = Vec::new();
        self.tx(|s| {
            let now = s.wall_ms();
            let rotation = u64::try_from(s.config.key_package_rotation.as_millis()).unwrap_or(u64::MAX);
            let grace = u64::try_from(s.config.key_package_grace.as_millis()).unwrap_or(u64::MAX);
            for slot in slots {
                let row = s.slot_row(slot)?;
                let alive = match &row {
                    Some(r) => s.key_package_alive(&r.kp_ref)?,
                    None => false,
                };
                let due = match &row {
                    None => true,
                    Some(_) if !alive => true,
                    Some(r) if r.bytes.is_none() => true,
                    Some(r) if now >= r.created_ms.saturating_add(rotation) => true,
                    Some(r) => r.claimed && now >= r.created_ms.saturating_add(CLAIM_REPLACE_MS),
                };
                let key = directory::key_package_key(&s.id, slot);
                if !due {
                    if let Some(SlotRow {
                        published: false,
                        bytes: Some(bytes),
                        seq,
                        ..
                    }) = row
                    {
                        // Not in the directory yet: the same key package again.
                        out.push((slot, key.clone(), s.sign_entry(&key, seq, bytes)?));
                    }
                    continue;
                }
                if let Some(r) = &row
                    && alive
                {
                    s.db().execute(
                        "INSERT OR REPLACE INTO pqmls_retired_key_packages (kp_ref, delete_after_ms) VALUES (?1, ?2)",
                        params![r.kp_ref, to_i64(now.saturating_add(grace))],
                    )?;
                }
                let (kp_ref, bytes, _) = s.new_key_package(slot == Slot::LastResort)?;
                // Later than any entry we published for this slot before, also across a
                // lost database (the clock moves on).
                let seq = row.as_ref().map_or(0, |r| r.seq).saturating_add(1).max(now);
                s.db().execute(
                    "INSERT OR REPLACE INTO pqmls_key_packages (slot, kp_ref, published, bytes, seq, created_ms, claimed)
                     VALUES (?1, ?2, 0, ?3, ?4, ?5, 0)",
                    params![slot.code(), kp_ref, bytes, to_i64(seq), to_i64(now)],
                )?;
                out.push((slot, key.clone(), s.sign_entry(&key, seq, bytes)?));
            }
            s.delete_retired(now)
        })?;
        Ok(out)
    }

    /// Deletes the private keys of replaced key packages whose grace period is over.
    fn delete_retired(&mut self, now: u64) -> Result<()> {
        let due: Vec<Vec<u8>> = self
            .db()
            .prepare_cached(
                "SELECT kp_ref FROM pqmls_retired_key_packages WHERE delete_after_ms <= ?1",
            )?
            .query_map([to_i64(now)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for kp_ref in due {
            if let Ok(r) = KeyPackageRef::tls_deserialize_exact(&kp_ref) {
                self.provider
                    .storage()
                    .delete_key_package(&r)
                    .map_err(Error::Database)?;
            }
            self.db()
                .prepare_cached("DELETE FROM pqmls_retired_key_packages WHERE kp_ref = ?1")?
                .execute([&kp_ref])?;
        }
        Ok(())
    }

    /// Records that the key package of `slot` is in the directory.
    pub(crate) fn key_package_published(&mut self, slot: Slot) -> Result<()> {
        self.db()
            .prepare_cached("UPDATE pqmls_key_packages SET published = 1 WHERE slot = ?1")?
            .execute([slot.code()])?;
        Ok(())
    }

    /// The claim keys of our published one-time key packages: (slot code, claim key).
    pub(crate) fn own_claim_keys(&self) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows: Vec<(i64, Vec<u8>)> = self
            .db()
            .prepare_cached(
                "SELECT slot, bytes FROM pqmls_key_packages WHERE slot >= 0 AND published = 1 AND claimed = 0 AND bytes IS NOT NULL",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(slot, bytes)| (slot, directory::claim_key(&self.id, &bytes)))
            .collect())
    }

    /// Marks a slot's key package as claimed by an inviter (it is replaced at the next
    /// refresh, rate-limited).
    pub(crate) fn mark_claimed(&mut self, slot: i64) -> Result<()> {
        self.db()
            .prepare_cached("UPDATE pqmls_key_packages SET claimed = 1 WHERE slot = ?1")?
            .execute([slot])?;
        Ok(())
    }

    /// Whether a refresh of the directory would change anything now (a slot due for a new
    /// key package or not yet published).
    pub(crate) fn key_packages_due(&self) -> Result<bool> {
        let now = self.wall_ms();
        let rotation =
            u64::try_from(self.config.key_package_rotation.as_millis()).unwrap_or(u64::MAX);
        for code in (0..i64::from(self.config.one_time_key_packages)).chain([-1]) {
            let Some(r) = self.slot_row(Slot::from_code(code))? else {
                return Ok(true);
            };
            if !r.published
                || !self.key_package_alive(&r.kp_ref)?
                || now >= r.created_ms.saturating_add(rotation)
                || (r.claimed && now >= r.created_ms.saturating_add(CLAIM_REPLACE_MS))
            {
                return Ok(true);
            }
        }
        let retired: bool = self.db().prepare_cached("SELECT EXISTS (SELECT 1 FROM pqmls_retired_key_packages WHERE delete_after_ms <= ?1)")?.query_row(
            [to_i64(now)],
            |r| r.get(0),
        )?;
        Ok(retired)
    }

    /// Of the candidate directory entries fetched for `user` under `key`, the key package
    /// of the valid one with the highest sequence number. Valid: signed by `user`'s key (so
    /// no store or writer can make us invite someone else), over this key, not expired,
    /// holding a valid key package of `user` ([`State::validate_key_package`]). The first
    /// refusal if none is valid.
    pub(crate) fn best_key_package(
        &self,
        user: &UserId,
        key: &[u8],
        blobs: &[Vec<u8>],
    ) -> Result<Vec<u8>> {
        let mut best: Option<(u64, Vec<u8>)> = None;
        let mut first_error = None;
        for blob in blobs {
            let checked = directory::verify(self.provider.crypto(), key, blob, self.wall_ms())
                .map_err(|r| Error::InvalidKeyPackage {
                    user: user.to_string(),
                    reason: r.to_string(),
                })
                .and_then(|entry| {
                    self.validate_key_package(user, &entry.value)?;
                    Ok(entry)
                });
            match checked {
                Ok(entry) if best.as_ref().is_none_or(|(seq, _)| entry.seq > *seq) => {
                    best = Some((entry.seq, entry.value));
                }
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match best {
            Some((_, kp)) => Ok(kp),
            None => Err(first_error.unwrap_or(Error::NoKeyPackage(*user))),
        }
    }

    /// Validates a key package for `user`: well-formed and signed (RFC 9420 §10.1), of our
    /// suite, in its lifetime, and its credential key is `user`'s.
    pub(crate) fn validate_key_package(&self, user: &UserId, bytes: &[u8]) -> Result<KeyPackage> {
        let bad = |reason: String| Error::InvalidKeyPackage {
            user: user.to_string(),
            reason,
        };
        let msg = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| bad(format!("{e:?}")))?;
        let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
            return Err(bad("not a key package".into()));
        };
        let kp = kp
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| bad(format!("{e:?}")))?;
        if kp.ciphersuite() != self.config.suite {
            return Err(bad(format!(
                "suite {:#06x}, this client uses {:#06x}",
                u16::from(kp.ciphersuite()),
                u16::from(self.config.suite)
            )));
        }
        let leaf = kp.leaf_node();
        let member = self.member_of(leaf.credential(), leaf.signature_key().as_slice());
        if member.id != *user {
            return Err(bad(format!(
                "credential key is {} ({:?})",
                member.id.short(),
                credential_name(leaf.credential())
            )));
        }
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.wall_ms());
        kp.life_time()
            .validate_with_time(now)
            .map_err(|e| bad(format!("lifetime: {e:?}")))?;
        Ok(kp)
    }
}
