//! Signed entries of the key-package directory, and the rule stores and readers apply.
//!
//! The transport's directory is a key-value store that anyone can write to. So every
//! key-package entry is signed by its owner's identity key, and the key it is stored
//! under names the owner's [`UserId`]: `pqmls/kp/v2/<user id hex>/<slot>`. Whoever reads
//! an entry checks that the signing key hashes to the id in the key, that the signature
//! covers this key, and that the entry has not expired; a store running
//! [`directory_validator`] checks the same before it stores anything, and lets an entry
//! be replaced only by a newer one of the same owner. Planting a key package under
//! someone else's id is therefore refused everywhere, and a store that serves one anyway
//! gets nothing out of it: the reader refuses it too.
//!
//! One-time key packages are *claimed* by an inviter before use, so that two inviters
//! rarely take the same one: a claim is an empty entry under
//! `pqmls/claim/v2/<user id hex>/<hash of the key package>` that a store keeps from its
//! first writer on. Claims are not authenticated (any inviter may claim), so the worst a
//! stranger can do with them is push inviters onto the last-resort key package; the
//! owner notices claimed slots and replaces them (rate-limited).
//!
//! Entry layout (all integers big-endian; decoding refuses anything that does not
//! re-encode to the same bytes):
//!
//! ```text
//! "PQD1" | scheme u16 | len u32 | public key | seq u64 | expires_ms u64 |
//!          len u32 | value | len u32 | signature
//! ```
//!
//! The signature covers `"pqmls directory entry v1" | len u32 | directory key` followed by
//! the entry up to and including the value.

use std::sync::Arc;

use openmls::prelude::SignatureScheme;
use openmls_traits::crypto::OpenMlsCrypto;
use sha2::{Digest, Sha256};

use crate::identity::UserId;
use crate::wire::Slot;

const MAGIC: &[u8; 4] = b"PQD1";
const TBS_DOMAIN: &[u8] = b"pqmls directory entry v1";
pub(crate) const KP_PREFIX: &str = "pqmls/kp/v2/";
pub(crate) const CLAIM_PREFIX: &str = "pqmls/claim/v2/";
/// The largest key package an entry may hold (an ML-DSA-87 key package is under 12 KB).
pub(crate) const MAX_VALUE: usize = 64 * 1024;
/// Public keys and signatures: ML-DSA-87's are 2592 and 4627 bytes.
const MAX_KEY: usize = 4096;
const MAX_SIG: usize = 8192;

/// A signed directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub scheme: u16,
    pub public_key: Vec<u8>,
    /// Increases with every replacement by the owner.
    pub seq: u64,
    /// After this (milliseconds since the Unix epoch) the entry is not used.
    pub expires_ms: u64,
    pub value: Vec<u8>,
    pub sig: Vec<u8>,
}

/// Why an entry is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed,
    WrongKey,
    WrongOwner,
    Expired,
    BadSignature,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Malformed => "malformed directory entry",
            Refusal::WrongKey => "not a key-package directory key",
            Refusal::WrongOwner => "signed by a key that is not the owner's",
            Refusal::Expired => "expired",
            Refusal::BadSignature => "invalid signature",
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }
    fn bytes(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = self
            .take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)?;
        let len = usize::try_from(len).ok().filter(|l| *l <= max)?;
        self.take(len)
    }
}

impl Entry {
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.public_key.len() + self.value.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.scheme.to_be_bytes());
        put_bytes(&mut out, &self.public_key);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        put_bytes(&mut out, &self.value);
        out
    }

    /// What the signature covers for an entry stored under `key`.
    pub(crate) fn tbs(&self, key: &[u8]) -> Vec<u8> {
        let mut out = TBS_DOMAIN.to_vec();
        put_bytes(&mut out, key);
        out.extend_from_slice(&self.body());
        out
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        put_bytes(&mut out, &self.sig);
        out
    }

    /// Decodes an entry; `None` unless `bytes` is exactly the encoding of one.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let scheme = r.u16()?;
        let public_key = r.bytes(MAX_KEY)?.to_vec();
        let seq = r.u64()?;
        let expires_ms = r.u64()?;
        let value = r.bytes(MAX_VALUE)?.to_vec();
        let sig = r.bytes(MAX_SIG)?.to_vec();
        if !r.0.is_empty() {
            return None;
        }
        let e = Entry {
            scheme,
            public_key,
            seq,
            expires_ms,
            value,
            sig,
        };
        // The layout has a single encoding per value; checked anyway, so that no future
        // change to it can make two byte strings carry one entry.
        (e.encode() == bytes).then_some(e)
    }

    /// The owner's id, from the signing key.
    pub(crate) fn owner(&self) -> Option<UserId> {
        let scheme = SignatureScheme::try_from(self.scheme).ok()?;
        Some(UserId::of_key(scheme, &self.public_key))
    }
}

