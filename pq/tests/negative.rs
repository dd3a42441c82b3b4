//! Negative tests: what must be rejected, and how.
//!
//! - Tampered ML-KEM ciphertexts decapsulate to the implicit-rejection value
//!   `K̄ = J(z || c) = SHAKE256(z || c, 32)` (FIPS 203 Algorithm 18, steps 7-10),
//!   recomputed here from the spec formula; in X-Wing that value enters the combiner.
//! - Encapsulation keys failing the FIPS 203 section 7.2 modulus check.
//! - Every wrong length of every input.
//! - Small-order X25519 points (all-zero shared secret), in both X-Wing directions.
//! - Composite signatures with each component broken or stripped; ML-DSA and Ed25519
//!   signatures altered; context strings too long or not supported.
//! - Secrets print as `<redacted>`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_pq::{
    Ed25519, Error, Kem, MlDsa44, MlDsa44Ed25519, MlDsa65, MlDsa65Ed25519, MlDsa87, MlKem768,
    MlKem1024, SignatureScheme, XWing,
    sig::{composite::PREFIX, ml_dsa::ml_dsa_65},
};
use sha2::{Digest, Sha512};

/// Small-order Curve25519 `u` encodings (0, 1, the two order-8 points, p - 1, p, p + 1),
/// the list libsodium and others reject; every one gives an all-zero X25519 result.
const SMALL_ORDER: [&str; 7] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

fn implicit_rejection_value(z: &[u8], ct: &[u8]) -> [u8; 32] {
    let mut input = z.to_vec();
    input.extend_from_slice(ct);
    libcrux_sha3::shake256::<32>(&input)
}

fn tampered_ml_kem<K: Kem>() {
    let seed: Vec<u8> = (0..64u8).collect();
    let dk = K::decapsulation_key_from_seed(&seed).unwrap();
    let (ct, ss) = K::encapsulate_derand(K::encapsulation_key(&dk), &[0x42; 32]).unwrap();
    for position in [0, K::CT_LEN / 2, K::CT_LEN - 1] {
        let mut bad = ct.as_ref().to_vec();
        bad[position] ^= 0x01;
        let bad_ct = K::ciphertext_from_bytes(&bad).unwrap();
        let got = K::decapsulate(&dk, &bad_ct).unwrap();
        assert_ne!(
            got.as_bytes(),
            ss.as_bytes(),
            "{} position {position}",
            K::NAME
        );
        // z is the second half of the seed d || z.
        assert_eq!(
            got.as_bytes(),
            &implicit_rejection_value(&seed[32..], &bad),
            "{}",
            K::NAME
        );
    }
}

#[test]
fn tampered_ml_kem_ciphertexts_give_the_implicit_rejection_value() {
    tampered_ml_kem::<MlKem768>();
    tampered_ml_kem::<MlKem1024>();
}

#[test]
fn tampered_xwing_ciphertexts() {
    let seed = [0x24u8; 32];
    let dk = XWing::decapsulation_key_from_seed(&seed).unwrap();
    let ek = XWing::encapsulation_key(&dk);
    let (ct, ss) = XWing::encapsulate_derand(ek, &[0x17; 64]).unwrap();

    // Tampered ct_m: ss_m becomes J(z_m || ct_m'), then the combiner as usual.
    let expanded = libcrux_sha3::shake256::<96>(&seed);
    let mut bad = ct.as_ref().to_vec();
    bad[10] ^= 0x80;
    let got = XWing::decapsulate(&dk, &XWing::ciphertext_from_bytes(&bad).unwrap()).unwrap();
    let ss_m = implicit_rejection_value(&expanded[32..64], &bad[..1088]);
    let sk_x = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(&expanded[64..]).unwrap());
    let ct_x: [u8; 32] = bad[1088..].try_into().unwrap();
    let ss_x = sk_x.diffie_hellman(&x25519_dalek::PublicKey::from(ct_x));
    let pk_x = &ek.as_ref()[1184..];
    let mut combiner_input = Vec::new();
    combiner_input.extend_from_slice(&ss_m);
    combiner_input.extend_from_slice(ss_x.as_bytes());
    combiner_input.extend_from_slice(&ct_x);
    combiner_input.extend_from_slice(pk_x);
    combiner_input.extend_from_slice(br"\.//^\");
    assert_eq!(got.as_bytes(), &libcrux_sha3::sha256(&combiner_input));
    assert_ne!(got.as_bytes(), ss.as_bytes());

    // Tampered ct_x: a different (valid, contributory) point gives a different secret.
    let mut bad = ct.as_ref().to_vec();
    bad[1100] ^= 0x01;
    match XWing::decapsulate(&dk, &XWing::ciphertext_from_bytes(&bad).unwrap()) {
        Ok(got) => assert_ne!(got.as_bytes(), ss.as_bytes()),
        Err(e) => assert_eq!(e, Error::NonContributory),
    }
}

