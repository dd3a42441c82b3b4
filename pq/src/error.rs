//! The one error type of this crate.
//!
//! Crypto failures are opaque: a failed verification is [`Error::InvalidSignature`] and
//! nothing more. ML-KEM decapsulation uses implicit rejection and never fails on a
//! well-formed ciphertext; the only decapsulation error is the hybrid KEMs' all-zero
//! X25519 result ([`Error::NonContributory`]).

/// Everything that can go wrong in `pqmls-pq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input had the wrong length for what it claims to be.
    #[error("invalid length for {what}: expected {expected} bytes, got {actual}")]
    InvalidLength {
        /// What the input was meant to be (for example "ML-KEM-768 encapsulation key").
        what: &'static str,
        /// The length the scheme requires.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
    /// An ML-KEM encapsulation key failed the FIPS 203 section 7.2 modulus check
    /// (a coefficient is not reduced modulo q = 3329).
    #[error("invalid encapsulation key: a coefficient is not reduced modulo q")]
    InvalidEncapsulationKey,
    /// A verifying (public) key could not be decoded.
    #[error("invalid verifying key")]
    InvalidVerifyingKey,
    /// An X25519 shared secret was all zero: the peer's point has small order
    /// (RFC 7748 section 6.1; rejected here as libcrux and hpke-rs do).
    #[error("non-contributory X25519 key exchange (all-zero shared secret)")]
    NonContributory,
    /// A signature did not verify. Deliberately says nothing more.
    #[error("invalid signature")]
    InvalidSignature,
    /// A signature context string was longer than 255 bytes (FIPS 204 section 5.2).
    #[error("context string too long: {len} bytes, at most 255")]
    ContextTooLong {
        /// The length that was given.
        len: usize,
    },
    /// A non-empty context string was given to a scheme that has none (pure Ed25519).
    #[error("this signature scheme takes no context string")]
    ContextNotSupported,
    /// The random number generator failed.
    #[error("random number generator failure")]
    Randomness,
    /// Signing failed inside the underlying implementation (ML-DSA rejection sampling
    /// exhausted its bound, which FIPS 204 makes practically impossible).
    #[error("signing failed")]
    SigningFailed,
}

/// The result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;

/// Checks that `bytes` is exactly `N` bytes long and returns it as an array reference.
pub(crate) fn exact<'a, const N: usize>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<&'a [u8; N]> {
    bytes.try_into().map_err(|_| Error::InvalidLength {
        what,
        expected: N,
        actual: bytes.len(),
    })
}
