//! HPKE (RFC 9180), base mode: key encapsulation, the key schedule, sealing and opening,
//! and the secret exporter, for every KEM the OpenMLS cipher suites use.
//!
//! # Why an HPKE of our own and not hpke-rs
//! hpke-rs 0.8's backend trait (`HpkeCrypto`) has only associated functions that take keys
//! as byte strings and return `Vec`s. That rules out what makes the post-quantum suites
//! fast here: (1) encapsulating to a *prepared* recipient key (the `pq` crate's
//! precomputed ML-KEM matrix and X25519 table, kept in [`crate::cache`]) needs a key
//! object to outlive one call; (2) the DeriveKeyPair profile (DESIGN.md item 6) is fixed
//! inside hpke-rs per KEM, while this provider must offer both. Base mode is small
//! (sections 4, 5.1, 5.2, 5.3 of RFC 9180), and the RFC 9180 appendix vectors and the
//! hpke-pq vectors pin it down (`tests/hpke_rfc9180.rs`, `tests/hpke_pq.rs`).
//!
//! # KEMs
//! - DHKEM (RFC 9180 section 4.1) over P-256, P-384, P-521 (RustCrypto `p256`, `p384`,
//!   `p521`), X25519 (`pqmls-pq`) and X448 (RustCrypto `x448`). Private keys are the
//!   `Nsk`-byte scalars of section 7.1.2; public keys are uncompressed SEC1 points or the
//!   RFC 7748 u-coordinate.
//! - ML-KEM-768 (0x0041), ML-KEM-1024 (0x0042) and X-Wing (0x647a) from `pqmls-pq`, as in
//!   draft-ietf-hpke-pq: the KEM's shared secret goes into the key schedule unchanged.
//!   Private keys are the seeds (64 bytes `d || z` for ML-KEM, 32 for X-Wing).
//!
//! OpenMLS names X-Wing `XWingKemDraft6` with code point 0x004D; on the wire of HPKE (the
//! `suite_id` of the key schedule) it is 0x647a, as in hpke-pq and as the OpenMLS
//! providers (through hpke-rs) use it.

use pqmls_pq::kem::{x25519, xwing};
use pqmls_pq::rand_core::TryCryptoRng;
use pqmls_pq::{Kem as _, MlKem768, MlKem1024, XWing};
use zeroize::Zeroizing;

pub use crate::aead::AeadAlg;
use crate::kdf::HashAlg;
pub use pqmls_pq::DeriveProfile;

/// `"HPKE-v1"`, the version label of HPKE's labelled functions (RFC 9180 section 4).
const VERSION_LABEL: &[u8] = b"HPKE-v1";
/// Base mode (RFC 9180 section 5).
const MODE_BASE: u8 = 0x00;

/// Why an HPKE operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpkeError {
    /// A key, an encapsulation or an AEAD input has the wrong length.
    #[error("invalid length")]
    InvalidLength,
    /// A public key is not a valid encoding (not on the curve, identity, ML-KEM modulus check).
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A private key is not a valid encoding (zero or out-of-range scalar).
    #[error("invalid private key")]
    InvalidPrivateKey,
    /// The Diffie-Hellman result is all zero, or a hybrid KEM's X25519 part has small order.
    #[error("non-contributory key exchange")]
    NonContributory,
    /// The AEAD tag did not verify.
    #[error("decryption failed")]
    Decryption,
    /// The export-only AEAD cannot seal or open.
    #[error("export-only context cannot seal or open")]
    ExportOnly,
    /// The sequence number would overflow (RFC 9180 section 5.2).
    #[error("message limit reached")]
    MessageLimit,
    /// An exporter or key-schedule output is longer than the KDF can produce.
    #[error("output too long")]
    OutputTooLong,
    /// DeriveKeyPair found no valid P-curve scalar in 256 candidates (RFC 9180 7.1.3).
    #[error("key derivation failed")]
    DeriveKeyPair,
    /// The random number generator failed.
    #[error("randomness unavailable")]
    Randomness,
}

impl From<crate::kdf::OutputTooLong> for HpkeError {
    fn from(_: crate::kdf::OutputTooLong) -> Self {
        HpkeError::OutputTooLong
    }
}

impl From<crate::aead::AeadError> for HpkeError {
    fn from(e: crate::aead::AeadError) -> Self {
        match e {
            crate::aead::AeadError::InvalidLength => HpkeError::InvalidLength,
            crate::aead::AeadError::Decryption => HpkeError::Decryption,
        }
    }
}

impl From<pqmls_pq::Error> for HpkeError {
    fn from(e: pqmls_pq::Error) -> Self {
        match e {
            pqmls_pq::Error::InvalidLength { .. } => HpkeError::InvalidLength,
            pqmls_pq::Error::InvalidEncapsulationKey => HpkeError::InvalidPublicKey,
            pqmls_pq::Error::NonContributory => HpkeError::NonContributory,
            pqmls_pq::Error::Randomness => HpkeError::Randomness,
            _ => HpkeError::InvalidLength,
        }
    }
}

