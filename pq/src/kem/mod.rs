//! Key encapsulation: ML-KEM-768/1024 (FIPS 203), X25519 (RFC 7748) and X-Wing
//! (draft-connolly-cfrg-xwing-kem-10).
//!
//! Every KEM implements [`Kem`], so the MLS provider drives them all the same way.
//! Legend, as in the specs: `ek` encapsulation (public) key, `dk` decapsulation
//! (private) key, `ct` ciphertext, `ss` shared secret, `_m` the ML-KEM part and `_x`
//! the X25519 part of a hybrid value.
//!
//! Each randomised operation takes an RNG. Encapsulation also has a derandomised form
//! (`*_derand`) that takes the random bytes, for known-answer tests and fuzzing; it is
//! hazardous (reused randomness reveals the shared secret), so it exists only with the
//! feature `hazmat`.

pub mod derive;
pub mod ml_kem;
pub mod x25519;
pub mod xwing;

pub use derive::DeriveProfile;

use crate::{Result, SharedSecret};
use rand_core::TryCryptoRng;

/// A key encapsulation mechanism, with its sizes as associated constants.
///
/// The decapsulation key is held in the scheme's seed format (the private key format
/// of DESIGN.md items 1 and 5) together with whatever expanded form makes
/// decapsulation fast; only the seed is ever serialized.
pub trait Kem {
    /// Human-readable name ("ML-KEM-768", "X-Wing", ...).
    const NAME: &'static str;
    /// The HPKE KEM identifier (hpke-pq section 3 and 4): used as `suite_id` in the
    /// labelled DeriveKeyPair.
    const HPKE_KEM_ID: u16;
    /// Length of the private key (seed) in bytes.
    const SEED_LEN: usize;
    /// Length of the encapsulation key in bytes.
    const EK_LEN: usize;
    /// Length of the ciphertext in bytes.
    const CT_LEN: usize;
    /// Length of the shared secret in bytes.
    const SS_LEN: usize = 32;
    /// Random bytes consumed by one encapsulation.
    const ESEED_LEN: usize;

    /// Private key: seed plus cached expanded key. Zeroized on drop.
    type DecapsulationKey;
    /// Public key, validated when parsed.
    type EncapsulationKey: Clone + AsRef<[u8]>;
    /// Public key in a form that makes repeated encapsulations cheaper. Public data.
    type PreparedEncapsulationKey;
    /// Ciphertext.
    type Ciphertext: Clone + AsRef<[u8]>;

    /// Expands a private key from its seed. The expanded form that decapsulation uses may
    /// be made lazily, on the first decapsulation.
    ///
    /// # Errors
    /// [`crate::Error::InvalidLength`] if `seed` is not [`Self::SEED_LEN`] bytes.
    fn decapsulation_key_from_seed(seed: &[u8]) -> Result<Self::DecapsulationKey>;

    /// Expands a private key from its seed for a decapsulation that follows at once (an
    /// HPKE open): the key is generated once, where [`Self::decapsulation_key_from_seed`]
    /// followed by [`Self::decapsulate`] may generate it twice.
    ///
    /// # Errors
    /// As [`Self::decapsulation_key_from_seed`].
    fn expanded_decapsulation_key_from_seed(seed: &[u8]) -> Result<Self::DecapsulationKey> {
        Self::decapsulation_key_from_seed(seed)
    }

    /// The seed a decapsulation key was made from (its serialized form).
    fn seed(dk: &Self::DecapsulationKey) -> &[u8];

    /// The encapsulation key that belongs to `dk`.
    fn encapsulation_key(dk: &Self::DecapsulationKey) -> &Self::EncapsulationKey;

    /// Parses and validates an encapsulation key received from someone else.
    ///
    /// # Errors
    /// [`crate::Error::InvalidLength`] or [`crate::Error::InvalidEncapsulationKey`]
    /// (FIPS 203 section 7.2 modulus check).
    fn encapsulation_key_from_bytes(bytes: &[u8]) -> Result<Self::EncapsulationKey>;

    /// Precomputes what repeated encapsulations to `ek` can share.
    fn prepare(ek: &Self::EncapsulationKey) -> Self::PreparedEncapsulationKey;

    /// Parses a ciphertext (only its length is checked: every string of the right
    /// length is a ciphertext, and decapsulation rejects bad ones implicitly).
    ///
    /// # Errors
    /// [`crate::Error::InvalidLength`].
    fn ciphertext_from_bytes(bytes: &[u8]) -> Result<Self::Ciphertext>;

    /// Encapsulates to `ek` with the given randomness ([`Self::ESEED_LEN`] bytes).
    /// Hazardous: the randomness must be fresh and secret (feature `hazmat`, for
    /// known-answer tests and fuzzing).
    ///
    /// # Errors
    /// [`crate::Error::InvalidLength`] for a wrong `eseed` length;
    /// [`crate::Error::NonContributory`] for a hybrid key with a small-order X25519 point.
    #[cfg(feature = "hazmat")]
    fn encapsulate_derand(
        ek: &Self::EncapsulationKey,
        eseed: &[u8],
    ) -> Result<(Self::Ciphertext, SharedSecret)>;

    /// Encapsulates to a prepared key with the given randomness; same output as
    /// [`Self::encapsulate_derand`] on the key it was prepared from. Hazardous, as
    /// [`Self::encapsulate_derand`] (feature `hazmat`).
    ///
    /// # Errors
    /// As [`Self::encapsulate_derand`].
    #[cfg(feature = "hazmat")]
    fn encapsulate_prepared_derand(
        ek: &Self::PreparedEncapsulationKey,
        eseed: &[u8],
    ) -> Result<(Self::Ciphertext, SharedSecret)>;

    /// Decapsulates `ct`. ML-KEM's implicit rejection returns a pseudorandom secret for
    /// a forged ciphertext rather than an error.
    ///
    /// # Errors
    /// [`crate::Error::NonContributory`] when a hybrid ciphertext's X25519 point has
    /// small order.
    fn decapsulate(dk: &Self::DecapsulationKey, ct: &Self::Ciphertext) -> Result<SharedSecret>;

    /// Derives a key pair from input keying material, as HPKE's DeriveKeyPair does,
    /// in the chosen profile (DESIGN.md item 6).
    fn derive_key_pair(ikm: &[u8], profile: DeriveProfile) -> Self::DecapsulationKey;

    /// Generates a fresh key pair.
    ///
    /// # Errors
    /// [`crate::Error::Randomness`] if `rng` fails.
    fn generate<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self::DecapsulationKey>;

    /// Encapsulates to `ek` with fresh randomness from `rng`.
    ///
    /// # Errors
    /// [`crate::Error::NonContributory`] for a hybrid key with a small-order X25519 point;
    /// [`crate::Error::Randomness`] if `rng` fails.
    fn encapsulate<R: TryCryptoRng + ?Sized>(
        ek: &Self::EncapsulationKey,
        rng: &mut R,
    ) -> Result<(Self::Ciphertext, SharedSecret)>;

    /// Encapsulates to a prepared key with fresh randomness from `rng`; the same as
    /// [`Self::encapsulate`] on the key it was prepared from.
    ///
    /// # Errors
    /// As [`Self::encapsulate`].
    fn encapsulate_prepared<R: TryCryptoRng + ?Sized>(
        ek: &Self::PreparedEncapsulationKey,
        rng: &mut R,
    ) -> Result<(Self::Ciphertext, SharedSecret)>;
}
