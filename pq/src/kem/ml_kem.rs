//! ML-KEM-768 and ML-KEM-1024 (FIPS 203) over `libcrux-ml-kem` (DESIGN.md item 1).
//!
//! - The private key format is the 64-byte seed `d || z` (FIPS 203 section 7.1,
//!   `ML-KEM.KeyGen_internal(d, z)`); the expanded key is kept in memory in libcrux's
//!   "unpacked" form, so decapsulation skips key decoding, and is never serialized.
//! - Every encapsulation key received from outside goes through the section 7.2
//!   modulus check when it is parsed ([`Kem::encapsulation_key_from_bytes`]);
//!   an [`EncapsulationKey`](ml_kem_768::EncapsulationKey) value is proof it passed.
//!   libcrux's `encapsulate` does not check this itself.
//! - Decapsulation uses implicit rejection (section 7.3, Algorithm 18 steps 9-10 via
//!   `K̄ = J(z || c)`): a forged ciphertext yields a pseudorandom secret, not an error.
//! - A prepared key is libcrux's unpacked public key: the matrix `Â` sampled and `t̂`
//!   decoded once, `H(ek)` hashed once.
//!
//! libcrux has portable and AVX2 code paths whose unpacked types differ. The AVX2 path
//! (libcrux's `avx2` modules) exists only when compiling for x86_64, so it is selected
//! by target: on x86_64 we pick it at run time as libcrux's own multiplexer does
//! (`libcrux_platform::simd256_support`); on every other target (aarch64 phones and Apple
//! Silicon, 32-bit ARM, wasm, RISC-V) only the portable path is compiled. The feature
//! `force-portable` compiles the portable path alone on x86_64 too, so that CI tests it on
//! this kind of machine (and so that a build with `LIBCRUX_DISABLE_SIMD256=1`, which
//! removes libcrux's `avx2` modules, still compiles). libcrux's NEON path for aarch64 is
//! not used yet: we cannot run it here. [`backend`] says which path runs.
//!
//! libcrux's unpacked key pair does not zeroize itself: on drop we overwrite it with the
//! all-zero default and pass it through `black_box` so the store is not elided.

use super::{DeriveProfile, Kem, derive::derive_seed};
use crate::{Error, Result, Seed64, SharedSecret, error::exact};
use std::sync::OnceLock;

#[cfg(test)]
thread_local! {
    /// ML-KEM key generations (packed or unpacked) on this thread, for the tests.
    static KEYGENS: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// Counts one ML-KEM key generation (tests only).
#[inline(always)]
fn count_keygen() {
    #[cfg(test)]
    KEYGENS.with(|c| c.set(c.get() + 1));
}

/// ML-KEM key generations on this thread so far (tests only).
#[cfg(test)]
pub(crate) fn keygens() -> usize {
    KEYGENS.with(core::cell::Cell::get)
}

/// The ML-KEM code path of libcrux that runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// libcrux's AVX2 code (x86_64 with AVX2, chosen at run time).
    Avx2,
    /// libcrux's portable code (every other CPU and target, or `force-portable`).
    Portable,
}

/// The ML-KEM code path this process uses: AVX2 on an x86_64 CPU that has it (unless the
/// crate was built with `force-portable`), portable otherwise.
pub fn backend() -> Backend {
    if use_avx2() {
        Backend::Avx2
    } else {
        Backend::Portable
    }
}

/// Whether the AVX2 code path of libcrux is compiled in and can run on this CPU.
#[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
fn use_avx2() -> bool {
    libcrux_platform::simd256_support()
}

/// The AVX2 code path is not compiled for this target (or `force-portable` is on).
#[cfg(not(all(target_arch = "x86_64", not(feature = "force-portable"))))]
fn use_avx2() -> bool {
    false
}

