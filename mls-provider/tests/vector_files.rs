//! The vector files in `tests/data/` are the ones `tests/data/SHA256SUMS` names, byte for
//! byte, and nothing else is there: a vector edited by hand, truncated by a bad checkout or
//! added without a source line fails here rather than as a puzzling known-answer failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::pq_vector_files as vector_files;

#[test]
fn every_vector_file_matches_its_checksum_and_is_listed() {
    vector_files::check(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data"
    )));
}
