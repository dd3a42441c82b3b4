//! Mixed groups: one member on our provider, the others on openmls_rust_crypto 0.6 or
//! openmls_libcrux_crypto 0.4, on every suite that peer supports. Everyone decrypts
//! everyone's messages and processes everyone's commits, whoever commits; the group is
//! created once by a peer and once by us, and our member joins from a peer's Welcome and
//! the peers from ours.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use openmls::prelude::Ciphersuite;
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;

#[derive(Clone, Copy, Debug)]
enum PeerKind {
    RustCrypto,
    Libcrux,
}

fn peer(kind: PeerKind, name: &str, cs: Ciphersuite) -> Box<dyn Peer> {
    match kind {
        PeerKind::RustCrypto => Box::new(Client::new_raw(
            name,
            "openmls_rust_crypto",
            openmls_rust_crypto::OpenMlsRustCrypto::default(),
            cs,
        )),
        PeerKind::Libcrux => Box::new(Client::new_raw(
            name,
            "openmls_libcrux_crypto",
            openmls_libcrux_crypto::Provider::new().unwrap(),
            cs,
        )),
    }
}

/// The suites a peer supports: those its `supports()` accepts *and* for which it can
/// derive an HPKE key pair. openmls_libcrux_crypto 0.4 accepts 0xF042 (ML-KEM-768) in
/// `supports()` but its HPKE backend cannot derive ML-KEM keys (`CryptoLibraryError`), so
/// it cannot even make a key package there; such suites are listed and skipped.
fn peer_supports(kind: PeerKind) -> Vec<Ciphersuite> {
    fn usable<C: OpenMlsCrypto>(c: &C) -> (Vec<Ciphersuite>, Vec<Ciphersuite>) {
        pqmls_provider::SUPPORTED_CIPHERSUITES
            .into_iter()
            .filter(|cs| c.supports(*cs).is_ok())
            .partition(|cs| c.derive_hpke_keypair(cs.hpke_config(), &[7u8; 32]).is_ok())
    }
    let (ok, broken) = match kind {
        PeerKind::RustCrypto => usable(openmls_rust_crypto::OpenMlsRustCrypto::default().crypto()),
        PeerKind::Libcrux => usable(openmls_libcrux_crypto::Provider::new().unwrap().crypto()),
    };
    if !broken.is_empty() {
        println!(
            "{kind:?}: supports() accepts but cannot derive HPKE keys for {broken:?}: skipped"
        );
    }
    ok
}

/// Members: 0 = ours ("us"), 1 and 2 = peers. `creator` makes the group.
fn mixed(kind: PeerKind, cs: Ciphersuite, creator: usize) {
    let tag = format!("{kind:?} {cs:?} creator {creator}");
    let mut all: Vec<Box<dyn Peer>> = vec![
        Box::new(Client::new_ours("us", our_provider(), cs)),
        peer(kind, "peer1", cs),
        peer(kind, "peer2", cs),
    ];
    let others: Vec<usize> = (0..3).filter(|i| *i != creator).collect();
    all[creator].create_group();
    let mut members = vec![creator];
    add_round(&mut all, &mut members, creator, &others, &tag);
    chat_round(&mut all, &members.clone(), &tag);
    // Everyone commits once; everyone processes everyone's commits.
    for c in [0, 1, 2] {
        update_round(&mut all, &members.clone(), c, &tag);
    }
    chat_round(&mut all, &members.clone(), &tag);
    // We remove a peer and add it back; then a peer removes us and adds us back.
    remove_round(&mut all, &mut members, 0, &[2], &tag);
    add_round(&mut all, &mut members, 0, &[2], &tag);
    remove_round(&mut all, &mut members, 1, &[0], &tag);
    add_round(&mut all, &mut members, 2, &[0], &tag);
    for c in [2, 0, 1] {
        update_round(&mut all, &members.clone(), c, &tag);
    }
    chat_round(&mut all, &members.clone(), &tag);
}

fn run_all(kind: PeerKind) {
    let suites = peer_supports(kind);
    assert!(!suites.is_empty());
    let mut failures = Vec::new();
    for cs in &suites {
        for creator in [0, 1] {
            let r = std::panic::catch_unwind(|| mixed(kind, *cs, creator));
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{cs:?} (creator {creator}): {msg}"));
            }
        }
    }
    println!(
        "{kind:?}: mixed groups on {} suites: {suites:?}",
        suites.len()
    );
    assert!(
        failures.is_empty(),
        "{kind:?} failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn mixed_with_openmls_rust_crypto() {
    run_all(PeerKind::RustCrypto);
}

#[test]
fn mixed_with_openmls_libcrux_crypto() {
    run_all(PeerKind::Libcrux);
}

/// With the spec profile on our side, a mixed group breaks at the first path secret we
/// derive differently: the profile default exists for a reason (DESIGN.md item 6).
#[test]
fn spec_profile_does_not_interoperate_with_openmls_providers() {
    use pqmls_provider::{CryptoConfig, DeriveProfile};
    let cs = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;
    let config = CryptoConfig {
        derive_profile: DeriveProfile::HpkePq,
        ..CryptoConfig::default()
    };
    let mut us = Client::new_ours("us", our_provider_with(config), cs);
    let mut peer = Client::new_raw(
        "peer",
        "openmls_rust_crypto",
        openmls_rust_crypto::OpenMlsRustCrypto::default(),
        cs,
    );
    us.create_group();
    let kp = peer.key_package();
    let (_commit, welcome) = us.add(&[kp]);
    // The peer derives its path keys from the path secret in the Welcome with the plain
    // profile and finds they do not match the public keys in our tree.
    let err = peer.try_join(&welcome).unwrap_err();
    assert!(err.contains("PublicKeyMismatch"), "{err}");
}
