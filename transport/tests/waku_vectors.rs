//! Known answers from the Waku specs, read out of byte-for-byte copies of the spec files in
//! `tests/data/waku/` (see `tests/data/README.md`).

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use pqmls_transport::waku::{ContentTopic, PubsubTopic, WakuMessage, message_hash};
use sha2::{Digest, Sha256};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn hex(s: &str) -> Vec<u8> {
    let s = s.trim().trim_start_matches("0x");
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn vector_files_match_their_checksums_and_all_are_listed() {
    let sums = std::fs::read_to_string(data().join("SHA256SUMS")).unwrap();
    let mut listed = Vec::new();
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(data().join(path)).unwrap();
        let got: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(got.to_vec(), hex(sum), "{path} changed");
        listed.push(path.to_owned());
    }
    for entry in std::fs::read_dir(data().join("waku")).unwrap() {
        let name = format!("waku/{}", entry.unwrap().file_name().to_string_lossy());
        assert!(listed.contains(&name), "{name} is not in SHA256SUMS");
    }
}

/// The value after `key =` in a vector block: a quoted string's bytes, a hex number's
/// bytes, or `None` for `<not-present>`.
fn field(block: &str, key: &str) -> Option<Vec<u8>> {
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("no {key} in {block}"));
    let value = line.split_once('=').unwrap().1.trim();
    if value.starts_with("<not-present>") {
        None
    } else if let Some(rest) = value.strip_prefix('"') {
        Some(rest.split_once('"').unwrap().0.as_bytes().to_vec())
    } else if value == "[]" {
        Some(Vec::new())
    } else {
        Some(hex(value.split_whitespace().next().unwrap()))
    }
}

#[test]
fn deterministic_message_hash_vectors_of_14_waku2_message() {
    let spec = std::fs::read_to_string(data().join("waku/message.md")).unwrap();
    let section = spec.split("### Test vectors").nth(1).unwrap();
    let section = section.split("## Security Considerations").next().unwrap();
    let blocks: Vec<&str> = section
        .split("```js")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 4, "the spec has four vectors");
    for block in blocks {
        let text = |k| String::from_utf8(field(block, k).unwrap()).unwrap();
        let timestamp = field(block, "message.timestamp").unwrap();
        let m = WakuMessage {
            payload: field(block, "message.payload").unwrap(),
            content_topic: text("message.content_topic"),
            meta: field(block, "message.meta"),
            timestamp: Some(i64::from_be_bytes(timestamp.try_into().unwrap())),
            ..WakuMessage::default()
        };
        let want = field(block, "message_hash").unwrap();
        assert_eq!(
            message_hash(&text("pubsub_topic"), &m).as_bytes().to_vec(),
            want,
            "{block}"
        );
    }
}

#[test]
fn autosharding_example_of_relay_sharding() {
    let spec = std::fs::read_to_string(data().join("waku/relay-sharding.md")).unwrap();
    let example = spec
        .split("## Automatic Sharding")
        .nth(1)
        .unwrap()
        .split("### Example")
        .nth(1)
        .unwrap()
        .split("### Content Topics Format")
        .next()
        .unwrap();
    // The table: application "myapp", version "1", 8 network shards.
    let cell = |row: &str| -> String {
        let line = example
            .lines()
            .find(|l| l.starts_with(&format!("| `{row}`")))
            .unwrap();
        line.split('|').nth(2).unwrap().trim().to_owned()
    };
    assert_eq!(cell("application"), "\"myapp\"");
    assert_eq!(cell("version"), "\"1\"");
    let shards: u16 = cell("network shards").parse().unwrap();
    // "SHA2-256 of `0x6d7961707031` is `0x8e54...`" and "The shard to use has index 0".
    let hash_line = example.lines().find(|l| l.contains("SHA2-256 of")).unwrap();
    let ticks: Vec<&str> = hash_line.split('`').collect();
    assert_eq!(hex(ticks[1]), b"myapp1");
    assert_eq!(Sha256::digest(b"myapp1").to_vec(), hex(ticks[3]));
    let index_line = example
        .lines()
        .find(|l| l.contains("The shard to use has index"))
        .unwrap();
    let want: u16 = index_line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for topic in ["/myapp/1/mytopic/cbor", "/0/myapp/1/mytopic/cbor"] {
        let t = ContentTopic::parse(topic).unwrap();
        assert_eq!(t.shard(shards), Some(want), "{topic}");
        assert_eq!(
            t.pubsub_topic(1, shards),
            PubsubTopic::parse(&format!("/waku/2/rs/1/{want}"))
        );
    }
}
