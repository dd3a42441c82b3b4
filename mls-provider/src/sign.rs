//! Signatures for every scheme of the OpenMLS cipher suites, and [`SignatureKeyPair`], a
//! seed-based signing key that implements OpenMLS's `Signer`.
//!
//! | scheme | crate | private key (seed) | public key | signature |
//! |---|---|---|---|---|
//! | Ed25519 (0x0807) | `pqmls-pq` (strict verification) | 32-byte seed (RFC 8032) | 32 B | 64 B |
//! | Ed448 (0x0808) | RustCrypto `ed448-goldilocks` | 57-byte seed (RFC 8032) | 57 B | 114 B |
//! | ECDSA P-256/384/521 + SHA-256/384/512 | RustCrypto `p256`/`p384`/`p521` | scalar, 32/48/66 B | uncompressed SEC1 | DER (as TLS 1.3 and OpenMLS) |
//! | ML-DSA-44/65/87 (0x0904-0x0906) | `pqmls-pq` (libcrux) | 32-byte seed xi (FIPS 204) | 1312/1952/2592 B | 2420/3309/4627 B |
//!
//! ECDSA signs with RFC 6979 nonces on P-256 and P-384; `p521` 0.13 offers only random
//! nonces (from the OS) for P-521. ML-DSA signs hedged (FIPS 204 section 3.4,
//! fresh randomness from the OS) with the empty context string, as the OpenMLS providers
//! do, so that their signatures and ours verify alike.

use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::storage::{self, CURRENT_VERSION, StorageProvider};
use openmls_traits::types::{CryptoError, SignatureScheme};
use pqmls_pq::rand_core::TryCryptoRng;
use pqmls_pq::{Ed25519, MlDsa44, MlDsa65, MlDsa87, SignatureScheme as _};
use zeroize::Zeroizing;

/// A parsed signing key of any supported scheme.
enum Key {
    Ed25519(Box<<Ed25519 as pqmls_pq::SignatureScheme>::SigningKey>),
    Ed448(Box<ed448_goldilocks::SigningKey>),
    P256(Box<p256::ecdsa::SigningKey>),
    P384(Box<p384::ecdsa::SigningKey>),
    P521(Box<p521::ecdsa::SigningKey>),
    MlDsa44(Box<<MlDsa44 as pqmls_pq::SignatureScheme>::SigningKey>),
    MlDsa65(Box<<MlDsa65 as pqmls_pq::SignatureScheme>::SigningKey>),
    MlDsa87(Box<<MlDsa87 as pqmls_pq::SignatureScheme>::SigningKey>),
}

/// The private key length (seed or scalar) of `scheme`.
pub(crate) const fn private_len(scheme: SignatureScheme) -> usize {
    match scheme {
        SignatureScheme::ED25519 => 32,
        SignatureScheme::ED448 => 57,
        SignatureScheme::ECDSA_SECP256R1_SHA256 => 32,
        SignatureScheme::ECDSA_SECP384R1_SHA384 => 48,
        SignatureScheme::ECDSA_SECP521R1_SHA512 => 66,
        SignatureScheme::MLDSA44 | SignatureScheme::MLDSA65 | SignatureScheme::MLDSA87 => 32,
    }
}

impl Key {
    fn from_private(scheme: SignatureScheme, sk: &[u8]) -> Result<Self, CryptoError> {
        if sk.len() != private_len(scheme) {
            return Err(CryptoError::InvalidLength);
        }
        let bad = |_| CryptoError::CryptoLibraryError;
        Ok(match scheme {
            SignatureScheme::ED25519 => {
                Key::Ed25519(Box::new(Ed25519::signing_key_from_seed(sk).map_err(bad)?))
            }
            SignatureScheme::ED448 => Key::Ed448(Box::new(
                ed448_goldilocks::SigningKey::try_from(sk)
                    .map_err(|_| CryptoError::CryptoLibraryError)?,
            )),
            SignatureScheme::ECDSA_SECP256R1_SHA256 => Key::P256(Box::new(
                p256::ecdsa::SigningKey::from_slice(sk)
                    .map_err(|_| CryptoError::CryptoLibraryError)?,
            )),
            SignatureScheme::ECDSA_SECP384R1_SHA384 => Key::P384(Box::new(
                p384::ecdsa::SigningKey::from_slice(sk)
                    .map_err(|_| CryptoError::CryptoLibraryError)?,
            )),
            SignatureScheme::ECDSA_SECP521R1_SHA512 => Key::P521(Box::new(
                p521::ecdsa::SigningKey::from_slice(sk)
                    .map_err(|_| CryptoError::CryptoLibraryError)?,
            )),
            SignatureScheme::MLDSA44 => {
                Key::MlDsa44(Box::new(MlDsa44::signing_key_from_seed(sk).map_err(bad)?))
            }
            SignatureScheme::MLDSA65 => {
                Key::MlDsa65(Box::new(MlDsa65::signing_key_from_seed(sk).map_err(bad)?))
            }
            SignatureScheme::MLDSA87 => {
                Key::MlDsa87(Box::new(MlDsa87::signing_key_from_seed(sk).map_err(bad)?))
            }
        })
    }

