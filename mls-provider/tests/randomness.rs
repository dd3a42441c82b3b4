//! The provider's randomness (`PqCrypto`'s docs, "Randomness"): every byte comes from the
//! operating system when it is asked for, so no two providers and no forked child repeat
//! each other's output. A generator seeded once and kept in memory (what the provider had
//! before) fails `forked_child_does_not_repeat_its_parent`: parent and child would go on
//! from the same state and draw the same bytes.
//!
//! The one exception, compiled only with the feature `sim-rng`: the simulation's seeded
//! provider and signer, which must repeat their seed's output exactly.

use std::collections::HashSet;

use openmls_traits::random::OpenMlsRand;
use pqmls_pq::rand_core::TryRng;
use pqmls_provider::PqCrypto;

/// Draws per provider and per process: 3 x 86 values of 32 bytes.
const DRAWS: usize = 258;

/// 32-byte values through every way the provider hands out randomness.
fn draws(p: &PqCrypto) -> Result<Vec<[u8; 32]>, String> {
    let mut out = Vec::with_capacity(DRAWS);
    for i in 0..DRAWS {
        let v = match i % 3 {
            0 => p.random_array::<32>().map_err(|e| e.to_string())?,
            1 => p
                .random_vec(32)
                .map_err(|e| e.to_string())?
                .try_into()
                .map_err(|_| "random_vec length".to_string())?,
            _ => {
                let mut b = [0u8; 32];
                p.rng().try_fill_bytes(&mut b).map_err(|e| e.to_string())?;
                b
            }
        };
        out.push(v);
    }
    Ok(out)
}

/// Every value of every list is distinct from every other.
fn assert_all_distinct(lists: &[&[[u8; 32]]]) {
    let mut seen = HashSet::new();
    for list in lists {
        for v in *list {
            assert!(seen.insert(*v), "a 32-byte random value repeated");
        }
    }
}

#[test]
fn two_providers_never_repeat() {
    let a = PqCrypto::new().unwrap();
    let b = PqCrypto::new().unwrap();
    let (da, db) = (draws(&a).unwrap(), draws(&b).unwrap());
    assert_all_distinct(&[&da, &db]);
}

#[cfg(unix)]
#[test]
fn forked_child_does_not_repeat_its_parent() {
    let provider = PqCrypto::new().unwrap();
    // Use the provider before the fork, as a long-running process would.
    let before = draws(&provider).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("child-draws");
    match fork::fork().unwrap() {
        fork::Fork::Child => {
            // Only this thread exists in the child: no panics, no return into the test
            // harness. Write the draws and leave.
            let code = match draws(&provider) {
                Ok(d) => match std::fs::write(&path, d.concat()) {
                    Ok(()) => 0,
                    Err(_) => 2,
                },
                Err(_) => 3,
            };
            std::process::exit(code);
        }
        fork::Fork::Parent(pid) => {
            let parent = draws(&provider).unwrap();
            let status = fork::waitpid(pid).unwrap();
            assert_eq!(status, 0, "the child failed (raw wait status {status})");
            let bytes = std::fs::read(&path).unwrap();
            let child: Vec<[u8; 32]> = bytes
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap())
                .collect();
            assert_eq!(child.len(), DRAWS);
            assert_all_distinct(&[&before, &parent, &child]);
        }
    }
}

/// What a provider's randomness shows through every path that draws it: the three ways
/// of `draws`, an HPKE encapsulation to a fixed key (X-Wing), a signature key pair from
/// OpenMLS's `signature_key_gen`, and one from `SignatureKeyPair::generate_with_rng`.
fn everything(p: &PqCrypto) -> Result<Vec<Vec<u8>>, String> {
    use openmls_traits::crypto::OpenMlsCrypto;
    use openmls_traits::types::{
        Ciphersuite, HpkeAeadType, HpkeConfig, HpkeKdfType, HpkeKemType, SignatureScheme,
    };
    let mut out: Vec<Vec<u8>> = draws(p)?.iter().map(|d| d.to_vec()).collect();
    let config = || {
        HpkeConfig(
            HpkeKemType::XWingKemDraft6,
            HpkeKdfType::HkdfSha256,
            HpkeAeadType::AesGcm128,
        )
    };
    let recipient = p
        .derive_hpke_keypair(config(), &[7u8; 32])
        .map_err(|e| format!("{e:?}"))?;
    let ct = p
        .hpke_seal(config(), &recipient.public, b"info", b"aad", b"secret")
        .map_err(|e| format!("{e:?}"))?;
    out.push(ct.kem_output.as_slice().to_vec());
    out.push(ct.ciphertext.as_slice().to_vec());
    let (sk, pk) = p
        .signature_key_gen(SignatureScheme::ED25519)
        .map_err(|e| format!("{e:?}"))?;
    out.push(sk);
    out.push(pk);
    let scheme = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519.signature_algorithm();
    let signer = pqmls_provider::SignatureKeyPair::generate_with_rng(scheme, &mut p.rng())
        .map_err(|e| format!("{e:?}"))?;
    out.push(signer.public().to_vec());
    Ok(out)
}

