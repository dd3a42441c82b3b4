//! Replays every fuzz body over its committed seed corpus (`corpus/<target>/`, which must
//! not be empty) and over the saved reproducers of past findings
//! (`regressions/<target>/`, may be absent). Runs on stable without libFuzzer:
//!
//! ```sh
//! cargo test --manifest-path fuzz/Cargo.toml --no-default-features
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: panics are failures.

use std::path::{Path, PathBuf};

/// The files of `dir` (none if it does not exist), sorted by name.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `body` over every file of `dir`, naming the file if it panics. With `RUST_LOG`
/// set, the SDK's trace goes to stderr (to follow one input: `--exact`, a single file).
fn replay(dir: &Path, body: pqmls_fuzz::Body) -> usize {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let files = files(dir);
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            panic!("{} failed", file.display());
        }
    }
    files.len()
}

fn replay_target(name: &str) {
    let (_, body) = pqmls_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("known target");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n = replay(&root.join("corpus").join(name), *body);
    assert!(n > 0, "seed corpus corpus/{name}/ is empty");
    replay(&root.join("regressions").join(name), *body);
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay_target(stringify!($name));
            }
        )*

        #[test]
        fn every_target_is_replayed() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in pqmls_fuzz::TARGETS {
                assert!(tested.contains(name), "{name} has no replay test");
            }
        }
    };
}

replay_tests!(
    pq_xwing_decaps,
    pq_ml_kem_decaps,
    pq_ml_kem_ek_parse,
    pq_ml_dsa_verify,
    pq_composite_verify,
    provider_hpke_open,
    provider_mls_process,
    sdk_api_ops,
);

/// The MLS seeds are real messages of the fixture group (which is deterministic): each
/// must still be accepted, not merely not crash.
#[test]
fn provider_mls_seeds_are_live() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/provider_mls_process");
    for file in files(&dir) {
        if file.to_string_lossy().contains("empty") {
            continue;
        }
        let data = std::fs::read(&file).unwrap();
        assert!(
            !pqmls_fuzz::provider_mls::process(&data).is_empty(),
            "{} is no longer accepted (the fixture changed?)",
            file.display()
        );
    }
}

/// The SDK seeds that form the trio (a creates group 0, invites b and c) must still end
/// with all three agreeing in it, not merely not crash.
#[test]
fn sdk_api_seeds_are_live() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sdk_api_ops");
    let mut checked = 0;
    for file in files(&dir) {
        if !file.to_string_lossy().ends_with("-trio") {
            continue;
        }
        let data = std::fs::read(&file).unwrap();
        let outcome = pqmls_fuzz::sdk_api::run(&data);
        assert_eq!(
            outcome.groups.first().and_then(|g| g.map(|(n, _)| n)),
            Some(3),
            "{}: {outcome:?}",
            file.display()
        );
        checked += 1;
    }
    assert!(checked > 0, "no trio seed in corpus/sdk_api_ops/");
}
