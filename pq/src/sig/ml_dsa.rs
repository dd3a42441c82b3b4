//! ML-DSA-44, ML-DSA-65 and ML-DSA-87 (FIPS 204) over `libcrux-ml-dsa` (DESIGN.md item 2).
//!
//! - The private key format is the 32-byte seed `ξ` of `ML-DSA.KeyGen_internal`
//!   (FIPS 204 Algorithm 6); the expanded signing key is kept beside it in memory and
//!   zeroized on drop (libcrux does not zeroize it).
//! - Signing is `ML-DSA.Sign` (Algorithm 2): pure ML-DSA with a context string of at
//!   most 255 bytes and 32 bytes `rnd` (hedged by default, zero for the deterministic
//!   variant); verification is `ML-DSA.Verify` (Algorithm 3).
//! - Verifying keys of the right length are accepted as they are: FIPS 204's `pkDecode`
//!   has no failure case.

use super::{MAX_CONTEXT_LEN, SignatureScheme, check_context};
use crate::{Error, Result, Seed32, error::exact};

macro_rules! ml_dsa_parameter_set {
    (
        $(#[$moddoc:meta])*
        mod $modname:ident,
        scheme $Scheme:ident = $name:literal,
        libcrux $lib:ident ($Sk:ident, $Vk:ident, $Sig:ident),
        vk $vk_len:expr,
        sig $sig_len:expr
    ) => {
        $(#[$moddoc])*
        pub mod $modname {
            use super::*;
            use libcrux_ml_dsa::$lib as lib;

            /// The scheme; implements [`SignatureScheme`].
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $Scheme;

            /// Verifying key length (FIPS 204 section 4, table 2).
            pub const VK_LEN: usize = $vk_len;
            /// Signature length (FIPS 204 section 4, table 2).
            pub const SIG_LEN: usize = $sig_len;
            /// Seed (private key) length.
            pub const SEED_LEN: usize = 32;

            const _: () = assert!(lib::$Vk::len() == VK_LEN && lib::$Sig::len() == SIG_LEN);

            /// A verifying key.
            #[derive(Clone)]
            pub struct VerifyingKey(lib::$Vk);

            impl VerifyingKey {
                /// Parses a verifying key.
                ///
                /// # Errors
                /// [`Error::InvalidLength`].
                pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                    Ok(Self(lib::$Vk::new(*exact::<VK_LEN>(concat!($name, " verifying key"), bytes)?)))
                }

                /// The encoded key.
                pub fn as_bytes(&self) -> &[u8; VK_LEN] {
                    self.0.as_ref()
                }

                /// `ML-DSA.Verify(pk, M, sig, ctx)`.
                ///
                /// # Errors
                /// [`Error::InvalidSignature`], [`Error::ContextTooLong`].
                pub fn verify(&self, msg: &[u8], ctx: &[u8], sig: &Signature) -> Result<()> {
                    check_context(ctx, MAX_CONTEXT_LEN)?;
                    lib::verify(&self.0, msg, ctx, &sig.0).map_err(|_| Error::InvalidSignature)
                }
            }

            impl AsRef<[u8]> for VerifyingKey {
                fn as_ref(&self) -> &[u8] {
                    self.0.as_slice()
                }
            }

            impl core::fmt::Debug for VerifyingKey {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(concat!($name, " VerifyingKey"))
                }
            }

            /// A signature.
            #[derive(Clone)]
            pub struct Signature(lib::$Sig);

            impl Signature {
                /// Parses a signature (its length; the rest is checked by verification).
                ///
                /// # Errors
                /// [`Error::InvalidLength`].
                pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                    Ok(Self(lib::$Sig::new(*exact::<SIG_LEN>(concat!($name, " signature"), bytes)?)))
                }

                /// The encoded signature.
                pub fn as_bytes(&self) -> &[u8; SIG_LEN] {
                    self.0.as_ref()
                }
            }

            impl AsRef<[u8]> for Signature {
                fn as_ref(&self) -> &[u8] {
                    self.0.as_slice()
                }
            }

            impl core::fmt::Debug for Signature {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(concat!($name, " Signature"))
                }
            }

            /// A signing key: the seed `ξ` and the expanded key. Zeroized on drop.
            pub struct SigningKey {
                seed: Seed32,
                sk: lib::$Sk,
                vk: VerifyingKey,
            }

            impl Drop for SigningKey {
                fn drop(&mut self) {
                    zeroize::Zeroize::zeroize(self.sk.as_mut_slice());
                }
            }

            impl core::fmt::Debug for SigningKey {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(concat!($name, " SigningKey(<redacted>)"))
                }
            }

            impl SigningKey {
                /// `ML-DSA.KeyGen_internal(ξ)`.
                pub fn from_seed(seed: Seed32) -> Self {
                    let kp = lib::generate_key_pair(*seed.as_bytes());
                    Self { seed, sk: kp.signing_key, vk: VerifyingKey(kp.verification_key) }
                }

                /// The seed `ξ`.
                pub fn seed(&self) -> &Seed32 {
                    &self.seed
                }

                /// The matching verifying key.
                pub fn verifying_key(&self) -> &VerifyingKey {
                    &self.vk
                }

                /// `ML-DSA.Sign(sk, M, ctx)` with the given `rnd`.
                ///
                /// # Errors
                /// [`Error::ContextTooLong`], [`Error::SigningFailed`].
                pub fn sign_derand(&self, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Result<Signature> {
                    check_context(ctx, MAX_CONTEXT_LEN)?;
                    lib::sign(&self.sk, msg, ctx, *rnd)
                        .map(Signature)
                        .map_err(|_| Error::SigningFailed)
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

ml_dsa_parameter_set! {
    /// ML-DSA-44 (FIPS 204, NIST category 2): 1312-byte keys, 2420-byte signatures.
    mod ml_dsa_44,
    scheme MlDsa44 = "ML-DSA-44",
    libcrux ml_dsa_44 (MLDSA44SigningKey, MLDSA44VerificationKey, MLDSA44Signature),
    vk 1312,
    sig 2420
}

ml_dsa_parameter_set! {
    /// ML-DSA-65 (FIPS 204, NIST category 3): 1952-byte keys, 3309-byte signatures.
    mod ml_dsa_65,
    scheme MlDsa65 = "ML-DSA-65",
    libcrux ml_dsa_65 (MLDSA65SigningKey, MLDSA65VerificationKey, MLDSA65Signature),
    vk 1952,
    sig 3309
}

ml_dsa_parameter_set! {
    /// ML-DSA-87 (FIPS 204, NIST category 5): 2592-byte keys, 4627-byte signatures.
    mod ml_dsa_87,
    scheme MlDsa87 = "ML-DSA-87",
    libcrux ml_dsa_87 (MLDSA87SigningKey, MLDSA87VerificationKey, MLDSA87Signature),
    vk 2592,
    sig 4627
}

pub use ml_dsa_44::MlDsa44;
pub use ml_dsa_65::MlDsa65;
pub use ml_dsa_87::MlDsa87;
