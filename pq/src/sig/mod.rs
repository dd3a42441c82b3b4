//! Signatures: ML-DSA-44/65/87 (FIPS 204), Ed25519 (RFC 8032, strict verification) and
//! composite ML-DSA + Ed25519 (draft-ietf-lamps-pq-composite-sigs).
//!
//! Every scheme implements [`SignatureScheme`], so the MLS provider drives them all the
//! same way. Signing is hedged by default ([`SignatureScheme::sign`] draws 32 fresh
//! bytes `rnd`); [`SignatureScheme::sign_derand`] takes `rnd` for known-answer tests and
//! [`SignatureScheme::sign_deterministic`] uses FIPS 204's deterministic variant
//! (`rnd = 0^32`). Ed25519 is deterministic by construction and ignores `rnd`.

pub mod composite;
pub mod ed25519;
pub mod ml_dsa;

use crate::{Error, Result, rng::fill};
use rand_core::TryCryptoRng;

/// The longest context string FIPS 204 (section 5.2) and the composite draft allow.
pub const MAX_CONTEXT_LEN: usize = 255;

/// Rejects a context string longer than `max`.
pub(crate) fn check_context(ctx: &[u8], max: usize) -> Result<()> {
    match (ctx.len(), max) {
        (0, _) => Ok(()),
        (_, 0) => Err(Error::ContextNotSupported),
        (len, max) if len > max => Err(Error::ContextTooLong { len }),
        _ => Ok(()),
    }
}

/// A signature scheme, with its sizes as associated constants.
pub trait SignatureScheme {
    /// Human-readable name ("ML-DSA-65", "Ed25519", ...).
    const NAME: &'static str;
    /// Length of the private key (seed) in bytes.
    const SEED_LEN: usize;
    /// Length of the verifying key in bytes.
    const VK_LEN: usize;
    /// Length of a signature in bytes.
    const SIG_LEN: usize;
    /// Longest context string accepted (0: the scheme takes none).
    const MAX_CONTEXT_LEN: usize;

    /// Private key: the seed and its expansion. Zeroized on drop.
    type SigningKey;
    /// Public key.
    type VerifyingKey: Clone + AsRef<[u8]>;
    /// Signature.
    type Signature: Clone + AsRef<[u8]>;

    /// Expands a signing key from its seed (the private key format).
    ///
    /// # Errors
    /// [`Error::InvalidLength`] if `seed` is not [`Self::SEED_LEN`] bytes.
    fn signing_key_from_seed(seed: &[u8]) -> Result<Self::SigningKey>;

    /// The seed of a signing key (its serialized form).
    fn seed(sk: &Self::SigningKey) -> &[u8];

    /// The verifying key that belongs to `sk`.
    fn verifying_key(sk: &Self::SigningKey) -> &Self::VerifyingKey;

    /// Parses a verifying key.
    ///
    /// # Errors
    /// [`Error::InvalidLength`], or [`Error::InvalidVerifyingKey`] where the scheme
    /// can tell (Ed25519 point decoding).
    fn verifying_key_from_bytes(bytes: &[u8]) -> Result<Self::VerifyingKey>;

    /// Parses a signature (its length).
    ///
    /// # Errors
    /// [`Error::InvalidLength`].
    fn signature_from_bytes(bytes: &[u8]) -> Result<Self::Signature>;

    /// Signs `msg` under context `ctx` with the 32-byte randomness `rnd`.
    ///
    /// # Errors
    /// [`Error::ContextTooLong`], [`Error::ContextNotSupported`], [`Error::SigningFailed`].
    fn sign_derand(
        sk: &Self::SigningKey,
        msg: &[u8],
        ctx: &[u8],
        rnd: &[u8; 32],
    ) -> Result<Self::Signature>;

    /// Verifies `sig` on `msg` under context `ctx`.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`], [`Error::ContextTooLong`], [`Error::ContextNotSupported`].
    fn verify(vk: &Self::VerifyingKey, msg: &[u8], ctx: &[u8], sig: &Self::Signature)
    -> Result<()>;

    /// Hedged signing with 32 fresh random bytes from `rng` (the default).
    ///
    /// # Errors
    /// As [`Self::sign_derand`], and [`Error::Randomness`].
    fn sign<R: TryCryptoRng + ?Sized>(
        sk: &Self::SigningKey,
        msg: &[u8],
        ctx: &[u8],
        rng: &mut R,
    ) -> Result<Self::Signature> {
        let mut rnd = zeroize::Zeroizing::new([0u8; 32]);
        fill(rng, rnd.as_mut_slice())?;
        Self::sign_derand(sk, msg, ctx, &rnd)
    }

    /// Deterministic signing (`rnd = 0^32`, FIPS 204 section 3.4): for tests and for
    /// callers without a randomness source.
    ///
    /// # Errors
    /// As [`Self::sign_derand`].
    fn sign_deterministic(
        sk: &Self::SigningKey,
        msg: &[u8],
        ctx: &[u8],
    ) -> Result<Self::Signature> {
        Self::sign_derand(sk, msg, ctx, &[0u8; 32])
    }

    /// Generates a fresh signing key.
    ///
    /// # Errors
    /// [`Error::Randomness`].
    fn generate<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self::SigningKey> {
        let mut seed = zeroize::Zeroizing::new([0u8; MAX_SEED_LEN]);
        let seed = &mut seed[..Self::SEED_LEN];
        fill(rng, seed)?;
        Self::signing_key_from_seed(seed)
    }
}

/// The largest [`SignatureScheme::SEED_LEN`] of this crate (composite: 64 bytes).
const MAX_SEED_LEN: usize = 64;