/// Sets the first 12-bit coefficient of the encoded `t̂` to 4095 >= q = 3329.
fn break_modulus(ek: &mut [u8]) {
    ek[0] = 0xff;
    ek[1] |= 0x0f;
}

fn invalid_modulus<K: Kem>() {
    let dk = K::decapsulation_key_from_seed(&vec![9u8; K::SEED_LEN]).unwrap();
    let mut ek = K::encapsulation_key(&dk).as_ref().to_vec();
    break_modulus(&mut ek);
    assert!(matches!(
        K::encapsulation_key_from_bytes(&ek),
        Err(Error::InvalidEncapsulationKey)
    ));
    // The last coefficient too (bytes 382-383 of each 384-byte polynomial block).
    let mut ek = K::encapsulation_key(&dk).as_ref().to_vec();
    ek[383] = 0xff;
    ek[382] |= 0xf0;
    assert!(matches!(
        K::encapsulation_key_from_bytes(&ek),
        Err(Error::InvalidEncapsulationKey)
    ));
    // q itself (3329 = 0xd01) is not reduced; q - 1 is.
    for (value, ok) in [(3329u16, false), (3328u16, true)] {
        let mut ek = K::encapsulation_key(&dk).as_ref().to_vec();
        ek[0] = (value & 0xff) as u8;
        ek[1] = (ek[1] & 0xf0) | (value >> 8) as u8;
        assert_eq!(
            K::encapsulation_key_from_bytes(&ek).is_ok(),
            ok,
            "{} value {value}",
            K::NAME
        );
    }
}

#[test]
fn encapsulation_keys_failing_the_modulus_check_are_rejected() {
    invalid_modulus::<MlKem768>();
    invalid_modulus::<MlKem1024>();
    invalid_modulus::<XWing>();
}

fn is_length_error<T>(r: Result<T, Error>, expected: usize, actual: usize) -> bool {
    matches!(r, Err(Error::InvalidLength { expected: e, actual: a, .. }) if e == expected && a == actual)
}

fn kem_wrong_lengths<K: Kem>() {
    for len in [0, K::SEED_LEN - 1, K::SEED_LEN + 1] {
        assert!(is_length_error(
            K::decapsulation_key_from_seed(&vec![1; len]),
            K::SEED_LEN,
            len
        ));
    }
    for len in [0, 32, K::EK_LEN - 1, K::EK_LEN + 1] {
        assert!(is_length_error(
            K::encapsulation_key_from_bytes(&vec![1; len]),
            K::EK_LEN,
            len
        ));
    }
    for len in [0, K::CT_LEN - 1, K::CT_LEN + 1] {
        assert!(is_length_error(
            K::ciphertext_from_bytes(&vec![1; len]),
            K::CT_LEN,
            len
        ));
    }
    let dk = K::decapsulation_key_from_seed(&vec![3; K::SEED_LEN]).unwrap();
    let ek = K::encapsulation_key(&dk);
    let prepared = K::prepare(ek);
    for len in [0, K::ESEED_LEN - 1, K::ESEED_LEN + 1] {
        assert!(is_length_error(
            K::encapsulate_derand(ek, &vec![1; len]),
            K::ESEED_LEN,
            len
        ));
        assert!(is_length_error(
            K::encapsulate_prepared_derand(&prepared, &vec![1; len]),
            K::ESEED_LEN,
            len
        ));
    }
}

fn sig_wrong_lengths<S: SignatureScheme>() {
    for len in [0, S::SEED_LEN - 1, S::SEED_LEN + 1] {
        assert!(is_length_error(
            S::signing_key_from_seed(&vec![1; len]),
            S::SEED_LEN,
            len
        ));
    }
    for len in [0, S::VK_LEN - 1, S::VK_LEN + 1] {
        assert!(is_length_error(
            S::verifying_key_from_bytes(&vec![1; len]),
            S::VK_LEN,
            len
        ));
    }
    for len in [0, S::SIG_LEN - 1, S::SIG_LEN + 1] {
        assert!(is_length_error(
            S::signature_from_bytes(&vec![1; len]),
            S::SIG_LEN,
            len
        ));
    }
}

#[test]
fn every_wrong_length_is_a_length_error() {
    kem_wrong_lengths::<MlKem768>();
    kem_wrong_lengths::<MlKem1024>();
    kem_wrong_lengths::<XWing>();
    sig_wrong_lengths::<MlDsa44>();
    sig_wrong_lengths::<MlDsa65>();
    sig_wrong_lengths::<MlDsa87>();
    sig_wrong_lengths::<Ed25519>();
    sig_wrong_lengths::<MlDsa44Ed25519>();
    sig_wrong_lengths::<MlDsa65Ed25519>();
}

