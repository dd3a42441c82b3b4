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

/// The fields of protobuf `message` in the spec's protobuf blocks, by name: (type, field
/// number); values of an enum declared inside it appear as (`"enum"`, value).
fn proto_fields(spec: &str, message: &str) -> std::collections::HashMap<String, (String, u64)> {
    let mut fields = std::collections::HashMap::new();
    let start = spec
        .find(&format!("message {message} {{"))
        .unwrap_or_else(|| panic!("no message {message}"));
    let mut depth = 0;
    for line in spec[start..].lines() {
        let line = line.split("//").next().unwrap().trim();
        depth += line.matches('{').count();
        depth -= line.matches('}').count();
        if depth == 0 {
            break;
        }
        let Some((decl, number)) = line.strip_suffix(';').and_then(|l| l.split_once('=')) else {
            continue;
        };
        let number: u64 = number.trim().parse().unwrap();
        let words: Vec<&str> = decl
            .split_whitespace()
            .filter(|w| *w != "optional" && *w != "repeated")
            .collect();
        match words.as_slice() {
            [ty, name] => fields.insert((*name).to_owned(), ((*ty).to_owned(), number)),
            [value] => fields.insert((*value).to_owned(), ("enum".to_owned(), number)),
            _ => panic!("unexpected declaration {line}"),
        };
    }
    fields
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A field of wire type 0 (varint) with `value`.
fn varint_field(number: u64, value: u64) -> Vec<u8> {
    [varint(number << 3), varint(value)].concat()
}

/// A field of wire type 2 (length-delimited) holding `bytes`.
fn bytes_field(number: u64, bytes: &[u8]) -> Vec<u8> {
    [
        varint((number << 3) | 2),
        varint(bytes.len() as u64),
        bytes.to_vec(),
    ]
    .concat()
}

/// Field `name` of `fields`, checked to have type `ty`: its number.
fn number(fields: &std::collections::HashMap<String, (String, u64)>, name: &str, ty: &str) -> u64 {
    let (t, n) = fields
        .get(name)
        .unwrap_or_else(|| panic!("no field {name}"));
    assert_eq!(t, ty, "type of {name}");
    *n
}

/// `WakuMessage { payload: [1, 2, 3], content_topic: "/a/1/b/c", timestamp: -1 }` encoded
/// from the field numbers of 14/WAKU2-MESSAGE (timestamp is sint64: zigzag, -1 is 1).
fn spec_waku_message() -> (WakuMessage, Vec<u8>) {
    let spec = std::fs::read_to_string(data().join("waku/message.md")).unwrap();
    let f = proto_fields(&spec, "WakuMessage");
    let bytes = [
        bytes_field(number(&f, "payload", "bytes"), &[1, 2, 3]),
        bytes_field(number(&f, "content_topic", "string"), b"/a/1/b/c"),
        varint_field(number(&f, "timestamp", "sint64"), 1),
    ]
    .concat();
    let m = WakuMessage::new("/a/1/b/c", vec![1, 2, 3]).with_timestamp(-1);
    (m, bytes)
}

#[test]
fn lightpush_payloads_use_the_field_numbers_of_the_spec() {
    use pqmls_transport::waku::lightpush::{LightPushRequest, LightPushResponse};
    use prost::Message as _;

    let spec = std::fs::read_to_string(data().join("waku/lightpush.md")).unwrap();
    assert!(spec.contains("**Protocol identifier**: `/vac/waku/lightpush/3.0.0`"));
    assert_eq!(
        pqmls_transport::waku::lightpush::PROTOCOL,
        "/vac/waku/lightpush/3.0.0"
    );
    let (message, message_bytes) = spec_waku_message();

    let f = proto_fields(&spec, "LightPushRequest");
    assert_eq!(f.len(), 3, "{f:?}");
    let want = [
        bytes_field(number(&f, "request_id", "string"), b"r1"),
        bytes_field(number(&f, "pubsub_topic", "string"), b"/waku/2/rs/3/0"),
        bytes_field(number(&f, "message", "WakuMessage"), &message_bytes),
    ]
    .concat();
    let request = LightPushRequest {
        request_id: "r1".into(),
        pubsub_topic: Some("/waku/2/rs/3/0".into()),
        message: Some(message),
    };
    assert_eq!(request.encode_to_vec(), want);
    assert_eq!(LightPushRequest::decode(want.as_slice()).unwrap(), request);

    let f = proto_fields(&spec, "LightPushResponse");
    assert_eq!(f.len(), 4, "{f:?}");
    let success = [
        bytes_field(number(&f, "request_id", "string"), b"r1"),
        varint_field(number(&f, "status_code", "uint32"), 200),
        varint_field(number(&f, "relay_peer_count", "uint32"), 5),
    ]
    .concat();
    let response = LightPushResponse::decode(success.as_slice()).unwrap();
    assert_eq!(response, LightPushResponse::success("r1", 5));
    assert_eq!(response.encode_to_vec(), success);
    let refusal = [
        bytes_field(number(&f, "request_id", "string"), b"r2"),
        varint_field(number(&f, "status_code", "uint32"), 413),
        bytes_field(number(&f, "status_desc", "string"), b"too big"),
    ]
    .concat();
    let response = LightPushResponse::decode(refusal.as_slice()).unwrap();
    assert_eq!(
        (response.status_code, response.status_desc.as_deref()),
        (413, Some("too big"))
    );
    assert_eq!(response.relay_peer_count, None);
}

#[test]
fn filter_payloads_use_the_field_numbers_of_the_spec() {
    use pqmls_transport::waku::filter::{
        self, MessagePush, SubscribeRequest, SubscribeResponse, SubscribeType,
    };
    use prost::Message as _;

    let spec = std::fs::read_to_string(data().join("waku/filter.md")).unwrap();
    for id in [filter::SUBSCRIBE_PROTOCOL, filter::PUSH_PROTOCOL] {
        assert!(spec.contains(&format!("`{id}`")), "{id}");
    }
    assert_eq!(
        filter::SUBSCRIBE_PROTOCOL,
        "/vac/waku/filter-subscribe/2.0.0-beta1"
    );
    assert_eq!(filter::PUSH_PROTOCOL, "/vac/waku/filter-push/2.0.0-beta1");

    let f = proto_fields(&spec, "FilterSubscribeRequest");
    // The enum's values, as the spec numbers them.
    for (name, ours) in [
        ("SUBSCRIBER_PING", SubscribeType::SubscriberPing),
        ("SUBSCRIBE", SubscribeType::Subscribe),
        ("UNSUBSCRIBE", SubscribeType::Unsubscribe),
        ("UNSUBSCRIBE_ALL", SubscribeType::UnsubscribeAll),
    ] {
        assert_eq!(number(&f, name, "enum"), ours as u64, "{name}");
    }
    let want = [
        bytes_field(number(&f, "request_id", "string"), b"s1"),
        varint_field(
            number(&f, "filter_subscribe_type", "FilterSubscribeType"),
            number(&f, "SUBSCRIBE", "enum"),
        ),
        bytes_field(number(&f, "pubsub_topic", "string"), b"/waku/2/rs/3/0"),
        bytes_field(number(&f, "content_topics", "string"), b"/a/1/b/c"),
        bytes_field(number(&f, "content_topics", "string"), b"/a/1/d/c"),
    ]
    .concat();
    let request = SubscribeRequest {
        request_id: "s1".into(),
        filter_subscribe_type: SubscribeType::Subscribe as i32,
        pubsub_topic: Some("/waku/2/rs/3/0".into()),
        content_topics: vec!["/a/1/b/c".into(), "/a/1/d/c".into()],
    };
    assert_eq!(request.encode_to_vec(), want);
    assert_eq!(SubscribeRequest::decode(want.as_slice()).unwrap(), request);

    let f = proto_fields(&spec, "FilterSubscribeResponse");
    assert_eq!(f.len(), 3, "{f:?}");
    let bytes = [
        bytes_field(number(&f, "request_id", "string"), b"s1"),
        varint_field(number(&f, "status_code", "uint32"), 503),
        bytes_field(number(&f, "status_desc", "string"), b"full"),
    ]
    .concat();
    let response = SubscribeResponse::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        response,
        SubscribeResponse::new("s1", filter::Status::ServiceUnavailable, "full")
    );
    assert_eq!(response.encode_to_vec(), bytes);

    let f = proto_fields(&spec, "MessagePush");
    assert_eq!(f.len(), 2, "{f:?}");
    let (message, message_bytes) = spec_waku_message();
    let want = [
        bytes_field(number(&f, "waku_message", "WakuMessage"), &message_bytes),
        bytes_field(number(&f, "pubsub_topic", "string"), b"/waku/2/rs/3/0"),
    ]
    .concat();
    let push = MessagePush {
        waku_message: Some(message),
        pubsub_topic: Some("/waku/2/rs/3/0".into()),
    };
    assert_eq!(push.encode_to_vec(), want);
    assert_eq!(MessagePush::decode(want.as_slice()).unwrap(), push);
}
