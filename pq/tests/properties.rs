//! Property tests over every parameter set: round trips through the uniform traits,
//! prepared and fresh encapsulation agreeing, seeds and encodings round-tripping, and
//! DeriveKeyPair being deterministic and profile-dependent.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_pq::{
    DeriveProfile, Ed25519, Kem, MlDsa44, MlDsa44Ed25519, MlDsa65, MlDsa65Ed25519, MlDsa87,
    MlKem768, MlKem1024, SignatureScheme, XWing,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fn kem_round_trip<K: Kem>(rng_seed: u64, eseed: &[u8]) {
    let mut rng = ChaCha20Rng::seed_from_u64(rng_seed);
    let dk = K::generate(&mut rng).unwrap();
    assert_eq!(K::seed(&dk).len(), K::SEED_LEN);
    let ek_bytes = K::encapsulation_key(&dk).as_ref().to_vec();
    assert_eq!(ek_bytes.len(), K::EK_LEN);

    // The seed is the whole private key.
    let dk2 = K::decapsulation_key_from_seed(K::seed(&dk)).unwrap();
    assert_eq!(K::encapsulation_key(&dk2).as_ref(), ek_bytes.as_slice());

    // Randomised encapsulation.
    let ek = K::encapsulation_key_from_bytes(&ek_bytes).unwrap();
    let (ct, ss) = K::encapsulate(&ek, &mut rng).unwrap();
    assert_eq!(ct.as_ref().len(), K::CT_LEN);
    assert_eq!(K::decapsulate(&dk, &ct).unwrap().as_bytes(), ss.as_bytes());

    // Derandomised: fresh and prepared agree byte for byte, and decapsulate.
    let (ct1, ss1) = K::encapsulate_derand(&ek, eseed).unwrap();
    let prepared = K::prepare(&ek);
    let (ct2, ss2) = K::encapsulate_prepared_derand(&prepared, eseed).unwrap();
    assert_eq!(ct1.as_ref(), ct2.as_ref());
    assert_eq!(ss1.as_bytes(), ss2.as_bytes());
    let parsed = K::ciphertext_from_bytes(ct1.as_ref()).unwrap();
    assert_eq!(
        K::decapsulate(&dk2, &parsed).unwrap().as_bytes(),
        ss1.as_bytes()
    );

    // Randomised prepared encapsulation.
    let (ct3, ss3) = K::encapsulate_prepared(&prepared, &mut rng).unwrap();
    assert_eq!(
        K::decapsulate(&dk, &ct3).unwrap().as_bytes(),
        ss3.as_bytes()
    );
}

fn kem_derive<K: Kem>(ikm: &[u8]) {
    for profile in [DeriveProfile::HpkePq, DeriveProfile::Plain] {
        let a = K::derive_key_pair(ikm, profile);
        let b = K::derive_key_pair(ikm, profile);
        assert_eq!(K::seed(&a), K::seed(&b));
        assert_eq!(
            K::encapsulation_key(&a).as_ref(),
            K::encapsulation_key(&b).as_ref()
        );
    }
    let spec = K::derive_key_pair(ikm, DeriveProfile::HpkePq);
    let plain = K::derive_key_pair(ikm, DeriveProfile::Plain);
    assert_ne!(K::seed(&spec), K::seed(&plain));
}

fn sig_round_trip<S: SignatureScheme>(rng_seed: u64, msg: &[u8], ctx: &[u8]) {
    let ctx = &ctx[..ctx.len().min(S::MAX_CONTEXT_LEN)];
    let mut rng = ChaCha20Rng::seed_from_u64(rng_seed);
    let sk = S::generate(&mut rng).unwrap();
    assert_eq!(S::seed(&sk).len(), S::SEED_LEN);
    let vk_bytes = S::verifying_key(&sk).as_ref().to_vec();
    assert_eq!(vk_bytes.len(), S::VK_LEN);
    let sk2 = S::signing_key_from_seed(S::seed(&sk)).unwrap();
    assert_eq!(S::verifying_key(&sk2).as_ref(), vk_bytes.as_slice());
    let vk = S::verifying_key_from_bytes(&vk_bytes).unwrap();

    let sig = S::sign(&sk, msg, ctx, &mut rng).unwrap();
    assert_eq!(sig.as_ref().len(), S::SIG_LEN);
    S::verify(&vk, msg, ctx, &sig).unwrap();
    let parsed = S::signature_from_bytes(sig.as_ref()).unwrap();
    S::verify(&vk, msg, ctx, &parsed).unwrap();

    let d1 = S::sign_deterministic(&sk, msg, ctx).unwrap();
    let d2 = S::sign_deterministic(&sk2, msg, ctx).unwrap();
    assert_eq!(d1.as_ref(), d2.as_ref());
    S::verify(&vk, msg, ctx, &d1).unwrap();

    // A different message does not verify.
    let mut other = msg.to_vec();
    other.push(0x01);
    assert!(S::verify(&vk, &other, ctx, &sig).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn ml_kem_768_round_trip(rng_seed: u64, eseed in prop::array::uniform32(any::<u8>())) {
        kem_round_trip::<MlKem768>(rng_seed, &eseed);
    }

    #[test]
    fn ml_kem_1024_round_trip(rng_seed: u64, eseed in prop::array::uniform32(any::<u8>())) {
        kem_round_trip::<MlKem1024>(rng_seed, &eseed);
    }

    #[test]
    fn xwing_round_trip(rng_seed: u64, eseed in prop::collection::vec(any::<u8>(), 64)) {
        kem_round_trip::<XWing>(rng_seed, &eseed);
    }

    #[test]
    fn derive_key_pair_deterministic(ikm in prop::collection::vec(any::<u8>(), 0..100)) {
        kem_derive::<MlKem768>(&ikm);
        kem_derive::<MlKem1024>(&ikm);
        kem_derive::<XWing>(&ikm);
    }

    #[test]
    fn ml_dsa_round_trip(
        rng_seed: u64,
        msg in prop::collection::vec(any::<u8>(), 0..300),
        ctx in prop::collection::vec(any::<u8>(), 0..=255),
    ) {
        sig_round_trip::<MlDsa44>(rng_seed, &msg, &ctx);
        sig_round_trip::<MlDsa65>(rng_seed, &msg, &ctx);
        sig_round_trip::<MlDsa87>(rng_seed, &msg, &ctx);
    }

    #[test]
    fn ed25519_and_composite_round_trip(
        rng_seed: u64,
        msg in prop::collection::vec(any::<u8>(), 0..300),
        ctx in prop::collection::vec(any::<u8>(), 0..=255),
    ) {
        sig_round_trip::<Ed25519>(rng_seed, &msg, &ctx);
        sig_round_trip::<MlDsa44Ed25519>(rng_seed, &msg, &ctx);
        sig_round_trip::<MlDsa65Ed25519>(rng_seed, &msg, &ctx);
    }
}
