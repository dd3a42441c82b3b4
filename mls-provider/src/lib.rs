//! pqmls-provider: an OpenMLS provider (crypto, randomness, storage) for every cipher suite
//! of openmls_traits 0.6, the post-quantum ones above all.
//!
//! - [`PqCrypto`]: `OpenMlsCrypto` + `OpenMlsRand` for all 17 suites. Post-quantum parts
//!   (ML-KEM, X-Wing, ML-DSA, Ed25519) come from `pqmls-pq`; the classic ones from
//!   RustCrypto crates ([`sign`] and [`hpke`] list which).
//! - [`hpke`]: HPKE (RFC 9180) base mode of our own, with a cache of prepared recipient
//!   keys ([`cache`]).
//! - [`SignatureKeyPair`]: a seed-based signing key for every scheme, OpenMLS's `Signer`.
//! - [`SqliteStorage`]: OpenMLS state in SQLite (`openmls_sqlite_storage` with a compact
//!   binary codec), a file for real use, in memory for tests ([`storage`]).
//! - [`Provider`]: the three together as an `OpenMlsProvider`.
//!
//! # Example
//! ```
//! use openmls::prelude::*;
//! use pqmls_provider::{PqCrypto, Provider, SignatureKeyPair, SqliteStorage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cs = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;
//! // A file for real use: `SqliteStorage::open_file("alice.sqlite")`.
//! let storage: SqliteStorage = SqliteStorage::open_in_memory()?;
//! let provider = Provider::from_parts(PqCrypto::new()?, storage);
//!
//! let signer = SignatureKeyPair::generate(cs.signature_algorithm())?;
//! signer.store(provider.storage())?; // reload later with SignatureKeyPair::read
//! let credential = CredentialWithKey {
//!     credential: BasicCredential::new(b"alice".to_vec()).into(),
//!     signature_key: signer.public().into(),
//! };
//! let mut group = MlsGroup::builder().ciphersuite(cs).build(&provider, &signer, credential)?;
//! let message = group.create_message(&provider, &signer, b"hello, post-quantum world")?;
//! # let _ = message;
//! # Ok(())
//! # }
//! ```
//!
//! # DeriveKeyPair profiles (DESIGN.md item 6)
//! MLS derives every tree key with HPKE's DeriveKeyPair, so all members of a group must
//! derive alike. For the DHKEMs there is one answer, RFC 9180 section 7.1.3. For the
//! post-quantum KEMs there are two:
//!
//! | suites | KEM | default profile | why |
//! |---|---|---|---|
//! | 0x0001-0x0007 | DHKEM P-256/P-384/P-521/X25519/X448 | RFC 9180 7.1.3 | the only one |
//! | 0x004D, 0x004E, 0x004F, 0x0052 | X-Wing | `Plain`: SHAKE256(ikm, 32) | what openmls_rust_crypto 0.6 and openmls_libcrux_crypto 0.4 (hpke-rs 0.7) do |
//! | 0x0050, 0x0051, 0xF042 | ML-KEM-768 | `Plain`: SHAKE256(ikm, 64) = d \|\| z | as above (openmls_rust_crypto) |
//! | 0x0042, 0x0906, 0x0907 | ML-KEM-1024 | `Plain`: SHAKE256(ikm, 64) = d \|\| z | as above (openmls_rust_crypto) |
//!
//! The spec profile, draft-ietf-hpke-pq's labelled
//! `SHAKE256(ikm || "HPKE-v1" || suite_id || len-prefixed "DeriveKeyPair" || I2OSP(L, 2))`,
//! is selected with [`CryptoConfig::derive_profile`] = [`DeriveProfile::HpkePq`]. A group
//! must use one profile throughout: members with different profiles compute different tree
//! keys and cannot process each other's commits.

#![forbid(unsafe_code)]

pub mod aead;
pub mod cache;
mod crypto;
pub mod hpke;
pub mod kdf;
mod rng;
pub mod sign;
pub mod storage;

pub use crypto::{CryptoConfig, PqCrypto, RandError, SUPPORTED_CIPHERSUITES};
pub use hpke::DeriveProfile;
pub use rng::ProviderRng;
pub use sign::SignatureKeyPair;
pub use storage::{BinaryCodec, CipherKey, JsonCodec, SqliteStorage, StorageError};

use openmls_traits::OpenMlsProvider;
use openmls_traits::storage::{CURRENT_VERSION, StorageProvider};

/// An OpenMLS provider: [`PqCrypto`] for crypto and randomness, and a storage `S`.
#[derive(Debug)]
pub struct Provider<S> {
    crypto: PqCrypto,
    storage: S,
}

impl<S> Provider<S> {
    /// A provider from its parts.
    pub fn from_parts(crypto: PqCrypto, storage: S) -> Self {
        Provider { crypto, storage }
    }

    /// The storage, mutably (e.g. for migrations or the application's own tables).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// The crypto part.
    pub fn pq_crypto(&self) -> &PqCrypto {
        &self.crypto
    }
}

impl<S: StorageProvider<CURRENT_VERSION>> OpenMlsProvider for Provider<S> {
    type CryptoProvider = PqCrypto;
    type RandProvider = PqCrypto;
    type StorageProvider = S;

    fn storage(&self) -> &S {
        &self.storage
    }

    fn crypto(&self) -> &PqCrypto {
        &self.crypto
    }

    fn rand(&self) -> &PqCrypto {
        &self.crypto
    }
}
