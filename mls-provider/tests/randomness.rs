//! The provider's randomness (`PqCrypto`'s docs, "Randomness"): every byte comes from the
//! operating system when it is asked for, so no two providers and no forked child repeat
//! each other's output. A generator seeded once and kept in memory (what the provider had
//! before) fails `forked_child_does_not_repeat_its_parent`: parent and child would go on
//! from the same state and draw the same bytes.

use std::collections::HashSet;

use openmls_traits::random::OpenMlsRand;
use pqmls_pq::rand_core::TryRng;
use pqmls_provider::PqCrypto;

/// Draws per provider and per process: 3 x 86 values of 32 bytes.
const DRAWS: usize = 258;

/// 32-byte values through every way the provider hands out randomness.
fn draws(p: &PqCrypto) -> Result<Vec<[u8; 32]>, String> {
    let mut out = Vec::with_capacity(DRAWS);
    for i in 0..DRAWS {
        let v = match i % 3 {
            0 => p.random_array::<32>().map_err(|e| e.to_string())?,
            1 => p
                .random_vec(32)
                .map_err(|e| e.to_string())?
                .try_into()
                .map_err(|_| "random_vec length".to_string())?,
            _ => {
                let mut b = [0u8; 32];
                p.rng().try_fill_bytes(&mut b).map_err(|e| e.to_string())?;
                b
            }
        };
        out.push(v);
    }
    Ok(out)
}

/// Every value of every list is distinct from every other.
fn assert_all_distinct(lists: &[&[[u8; 32]]]) {
    let mut seen = HashSet::new();
    for list in lists {
        for v in *list {
            assert!(seen.insert(*v), "a 32-byte random value repeated");
        }
    }
}

#[test]
fn two_providers_never_repeat() {
    let a = PqCrypto::new().unwrap();
    let b = PqCrypto::new().unwrap();
    let (da, db) = (draws(&a).unwrap(), draws(&b).unwrap());
    assert_all_distinct(&[&da, &db]);
}

#[cfg(unix)]
#[test]
fn forked_child_does_not_repeat_its_parent() {
    let provider = PqCrypto::new().unwrap();
    // Use the provider before the fork, as a long-running process would.
    let before = draws(&provider).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("child-draws");
    match fork::fork().unwrap() {
        fork::Fork::Child => {
            // Only this thread exists in the child: no panics, no return into the test
            // harness. Write the draws and leave.
            let code = match draws(&provider) {
                Ok(d) => match std::fs::write(&path, d.concat()) {
                    Ok(()) => 0,
                    Err(_) => 2,
                },
                Err(_) => 3,
            };
            std::process::exit(code);
        }
        fork::Fork::Parent(pid) => {
            let parent = draws(&provider).unwrap();
            let status = fork::waitpid(pid).unwrap();
            assert_eq!(status, 0, "the child failed (raw wait status {status})");
            let bytes = std::fs::read(&path).unwrap();
            let child: Vec<[u8; 32]> = bytes
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap())
                .collect();
            assert_eq!(child.len(), DRAWS);
            assert_all_distinct(&[&before, &parent, &child]);
        }
    }
}
