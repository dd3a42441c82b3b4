//! Differential tests against the oracles of DESIGN.md item 3, on random seeds and
//! messages: RustCrypto `ml-kem`, `x-wing` (its non-contributory-rejecting key type) and
//! `ml-dsa`, and `libcrux-kem`'s X-Wing. Keys, ciphertexts, shared secrets and
//! deterministic signatures must be equal byte for byte; decapsulation of arbitrary
//! ciphertexts (implicit rejection) must agree too.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ml_kem::{Decapsulate as _, KeyExport as _};
use pqmls_pq::{Kem, MlDsa44, MlDsa65, MlDsa87, MlKem768, MlKem1024, SignatureScheme, XWing};
use proptest::prelude::*;
use x_wing::{Decapsulator as _, TryDecapsulate as _};

/// Ours against RustCrypto `ml-kem` for one parameter set (a macro: the oracle's
/// parameter traits are not all public).
macro_rules! ml_kem_agrees {
    ($ours:ty, $theirs:ty, $seed:expr, $m:expr, $junk:expr) => {{
        let (seed, m, junk_ct): (&[u8; 64], &[u8; 32], &[u8]) = ($seed, $m, $junk);
        let theirs = ml_kem::DecapsulationKey::<$theirs>::from_seed((*seed).into());
        let ours = <$ours>::decapsulation_key_from_seed(seed).unwrap();
        let their_ek = theirs.encapsulation_key().to_bytes();
        assert_eq!(
            <$ours>::encapsulation_key(&ours).as_ref(),
            their_ek.as_slice()
        );

        let (their_ct, their_ss) = theirs
            .encapsulation_key()
            .encapsulate_deterministic(&(*m).into());
        let (our_ct, our_ss) =
            <$ours>::encapsulate_derand(<$ours>::encapsulation_key(&ours), m).unwrap();
        assert_eq!(our_ct.as_ref(), their_ct.as_slice());
        assert_eq!(our_ss.as_bytes().as_slice(), their_ss.as_slice());

        // Implicit rejection on an arbitrary ciphertext of the right length.
        let junk: Vec<u8> = junk_ct
            .iter()
            .copied()
            .cycle()
            .take(<$ours>::CT_LEN)
            .collect();
        let their_junk = ml_kem::Ciphertext::<$theirs>::try_from(junk.as_slice()).unwrap();
        let our_junk = <$ours>::ciphertext_from_bytes(&junk).unwrap();
        assert_eq!(
            <$ours>::decapsulate(&ours, &our_junk)
                .unwrap()
                .as_bytes()
                .as_slice(),
            theirs.decapsulate(&their_junk).as_slice()
        );
    }};
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn ml_kem_matches_rustcrypto(
        seed in prop::array::uniform32(any::<u8>()),
        seed_hi in prop::array::uniform32(any::<u8>()),
        m in prop::array::uniform32(any::<u8>()),
        junk in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let mut full = [0u8; 64];
        full[..32].copy_from_slice(&seed);
        full[32..].copy_from_slice(&seed_hi);
        ml_kem_agrees!(MlKem768, ml_kem::MlKem768, &full, &m, &junk);
        ml_kem_agrees!(MlKem1024, ml_kem::MlKem1024, &full, &m, &junk);
    }

    #[test]
    fn xwing_matches_rustcrypto_and_libcrux(
        seed in prop::array::uniform32(any::<u8>()),
        eseed in prop::collection::vec(any::<u8>(), 64),
        junk in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let ours = XWing::decapsulation_key_from_seed(&seed).unwrap();
        let ek = XWing::encapsulation_key(&ours);

        // RustCrypto x-wing.
        let rc = x_wing::DecapsulationKeyRejectNonContrib::from(seed);
        let rc_ek = rc.encapsulation_key();
        prop_assert_eq!(ek.as_ref().to_vec(), x_wing::KeyExport::to_bytes(rc_ek).to_vec());
        let eseed_arr: [u8; 64] = eseed.clone().try_into().unwrap();
        let (rc_ct, rc_ss) = rc_ek.encapsulate_deterministic(&eseed_arr.into());
        let (ct, ss) = XWing::encapsulate_derand(ek, &eseed).unwrap();
        prop_assert_eq!(ct.as_ref(), &rc_ct[..]);
        prop_assert_eq!(ss.as_bytes().as_slice(), rc_ss.as_slice());

        // libcrux-kem X-Wing.
        let alg = libcrux_kem::Algorithm::XWingKemDraft06;
        let (lc_sk, lc_pk) = libcrux_kem::key_gen_derand(alg, &seed).unwrap();
        prop_assert_eq!(ek.as_ref().to_vec(), lc_pk.encode());
        let (lc_ss, lc_ct) = lc_pk.encapsulate_derand(&eseed).unwrap();
        prop_assert_eq!(ct.as_ref().to_vec(), lc_ct.encode());
        prop_assert_eq!(ss.as_bytes().to_vec(), lc_ss.encode());

        // Decapsulation of an arbitrary ciphertext: same secret, or all reject.
        let junk: Vec<u8> = junk.iter().copied().cycle().take(XWing::CT_LEN).collect();
        let our_ss = XWing::decapsulate(&ours, &XWing::ciphertext_from_bytes(&junk).unwrap());
        let rc_ss = rc.try_decapsulate(&x_wing::Ciphertext::try_from(junk.as_slice()).unwrap());
        let lc_ss = libcrux_kem::Ct::decode(alg, &junk).and_then(|ct| ct.decapsulate(&lc_sk));
        match our_ss {
            Ok(ss) => {
                prop_assert_eq!(ss.as_bytes().to_vec(), rc_ss.unwrap().to_vec());
                prop_assert_eq!(ss.as_bytes().to_vec(), lc_ss.unwrap().encode());
            }
            Err(_) => {
                prop_assert!(rc_ss.is_err());
                prop_assert!(lc_ss.is_err());
            }
        }
    }

    #[test]
    fn ml_dsa_matches_rustcrypto(
        seed in prop::array::uniform32(any::<u8>()),
        msg in prop::collection::vec(any::<u8>(), 0..200),
        ctx in prop::collection::vec(any::<u8>(), 0..=255),
    ) {
        ml_dsa_agrees::<MlDsa44, ml_dsa::MlDsa44>(&seed, &msg, &ctx);
        ml_dsa_agrees::<MlDsa65, ml_dsa::MlDsa65>(&seed, &msg, &ctx);
        ml_dsa_agrees::<MlDsa87, ml_dsa::MlDsa87>(&seed, &msg, &ctx);
    }
}

