//! Known-answer tests: Wycheproof ML-DSA-65 key generation from seed and signing.
//!
//! Source: `wycheproof/mldsa_65_sign_seed_test.json` in `tests/data/`, a
//! byte-for-byte copy of `testvectors_v1/` from C2SP/wycheproof @ dac1dd47, applied as
//! its `doc/mldsa.md` says (`wycheproof/mldsa.md` of the Wycheproof repository):
//!
//! - key generation: `ML-DSA.KeyGen_internal(privateSeed)` gives `publicKey` (every group
//!   with a 32-byte seed); seeds of another length are rejected (`IncorrectPrivateKeyLength`,
//!   3 cases: `Error::InvalidLength`);
//! - signing: our randomized interface `sign_derand(msg, ctx, rnd)` with the case's `rnd`,
//!   or 32 zero bytes when it has none (83 deterministic cases, also through
//!   `sign_deterministic`, and 1 randomized case), gives `sig`, which then verifies; a
//!   context longer than 255 bytes is rejected (`InvalidContext`, 1 case:
//!   `Error::ContextTooLong`);
//! - the 17 cases with only a precomputed `mu` (flag `Internal`, no `msg`) can only drive
//!   an external-μ signing interface, which this crate does not have: for those only the
//!   key generation is checked.

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_pq::{Error, MlDsa65, SignatureScheme};
use serde::Deserialize;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/wycheproof/mldsa_65_sign_seed_test.json"
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
    #[serde(deserialize_with = "hex_bytes")]
    private_seed: Vec<u8>,
    #[serde(default, deserialize_with = "opt_hex_bytes")]
    public_key: Option<Vec<u8>>,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    tc_id: usize,
    comment: String,
    #[serde(default, deserialize_with = "opt_hex_bytes")]
    msg: Option<Vec<u8>>,
    #[serde(default, deserialize_with = "opt_hex_bytes")]
    ctx: Option<Vec<u8>>,
    #[serde(default, deserialize_with = "opt_hex_bytes")]
    rnd: Option<Vec<u8>>,
    #[serde(default, deserialize_with = "opt_hex_bytes")]
    mu: Option<Vec<u8>>,
    #[serde(deserialize_with = "hex_bytes")]
    sig: Vec<u8>,
    result: String,
    flags: Vec<String>,
}

fn hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn opt_hex_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| hex::decode(s).map_err(serde::de::Error::custom))
        .transpose()
}

#[derive(Debug, Default, PartialEq)]
struct Counts {
    bad_seed: usize,
    mu_only: usize,
    bad_context: usize,
    deterministic: usize,
    randomized: usize,
}

#[test]
fn ml_dsa_65_sign_from_seed() {
    let text =
        std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    let file: File = serde_json::from_str(&text).unwrap();
    assert_eq!(file.algorithm, "ML-DSA-65");

    let mut n = Counts::default();
    for group in &file.test_groups {
        assert_eq!(group.kind, "MlDsaSign");
        let sk = MlDsa65::signing_key_from_seed(&group.private_seed);
        for case in &group.tests {
            let id = format!("tcId {} ({})", case.tc_id, case.comment);
            let has = |flag: &str| case.flags.iter().any(|f| f == flag);
            assert!(
                case.result == "valid" || case.result == "invalid",
                "{id}: unexpected result {:?}",
                case.result
            );

            // Key generation from the seed.
            if has("IncorrectPrivateKeyLength") {
                assert_eq!(case.result, "invalid", "{id}");
                assert!(
                    matches!(sk, Err(Error::InvalidLength { expected: 32, .. })),
                    "{id}: seed of {} bytes must be rejected",
                    group.private_seed.len()
                );
                n.bad_seed += 1;
                continue;
            }
            let sk = sk.as_ref().unwrap();
            let vk = MlDsa65::verifying_key(sk);
            let public_key = group.public_key.as_ref().expect("group public key");
            assert_eq!(vk.as_ref(), public_key.as_slice(), "{id}: keygen");
            assert_eq!(
                MlDsa65::seed(sk),
                group.private_seed.as_slice(),
                "{id}: seed"
            );

            let Some(msg) = &case.msg else {
                // External-μ only: nothing to sign through our API.
                assert!(has("Internal") && case.mu.is_some(), "{id}: μ-only case");
                n.mu_only += 1;
                continue;
            };
            let ctx = case.ctx.as_deref().unwrap_or_default();
            let rnd: [u8; 32] = match &case.rnd {
                Some(rnd) => rnd.as_slice().try_into().unwrap(),
                None => [0; 32],
            };
            let sig = MlDsa65::sign_derand(sk, msg, ctx, &rnd);

            if has("InvalidContext") {
                assert_eq!(case.result, "invalid", "{id}");
                assert!(case.sig.is_empty(), "{id}: no signature expected");
                assert!(
                    matches!(sig, Err(Error::ContextTooLong { len }) if len == ctx.len()),
                    "{id}: context of {} bytes must be rejected",
                    ctx.len()
                );
                n.bad_context += 1;
                continue;
            }

            assert_eq!(case.result, "valid", "{id}: unexpected invalid case");
            let sig = sig.unwrap();
            assert_eq!(sig.as_ref(), case.sig.as_slice(), "{id}: signature");
            MlDsa65::verify(vk, msg, ctx, &sig).unwrap();
            let parsed = MlDsa65::signature_from_bytes(&case.sig).unwrap();
            MlDsa65::verify(vk, msg, ctx, &parsed).unwrap();
            // The signature is bound to the message and the context.
            let mut other_msg = msg.clone();
            other_msg.push(0);
            assert_eq!(
                MlDsa65::verify(vk, &other_msg, ctx, &sig),
                Err(Error::InvalidSignature),
                "{id}: other message"
            );
            let mut other_ctx = ctx.to_vec();
            if other_ctx.len() < 255 {
                other_ctx.push(0);
            } else {
                other_ctx[0] ^= 1;
            }
            assert_eq!(
                MlDsa65::verify(vk, msg, &other_ctx, &sig),
                Err(Error::InvalidSignature),
                "{id}: other context"
            );

            if case.rnd.is_some() {
                assert!(has("Randomized"), "{id}");
                n.randomized += 1;
            } else {
                let det = MlDsa65::sign_deterministic(sk, msg, ctx).unwrap();
                assert_eq!(
                    det.as_ref(),
                    case.sig.as_slice(),
                    "{id}: sign_deterministic"
                );
                n.deterministic += 1;
            }
        }
    }
    assert_eq!(file.number_of_tests, 105);
    assert_eq!(
        n,
        Counts {
            bad_seed: 3,
            mu_only: 17,
            bad_context: 1,
            deterministic: 83,
            randomized: 1,
        }
    );
}
