//! Composite ML-DSA + Ed25519 signatures, draft-ietf-lamps-pq-composite-sigs
//! (lamps-wg/draft-composite-sigs @ 60fcb1e8, the version of our test vectors):
//! id-MLDSA44-Ed25519-SHA512 and id-MLDSA65-Ed25519-SHA512.
//!
//! - Message representative (section 2.2 "Prefix, Label, and CTX"):
//!   `M' = Prefix || Label || len(ctx) || ctx || PH(M)` with
//!   `Prefix = "CompositeAlgorithmSignatures2025"`, the algorithm's `Label`
//!   (section 7, e.g. `"COMPSIG-MLDSA65-Ed25519-SHA512"`), `len(ctx)` one byte,
//!   `ctx` at most 255 bytes, and `PH = SHA-512`.
//! - Sign (section 3.2): `mldsaSig = ML-DSA.Sign(mldsaSK, M', ctx = Label)`,
//!   `tradSig = Ed25519.Sign(tradSK, M')`; signature `mldsaSig || tradSig`.
//! - Verify (section 3.3): both components must verify (Ed25519 strictly).
//! - Keys (section 4): public `mldsaPK || ed25519PK`, private `mldsaSeed || ed25519Seed`
//!   (64 bytes; the seed is the private key format).

use super::{MAX_CONTEXT_LEN, SignatureScheme, check_context, ed25519};
use crate::{Result, Seed32, Seed64, error::exact};
use sha2::{Digest, Sha512};

/// `Prefix`: the ASCII string "CompositeAlgorithmSignatures2025".
pub const PREFIX: &[u8; 32] = b"CompositeAlgorithmSignatures2025";

/// `M' = Prefix || Label || len(ctx) || ctx || SHA-512(M)`. `ctx` must have been checked.
fn message_representative(label: &[u8], ctx: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(PREFIX.len() + label.len() + 1 + ctx.len() + 64);
    m.extend_from_slice(PREFIX);
    m.extend_from_slice(label);
    // check_context bounds ctx to 255 bytes.
    m.push(u8::try_from(ctx.len()).unwrap_or(u8::MAX));
    m.extend_from_slice(ctx);
    m.extend_from_slice(&Sha512::digest(msg));
    m
}