    fn public(&self) -> Vec<u8> {
        match self {
            Key::Ed25519(k) => Ed25519::verifying_key(k).as_ref().to_vec(),
            Key::Ed448(k) => k.verifying_key().to_bytes().to_vec(),
            Key::P256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Key::P384(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Key::P521(k) => {
                let vk = p521::ecdsa::VerifyingKey::from(&**k);
                vk.to_encoded_point(false).as_bytes().to_vec()
            }
            Key::MlDsa44(k) => MlDsa44::verifying_key(k).as_ref().to_vec(),
            Key::MlDsa65(k) => MlDsa65::verifying_key(k).as_ref().to_vec(),
            Key::MlDsa87(k) => MlDsa87::verifying_key(k).as_ref().to_vec(),
        }
    }

    /// Signs with the OS generator for the randomised schemes (ML-DSA hedging, P-521 nonces).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.sign_with(msg, &mut pqmls_pq::OsRng)
    }

    /// Signs, drawing randomness from `rng`; a failing `rng` is an error, never a panic.
    fn sign_with<R: TryCryptoRng + ?Sized>(
        &self,
        msg: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, CryptoError> {
        use p256::ecdsa::signature::Signer as _;
        let fail = |_| CryptoError::CryptoLibraryError;
        Ok(match self {
            Key::Ed25519(k) => Ed25519::sign_deterministic(k, msg, &[])
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            Key::Ed448(k) => k.sign_raw(msg).to_bytes().to_vec(),
            Key::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Key::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Key::P521(k) => {
                // p521 0.13 has no RFC 6979 nonces, and its own `Signer` draws the nonce
                // from the OS through an infallible rand_core 0.6 call that panics if the
                // OS generator fails. We draw a 32-byte seed fallibly instead and give the
                // signer a ChaCha20 keystream from it (zeroized on drop): an RNG failure
                // is an error, and the nonce is as random as before.
                use p521::ecdsa::signature::RandomizedSigner as _;
                let mut nonce_rng = NonceRng::from_rng(rng)?;
                let s: p521::ecdsa::Signature = k
                    .try_sign_with_rng(&mut nonce_rng, msg)
                    .map_err(|_| CryptoError::SigningError)?;
                s.to_der().as_bytes().to_vec()
            }
            Key::MlDsa44(k) => MlDsa44::sign(k, msg, &[], rng)
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            Key::MlDsa65(k) => MlDsa65::sign(k, msg, &[], rng)
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            Key::MlDsa87(k) => MlDsa87::sign(k, msg, &[], rng)
                .map_err(fail)?
                .as_ref()
                .to_vec(),
        })
    }
}

/// The rand_core 0.6 generator p521 0.13's signer takes: a ChaCha20 keystream (key = 32
/// fresh bytes drawn fallibly from the caller's generator, zero nonce), used for one
/// signature. The cipher state zeroizes on drop (chacha20's `zeroize` feature).
struct NonceRng(chacha20::ChaCha20);

impl NonceRng {
    fn from_rng<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self, CryptoError> {
        use chacha20::cipher::KeyIvInit as _;
        let mut key = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(key.as_mut_slice())
            .map_err(|_| CryptoError::InsufficientRandomness)?;
        Ok(NonceRng(chacha20::ChaCha20::new(
            (&*key).into(),
            &[0u8; 12].into(),
        )))
    }
}

impl p521::elliptic_curve::rand_core::RngCore for NonceRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        use chacha20::cipher::StreamCipher as _;
        dest.fill(0);
        // 2^38 bytes of keystream per key; one signature draws a few hundred bytes.
        self.0.apply_keystream(dest);
    }

    fn try_fill_bytes(
        &mut self,
        dest: &mut [u8],
    ) -> Result<(), p521::elliptic_curve::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl p521::elliptic_curve::rand_core::CryptoRng for NonceRng {}

