//! A tour of `pqmls-pq`: for every KEM and signature scheme, the sizes, one round trip
//! checked end to end, and rough timings (median of repeated runs; for real numbers
//! see BENCHMARKS.md and `cargo bench -p pqmls-benches`).
//!
//! Run with `cargo run --release -p pqmls-pq --example tour`.

use pqmls_pq::{
    Ed25519, Kem, MlDsa44, MlDsa44Ed25519, MlDsa65, MlDsa65Ed25519, MlDsa87, MlKem768, MlKem1024,
    OsRng, SignatureScheme, XWing,
};
use std::time::{Duration, Instant};

/// Median wall time of `f` over `runs` runs.
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn kem<K: Kem>(runs: usize) -> Result<(), pqmls_pq::Error> {
    let dk = K::generate(&mut OsRng)?;
    let ek = K::encapsulation_key_from_bytes(K::encapsulation_key(&dk).as_ref())?;
    let (ct, ss) = K::encapsulate(&ek, &mut OsRng)?;
    let ok = K::decapsulate(&dk, &ct)?.as_bytes() == ss.as_bytes();
    let prepared = K::prepare(&ek);
    let seed = K::seed(&dk).to_vec();

    let keygen = median(runs, || K::decapsulation_key_from_seed(&seed));
    let encaps = median(runs, || {
        K::encapsulation_key_from_bytes(ek.as_ref()).and_then(|ek| K::encapsulate(&ek, &mut OsRng))
    });
    let encaps_prepared = median(runs, || K::encapsulate_prepared(&prepared, &mut OsRng));
    let decaps = median(runs, || K::decapsulate(&dk, &ct));
    println!(
        "{:<12} seed {:>3} B  ek {:>5} B  ct {:>5} B  round trip {}  keygen {:>9}  encaps {:>9}  encaps (prepared) {:>9}  decaps {:>9}",
        K::NAME,
        K::SEED_LEN,
        K::EK_LEN,
        K::CT_LEN,
        if ok { "ok" } else { "FAILED" },
        micros(keygen),
        micros(encaps),
        micros(encaps_prepared),
        micros(decaps),
    );
    if ok {
        Ok(())
    } else {
        Err(pqmls_pq::Error::InvalidSignature)
    }
}

fn sig<S: SignatureScheme>(runs: usize) -> Result<(), pqmls_pq::Error> {
    let msg = b"pqmls: a post-quantum group message";
    let ctx: &[u8] = if S::MAX_CONTEXT_LEN > 0 {
        b"pqmls tour"
    } else {
        b""
    };
    let sk = S::generate(&mut OsRng)?;
    let vk = S::verifying_key_from_bytes(S::verifying_key(&sk).as_ref())?;
    let signature = S::sign(&sk, msg, ctx, &mut OsRng)?;
    S::verify(&vk, msg, ctx, &signature)?;
    let rejected = S::verify(&vk, b"another message", ctx, &signature).is_err();
    let seed = S::seed(&sk).to_vec();

    let keygen = median(runs, || S::signing_key_from_seed(&seed));
    let sign = median(runs, || S::sign(&sk, msg, ctx, &mut OsRng));
    let verify = median(runs, || S::verify(&vk, msg, ctx, &signature));
    println!(
        "{:<26} seed {:>2} B  vk {:>5} B  sig {:>5} B  sign/verify {}  keygen {:>9}  sign {:>9}  verify {:>9}",
        S::NAME,
        S::SEED_LEN,
        S::VK_LEN,
        S::SIG_LEN,
        if rejected { "ok" } else { "FAILED" },
        micros(keygen),
        micros(sign),
        micros(verify),
    );
    if rejected {
        Ok(())
    } else {
        Err(pqmls_pq::Error::InvalidSignature)
    }
}

fn main() -> Result<(), pqmls_pq::Error> {
    let runs = 201;
    println!("pqmls-pq tour: sizes, a checked round trip, median timings over {runs} runs\n");
    println!("Key encapsulation");
    kem::<XWing>(runs)?;
    kem::<MlKem768>(runs)?;
    kem::<MlKem1024>(runs)?;
    println!("\nSignatures");
    sig::<MlDsa44>(runs)?;
    sig::<MlDsa65>(runs)?;
    sig::<MlDsa87>(runs)?;
    sig::<Ed25519>(runs)?;
    sig::<MlDsa44Ed25519>(runs)?;
    sig::<MlDsa65Ed25519>(runs)?;
    println!("\nAll round trips succeeded.");
    Ok(())
}
