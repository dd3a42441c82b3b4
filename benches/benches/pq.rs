//! pqmls-pq next to its peers: X-Wing (libcrux-kem, RustCrypto x-wing), ML-KEM-768 (raw
//! libcrux-ml-kem), ML-DSA-65 (RustCrypto ml-dsa, raw libcrux-ml-dsa), and our
//! composites. Every entry is `BenchmarkId::new(implementation, parameter)`, so one run
//! gives the ratios; setup (keys, ciphertexts, signatures) is done outside the timed
//! closures.
//!
//! Quick check: `cargo bench -p pqmls-benches --bench pq -- --warm-up-time 1
//! --measurement-time 2 --noplot`. Filter a group with e.g. `-- xwing/`.

// Benchmark setup on fixed inputs: a failure is a bug to stop at, so unwrap/expect are
// the right tools here (the workspace warns on them for library code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use libcrux_traits::kem::arrayref::Kem as _;
use pqmls_pq::{Kem, MlDsa44Ed25519, MlDsa65, MlDsa65Ed25519, MlKem768, SignatureScheme, XWing};
use std::hint::black_box;
use x_wing::{Decapsulate as _, Decapsulator as _, KeyExport as _};

/// Fixed, distinct test bytes.
fn bytes<const N: usize>(tag: u8) -> [u8; N] {
    core::array::from_fn(|i| {
        (i as u8)
            .wrapping_mul(31)
            .wrapping_add(tag.wrapping_mul(101))
    })
}

const XWING: &str = "X-Wing";
const LIBCRUX_XWING: libcrux_kem::Algorithm = libcrux_kem::Algorithm::XWingKemDraft06;
/// libcrux-kem's expanded X-Wing private key: ML-KEM-768 `dk` (2400) + X25519 `sk` (32).
const LIBCRUX_XWING_DK_LEN: usize = 2400 + 32;

