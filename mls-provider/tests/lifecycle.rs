//! The full group lifecycle on every one of the 17 cipher suites, every member on our
//! provider: create, add members, join from the Welcome, application messages in every
//! direction, self-update, remove, add again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use openmls::prelude::Ciphersuite;
use openmls_traits::crypto::OpenMlsCrypto;
use pqmls_provider::{CryptoConfig, DeriveProfile, PqCrypto, SUPPORTED_CIPHERSUITES};

fn lifecycle(cs: Ciphersuite) {
    lifecycle_with(cs, CryptoConfig::default());
}

fn lifecycle_with(cs: Ciphersuite, config: CryptoConfig) {
    let tag = format!("{cs:?} {:?}", config.derive_profile);
    let mut all: Vec<Box<dyn Peer>> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|n| Box::new(Client::new_ours(n, our_provider_with(config), cs)) as Box<dyn Peer>)
        .collect();
    let (alice, bob, carol, dave) = (0, 1, 2, 3);

    all[alice].create_group();
    let mut members = vec![alice];
    add_round(&mut all, &mut members, alice, &[bob, carol], &tag);
    chat_round(&mut all, &members.clone(), &tag);
    update_round(&mut all, &members.clone(), bob, &tag);
    update_round(&mut all, &members.clone(), carol, &tag);
    chat_round(&mut all, &members.clone(), &tag);
    add_round(&mut all, &mut members, carol, &[dave], &tag);
    remove_round(&mut all, &mut members, bob, &[carol], &tag);
    chat_round(&mut all, &members.clone(), &tag);
    // Add again: carol comes back with a fresh key package.
    add_round(&mut all, &mut members, dave, &[carol], &tag);
    update_round(&mut all, &members.clone(), alice, &tag);
    chat_round(&mut all, &members.clone(), &tag);
    assert_eq!(all[alice].member_count(), 4);
}

#[test]
fn supports_and_supported_ciphersuites_agree() {
    let c = PqCrypto::new().unwrap();
    assert_eq!(c.supported_ciphersuites().len(), 17);
    for cs in c.supported_ciphersuites() {
        c.supports(cs).unwrap();
    }
    // Every suite openmls_traits knows decodes to one we list.
    for id in 0u16..=0xFFFF {
        if let Ok(cs) = Ciphersuite::try_from(id) {
            assert!(
                c.supports(cs).is_ok() == SUPPORTED_CIPHERSUITES.contains(&cs),
                "{cs:?}"
            );
            assert!(
                SUPPORTED_CIPHERSUITES.contains(&cs),
                "openmls_traits suite {cs:?} missing from our list"
            );
        }
    }
}

/// The spec (hpke-pq) DeriveKeyPair profile runs whole groups too, on each post-quantum KEM.
#[test]
fn lifecycle_hpke_pq_profile() {
    let config = CryptoConfig {
        derive_profile: DeriveProfile::HpkePq,
        ..CryptoConfig::default()
    };
    for cs in [
        Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519,
        Ciphersuite::MLS_192_MLKEM768_AES256GCM_SHA384_MLDSA65,
        Ciphersuite::MLS_192_MLKEM1024_AES256GCM_SHA384_P384,
    ] {
        lifecycle_with(cs, config);
    }
}

/// Both profiles derive the same DHKEM keys (RFC 9180 has one DeriveKeyPair) and different
/// post-quantum ones.
#[test]
fn profiles_differ_only_for_post_quantum_kems() {
    use openmls_traits::crypto::OpenMlsCrypto as _;
    let plain = PqCrypto::new().unwrap();
    let spec = PqCrypto::with_config(CryptoConfig {
        derive_profile: DeriveProfile::HpkePq,
        ..CryptoConfig::default()
    })
    .unwrap();
    for cs in SUPPORTED_CIPHERSUITES {
        let a = plain
            .derive_hpke_keypair(cs.hpke_config(), &[9u8; 32])
            .unwrap();
        let b = spec
            .derive_hpke_keypair(cs.hpke_config(), &[9u8; 32])
            .unwrap();
        let pq = !matches!(cs as u16, 0x0001..=0x0007);
        assert_eq!(a.public != b.public, pq, "{cs:?}");
    }
}

macro_rules! suite_tests {
    ($($name:ident => $cs:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                lifecycle(Ciphersuite::$cs);
            }
        )*
    };
}

suite_tests! {
    lifecycle_0001 => MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
    lifecycle_0002 => MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
    lifecycle_0003 => MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
    lifecycle_0004 => MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448,
    lifecycle_0005 => MLS_256_DHKEMP521_AES256GCM_SHA512_P521,
    lifecycle_0006 => MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448,
    lifecycle_0007 => MLS_256_DHKEMP384_AES256GCM_SHA384_P384,
    lifecycle_004d => MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519,
    lifecycle_004e => MLS_128_MLKEM768X25519_AES256GCM_SHA384_Ed25519,
    lifecycle_004f => MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519,
    lifecycle_0042 => MLS_192_MLKEM1024_AES256GCM_SHA384_P384,
    lifecycle_0050 => MLS_128_MLKEM768_AES256GCM_SHA384_P256,
    lifecycle_0051 => MLS_192_MLKEM768_AES256GCM_SHA384_MLDSA65,
    lifecycle_0052 => MLS_128_MLKEM768X25519_CHACHA20POLY1305_SHA384_MLDSA44,
    lifecycle_0906 => MLS_256_MLKEM1024_AES256GCM_SHA512_MLDSA87,
    lifecycle_0907 => MLS_256_MLKEM1024_AES256GCM_SHA384_MLDSA87,
    lifecycle_f042 => MLS_128_MLKEM768_AES256GCM_SHA384_Ed25519,
}
