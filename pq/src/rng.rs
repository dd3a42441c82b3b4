//! Randomness is injected: every randomised operation takes an RNG (encapsulation's
//! derandomised twins, which take the bytes, are behind the feature `hazmat`). [`OsRng`]
//! is the operating system's generator, for callers that have none of their own.

use crate::{Error, Result};
use rand_core::TryCryptoRng;

/// The operating system's random number generator (`getrandom`).
pub use getrandom::SysRng as OsRng;

/// Fills `buf` from `rng`, turning a generator failure into [`Error::Randomness`].
pub(crate) fn fill<R: TryCryptoRng + ?Sized>(rng: &mut R, buf: &mut [u8]) -> Result<()> {
    rng.try_fill_bytes(buf).map_err(|_| Error::Randomness)
}
