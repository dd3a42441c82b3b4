//! Hashes, HMAC (RFC 2104) and HKDF (RFC 5869, written out here) over SHA-2, through RustCrypto's `sha2`, which uses the
//! CPU's SHA extensions (SHA-NI on x86-64, the ARMv8 SHA instructions) when it has them and
//! portable code otherwise. Every function takes its input in parts so that the labelled
//! constructions of MLS and HPKE need no concatenation buffer.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

/// A SHA-2 hash function, the three MLS and HPKE use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// The output of HKDF-Expand asked for more than 255 hash lengths (RFC 5869 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputTooLong;

/// The largest SHA-2 output, SHA-512's.
const MAX_HASH_LEN: usize = 64;
/// Info parts [`HashAlg::expand_into`] handles without joining them first.
const MAX_INFO_PARTS: usize = 16;

impl HashAlg {
    /// The output length in bytes (`Nh`).
    pub const fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            HashAlg::Sha256 => run::<Sha256>(parts),
            HashAlg::Sha384 => run::<Sha384>(parts),
            HashAlg::Sha512 => run::<Sha512>(parts),
        }
    }

    /// HMAC (RFC 2104) of the concatenation of `parts` under `key`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
            // HMAC takes keys of any length: new_from_slice cannot fail for it.
            let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
                unreachable!("HMAC accepts keys of every length")
            };
            for p in parts {
                m.update(p);
            }
            Zeroizing::new(m.finalize().into_bytes().to_vec())
        }
        match self {
            HashAlg::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HashAlg::Sha384 => run::<Hmac<Sha384>>(key, parts),
            HashAlg::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }

    /// HKDF-Extract(salt, IKM) with the IKM given as the concatenation of `ikm_parts`.
    /// An empty salt is the same as HKDF's default all-zero salt (RFC 5869 section 2.2).
    pub fn extract(self, salt: &[u8], ikm_parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        // PRK = HMAC-Hash(salt, IKM) (RFC 5869 section 2.2). HMAC pads its key with zeros
        // to the block size, so the empty salt is the same key as HashLen zero bytes.
        self.hmac(salt, ikm_parts)
    }

    /// HKDF-Expand(PRK, info, L) into `okm` (L = `okm.len()`), with the info given as the
    /// concatenation of `info_parts`. A PRK shorter than the hash length is accepted, as
    /// RFC 5869 allows any PRK of at least HashLen bytes and MLS's interop vectors use
    /// full-length ones; a shorter one is used as an HMAC key all the same.
    ///
    /// # Errors
    /// [`OutputTooLong`] if `okm` is longer than 255 hash lengths.
    pub fn expand_into(
        self,
        prk: &[u8],
        info_parts: &[&[u8]],
        okm: &mut [u8],
    ) -> Result<(), OutputTooLong> {
        // RFC 5869 section 2.3, written out here so that a PRK of any length works (the
        // `hkdf` crate insists on at least HashLen bytes) and no info buffer is needed.
        let nh = self.output_len();
        if okm.len() > 255 * nh {
            return Err(OutputTooLong);
        }
        if info_parts.len() > MAX_INFO_PARTS {
            return self.expand_slow(prk, info_parts, okm);
        }
        let mut t = Zeroizing::new([0u8; MAX_HASH_LEN]);
        let mut t_len = 0;
        for (i, chunk) in okm.chunks_mut(nh).enumerate() {
            // T(i) = HMAC(PRK, T(i-1) | info | i), i from 1.
            let counter = [u8::try_from(i + 1).map_err(|_| OutputTooLong)?];
            let mut parts: [&[u8]; MAX_INFO_PARTS + 2] = [&[]; MAX_INFO_PARTS + 2];
            parts[0] = &t[..t_len];
            let n = info_parts.len();
            parts[1..1 + n].copy_from_slice(&info_parts[..n]);
            parts[1 + n] = &counter;
            let block = self.hmac(prk, &parts[..n + 2]);
            t[..nh].copy_from_slice(&block);
            t_len = nh;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }

    /// HKDF-Expand for callers with more than [`MAX_INFO_PARTS`] info parts: joins them first.
    fn expand_slow(
        self,
        prk: &[u8],
        info_parts: &[&[u8]],
        okm: &mut [u8],
    ) -> Result<(), OutputTooLong> {
        let info = info_parts.concat();
        self.expand_into(prk, &[&info], okm)
    }

    /// HKDF-Expand returning a new buffer of `len` bytes.
    ///
    /// # Errors
    /// As [`Self::expand_into`].
    pub fn expand(
        self,
        prk: &[u8],
        info_parts: &[&[u8]],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, OutputTooLong> {
        let mut okm = Zeroizing::new(vec![0u8; len]);
        self.expand_into(prk, info_parts, &mut okm)?;
        Ok(okm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HMAC's key schedule is its two keyed hash states (`HmacCore { digest, opad_digest }`,
    /// each the hash's block-level core after absorbing `K ^ ipad` / `K ^ opad`). hmac 0.13
    /// does not declare `ZeroizeOnDrop` for `Hmac` itself, but dropping it drops those two
    /// cores, and with sha2's `zeroize` feature each core wipes its state on drop. This
    /// fails to compile if that feature is dropped.
    #[test]
    fn hmac_states_zeroize_on_drop() {
        use hmac::digest::block_api::CoreProxy;
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroize_on_drop::<<Sha256 as CoreProxy>::Core>();
        zeroize_on_drop::<<Sha384 as CoreProxy>::Core>();
        zeroize_on_drop::<<Sha512 as CoreProxy>::Core>();
        zeroize_on_drop::<Sha256>();
    }

    fn h(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5869 appendix A.1 (SHA-256, basic case).
    #[test]
    fn rfc5869_case_1() {
        let ikm = h("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let salt = h("000102030405060708090a0b0c");
        let info = h("f0f1f2f3f4f5f6f7f8f9");
        let prk = HashAlg::Sha256.extract(&salt, &[&ikm[..5], &ikm[5..]]);
        assert_eq!(
            prk.as_slice(),
            h("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let okm = HashAlg::Sha256
            .expand(&prk, &[&info[..3], &info[3..]], 42)
            .unwrap();
        assert_eq!(
            okm.as_slice(),
            h(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
            )
        );
    }

    /// RFC 5869 appendix A.3 (SHA-256, empty salt and info).
    #[test]
    fn rfc5869_case_3() {
        let ikm = h("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let prk = HashAlg::Sha256.extract(&[], &[&ikm]);
        assert_eq!(
            prk.as_slice(),
            h("19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04")
        );
        let okm = HashAlg::Sha256.expand(&prk, &[], 42).unwrap();
        assert_eq!(
            okm.as_slice(),
            h(
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
            )
        );
    }

    #[test]
    fn expand_limit() {
        let prk = [7u8; 32];
        assert!(HashAlg::Sha256.expand(&prk, &[], 255 * 32).is_ok());
        assert_eq!(
            HashAlg::Sha256.expand(&prk, &[], 255 * 32 + 1).unwrap_err(),
            OutputTooLong
        );
    }
}
