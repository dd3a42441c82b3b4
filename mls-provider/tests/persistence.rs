//! Persistence: a group created by a member whose provider stores to a SQLite file; the
//! provider is dropped, a new one is opened on the same file, the group is loaded and goes on
//! (commits and messages both ways) with the other members, one of them on
//! openmls_rust_crypto.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use openmls::prelude::*;
use pqmls_provider::{PqCrypto, Provider, SignatureKeyPair, SqliteStorage};

type FileProvider = Provider<SqliteStorage>;

fn open(path: &std::path::Path) -> FileProvider {
    Provider::from_parts(
        PqCrypto::new().unwrap(),
        SqliteStorage::open_file(path).unwrap(),
    )
}

fn run(cs: Ciphersuite) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.sqlite");
    let tag = format!("{cs:?}");

    // Alice's identity key is kept in the same file.
    let kp = SignatureKeyPair::generate(cs.signature_algorithm()).unwrap();
    let public = kp.public().to_vec();
    let provider = open(&path);
    kp.store(openmls_traits::OpenMlsProvider::storage(&provider))
        .unwrap();
    let alice = Client::with_signer(
        "alice",
        "pqmls",
        provider,
        cs,
        ClientSigner::Ours(kp),
        public.clone(),
    );

    let mut all: Vec<Box<dyn Peer>> = vec![
        Box::new(alice),
        Box::new(Client::new_ours("bob", our_provider(), cs)),
        Box::new(Client::new_raw(
            "carol",
            "openmls_rust_crypto",
            openmls_rust_crypto::OpenMlsRustCrypto::default(),
            cs,
        )),
    ];
    all[0].create_group();
    let mut members = vec![0];
    add_round(&mut all, &mut members, 0, &[1, 2], &tag);
    chat_round(&mut all, &members.clone(), &tag);
    update_round(&mut all, &members.clone(), 1, &tag);
    let before = all[0].epoch_authenticator();
    let epoch = all[0].epoch();

    // Drop alice's provider and group entirely, as a process exit would.
    let old = std::mem::replace(
        &mut all[0],
        Box::new(Client::new_ours("placeholder", our_provider(), cs)),
    );
    let group_id = {
        // Recover the group id through the public API before dropping.
        let exporter = old.exporter();
        assert_eq!(exporter.len(), 32);
        drop(old);
        all[1].group_id()
    };

    // Reopen: the signing key and the group come back from the file.
    let provider = open(&path);
    let storage = openmls_traits::OpenMlsProvider::storage(&provider);
    let kp = SignatureKeyPair::read(storage, &public)
        .unwrap()
        .expect("signing key persisted");
    let group = MlsGroup::load(storage, &GroupId::from_slice(&group_id))
        .unwrap()
        .expect("group persisted");
    let mut alice = Client::with_signer(
        "alice",
        "pqmls",
        provider,
        cs,
        ClientSigner::Ours(kp),
        public,
    );
    alice.group = Some(group);
    all[0] = Box::new(alice);
    assert_eq!(all[0].epoch(), epoch, "{tag}: epoch after reopening");
    assert_eq!(
        all[0].epoch_authenticator(),
        before,
        "{tag}: epoch authenticator after reopening"
    );
    assert_agree(&all, &members, &format!("{tag}: after reopening"));

    // The group goes on: messages both ways, commits by alice and by the others.
    chat_round(&mut all, &members.clone(), &tag);
    update_round(&mut all, &members.clone(), 0, &tag);
    update_round(&mut all, &members.clone(), 2, &tag);
    remove_round(&mut all, &mut members, 0, &[1], &tag);
    chat_round(&mut all, &members.clone(), &tag);
}

#[test]
fn reopen_file_and_continue_0x004f() {
    run(Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519);
}

#[test]
fn reopen_file_and_continue_0x0052() {
    run(Ciphersuite::MLS_128_MLKEM768X25519_CHACHA20POLY1305_SHA384_MLDSA44);
}

#[test]
fn reopen_file_and_continue_0x0001() {
    run(Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519);
}