/// A KEM of HPKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kem {
    /// DHKEM(P-256, HKDF-SHA256), 0x0010.
    DhKemP256,
    /// DHKEM(P-384, HKDF-SHA384), 0x0011.
    DhKemP384,
    /// DHKEM(P-521, HKDF-SHA512), 0x0012.
    DhKemP521,
    /// DHKEM(X25519, HKDF-SHA256), 0x0020.
    DhKemX25519,
    /// DHKEM(X448, HKDF-SHA512), 0x0021.
    DhKemX448,
    /// ML-KEM-768, 0x0041.
    MlKem768,
    /// ML-KEM-1024, 0x0042.
    MlKem1024,
    /// X-Wing (MLKEM768-X25519), 0x647a.
    XWing,
}

impl Kem {
    /// The HPKE KEM identifier.
    pub const fn id(self) -> u16 {
        match self {
            Kem::DhKemP256 => 0x0010,
            Kem::DhKemP384 => 0x0011,
            Kem::DhKemP521 => 0x0012,
            Kem::DhKemX25519 => 0x0020,
            Kem::DhKemX448 => 0x0021,
            Kem::MlKem768 => 0x0041,
            Kem::MlKem1024 => 0x0042,
            Kem::XWing => 0x647a,
        }
    }

    /// The KEM with HPKE identifier `id`, if we have it.
    pub const fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            0x0010 => Kem::DhKemP256,
            0x0011 => Kem::DhKemP384,
            0x0012 => Kem::DhKemP521,
            0x0020 => Kem::DhKemX25519,
            0x0021 => Kem::DhKemX448,
            0x0041 => Kem::MlKem768,
            0x0042 => Kem::MlKem1024,
            0x647a => Kem::XWing,
            _ => return None,
        })
    }

    /// `Npk`: public key length.
    pub const fn public_key_len(self) -> usize {
        match self {
            Kem::DhKemP256 => 65,
            Kem::DhKemP384 => 97,
            Kem::DhKemP521 => 133,
            Kem::DhKemX25519 => 32,
            Kem::DhKemX448 => 56,
            Kem::MlKem768 => MlKem768::EK_LEN,
            Kem::MlKem1024 => MlKem1024::EK_LEN,
            Kem::XWing => XWing::EK_LEN,
        }
    }

    /// `Nenc`: encapsulation length.
    pub const fn enc_len(self) -> usize {
        match self {
            Kem::MlKem768 => MlKem768::CT_LEN,
            Kem::MlKem1024 => MlKem1024::CT_LEN,
            Kem::XWing => XWing::CT_LEN,
            dh => dh.public_key_len(),
        }
    }

    /// `Nsk`: private key length (the seed for the post-quantum KEMs).
    pub const fn private_key_len(self) -> usize {
        match self {
            Kem::DhKemP256 | Kem::DhKemX25519 => 32,
            Kem::DhKemP384 => 48,
            Kem::DhKemP521 => 66,
            Kem::DhKemX448 => 56,
            Kem::MlKem768 | Kem::MlKem1024 => 64,
            Kem::XWing => 32,
        }
    }

    /// The KDF of a DHKEM (its `Nsecret` is this hash's length).
    const fn dh_kdf(self) -> HashAlg {
        match self {
            Kem::DhKemP256 | Kem::DhKemX25519 => HashAlg::Sha256,
            Kem::DhKemP384 => HashAlg::Sha384,
            _ => HashAlg::Sha512,
        }
    }

    /// `"KEM" || I2OSP(kem_id, 2)`, the KEM's own suite id (RFC 9180 section 4.1).
    fn kem_suite_id(self) -> [u8; 5] {
        let id = self.id().to_be_bytes();
        [b'K', b'E', b'M', id[0], id[1]]
    }
}

/// A KDF of HPKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kdf {
    /// HKDF-SHA256, 0x0001.
    HkdfSha256,
    /// HKDF-SHA384, 0x0002.
    HkdfSha384,
    /// HKDF-SHA512, 0x0003.
    HkdfSha512,
}

impl Kdf {
    /// The HPKE KDF identifier.
    pub const fn id(self) -> u16 {
        match self {
            Kdf::HkdfSha256 => 1,
            Kdf::HkdfSha384 => 2,
            Kdf::HkdfSha512 => 3,
        }
    }

    /// The KDF with identifier `id`, if we have it.
    pub const fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            1 => Kdf::HkdfSha256,
            2 => Kdf::HkdfSha384,
            3 => Kdf::HkdfSha512,
            _ => return None,
        })
    }

    const fn hash(self) -> HashAlg {
        match self {
            Kdf::HkdfSha256 => HashAlg::Sha256,
            Kdf::HkdfSha384 => HashAlg::Sha384,
            Kdf::HkdfSha512 => HashAlg::Sha512,
        }
    }
}

/// An AEAD of HPKE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    /// AES-128-GCM, 0x0001.
    Aes128Gcm,
    /// AES-256-GCM, 0x0002.
    Aes256Gcm,
    /// ChaCha20-Poly1305, 0x0003.
    ChaCha20Poly1305,
    /// Export-only, 0xFFFF: the context can export secrets but not seal or open.
    ExportOnly,
}

impl Aead {
    /// The HPKE AEAD identifier.
    pub const fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 1,
            Aead::Aes256Gcm => 2,
            Aead::ChaCha20Poly1305 => 3,
            Aead::ExportOnly => 0xFFFF,
        }
    }

    /// The AEAD with identifier `id`, if we have it.
    pub const fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            1 => Aead::Aes128Gcm,
            2 => Aead::Aes256Gcm,
            3 => Aead::ChaCha20Poly1305,
            0xFFFF => Aead::ExportOnly,
            _ => return None,
        })
    }

    const fn alg(self) -> Option<AeadAlg> {
        match self {
            Aead::Aes128Gcm => Some(AeadAlg::Aes128Gcm),
            Aead::Aes256Gcm => Some(AeadAlg::Aes256Gcm),
            Aead::ChaCha20Poly1305 => Some(AeadAlg::ChaCha20Poly1305),
            Aead::ExportOnly => None,
        }
    }
}

