//! [`PqCrypto`]: OpenMLS's `OpenMlsCrypto` and `OpenMlsRand` for all 17 cipher suites of
//! openmls_traits 0.6.

use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::random::OpenMlsRand;
use openmls_traits::types::{
    AeadType, Ciphersuite, CryptoError, ExporterSecret, HashType, HpkeAeadType, HpkeCiphertext,
    HpkeConfig, HpkeKdfType, HpkeKemType, HpkeKeyPair, KemOutput, SignatureScheme,
};
use tls_codec::SecretVLBytes;

use crate::aead::{AeadAlg, AeadError};
use crate::cache::{CacheConfig, CacheStats, KeyCache};
use crate::hpke::{self, Aead, DeriveProfile, HpkeError, Kdf, Kem, Suite};
use crate::kdf::HashAlg;
use crate::rng::{ProviderRng, Source};

/// Every cipher suite this provider runs: all 17 non-GREASE suites of openmls_traits 0.6.
pub const SUPPORTED_CIPHERSUITES: [Ciphersuite; 17] = [
    Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
    Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
    Ciphersuite::MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448,
    Ciphersuite::MLS_256_DHKEMP521_AES256GCM_SHA512_P521,
    Ciphersuite::MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448,
    Ciphersuite::MLS_256_DHKEMP384_AES256GCM_SHA384_P384,
    Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519,
    Ciphersuite::MLS_128_MLKEM768X25519_AES256GCM_SHA384_Ed25519,
    Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519,
    Ciphersuite::MLS_192_MLKEM1024_AES256GCM_SHA384_P384,
    Ciphersuite::MLS_128_MLKEM768_AES256GCM_SHA384_P256,
    Ciphersuite::MLS_192_MLKEM768_AES256GCM_SHA384_MLDSA65,
    Ciphersuite::MLS_128_MLKEM768X25519_CHACHA20POLY1305_SHA384_MLDSA44,
    Ciphersuite::MLS_256_MLKEM1024_AES256GCM_SHA512_MLDSA87,
    Ciphersuite::MLS_256_MLKEM1024_AES256GCM_SHA384_MLDSA87,
    Ciphersuite::MLS_128_MLKEM768_AES256GCM_SHA384_Ed25519,
];

/// Settings of a [`PqCrypto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CryptoConfig {
    /// The DeriveKeyPair profile of the post-quantum KEMs (ML-KEM-768/1024, X-Wing);
    /// DHKEMs always follow RFC 9180. Default: `DeriveProfile::default()`, stated once in
    /// `pqmls-pq` ([`DeriveProfile::Plain`], the derivation of the OpenMLS 0.9 providers,
    /// without which a group mixing them with us breaks; see the crate docs).
    /// [`DeriveProfile::HpkePq`] is draft-ietf-hpke-pq's labelled form.
    pub derive_profile: DeriveProfile,
    /// The recipient-key cache.
    pub cache: CacheConfig,
}

/// The crypto and randomness of the provider.
///
/// # Randomness
/// Every random byte comes from the operating system at the moment it is needed
/// (`getrandom`: the `getrandom(2)` system call on Linux and Android, `getentropy` or
/// `SecRandomCopyBytes` on Apple systems, `ProcessPrng` on Windows). The provider keeps no
/// generator state in its own memory, so:
/// - a memory dump of the process reveals no past or future output (the kernel's generator
///   erases its own state forward, which is what a user-space fast-key-erasure design
///   would have to reimplement);
/// - a forked child shares nothing with its parent: each draw after the fork is a fresh
///   system call (`tests/randomness.rs` forks and compares);
/// - two providers in one process never share a stream.
///
/// The cost is one system call per request, about 0.23 us for 32 bytes here
/// (BENCHMARKS.md, `provider_rand`), small next to anything MLS does with the bytes.
/// Temporaries that hold random secrets on their way (HPKE encapsulation randomness,
/// signature seeds, P-521 nonce seeds) are `Zeroizing`.
///
/// With the feature `sim-rng`, [`PqCrypto::insecure_deterministic_for_simulation`] makes a
/// provider whose every draw comes from a seeded stream instead, for simulations that must
/// replay exactly; every other constructor uses the operating system.
pub struct PqCrypto {
    config: CryptoConfig,
    rand: Source,
    cache: KeyCache,
    vk_cache: crate::sign::VerifyingKeyCache,
}