#[test]
fn small_order_x25519_points_are_rejected_in_xwing() {
    let dk = XWing::decapsulation_key_from_seed(&[5; 32]).unwrap();
    let ek = XWing::encapsulation_key(&dk).as_ref().to_vec();
    let (ct, _) = XWing::encapsulate_derand(XWing::encapsulation_key(&dk), &[6; 64]).unwrap();
    for u in SMALL_ORDER {
        let u = hex::decode(u).unwrap();
        // As the recipient's pk_x: encapsulation fails, fresh and prepared.
        let mut bad_ek = ek.clone();
        bad_ek[1184..].copy_from_slice(&u);
        let bad_ek = XWing::encapsulation_key_from_bytes(&bad_ek).unwrap();
        assert_eq!(
            XWing::encapsulate_derand(&bad_ek, &[6; 64]).err(),
            Some(Error::NonContributory)
        );
        let prepared = XWing::prepare(&bad_ek);
        assert_eq!(
            XWing::encapsulate_prepared_derand(&prepared, &[6; 64]).err(),
            Some(Error::NonContributory)
        );
        // As a ciphertext's ct_x: decapsulation fails.
        let mut bad_ct = ct.as_ref().to_vec();
        bad_ct[1088..].copy_from_slice(&u);
        let bad_ct = XWing::ciphertext_from_bytes(&bad_ct).unwrap();
        assert_eq!(
            XWing::decapsulate(&dk, &bad_ct).err(),
            Some(Error::NonContributory)
        );
    }
}

fn composite_components_broken<S: SignatureScheme>(ml_sig_len: usize) {
    let sk = S::signing_key_from_seed(&[0x33; 64]).unwrap();
    let vk = S::verifying_key(&sk);
    let (msg, ctx) = (b"composite message".as_slice(), b"app".as_slice());
    let sig = S::sign_deterministic(&sk, msg, ctx).unwrap();
    S::verify(vk, msg, ctx, &sig).unwrap();
    // ML-DSA component broken (first byte, last byte), Ed25519 component broken (R, S).
    for position in [0, ml_sig_len - 1, ml_sig_len, ml_sig_len + 40] {
        let mut bad = sig.as_ref().to_vec();
        bad[position] ^= 0x01;
        let bad = S::signature_from_bytes(&bad).unwrap();
        assert_eq!(
            S::verify(vk, msg, ctx, &bad).err(),
            Some(Error::InvalidSignature),
            "{position}"
        );
    }
    // Wrong message, wrong context, empty context.
    assert_eq!(
        S::verify(vk, b"other", ctx, &sig).err(),
        Some(Error::InvalidSignature)
    );
    assert_eq!(
        S::verify(vk, msg, b"apq", &sig).err(),
        Some(Error::InvalidSignature)
    );
    assert_eq!(
        S::verify(vk, msg, b"", &sig).err(),
        Some(Error::InvalidSignature)
    );
    // Context too long, signing and verifying.
    assert_eq!(
        S::sign_deterministic(&sk, msg, &[0; 256]).err(),
        Some(Error::ContextTooLong { len: 256 })
    );
    assert_eq!(
        S::verify(vk, msg, &[0; 256], &sig).err(),
        Some(Error::ContextTooLong { len: 256 })
    );
}

#[test]
fn composite_signatures_with_a_broken_component_fail() {
    composite_components_broken::<MlDsa44Ed25519>(2420);
    composite_components_broken::<MlDsa65Ed25519>(3309);
}

/// Separability: an ML-DSA signature on `M'` made with the empty context (what a
/// stand-alone ML-DSA key would produce) does not pass as the composite's component,
/// because the composite signs with context = Label.
#[test]
fn composite_rejects_a_component_signed_without_the_label_context() {
    let seed = [0x44u8; 64];
    let sk = MlDsa65Ed25519::signing_key_from_seed(&seed).unwrap();
    let vk = MlDsa65Ed25519::verifying_key(&sk);
    let msg = b"message";
    let good = MlDsa65Ed25519::sign_deterministic(&sk, msg, b"").unwrap();
    let mut m_prime = PREFIX.to_vec();
    m_prime.extend_from_slice(b"COMPSIG-MLDSA65-Ed25519-SHA512");
    m_prime.push(0);
    m_prime.extend_from_slice(&Sha512::digest(msg));
    let ml = ml_dsa_65::SigningKey::from_seed(pqmls_pq::Seed32::from_bytes([0x44; 32]));
    let stripped = ml.sign_derand(&m_prime, b"", &[0; 32]).unwrap();
    let mut forged = stripped.as_ref().to_vec();
    forged.extend_from_slice(&good.as_ref()[3309..]);
    let forged = MlDsa65Ed25519::signature_from_bytes(&forged).unwrap();
    assert_eq!(
        MlDsa65Ed25519::verify(vk, msg, b"", &forged).err(),
        Some(Error::InvalidSignature)
    );
    // With the label as context it is exactly the composite's component.
    let with_label = ml
        .sign_derand(&m_prime, b"COMPSIG-MLDSA65-Ed25519-SHA512", &[0; 32])
        .unwrap();
    assert_eq!(with_label.as_ref(), &good.as_ref()[..3309]);
}