/// Generates a private key for `scheme` and returns `(private, public)`.
pub(crate) fn generate<R: TryCryptoRng + ?Sized>(
    scheme: SignatureScheme,
    rng: &mut R,
) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CryptoError> {
    let mut sk = Zeroizing::new(vec![0u8; private_len(scheme)]);
    // ECDSA scalars must lie in [1, n): redraw the rare out-of-range value (for P-521 the
    // top 7 bits of the 66-byte encoding are cleared first, so a redraw is rare there too).
    for _ in 0..64 {
        rng.try_fill_bytes(&mut sk)
            .map_err(|_| CryptoError::InsufficientRandomness)?;
        if scheme == SignatureScheme::ECDSA_SECP521R1_SHA512 {
            sk[0] &= 0x01;
        }
        if let Ok(key) = Key::from_private(scheme, &sk) {
            return Ok((sk, key.public()));
        }
    }
    Err(CryptoError::InsufficientRandomness)
}

/// Signs `msg` with the private key `sk` (see the module table for its format).
pub(crate) fn sign(scheme: SignatureScheme, msg: &[u8], sk: &[u8]) -> Result<Vec<u8>, CryptoError> {
    Key::from_private(scheme, sk)?.sign(msg)
}

/// Verifies `sig` on `msg` under the public key `pk`.
pub(crate) fn verify(
    scheme: SignatureScheme,
    msg: &[u8],
    pk: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    use p256::ecdsa::signature::Verifier as _;
    fn invalid<E>(_: E) -> CryptoError {
        CryptoError::InvalidSignature
    }
    match scheme {
        SignatureScheme::ED25519 => pq_verify::<Ed25519>(msg, pk, sig),
        SignatureScheme::MLDSA44 => pq_verify::<MlDsa44>(msg, pk, sig),
        SignatureScheme::MLDSA65 => pq_verify::<MlDsa65>(msg, pk, sig),
        SignatureScheme::MLDSA87 => pq_verify::<MlDsa87>(msg, pk, sig),
        SignatureScheme::ED448 => {
            let pk: &[u8; 57] = pk.try_into().map_err(|_| CryptoError::CryptoLibraryError)?;
            let vk = ed448_goldilocks::VerifyingKey::from_bytes(pk)
                .map_err(|_| CryptoError::CryptoLibraryError)?;
            let sig = ed448_goldilocks::Signature::try_from(sig).map_err(invalid)?;
            vk.verify_raw(&sig, msg).map_err(invalid)
        }
        SignatureScheme::ECDSA_SECP256R1_SHA256 => {
            let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(uncompressed(pk, 65)?)
                .map_err(|_| CryptoError::CryptoLibraryError)?;
            let sig = p256::ecdsa::Signature::from_der(sig).map_err(invalid)?;
            vk.verify(msg, &sig).map_err(invalid)
        }
        SignatureScheme::ECDSA_SECP384R1_SHA384 => {
            let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(uncompressed(pk, 97)?)
                .map_err(|_| CryptoError::CryptoLibraryError)?;
            let sig = p384::ecdsa::Signature::from_der(sig).map_err(invalid)?;
            vk.verify(msg, &sig).map_err(invalid)
        }
        SignatureScheme::ECDSA_SECP521R1_SHA512 => {
            let vk = p521::ecdsa::VerifyingKey::from_sec1_bytes(uncompressed(pk, 133)?)
                .map_err(|_| CryptoError::CryptoLibraryError)?;
            let sig = p521::ecdsa::Signature::from_der(sig).map_err(invalid)?;
            vk.verify(msg, &sig).map_err(invalid)
        }
    }
}