/// An HPKE cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Suite {
    /// The KEM.
    pub kem: Kem,
    /// The KDF of the key schedule.
    pub kdf: Kdf,
    /// The AEAD.
    pub aead: Aead,
}

impl Suite {
    /// `"HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)` (section 5.1).
    fn suite_id(self) -> [u8; 10] {
        let k = self.kem.id().to_be_bytes();
        let f = self.kdf.id().to_be_bytes();
        let a = self.aead.id().to_be_bytes();
        [b'H', b'P', b'K', b'E', k[0], k[1], f[0], f[1], a[0], a[1]]
    }
}

/// `LabeledExtract(salt, label, ikm)` of RFC 9180 section 4.
fn labeled_extract(
    h: HashAlg,
    suite_id: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> Zeroizing<Vec<u8>> {
    h.extract(salt, &[VERSION_LABEL, suite_id, label, ikm])
}

/// `LabeledExpand(prk, label, info, L)` of RFC 9180 section 4.
fn labeled_expand(
    h: HashAlg,
    suite_id: &[u8],
    prk: &[u8],
    label: &[u8],
    info: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    let l = u16::try_from(len)
        .map_err(|_| HpkeError::OutputTooLong)?
        .to_be_bytes();
    Ok(h.expand(prk, &[&l, VERSION_LABEL, suite_id, label, info], len)?)
}

/// An HPKE key pair: the serialized private key (RFC 9180 section 7.1.2; the seed for the
/// post-quantum KEMs) and public key.
pub struct KeyPair {
    /// The private key, zeroized on drop.
    pub private: Zeroizing<Vec<u8>>,
    /// The public key.
    pub public: Vec<u8>,
}

impl core::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyPair")
            .field("private", &"<redacted>")
            .field("public_len", &self.public.len())
            .finish()
    }
}

/// DeriveKeyPair (RFC 9180 section 7.1.3 for the DHKEMs; for the post-quantum KEMs the
/// `pq` crate's derivation in the chosen `profile`, DESIGN.md item 6).
///
/// # Errors
/// [`HpkeError::DeriveKeyPair`] in the (probability below 2^-200) case that no P-curve
/// candidate is valid.
pub fn derive_key_pair(kem: Kem, ikm: &[u8], profile: DeriveProfile) -> Result<KeyPair, HpkeError> {
    match kem {
        Kem::DhKemP256 => derive_ec::<p256::NistP256>(kem, ikm, 0xff),
        Kem::DhKemP384 => derive_ec::<p384::NistP384>(kem, ikm, 0xff),
        Kem::DhKemP521 => derive_ec::<p521::NistP521>(kem, ikm, 0x01),
        Kem::DhKemX25519 | Kem::DhKemX448 => {
            let sid = kem.kem_suite_id();
            let h = kem.dh_kdf();
            let prk = labeled_extract(h, &sid, b"", b"dkp_prk", ikm);
            let sk = labeled_expand(h, &sid, &prk, b"sk", b"", kem.private_key_len())?;
            let public = dh_public_key(kem, &sk)?;
            Ok(KeyPair {
                private: sk,
                public,
            })
        }
        Kem::MlKem768 => Ok(pq_pair::<MlKem768>(&MlKem768::derive_key_pair(
            ikm, profile,
        ))),
        Kem::MlKem1024 => Ok(pq_pair::<MlKem1024>(&MlKem1024::derive_key_pair(
            ikm, profile,
        ))),
        Kem::XWing => Ok(pq_pair::<XWing>(&XWing::derive_key_pair(ikm, profile))),
    }
}

/// GenerateKeyPair: DeriveKeyPair on fresh random input for the DHKEMs, the `pq` crate's
/// generation for the others.
///
/// # Errors
/// [`HpkeError::Randomness`] if the generator fails.
pub fn generate_key_pair<R: TryCryptoRng + ?Sized>(
    kem: Kem,
    rng: &mut R,
) -> Result<KeyPair, HpkeError> {
    match kem {
        Kem::MlKem768 => Ok(pq_pair::<MlKem768>(&MlKem768::generate(rng)?)),
        Kem::MlKem1024 => Ok(pq_pair::<MlKem1024>(&MlKem1024::generate(rng)?)),
        Kem::XWing => Ok(pq_pair::<XWing>(&XWing::generate(rng)?)),
        _ => {
            let mut ikm = Zeroizing::new(vec![0u8; kem.private_key_len()]);
            rng.try_fill_bytes(&mut ikm)
                .map_err(|_| HpkeError::Randomness)?;
            derive_key_pair(kem, &ikm, DeriveProfile::default())
        }
    }
}

fn pq_pair<K: pqmls_pq::Kem>(dk: &K::DecapsulationKey) -> KeyPair {
    KeyPair {
        private: Zeroizing::new(K::seed(dk).to_vec()),
        public: K::encapsulation_key(dk).as_ref().to_vec(),
    }
}