impl core::fmt::Debug for PqCrypto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PqCrypto")
            .field("config", &self.config)
            .field("os_randomness", &self.rand.is_os())
            .finish_non_exhaustive()
    }
}

/// The randomness source failed (the operating system's generator; with the feature
/// `sim-rng`, a simulation's seeded stream ran out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the random number generator failed")]
pub struct RandError;

impl PqCrypto {
    /// A provider with the default settings.
    ///
    /// # Errors
    /// [`RandError`] if the operating system's generator cannot be read (checked once
    /// here, so that a broken system fails at start rather than mid-protocol).
    pub fn new() -> Result<Self, RandError> {
        Self::with_config(CryptoConfig::default())
    }

    /// A provider with the given settings.
    ///
    /// # Errors
    /// As [`PqCrypto::new`].
    pub fn with_config(config: CryptoConfig) -> Result<Self, RandError> {
        let rand = Source::Os;
        let mut probe = [0u8; 1];
        rand.fill(&mut probe)?;
        Ok(PqCrypto {
            config,
            rand,
            cache: KeyCache::new(config.cache),
            vk_cache: crate::sign::VerifyingKeyCache::default(),
        })
    }

    /// **Insecure: simulations only.** A provider with the default settings whose every
    /// random draw (HPKE encapsulations, key generation, signature keys, `OpenMlsRand`,
    /// [`PqCrypto::rng`]) is the ChaCha20 keystream of `seed`, so that a simulated run
    /// with the same seeds replays byte for byte. Whoever knows the seed knows every
    /// secret this provider makes. Compiled only with the feature `sim-rng` (DESIGN.md
    /// item 16).
    #[cfg(feature = "sim-rng")]
    pub fn insecure_deterministic_for_simulation(seed: [u8; 32]) -> Self {
        let config = CryptoConfig::default();
        PqCrypto {
            config,
            rand: Source::seeded(&seed),
            cache: KeyCache::new(config.cache),
            vk_cache: crate::sign::VerifyingKeyCache::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> CryptoConfig {
        self.config
    }

    /// The recipient-key cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// HPKE's SetupBaseS to `pk_r`, its randomness from `rand`.
    fn seal_with(
        &self,
        config: &HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        rand: &Source,
    ) -> Result<(Vec<u8>, hpke::Context), CryptoError> {
        let suite = suite(config)?;
        let key = self
            .cache
            .get(suite.kem, pk_r)
            .map_err(|_| CryptoError::InvalidPublicKey)?;
        hpke::setup_base_sender(suite, &key, info, &mut ProviderRng(rand)).map_err(|e| match e {
            HpkeError::InvalidPublicKey | HpkeError::NonContributory => {
                CryptoError::InvalidPublicKey
            }
            HpkeError::Randomness => CryptoError::InsufficientRandomness,
            _ => CryptoError::SenderSetupError,
        })
    }
}

impl Default for PqCrypto {
    /// # Panics
    /// If the operating system's random number generator fails (use [`PqCrypto::new`] to
    /// get an error instead).
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        Self::new().expect("the operating system's random number generator failed")
    }
}

const fn hash_alg(h: HashType) -> HashAlg {
    match h {
        HashType::Sha2_256 => HashAlg::Sha256,
        HashType::Sha2_384 => HashAlg::Sha384,
        HashType::Sha2_512 => HashAlg::Sha512,
    }
}

const fn aead_alg(a: AeadType) -> AeadAlg {
    match a {
        AeadType::Aes128Gcm => AeadAlg::Aes128Gcm,
        AeadType::Aes256Gcm => AeadAlg::Aes256Gcm,
        AeadType::ChaCha20Poly1305 => AeadAlg::ChaCha20Poly1305,
    }
}

/// The HPKE suite of an OpenMLS HPKE configuration.
const fn suite(config: &HpkeConfig) -> Result<Suite, CryptoError> {
    let kem = match config.0 {
        HpkeKemType::DhKemP256 => Kem::DhKemP256,
        HpkeKemType::DhKemP384 => Kem::DhKemP384,
        HpkeKemType::DhKemP521 => Kem::DhKemP521,
        HpkeKemType::DhKem25519 => Kem::DhKemX25519,
        HpkeKemType::DhKem448 => Kem::DhKemX448,
        HpkeKemType::MlKem768 => Kem::MlKem768,
        HpkeKemType::MlKem1024 => Kem::MlKem1024,
        // OpenMLS's 0x004D is X-Wing; HPKE's suite_id carries 0x647a (see `hpke`).
        HpkeKemType::XWingKemDraft6 => Kem::XWing,
    };
    let kdf = match config.1 {
        HpkeKdfType::HkdfSha256 => Kdf::HkdfSha256,
        HpkeKdfType::HkdfSha384 => Kdf::HkdfSha384,
        HpkeKdfType::HkdfSha512 => Kdf::HkdfSha512,
    };
    let aead = match config.2 {
        HpkeAeadType::AesGcm128 => Aead::Aes128Gcm,
        HpkeAeadType::AesGcm256 => Aead::Aes256Gcm,
        HpkeAeadType::ChaCha20Poly1305 => Aead::ChaCha20Poly1305,
        HpkeAeadType::Export => Aead::ExportOnly,
    };
    Ok(Suite { kem, kdf, aead })
}

fn open_error(e: HpkeError) -> CryptoError {
    match e {
        HpkeError::InvalidLength | HpkeError::InvalidPublicKey | HpkeError::NonContributory => {
            CryptoError::ReceiverSetupError
        }
        _ => CryptoError::HpkeDecryptionError,
    }
}

impl OpenMlsCrypto for PqCrypto {
    fn supports(&self, ciphersuite: Ciphersuite) -> Result<(), CryptoError> {
        if SUPPORTED_CIPHERSUITES.contains(&ciphersuite) {
            Ok(())
        } else {
            Err(CryptoError::UnsupportedCiphersuite)
        }
    }

