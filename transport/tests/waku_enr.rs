//! Node records (EIP-778, 31/WAKU2-ENR): known answers, round trips, and hostile records.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::Path;

use libp2p::identity::secp256k1;
use pqmls_transport::Multiaddr;
use pqmls_transport::waku::enr::{self, Builder, Enr, EnrError};

/// EIP-778, section "Test Vectors" (CC0): the example record and its private key.
const EIP778_RECORD: &str = "enr:-IS4QHCYrYZbAKWCBRlAy5zzaDZXJBGkcnh4MHcBFZntXNFrdvJjX04jRzjzCBOonrkTfj499SZuOh8R33Ls8RRcy5wBgmlkgnY0gmlwhH8AAAGJc2VjcDI1NmsxoQPKY0yuDUmstAHYpMa2_oxVtw0RW_QAdpzBQA8yWM0xOIN1ZHCCdl8";
const EIP778_KEY: &str = "b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key(seed: u8) -> secp256k1::SecretKey {
    secp256k1::SecretKey::try_from_bytes([seed; 32]).unwrap()
}

/// The Waku Network's bootstrap records, out of the copy of logos-delivery's
/// `networks_config.nim` (see tests/data/README.md).
fn twn_records() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/waku/networks_config.nim");
    let text = std::fs::read_to_string(path).unwrap();
    let records: Vec<String> = text
        .split('"')
        .filter(|s| s.starts_with("enr:"))
        .map(str::to_owned)
        .collect();
    assert_eq!(records.len(), 3, "three bootstrap records");
    records
}

#[test]
fn the_eip778_example_decodes_verifies_and_is_reproduced_by_signing() {
    let record = Enr::from_text(EIP778_RECORD).unwrap();
    assert_eq!(record.seq(), 1);
    assert_eq!(record.get("id"), Some(&b"v4"[..]));
    assert_eq!(record.ip4(), Some(Ipv4Addr::LOCALHOST));
    assert_eq!(record.udp(), Some(30303));
    assert_eq!(record.tcp(), None);
    assert_eq!(
        record.public_key().to_vec(),
        hex("03ca634cae0d49acb401d8a4c6b6fe8c55b70d115bf400769cc1400f3258cd3138")
    );
    assert_eq!(record.to_text(), EIP778_RECORD);
    // ECDSA with RFC 6979 nonces is deterministic: the same key and content give the same
    // bytes as the EIP's record.
    let secret = secp256k1::SecretKey::try_from_bytes(hex(EIP778_KEY)).unwrap();
    let built = Builder::new(1)
        .bytes("ip", &[127, 0, 0, 1])
        .uint("udp", 30303)
        .sign(&secret)
        .unwrap();
    assert_eq!(built.to_text(), EIP778_RECORD);
}

#[test]
fn the_waku_networks_bootstrap_records_decode_with_their_waku_fields() {
    for text in twn_records() {
        let record = Enr::from_text(&text).unwrap();
        assert_eq!(record.relay_shards(), Some((1, (0..8).collect())), "{text}");
        assert_eq!(
            record.waku2(),
            Some(0x0f),
            "relay, store, filter, lightpush"
        );
        assert!(record.peer_id().is_some());
        let addrs = record.multiaddrs().unwrap();
        assert_eq!(addrs.len(), 2);
        for a in &addrs {
            let s = a.to_string();
            assert!(
                s.starts_with("/dns4/node-01.") && s.contains(".waku.sandbox.status.im/tcp/"),
                "{s}"
            );
        }
        assert!(record.addresses().len() >= 3, "ip/tcp and both multiaddrs");
        assert_eq!(record.to_text(), text);
    }
}

#[test]
fn waku_fields_round_trip_through_a_signed_record() {
    let ws: Multiaddr = "/ip4/10.0.0.1/tcp/8000/ws".parse().unwrap();
    let record = Builder::new(7)
        .ip4_tcp(Ipv4Addr::new(127, 0, 0, 1), 60000)
        .multiaddrs(std::slice::from_ref(&ws))
        .waku2(enr::WAKU2_RELAY | enr::WAKU2_STORE)
        .relay_shards(3, &[0, 5, 7])
        .sign(&key(1))
        .unwrap();
    let again = Enr::decode(record.as_bytes()).unwrap();
    assert_eq!(again, record);
    assert_eq!(again.seq(), 7);
    assert_eq!(again.relay_shards(), Some((3, vec![0, 5, 7])));
    assert_eq!(again.waku2(), Some(3));
    assert_eq!(
        again.addresses(),
        vec!["/ip4/127.0.0.1/tcp/60000".parse::<Multiaddr>().unwrap(), ws]
    );
    let kp = secp256k1::Keypair::from(key(1));
    let peer = libp2p::identity::PublicKey::from(kp.public().clone()).to_peer_id();
    assert_eq!(
        again.peer_id(),
        Some(peer),
        "the peer id is the libp2p identity of the key"
    );
    assert!(record.as_bytes().len() <= enr::MAX_SIZE);
}

