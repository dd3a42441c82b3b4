//! Issue 12 item 3: what a node writes to its data directory is private to its user: the
//! folders 0700, the identity key and the databases (with their WAL files) 0600.

#![cfg(unix)]
// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::waku_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pqmls_transport::store;
use pqmls_transport::{Node, Topic};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_nodes_folders_are_0700_and_its_files_0600() {
    let root = support::temp_dir("modes");
    let dir = root.join("node").join("data");
    let config = waku_support::waku_config(&[0]).with_store(&dir, store::Config::default());
    let (node, _) = Node::start(config).await.unwrap();
    // Write something so that the WAL files exist.
    node.subscribe(&Topic::from_group_id(b"g")).await.unwrap();
    node.shutdown().await.unwrap();
    assert_eq!(mode(&root.join("node")), 0o700, "created parent");
    assert_eq!(mode(&dir), 0o700);
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for f in ["identity.key", "store.sqlite3", "waku_store.sqlite3"] {
        assert!(seen.iter().any(|s| s == f), "{f} in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_left_world_readable_by_an_earlier_version_is_made_private() {
    let dir = support::temp_dir("modes-old");
    let db = dir.join("store.sqlite3");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = support::config().with_store(&dir, store::Config::default());
    let (node, _) = Node::start(config).await.unwrap();
    node.shutdown().await.unwrap();
    assert_eq!(mode(&db), 0o600);
}