fn xwing(c: &mut Criterion) {
    let seed: [u8; 32] = bytes(1);
    let eseed: [u8; 64] = bytes(2);

    let dk = XWing::decapsulation_key_from_seed(&seed).unwrap();
    let ek_bytes = XWing::encapsulation_key(&dk).as_ref().to_vec();
    let (ct, _) = XWing::encapsulate_derand(XWing::encapsulation_key(&dk), &eseed).unwrap();
    let ct_bytes = ct.as_ref().to_vec();

    let rc_dk = x_wing::DecapsulationKey::from(seed);
    assert_eq!(rc_dk.encapsulation_key().to_bytes().as_slice(), ek_bytes);
    let rc_ct = x_wing::Ciphertext::try_from(ct_bytes.as_slice()).unwrap();

    let (lc_sk, lc_pk) = libcrux_kem::key_gen_derand(LIBCRUX_XWING, &seed).unwrap();
    assert_eq!(lc_pk.encode(), ek_bytes);
    let lc_ct = libcrux_kem::Ct::decode(LIBCRUX_XWING, &ct_bytes).unwrap();
    let mut lc_ek = [0u8; 1216];
    let mut lc_dk = [0u8; LIBCRUX_XWING_DK_LEN];
    libcrux_kem::XWing::keygen(&mut lc_ek, &mut lc_dk, &seed).unwrap();
    assert_eq!(lc_ek.as_slice(), ek_bytes);
    let ct_arr: [u8; 1120] = ct_bytes.as_slice().try_into().unwrap();

    {
        let mut g = c.benchmark_group("xwing/keygen");
        g.bench_function(BenchmarkId::new("pqmls", XWING), |b| {
            b.iter(|| XWing::decapsulation_key_from_seed(black_box(&seed)).unwrap())
        });
        g.bench_function(BenchmarkId::new("libcrux", XWING), |b| {
            b.iter(|| libcrux_kem::key_gen_derand(LIBCRUX_XWING, black_box(&seed)).unwrap())
        });
        g.bench_function(BenchmarkId::new("libcrux_expanded_dk", XWING), |b| {
            b.iter(|| {
                let mut ek = [0u8; 1216];
                let mut dk = [0u8; LIBCRUX_XWING_DK_LEN];
                libcrux_kem::XWing::keygen(&mut ek, &mut dk, black_box(&seed)).unwrap();
                (ek, dk)
            })
        });
        g.bench_function(BenchmarkId::new("rustcrypto", XWING), |b| {
            b.iter(|| x_wing::DecapsulationKey::from(black_box(seed)))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("xwing/encaps_fresh");
        g.bench_function(BenchmarkId::new("pqmls", XWING), |b| {
            b.iter(|| {
                let ek = XWing::encapsulation_key_from_bytes(black_box(&ek_bytes)).unwrap();
                XWing::encapsulate_derand(&ek, black_box(&eseed)).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("libcrux", XWING), |b| {
            b.iter(|| {
                let pk =
                    libcrux_kem::PublicKey::decode(LIBCRUX_XWING, black_box(&ek_bytes)).unwrap();
                pk.encapsulate_derand(black_box(&eseed)).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("rustcrypto", XWING), |b| {
            b.iter(|| {
                let ek =
                    x_wing::EncapsulationKey::try_from(black_box(ek_bytes.as_slice())).unwrap();
                ek.encapsulate_deterministic(&black_box(eseed).into())
            })
        });
        g.finish();
    }
    {
        let ek = XWing::encapsulation_key_from_bytes(&ek_bytes).unwrap();
        let prepared = XWing::prepare(&ek);
        let rc_ek = x_wing::EncapsulationKey::try_from(ek_bytes.as_slice()).unwrap();
        let mut g = c.benchmark_group("xwing/encaps_prepared");
        g.bench_function(BenchmarkId::new("pqmls_prepared", XWING), |b| {
            b.iter(|| XWing::encapsulate_prepared_derand(&prepared, black_box(&eseed)).unwrap())
        });
        g.bench_function(BenchmarkId::new("pqmls_parsed", XWING), |b| {
            b.iter(|| XWing::encapsulate_derand(&ek, black_box(&eseed)).unwrap())
        });
        g.bench_function(BenchmarkId::new("libcrux", XWING), |b| {
            b.iter(|| lc_pk.encapsulate_derand(black_box(&eseed)).unwrap())
        });
        g.bench_function(BenchmarkId::new("rustcrypto", XWING), |b| {
            b.iter(|| rc_ek.encapsulate_deterministic(&black_box(eseed).into()))
        });
        g.finish();
    }
    {
        let ct = XWing::ciphertext_from_bytes(&ct_bytes).unwrap();
        let mut g = c.benchmark_group("xwing/decaps_cached");
        g.bench_function(BenchmarkId::new("pqmls", XWING), |b| {
            b.iter(|| XWing::decapsulate(&dk, black_box(&ct)).unwrap())
        });
        // libcrux-kem's `PrivateKey` holds only the seed (it expands on every
        // decapsulation); its cached form is the expanded `dk` of the arrayref API.
        g.bench_function(BenchmarkId::new("libcrux_expanded_dk", XWING), |b| {
            b.iter(|| {
                let mut ss = [0u8; 32];
                libcrux_kem::XWing::decaps(&mut ss, black_box(&ct_arr), &lc_dk).unwrap();
                ss
            })
        });
        g.bench_function(BenchmarkId::new("libcrux", XWING), |b| {
            b.iter(|| black_box(&lc_ct).decapsulate(&lc_sk).unwrap())
        });
        // RustCrypto's key also keeps only the seed and expands on every decapsulation.
        g.bench_function(BenchmarkId::new("rustcrypto", XWING), |b| {
            b.iter(|| rc_dk.decapsulate(black_box(&rc_ct)))
        });
        g.finish();
    }
    {
        let ct = XWing::ciphertext_from_bytes(&ct_bytes).unwrap();
        let mut g = c.benchmark_group("xwing/decaps_from_seed");
        g.bench_function(BenchmarkId::new("pqmls", XWING), |b| {
            b.iter(|| {
                let dk = XWing::decapsulation_key_from_seed(black_box(&seed)).unwrap();
                XWing::decapsulate(&dk, black_box(&ct)).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("libcrux", XWING), |b| {
            b.iter(|| {
                let sk = libcrux_kem::PrivateKey::decode(LIBCRUX_XWING, black_box(&seed)).unwrap();
                black_box(&lc_ct).decapsulate(&sk).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("rustcrypto", XWING), |b| {
            b.iter(|| x_wing::DecapsulationKey::from(black_box(seed)).decapsulate(&rc_ct))
        });
        g.finish();
    }
}

const ML_KEM_768: &str = "ML-KEM-768";

fn ml_kem_768(c: &mut Criterion) {
    use libcrux_ml_kem::mlkem768;
    let seed: [u8; 64] = bytes(3);
    let m: [u8; 32] = bytes(4);

    let dk = MlKem768::decapsulation_key_from_seed(&seed).unwrap();
    let ek_bytes = MlKem768::encapsulation_key(&dk).as_ref().to_vec();
    let ek = MlKem768::encapsulation_key_from_bytes(&ek_bytes).unwrap();
    let prepared = MlKem768::prepare(&ek);
    let (ct, _) = MlKem768::encapsulate_derand(&ek, &m).unwrap();

    let kp = mlkem768::generate_key_pair(seed);
    assert_eq!(kp.public_key().as_slice(), ek_bytes.as_slice());
    let lc_pk = mlkem768::MlKem768PublicKey::try_from(ek_bytes.as_slice()).unwrap();
    let lc_ct = mlkem768::MlKem768Ciphertext::try_from(ct.as_ref()).unwrap();

    {
        let mut g = c.benchmark_group("ml_kem_768/keygen");
        g.bench_function(BenchmarkId::new("pqmls", ML_KEM_768), |b| {
            b.iter(|| MlKem768::decapsulation_key_from_seed(black_box(&seed)).unwrap())
        });
        g.bench_function(BenchmarkId::new("libcrux", ML_KEM_768), |b| {
            b.iter(|| mlkem768::generate_key_pair(black_box(seed)))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("ml_kem_768/encaps");
        g.bench_function(BenchmarkId::new("pqmls_parse+encaps", ML_KEM_768), |b| {
            b.iter(|| {
                let ek = MlKem768::encapsulation_key_from_bytes(black_box(&ek_bytes)).unwrap();
                MlKem768::encapsulate_derand(&ek, black_box(&m)).unwrap()
            })
        });
        g.bench_function(
            BenchmarkId::new("libcrux_validate+encaps", ML_KEM_768),
            |b| {
                b.iter(|| {
                    let pk = mlkem768::MlKem768PublicKey::try_from(black_box(ek_bytes.as_slice()))
                        .unwrap();
                    assert!(mlkem768::validate_public_key(&pk));
                    mlkem768::encapsulate(&pk, black_box(m))
                })
            },
        );
        g.bench_function(BenchmarkId::new("pqmls_parsed", ML_KEM_768), |b| {
            b.iter(|| MlKem768::encapsulate_derand(&ek, black_box(&m)).unwrap())
        });
        g.bench_function(BenchmarkId::new("libcrux_unvalidated", ML_KEM_768), |b| {
            b.iter(|| mlkem768::encapsulate(black_box(&lc_pk), black_box(m)))
        });
        g.bench_function(BenchmarkId::new("pqmls_prepared", ML_KEM_768), |b| {
            b.iter(|| MlKem768::encapsulate_prepared_derand(&prepared, black_box(&m)).unwrap())
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("ml_kem_768/decaps");
        g.bench_function(BenchmarkId::new("pqmls", ML_KEM_768), |b| {
            b.iter(|| MlKem768::decapsulate(&dk, black_box(&ct)).unwrap())
        });
        g.bench_function(BenchmarkId::new("libcrux", ML_KEM_768), |b| {
            b.iter(|| mlkem768::decapsulate(kp.private_key(), black_box(&lc_ct)))
        });
        g.finish();
    }
}

const ML_DSA_65: &str = "ML-DSA-65";

fn ml_dsa_65(c: &mut Criterion) {
    use libcrux_ml_dsa::ml_dsa_65 as lc;
    type Rc = ml_dsa::MlDsa65;
    let seed: [u8; 32] = bytes(5);
    let rnd: [u8; 32] = bytes(6);
    let msg: [u8; 256] = bytes(7);
    let ctx: &[u8] = b"pqmls bench";

    let sk = MlDsa65::signing_key_from_seed(&seed).unwrap();
    let vk_bytes = MlDsa65::verifying_key(&sk).as_ref().to_vec();
    let vk = MlDsa65::verifying_key_from_bytes(&vk_bytes).unwrap();
    let sig = MlDsa65::sign_derand(&sk, &msg, ctx, &rnd).unwrap();
    let sig_bytes = sig.as_ref().to_vec();

    let rc_sk = ml_dsa::SigningKey::<Rc>::from_seed(&seed.into());
    let rc_rnd: ml_dsa::B32 = rnd.into();
    let ctx_len = [0u8, u8::try_from(ctx.len()).unwrap()];
    let rc_vk = ml_dsa::VerifyingKey::<Rc>::decode(
        &ml_dsa::EncodedVerifyingKey::<Rc>::try_from(vk_bytes.as_slice()).unwrap(),
    );
    let rc_sig = ml_dsa::Signature::<Rc>::try_from(sig_bytes.as_slice()).unwrap();
    assert!(rc_vk.verify_with_context(&msg, ctx, &rc_sig));

    let lc_kp = lc::generate_key_pair(seed);
    assert_eq!(lc_kp.verification_key.as_slice(), vk_bytes.as_slice());
    let lc_sig = lc::MLDSA65Signature::new(sig_bytes.as_slice().try_into().unwrap());

    {
        let mut g = c.benchmark_group("ml_dsa_65/keygen");
        g.bench_function(BenchmarkId::new("pqmls", ML_DSA_65), |b| {
            b.iter(|| MlDsa65::signing_key_from_seed(black_box(&seed)).unwrap())
        });
        g.bench_function(BenchmarkId::new("rustcrypto", ML_DSA_65), |b| {
            b.iter(|| ml_dsa::SigningKey::<Rc>::from_seed(&black_box(seed).into()))
        });
        g.bench_function(BenchmarkId::new("libcrux", ML_DSA_65), |b| {
            b.iter(|| lc::generate_key_pair(black_box(seed)))
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("ml_dsa_65/sign");
        g.bench_function(BenchmarkId::new("pqmls", ML_DSA_65), |b| {
            b.iter(|| MlDsa65::sign_derand(&sk, black_box(&msg), ctx, black_box(&rnd)).unwrap())
        });
        // ML-DSA.Sign with explicit rnd: Sign_internal(sk, 0 || len(ctx) || ctx || M, rnd).
        g.bench_function(BenchmarkId::new("rustcrypto", ML_DSA_65), |b| {
            b.iter(|| {
                rc_sk
                    .expanded_key()
                    .sign_internal(&[&ctx_len, ctx, black_box(&msg)], black_box(&rc_rnd))
            })
        });
        g.bench_function(BenchmarkId::new("libcrux", ML_DSA_65), |b| {
            b.iter(|| lc::sign(&lc_kp.signing_key, black_box(&msg), ctx, black_box(rnd)).unwrap())
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("ml_dsa_65/verify");
        g.bench_function(BenchmarkId::new("pqmls", ML_DSA_65), |b| {
            b.iter(|| MlDsa65::verify(&vk, black_box(&msg), ctx, black_box(&sig)).unwrap())
        });
        // RustCrypto precomputes the matrix A when it decodes a key: "rustcrypto" reuses a
        // decoded key, "rustcrypto_decode" decodes key and signature each time.
        g.bench_function(BenchmarkId::new("rustcrypto", ML_DSA_65), |b| {
            b.iter(|| assert!(rc_vk.verify_with_context(black_box(&msg), ctx, black_box(&rc_sig))))
        });
        g.bench_function(BenchmarkId::new("rustcrypto_decode", ML_DSA_65), |b| {
            b.iter(|| {
                let vk = ml_dsa::VerifyingKey::<Rc>::decode(
                    &ml_dsa::EncodedVerifyingKey::<Rc>::try_from(black_box(vk_bytes.as_slice()))
                        .unwrap(),
                );
                let sig =
                    ml_dsa::Signature::<Rc>::try_from(black_box(sig_bytes.as_slice())).unwrap();
                assert!(vk.verify_with_context(black_box(&msg), ctx, &sig));
            })
        });
        g.bench_function(BenchmarkId::new("libcrux", ML_DSA_65), |b| {
            b.iter(|| {
                lc::verify(
                    &lc_kp.verification_key,
                    black_box(&msg),
                    ctx,
                    black_box(&lc_sig),
                )
                .unwrap()
            })
        });
        g.finish();
    }
}

/// Signing key, verifying key and a signature for the composite benches.
fn composite_setup<S: SignatureScheme>() -> (S::SigningKey, S::VerifyingKey, S::Signature) {
    let sk = S::signing_key_from_seed(&bytes::<64>(8)).unwrap();
    let vk = S::verifying_key(&sk).clone();
    let sig = S::sign_derand(&sk, &COMPOSITE_MSG, COMPOSITE_CTX, &bytes(9)).unwrap();
    (sk, vk, sig)
}

const COMPOSITE_MSG: [u8; 256] = [0x5a; 256];
const COMPOSITE_CTX: &[u8] = b"pqmls bench";

fn composite_sign<S: SignatureScheme>(g: &mut BenchmarkGroup<'_, WallTime>, param: &str) {
    let (sk, _, _) = composite_setup::<S>();
    let rnd: [u8; 32] = bytes(9);
    g.bench_function(BenchmarkId::new("pqmls", param), |b| {
        b.iter(|| {
            S::sign_derand(
                &sk,
                black_box(&COMPOSITE_MSG),
                COMPOSITE_CTX,
                black_box(&rnd),
            )
            .unwrap()
        })
    });
}

fn composite_verify<S: SignatureScheme>(g: &mut BenchmarkGroup<'_, WallTime>, param: &str) {
    let (_, vk, sig) = composite_setup::<S>();
    g.bench_function(BenchmarkId::new("pqmls", param), |b| {
        b.iter(|| {
            S::verify(
                &vk,
                black_box(&COMPOSITE_MSG),
                COMPOSITE_CTX,
                black_box(&sig),
            )
            .unwrap()
        })
    });
}

fn composite(c: &mut Criterion) {
    let mut g = c.benchmark_group("composite/sign");
    composite_sign::<MlDsa44Ed25519>(&mut g, "MLDSA44-Ed25519");
    composite_sign::<MlDsa65Ed25519>(&mut g, "MLDSA65-Ed25519");
    g.finish();
    let mut g = c.benchmark_group("composite/verify");
    composite_verify::<MlDsa44Ed25519>(&mut g, "MLDSA44-Ed25519");
    composite_verify::<MlDsa65Ed25519>(&mut g, "MLDSA65-Ed25519");
    g.finish();
}

/// The provider's randomness (mls-provider DESIGN.md item 9): the operating system per
/// request (`ours`, what `PqCrypto` does) next to the ChaCha20 seeded once that it replaced
/// (`chacha20-seeded-once`, `rand_chacha` behind a mutex as the provider had it).
fn provider_rand(c: &mut Criterion) {
    use openmls_traits::random::OpenMlsRand;
    use rand::{Rng as _, SeedableRng as _};
    let ours = pqmls_provider::PqCrypto::new().unwrap();
    let old = std::sync::Mutex::new(rand_chacha::ChaCha20Rng::from_seed([7; 32]));
    let mut g = c.benchmark_group("provider_rand");
    g.bench_function(BenchmarkId::new("ours", "32B"), |b| {
        b.iter(|| black_box(ours.random_array::<32>().unwrap()))
    });
    g.bench_function(BenchmarkId::new("chacha20-seeded-once", "32B"), |b| {
        b.iter(|| {
            let mut out = [0u8; 32];
            old.lock().unwrap().fill_bytes(&mut out);
            black_box(out)
        })
    });
    g.bench_function(BenchmarkId::new("ours", "4B"), |b| {
        b.iter(|| black_box(ours.random_array::<4>().unwrap()))
    });
    g.finish();
}

criterion_group!(
    benches,
    xwing,
    ml_kem_768,
    ml_dsa_65,
    composite,
    provider_rand
);
criterion_main!(benches);
