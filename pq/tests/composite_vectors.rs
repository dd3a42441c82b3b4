//! Known-answer tests: composite ML-DSA + Ed25519 signatures.
//!
//! Source: `composite-sigs/testvectors.json` in `tests/data/`, a byte-for-byte copy
//! of `src/testvectors.json` from lamps-wg/draft-composite-sigs @ 60fcb1e8. The file holds
//! one message `m` and one context `ctx` (base64, top level) and 21 algorithms; this crate
//! implements two of them, id-MLDSA44-Ed25519-SHA512 and id-MLDSA65-Ed25519-SHA512.
//!
//! Per algorithm: the private key `sk` (`mldsaSeed || ed25519Seed`, 64 bytes) gives `pk`;
//! `s` verifies on `m` with the empty context and `sWithContext` with `ctx`; each fails
//! under the other context, on another message, or with either component altered. Our
//! own signatures verify; their Ed25519 half, which is deterministic, must equal the
//! vector's (this pins down the message representative `M'`), and the ML-DSA half of a
//! hedged signature differs from the deterministic one.

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pqmls_pq::{Error, MlDsa44Ed25519, MlDsa65Ed25519, SignatureScheme};
use serde::Deserialize;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/composite-sigs/testvectors.json"
);

#[derive(Deserialize)]
struct File {
    #[serde(deserialize_with = "b64")]
    m: Vec<u8>,
    #[serde(deserialize_with = "b64")]
    ctx: Vec<u8>,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    tc_id: String,
    #[serde(deserialize_with = "b64")]
    pk: Vec<u8>,
    #[serde(deserialize_with = "b64")]
    sk: Vec<u8>,
    #[serde(deserialize_with = "b64")]
    s: Vec<u8>,
    #[serde(deserialize_with = "b64")]
    s_with_context: Vec<u8>,
}

fn b64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    STANDARD
        .decode(String::deserialize(d)?)
        .map_err(serde::de::Error::custom)
}

fn load() -> File {
    let text =
        std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Runs the vector named `S::NAME`; returns the number of vectors run (1).
fn check<S: SignatureScheme>() -> usize {
    let file = load();
    assert_eq!(file.tests.len(), 21, "the draft ships 21 algorithms");
    let (m, ctx) = (&file.m, &file.ctx);
    assert!(!ctx.is_empty());
    let mut ran = 0;
    for case in file.tests.iter().filter(|c| c.tc_id == S::NAME) {
        let name = S::NAME;
        assert_eq!(
            case.sk.len(),
            S::SEED_LEN,
            "{name}: sk is mldsaSeed || ed25519Seed"
        );
        let sk = S::signing_key_from_seed(&case.sk).unwrap();
        assert_eq!(
            S::verifying_key(&sk).as_ref(),
            case.pk.as_slice(),
            "{name}: keygen"
        );

        let vk = S::verifying_key_from_bytes(&case.pk).unwrap();
        let s = S::signature_from_bytes(&case.s).unwrap();
        let s_ctx = S::signature_from_bytes(&case.s_with_context).unwrap();
        S::verify(&vk, m, b"", &s).unwrap_or_else(|e| panic!("{name}: s: {e}"));
        S::verify(&vk, m, ctx, &s_ctx).unwrap_or_else(|e| panic!("{name}: sWithContext: {e}"));

        // Wrong context, wrong message, altered components.
        let bad = Err(Error::InvalidSignature);
        assert_eq!(S::verify(&vk, m, ctx, &s), bad, "{name}: s under ctx");
        assert_eq!(
            S::verify(&vk, m, b"", &s_ctx),
            bad,
            "{name}: sWithContext, no ctx"
        );
        let mut other_m = m.clone();
        other_m[0] ^= 1;
        assert_eq!(
            S::verify(&vk, &other_m, b"", &s),
            bad,
            "{name}: other message"
        );
        assert_eq!(
            S::verify(&vk, &other_m, ctx, &s_ctx),
            bad,
            "{name}: other message"
        );
        for (part, index) in [("ML-DSA", 0), ("Ed25519", S::SIG_LEN - 1)] {
            let mut altered = case.s.clone();
            altered[index] ^= 0x40;
            let altered = S::signature_from_bytes(&altered).unwrap();
            assert_eq!(
                S::verify(&vk, m, b"", &altered),
                bad,
                "{name}: altered {part}"
            );
        }

        // Our own signatures: they verify, and the deterministic Ed25519 half equals the
        // vector's, for both contexts.
        let ed = S::SIG_LEN - 64;
        for (c, expected) in [(&b""[..], &case.s), (&ctx[..], &case.s_with_context)] {
            let det = S::sign_deterministic(&sk, m, c).unwrap();
            let hedged = S::sign_derand(&sk, m, c, &[0x5a; 32]).unwrap();
            for sig in [&det, &hedged] {
                S::verify(&vk, m, c, sig).unwrap_or_else(|e| panic!("{name}: own sig: {e}"));
                assert_eq!(&sig.as_ref()[ed..], &expected[ed..], "{name}: Ed25519 half");
            }
            assert_ne!(
                &det.as_ref()[..ed],
                &hedged.as_ref()[..ed],
                "{name}: rnd is used"
            );
            let other_c: &[u8] = if c.is_empty() { ctx } else { b"" };
            assert_eq!(
                S::verify(&vk, m, other_c, &det),
                bad,
                "{name}: own sig, other ctx"
            );
        }
        ran += 1;
    }
    ran
}

#[test]
fn mldsa44_ed25519_sha512() {
    assert_eq!(MlDsa44Ed25519::NAME, "id-MLDSA44-Ed25519-SHA512");
    assert_eq!(check::<MlDsa44Ed25519>(), 1);
}

#[test]
fn mldsa65_ed25519_sha512() {
    assert_eq!(MlDsa65Ed25519::NAME, "id-MLDSA65-Ed25519-SHA512");
    assert_eq!(check::<MlDsa65Ed25519>(), 1);
}
