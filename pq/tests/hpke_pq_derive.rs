//! Known-answer tests: HPKE `DeriveKeyPair`, `Encap` and `Decap` for the post-quantum KEMs.
//!
//! Source: `hpke-pq/test-vectors.json` in `tests/data/`, a byte-for-byte copy of
//! `test-vectors.json` from hpkewg/hpke-pq @ 74dafaa6 (draft-ietf-hpke-pq-04). We use
//! the vectors for KEM ids 0x0041 (ML-KEM-768, 1 vector), 0x0042 (ML-KEM-1024, 2) and
//! 0x647a (MLKEM768-X25519 = X-Wing, 2): 5 in all. The AEAD/KDF parts of the vectors
//! belong to the HPKE layer, not to this crate.
//!
//! Per vector, in the [`DeriveProfile::HpkePq`] profile (draft sections 3 and 4):
//! `DeriveKeyPair(ikmR)` gives the seed `skRm` and the key `pkRm`; `Encap` with the
//! vector's `ikmE` as encapsulation randomness gives `enc` and `shared_secret`;
//! `Decap(skRm, enc)` gives `shared_secret`. The labelled derivation is also recomputed
//! here with an independent SHAKE256 (RustCrypto `shake`).
//!
//! The [`DeriveProfile::Plain`] profile must give a different key, whose seed is
//! `SHAKE256(ikmR, 8 * SEED_LEN)`: this shows that the profile matters.

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_pq::{DeriveProfile, Kem, MlKem768, MlKem1024, XWing};
use serde::Deserialize;
use shake::{ExtendableOutput, Shake256, Update, XofReader};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/hpke-pq/test-vectors.json"
);

/// The fields of an HPKE vector this crate can check (the rest is HPKE's business).
#[derive(Deserialize)]
struct Vector {
    mode: u8,
    kem_id: u16,
    #[serde(rename = "ikmE", deserialize_with = "hex_bytes")]
    ikm_e: Vec<u8>,
    #[serde(rename = "ikmR", deserialize_with = "hex_bytes")]
    ikm_r: Vec<u8>,
    #[serde(rename = "skRm", deserialize_with = "hex_bytes")]
    sk_rm: Vec<u8>,
    #[serde(rename = "pkRm", deserialize_with = "hex_bytes")]
    pk_rm: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    enc: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    shared_secret: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    suite_id: Vec<u8>,
}

fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn vectors(kem_id: u16) -> Vec<Vector> {
    let text =
        std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    let all: Vec<Vector> = serde_json::from_str(&text).unwrap();
    all.into_iter().filter(|v| v.kem_id == kem_id).collect()
}

fn shake256(input: &[u8], len: usize) -> Vec<u8> {
    let mut h = Shake256::default();
    h.update(input);
    let mut out = vec![0u8; len];
    h.finalize_xof().read(&mut out);
    out
}

/// `SHAKE256.LabeledDerive(ikm, "DeriveKeyPair", "", L)` with `suite_id = "KEM" ||
/// I2OSP(kem_id, 2)`, written out from the drafts independently of `pq/src`.
fn labeled_derive_key_pair_seed(kem_id: u16, ikm: &[u8], len: usize) -> Vec<u8> {
    let label = b"DeriveKeyPair";
    let mut input = ikm.to_vec();
    input.extend_from_slice(b"HPKE-v1");
    input.extend_from_slice(b"KEM");
    input.extend_from_slice(&kem_id.to_be_bytes());
    input.extend_from_slice(&u16::try_from(label.len()).unwrap().to_be_bytes());
    input.extend_from_slice(label);
    input.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    shake256(&input, len)
}

/// Runs every vector of `K`'s KEM id and returns how many it ran.
fn check<K: Kem>() -> usize {
    let mut ran = 0;
    for (i, v) in vectors(K::HPKE_KEM_ID).iter().enumerate() {
        let name = K::NAME;
        assert_eq!(v.mode, 0, "{name} vector {i}: base mode");
        let mut suite_id = b"HPKE".to_vec();
        suite_id.extend_from_slice(&K::HPKE_KEM_ID.to_be_bytes());
        assert_eq!(
            v.suite_id[..6],
            suite_id[..],
            "{name} vector {i}: suite_id names our KEM id"
        );

        // DeriveKeyPair, spec profile.
        let dk = K::derive_key_pair(&v.ikm_r, DeriveProfile::HpkePq);
        assert_eq!(K::seed(&dk), v.sk_rm.as_slice(), "{name} vector {i}: skRm");
        assert_eq!(
            K::encapsulation_key(&dk).as_ref(),
            v.pk_rm.as_slice(),
            "{name} vector {i}: pkRm"
        );
        assert_eq!(
            labeled_derive_key_pair_seed(K::HPKE_KEM_ID, &v.ikm_r, K::SEED_LEN),
            v.sk_rm,
            "{name} vector {i}: independent LabeledDerive"
        );
        // DeserializePrivateKey is the identity: the seed gives the same key.
        let dk_from_seed = K::decapsulation_key_from_seed(&v.sk_rm).unwrap();
        assert_eq!(
            K::encapsulation_key(&dk_from_seed).as_ref(),
            v.pk_rm.as_slice(),
            "{name} vector {i}: skRm -> pkRm"
        );

        // Encap with ikmE as the encapsulation randomness, and Decap.
        assert_eq!(
            v.ikm_e.len(),
            K::ESEED_LEN,
            "{name} vector {i}: ikmE length"
        );
        let ek = K::encapsulation_key_from_bytes(&v.pk_rm).unwrap();
        let (enc, ss) = K::encapsulate_derand(&ek, &v.ikm_e).unwrap();
        assert_eq!(enc.as_ref(), v.enc.as_slice(), "{name} vector {i}: enc");
        assert_eq!(
            ss.as_bytes().as_slice(),
            v.shared_secret.as_slice(),
            "{name} vector {i}: Encap shared_secret"
        );
        let ct = K::ciphertext_from_bytes(&v.enc).unwrap();
        let ss = K::decapsulate(&dk, &ct).unwrap();
        assert_eq!(
            ss.as_bytes().as_slice(),
            v.shared_secret.as_slice(),
            "{name} vector {i}: Decap shared_secret"
        );

        // The plain profile is a different key: SHAKE256(ikm, 8 * SEED_LEN).
        let plain = K::derive_key_pair(&v.ikm_r, DeriveProfile::Plain);
        assert_eq!(
            K::seed(&plain),
            shake256(&v.ikm_r, K::SEED_LEN).as_slice(),
            "{name} vector {i}: Plain seed is SHAKE256(ikm)"
        );
        assert_ne!(
            K::seed(&plain),
            K::seed(&dk),
            "{name} vector {i}: seeds differ"
        );
        assert_ne!(
            K::encapsulation_key(&plain).as_ref(),
            K::encapsulation_key(&dk).as_ref(),
            "{name} vector {i}: Plain gives a different key"
        );
        ran += 1;
    }
    ran
}

#[test]
fn ml_kem_768_0x0041() {
    assert_eq!(MlKem768::HPKE_KEM_ID, 0x0041);
    assert_eq!(check::<MlKem768>(), 1);
}

#[test]
fn ml_kem_1024_0x0042() {
    assert_eq!(MlKem1024::HPKE_KEM_ID, 0x0042);
    assert_eq!(check::<MlKem1024>(), 2);
}

#[test]
fn mlkem768_x25519_0x647a() {
    assert_eq!(XWing::HPKE_KEM_ID, 0x647a);
    assert_eq!(check::<XWing>(), 2);
}