/// RFC 9180 section 7.1.3 for the NIST curves: rejection sampling with a bit mask on the
/// first byte.
fn derive_ec<C>(kem: Kem, ikm: &[u8], bitmask: u8) -> Result<KeyPair, HpkeError>
where
    C: elliptic_curve::CurveArithmetic,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromEncodedPoint<C> + elliptic_curve::sec1::ToEncodedPoint<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    let sid = kem.kem_suite_id();
    let h = kem.dh_kdf();
    let prk = labeled_extract(h, &sid, b"", b"dkp_prk", ikm);
    for counter in 0u8..=255 {
        let mut bytes = labeled_expand(
            h,
            &sid,
            &prk,
            b"candidate",
            &[counter],
            kem.private_key_len(),
        )?;
        bytes[0] &= bitmask;
        // from_slice rejects zero and values at or above the group order.
        if let Ok(sk) = elliptic_curve::SecretKey::<C>::from_slice(&bytes) {
            use elliptic_curve::sec1::ToEncodedPoint;
            let public = sk.public_key().to_encoded_point(false).as_bytes().to_vec();
            return Ok(KeyPair {
                private: bytes,
                public,
            });
        }
    }
    Err(HpkeError::DeriveKeyPair)
}

/// The public key of a serialized DHKEM private key.
fn dh_public_key(kem: Kem, sk: &[u8]) -> Result<Vec<u8>, HpkeError> {
    match kem {
        Kem::DhKemP256 => ec_public::<p256::NistP256>(kem, sk),
        Kem::DhKemP384 => ec_public::<p384::NistP384>(kem, sk),
        Kem::DhKemP521 => ec_public::<p521::NistP521>(kem, sk),
        Kem::DhKemX25519 => Ok(x25519_secret(sk)?.public_key().as_bytes().to_vec()),
        Kem::DhKemX448 => {
            let sk = x448_secret(sk)?;
            Ok(x448::PublicKey::from(&sk).as_bytes().to_vec())
        }
        _ => Err(HpkeError::InvalidPrivateKey),
    }
}

fn ec_secret<C>(kem: Kem, sk: &[u8]) -> Result<elliptic_curve::SecretKey<C>, HpkeError>
where
    C: elliptic_curve::CurveArithmetic,
{
    if sk.len() != kem.private_key_len() {
        return Err(HpkeError::InvalidLength);
    }
    elliptic_curve::SecretKey::<C>::from_slice(sk).map_err(|_| HpkeError::InvalidPrivateKey)
}

fn ec_public<C>(kem: Kem, sk: &[u8]) -> Result<Vec<u8>, HpkeError>
where
    C: elliptic_curve::CurveArithmetic,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromEncodedPoint<C> + elliptic_curve::sec1::ToEncodedPoint<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    use elliptic_curve::sec1::ToEncodedPoint;
    let sk = ec_secret::<C>(kem, sk)?;
    Ok(sk.public_key().to_encoded_point(false).as_bytes().to_vec())
}

/// Parses an uncompressed SEC1 point (RFC 9180 section 7.1.1): the point must be on the
/// curve and not the identity.
fn ec_public_from_bytes<C>(kem: Kem, pk: &[u8]) -> Result<elliptic_curve::PublicKey<C>, HpkeError>
where
    C: elliptic_curve::CurveArithmetic,
    elliptic_curve::AffinePoint<C>:
        elliptic_curve::sec1::FromEncodedPoint<C> + elliptic_curve::sec1::ToEncodedPoint<C>,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    if pk.len() != kem.public_key_len() || pk.first() != Some(&0x04) {
        return Err(HpkeError::InvalidPublicKey);
    }
    elliptic_curve::PublicKey::<C>::from_sec1_bytes(pk).map_err(|_| HpkeError::InvalidPublicKey)
}

fn ec_dh<C>(
    sk: &elliptic_curve::SecretKey<C>,
    pk: &elliptic_curve::PublicKey<C>,
) -> Zeroizing<Vec<u8>>
where
    C: elliptic_curve::CurveArithmetic,
{
    let shared = elliptic_curve::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
    Zeroizing::new(shared.raw_secret_bytes().to_vec())
}

fn x25519_secret(sk: &[u8]) -> Result<x25519::SecretKey, HpkeError> {
    let seed = pqmls_pq::Seed32::from_slice(sk).map_err(|_| HpkeError::InvalidLength)?;
    Ok(x25519::SecretKey::from_seed(seed))
}

fn x448_secret(sk: &[u8]) -> Result<x448::StaticSecret, HpkeError> {
    let bytes: [u8; 56] = sk.try_into().map_err(|_| HpkeError::InvalidLength)?;
    let mut bytes = Zeroizing::new(bytes);
    let secret = x448::StaticSecret::from(*bytes);
    zeroize::Zeroize::zeroize(&mut *bytes);
    Ok(secret)
}

fn x448_dh(sk: &x448::StaticSecret, pk: &[u8]) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    if pk.len() != 56 {
        return Err(HpkeError::InvalidPublicKey);
    }
    // from_bytes rejects the low-order points; the all-zero check below is RFC 9180's
    // section 7.1.4 requirement and catches anything else non-contributory.
    let pk = x448::PublicKey::from_bytes(pk).ok_or(HpkeError::NonContributory)?;
    let ss = sk.diffie_hellman(&pk);
    let out = Zeroizing::new(ss.as_bytes().to_vec());
    if is_all_zero(&out) {
        return Err(HpkeError::NonContributory);
    }
    Ok(out)
}