macro_rules! composite_scheme {
    (
        $(#[$moddoc:meta])*
        mod $modname:ident,
        scheme $Scheme:ident = $name:literal,
        label $label:literal,
        ml_dsa $ml:ident
    ) => {
        $(#[$moddoc])*
        pub mod $modname {
            use super::*;
            use crate::sig::ml_dsa::$ml as mldsa;

            /// The scheme; implements [`SignatureScheme`].
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $Scheme;

            /// The signature label (the ML-DSA context and part of `M'`).
            pub const LABEL: &[u8] = $label;
            /// Verifying key length: `mldsaPK || ed25519PK`.
            pub const VK_LEN: usize = mldsa::VK_LEN + ed25519::VK_LEN;
            /// Signature length: `mldsaSig || ed25519Sig`.
            pub const SIG_LEN: usize = mldsa::SIG_LEN + ed25519::SIG_LEN;
            /// Private key (seed) length: `mldsaSeed || ed25519Seed`.
            pub const SEED_LEN: usize = 64;

            /// A composite verifying key, both components decoded.
            #[derive(Clone)]
            pub struct VerifyingKey {
                bytes: Vec<u8>,
                ml_dsa: mldsa::VerifyingKey,
                ed25519: ed25519::VerifyingKey,
            }

            impl VerifyingKey {
                /// `DeserializePublicKey`.
                ///
                /// # Errors
                /// [`crate::Error::InvalidLength`], [`crate::Error::InvalidVerifyingKey`].
                pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                    let all = exact::<VK_LEN>(concat!($name, " verifying key"), bytes)?;
                    let (ml, ed) = all.split_at(mldsa::VK_LEN);
                    Ok(Self {
                        bytes: all.to_vec(),
                        ml_dsa: mldsa::VerifyingKey::from_bytes(ml)?,
                        ed25519: ed25519::VerifyingKey::from_bytes(ed)?,
                    })
                }

                /// Composite verification of `sig` on `msg` under context `ctx`.
                ///
                /// # Errors
                /// [`crate::Error::InvalidSignature`], [`crate::Error::ContextTooLong`].
                pub fn verify(&self, msg: &[u8], ctx: &[u8], sig: &Signature) -> Result<()> {
                    check_context(ctx, MAX_CONTEXT_LEN)?;
                    let m = message_representative(LABEL, ctx, msg);
                    let (ml, ed) = sig.0.split_at(mldsa::SIG_LEN);
                    let ml = mldsa::Signature::from_bytes(ml)?;
                    let ed = ed25519::Signature::from_bytes(ed)?;
                    self.ml_dsa.verify(&m, LABEL, &ml)?;
                    self.ed25519.verify(&m, &ed)
                }
            }

            impl AsRef<[u8]> for VerifyingKey {
                fn as_ref(&self) -> &[u8] {
                    &self.bytes
                }
            }

            impl core::fmt::Debug for VerifyingKey {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(concat!($name, " VerifyingKey"))
                }
            }

            /// A composite signature `mldsaSig || ed25519Sig`.
            #[derive(Clone)]
            pub struct Signature(Vec<u8>);

            impl Signature {
                /// `DeserializeSignatureValue` (its length; the rest is checked by verification).
                ///
                /// # Errors
                /// [`crate::Error::InvalidLength`].
                pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                    Ok(Self(exact::<SIG_LEN>(concat!($name, " signature"), bytes)?.to_vec()))
                }
            }

            impl AsRef<[u8]> for Signature {
                fn as_ref(&self) -> &[u8] {
                    &self.0
                }
            }

            impl core::fmt::Debug for Signature {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(concat!($name, " Signature"))
                }
            }

            /// A composite signing key. Zeroized on drop.
            pub struct SigningKey {
                seed: Seed64,
                ml_dsa: mldsa::SigningKey,
                ed25519: ed25519::SigningKey,
                vk: VerifyingKey,
            }

            impl core::fmt::Debug for SigningKey {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(concat!($name, " SigningKey(<redacted>)"))
                }
            }

            impl SigningKey {
                /// `DeserializePrivateKey(mldsaSeed || ed25519Seed)` and key expansion.
                pub fn from_seed(seed: Seed64) -> Self {
                    let ml_seed = Seed32::from_bytes(core::array::from_fn(|i| seed.as_bytes()[i]));
                    let ed_seed = Seed32::from_bytes(core::array::from_fn(|i| seed.as_bytes()[32 + i]));
                    let ml_dsa = mldsa::SigningKey::from_seed(ml_seed);
                    let ed25519 = ed25519::SigningKey::from_seed(ed_seed);
                    let mut bytes = Vec::with_capacity(VK_LEN);
                    bytes.extend_from_slice(ml_dsa.verifying_key().as_bytes());
                    bytes.extend_from_slice(ed25519.verifying_key().as_bytes());
                    let vk = VerifyingKey {
                        bytes,
                        ml_dsa: ml_dsa.verifying_key().clone(),
                        ed25519: ed25519.verifying_key().clone(),
                    };
                    Self { seed, ml_dsa, ed25519, vk }
                }

                /// The private key `mldsaSeed || ed25519Seed`.
                pub fn seed(&self) -> &Seed64 {
                    &self.seed
                }

                /// The matching verifying key.
                pub fn verifying_key(&self) -> &VerifyingKey {
                    &self.vk
                }

                /// Composite signing with the ML-DSA randomness `rnd`.
                ///
                /// # Errors
                /// [`crate::Error::ContextTooLong`], [`crate::Error::SigningFailed`].
                pub fn sign_derand(&self, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Result<Signature> {
                    check_context(ctx, MAX_CONTEXT_LEN)?;
                    let m = message_representative(LABEL, ctx, msg);
                    let ml = self.ml_dsa.sign_derand(&m, LABEL, rnd)?;
                    let ed = self.ed25519.sign(&m);
                    let mut sig = Vec::with_capacity(SIG_LEN);
                    sig.extend_from_slice(ml.as_bytes());
                    sig.extend_from_slice(ed.as_bytes());
                    Ok(Signature(sig))
                }
            }

            impl SignatureScheme for $Scheme {
                const NAME: &'static str = $name;
                const SEED_LEN: usize = SEED_LEN;
                const VK_LEN: usize = VK_LEN;
                const SIG_LEN: usize = SIG_LEN;
                const MAX_CONTEXT_LEN: usize = MAX_CONTEXT_LEN;

                type SigningKey = SigningKey;
                type VerifyingKey = VerifyingKey;
                type Signature = Signature;

                fn signing_key_from_seed(seed: &[u8]) -> Result<SigningKey> {
                    Ok(SigningKey::from_seed(Seed64::from_slice(seed)?))
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

                fn sign_derand(sk: &SigningKey, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Result<Signature> {
                    sk.sign_derand(msg, ctx, rnd)
                }

                fn verify(vk: &VerifyingKey, msg: &[u8], ctx: &[u8], sig: &Signature) -> Result<()> {
                    vk.verify(msg, ctx, sig)
                }
            }
        }
    };
}

composite_scheme! {
    /// id-MLDSA44-Ed25519-SHA512 (OID 2.16.840.1.114027.80.9.1.2).
    mod mldsa44_ed25519,
    scheme MlDsa44Ed25519 = "id-MLDSA44-Ed25519-SHA512",
    label b"COMPSIG-MLDSA44-Ed25519-SHA512",
    ml_dsa ml_dsa_44
}

composite_scheme! {
    /// id-MLDSA65-Ed25519-SHA512 (OID 2.16.840.1.114027.80.9.1.11).
    mod mldsa65_ed25519,
    scheme MlDsa65Ed25519 = "id-MLDSA65-Ed25519-SHA512",
    label b"COMPSIG-MLDSA65-Ed25519-SHA512",
    ml_dsa ml_dsa_65
}

pub use mldsa44_ed25519::MlDsa44Ed25519;
pub use mldsa65_ed25519::MlDsa65Ed25519;

#[cfg(test)]
mod tests {
    use super::*;

    /// The representative's layout, byte by byte (draft section 2.2).
    #[test]
    fn message_representative_layout() {
        let m = message_representative(b"LBL", b"ctx", b"msg");
        assert_eq!(&m[..32], PREFIX);
        assert_eq!(&m[32..35], b"LBL");
        assert_eq!(m[35], 3);
        assert_eq!(&m[36..39], b"ctx");
        assert_eq!(&m[39..], Sha512::digest(b"msg").as_slice());
    }
}