fn ml_dsa_agrees<S: SignatureScheme, P: ml_dsa::MlDsaParams>(
    seed: &[u8; 32],
    msg: &[u8],
    ctx: &[u8],
) {
    let ours = S::signing_key_from_seed(seed).unwrap();
    let theirs = ml_dsa::ExpandedSigningKey::<P>::from_seed(&(*seed).into());
    let their_vk = theirs.verifying_key();
    assert_eq!(
        S::verifying_key(&ours).as_ref(),
        their_vk.encode().as_slice()
    );

    // FIPS 204's deterministic variant is a function of (key, message, context).
    let our_sig = S::sign_deterministic(&ours, msg, ctx).unwrap();
    let their_sig = theirs.sign_deterministic(msg, ctx).unwrap();
    assert_eq!(our_sig.as_ref(), their_sig.encode().as_slice());

    // Hedged signatures verify across implementations.
    let hedged = S::sign_derand(&ours, msg, ctx, &[0x5a; 32]).unwrap();
    let enc = ml_dsa::EncodedSignature::<P>::try_from(hedged.as_ref()).unwrap();
    let decoded = ml_dsa::Signature::<P>::decode(&enc).unwrap();
    assert!(their_vk.verify_with_context(msg, ctx, &decoded));
    let mut bad = msg.to_vec();
    bad.push(1);
    assert!(!their_vk.verify_with_context(&bad, ctx, &decoded));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// X25519, fresh (HACL* ladder) and prepared (dalek table) paths, against
    /// x25519-dalek on arbitrary 32-byte `u` (high bit set, non-canonical and twist
    /// points included): same result, and an error exactly when it is all zero.
    #[test]
    fn x25519_matches_x25519_dalek(k in prop::array::uniform32(any::<u8>()), u in prop::array::uniform32(any::<u8>())) {
        use pqmls_pq::kem::x25519::{PreparedPublicKey, PublicKey, SecretKey};
        let theirs = x25519_dalek::StaticSecret::from(k).diffie_hellman(&x25519_dalek::PublicKey::from(u));
        let sk = SecretKey::from_seed(pqmls_pq::Seed32::from_bytes(k));
        let pk = PublicKey::from_bytes(u);
        let fresh = sk.diffie_hellman(&pk);
        let prepared = sk.diffie_hellman_prepared(&PreparedPublicKey::new(&pk));
        if theirs.as_bytes() == &[0u8; 32] {
            prop_assert!(fresh.is_err() && prepared.is_err());
        } else {
            prop_assert_eq!(*fresh.unwrap().as_bytes(), *theirs.as_bytes());
            prop_assert_eq!(*prepared.unwrap().as_bytes(), *theirs.as_bytes());
        }
        let their_pk = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(k));
        prop_assert_eq!(*sk.public_key().as_bytes(), *their_pk.as_bytes());
    }
}
