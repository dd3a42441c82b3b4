//! X25519 (RFC 7748 section 5) with rejection of an all-zero shared secret
//! (section 6.1's check, done in constant time).
//!
//! Pure Rust (DESIGN.md item 4), three ways to the same function, each the fastest we
//! measured for its case (see `pq/DESIGN.md` and BENCHMARKS.md):
//!
//! - fixed base (`X25519(k, 9)`): curve25519-dalek's precomputed basepoint table;
//! - variable base: the Montgomery ladder of libcrux's HACL* Curve25519 (formally
//!   verified, secret-independent), about 8% faster here than dalek's AVX2 Edwards path
//!   and about 25% faster than dalek's ladder;
//! - prepared: for a recipient we encapsulate to again and again, a curve25519-dalek table
//!   of multiples of the recipient's point turns the DH into a fixed-base multiplication.
//!   The peer's `u` is mapped to an Edwards point (the birational map of RFC 7748
//!   section 4.1); a `u` on the quadratic twist has none and takes the ladder instead: the
//!   branch depends only on the public `u`.
//!
//! All three multiply by the clamped scalar (`decodeScalar25519`) as an integer, not
//! reduced modulo the group order, so points with a small-order component give exactly
//! the ladder's result. `u` is decoded as RFC 7748 requires: the top bit masked,
//! non-canonical values reduced.

use crate::{Error, Result, Seed32, SharedSecret, error::exact};
use curve25519_dalek::{
    edwards::EdwardsBasepointTable, montgomery::MontgomeryPoint, traits::BasepointTable,
};
use subtle::ConstantTimeEq;

/// Length of keys and shared secrets.
pub const KEY_LEN: usize = 32;

/// `X25519(k, u)` for a variable `u`.
pub(crate) fn x25519(k: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HACL*'s ecdh reports `false` exactly when the result is all zero, and `out` then
    // holds that all-zero result; `contributory` is where it is rejected.
    let _all_zero = libcrux_curve25519::ecdh(&mut out, u, k);
    out
}

/// `X25519(k, 9)`.
pub(crate) fn x25519_base(k: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(*k).to_bytes()
}

/// Rejects an all-zero shared secret, in constant time up to the final decision.
pub(crate) fn contributory(ss: [u8; 32]) -> Result<SharedSecret> {
    let ss = SharedSecret::from_bytes(ss);
    if bool::from(ss.as_bytes().ct_eq(&[0u8; 32])) {
        Err(Error::NonContributory)
    } else {
        Ok(ss)
    }
}

/// An X25519 public key (a Montgomery `u`-coordinate). Any 32 bytes are accepted, as in
/// RFC 7748; small-order points are caught by the all-zero check of the exchange.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps the encoded `u`-coordinate.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses a 32-byte slice.
    ///
    /// # Errors
    /// [`Error::InvalidLength`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Ok(Self(*exact::<KEY_LEN>("X25519 public key", bytes)?))
    }

    /// The encoded `u`-coordinate.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl AsRef<[u8]> for PublicKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "X25519 PublicKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// An X25519 private key: 32 random bytes, clamped when used. Zeroized on drop.
#[derive(Clone, Debug)]
pub struct SecretKey(Seed32);

impl SecretKey {
    /// Wraps 32 secret bytes.
    pub fn from_seed(seed: Seed32) -> Self {
        Self(seed)
    }

    /// The secret bytes.
    pub fn as_seed(&self) -> &Seed32 {
        &self.0
    }

    /// `X25519(k, 9)`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_base(self.0.as_bytes()))
    }

    /// `X25519(k, u)`.
    ///
    /// # Errors
    /// [`Error::NonContributory`] if the result is all zero (`u` has small order).
    pub fn diffie_hellman(&self, peer: &PublicKey) -> Result<SharedSecret> {
        contributory(x25519(self.0.as_bytes(), &peer.0))
    }

    /// `X25519(k, u)` with a prepared peer key; the same result as
    /// [`Self::diffie_hellman`].
    ///
    /// # Errors
    /// As [`Self::diffie_hellman`].
    pub fn diffie_hellman_prepared(&self, peer: &PreparedPublicKey) -> Result<SharedSecret> {
        contributory(peer.x25519(self.0.as_bytes()))
    }
}

/// A peer's public key with a precomputed table of multiples of its point, so that
/// `X25519(k, u)` costs a fixed-base multiplication. About 30 KiB; public data.
pub struct PreparedPublicKey {
    u: [u8; KEY_LEN],
    /// `None` for a `u` on the twist: those take the ladder.
    table: Option<Box<EdwardsBasepointTable>>,
}

impl core::fmt::Debug for PreparedPublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("X25519 PreparedPublicKey")
            .field("table", &self.table.is_some())
            .finish_non_exhaustive()
    }
}

impl PreparedPublicKey {
    /// Builds the table for `pk`.
    pub fn new(pk: &PublicKey) -> Self {
        let table = MontgomeryPoint(pk.0)
            .to_edwards(0)
            .map(|ed| Box::new(EdwardsBasepointTable::create(&ed)));
        Self { u: pk.0, table }
    }

    /// The key this was prepared from.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.u)
    }

    /// `X25519(k, u)` through the table.
    pub(crate) fn x25519(&self, k: &[u8; 32]) -> [u8; 32] {
        match &self.table {
            Some(table) => table.mul_base_clamped(*k).to_montgomery().to_bytes(),
            None => x25519(k, &self.u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// RFC 7748 section 5.2, the two single-multiplication vectors.
    #[test]
    fn rfc7748_vectors() {
        let cases = [
            (
                "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
                "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
            ),
            (
                "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
                "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
            ),
        ];
        for (k, u, out) in cases {
            let (k, u, out) = (unhex32(k), unhex32(u), unhex32(out));
            assert_eq!(x25519(&k, &u), out);
            let prepared = PreparedPublicKey::new(&PublicKey(u));
            assert_eq!(prepared.x25519(&k), out);
        }
    }

    /// RFC 7748 section 6.1 Diffie-Hellman example.
    #[test]
    fn rfc7748_diffie_hellman() {
        let a = SecretKey::from_seed(Seed32::from_bytes(unhex32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        )));
        let b = SecretKey::from_seed(Seed32::from_bytes(unhex32(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        )));
        assert_eq!(
            a.public_key().as_bytes(),
            &unhex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let k = unhex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(a.diffie_hellman(&b.public_key()).unwrap().as_bytes(), &k);
        assert_eq!(b.diffie_hellman(&a.public_key()).unwrap().as_bytes(), &k);
    }

    #[test]
    fn all_zero_shared_secret_is_rejected() {
        let sk = SecretKey::from_seed(Seed32::from_bytes([0x11; 32]));
        // u = 0 and u = 1 have small order; so does p + 1 (non-canonical 1).
        let mut p_plus_one = [0xff; 32];
        p_plus_one[0] = 0xee;
        p_plus_one[31] = 0x7f;
        for u in [
            [0u8; 32],
            {
                let mut one = [0u8; 32];
                one[0] = 1;
                one
            },
            p_plus_one,
        ] {
            assert!(matches!(
                sk.diffie_hellman(&PublicKey(u)),
                Err(Error::NonContributory)
            ));
            let prepared = PreparedPublicKey::new(&PublicKey(u));
            assert!(matches!(
                sk.diffie_hellman_prepared(&prepared),
                Err(Error::NonContributory)
            ));
        }
    }
}
