//! Known-answer tests: Wycheproof ML-KEM-768 decapsulation and encapsulation.
//!
//! Sources (`tests/data/wycheproof/`, byte-for-byte copies of `testvectors_v1/` from
//! C2SP/wycheproof @ dac1dd47):
//!
//! - `wycheproof/mlkem_768_test.json`: 193 cases of `ML-KEM.KeyGen_internal(d, z)` from the
//!   64-byte `seed`, then `ML-KEM.Decaps(c) = K`. Invalid cases have a seed or a
//!   ciphertext of the wrong length and must fail with `Error::InvalidLength`.
//! - `wycheproof/mlkem_768_encaps_test.json`: 265 cases of `ML-KEM.Encaps_internal(ek, m)
//!   = (c, K)`. Invalid cases are keys of the wrong length (`Error::InvalidLength`) or
//!   keys that fail the FIPS 203 section 7.2 modulus check (flag `ModulusOverflow` and
//!   the "Public key not reduced" cases: `Error::InvalidEncapsulationKey`). The same
//!   bad ML-KEM keys are also fed to X-Wing as the ML-KEM half of its key.
//!
//! Neither file has "acceptable" cases; the tests fail if one appears, so that a new
//! copy of the files is looked at rather than silently half-applied.

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_pq::{Error, Kem, MlKem768, XWing};
use serde::Deserialize;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wycheproof/");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File<T> {
    number_of_tests: usize,
    test_groups: Vec<Group<T>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group<T> {
    parameter_set: String,
    tests: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DecapsCase {
    tc_id: usize,
    #[serde(default)]
    comment: String,
    #[serde(deserialize_with = "hex_bytes")]
    seed: Vec<u8>,
    #[serde(default, deserialize_with = "opt_hex_bytes")]
    ek: Option<Vec<u8>>,
    #[serde(deserialize_with = "hex_bytes")]
    c: Vec<u8>,
    #[serde(rename = "K", deserialize_with = "hex_bytes")]
    k: Vec<u8>,
    result: String,
    flags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EncapsCase {
    tc_id: usize,
    #[serde(default)]
    comment: String,
    #[serde(deserialize_with = "hex_bytes")]
    ek: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    m: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    c: Vec<u8>,
    #[serde(rename = "K", deserialize_with = "hex_bytes")]
    k: Vec<u8>,
    result: String,
    flags: Vec<String>,
}

fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn opt_hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    hex_bytes(d).map(Some)
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> File<T> {
    let path = format!("{DIR}{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let file: File<T> = serde_json::from_str(&text).unwrap();
    for g in &file.test_groups {
        assert_eq!(g.parameter_set, "ML-KEM-768");
    }
    file
}

fn is_invalid_length(r: &Result<impl Sized, Error>) -> bool {
    matches!(r, Err(Error::InvalidLength { .. }))
}

#[test]
fn decapsulation_from_seed() {
    let file: File<DecapsCase> = load("mlkem_768_test.json");
    let (mut valid, mut invalid, mut strcmp) = (0, 0, 0);
    for case in file.test_groups.iter().flat_map(|g| &g.tests) {
        let id = format!("tcId {} ({})", case.tc_id, case.comment);
        let dk = MlKem768::decapsulation_key_from_seed(&case.seed);
        let ct = MlKem768::ciphertext_from_bytes(&case.c);
        if let (Ok(dk), Some(ek)) = (&dk, &case.ek) {
            // When the key is given, it must match whatever else is wrong with the case.
            assert_eq!(
                MlKem768::encapsulation_key(dk).as_ref(),
                ek.as_slice(),
                "{id}: ek"
            );
        }
        match case.result.as_str() {
            "valid" => {
                let ss = MlKem768::decapsulate(&dk.unwrap(), &ct.unwrap()).unwrap();
                assert_eq!(ss.as_bytes().as_slice(), case.k.as_slice(), "{id}: K");
                valid += 1;
                if case.flags.iter().any(|f| f == "Strcmp") {
                    strcmp += 1;
                }
            }
            "invalid" => {
                // Every invalid case here is a seed or ciphertext of the wrong length.
                assert!(case.k.is_empty(), "{id}: invalid case with a K");
                assert!(
                    is_invalid_length(&dk) || is_invalid_length(&ct),
                    "{id}: must be rejected as InvalidLength"
                );
                assert_eq!(dk.is_ok(), case.seed.len() == 64, "{id}: seed check");
                assert_eq!(ct.is_ok(), case.c.len() == 1088, "{id}: ciphertext check");
                invalid += 1;
            }
            other => panic!("{id}: unexpected result {other:?}"),
        }
    }
    assert_eq!(file.number_of_tests, 193);
    assert_eq!((valid, invalid, strcmp), (153, 40, 1));
}

#[test]
fn encapsulation() {
    let file: File<EncapsCase> = load("mlkem_768_encaps_test.json");
    let (mut valid, mut too_long_or_short, mut not_reduced, mut modulus_flag) = (0, 0, 0, 0);
    for case in file.test_groups.iter().flat_map(|g| &g.tests) {
        let id = format!("tcId {} ({})", case.tc_id, case.comment);
        let ek = MlKem768::encapsulation_key_from_bytes(&case.ek);
        // The same ML-KEM key as X-Wing's ML-KEM half, with a harmless X25519 half.
        let mut xwing_ek = case.ek.clone();
        xwing_ek.extend_from_slice(&[9; 32]);
        let xwing_ek = XWing::encapsulation_key_from_bytes(&xwing_ek);
        match case.result.as_str() {
            "valid" => {
                let ek = ek.unwrap();
                assert_eq!(ek.as_ref(), case.ek.as_slice(), "{id}: ek round trip");
                let (c, k) = MlKem768::encapsulate_derand(&ek, &case.m).unwrap();
                assert_eq!(c.as_ref(), case.c.as_slice(), "{id}: c");
                assert_eq!(k.as_bytes().as_slice(), case.k.as_slice(), "{id}: K");
                let prepared = MlKem768::prepare(&ek);
                let (c, k) = MlKem768::encapsulate_prepared_derand(&prepared, &case.m).unwrap();
                assert_eq!(c.as_ref(), case.c.as_slice(), "{id}: prepared c");
                assert_eq!(
                    k.as_bytes().as_slice(),
                    case.k.as_slice(),
                    "{id}: prepared K"
                );
                assert!(xwing_ek.is_ok(), "{id}: X-Wing accepts a valid ML-KEM half");
                valid += 1;
            }
            "invalid" => {
                assert!(
                    case.c.is_empty() && case.k.is_empty(),
                    "{id}: invalid with output"
                );
                if case.ek.len() == 1184 {
                    assert!(
                        matches!(ek, Err(Error::InvalidEncapsulationKey)),
                        "{id}: modulus check must reject, got {ek:?}"
                    );
                    assert!(
                        matches!(xwing_ek, Err(Error::InvalidEncapsulationKey)),
                        "{id}: X-Wing must run the modulus check, got {xwing_ek:?}"
                    );
                    not_reduced += 1;
                    if case.flags.iter().any(|f| f == "ModulusOverflow") {
                        modulus_flag += 1;
                    }
                } else {
                    assert!(is_invalid_length(&ek), "{id}: wrong length, got {ek:?}");
                    assert!(is_invalid_length(&xwing_ek), "{id}: X-Wing wrong length");
                    too_long_or_short += 1;
                }
            }
            other => panic!("{id}: unexpected result {other:?}"),
        }
    }
    assert_eq!(file.number_of_tests, 265);
    assert_eq!(
        (valid, too_long_or_short, not_reduced, modulus_flag),
        (133, 20, 112, 12)
    );
}