/// Whether a secret is all zero, in constant time up to the final decision
/// (`subtle`: no early exit on the first non-zero byte).
fn is_all_zero(secret: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let zero = vec![0u8; secret.len()];
    bool::from(secret.ct_eq(&zero[..]))
}

/// A recipient public key, parsed and validated once, optionally prepared for repeated
/// encapsulation (precomputed ML-KEM matrix, X25519 table). [`crate::cache::KeyCache`]
/// keeps these across calls.
pub struct RecipientKey {
    kem: Kem,
    bytes: Vec<u8>,
    inner: Recipient,
}

enum Recipient {
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
    X25519(x25519::PublicKey),
    X25519Prepared(Box<x25519::PreparedPublicKey>),
    X448(Vec<u8>),
    MlKem768(Box<<MlKem768 as pqmls_pq::Kem>::EncapsulationKey>),
    MlKem768Prepared(Box<<MlKem768 as pqmls_pq::Kem>::PreparedEncapsulationKey>),
    MlKem1024(Box<<MlKem1024 as pqmls_pq::Kem>::EncapsulationKey>),
    MlKem1024Prepared(Box<<MlKem1024 as pqmls_pq::Kem>::PreparedEncapsulationKey>),
    XWing(Box<xwing::EncapsulationKey>),
    XWingPrepared(Box<xwing::PreparedEncapsulationKey>),
}

impl core::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecipientKey")
            .field("kem", &self.kem)
            .field("prepared", &self.is_prepared())
            .finish()
    }
}

impl RecipientKey {
    /// Parses and validates a serialized public key (DeserializePublicKey, plus the
    /// FIPS 203 modulus check for ML-KEM keys).
    ///
    /// # Errors
    /// [`HpkeError::InvalidPublicKey`] for a key of the wrong length or encoding.
    pub fn parse(kem: Kem, pk: &[u8]) -> Result<Self, HpkeError> {
        if pk.len() != kem.public_key_len() {
            return Err(HpkeError::InvalidPublicKey);
        }
        let inner = match kem {
            Kem::DhKemP256 => Recipient::P256(ec_public_from_bytes(kem, pk)?),
            Kem::DhKemP384 => Recipient::P384(ec_public_from_bytes(kem, pk)?),
            Kem::DhKemP521 => Recipient::P521(ec_public_from_bytes(kem, pk)?),
            Kem::DhKemX25519 => Recipient::X25519(
                x25519::PublicKey::from_slice(pk).map_err(|_| HpkeError::InvalidPublicKey)?,
            ),
            Kem::DhKemX448 => Recipient::X448(pk.to_vec()),
            Kem::MlKem768 => Recipient::MlKem768(Box::new(
                MlKem768::encapsulation_key_from_bytes(pk)
                    .map_err(|_| HpkeError::InvalidPublicKey)?,
            )),
            Kem::MlKem1024 => Recipient::MlKem1024(Box::new(
                MlKem1024::encapsulation_key_from_bytes(pk)
                    .map_err(|_| HpkeError::InvalidPublicKey)?,
            )),
            Kem::XWing => Recipient::XWing(Box::new(
                XWing::encapsulation_key_from_bytes(pk).map_err(|_| HpkeError::InvalidPublicKey)?,
            )),
        };
        Ok(RecipientKey {
            kem,
            bytes: pk.to_vec(),
            inner,
        })
    }

    /// The KEM.
    pub fn kem(&self) -> Kem {
        self.kem
    }

    /// The serialized public key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether [`Self::prepare`] has run (or had nothing to do).
    pub fn is_prepared(&self) -> bool {
        !matches!(
            self.inner,
            Recipient::X25519(_)
                | Recipient::MlKem768(_)
                | Recipient::MlKem1024(_)
                | Recipient::XWing(_)
        )
    }

    /// Precomputes what repeated encapsulations to this key share: the ML-KEM matrix and,
    /// for X25519 and X-Wing, a table for the recipient's point (about 1 ms to build).
    pub fn prepare(&mut self) {
        let inner = match &self.inner {
            Recipient::X25519(pk) => {
                Recipient::X25519Prepared(Box::new(x25519::PreparedPublicKey::new(pk)))
            }
            Recipient::MlKem768(ek) => Recipient::MlKem768Prepared(Box::new(MlKem768::prepare(ek))),
            Recipient::MlKem1024(ek) => {
                Recipient::MlKem1024Prepared(Box::new(MlKem1024::prepare(ek)))
            }
            Recipient::XWing(ek) => Recipient::XWingPrepared(Box::new(XWing::prepare(ek))),
            _ => return,
        };
        self.inner = inner;
    }

