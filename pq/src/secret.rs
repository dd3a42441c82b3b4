//! Secret byte strings: zeroized on drop, redacted in `Debug`, compared in constant time.
//!
//! Every seed, private key and shared secret of this crate is one of the newtypes
//! declared here. None is `Copy`, none derives `PartialEq`, `Hash` or `Serialize`;
//! equality goes through [`subtle::ConstantTimeEq`].

use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Declares a fixed-length secret newtype.
macro_rules! secret_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Wraps `bytes`. The caller should zeroize its own copy.
            pub fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// Copies a slice of exactly [`Self::LEN`] bytes.
            ///
            /// # Errors
            /// [`crate::Error::InvalidLength`] if `bytes` is not [`Self::LEN`] bytes long.
            pub fn from_slice(bytes: &[u8]) -> crate::Result<Self> {
                Ok(Self(*crate::error::exact::<$len>(stringify!($name), bytes)?))
            }

            /// The secret bytes. Handle with care.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl ConstantTimeEq for $name {
            fn ct_eq(&self, other: &Self) -> Choice {
                self.0.ct_eq(&other.0)
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret_bytes!(
    /// A 32-byte KEM shared secret (`ss`).
    SharedSecret,
    32
);
secret_bytes!(
    /// A 32-byte seed: the private key format of X-Wing, ML-DSA and Ed25519, and an X25519 private key.
    Seed32,
    32
);
secret_bytes!(
    /// A 64-byte seed `d || z`: the private key format of ML-KEM (FIPS 203 section 7.1) and of composite signatures.
    Seed64,
    64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SharedSecret::from_bytes([0x42; 32]);
        let text = format!("{s:?}");
        assert_eq!(text, "SharedSecret(<redacted>)");
        assert!(!text.contains("42"));
    }

    #[test]
    fn constant_time_equality() {
        let a = Seed32::from_bytes([1; 32]);
        let b = Seed32::from_bytes([1; 32]);
        let mut c_bytes = [1; 32];
        c_bytes[31] = 2;
        let c = Seed32::from_bytes(c_bytes);
        assert!(bool::from(a.ct_eq(&b)));
        assert!(!bool::from(a.ct_eq(&c)));
    }

    #[test]
    fn zeroize_clears_the_bytes() {
        let mut s = Seed64::from_bytes([0xa5; 64]);
        s.zeroize();
        assert_eq!(s.as_bytes(), &[0u8; 64]);
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(matches!(
            Seed64::from_slice(&[0; 63]),
            Err(crate::Error::InvalidLength {
                expected: 64,
                actual: 63,
                ..
            })
        ));
    }
}