/// An ECDSA public key in the only encoding MLS uses: uncompressed SEC1,
/// `0x04 || x || y`, `len` bytes (RFC 9420 section 5.1.1: an encoded
/// `UncompressedPointRepresentation` of RFC 8446). Compressed (0x02, 0x03) and other
/// encodings are refused.
fn uncompressed(pk: &[u8], len: usize) -> Result<&[u8], CryptoError> {
    if pk.len() == len && pk.first() == Some(&0x04) {
        Ok(pk)
    } else {
        Err(CryptoError::CryptoLibraryError)
    }
}

/// Parsed Ed25519 verifying keys, so that a member's key is decompressed once, not once per
/// message (a point decompression is a field square root, about a fifth of a verification).
/// Public data only; bounded, cleared when full.
#[derive(Default)]
pub(crate) struct VerifyingKeyCache {
    ed25519: std::sync::Mutex<
        std::collections::HashMap<[u8; 32], <Ed25519 as pqmls_pq::SignatureScheme>::VerifyingKey>,
    >,
}

/// Most Ed25519 keys the cache keeps (32 + ~100 bytes each).
const VK_CACHE_CAPACITY: usize = 4096;

impl VerifyingKeyCache {
    /// [`verify`], with Ed25519 keys parsed once.
    pub(crate) fn verify(
        &self,
        scheme: SignatureScheme,
        msg: &[u8],
        pk: &[u8],
        sig: &[u8],
    ) -> Result<(), CryptoError> {
        if scheme != SignatureScheme::ED25519 {
            return verify(scheme, msg, pk, sig);
        }
        let key: [u8; 32] = pk.try_into().map_err(|_| CryptoError::CryptoLibraryError)?;
        let cached = {
            let map = self
                .ed25519
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.get(&key).cloned()
        };
        let vk = match cached {
            Some(vk) => vk,
            None => {
                let vk = Ed25519::verifying_key_from_bytes(pk)
                    .map_err(|_| CryptoError::CryptoLibraryError)?;
                let mut map = self
                    .ed25519
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if map.len() >= VK_CACHE_CAPACITY {
                    map.clear();
                }
                map.insert(key, vk.clone());
                vk
            }
        };
        let sig = Ed25519::signature_from_bytes(sig).map_err(|_| CryptoError::InvalidSignature)?;
        Ed25519::verify(&vk, msg, &[], &sig).map_err(|_| CryptoError::InvalidSignature)
    }
}

fn pq_verify<S: pqmls_pq::SignatureScheme>(
    msg: &[u8],
    pk: &[u8],
    sig: &[u8],
) -> Result<(), CryptoError> {
    let vk = S::verifying_key_from_bytes(pk).map_err(|_| CryptoError::CryptoLibraryError)?;
    let sig = S::signature_from_bytes(sig).map_err(|_| CryptoError::InvalidSignature)?;
    S::verify(&vk, msg, &[], &sig).map_err(|_| CryptoError::InvalidSignature)
}

/// A signing key pair for MLS: the scheme, the private key (seed) and the public key, with
/// the parsed key kept ready for signing. Zeroized on drop; `Debug` hides the seed.
///
/// It serializes (serde, and [`Self::to_bytes`]) as the scheme and the seed only; the public
/// key is recomputed on load. It can be kept in the provider's storage with [`Self::store`]
/// and [`Self::read`], keyed by its public key as OpenMLS's own key pairs are.
pub struct SignatureKeyPair {
    scheme: SignatureScheme,
    private: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
    key: Key,
    /// The randomness of hedged ML-DSA and P-521 nonces: the operating system's, unless
    /// a simulation made it deterministic.
    sign_rand: crate::rng::Source,
}

impl core::fmt::Debug for SignatureKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SignatureKeyPair")
            .field("scheme", &self.scheme)
            .field("private", &"<redacted>")
            .field("public_len", &self.public.len())
            .finish()
    }
}

impl SignatureKeyPair {
    /// Generates a key pair with randomness from the operating system.
    ///
    /// # Errors
    /// [`CryptoError::InsufficientRandomness`] if the OS generator fails.
    pub fn generate(scheme: SignatureScheme) -> Result<Self, CryptoError> {
        Self::generate_with_rng(scheme, &mut pqmls_pq::OsRng)
    }

