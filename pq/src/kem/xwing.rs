//! X-Wing, draft-connolly-cfrg-xwing-kem-10 (DESIGN.md item 5): the hybrid of ML-KEM-768
//! and X25519, byte for byte MLKEM768-X25519 of draft-irtf-cfrg-concrete-hybrid-kems and
//! of draft-ietf-hpke-pq (HPKE KEM id 0x647a).
//!
//! Draft section 5 in our notation:
//!
//! - private key: a 32-byte `seed`; `expandDecapsulationKey(seed)`: `SHAKE256(seed, 96)`
//!   gives `d` (0..32), `z` (32..64) and `sk_x` (64..96); `(ek_m, dk_m) =
//!   ML-KEM-768.KeyGen_internal(d, z)`, `pk_x = X25519(sk_x, 9)`;
//! - `ek = ek_m || pk_x` (1216 bytes), `ct = ct_m || ct_x` (1120 bytes);
//! - `Combiner(ss_m, ss_x, ct_x, pk_x) = SHA3-256(ss_m || ss_x || ct_x || pk_x || XWingLabel)`
//!   with `XWingLabel = "\.//^\"` (6 bytes, last);
//! - `Encaps_derand(ek, eseed)`: `eseed[0..32]` is ML-KEM's `m`, `eseed[32..64]` the
//!   ephemeral X25519 key `ek_x`; `ct_x = X25519(ek_x, 9)`, `ss_x = X25519(ek_x, pk_x)`;
//! - `Decaps(dk, ct)`: `ss_m = ML-KEM-768.Decaps(dk_m, ct_m)`, `ss_x = X25519(sk_x, ct_x)`.
//!
//! Choices of ours (DESIGN.md item 5): the ML-KEM modulus check runs on every `ek`
//! parsed; an all-zero `ss_x` is rejected with [`crate::Error::NonContributory`] (the draft is
//! silent; libcrux and hpke-rs reject it too); the expanded key is cached in the
//! [`DecapsulationKey`] and never serialized.

use super::{
    DeriveProfile, Kem,
    derive::derive_seed,
    ml_kem::ml_kem_768,
    x25519::{self, contributory},
};
use crate::{Result, Seed32, Seed64, SharedSecret, error::exact};
use zeroize::Zeroizing;

/// The scheme; implements [`Kem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XWing;

/// Seed (private key) length.
pub const SEED_LEN: usize = 32;
/// Encapsulation key length: `ek_m || pk_x`.
pub const EK_LEN: usize = ml_kem_768::EK_LEN + x25519::KEY_LEN;
/// Ciphertext length: `ct_m || ct_x`.
pub const CT_LEN: usize = ml_kem_768::CT_LEN + x25519::KEY_LEN;
/// Encapsulation randomness length.
pub const ESEED_LEN: usize = 64;
/// `XWingLabel`, draft section 5.3.
pub const LABEL: &[u8; 6] = b"\\.//^\\";
/// HPKE KEM identifier of MLKEM768-X25519 (draft-ietf-hpke-pq section 4).
pub const HPKE_KEM_ID: u16 = 0x647a;

/// `Combiner(ss_m, ss_x, ct_x, pk_x)`.
fn combiner(
    ss_m: &SharedSecret,
    ss_x: &SharedSecret,
    ct_x: &[u8; 32],
    pk_x: &[u8; 32],
) -> SharedSecret {
    let mut input = Zeroizing::new([0u8; 32 * 4 + 6]);
    input[..32].copy_from_slice(ss_m.as_bytes());
    input[32..64].copy_from_slice(ss_x.as_bytes());
    input[64..96].copy_from_slice(ct_x);
    input[96..128].copy_from_slice(pk_x);
    input[128..].copy_from_slice(LABEL);
    SharedSecret::from_bytes(libcrux_sha3::sha256(input.as_slice()))
}

/// A validated X-Wing encapsulation key.
#[derive(Clone)]
pub struct EncapsulationKey {
    bytes: [u8; EK_LEN],
    ek_m: ml_kem_768::EncapsulationKey,
    pk_x: [u8; 32],
}

