//! Criterion benchmarks of pqmls, with the peer implementations side by side.
//!
//! The benchmarks live in `benches/`; this library is empty. Run them with
//!
//! ```sh
//! cargo bench -p pqmls-benches --bench pq
//! ```
//!
//! Every group names its entries `BenchmarkId::new(implementation, parameter)`, so one
//! run shows ours and the peers' timings for the same operation together:
//!
//! | group | what is timed |
//! |---|---|
//! | `xwing/keygen` | 32-byte seed to a usable private key (expansion included) |
//! | `xwing/encaps_fresh` | parse (validate) a 1216-byte key, then encapsulate |
//! | `xwing/encaps_prepared` | encapsulate to a key parsed (ours: prepared) beforehand |
//! | `xwing/decaps_cached` | decapsulate with each library's private key object |
//! | `xwing/decaps_from_seed` | expand the 32-byte seed, then decapsulate |
//! | `ml_kem_768/{keygen,encaps,decaps}` | ours vs raw `libcrux-ml-kem` |
//! | `ml_dsa_65/{keygen,sign,verify}` | ours vs RustCrypto `ml-dsa` vs raw `libcrux-ml-dsa` |
//! | `composite/{sign,verify}` | ours, both ML-DSA + Ed25519 composites |