    /// Generates a key pair with randomness from `rng` (for example a provider's,
    /// [`crate::PqCrypto::rng`]).
    ///
    /// # Errors
    /// [`CryptoError::InsufficientRandomness`] if `rng` fails.
    pub fn generate_with_rng<R: TryCryptoRng + ?Sized>(
        scheme: SignatureScheme,
        rng: &mut R,
    ) -> Result<Self, CryptoError> {
        let (private, _) = generate(scheme, rng)?;
        Self::from_seed(scheme, &private)
    }

    /// **Insecure: simulations only.** This key pair, signing with the ChaCha20 keystream
    /// of `seed` wherever a scheme draws randomness (hedged ML-DSA, P-521 nonces) instead
    /// of the operating system's generator, so that a simulated run replays exactly.
    /// Ed25519, Ed448 and ECDSA P-256/P-384 sign deterministically anyway. A known seed
    /// gives away P-521 nonces, and with them the key. Compiled only with the feature
    /// `sim-rng` (DESIGN.md item 16).
    #[cfg(feature = "sim-rng")]
    pub fn insecure_deterministic_signing_for_simulation(mut self, seed: [u8; 32]) -> Self {
        self.sign_rand = crate::rng::Source::seeded(&seed);
        self
    }

    /// The key pair of a seed (private key) of `scheme`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] for a seed of the wrong length;
    /// [`CryptoError::CryptoLibraryError`] for an invalid ECDSA scalar.
    pub fn from_seed(scheme: SignatureScheme, seed: &[u8]) -> Result<Self, CryptoError> {
        let key = Key::from_private(scheme, seed)?;
        Ok(SignatureKeyPair {
            scheme,
            private: Zeroizing::new(seed.to_vec()),
            public: key.public(),
            key,
            sign_rand: crate::rng::Source::Os,
        })
    }

    /// The signature scheme.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// The public key, as MLS carries it in leaf nodes.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The seed (private key). Handle with care.
    pub fn seed(&self) -> &[u8] {
        &self.private
    }

    /// `scheme (2 bytes, big endian) || seed`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(2 + self.private.len()));
        out.extend_from_slice(&(self.scheme as u16).to_be_bytes());
        out.extend_from_slice(&self.private);
        out
    }

    /// Parses [`Self::to_bytes`].
    ///
    /// # Errors
    /// [`CryptoError::UnsupportedSignatureScheme`] for an unknown scheme, otherwise as
    /// [`Self::from_seed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (id, seed) = bytes
            .split_at_checked(2)
            .ok_or(CryptoError::InvalidLength)?;
        let scheme = SignatureScheme::try_from(u16::from_be_bytes([id[0], id[1]]))
            .map_err(|_| CryptoError::UnsupportedSignatureScheme)?;
        Self::from_seed(scheme, seed)
    }

    /// Stores the key pair in `storage` under its public key.
    ///
    /// # Errors
    /// The storage's error.
    pub fn store<S: StorageProvider<CURRENT_VERSION>>(&self, storage: &S) -> Result<(), S::Error> {
        storage.write_signature_key_pair(&StorageId(self.public.clone()), self)
    }

    /// Reads the key pair with public key `public` from `storage`.
    ///
    /// # Errors
    /// The storage's error; `Ok(None)` if there is no such key pair.
    pub fn read<S: StorageProvider<CURRENT_VERSION>>(
        storage: &S,
        public: &[u8],
    ) -> Result<Option<Self>, S::Error> {
        storage.signature_key_pair(&StorageId(public.to_vec()))
    }

    /// Deletes the key pair with public key `public` from `storage`.
    ///
    /// # Errors
    /// The storage's error.
    pub fn delete<S: StorageProvider<CURRENT_VERSION>>(
        storage: &S,
        public: &[u8],
    ) -> Result<(), S::Error> {
        storage.delete_signature_key_pair::<StorageId>(&StorageId(public.to_vec()))
    }
}

impl Signer for SignatureKeyPair {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.key
            .sign_with(payload, &mut crate::rng::ProviderRng(&self.sign_rand))
            .map_err(SignerError::CryptoError)
    }

    fn signature_scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

