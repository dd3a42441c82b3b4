//! Known-answer tests: the official X-Wing test vectors.
//!
//! Source: `xwing/test-vectors.json` in `tests/data/`, a byte-for-byte copy of
//! `spec/test-vectors.json` from dconnolly/draft-connolly-cfrg-xwing-kem @ 9b6ce9e6
//! (tag draft-connolly-cfrg-xwing-kem-10).
//!
//! Each vector gives `seed` (= `sk`, the private key), `pk`, `eseed`, `ct` and `ss`.
//! We check `seed -> pk` (`expandDecapsulationKey`), `Encaps_derand(pk, eseed) ->
//! (ct, ss)` through both the plain and the prepared key, and `Decaps(seed, ct) -> ss`.

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde::Deserialize;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/xwing/test-vectors.json"
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    #[serde(deserialize_with = "hex_bytes")]
    seed: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    sk: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    pk: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    eseed: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    ct: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    ss: Vec<u8>,
}

fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn vectors() -> Vec<Vector> {
    let text =
        std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn official_xwing_vectors() {
    let mut ran = 0;
    for (i, v) in vectors().iter().enumerate() {
        // The draft's private key is the seed itself.
        assert_eq!(v.sk, v.seed, "vector {i}: sk is the seed");

        common::check_xwing_vector(
            &format!("vector {i}"),
            &v.seed,
            &v.pk,
            &v.eseed,
            &v.ct,
            &v.ss,
        );
        ran += 1;
    }
    assert_eq!(ran, 3, "the draft ships 3 vectors");
}
