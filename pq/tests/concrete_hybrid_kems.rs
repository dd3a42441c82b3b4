//! Known-answer tests: MLKEM768-X25519 (= X-Wing) from the concrete hybrid KEMs draft.
//!
//! Source: `concrete-hybrid-kems/test-vectors.json` in `tests/data/`, a byte-for-byte
//! copy of `test-vectors.json` from FiloSottile/draft-irtf-cfrg-concrete-hybrid-kems
//! @ 0114ace6. Only the `mlkem768_x25519` group applies (10 vectors); MLKEM768-P256 and
//! MLKEM1024-P384 are not implemented by this crate.
//!
//! Per vector: `seed` (= `decapsulation_key`) -> `encapsulation_key`; the component keys
//! `decapsulation_key_pq` (ML-KEM `d || z`) and `decapsulation_key_t` (X25519 scalar)
//! give the two halves of the encapsulation key; `Encaps_derand(ek, randomness) ->
//! (ciphertext, shared_secret)`; `Decaps(seed, ciphertext) -> shared_secret`.

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use pqmls_pq::kem::x25519;
use pqmls_pq::{Kem, MlKem768, Seed32};
use serde::Deserialize;
use std::collections::HashMap;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/concrete-hybrid-kems/test-vectors.json"
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    #[serde(deserialize_with = "hex_bytes")]
    seed: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    randomness: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    encapsulation_key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    decapsulation_key: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    decapsulation_key_pq: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    decapsulation_key_t: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    ciphertext: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    shared_secret: Vec<u8>,
}

fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

#[test]
fn mlkem768_x25519_vectors() {
    let text =
        std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    let mut groups: HashMap<String, Vec<Vector>> = serde_json::from_str(&text).unwrap();
    let vectors = groups
        .remove("mlkem768_x25519")
        .expect("mlkem768_x25519 group");

    let mut ran = 0;
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(v.decapsulation_key, v.seed, "vector {i}: dk is the seed");
        common::check_xwing_vector(
            &format!("vector {i}"),
            &v.decapsulation_key,
            &v.encapsulation_key,
            &v.randomness,
            &v.ciphertext,
            &v.shared_secret,
        );

        // The component keys give the two halves of ek.
        let (ek_m, pk_x) = v.encapsulation_key.split_at(1184);
        let dk_m = MlKem768::decapsulation_key_from_seed(&v.decapsulation_key_pq).unwrap();
        assert_eq!(
            MlKem768::encapsulation_key(&dk_m).as_ref(),
            ek_m,
            "vector {i}: ML-KEM part"
        );
        let sk_x =
            x25519::SecretKey::from_seed(Seed32::from_slice(&v.decapsulation_key_t).unwrap());
        assert_eq!(
            sk_x.public_key().as_bytes().as_slice(),
            pk_x,
            "vector {i}: X25519 part"
        );

        ran += 1;
    }
    assert_eq!(ran, 10, "the draft ships 10 MLKEM768-X25519 vectors");
}
