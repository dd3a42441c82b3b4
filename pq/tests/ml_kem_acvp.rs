//! Known-answer tests: NIST ACVP ML-KEM key generation (`ML-KEM.KeyGen_internal(d, z)`).
//!
//! Source: `acvp/ML-KEM/keyGen-internalProjection.json` in `tests/data/`, a
//! byte-for-byte copy of `ml-kem/tests/key-gen.json` from RustCrypto/KEMs @ aaf3426f,
//! itself a copy of usnistgov/ACVP-Server @ 65370b8. We run the ML-KEM-768 and
//! ML-KEM-1024 groups (25 cases each); ML-KEM-512 is not implemented by this crate.
//!
//! Our API keeps only the seed `d || z` and never exposes the expanded `dk`, so per case
//! we check: `ek` from the seed; that the vector's `dk` embeds that `ek` and ends in `z`
//! (FIPS 203 Algorithm 16: `dk = dk_PKE || ek || H(ek) || z`); that an encapsulation to
//! our key decapsulates to the same secret; and that a tampered ciphertext is implicitly
//! rejected with `K̄ = J(z || c) = SHAKE256(z || c, 256)` (Algorithm 18, lines 8 and 11),
//! recomputed here with an independent SHAKE256.

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_pq::{Kem, MlKem768, MlKem1024};
use serde::Deserialize;
use shake::{ExtendableOutput, Shake256, Update, XofReader};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/acvp/ML-KEM/keyGen-internalProjection.json"
);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    algorithm: String,
    mode: String,
    revision: String,
    test_groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    parameter_set: String,
    test_type: String,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    tc_id: usize,
    deferred: bool,
    #[serde(deserialize_with = "hex_bytes")]
    d: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    z: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    ek: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    dk: Vec<u8>,
}

fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn j(z: &[u8], c: &[u8]) -> [u8; 32] {
    let mut h = Shake256::default();
    h.update(z);
    h.update(c);
    let mut out = [0u8; 32];
    h.finalize_xof().read(&mut out);
    out
}

/// Runs the group named `K::NAME` and returns how many cases it ran.
fn check<K: Kem>() -> usize {
    let text =
        std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    let file: File = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            file.algorithm.as_str(),
            file.mode.as_str(),
            file.revision.as_str()
        ),
        ("ML-KEM", "keyGen", "FIPS203")
    );
    let group = file
        .test_groups
        .iter()
        .find(|g| g.parameter_set == K::NAME)
        .unwrap_or_else(|| panic!("no {} group", K::NAME));
    assert_eq!(group.test_type, "AFT");

    let mut ran = 0;
    for case in &group.tests {
        let id = format!("{} tcId {}", K::NAME, case.tc_id);
        assert!(!case.deferred, "{id}: deferred case");
        let seed = [case.d.as_slice(), case.z.as_slice()].concat();
        let dk = K::decapsulation_key_from_seed(&seed).unwrap();
        let ek = K::encapsulation_key(&dk);
        assert_eq!(ek.as_ref(), case.ek.as_slice(), "{id}: ek");

        // dk = dk_PKE || ek || H(ek) || z, with dk_PKE 384k bytes = ek length - 32.
        let dk_pke_len = K::EK_LEN - 32;
        assert_eq!(
            case.dk.len(),
            dk_pke_len + K::EK_LEN + 64,
            "{id}: dk length"
        );
        assert_eq!(
            &case.dk[dk_pke_len..dk_pke_len + K::EK_LEN],
            ek.as_ref(),
            "{id}: dk has ek"
        );
        assert_eq!(
            &case.dk[case.dk.len() - 32..],
            case.z.as_slice(),
            "{id}: dk ends in z"
        );

        // Consistency: an encapsulation to our key decapsulates to the same secret.
        let m = [u8::try_from(case.tc_id).unwrap(); 32];
        let (ct, ss) = K::encapsulate_derand(ek, &m).unwrap();
        let ss2 = K::decapsulate(&dk, &ct).unwrap();
        assert_eq!(
            ss.as_bytes(),
            ss2.as_bytes(),
            "{id}: decaps(encaps) round trip"
        );

        // A tampered ciphertext is implicitly rejected with J(z || c).
        let mut bad = ct.as_ref().to_vec();
        bad[0] ^= 1;
        let bad_ct = K::ciphertext_from_bytes(&bad).unwrap();
        let rejected = K::decapsulate(&dk, &bad_ct).unwrap();
        assert_eq!(
            rejected.as_bytes(),
            &j(&case.z, &bad),
            "{id}: implicit rejection"
        );
        ran += 1;
    }
    ran
}

#[test]
fn ml_kem_768_key_gen() {
    assert_eq!(check::<MlKem768>(), 25);
}

#[test]
fn ml_kem_1024_key_gen() {
    assert_eq!(check::<MlKem1024>(), 25);
}