fn ml_dsa_negative<S: SignatureScheme>() {
    let sk = S::signing_key_from_seed(&[0x21; 32]).unwrap();
    let vk = S::verifying_key(&sk);
    let sig = S::sign_deterministic(&sk, b"msg", b"ctx").unwrap();
    for position in [0, S::SIG_LEN / 2, S::SIG_LEN - 1] {
        let mut bad = sig.as_ref().to_vec();
        bad[position] ^= 0x04;
        let bad = S::signature_from_bytes(&bad).unwrap();
        assert_eq!(
            S::verify(vk, b"msg", b"ctx", &bad).err(),
            Some(Error::InvalidSignature)
        );
    }
    assert_eq!(
        S::verify(vk, b"msg", b"ctz", &sig).err(),
        Some(Error::InvalidSignature)
    );
    // Another key.
    let other = S::signing_key_from_seed(&[0x22; 32]).unwrap();
    assert_eq!(
        S::verify(S::verifying_key(&other), b"msg", b"ctx", &sig).err(),
        Some(Error::InvalidSignature)
    );
    // Context length: 255 is the limit.
    let long = S::sign_deterministic(&sk, b"msg", &[7; 255]).unwrap();
    S::verify(vk, b"msg", &[7; 255], &long).unwrap();
    assert_eq!(
        S::sign_deterministic(&sk, b"msg", &[7; 256]).err(),
        Some(Error::ContextTooLong { len: 256 })
    );
    assert_eq!(
        S::verify(vk, b"msg", &[7; 256], &long).err(),
        Some(Error::ContextTooLong { len: 256 })
    );
}

#[test]
fn ml_dsa_rejects_altered_signatures_and_long_contexts() {
    ml_dsa_negative::<MlDsa44>();
    ml_dsa_negative::<MlDsa65>();
    ml_dsa_negative::<MlDsa87>();
}

#[test]
fn ed25519_is_strict_and_takes_no_context() {
    let sk = Ed25519::signing_key_from_seed(&[0x55; 32]).unwrap();
    let vk = Ed25519::verifying_key(&sk);
    let sig = Ed25519::sign_deterministic(&sk, b"msg", b"").unwrap();
    Ed25519::verify(vk, b"msg", b"", &sig).unwrap();
    assert_eq!(
        Ed25519::sign_deterministic(&sk, b"msg", b"x").err(),
        Some(Error::ContextNotSupported)
    );
    assert_eq!(
        Ed25519::verify(vk, b"msg", b"x", &sig).err(),
        Some(Error::ContextNotSupported)
    );
    // S + L (non-canonical S) verifies under a lax verifier but not a strict one.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut bytes = sig.as_ref().to_vec();
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(bytes[32 + i]) + u16::from(L[i]) + carry;
        bytes[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    let malleated = Ed25519::signature_from_bytes(&bytes).unwrap();
    assert_eq!(
        Ed25519::verify(vk, b"msg", b"", &malleated).err(),
        Some(Error::InvalidSignature)
    );
    // A public key that is not a point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    assert!(Ed25519::verifying_key_from_bytes(&not_a_point).is_err());
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let xwing = XWing::decapsulation_key_from_seed(&[1; 32]).unwrap();
    let mlkem = MlKem768::decapsulation_key_from_seed(&[1; 64]).unwrap();
    let mldsa = MlDsa65::signing_key_from_seed(&[1; 32]).unwrap();
    let composite = MlDsa65Ed25519::signing_key_from_seed(&[1; 64]).unwrap();
    let ed = Ed25519::signing_key_from_seed(&[1; 32]).unwrap();
    let (_, ss) = XWing::encapsulate_derand(XWing::encapsulation_key(&xwing), &[2; 64]).unwrap();
    for text in [
        format!("{xwing:?}"),
        format!("{mlkem:?}"),
        format!("{mldsa:?}"),
        format!("{composite:?}"),
        format!("{ed:?}"),
        format!("{ss:?}"),
    ] {
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains("0101"), "{text}");
    }
}
