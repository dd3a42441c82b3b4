//! Known-answer tests: C2SP CCTV accumulated ML-DSA key generation and signing.
//!
//! Source: `cctv/ML-DSA/accumulated_README.md` in `tests/data/`, a byte-for-byte copy
//! of `ML-DSA/accumulated/README.md` from C2SP/CCTV @ 1e3d2860 (final FIPS 204). One
//! SHAKE128 instance with empty input supplies the 32-byte seeds; per iteration the
//! public key of `ML-DSA.KeyGen_internal(seed)` and the deterministic signature of the
//! empty message with the empty context are written to a second SHAKE128 instance, and
//! the signature must verify; the result is 32 bytes read from the second instance.
//!
//! The 100-iteration hashes of ML-DSA-44, -65 and -87 always run, and so do the
//! 10 000-iteration ones of ML-DSA-44 and -65 (about 2.6 s and 4.5 s of CPU in the test
//! profile on the development machine). The 10 000-iteration ML-DSA-87 test takes about
//! 7.4 s of CPU there, so it is `#[ignore]`d: run it with `cargo test -p pqmls-pq --test
//! ml_dsa_cctv -- --include-ignored` (CI should).

// Test code: a panic is how a failed check is reported (clippy.toml allows unwrap and
// expect inside #[test] functions only, not in the helpers they call).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pqmls_pq::{MlDsa44, MlDsa65, MlDsa87, SignatureScheme};
use shake::{ExtendableOutput, Shake128, Update, XofReader};

fn accumulated<S: SignatureScheme>(iterations: usize) -> String {
    let mut seeds = Shake128::default().finalize_xof();
    let mut acc = Shake128::default();
    let mut ran = 0;
    for i in 0..iterations {
        let mut seed = [0u8; 32];
        seeds.read(&mut seed);
        let sk = S::signing_key_from_seed(&seed).unwrap();
        let vk = S::verifying_key(&sk);
        acc.update(vk.as_ref());
        let sig = S::sign_deterministic(&sk, b"", b"").unwrap();
        acc.update(sig.as_ref());
        S::verify(vk, b"", b"", &sig).unwrap_or_else(|e| panic!("{} iteration {i}: {e}", S::NAME));
        ran += 1;
    }
    assert_eq!(ran, iterations);
    let mut out = [0u8; 32];
    acc.finalize_xof().read(&mut out);
    hex::encode(out)
}

#[test]
fn ml_dsa_44_100() {
    assert_eq!(
        accumulated::<MlDsa44>(100),
        "d51148e1f9f4fa1a723a6cf42e25f2a99eb5c1b378b3d2dbbd561b1203beeae4"
    );
}

#[test]
fn ml_dsa_65_100() {
    assert_eq!(
        accumulated::<MlDsa65>(100),
        "8358a1843220194417cadbc2651295cd8fc65125b5a5c1a239a16dc8b57ca199"
    );
}

#[test]
fn ml_dsa_87_100() {
    assert_eq!(
        accumulated::<MlDsa87>(100),
        "8c3ad714777622b8f21ce31bb35f71394f23bc0fcf3c78ace5d608990f3b061b"
    );
}

#[test]
fn ml_dsa_44_10_000() {
    assert_eq!(
        accumulated::<MlDsa44>(10_000),
        "e7fd21f6a59bcba60d65adc44404bb29a7c00e5d8d3ec06a732c00a306a7d143"
    );
}

#[test]
fn ml_dsa_65_10_000() {
    assert_eq!(
        accumulated::<MlDsa65>(10_000),
        "5ff5e196f0b830c3b10a9eb5358e7c98a3a20136cb677f3ae3b90175c3ace329"
    );
}

#[test]
#[ignore = "about 7 s in the test profile; run with --include-ignored"]
fn ml_dsa_87_10_000() {
    assert_eq!(
        accumulated::<MlDsa87>(10_000),
        "80a8cf39317f7d0be0e24972c51ac152bd2a3e09bc0c32ce29dd82c4e7385e60"
    );
}