#[test]
fn tampered_records_fail_their_signature() {
    let record = Enr::from_text(EIP778_RECORD).unwrap();
    let bytes = record.as_bytes().to_vec();
    // The udp port is the last two bytes; the signature starts after the list and string
    // headers (f8 84 b8 40).
    for at in [bytes.len() - 1, 4, 40, 70] {
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        assert!(Enr::decode(&bad).is_err(), "flipped byte {at} accepted");
    }
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(Enr::decode(&bad), Err(EnrError::Signature));
}

#[test]
fn high_s_signatures_are_refused() {
    let record = Enr::from_text(EIP778_RECORD).unwrap();
    let mut bytes = record.as_bytes().to_vec();
    // s' = n - s is the other valid signature of the same content; libsecp256k1 refuses it.
    let n = hex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
    let s = &bytes[4 + 32..4 + 64];
    let mut high = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(n[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        high[i] = (d + 256 * borrow) as u8;
    }
    bytes[4 + 32..4 + 64].copy_from_slice(&high);
    assert_eq!(Enr::decode(&bytes), Err(EnrError::Signature));
}

#[test]
fn truncated_oversized_and_malformed_records_are_refused() {
    let record = Enr::from_text(EIP778_RECORD).unwrap();
    let bytes = record.as_bytes();
    for n in 0..bytes.len() {
        assert!(Enr::decode(&bytes[..n]).is_err(), "truncated to {n}");
    }
    let mut trailing = bytes.to_vec();
    trailing.push(0);
    assert!(matches!(
        Enr::decode(&trailing),
        Err(EnrError::Malformed(_))
    ));
    assert_eq!(Enr::decode(&[0u8; 301]), Err(EnrError::TooLarge));
    // A record that would be too large is not built.
    assert_eq!(
        Builder::new(1).bytes("big", &[1; 250]).sign(&key(2)),
        Err(EnrError::TooLarge)
    );
    // Hand-made records: a correct signature on content a strict decoder must refuse.
    assert!(Enr::from_text("enr:").is_err());
    assert!(Enr::from_text("enr:***").is_err());
    assert!(Enr::from_text(&format!("enr:{}", "A".repeat(2000))).is_err());
    assert!(Enr::from_text(&EIP778_RECORD.replace("enr:", "enode:")).is_err());
}

#[test]
fn records_without_v4_or_with_unsorted_keys_are_refused() {
    // Re-encode the EIP record's pairs with one change, signing again with its key, so
    // that only the property under test is wrong.
    let secret = secp256k1::SecretKey::try_from_bytes(hex(EIP778_KEY)).unwrap();
    let good = Builder::new(1)
        .bytes("ip", &[127, 0, 0, 1])
        .sign(&secret)
        .unwrap();
    assert!(Enr::decode(good.as_bytes()).is_ok());
    // The builder always writes id v4; an id "v5" record has to be made by hand: swap the
    // two bytes "v4" for "v5" and the signature no longer matters, the scheme is checked
    // first.
    let mut bytes = good.as_bytes().to_vec();
    let at = bytes.windows(2).position(|w| w == b"v4").unwrap();
    bytes[at + 1] = b'5';
    assert_eq!(Enr::decode(&bytes), Err(EnrError::Scheme));
    // Keys out of order: "ip" before "id" (swap the two 2-byte keys with their values of
    // equal shape is not possible, so swap the key names "id"/"ip" in place).
    let mut bytes = good.as_bytes().to_vec();
    let id = bytes.windows(3).position(|w| w == b"\x82id").unwrap();
    let ip = bytes.windows(3).position(|w| w == b"\x82ip").unwrap();
    bytes[id + 2] = b'p';
    bytes[ip + 2] = b'd';
    assert!(matches!(
        Enr::decode(&bytes),
        Err(EnrError::Keys | EnrError::Scheme)
    ));
    // Repeated keys.
    let mut bytes = good.as_bytes().to_vec();
    let ip = bytes.windows(3).position(|w| w == b"\x82ip").unwrap();
    bytes[ip + 2] = b'd';
    assert!(Enr::decode(&bytes).is_err());
}
