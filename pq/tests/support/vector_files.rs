//! Checks a `tests/data/` folder of vectors against its `SHA256SUMS`: every listed file is
//! there byte for byte, and nothing else is (but `SHA256SUMS` and `README.md`). Shared by
//! the `vector_files` tests of `pqmls-pq` and `pqmls-provider` through `#[path]`.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;

fn files_under(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel != "SHA256SUMS" && rel != "README.md" {
                out.insert(rel);
            }
        }
    }
}

/// Panics with the file's name on the first difference.
pub fn check(root: &Path) {
    let sums = std::fs::read_to_string(root.join("SHA256SUMS")).unwrap();
    let mut listed = BTreeSet::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (hash, name) = line.split_once("  ").expect("`<sha256>  <path>` lines");
        let bytes = std::fs::read(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            hash,
            "{name} differs from its source"
        );
        assert!(listed.insert(name.to_string()), "{name} listed twice");
    }
    let mut present = BTreeSet::new();
    files_under(root, root, &mut present);
    assert_eq!(
        present, listed,
        "files in tests/data/ and SHA256SUMS differ"
    );
    assert!(
        root.join("README.md").is_file(),
        "tests/data/README.md names the sources"
    );
}