impl serde::Serialize for SignatureKeyPair {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for SignatureKeyPair {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'a> serde::de::Visitor<'a> for V {
            type Value = SignatureKeyPair;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("a signature scheme and seed")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                SignatureKeyPair::from_bytes(v).map_err(|e| E::custom(format!("{e:?}")))
            }
            fn visit_seq<A: serde::de::SeqAccess<'a>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                // Self-describing formats such as JSON give bytes as a sequence.
                let mut bytes = Zeroizing::new(Vec::new());
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                self.visit_bytes(&bytes)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// The storage key of a [`SignatureKeyPair`]: its public key.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StorageId(Vec<u8>);

impl storage::Key<CURRENT_VERSION> for StorageId {}
impl storage::traits::SignaturePublicKey<CURRENT_VERSION> for StorageId {}
impl storage::Entity<CURRENT_VERSION> for SignatureKeyPair {}
impl storage::traits::SignatureKeyPair<CURRENT_VERSION> for SignatureKeyPair {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generator that always fails, like an OS generator that cannot be read.
    struct FailingRng;

    impl pqmls_pq::rand_core::TryRng for FailingRng {
        type Error = crate::RandError;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Err(crate::RandError)
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Err(crate::RandError)
        }
        fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
            Err(crate::RandError)
        }
    }

    impl TryCryptoRng for FailingRng {}

    /// A failing generator makes the randomised signers (P-521's nonce, ML-DSA's hedge)
    /// return an error; P-521 used to panic inside p521's own OS draw.
    #[test]
    fn failing_rng_is_an_error_not_a_panic() {
        for scheme in [
            SignatureScheme::ECDSA_SECP521R1_SHA512,
            SignatureScheme::MLDSA44,
            SignatureScheme::MLDSA65,
            SignatureScheme::MLDSA87,
        ] {
            let kp = SignatureKeyPair::generate(scheme).unwrap();
            assert!(
                kp.key.sign_with(b"m", &mut FailingRng).is_err(),
                "{scheme:?}"
            );
            // With a working generator the same path signs and verifies.
            let sig = kp.key.sign_with(b"m", &mut pqmls_pq::OsRng).unwrap();
            verify(scheme, b"m", kp.public(), &sig).unwrap();
        }
    }

    /// RFC 9420 carries ECDSA keys uncompressed: the compressed form of a valid key is
    /// refused, although it names the same point.
    #[test]
    fn ecdsa_compressed_public_keys_are_refused() {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let check = |scheme, compressed: Vec<u8>, kp: &SignatureKeyPair| {
            let sig = Signer::sign(kp, b"m").unwrap();
            verify(scheme, b"m", kp.public(), &sig).unwrap();
            assert!(matches!(compressed[0], 0x02 | 0x03));
            assert!(
                verify(scheme, b"m", &compressed, &sig).is_err(),
                "{scheme:?}"
            );
        };
        let kp = SignatureKeyPair::generate(SignatureScheme::ECDSA_SECP256R1_SHA256).unwrap();
        let pk = p256::PublicKey::from_sec1_bytes(kp.public()).unwrap();
        check(
            SignatureScheme::ECDSA_SECP256R1_SHA256,
            pk.to_encoded_point(true).as_bytes().to_vec(),
            &kp,
        );
        let kp = SignatureKeyPair::generate(SignatureScheme::ECDSA_SECP384R1_SHA384).unwrap();
        let pk = p384::PublicKey::from_sec1_bytes(kp.public()).unwrap();
        check(
            SignatureScheme::ECDSA_SECP384R1_SHA384,
            pk.to_encoded_point(true).as_bytes().to_vec(),
            &kp,
        );
        let kp = SignatureKeyPair::generate(SignatureScheme::ECDSA_SECP521R1_SHA512).unwrap();
        let pk = p521::PublicKey::from_sec1_bytes(kp.public()).unwrap();
        check(
            SignatureScheme::ECDSA_SECP521R1_SHA512,
            pk.to_encoded_point(true).as_bytes().to_vec(),
            &kp,
        );
    }

