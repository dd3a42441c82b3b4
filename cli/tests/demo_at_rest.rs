//! `pqmls demo` and data at rest (issue 12 item 3): the real binary runs a three-client
//! demo (store node, group, invitations, messages, two concurrent self-updates, a restart
//! with catch-up) keeping its data in a directory, with the clients' databases keyed from
//! `PQMLS_KEY_FILE`. Then every file under that directory (client databases, WAL, locks,
//! the store node's database and key, anything) is scanned for the message bodies and for
//! every secret the client databases hold (read through the key: identity seeds, HPKE and
//! key-package private keys, epoch secrets, ordering keys). None may appear. Controls: the
//! same secrets and bodies are found in the clients' files once decrypted with the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use pqmls_provider::{CipherKey, SqliteStorage};

#[path = "../../sdk/tests/support/at_rest_scan.rs"]
mod scan;

const KEY: [u8; 32] = [0x5a; 32];
const CLIENTS: [&str; 3] = ["alice", "bob", "carol"];

#[test]
fn no_body_or_secret_in_any_file_after_the_demo() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("key");
    std::fs::write(&key_file, hex(&KEY)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let o = Command::new(env!("CARGO_BIN_EXE_pqmls"))
        .env_remove("PQMLS_PASSPHRASE")
        .env("PQMLS_KEY_FILE", &key_file)
        .args(["demo", "--clients", "3", "--dir"])
        .arg(&data)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "demo failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("demo OK"), "{out}");

    // What the demo sends (cli/src/demo.rs).
    let mut bodies: Vec<Vec<u8>> = CLIENTS
        .iter()
        .map(|n| format!("hello from {n}").into_bytes())
        .collect();
    for (k, n) in CLIENTS.iter().take(2).enumerate() {
        bodies.push(format!("while carol was away #{} from {n}", k + 1).into_bytes());
    }

    let stored = scan::files(&data);
    let mut secrets = Vec::new();
    for name in CLIENTS {
        let dir = data.join(name);
        let decrypted = scan::decrypt_data_dir(&dir, &KEY);
        let s: SqliteStorage = SqliteStorage::open_file_encrypted(
            dir.join(pqmls::DATABASE_FILE),
            &CipherKey::from_bytes(KEY),
        )
        .unwrap();
        let mine = scan::secrets(&s);
        drop(s);
        let kinds = scan::kinds(&mine);
        for kind in [
            "identity seed",
            "HPKE tree private key (own leaf, path)",
            "key-package init private key",
            "exporter secret",
            "ordering exporter key",
        ] {
            assert!(kinds.contains_key(kind), "no {kind} in {name}: {kinds:?}");
        }
        // Control: the decrypted pages hold every secret and every body.
        let refs: Vec<&[u8]> = mine.iter().map(|s| s.bytes.as_slice()).collect();
        assert_eq!(scan::found(&decrypted, &refs).len(), refs.len(), "{name}");
        for b in &bodies {
            assert!(
                scan::contains(&decrypted, b),
                "{name}'s decrypted pages lack {:?}",
                String::from_utf8_lossy(b)
            );
        }
        secrets.extend(mine);
    }
    // The store node's database is plain SQLite (it holds only MLS ciphertext and public
    // key packages) and is scanned like the rest.
    assert!(
        stored
            .iter()
            .any(|(p, b)| p.starts_with(data.join("store")) && b.starts_with(b"SQLite format 3")),
        "{:?}",
        stored.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    let refs: Vec<&[u8]> = secrets.iter().map(|s| s.bytes.as_slice()).collect();
    for (path, bytes) in &stored {
        for b in &bodies {
            assert!(
                !scan::contains(bytes, b),
                "{} holds the body {:?}",
                path.display(),
                String::from_utf8_lossy(b)
            );
        }
        let hits = scan::found(bytes, &refs);
        assert!(
            hits.is_empty(),
            "{} holds in clear: {:?}",
            path.display(),
            hits.iter().map(|i| &secrets[*i]).collect::<Vec<_>>()
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