/// The directory key of a user's key-package slot.
pub(crate) fn key_package_key(user: &UserId, slot: Slot) -> Vec<u8> {
    let mut k = format!("{KP_PREFIX}{}", user.hex()).into_bytes();
    match slot {
        Slot::OneTime(i) => k.extend_from_slice(format!("/{i}").as_bytes()),
        Slot::LastResort => k.extend_from_slice(b"/last-resort"),
    }
    k
}

/// The directory key that claims one of a user's one-time key packages (by the hash of
/// its bytes).
pub(crate) fn claim_key(user: &UserId, key_package: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(key_package);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{CLAIM_PREFIX}{}/{hex}", user.hex()).into_bytes()
}

/// The owner named by a key-package directory key, if `key` is one.
fn kp_key_owner(key: &[u8]) -> Option<UserId> {
    let text = std::str::from_utf8(key).ok()?;
    let rest = text.strip_prefix(KP_PREFIX)?;
    let (hex, slot) = rest.split_once('/')?;
    let slot_ok = slot == "last-resort"
        || (!slot.is_empty()
            && slot.len() <= 3
            && slot.bytes().all(|b| b.is_ascii_digit())
            && !(slot.len() > 1 && slot.starts_with('0')));
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) || !slot_ok {
        return None;
    }
    hex.parse().ok()
}