    const ALL: [SignatureScheme; 8] = [
        SignatureScheme::ED25519,
        SignatureScheme::ED448,
        SignatureScheme::ECDSA_SECP256R1_SHA256,
        SignatureScheme::ECDSA_SECP384R1_SHA384,
        SignatureScheme::ECDSA_SECP521R1_SHA512,
        SignatureScheme::MLDSA44,
        SignatureScheme::MLDSA65,
        SignatureScheme::MLDSA87,
    ];

    #[test]
    fn sign_verify_and_tamper_every_scheme() {
        for scheme in ALL {
            let kp = SignatureKeyPair::generate(scheme).unwrap();
            let sig = Signer::sign(&kp, b"payload").unwrap();
            verify(scheme, b"payload", kp.public(), &sig).unwrap();
            assert_eq!(
                verify(scheme, b"payloaD", kp.public(), &sig),
                Err(CryptoError::InvalidSignature),
                "{scheme:?}"
            );
            let mut bad = sig.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(
                verify(scheme, b"payload", kp.public(), &bad).is_err(),
                "{scheme:?}"
            );
            assert!(
                verify(scheme, b"payload", &kp.public()[1..], &sig).is_err(),
                "{scheme:?}"
            );
            assert!(
                verify(scheme, b"payload", kp.public(), &sig[..sig.len() - 1]).is_err(),
                "{scheme:?}"
            );
            // The stateless path agrees with the key pair.
            let sig2 = sign(scheme, b"payload", kp.seed()).unwrap();
            verify(scheme, b"payload", kp.public(), &sig2).unwrap();
            // Round trip through bytes keeps the key.
            let back = SignatureKeyPair::from_bytes(&kp.to_bytes()).unwrap();
            assert_eq!(back.public(), kp.public());
            assert_eq!(back.scheme(), scheme);
        }
    }

    #[test]
    fn verifying_key_cache_caches_keys_not_verdicts() {
        let cache = VerifyingKeyCache::default();
        let kp = SignatureKeyPair::generate(SignatureScheme::ED25519).unwrap();
        let sig = Signer::sign(&kp, b"m").unwrap();
        cache
            .verify(SignatureScheme::ED25519, b"m", kp.public(), &sig)
            .unwrap();
        let mut bad = sig.clone();
        bad[3] ^= 4;
        assert!(
            cache
                .verify(SignatureScheme::ED25519, b"m", kp.public(), &bad)
                .is_err()
        );
        assert!(
            cache
                .verify(SignatureScheme::ED25519, b"n", kp.public(), &sig)
                .is_err()
        );
        cache
            .verify(SignatureScheme::ED25519, b"m", kp.public(), &sig)
            .unwrap();
        assert!(
            cache
                .verify(SignatureScheme::ED25519, b"m", &kp.public()[1..], &sig)
                .is_err()
        );
        // Other schemes pass straight through.
        let ml = SignatureKeyPair::generate(SignatureScheme::MLDSA44).unwrap();
        let s = Signer::sign(&ml, b"m").unwrap();
        cache
            .verify(SignatureScheme::MLDSA44, b"m", ml.public(), &s)
            .unwrap();
        assert!(
            cache
                .verify(SignatureScheme::MLDSA44, b"x", ml.public(), &s)
                .is_err()
        );
    }

    #[test]
    fn bad_seeds_are_errors() {
        for scheme in ALL {
            assert_eq!(
                SignatureKeyPair::from_seed(scheme, &[1u8; 5]).unwrap_err(),
                CryptoError::InvalidLength
            );
        }
        // Zero and the group order are not valid ECDSA scalars.
        assert!(
            SignatureKeyPair::from_seed(SignatureScheme::ECDSA_SECP256R1_SHA256, &[0u8; 32])
                .is_err()
        );
        assert!(
            SignatureKeyPair::from_seed(SignatureScheme::ECDSA_SECP256R1_SHA256, &[0xffu8; 32])
                .is_err()
        );
        assert!(SignatureKeyPair::from_bytes(&[0xff, 0xff, 1, 2]).is_err());
        assert!(SignatureKeyPair::from_bytes(&[0x08]).is_err());
    }

    #[test]
    fn debug_hides_the_seed() {
        let kp = SignatureKeyPair::from_seed(SignatureScheme::ED25519, &[0xab; 32]).unwrap();
        let s = format!("{kp:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("abab"),
            "{s}"
        );
    }
}