    fn supported_ciphersuites(&self) -> Vec<Ciphersuite> {
        SUPPORTED_CIPHERSUITES.to_vec()
    }

    fn hkdf_extract(
        &self,
        hash_type: HashType,
        salt: &[u8],
        ikm: &[u8],
    ) -> Result<SecretVLBytes, CryptoError> {
        let prk = hash_alg(hash_type).extract(salt, &[ikm]);
        Ok(SecretVLBytes::new(prk.to_vec()))
    }

    fn hmac(
        &self,
        hash_type: HashType,
        key: &[u8],
        message: &[u8],
    ) -> Result<SecretVLBytes, CryptoError> {
        Ok(SecretVLBytes::new(
            hash_alg(hash_type).hmac(key, &[message]).to_vec(),
        ))
    }

    fn hkdf_expand(
        &self,
        hash_type: HashType,
        prk: &[u8],
        info: &[u8],
        okm_len: usize,
    ) -> Result<SecretVLBytes, CryptoError> {
        let mut okm = vec![0u8; okm_len];
        hash_alg(hash_type)
            .expand_into(prk, &[info], &mut okm)
            .map_err(|_| CryptoError::HkdfOutputLengthInvalid)?;
        Ok(SecretVLBytes::new(okm))
    }

    fn hash(&self, hash_type: HashType, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(hash_alg(hash_type).hash(&[data]))
    }

    fn aead_encrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        data: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        aead_alg(alg)
            .seal(key, nonce, aad, data)
            .map_err(|_| CryptoError::InvalidLength)
    }

