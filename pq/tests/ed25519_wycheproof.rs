//! Known-answer tests: Wycheproof Ed25519 verification edge cases.
//!
//! Source: `wycheproof/ed25519_test.json` in `tests/data/`, a byte-for-byte copy of
//! `testvectors_v1/ed25519_test.json` from C2SP/wycheproof @ dac1dd47: 151 cases in 78
//! groups (one public key each). Every "valid" case (88) must verify through
//! [`SignatureScheme::verify`] with the empty context and through
//! [`pqmls_pq::sig::ed25519::VerifyingKey::verify`]; every "invalid" case (63: bad
//! encodings, malleable `S`, truncated or padded signatures, ...) must be rejected, either
//! when the signature is parsed (wrong length) or by verification. The file has no
//! "acceptable" case; the test fails if one appears, so that it gets looked at.

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_pq::sig::ed25519;
use pqmls_pq::{Ed25519, Error, SignatureScheme};
use serde::Deserialize;
use std::collections::BTreeMap;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/wycheproof/ed25519_test.json"
);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    algorithm: String,
    number_of_tests: usize,
    test_groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    #[serde(rename = "type")]
    kind: String,
    public_key: PublicKey,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKey {
    curve: String,
    #[serde(deserialize_with = "hex_bytes")]
    pk: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    tc_id: usize,
    comment: String,
    #[serde(deserialize_with = "hex_bytes")]
    msg: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    sig: Vec<u8>,
    result: String,
    flags: Vec<String>,
}

fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

#[test]
fn ed25519_verification() {
    let text =
        std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    let file: File = serde_json::from_str(&text).unwrap();
    assert_eq!(file.algorithm, "EDDSA");

    let (mut valid, mut invalid) = (0, 0);
    // Rejections by flag, to show what each kind of invalid case exercised.
    let mut rejected_by_flag: BTreeMap<String, usize> = BTreeMap::new();
    for group in &file.test_groups {
        assert_eq!(group.kind, "EddsaVerify");
        assert_eq!(group.public_key.curve, "edwards25519");
        let vk = Ed25519::verifying_key_from_bytes(&group.public_key.pk).unwrap();
        let raw_vk = ed25519::VerifyingKey::from_bytes(&group.public_key.pk).unwrap();
        for case in &group.tests {
            let id = format!("tcId {} ({})", case.tc_id, case.comment);
            let sig = Ed25519::signature_from_bytes(&case.sig);
            let verdict = sig
                .as_ref()
                .map_err(|e| *e)
                .and_then(|sig| Ed25519::verify(&vk, &case.msg, b"", sig));
            let raw_verdict = ed25519::Signature::from_bytes(&case.sig)
                .and_then(|sig| raw_vk.verify(&case.msg, &sig));
            assert_eq!(
                verdict, raw_verdict,
                "{id}: trait and inherent verify agree"
            );
            match case.result.as_str() {
                "valid" => {
                    assert_eq!(verdict, Ok(()), "{id}: must verify");
                    // Pure Ed25519 takes no context string.
                    assert_eq!(
                        Ed25519::verify(&vk, &case.msg, b"ctx", sig.as_ref().unwrap()),
                        Err(Error::ContextNotSupported),
                        "{id}: non-empty context"
                    );
                    valid += 1;
                }
                "invalid" => {
                    match verdict {
                        Err(Error::InvalidSignature) => {}
                        Err(Error::InvalidLength { .. }) => assert_ne!(case.sig.len(), 64, "{id}"),
                        other => panic!("{id}: must be rejected, got {other:?}"),
                    }
                    for flag in &case.flags {
                        *rejected_by_flag.entry(flag.clone()).or_default() += 1;
                    }
                    invalid += 1;
                }
                other => {
                    panic!("{id}: unexpected result {other:?} (acceptable cases need a decision)")
                }
            }
        }
    }
    assert_eq!(file.number_of_tests, 151);
    assert_eq!((valid, invalid), (88, 63));
    let expected: BTreeMap<String, usize> = [
        ("CompressedSignature", 4),
        ("InvalidEncoding", 22),
        ("InvalidKtv", 1),
        ("InvalidSignature", 20),
        ("SignatureMalleability", 8),
        ("SignatureWithGarbage", 5),
        ("TruncatedSignature", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(rejected_by_flag, expected);
}