impl EncapsulationKey {
    /// Parses `ek_m || pk_x` and runs the ML-KEM modulus check on `ek_m`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidLength`], [`crate::Error::InvalidEncapsulationKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bytes = *exact::<EK_LEN>("X-Wing encapsulation key", bytes)?;
        let ek_m = ml_kem_768::EncapsulationKey::from_bytes(&bytes[..ml_kem_768::EK_LEN])?;
        Ok(Self {
            bytes,
            ek_m,
            pk_x: x_part(&bytes),
        })
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8; EK_LEN] {
        &self.bytes
    }

    /// `Encaps_derand(ek, eseed)`. Hazardous: `eseed` must be fresh and secret
    /// (feature `hazmat`).
    ///
    /// # Errors
    /// [`crate::Error::NonContributory`] if `pk_x` has small order.
    #[cfg(feature = "hazmat")]
    pub fn encapsulate_derand(
        &self,
        eseed: &[u8; ESEED_LEN],
    ) -> Result<(Ciphertext, SharedSecret)> {
        self.encaps_internal(eseed)
    }

    /// `Encaps_derand(ek, eseed)`.
    pub(crate) fn encaps_internal(
        &self,
        eseed: &[u8; ESEED_LEN],
    ) -> Result<(Ciphertext, SharedSecret)> {
        let (m, ek_x) = split_eseed(eseed);
        let (ct_m, ss_m) = self.ek_m.encaps_internal(&m);
        let ct_x = x25519::x25519_base(&ek_x);
        let ss_x = contributory(x25519::x25519(&ek_x, &self.pk_x))?;
        let ss = combiner(&ss_m, &ss_x, &ct_x, &self.pk_x);
        Ok((Ciphertext::join(ct_m.as_bytes(), &ct_x), ss))
    }
}

impl AsRef<[u8]> for EncapsulationKey {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl core::fmt::Debug for EncapsulationKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("X-Wing EncapsulationKey")
    }
}

/// The last 32 bytes (the X25519 part) of a key or ciphertext (public data).
fn x_part<const N: usize>(bytes: &[u8; N]) -> [u8; 32] {
    // N is EK_LEN or CT_LEN, both above 32: the indices are in range.
    core::array::from_fn(|i| bytes[N - 32 + i])
}

/// `(m, ek_x) = (eseed[0..32], eseed[32..64])`, in zeroizing copies.
fn split_eseed(eseed: &[u8; ESEED_LEN]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    (
        Zeroizing::new(core::array::from_fn(|i| eseed[i])),
        Zeroizing::new(core::array::from_fn(|i| eseed[32 + i])),
    )
}

/// An X-Wing ciphertext `ct_m || ct_x`.
#[derive(Clone)]
pub struct Ciphertext([u8; CT_LEN]);

impl Ciphertext {
    fn join(ct_m: &[u8; ml_kem_768::CT_LEN], ct_x: &[u8; 32]) -> Self {
        let mut ct = [0u8; CT_LEN];
        ct[..ml_kem_768::CT_LEN].copy_from_slice(ct_m);
        ct[ml_kem_768::CT_LEN..].copy_from_slice(ct_x);
        Self(ct)
    }

    /// Parses a ciphertext (only the length is checked).
    ///
    /// # Errors
    /// [`crate::Error::InvalidLength`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self(*exact::<CT_LEN>("X-Wing ciphertext", bytes)?))
    }

    /// The encoded ciphertext.
    pub fn as_bytes(&self) -> &[u8; CT_LEN] {
        &self.0
    }
}

impl AsRef<[u8]> for Ciphertext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("X-Wing Ciphertext")
    }
}

/// An X-Wing decapsulation key: the 32-byte seed and its expansion, cached.
/// Zeroized on drop; only the seed is ever serialized.
pub struct DecapsulationKey {
    seed: Seed32,
    dk_m: ml_kem_768::DecapsulationKey,
    sk_x: x25519::SecretKey,
    ek: EncapsulationKey,
}

impl core::fmt::Debug for DecapsulationKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("X-Wing DecapsulationKey(<redacted>)")
    }
}

impl DecapsulationKey {
    /// `expandDecapsulationKey(seed)`; the ML-KEM part's unpacked key is made on the
    /// first decapsulation.
    pub fn from_seed(seed: Seed32) -> Self {
        Self::expand(seed, ml_kem_768::DecapsulationKey::from_seed)
    }

    /// `expandDecapsulationKey(seed)` with the ML-KEM part expanded now, by one key
    /// generation: for a key that decapsulates at once (an HPKE open).
    pub fn from_seed_expanded(seed: Seed32) -> Self {
        Self::expand(seed, ml_kem_768::DecapsulationKey::from_seed_expanded)
    }

    fn expand(seed: Seed32, ml_kem: fn(Seed64) -> ml_kem_768::DecapsulationKey) -> Self {
        let expanded = Zeroizing::new(libcrux_sha3::shake256::<96>(seed.as_bytes()));
        let mut d_z = Zeroizing::new([0u8; 64]);
        let mut sk_x = Zeroizing::new([0u8; 32]);
        d_z.copy_from_slice(&expanded[..64]);
        sk_x.copy_from_slice(&expanded[64..]);
        let dk_m = ml_kem(Seed64::from_bytes(*d_z));
        let sk_x = x25519::SecretKey::from_seed(Seed32::from_bytes(*sk_x));
        let pk_x = *sk_x.public_key().as_bytes();
        let mut bytes = [0u8; EK_LEN];
        bytes[..ml_kem_768::EK_LEN].copy_from_slice(dk_m.encapsulation_key().as_bytes());
        bytes[ml_kem_768::EK_LEN..].copy_from_slice(&pk_x);
        let ek = EncapsulationKey {
            bytes,
            ek_m: dk_m.encapsulation_key().clone(),
            pk_x,
        };
        Self {
            seed,
            dk_m,
            sk_x,
            ek,
        }
    }

