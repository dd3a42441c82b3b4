//! Who a user is: a key, not a name.
//!
//! A user is identified by their identity signature key (the key of their MLS credential):
//! a [`UserId`] is a hash of it. Display names are labels the user chose, carried in their
//! credential; two users may pick the same one, and nothing is decided by a name.
//! Invitations, removals, the key-package directory and inbox topics are all keyed by the
//! id, so whoever controls a name controls nothing.
//!
//! Two users compare a [`safety_number`] over a channel they trust (in person, a call) to
//! know that the ids they hold are each other's.

use std::fmt;

use openmls::prelude::SignatureScheme;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Domain separator of [`UserId::of_key`].
const USER_ID_DOMAIN: &[u8] = b"pqmls user id v1";

/// A user's id: SHA-256 over a domain separator, the signature scheme and the identity
/// public key. Shown as 64 hex digits; [`UserId::short`] gives a 16-digit prefix for
/// display.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub(crate) [u8; 32]);

impl UserId {
    /// The id of the user whose identity key is `public_key` for `scheme`.
    pub fn of_key(scheme: SignatureScheme, public_key: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(USER_ID_DOMAIN);
        h.update((scheme as u16).to_be_bytes());
        h.update((public_key.len() as u64).to_be_bytes());
        h.update(public_key);
        UserId(h.finalize().into())
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// An id from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        UserId(bytes)
    }

    /// The first 8 bytes as four groups of four hex digits (`a1b2:c3d4:e5f6:0789`): enough
    /// to tell users apart on a screen, not to authenticate them (compare the
    /// [`safety_number`] for that).
    pub fn short(&self) -> String {
        self.0[..8]
            .chunks(2)
            .map(|c| format!("{:02x}{:02x}", c[0], c.get(1).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Lower-case hex, as used in directory keys.
    pub(crate) fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.short())
    }
}

impl std::str::FromStr for UserId {
    type Err = Error;

    /// Parses 64 hex digits (upper or lower case, `:` and spaces ignored).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("not a user id (64 hex digits): {s:?}"));
        // Without allocating: member records are parsed on hot paths (one per vote).
        let mut out = [0u8; 32];
        let mut n = 0usize;
        for b in s.bytes().filter(|b| *b != b':' && *b != b' ') {
            let v = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(bad()),
            };
            let slot = out.get_mut(n / 2).ok_or_else(bad)?;
            *slot = (*slot << 4) | v;
            n += 1;
        }
        if n != 64 {
            return Err(bad());
        }
        Ok(UserId(out))
    }
}

/// A member of a group: who (the id) and what they call themselves (a label from their
/// credential, which anyone can choose and which is never used to decide anything).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct Member {
    /// The member's id (from their credential's signature key).
    pub id: UserId,
    /// The display name in their credential (untrusted text: neutralise control characters
    /// before showing it on a terminal).
    pub name: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.name, self.id.short())
    }
}

/// The safety number of two users: 60 digits, the same on both sides whichever side
/// computes it. If the numbers two users read to each other match, each holds the other's
/// real id (an attacker would need a second preimage of SHA-256 truncated to 199 bits).
///
/// Computed as SHA-256 over a domain separator and the two ids in sorted order, read as
/// twelve 5-digit groups (each group 40 bits reduced mod 100 000; the reduction bias is
/// below 2^-23 per group).
pub fn safety_number(a: &UserId, b: &UserId) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut first = Sha256::new();
    first.update(b"pqmls safety number v1");
    first.update(lo.0);
    first.update(hi.0);
    let d1 = first.finalize();
    let mut second = Sha256::new();
    second.update(b"pqmls safety number v1 (2)");
    second.update(d1);
    let d2 = second.finalize();
    let bytes: Vec<u8> = d1.iter().chain(d2.iter()).copied().collect();
    bytes
        .chunks(5)
        .take(12)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_scheme_and_key_and_parse_back() {
        let a = UserId::of_key(SignatureScheme::ED25519, &[1; 32]);
        assert_ne!(a, UserId::of_key(SignatureScheme::ED25519, &[2; 32]));
        assert_ne!(
            a,
            UserId::of_key(SignatureScheme::ECDSA_SECP256R1_SHA256, &[1; 32])
        );
        assert_eq!(a.to_string().parse::<UserId>().unwrap(), a);
        assert_eq!(a.to_string().to_uppercase().parse::<UserId>().unwrap(), a);
        assert_eq!(a.short().len(), 19);
        assert!(a.to_string().starts_with(&a.short().replace(':', "")));
        for bad in ["", "zz", &"0".repeat(63), &"0".repeat(65), &"g".repeat(64)] {
            assert!(bad.parse::<UserId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn safety_numbers_are_symmetric_and_distinct() {
        let a = UserId([1; 32]);
        let b = UserId([2; 32]);
        let c = UserId([3; 32]);
        let ab = safety_number(&a, &b);
        assert_eq!(ab, safety_number(&b, &a));
        assert_ne!(ab, safety_number(&a, &c));
        assert_eq!(ab.len(), 12 * 5 + 11);
        assert!(
            ab.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|d| d.is_ascii_digit()))
        );
    }
}
