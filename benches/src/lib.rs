//! Shared helpers for the pqmls benchmarks.