    fn aead_decrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        ct_tag: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        aead_alg(alg)
            .open(key, nonce, aad, ct_tag)
            .map_err(|e| match e {
                AeadError::InvalidLength => CryptoError::InvalidLength,
                AeadError::Decryption => CryptoError::AeadDecryptionError,
            })
    }

    fn signature_key_gen(&self, alg: SignatureScheme) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let (sk, pk) = crate::sign::generate(alg, &mut self.rng())?;
        Ok((sk.to_vec(), pk))
    }

    fn verify_signature(
        &self,
        alg: SignatureScheme,
        data: &[u8],
        pk: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.vk_cache.verify(alg, data, pk, signature)
    }

    fn sign(&self, alg: SignatureScheme, data: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        crate::sign::sign(alg, data, key)
    }

    fn hpke_seal(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        aad: &[u8],
        ptxt: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError> {
        // OpenMLS seals path secrets in parallel: see `rng` for why a call has its own
        // (seeded) stream.
        let rand = self.rand.for_call(&[pk_r, info, aad, ptxt]);
        let (enc, mut ctx) = self.seal_with(&config, pk_r, info, &rand)?;
        let ct = ctx
            .seal(aad, ptxt)
            .map_err(|_| CryptoError::HpkeEncryptionError)?;
        Ok(HpkeCiphertext {
            kem_output: enc.into(),
            ciphertext: ct.into(),
        })
    }

    fn hpke_open(
        &self,
        config: HpkeConfig,
        input: &HpkeCiphertext,
        sk_r: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let suite = suite(&config)?;
        let mut ctx = hpke::setup_base_receiver(suite, input.kem_output.as_slice(), sk_r, info)
            .map_err(open_error)?;
        ctx.open(aad, input.ciphertext.as_slice())
            .map_err(|_| CryptoError::HpkeDecryptionError)
    }

    fn hpke_setup_sender_and_export(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<(KemOutput, ExporterSecret), CryptoError> {
        let (enc, ctx) = self.seal_with(&config, pk_r, info, &self.rand)?;
        let secret = ctx
            .export(exporter_context, exporter_length)
            .map_err(|_| CryptoError::ExporterError)?;
        Ok((enc, secret.to_vec().into()))
    }

    fn hpke_setup_receiver_and_export(
        &self,
        config: HpkeConfig,
        enc: &[u8],
        sk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<ExporterSecret, CryptoError> {
        let suite = suite(&config)?;
        let ctx = hpke::setup_base_receiver(suite, enc, sk_r, info).map_err(open_error)?;
        let secret = ctx
            .export(exporter_context, exporter_length)
            .map_err(|_| CryptoError::ExporterError)?;
        Ok(secret.to_vec().into())
    }

    fn derive_hpke_keypair(
        &self,
        config: HpkeConfig,
        ikm: &[u8],
    ) -> Result<HpkeKeyPair, CryptoError> {
        let suite = suite(&config)?;
        let kp = hpke::derive_key_pair(suite.kem, ikm, self.config.derive_profile)
            .map_err(|_| CryptoError::CryptoLibraryError)?;
        Ok(HpkeKeyPair {
            private: kp.private.to_vec().into(),
            public: kp.public,
        })
    }
}

impl OpenMlsRand for PqCrypto {
    type Error = RandError;

    fn random_array<const N: usize>(&self) -> Result<[u8; N], Self::Error> {
        let mut out = [0u8; N];
        self.rand.fill(&mut out)?;
        Ok(out)
    }

    fn random_vec(&self, len: usize) -> Result<Vec<u8>, Self::Error> {
        let mut out = vec![0u8; len];
        self.rand.fill(&mut out)?;
        Ok(out)
    }
}

impl PqCrypto {
    /// The provider's randomness as a `rand_core` RNG (the operating system's, per
    /// request, unless this is a simulation's seeded provider).
    pub fn rng(&self) -> ProviderRng<'_> {
        ProviderRng(&self.rand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One DeriveKeyPair default for the project, `pqmls-pq`'s, and it is the profile of
    /// the OpenMLS 0.9 providers (DESIGN.md item 6).
    #[test]
    fn one_derive_profile_default() {
        assert_eq!(DeriveProfile::default(), DeriveProfile::Plain);
        assert_eq!(
            CryptoConfig::default().derive_profile,
            DeriveProfile::default()
        );
    }
}