/// The simulation's seeded provider (feature `sim-rng`): one seed replays every draw
/// exactly; another seed, or the operating system's provider, gives other values.
#[test]
fn seeded_provider_replays_its_seed_through_every_path() {
    let a = everything(&PqCrypto::insecure_deterministic_for_simulation([1; 32])).unwrap();
    let b = everything(&PqCrypto::insecure_deterministic_for_simulation([1; 32])).unwrap();
    assert_eq!(a, b);
    let c = everything(&PqCrypto::insecure_deterministic_for_simulation([2; 32])).unwrap();
    let os = everything(&PqCrypto::new().unwrap()).unwrap();
    for (i, v) in a.iter().enumerate() {
        assert_ne!(*v, c[i], "value {i}: another seed repeated it");
        assert_ne!(*v, os[i], "value {i}: the OS provider repeated it");
    }
}

/// A signer made deterministic for a simulation signs hedged ML-DSA and P-521 alike for
/// one seed and differently for another; without it, every signature differs.
#[test]
fn seeded_signer_replays_randomised_signatures() {
    use openmls_traits::signatures::Signer as _;
    use openmls_traits::types::SignatureScheme;
    for scheme in [
        SignatureScheme::MLDSA65,
        SignatureScheme::ECDSA_SECP521R1_SHA512,
    ] {
        let key = pqmls_provider::SignatureKeyPair::generate(scheme).unwrap();
        let seeded = |seed: u8| {
            pqmls_provider::SignatureKeyPair::from_seed(scheme, key.seed())
                .unwrap()
                .insecure_deterministic_signing_for_simulation([seed; 32])
        };
        let (s1, s1_again, s2) = (seeded(1), seeded(1), seeded(2));
        let sig = s1.sign(b"m").unwrap();
        assert_eq!(sig, s1_again.sign(b"m").unwrap(), "{scheme:?}");
        assert_ne!(sig, s2.sign(b"m").unwrap(), "{scheme:?}");
        assert_ne!(
            sig,
            s1.sign(b"m").unwrap(),
            "{scheme:?}: the stream moves on"
        );
        assert_ne!(
            key.sign(b"m").unwrap(),
            key.sign(b"m").unwrap(),
            "{scheme:?}"
        );
    }
}

/// OpenMLS seals a commit's path secrets in parallel (rayon), so with a seeded provider a
/// seal must not depend on the order in which concurrent seals ask for randomness: the
/// same seals in order, in reverse and from eight threads at once give the same
/// ciphertexts. (With one shared stream the reversed order gave other ones.)
#[test]
fn seeded_seals_do_not_depend_on_their_order() {
    use openmls_traits::crypto::OpenMlsCrypto;
    use openmls_traits::types::{HpkeAeadType, HpkeConfig, HpkeKdfType, HpkeKemType};
    let config = || {
        HpkeConfig(
            HpkeKemType::XWingKemDraft6,
            HpkeKdfType::HkdfSha256,
            HpkeAeadType::AesGcm128,
        )
    };
    let keys: Vec<Vec<u8>> = (0..8u8)
        .map(|i| {
            PqCrypto::new()
                .unwrap()
                .derive_hpke_keypair(config(), &[i; 32])
                .unwrap()
                .public
        })
        .collect();
    let seal = |p: &PqCrypto, pk: &[u8]| {
        let ct = p
            .hpke_seal(config(), pk, b"group context", b"", b"path secret")
            .unwrap();
        (
            ct.kem_output.as_slice().to_vec(),
            ct.ciphertext.as_slice().to_vec(),
        )
    };
    let seeded = || PqCrypto::insecure_deterministic_for_simulation([9; 32]);
    let p = seeded();
    let in_order: Vec<_> = keys.iter().map(|pk| seal(&p, pk)).collect();
    let p = seeded();
    let mut reversed: Vec<_> = keys.iter().rev().map(|pk| seal(&p, pk)).collect();
    reversed.reverse();
    assert_eq!(in_order, reversed);
    let p = seeded();
    let parallel: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = keys.iter().map(|pk| s.spawn(|| seal(&p, pk))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(in_order, parallel);
    // Another seal to the same key with other contents gets other randomness.
    let p = seeded();
    let other = p
        .hpke_seal(config(), &keys[0], b"group context", b"", b"another secret")
        .unwrap();
    assert_ne!(other.kem_output.as_slice(), in_order[0].0.as_slice());
}
