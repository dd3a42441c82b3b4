//! Where the provider's random bytes come from (DESIGN.md items 9 and 16).
//!
//! - [`Source::Os`], the default and, without the feature `sim-rng`, the only source: the
//!   operating system's generator at every request. No generator state in our memory.
//! - [`Source::Seeded`], feature `sim-rng` only: a ChaCha20 keystream (RFC 8439, zero
//!   nonce) under a 32-byte seed the caller gives, so that a simulated run replays exactly.
//!   Anyone who knows the seed knows every key drawn from it: simulations only.
//!
//! One seeded stream hands its bytes out in the order they are asked for, so a draw made
//! on several threads at once would get them in thread order. OpenMLS seals the path
//! secrets of a commit in parallel (rayon, in `treesync/treekem.rs` and
//! `treesync/node/parent_node.rs` of openmls 0.9.2), so seeded HPKE seals do not draw from
//! the stream: each takes a stream of its own derived from the seed and the seal's inputs
//! ([`Source::for_call`]), which differ between the seals of one commit (another
//! recipient key, or another fresh path secret).

use pqmls_pq::OsRng;
use pqmls_pq::rand_core::{TryCryptoRng, TryRng};

use crate::crypto::RandError;

/// A randomness source (see the module docs).
pub(crate) enum Source {
    /// The operating system's generator, per request.
    Os,
    /// A seeded ChaCha20 keystream (simulation only). The cipher state zeroizes on drop
    /// (chacha20's `zeroize` feature).
    #[cfg(feature = "sim-rng")]
    Seeded {
        /// The seed, for the streams of [`Source::for_call`].
        seed: zeroize::Zeroizing<[u8; 32]>,
        /// The keystream of the seed.
        stream: std::sync::Mutex<chacha20::ChaCha20>,
    },
}

impl Source {
    /// The keystream of ChaCha20 under `seed` (zero nonce).
    #[cfg(feature = "sim-rng")]
    pub(crate) fn seeded(seed: &[u8; 32]) -> Self {
        use chacha20::cipher::KeyIvInit as _;
        Source::Seeded {
            seed: zeroize::Zeroizing::new(*seed),
            stream: std::sync::Mutex::new(chacha20::ChaCha20::new(seed.into(), &[0u8; 12].into())),
        }
    }

    /// The source for one call that may run in parallel with others (HPKE seals): this
    /// one for the operating system; for a seeded source, a fresh stream keyed by
    /// SHA-256 over a label, the seed and `inputs` (each length-prefixed).
    pub(crate) fn for_call(&self, inputs: &[&[u8]]) -> Source {
        match self {
            Source::Os => {
                let _ = inputs;
                Source::Os
            }
            #[cfg(feature = "sim-rng")]
            Source::Seeded { seed, .. } => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                h.update(b"pqmls-provider sim-rng call v1");
                h.update(seed.as_slice());
                for part in inputs {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part);
                }
                let key = zeroize::Zeroizing::new(<[u8; 32]>::from(h.finalize()));
                Source::seeded(&key)
            }
        }
    }

    /// Fills `dst`.
    ///
    /// # Errors
    /// [`RandError`] if the OS generator fails, or (seeded) if the keystream is exhausted
    /// (2^38 bytes) or its lock was poisoned.
    pub(crate) fn fill(&self, dst: &mut [u8]) -> Result<(), RandError> {
        match self {
            Source::Os => OsRng.try_fill_bytes(dst).map_err(|_| RandError),
            #[cfg(feature = "sim-rng")]
            Source::Seeded { stream, .. } => {
                use chacha20::cipher::StreamCipher as _;
                let mut stream = stream.lock().map_err(|_| RandError)?;
                dst.fill(0);
                stream.try_apply_keystream(dst).map_err(|_| RandError)
            }
        }
    }

    /// Whether this is the operating system's generator.
    pub(crate) fn is_os(&self) -> bool {
        matches!(self, Source::Os)
    }
}

/// A `TryCryptoRng` view of a [`Source`], for callers outside OpenMLS and for the
/// operations inside the provider that take an RNG.
pub struct ProviderRng<'a>(pub(crate) &'a Source);

impl TryRng for ProviderRng<'_> {
    type Error = RandError;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst)
    }
}

impl TryCryptoRng for ProviderRng<'_> {}
