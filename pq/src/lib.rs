//! # pqmls-pq
//!
//! The post-quantum and hybrid primitives that pqmls stands on:
//!
//! | scheme | spec | module | private key |
//! |---|---|---|---|
//! | ML-KEM-768, ML-KEM-1024 | FIPS 203 | [`kem::ml_kem`] | 64-byte seed `d \|\| z` |
//! | X25519 | RFC 7748 | [`kem::x25519`] | 32 bytes |
//! | X-Wing (MLKEM768-X25519) | draft-connolly-cfrg-xwing-kem-10 | [`kem::xwing`] | 32-byte seed |
//! | ML-DSA-44/65/87 | FIPS 204 | [`sig::ml_dsa`] | 32-byte seed `ξ` |
//! | Ed25519 | RFC 8032 | [`sig::ed25519`] | 32-byte seed |
//! | ML-DSA + Ed25519 composites | draft-ietf-lamps-pq-composite-sigs | [`sig::composite`] | 64-byte seed |
//!
//! Every KEM implements [`Kem`] and every signature scheme [`SignatureScheme`], with
//! their sizes as associated constants, so callers drive them all the same way.
//!
//! ```
//! use pqmls_pq::{Kem, OsRng, XWing};
//!
//! # fn main() -> Result<(), pqmls_pq::Error> {
//! let dk = XWing::generate(&mut OsRng)?;                      // Bob's key pair
//! let ek = XWing::encapsulation_key_from_bytes(XWing::encapsulation_key(&dk).as_ref())?;
//! let (ct, ss_alice) = XWing::encapsulate(&ek, &mut OsRng)?;  // Alice, to Bob
//! let ss_bob = XWing::decapsulate(&dk, &ct)?;                  // Bob
//! assert_eq!(ss_alice.as_bytes(), ss_bob.as_bytes());
//! # Ok(()) }
//! ```
//!
//! ## Rules this crate keeps
//!
//! - Seeds are the private key format; expanded keys are cached in memory, never serialized.
//! - Every secret (seed, expanded key, shared secret) is zeroized on drop, prints as
//!   `<redacted>`, is not `Copy`, and compares in constant time ([`subtle`]).
//! - Every encapsulation key from outside is validated when parsed (FIPS 203 section 7.2).
//! - No panics on any input: malformed input is a typed [`Error`]. Crypto failures are
//!   opaque ([`Error::InvalidSignature`]); ML-KEM decapsulation rejects implicitly.
//! - Randomness is injected: every randomised operation takes an RNG. Encapsulation's
//!   derandomised twins (`*_derand`, for known-answer tests and fuzzers) exist only with
//!   the feature `hazmat`: reused encapsulation randomness reveals the shared secret.
//!
//! ## Features
//!
//! - `hazmat`: derandomised encapsulation ([`Kem::encapsulate_derand`] and friends).
//! - `force-portable`: libcrux's portable ML-KEM code only, also on x86_64 (CI tests that
//!   path; every target other than x86_64 gets it anyway). See [`kem::ml_kem::backend`].
//! - Pure Rust: libcrux for ML-KEM and ML-DSA (formally verified, AVX2 at run time),
//!   curve25519-dalek for X25519 and Ed25519 (AVX2 at run time).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod kem;
mod rng;
mod secret;
pub mod sig;

pub use error::{Error, Result};
pub use kem::{
    DeriveProfile, Kem,
    ml_kem::{MlKem768, MlKem1024},
    xwing::XWing,
};
pub use rand_core;
pub use rng::OsRng;
pub use secret::{Seed32, Seed64, SharedSecret};
pub use sig::{
    SignatureScheme,
    composite::{MlDsa44Ed25519, MlDsa65Ed25519},
    ed25519::Ed25519,
    ml_dsa::{MlDsa44, MlDsa65, MlDsa87},
};
pub use subtle;