macro_rules! ml_kem_parameter_set {
    (
        $(#[$moddoc:meta])*
        mod $modname:ident,
        scheme $Scheme:ident = $name:literal,
        libcrux $lib:ident ($Pk:ident, $Ct:ident, $KpUnpacked:ident, $PkUnpacked:ident),
        kem_id $kem_id:expr,
        ek $ek_len:expr,
        ct $ct_len:expr
    ) => {
        $(#[$moddoc])*
        pub mod $modname {
            use super::*;
            use libcrux_ml_kem::$lib as lib;
            use lib::portable::unpacked as portable;
            #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
            use lib::avx2::unpacked as avx2;

            /// The scheme; implements [`Kem`].
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $Scheme;

            /// Encapsulation key length (FIPS 203 section 8, table 3: 384k + 32).
            pub const EK_LEN: usize = $ek_len;
            /// Ciphertext length (FIPS 203 section 8, table 3: 32(d_u k + d_v)).
            pub const CT_LEN: usize = $ct_len;
            /// Seed (private key) length: `d || z`.
            pub const SEED_LEN: usize = 64;

            const _: () = assert!(lib::$Pk::len() == EK_LEN && lib::$Ct::len() == CT_LEN);

            /// A validated encapsulation key.
            #[derive(Clone)]
            pub struct EncapsulationKey(lib::$Pk);

            impl EncapsulationKey {
                /// The encoded key.
                pub fn as_bytes(&self) -> &[u8; EK_LEN] {
                    self.0.as_slice()
                }
            }

            impl AsRef<[u8]> for EncapsulationKey {
                fn as_ref(&self) -> &[u8] {
                    self.0.as_ref()
                }
            }

            impl core::fmt::Debug for EncapsulationKey {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    write!(f, concat!($name, " EncapsulationKey({} bytes)"), EK_LEN)
                }
            }

            /// A ciphertext.
            #[derive(Clone)]
            pub struct Ciphertext(lib::$Ct);

            impl Ciphertext {
                /// Parses a ciphertext (only the length is checked).
                ///
                /// # Errors
                /// [`Error::InvalidLength`].
                pub fn from_slice(bytes: &[u8]) -> Result<Self> {
                    Ok(Self(lib::$Ct::from(exact::<CT_LEN>(concat!($name, " ciphertext"), bytes)?)))
                }

                /// The encoded ciphertext.
                pub fn as_bytes(&self) -> &[u8; CT_LEN] {
                    self.0.as_slice()
                }
            }

            impl AsRef<[u8]> for Ciphertext {
                fn as_ref(&self) -> &[u8] {
                    self.0.as_ref()
                }
            }

            impl core::fmt::Debug for Ciphertext {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    write!(f, concat!($name, " Ciphertext({} bytes)"), CT_LEN)
                }
            }

            enum UnpackedKeyPair {
                #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
                Avx2(avx2::$KpUnpacked),
                Portable(portable::$KpUnpacked),
            }

            /// A decapsulation key: the seed, its encapsulation key, and the expanded key
            /// in libcrux's unpacked form, made on the first decapsulation. Zeroized on
            /// drop; only the seed is serialized.
            pub struct DecapsulationKey {
                seed: Seed64,
                ek: EncapsulationKey,
                unpacked: OnceLock<Box<UnpackedKeyPair>>,
            }

            impl Drop for DecapsulationKey {
                fn drop(&mut self) {
                    if let Some(unpacked) = self.unpacked.get_mut() {
                        match &mut **unpacked {
                            #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
                            UnpackedKeyPair::Avx2(kp) => *kp = Default::default(),
                            UnpackedKeyPair::Portable(kp) => *kp = Default::default(),
                        }
                        core::hint::black_box(&self.unpacked);
                    }
                }
            }

            impl core::fmt::Debug for DecapsulationKey {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(concat!($name, " DecapsulationKey(<redacted>)"))
                }
            }

            /// `ML-KEM.KeyGen_internal(d, z)` in libcrux's unpacked form, written straight
            /// into its heap allocation: the box is made first, holding the all-zero
            /// (public) initial key, and libcrux expands the seed into it in place, so no
            /// copy of the expanded key is left on the stack by a move into the box.
            fn unpacked_key_pair(seed: &Seed64) -> Box<UnpackedKeyPair> {
                let d_z = zeroize::Zeroizing::new(*seed.as_bytes());
                count_keygen();
                #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
                if use_avx2() {
                    let mut boxed = Box::new(UnpackedKeyPair::Avx2(avx2::init_key_pair()));
                    if let UnpackedKeyPair::Avx2(kp) = &mut *boxed {
                        avx2::generate_key_pair_mut(*d_z, kp);
                    }
                    return boxed;
                }
                let mut boxed = Box::new(UnpackedKeyPair::Portable(portable::init_key_pair()));
                // Irrefutable where the AVX2 variant is compiled out (aarch64, every other
                // target, `force-portable`).
                #[allow(irrefutable_let_patterns)]
                if let UnpackedKeyPair::Portable(kp) = &mut *boxed {
                    portable::generate_key_pair_mut(*d_z, kp);
                }
                boxed
            }

            /// The encapsulation key of an unpacked key pair (a serialization, no keygen).
            fn unpacked_ek(kp: &UnpackedKeyPair) -> lib::$Pk {
                match kp {
                    #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
                    UnpackedKeyPair::Avx2(kp) => avx2::key_pair_serialized_public_key(kp),
                    UnpackedKeyPair::Portable(kp) => portable::key_pair_serialized_public_key(kp),
                }
            }

            impl DecapsulationKey {
                /// `ML-KEM.KeyGen_internal(d, z)` from the seed `d || z`: computes the
                /// encapsulation key now and the expanded decapsulation key on first use
                /// (MLS derives many key pairs, through DeriveKeyPair, that it only uses to
                /// check a public key).
                pub fn from_seed(seed: Seed64) -> Self {
                    let d_z = zeroize::Zeroizing::new(*seed.as_bytes());
                    count_keygen();
                    let (mut sk, pk) = lib::generate_key_pair(*d_z).into_parts();
                    // libcrux's packed private key does not zeroize itself.
                    zeroize::Zeroize::zeroize(&mut sk[0..]);
                    Self { seed, ek: EncapsulationKey(pk), unpacked: OnceLock::new() }
                }

                /// `ML-KEM.KeyGen_internal(d, z)` from the seed, expanded now: one key
                /// generation gives both the expanded key and `ek`, for a key that is about
                /// to decapsulate (an HPKE open). [`Self::from_seed`] followed by
                /// [`Self::decapsulate`] would generate the key twice.
                pub fn from_seed_expanded(seed: Seed64) -> Self {
                    let unpacked = unpacked_key_pair(&seed);
                    let ek = EncapsulationKey(unpacked_ek(&unpacked));
                    Self { seed, ek, unpacked: OnceLock::from(unpacked) }
                }

                /// The seed `d || z`.
                pub fn seed(&self) -> &Seed64 {
                    &self.seed
                }

                /// The matching encapsulation key.
                pub fn encapsulation_key(&self) -> &EncapsulationKey {
                    &self.ek
                }

                /// `ML-KEM.Decaps` with implicit rejection. The first call expands the key.
                pub fn decapsulate(&self, ct: &Ciphertext) -> SharedSecret {
                    let unpacked = self.unpacked.get_or_init(|| unpacked_key_pair(&self.seed));
                    let ss = match &**unpacked {
                        #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
                        UnpackedKeyPair::Avx2(kp) => avx2::decapsulate(kp, &ct.0),
                        UnpackedKeyPair::Portable(kp) => portable::decapsulate(kp, &ct.0),
                    };
                    SharedSecret::from_bytes(ss)
                }
            }

            enum UnpackedPublicKey {
                #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
                Avx2(avx2::$PkUnpacked),
                Portable(portable::$PkUnpacked),
            }

            /// An encapsulation key with `Â`, `t̂` and `H(ek)` precomputed. Public data.
            pub struct PreparedEncapsulationKey {
                unpacked: Box<UnpackedPublicKey>,
            }

            impl core::fmt::Debug for PreparedEncapsulationKey {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(concat!($name, " PreparedEncapsulationKey"))
                }
            }

            impl PreparedEncapsulationKey {
                /// Precomputes from a validated key.
                pub fn new(ek: &EncapsulationKey) -> Self {
                    #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
                    if use_avx2() {
                        let mut pk = avx2::init_public_key();
                        avx2::unpacked_public_key(&ek.0, &mut pk);
                        return Self { unpacked: Box::new(UnpackedPublicKey::Avx2(pk)) };
                    }
                    let mut pk = portable::init_public_key();
                    portable::unpacked_public_key(&ek.0, &mut pk);
                    Self { unpacked: Box::new(UnpackedPublicKey::Portable(pk)) }
                }

                /// `ML-KEM.Encaps_internal(ek, m)` on the precomputed key. Hazardous: `m`
                /// must be fresh randomness, never reused (feature `hazmat`).
                #[cfg(feature = "hazmat")]
                pub fn encapsulate_derand(&self, m: &[u8; 32]) -> (Ciphertext, SharedSecret) {
                    self.encaps_internal(m)
                }

                /// `ML-KEM.Encaps_internal(ek, m)` on the precomputed key.
                pub(crate) fn encaps_internal(&self, m: &[u8; 32]) -> (Ciphertext, SharedSecret) {
                    let (ct, ss) = match &*self.unpacked {
                        #[cfg(all(target_arch = "x86_64", not(feature = "force-portable")))]
                        UnpackedPublicKey::Avx2(pk) => avx2::encapsulate(pk, *m),
                        UnpackedPublicKey::Portable(pk) => portable::encapsulate(pk, *m),
                    };
                    (Ciphertext(ct), SharedSecret::from_bytes(ss))
                }
            }

            impl EncapsulationKey {
                /// Parses `bytes` and runs the FIPS 203 section 7.2 modulus check.
                ///
                /// # Errors
                /// [`Error::InvalidLength`], [`Error::InvalidEncapsulationKey`].
                pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                    let pk = lib::$Pk::from(exact::<EK_LEN>(concat!($name, " encapsulation key"), bytes)?);
                    if lib::validate_public_key(&pk) {
                        Ok(Self(pk))
                    } else {
                        Err(Error::InvalidEncapsulationKey)
                    }
                }

                /// `ML-KEM.Encaps_internal(ek, m)` with the 32-byte message `m`. Hazardous:
                /// `m` must be fresh randomness, never reused (feature `hazmat`).
                #[cfg(feature = "hazmat")]
                pub fn encapsulate_derand(&self, m: &[u8; 32]) -> (Ciphertext, SharedSecret) {
                    self.encaps_internal(m)
                }

                /// `ML-KEM.Encaps_internal(ek, m)` with the 32-byte message `m`.
                pub(crate) fn encaps_internal(&self, m: &[u8; 32]) -> (Ciphertext, SharedSecret) {
                    let (ct, ss) = lib::encapsulate(&self.0, *m);
                    (Ciphertext(ct), SharedSecret::from_bytes(ss))
                }
            }

            impl Kem for $Scheme {
                const NAME: &'static str = $name;
                const HPKE_KEM_ID: u16 = $kem_id;
                const SEED_LEN: usize = SEED_LEN;
                const EK_LEN: usize = EK_LEN;
                const CT_LEN: usize = CT_LEN;
                const ESEED_LEN: usize = 32;

                type DecapsulationKey = DecapsulationKey;
                type EncapsulationKey = EncapsulationKey;
                type PreparedEncapsulationKey = PreparedEncapsulationKey;
                type Ciphertext = Ciphertext;

                fn decapsulation_key_from_seed(seed: &[u8]) -> Result<DecapsulationKey> {
                    Ok(DecapsulationKey::from_seed(Seed64::from_slice(seed)?))
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
                    Ciphertext::from_slice(bytes)
                }

                #[cfg(feature = "hazmat")]
                fn encapsulate_derand(ek: &EncapsulationKey, eseed: &[u8]) -> Result<(Ciphertext, SharedSecret)> {
                    Ok(ek.encaps_internal(exact::<32>("ML-KEM encapsulation randomness", eseed)?))
                }

                #[cfg(feature = "hazmat")]
                fn encapsulate_prepared_derand(
                    ek: &PreparedEncapsulationKey,
                    eseed: &[u8],
                ) -> Result<(Ciphertext, SharedSecret)> {
                    Ok(ek.encaps_internal(exact::<32>("ML-KEM encapsulation randomness", eseed)?))
                }

                fn encapsulate<R: rand_core::TryCryptoRng + ?Sized>(
                    ek: &EncapsulationKey,
                    rng: &mut R,
                ) -> Result<(Ciphertext, SharedSecret)> {
                    let mut m = zeroize::Zeroizing::new([0u8; 32]);
                    crate::rng::fill(rng, m.as_mut_slice())?;
                    Ok(ek.encaps_internal(&m))
                }

                fn encapsulate_prepared<R: rand_core::TryCryptoRng + ?Sized>(
                    ek: &PreparedEncapsulationKey,
                    rng: &mut R,
                ) -> Result<(Ciphertext, SharedSecret)> {
                    let mut m = zeroize::Zeroizing::new([0u8; 32]);
                    crate::rng::fill(rng, m.as_mut_slice())?;
                    Ok(ek.encaps_internal(&m))
                }

                fn expanded_decapsulation_key_from_seed(seed: &[u8]) -> Result<DecapsulationKey> {
                    Ok(DecapsulationKey::from_seed_expanded(Seed64::from_slice(seed)?))
                }

                fn decapsulate(dk: &DecapsulationKey, ct: &Ciphertext) -> Result<SharedSecret> {
                    Ok(dk.decapsulate(ct))
                }

                fn derive_key_pair(ikm: &[u8], profile: DeriveProfile) -> DecapsulationKey {
                    let seed = derive_seed::<64>($kem_id, ikm, profile);
                    DecapsulationKey::from_seed(Seed64::from_bytes(*seed))
                }

                fn generate<R: rand_core::TryCryptoRng + ?Sized>(rng: &mut R) -> Result<DecapsulationKey> {
                    let mut seed = zeroize::Zeroizing::new([0u8; 64]);
                    crate::rng::fill(rng, seed.as_mut_slice())?;
                    Ok(DecapsulationKey::from_seed(Seed64::from_bytes(*seed)))
                }
            }
        }
    };
}

