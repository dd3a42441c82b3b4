//! Ed25519 (RFC 8032 section 5.1) over `ed25519-dalek`, with strict verification:
//! `verify_strict` rejects non-canonical `S` (section 5.1.7 step 1), small-order `A` and
//! `R`, and non-canonical point encodings, so a signature cannot be mauled into a second
//! valid one. Pure Ed25519 has no context string: a non-empty one is an error.

use super::{SignatureScheme, check_context};
use crate::{Error, Result, Seed32, error::exact};
use ed25519_dalek::Signer as _;

/// The scheme; implements [`SignatureScheme`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ed25519;

/// Verifying key length.
pub const VK_LEN: usize = 32;
/// Signature length.
pub const SIG_LEN: usize = 64;
/// Seed (private key) length.
pub const SEED_LEN: usize = 32;

/// A verifying key: a point that decodes (RFC 8032 section 5.1.3).
#[derive(Clone)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    /// Decodes a public key.
    ///
    /// # Errors
    /// [`Error::InvalidLength`], [`Error::InvalidVerifyingKey`] if it is not a point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        ed25519_dalek::VerifyingKey::from_bytes(exact::<VK_LEN>("Ed25519 verifying key", bytes)?)
            .map(Self)
            .map_err(|_| Error::InvalidVerifyingKey)
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8; VK_LEN] {
        self.0.as_bytes()
    }

    /// Strict verification of `sig` on `msg`.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`].
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<()> {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| Error::InvalidSignature)
    }
}

impl AsRef<[u8]> for VerifyingKey {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl core::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Ed25519 VerifyingKey")
    }
}

/// A signature `R || S`.
#[derive(Clone)]
pub struct Signature([u8; SIG_LEN]);

impl Signature {
    /// Parses a signature (its length; the rest is checked by verification).
    ///
    /// # Errors
    /// [`Error::InvalidLength`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self(*exact::<SIG_LEN>("Ed25519 signature", bytes)?))
    }

    /// The encoded signature.
    pub fn as_bytes(&self) -> &[u8; SIG_LEN] {
        &self.0
    }
}

impl AsRef<[u8]> for Signature {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl core::fmt::Debug for Signature {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Ed25519 Signature")
    }
}

/// A signing key: the 32-byte seed (RFC 8032's private key) and its expansion.
/// Zeroized on drop (ed25519-dalek's key zeroizes itself; so does the seed).
pub struct SigningKey {
    seed: Seed32,
    sk: ed25519_dalek::SigningKey,
    vk: VerifyingKey,
}

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Ed25519 SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Expands the seed (RFC 8032 section 5.1.5).
    pub fn from_seed(seed: Seed32) -> Self {
        let sk = ed25519_dalek::SigningKey::from_bytes(seed.as_bytes());
        let vk = VerifyingKey(sk.verifying_key());
        Self { seed, sk, vk }
    }

    /// The seed.
    pub fn seed(&self) -> &Seed32 {
        &self.seed
    }

    /// The matching verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.vk
    }

    /// Signs `msg` (RFC 8032 section 5.1.6).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.sk.sign(msg).to_bytes())
    }
}

impl SignatureScheme for Ed25519 {
    const NAME: &'static str = "Ed25519";
    const SEED_LEN: usize = SEED_LEN;
    const VK_LEN: usize = VK_LEN;
    const SIG_LEN: usize = SIG_LEN;
    const MAX_CONTEXT_LEN: usize = 0;

    type SigningKey = SigningKey;
    type VerifyingKey = VerifyingKey;
    type Signature = Signature;

    fn signing_key_from_seed(seed: &[u8]) -> Result<SigningKey> {
        Ok(SigningKey::from_seed(Seed32::from_slice(seed)?))
    }

    fn seed(sk: &SigningKey) -> &[u8] {
        sk.seed.as_bytes()
    }

    fn verifying_key(sk: &SigningKey) -> &VerifyingKey {
        &sk.vk
    }

    fn verifying_key_from_bytes(bytes: &[u8]) -> Result<VerifyingKey> {
        VerifyingKey::from_bytes(bytes)
    }

    fn signature_from_bytes(bytes: &[u8]) -> Result<Signature> {
        Signature::from_bytes(bytes)
    }

    /// Ed25519 is deterministic: `rnd` is not used.
    fn sign_derand(sk: &SigningKey, msg: &[u8], ctx: &[u8], _rnd: &[u8; 32]) -> Result<Signature> {
        check_context(ctx, 0)?;
        Ok(sk.sign(msg))
    }

    fn verify(vk: &VerifyingKey, msg: &[u8], ctx: &[u8], sig: &Signature) -> Result<()> {
        check_context(ctx, 0)?;
        vk.verify(msg, sig)
    }
}