    /// Encap(pkR) with explicit randomness: for a DHKEM the ephemeral key pair is
    /// DeriveKeyPair(`ikm_e`) (as in RFC 9180's test vectors); for the post-quantum KEMs
    /// `ikm_e` is the encapsulation randomness (32 bytes for ML-KEM, 64 for X-Wing).
    /// Returns `(shared_secret, enc)`. Hazardous: `ikm_e` must be fresh and secret
    /// (feature `hazmat`, for known-answer tests and fuzzers).
    ///
    /// # Errors
    /// [`HpkeError::InvalidLength`] for randomness of the wrong length,
    /// [`HpkeError::NonContributory`] for a small-order X25519 or X448 key.
    #[cfg(feature = "hazmat")]
    pub fn encap_derand(&self, ikm_e: &[u8]) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), HpkeError> {
        let pq = |ss: pqmls_pq::SharedSecret, ct: &[u8]| {
            (Zeroizing::new(ss.as_bytes().to_vec()), ct.to_vec())
        };
        match &self.inner {
            Recipient::MlKem768(ek) => {
                let (ct, ss) = MlKem768::encapsulate_derand(ek, ikm_e)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::MlKem768Prepared(ek) => {
                let (ct, ss) = MlKem768::encapsulate_prepared_derand(ek, ikm_e)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::MlKem1024(ek) => {
                let (ct, ss) = MlKem1024::encapsulate_derand(ek, ikm_e)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::MlKem1024Prepared(ek) => {
                let (ct, ss) = MlKem1024::encapsulate_prepared_derand(ek, ikm_e)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::XWing(ek) => {
                let (ct, ss) = XWing::encapsulate_derand(ek, ikm_e)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::XWingPrepared(ek) => {
                let (ct, ss) = XWing::encapsulate_prepared_derand(ek, ikm_e)?;
                Ok(pq(ss, ct.as_ref()))
            }
            _ => self.dh_encap(ikm_e),
        }
    }

    /// DHKEM Encap(pkR) (RFC 9180 section 4.1) with the ephemeral key pair
    /// DeriveKeyPair(`ikm_e`).
    fn dh_encap(&self, ikm_e: &[u8]) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), HpkeError> {
        let kem = self.kem;
        let eph = derive_key_pair(kem, ikm_e, DeriveProfile::default())?;
        let dh_out = match &self.inner {
            Recipient::P256(pk) => ec_dh(&ec_secret::<p256::NistP256>(kem, &eph.private)?, pk),
            Recipient::P384(pk) => ec_dh(&ec_secret::<p384::NistP384>(kem, &eph.private)?, pk),
            Recipient::P521(pk) => ec_dh(&ec_secret::<p521::NistP521>(kem, &eph.private)?, pk),
            Recipient::X25519(pk) => {
                let ss = x25519_secret(&eph.private)?.diffie_hellman(pk)?;
                Zeroizing::new(ss.as_bytes().to_vec())
            }
            Recipient::X25519Prepared(pk) => {
                let ss = x25519_secret(&eph.private)?.diffie_hellman_prepared(pk)?;
                Zeroizing::new(ss.as_bytes().to_vec())
            }
            Recipient::X448(pk) => x448_dh(&x448_secret(&eph.private)?, pk)?,
            _ => return Err(HpkeError::InvalidPublicKey),
        };
        let ss = dh_extract_and_expand(kem, &dh_out, &eph.public, &self.bytes)?;
        Ok((ss, eph.public))
    }

    /// Encap(pkR) with randomness from `rng`.
    ///
    /// # Errors
    /// [`HpkeError::NonContributory`] for a small-order X25519 or X448 key;
    /// [`HpkeError::Randomness`] if `rng` fails.
    pub fn encap<R: TryCryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), HpkeError> {
        let pq = |ss: pqmls_pq::SharedSecret, ct: &[u8]| {
            (Zeroizing::new(ss.as_bytes().to_vec()), ct.to_vec())
        };
        match &self.inner {
            Recipient::MlKem768(ek) => {
                let (ct, ss) = MlKem768::encapsulate(ek, rng)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::MlKem768Prepared(ek) => {
                let (ct, ss) = MlKem768::encapsulate_prepared(ek, rng)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::MlKem1024(ek) => {
                let (ct, ss) = MlKem1024::encapsulate(ek, rng)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::MlKem1024Prepared(ek) => {
                let (ct, ss) = MlKem1024::encapsulate_prepared(ek, rng)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::XWing(ek) => {
                let (ct, ss) = XWing::encapsulate(ek, rng)?;
                Ok(pq(ss, ct.as_ref()))
            }
            Recipient::XWingPrepared(ek) => {
                let (ct, ss) = XWing::encapsulate_prepared(ek, rng)?;
                Ok(pq(ss, ct.as_ref()))
            }
            _ => {
                let mut ikm_e = Zeroizing::new(vec![0u8; self.kem.private_key_len()]);
                rng.try_fill_bytes(&mut ikm_e)
                    .map_err(|_| HpkeError::Randomness)?;
                self.dh_encap(&ikm_e)
            }
        }
    }
}

/// `ExtractAndExpand(dh, enc || pkRm)` of RFC 9180 section 4.1.
fn dh_extract_and_expand(
    kem: Kem,
    dh: &[u8],
    enc: &[u8],
    pk_rm: &[u8],
) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    let sid = kem.kem_suite_id();
    let h = kem.dh_kdf();
    let eae_prk = h.extract(b"", &[VERSION_LABEL, &sid, b"eae_prk", dh]);
    let n = h.output_len();
    let l = u16::try_from(n)
        .map_err(|_| HpkeError::OutputTooLong)?
        .to_be_bytes();
    Ok(h.expand(
        &eae_prk,
        &[&l, VERSION_LABEL, &sid, b"shared_secret", enc, pk_rm],
        n,
    )?)
}

/// Decap(enc, skR): the shared secret of an encapsulation.
///
/// # Errors
/// [`HpkeError::InvalidLength`] for an `enc` or private key of the wrong length,
/// [`HpkeError::InvalidPublicKey`] for an `enc` that is not a valid point,
/// [`HpkeError::NonContributory`] for a small-order or all-zero DH result.
pub fn decap(kem: Kem, enc: &[u8], sk_r: &[u8]) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
    if enc.len() != kem.enc_len() {
        return Err(HpkeError::InvalidLength);
    }
    if sk_r.len() != kem.private_key_len() {
        return Err(HpkeError::InvalidPrivateKey);
    }
    let pq = |ss: pqmls_pq::SharedSecret| Zeroizing::new(ss.as_bytes().to_vec());
    let (dh, pk_rm) = match kem {
        Kem::MlKem768 => {
            let dk = MlKem768::expanded_decapsulation_key_from_seed(sk_r)?;
            return Ok(pq(MlKem768::decapsulate(
                &dk,
                &MlKem768::ciphertext_from_bytes(enc)?,
            )?));
        }
        Kem::MlKem1024 => {
            let dk = MlKem1024::expanded_decapsulation_key_from_seed(sk_r)?;
            return Ok(pq(MlKem1024::decapsulate(
                &dk,
                &MlKem1024::ciphertext_from_bytes(enc)?,
            )?));
        }
        Kem::XWing => {
            let dk = XWing::expanded_decapsulation_key_from_seed(sk_r)?;
            return Ok(pq(XWing::decapsulate(
                &dk,
                &XWing::ciphertext_from_bytes(enc)?,
            )?));
        }
        Kem::DhKemP256 => {
            let sk = ec_secret::<p256::NistP256>(kem, sk_r)?;
            let pk_e = ec_public_from_bytes::<p256::NistP256>(kem, enc)?;
            (ec_dh(&sk, &pk_e), ec_public::<p256::NistP256>(kem, sk_r)?)
        }
        Kem::DhKemP384 => {
            let sk = ec_secret::<p384::NistP384>(kem, sk_r)?;
            let pk_e = ec_public_from_bytes::<p384::NistP384>(kem, enc)?;
            (ec_dh(&sk, &pk_e), ec_public::<p384::NistP384>(kem, sk_r)?)
        }
        Kem::DhKemP521 => {
            let sk = ec_secret::<p521::NistP521>(kem, sk_r)?;
            let pk_e = ec_public_from_bytes::<p521::NistP521>(kem, enc)?;
            (ec_dh(&sk, &pk_e), ec_public::<p521::NistP521>(kem, sk_r)?)
        }
        Kem::DhKemX25519 => {
            let sk = x25519_secret(sk_r)?;
            let pk_e =
                x25519::PublicKey::from_slice(enc).map_err(|_| HpkeError::InvalidPublicKey)?;
            let ss = sk.diffie_hellman(&pk_e)?;
            (
                Zeroizing::new(ss.as_bytes().to_vec()),
                sk.public_key().as_bytes().to_vec(),
            )
        }
        Kem::DhKemX448 => {
            let sk = x448_secret(sk_r)?;
            let dh = x448_dh(&sk, enc)?;
            (dh, x448::PublicKey::from(&sk).as_bytes().to_vec())
        }
    };
    dh_extract_and_expand(kem, &dh, enc, &pk_rm)
}

/// An HPKE encryption context (RFC 9180 section 5.2): key, base nonce, sequence number and
/// exporter secret, all zeroized on drop.
pub struct Context {
    suite: Suite,
    key: Zeroizing<Vec<u8>>,
    base_nonce: Zeroizing<Vec<u8>>,
    exporter_secret: Zeroizing<Vec<u8>>,
    seq: u64,
}

impl core::fmt::Debug for Context {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Context")
            .field("suite", &self.suite)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// KeySchedule(mode_base, shared_secret, info, psk = "", psk_id = "") of RFC 9180
/// section 5.1.
fn key_schedule(suite: Suite, shared_secret: &[u8], info: &[u8]) -> Result<Context, HpkeError> {
    let sid = suite.suite_id();
    let h = suite.kdf.hash();
    let psk_id_hash = labeled_extract(h, &sid, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(h, &sid, b"", b"info_hash", info);
    let mut ksc = Vec::with_capacity(1 + 2 * h.output_len());
    ksc.push(MODE_BASE);
    ksc.extend_from_slice(&psk_id_hash);
    ksc.extend_from_slice(&info_hash);
    let secret = labeled_extract(h, &sid, shared_secret, b"secret", b"");
    let (key, base_nonce) = match suite.aead.alg() {
        Some(alg) => (
            labeled_expand(h, &sid, &secret, b"key", &ksc, alg.key_len())?,
            labeled_expand(
                h,
                &sid,
                &secret,
                b"base_nonce",
                &ksc,
                crate::aead::NONCE_LEN,
            )?,
        ),
        None => (Zeroizing::new(Vec::new()), Zeroizing::new(Vec::new())),
    };
    let exporter_secret = labeled_expand(h, &sid, &secret, b"exp", &ksc, h.output_len())?;
    Ok(Context {
        suite,
        key,
        base_nonce,
        exporter_secret,
        seq: 0,
    })
}

/// SetupBaseS with explicit encapsulation randomness (see [`RecipientKey::encap_derand`]).
/// Returns `(enc, context)`. Hazardous, as [`RecipientKey::encap_derand`] (feature
/// `hazmat`).
///
/// # Errors
/// As [`RecipientKey::parse`] and [`RecipientKey::encap_derand`].
#[cfg(feature = "hazmat")]
pub fn setup_base_sender_derand(
    suite: Suite,
    pk_r: &[u8],
    info: &[u8],
    ikm_e: &[u8],
) -> Result<(Vec<u8>, Context), HpkeError> {
    let key = RecipientKey::parse(suite.kem, pk_r)?;
    setup_sender_with(suite, &key, info, |k| k.encap_derand(ikm_e))
}

/// SetupBaseS to a parsed (possibly prepared) recipient key, with fresh randomness.
///
/// # Errors
/// As [`RecipientKey::encap`]; [`HpkeError::InvalidPublicKey`] if `pk_r`'s KEM is not the
/// suite's.
pub fn setup_base_sender<R: TryCryptoRng + ?Sized>(
    suite: Suite,
    pk_r: &RecipientKey,
    info: &[u8],
    rng: &mut R,
) -> Result<(Vec<u8>, Context), HpkeError> {
    setup_sender_with(suite, pk_r, info, |k| k.encap(rng))
}

fn setup_sender_with(
    suite: Suite,
    pk_r: &RecipientKey,
    info: &[u8],
    encap: impl FnOnce(&RecipientKey) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), HpkeError>,
) -> Result<(Vec<u8>, Context), HpkeError> {
    if pk_r.kem != suite.kem {
        return Err(HpkeError::InvalidPublicKey);
    }
    let (ss, enc) = encap(pk_r)?;
    Ok((enc, key_schedule(suite, &ss, info)?))
}

/// SetupBaseR: the recipient's context for `enc`.
///
/// # Errors
/// As [`decap`].
pub fn setup_base_receiver(
    suite: Suite,
    enc: &[u8],
    sk_r: &[u8],
    info: &[u8],
) -> Result<Context, HpkeError> {
    let ss = decap(suite.kem, enc, sk_r)?;
    key_schedule(suite, &ss, info)
}

impl Context {
    /// `base_nonce XOR I2OSP(seq, Nn)` (section 5.2).
    fn nonce(&self) -> [u8; crate::aead::NONCE_LEN] {
        let mut n = [0u8; crate::aead::NONCE_LEN];
        n[4..].copy_from_slice(&self.seq.to_be_bytes());
        for (a, b) in n.iter_mut().zip(self.base_nonce.iter()) {
            *a ^= b;
        }
        n
    }

    fn increment(&mut self) -> Result<(), HpkeError> {
        // With a 12-byte nonce the RFC's limit (2^96 - 1) is beyond u64: stop at u64::MAX.
        self.seq = self.seq.checked_add(1).ok_or(HpkeError::MessageLimit)?;
        Ok(())
    }

    /// ContextS.Seal.
    ///
    /// # Errors
    /// [`HpkeError::ExportOnly`] for the export-only AEAD; [`HpkeError::MessageLimit`].
    pub fn seal(&mut self, aad: &[u8], pt: &[u8]) -> Result<Vec<u8>, HpkeError> {
        let alg = self.suite.aead.alg().ok_or(HpkeError::ExportOnly)?;
        if self.seq == u64::MAX {
            return Err(HpkeError::MessageLimit);
        }
        let ct = alg.seal(&self.key, &self.nonce(), aad, pt)?;
        self.increment()?;
        Ok(ct)
    }

    /// ContextR.Open.
    ///
    /// # Errors
    /// [`HpkeError::Decryption`] if the tag does not verify; [`HpkeError::ExportOnly`];
    /// [`HpkeError::InvalidLength`] for a ciphertext shorter than the tag.
    pub fn open(&mut self, aad: &[u8], ct: &[u8]) -> Result<Vec<u8>, HpkeError> {
        let alg = self.suite.aead.alg().ok_or(HpkeError::ExportOnly)?;
        if self.seq == u64::MAX {
            return Err(HpkeError::MessageLimit);
        }
        let pt = alg.open(&self.key, &self.nonce(), aad, ct)?;
        self.increment()?;
        Ok(pt)
    }

    /// Context.Export (section 5.3): `LabeledExpand(exporter_secret, "sec", exporter_context, L)`.
    ///
    /// # Errors
    /// [`HpkeError::OutputTooLong`] if `len` exceeds 255 hash lengths.
    pub fn export(
        &self,
        exporter_context: &[u8],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
        let sid = self.suite.suite_id();
        labeled_expand(
            self.suite.kdf.hash(),
            &sid,
            &self.exporter_secret,
            b"sec",
            exporter_context,
            len,
        )
    }

    /// The AEAD key (for known-answer tests; feature `hazmat`).
    #[cfg(feature = "hazmat")]
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The base nonce (for known-answer tests; feature `hazmat`).
    #[cfg(feature = "hazmat")]
    pub fn base_nonce(&self) -> &[u8] {
        &self.base_nonce
    }

    /// The exporter secret (for known-answer tests; feature `hazmat`).
    #[cfg(feature = "hazmat")]
    pub fn exporter_secret(&self) -> &[u8] {
        &self.exporter_secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_zero_check() {
        assert!(is_all_zero(&[0u8; 56]));
        for i in [0, 27, 55] {
            let mut v = [0u8; 56];
            v[i] = 0x80;
            assert!(!is_all_zero(&v), "non-zero byte at {i}");
        }
    }
}