fn is_claim_key(key: &[u8]) -> bool {
    let Some(rest) = std::str::from_utf8(key)
        .ok()
        .and_then(|t| t.strip_prefix(CLAIM_PREFIX))
    else {
        return false;
    };
    let Some((owner, hash)) = rest.split_once('/') else {
        return false;
    };
    [owner, hash]
        .iter()
        .all(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Checks an entry read from (or offered to) the directory under `key`: the key names a
/// key-package slot, the entry is well-formed, signed by a key that hashes to the id in
/// the key, over this key, and not expired at `now_ms`.
pub(crate) fn verify(
    crypto: &impl OpenMlsCrypto,
    key: &[u8],
    blob: &[u8],
    now_ms: u64,
) -> Result<Entry, Refusal> {
    let owner = kp_key_owner(key).ok_or(Refusal::WrongKey)?;
    let entry = Entry::decode(blob).ok_or(Refusal::Malformed)?;
    if entry.owner() != Some(owner) {
        return Err(Refusal::WrongOwner);
    }
    if entry.expires_ms <= now_ms {
        return Err(Refusal::Expired);
    }
    let scheme = SignatureScheme::try_from(entry.scheme).map_err(|_| Refusal::Malformed)?;
    crypto
        .verify_signature(scheme, &entry.tbs(key), &entry.public_key, &entry.sig)
        .map_err(|_| Refusal::BadSignature)?;
    Ok(entry)
}

/// The rule a store applies to a directory write: `true` to store `new` under `key` in
/// place of `old`.
///
/// - Key-package slots: `new` must pass [`verify`]; it replaces `old` only if `old` is not
///   a valid entry any more (expired, or never was) or `new` is a later entry (`seq`) of
///   the same owner. An empty `new` (the unauthenticated "claim by emptying" of earlier
///   versions) is refused.
/// - Claims: an empty value, stored once (the first writer wins; never replaced).
/// - Anything else is refused.
pub(crate) fn accept_write(
    crypto: &impl OpenMlsCrypto,
    key: &[u8],
    old: Option<&[u8]>,
    new: &[u8],
    now_ms: u64,
) -> bool {
    if is_claim_key(key) {
        return old.is_none() && new.is_empty();
    }
    let Ok(entry) = verify(crypto, key, new, now_ms) else {
        return false;
    };
    match old.map(|o| verify(crypto, key, o, now_ms)) {
        Some(Ok(prev)) => prev.public_key == entry.public_key && entry.seq > prev.seq,
        Some(Err(_)) | None => true,
    }
}

/// A directory write rule: `(key, old entry, new entry) -> store it?`.
pub type DirectoryRule = Arc<dyn Fn(&[u8], Option<&[u8]>, &[u8]) -> bool + Send + Sync>;

/// A directory validator for store nodes (and the simulated network): the rule of
/// [`accept_write`] with the wall clock, on a crypto provider of its own. Install it on
/// every store that serves pqmls clients, so that only a key's owner can publish or
/// replace key packages under it.
///
/// # Errors
/// [`crate::Error::Crypto`] if the crypto provider cannot be created.
pub fn directory_validator() -> crate::Result<DirectoryRule> {
    let crypto =
        pqmls_provider::PqCrypto::new().map_err(|e| crate::Error::Crypto(format!("{e:?}")))?;
    Ok(Arc::new(
        move |key: &[u8], old: Option<&[u8]>, new: &[u8]| {
            accept_write(&crypto, key, old, new, crate::engine::now_ms())
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmls_traits::signatures::Signer as _;
    use pqmls_provider::{PqCrypto, SignatureKeyPair};

    fn signed(signer: &SignatureKeyPair, key: &[u8], seq: u64, expires_ms: u64) -> Vec<u8> {
        let mut e = Entry {
            scheme: SignatureScheme::ED25519 as u16,
            public_key: signer.public().to_vec(),
            seq,
            expires_ms,
            value: b"a key package".to_vec(),
            sig: Vec::new(),
        };
        e.sig = signer.sign(&e.tbs(key)).unwrap();
        e.encode()
    }

    #[test]
    fn only_the_owner_can_write_and_replace() {
        let crypto = PqCrypto::new().unwrap();
        let owner = SignatureKeyPair::generate(SignatureScheme::ED25519).unwrap();
        let other = SignatureKeyPair::generate(SignatureScheme::ED25519).unwrap();
        let id = UserId::of_key(SignatureScheme::ED25519, owner.public());
        let key = key_package_key(&id, Slot::OneTime(0));
        let now = 1_000;
        let v1 = signed(&owner, &key, 1, 10_000);
        assert!(verify(&crypto, &key, &v1, now).is_ok());
        assert!(accept_write(&crypto, &key, None, &v1, now));
        // Someone else's key under the owner's id: refused by readers and stores.
        let planted = signed(&other, &key, 9, 10_000);
        assert_eq!(
            verify(&crypto, &key, &planted, now).unwrap_err(),
            Refusal::WrongOwner
        );
        assert!(!accept_write(&crypto, &key, Some(&v1), &planted, now));
        assert!(!accept_write(&crypto, &key, None, &planted, now));
        // The owner's entry moved to another key (a replay under another slot): bad sig.
        let key1 = key_package_key(&id, Slot::OneTime(1));
        assert_eq!(
            verify(&crypto, &key1, &v1, now).unwrap_err(),
            Refusal::BadSignature
        );
        // Replacement needs a later seq; an old entry cannot be replayed over a new one.
        let v2 = signed(&owner, &key, 2, 10_000);
        assert!(accept_write(&crypto, &key, Some(&v1), &v2, now));
        assert!(!accept_write(&crypto, &key, Some(&v2), &v1, now));
        // Expired entries are refused, and may be replaced by any valid one of the owner.
        assert_eq!(
            verify(&crypto, &key, &v2, 10_000).unwrap_err(),
            Refusal::Expired
        );
        // Emptying a slot (claims of earlier versions) is refused.
        assert!(!accept_write(&crypto, &key, Some(&v1), &[], now));
        // Trailing bytes, truncation, a flipped signature bit.
        let mut long = v1.clone();
        long.push(0);
        assert_eq!(
            verify(&crypto, &key, &long, now).unwrap_err(),
            Refusal::Malformed
        );
        assert_eq!(
            verify(&crypto, &key, &v1[..v1.len() - 1], now).unwrap_err(),
            Refusal::Malformed
        );
        let mut flipped = v1.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            verify(&crypto, &key, &flipped, now).unwrap_err(),
            Refusal::BadSignature
        );
        // Other key spaces are refused; claims are first-writer-wins and empty.
        assert!(!accept_write(
            &crypto,
            b"pqmls/kp/v1/carol/0",
            None,
            &v1,
            now
        ));
        let claim = claim_key(&id, b"kp bytes");
        assert!(accept_write(&crypto, &claim, None, &[], now));
        assert!(!accept_write(&crypto, &claim, Some(&[]), &[], now));
        assert!(!accept_write(&crypto, &claim, None, b"x", now));
    }

    #[test]
    fn keys_parse_strictly() {
        let id = UserId([0xab; 32]);
        for slot in [Slot::OneTime(0), Slot::OneTime(17), Slot::LastResort] {
            assert_eq!(kp_key_owner(&key_package_key(&id, slot)), Some(id));
        }
        let hex = id.hex();
        for bad in [
            format!("{KP_PREFIX}{hex}/01"),
            format!("{KP_PREFIX}{hex}/"),
            format!("{KP_PREFIX}{hex}/1/2"),
            format!("{KP_PREFIX}{}/0", hex.to_uppercase()),
            format!("{KP_PREFIX}{}/0", &hex[..62]),
            format!("{KP_PREFIX}{hex}/1000"),
        ] {
            assert_eq!(kp_key_owner(bad.as_bytes()), None, "{bad}");
        }
        assert!(is_claim_key(&claim_key(&id, b"x")));
        assert!(!is_claim_key(&key_package_key(&id, Slot::LastResort)));
    }
}