    /// The seed.
    pub fn seed(&self) -> &Seed32 {
        &self.seed
    }

    /// The matching encapsulation key.
    pub fn encapsulation_key(&self) -> &EncapsulationKey {
        &self.ek
    }

    /// `Decaps(dk, ct)`.
    ///
    /// # Errors
    /// [`crate::Error::NonContributory`] if `ct_x` has small order.
    pub fn decapsulate(&self, ct: &Ciphertext) -> Result<SharedSecret> {
        let ct_m = ml_kem_768::Ciphertext::from_slice(&ct.0[..ml_kem_768::CT_LEN])?;
        let ct_x = x_part(&ct.0);
        let ss_m = self.dk_m.decapsulate(&ct_m);
        let ss_x = self
            .sk_x
            .diffie_hellman(&x25519::PublicKey::from_bytes(ct_x))?;
        Ok(combiner(&ss_m, &ss_x, &ct_x, &self.ek.pk_x))
    }
}

/// An X-Wing encapsulation key prepared for repeated encapsulation: ML-KEM's unpacked
/// key and a table of multiples of `pk_x`. Public data.
pub struct PreparedEncapsulationKey {
    ek_m: ml_kem_768::PreparedEncapsulationKey,
    pk_x: x25519::PreparedPublicKey,
    pk_x_bytes: [u8; 32],
}

impl core::fmt::Debug for PreparedEncapsulationKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("X-Wing PreparedEncapsulationKey")
    }
}

impl PreparedEncapsulationKey {
    /// Precomputes from a validated key.
    pub fn new(ek: &EncapsulationKey) -> Self {
        let pk_x_bytes = ek.pk_x;
        Self {
            ek_m: ml_kem_768::PreparedEncapsulationKey::new(&ek.ek_m),
            pk_x: x25519::PreparedPublicKey::new(&x25519::PublicKey::from_bytes(pk_x_bytes)),
            pk_x_bytes,
        }
    }

    /// `Encaps_derand(ek, eseed)`, same output as the unprepared key's. Hazardous:
    /// `eseed` must be fresh and secret (feature `hazmat`).
    ///
    /// # Errors
    /// [`crate::Error::NonContributory`] if `pk_x` has small order.
    #[cfg(feature = "hazmat")]
    pub fn encapsulate_derand(
        &self,
        eseed: &[u8; ESEED_LEN],
    ) -> Result<(Ciphertext, SharedSecret)> {
        self.encaps_internal(eseed)
    }

    /// `Encaps_derand(ek, eseed)` on the prepared key.
    pub(crate) fn encaps_internal(
        &self,
        eseed: &[u8; ESEED_LEN],
    ) -> Result<(Ciphertext, SharedSecret)> {
        let (m, ek_x) = split_eseed(eseed);
        let (ct_m, ss_m) = self.ek_m.encaps_internal(&m);
        let ct_x = x25519::x25519_base(&ek_x);
        let ss_x = contributory(self.pk_x.x25519(&ek_x))?;
        let ss = combiner(&ss_m, &ss_x, &ct_x, &self.pk_x_bytes);
        Ok((Ciphertext::join(ct_m.as_bytes(), &ct_x), ss))
    }
}

impl Kem for XWing {
    const NAME: &'static str = "X-Wing";
    const HPKE_KEM_ID: u16 = HPKE_KEM_ID;
    const SEED_LEN: usize = SEED_LEN;
    const EK_LEN: usize = EK_LEN;
    const CT_LEN: usize = CT_LEN;
    const ESEED_LEN: usize = ESEED_LEN;

    type DecapsulationKey = DecapsulationKey;
    type EncapsulationKey = EncapsulationKey;
    type PreparedEncapsulationKey = PreparedEncapsulationKey;
    type Ciphertext = Ciphertext;

    fn decapsulation_key_from_seed(seed: &[u8]) -> Result<DecapsulationKey> {
        Ok(DecapsulationKey::from_seed(Seed32::from_slice(seed)?))
    }

    fn seed(dk: &DecapsulationKey) -> &[u8] {
        dk.seed.as_bytes()
    }

    fn encapsulation_key(dk: &DecapsulationKey) -> &EncapsulationKey {
        &dk.ek
    }

    fn encapsulation_key_from_bytes(bytes: &[u8]) -> Result<EncapsulationKey> {
        EncapsulationKey::from_bytes(bytes)
    }

