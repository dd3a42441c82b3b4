//! The AEADs of MLS and HPKE: AES-128-GCM and AES-256-GCM (RustCrypto `aes-gcm`, which uses
//! AES-NI and CLMUL when the CPU has them) and ChaCha20-Poly1305 (RFC 8439, RustCrypto
//! `chacha20poly1305`). All take a 12-byte nonce and append a 16-byte tag.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Tag};

type Nonce = aes_gcm::Nonce<U12>;
use chacha20poly1305::ChaCha20Poly1305;

/// An AEAD algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AeadAlg {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    ChaCha20Poly1305,
}

/// Why an AEAD operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadError {
    /// Key or nonce of the wrong length, or a ciphertext shorter than the tag.
    InvalidLength,
    /// The tag did not verify: the ciphertext, the AAD, the key or the nonce is wrong.
    Decryption,
}

/// Tag length of every AEAD here.
pub const TAG_LEN: usize = 16;
/// Nonce length of every AEAD here.
pub const NONCE_LEN: usize = 12;

impl AeadAlg {
    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            AeadAlg::Aes128Gcm => 16,
            AeadAlg::Aes256Gcm | AeadAlg::ChaCha20Poly1305 => 32,
        }
    }

    /// Encrypts `pt`, returning `ct || tag`.
    ///
    /// # Errors
    /// [`AeadError::InvalidLength`] for a wrong key or nonce length.
    pub fn seal(
        self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        pt: &[u8],
    ) -> Result<Vec<u8>, AeadError> {
        if key.len() != self.key_len() || nonce.len() != NONCE_LEN {
            return Err(AeadError::InvalidLength);
        }
        let mut buf = Vec::with_capacity(pt.len() + TAG_LEN);
        buf.extend_from_slice(pt);
        let nonce = Nonce::from_slice(nonce);
        let tag = match self {
            AeadAlg::Aes128Gcm => seal_with::<Aes128Gcm>(key, nonce, aad, &mut buf),
            AeadAlg::Aes256Gcm => seal_with::<Aes256Gcm>(key, nonce, aad, &mut buf),
            AeadAlg::ChaCha20Poly1305 => seal_with::<ChaCha20Poly1305>(key, nonce, aad, &mut buf),
        }?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    /// Decrypts and verifies `ct || tag`.
    ///
    /// # Errors
    /// [`AeadError::InvalidLength`] for wrong key or nonce lengths or a ciphertext shorter
    /// than the tag; [`AeadError::Decryption`] if the tag does not verify.
    pub fn open(
        self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Vec<u8>, AeadError> {
        if key.len() != self.key_len() || nonce.len() != NONCE_LEN || ct.len() < TAG_LEN {
            return Err(AeadError::InvalidLength);
        }
        let (body, tag) = ct.split_at(ct.len() - TAG_LEN);
        let mut buf = body.to_vec();
        let nonce = Nonce::from_slice(nonce);
        let tag = Tag::from_slice(tag);
        match self {
            AeadAlg::Aes128Gcm => open_with::<Aes128Gcm>(key, nonce, aad, &mut buf, tag),
            AeadAlg::Aes256Gcm => open_with::<Aes256Gcm>(key, nonce, aad, &mut buf, tag),
            AeadAlg::ChaCha20Poly1305 => {
                open_with::<ChaCha20Poly1305>(key, nonce, aad, &mut buf, tag)
            }
        }?;
        Ok(buf)
    }
}

fn seal_with<A>(key: &[u8], nonce: &Nonce, aad: &[u8], buf: &mut [u8]) -> Result<Tag, AeadError>
where
    A: AeadInPlace<NonceSize = U12, TagSize = aes_gcm::aead::consts::U16> + KeyInit,
{
    let cipher = A::new_from_slice(key).map_err(|_| AeadError::InvalidLength)?;
    cipher
        .encrypt_in_place_detached(nonce, aad, buf)
        .map_err(|_| AeadError::InvalidLength)
}

fn open_with<A>(
    key: &[u8],
    nonce: &Nonce,
    aad: &[u8],
    buf: &mut [u8],
    tag: &Tag,
) -> Result<(), AeadError>
where
    A: AeadInPlace<NonceSize = U12, TagSize = aes_gcm::aead::consts::U16> + KeyInit,
{
    let cipher = A::new_from_slice(key).map_err(|_| AeadError::InvalidLength)?;
    cipher
        .decrypt_in_place_detached(nonce, aad, buf, tag)
        .map_err(|_| AeadError::Decryption)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AES key schedules (round keys), ChaCha20-Poly1305's key and GHASH's key are
    /// wiped on drop: this fails to compile if a crate feature that does it is dropped.
    #[test]
    fn key_schedules_zeroize_on_drop() {
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroize_on_drop::<aes::Aes128>();
        zeroize_on_drop::<aes::Aes256>();
        zeroize_on_drop::<ChaCha20Poly1305>();
        zeroize_on_drop::<chacha20::ChaCha20>();
    }

    fn h(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8439 section 2.8.2.
    #[test]
    fn chacha20poly1305_rfc8439() {
        let key = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let nonce = h("070000004041424344454647");
        let aad = h("50515253c0c1c2c3c4c5c6c7");
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ct = AeadAlg::ChaCha20Poly1305
            .seal(&key, &nonce, &aad, pt)
            .unwrap();
        assert_eq!(&ct[..16], h("d31a8d34648e60db7b86afbc53ef7ec2").as_slice());
        assert_eq!(
            &ct[ct.len() - 16..],
            h("1ae10b594f09e26a7e902ecbd0600691").as_slice()
        );
        assert_eq!(
            AeadAlg::ChaCha20Poly1305
                .open(&key, &nonce, &aad, &ct)
                .unwrap(),
            pt
        );
    }

    #[test]
    fn tampering_and_lengths() {
        for alg in [
            AeadAlg::Aes128Gcm,
            AeadAlg::Aes256Gcm,
            AeadAlg::ChaCha20Poly1305,
        ] {
            let key = vec![1u8; alg.key_len()];
            let nonce = [2u8; NONCE_LEN];
            let mut ct = alg.seal(&key, &nonce, b"aad", b"hello").unwrap();
            assert_eq!(alg.open(&key, &nonce, b"aad", &ct).unwrap(), b"hello");
            assert_eq!(
                alg.open(&key, &nonce, b"aaD", &ct),
                Err(AeadError::Decryption)
            );
            ct[0] ^= 1;
            assert_eq!(
                alg.open(&key, &nonce, b"aad", &ct),
                Err(AeadError::Decryption)
            );
            assert_eq!(
                alg.open(&key, &nonce, b"aad", &ct[..15]),
                Err(AeadError::InvalidLength)
            );
            assert_eq!(
                alg.seal(&key[1..], &nonce, b"", b""),
                Err(AeadError::InvalidLength)
            );
            assert_eq!(
                alg.seal(&key, &nonce[1..], b"", b""),
                Err(AeadError::InvalidLength)
            );
        }
    }
}