ml_kem_parameter_set! {
    /// ML-KEM-768 (FIPS 203, k = 3): 1184-byte keys, 1088-byte ciphertexts. HPKE KEM id 0x0041.
    mod ml_kem_768,
    scheme MlKem768 = "ML-KEM-768",
    libcrux mlkem768 (MlKem768PublicKey, MlKem768Ciphertext, MlKem768KeyPairUnpacked, MlKem768PublicKeyUnpacked),
    kem_id 0x0041,
    ek 1184,
    ct 1088
}

ml_kem_parameter_set! {
    /// ML-KEM-1024 (FIPS 203, k = 4): 1568-byte keys, 1568-byte ciphertexts. HPKE KEM id 0x0042.
    mod ml_kem_1024,
    scheme MlKem1024 = "ML-KEM-1024",
    libcrux mlkem1024 (MlKem1024PublicKey, MlKem1024Ciphertext, MlKem1024KeyPairUnpacked, MlKem1024PublicKeyUnpacked),
    kem_id 0x0042,
    ek 1568,
    ct 1568
}

pub use ml_kem_768::MlKem768;
pub use ml_kem_1024::MlKem1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_parameter_sets() {
        macro_rules! check {
            ($m:ident) => {{
                let dk = $m::DecapsulationKey::from_seed(Seed64::from_bytes([7u8; 64]));
                let (ct, ss) = dk.encapsulation_key().encaps_internal(&[9u8; 32]);
                assert_eq!(ct.as_ref().len(), $m::CT_LEN);
                let ss2 = dk.decapsulate(&ct);
                assert_eq!(ss.as_bytes(), ss2.as_bytes());
                let prepared = $m::PreparedEncapsulationKey::new(dk.encapsulation_key());
                let (ct3, ss3) = prepared.encaps_internal(&[9u8; 32]);
                assert_eq!(ct3.as_ref(), ct.as_ref());
                assert_eq!(ss3.as_bytes(), ss.as_bytes());
            }};
        }
        check!(ml_kem_768);
        check!(ml_kem_1024);
    }

    /// An HPKE open expands the key once: `from_seed_expanded` + `decapsulate` is one key
    /// generation, where `from_seed` + `decapsulate` is two; both give the same key and secret.
    #[test]
    fn expanded_key_is_generated_once() {
        macro_rules! check {
            ($m:ident) => {{
                let seed = Seed64::from_bytes([5u8; 64]);
                let lazy = $m::DecapsulationKey::from_seed(seed.clone());
                let (ct, ss) = lazy.encapsulation_key().encaps_internal(&[3u8; 32]);

                let before = keygens();
                let dk = $m::DecapsulationKey::from_seed_expanded(seed.clone());
                let ss_expanded = dk.decapsulate(&ct);
                assert_eq!(keygens() - before, 1, "one key generation per open");
                assert_eq!(
                    dk.encapsulation_key().as_bytes(),
                    lazy.encapsulation_key().as_bytes()
                );
                assert_eq!(ss_expanded.as_bytes(), ss.as_bytes());

                let before = keygens();
                let dk = $m::DecapsulationKey::from_seed(seed);
                let _ = dk.decapsulate(&ct);
                assert_eq!(keygens() - before, 2, "the lazy path expands on first use");
            }};
        }
        check!(ml_kem_768);
        check!(ml_kem_1024);
    }

    /// The path CI forces with `--features force-portable` is the one that runs.
    #[test]
    fn backend_follows_target_and_feature() {
        let expect_avx2 = cfg!(all(target_arch = "x86_64", not(feature = "force-portable")))
            && libcrux_platform::simd256_support();
        let expected = if expect_avx2 {
            Backend::Avx2
        } else {
            Backend::Portable
        };
        assert_eq!(backend(), expected);
        if cfg!(feature = "force-portable") {
            assert_eq!(backend(), Backend::Portable);
        }
    }
}