    fn prepare(ek: &EncapsulationKey) -> PreparedEncapsulationKey {
        PreparedEncapsulationKey::new(ek)
    }

    fn ciphertext_from_bytes(bytes: &[u8]) -> Result<Ciphertext> {
        Ciphertext::from_bytes(bytes)
    }

    fn expanded_decapsulation_key_from_seed(seed: &[u8]) -> Result<DecapsulationKey> {
        Ok(DecapsulationKey::from_seed_expanded(Seed32::from_slice(
            seed,
        )?))
    }

    #[cfg(feature = "hazmat")]
    fn encapsulate_derand(
        ek: &EncapsulationKey,
        eseed: &[u8],
    ) -> Result<(Ciphertext, SharedSecret)> {
        ek.encaps_internal(exact::<ESEED_LEN>(
            "X-Wing encapsulation randomness",
            eseed,
        )?)
    }

    #[cfg(feature = "hazmat")]
    fn encapsulate_prepared_derand(
        ek: &PreparedEncapsulationKey,
        eseed: &[u8],
    ) -> Result<(Ciphertext, SharedSecret)> {
        ek.encaps_internal(exact::<ESEED_LEN>(
            "X-Wing encapsulation randomness",
            eseed,
        )?)
    }

    fn encapsulate<R: rand_core::TryCryptoRng + ?Sized>(
        ek: &EncapsulationKey,
        rng: &mut R,
    ) -> Result<(Ciphertext, SharedSecret)> {
        let mut eseed = Zeroizing::new([0u8; ESEED_LEN]);
        crate::rng::fill(rng, eseed.as_mut_slice())?;
        ek.encaps_internal(&eseed)
    }

    fn encapsulate_prepared<R: rand_core::TryCryptoRng + ?Sized>(
        ek: &PreparedEncapsulationKey,
        rng: &mut R,
    ) -> Result<(Ciphertext, SharedSecret)> {
        let mut eseed = Zeroizing::new([0u8; ESEED_LEN]);
        crate::rng::fill(rng, eseed.as_mut_slice())?;
        ek.encaps_internal(&eseed)
    }

    fn decapsulate(dk: &DecapsulationKey, ct: &Ciphertext) -> Result<SharedSecret> {
        dk.decapsulate(ct)
    }

    fn derive_key_pair(ikm: &[u8], profile: DeriveProfile) -> DecapsulationKey {
        let seed = derive_seed::<SEED_LEN>(HPKE_KEM_ID, ikm, profile);
        DecapsulationKey::from_seed(Seed32::from_bytes(*seed))
    }

    fn generate<R: rand_core::TryCryptoRng + ?Sized>(rng: &mut R) -> Result<DecapsulationKey> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        crate::rng::fill(rng, seed.as_mut_slice())?;
        Ok(DecapsulationKey::from_seed(Seed32::from_bytes(*seed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, kem::ml_kem};

    #[test]
    fn small_order_x25519_parts_are_rejected() {
        let dk = DecapsulationKey::from_seed(Seed32::from_bytes([3; 32]));
        // Ciphertext whose ct_x is u = 0.
        let mut ct = [0u8; CT_LEN];
        ct[..ml_kem_768::CT_LEN].fill(0x55);
        assert!(matches!(
            dk.decapsulate(&Ciphertext(ct)),
            Err(Error::NonContributory)
        ));
        // Encapsulation key whose pk_x is u = 1.
        let mut ek = *dk.encapsulation_key().as_bytes();
        ek[ml_kem_768::EK_LEN..].fill(0);
        ek[ml_kem_768::EK_LEN] = 1;
        let ek = EncapsulationKey::from_bytes(&ek).unwrap();
        assert!(matches!(
            ek.encaps_internal(&[1; 64]),
            Err(Error::NonContributory)
        ));
        let prepared = PreparedEncapsulationKey::new(&ek);
        assert!(matches!(
            prepared.encaps_internal(&[1; 64]),
            Err(Error::NonContributory)
        ));
    }

    /// An HPKE open of X-Wing runs one ML-KEM key generation (`from_seed_expanded`),
    /// not two, and agrees with the lazily expanded key.
    #[test]
    fn expanded_key_is_generated_once() {
        let lazy = DecapsulationKey::from_seed(Seed32::from_bytes([8; 32]));
        let (ct, ss) = lazy.encapsulation_key().encaps_internal(&[2; 64]).unwrap();
        let before = ml_kem::keygens();
        let dk = DecapsulationKey::from_seed_expanded(Seed32::from_bytes([8; 32]));
        let ss2 = dk.decapsulate(&ct).unwrap();
        assert_eq!(ml_kem::keygens() - before, 1);
        assert_eq!(ss2.as_bytes(), ss.as_bytes());
        assert_eq!(
            dk.encapsulation_key().as_bytes(),
            lazy.encapsulation_key().as_bytes()
        );
    }
}
