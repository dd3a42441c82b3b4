//! Interop with js-waku, an implementation no one here wrote: our node on 127.0.0.1 over
//! real sockets, a js-waku node in a `node` process (`tests/js/`), each scenario a script
//! printing JSON lines. The versions are pinned in `tests/js/*/package-lock.json`; the
//! interop matrix is in `tests/js/README.md`.
//!
//! `#[ignore]`d: they need `npm ci` in `tests/js/light` and `tests/js/relay` and Node.js.
//! `.ci/run` installs them and runs `cargo test -p pqmls-transport --test js_waku --
//! --ignored`; without `node_modules` a test fails saying so.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/js.rs"]
mod js;
mod support;
#[path = "support/waku.rs"]
mod waku_support;

use pqmls_transport::waku::{WakuMessage, lightpush, message_hash};
use serde_json::json;
use support::tcp_addr;
use waku_support::{CLUSTER, recv, shard, start, topic_on, wait_mesh, waku_config};

use js::Js;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js and `npm ci` in tests/js (run by .ci/run)"]
async fn js_light_node_lightpushes_through_our_node() {
    // s: our lightpush service relaying shard 0; r: our relay node meshed with it.
    let (s, _s_in) =
        start(waku_config(&[0]).with_lightpush_service(lightpush::Config::default())).await;
    let s_addr = tcp_addr(&s).await;
    let (_r, mut r_in) = start(waku_config(&[0]).with_bootstrap(s_addr.clone())).await;
    wait_mesh(&s, shard(0), 1).await;

    let topic = topic_on(0, 0);
    let payload = b"pushed by js-waku".to_vec();
    let timestamp_ms: i64 = 1_700_000_000_123;
    let mut js = Js::spawn(
        "light",
        "lightpush",
        json!({
            "addr": s_addr.to_string(),
            "cluster": CLUSTER,
            "contentTopic": topic.to_string(),
            "payloadHex": hex(&payload),
            "timestampMs": timestamp_ms,
        }),
    );
    let pushed = js.expect("pushed").await;
    assert_eq!(pushed["successes"], json!([s.peer_id().to_string()]));
    let got = recv(&mut r_in).await;
    assert_eq!(got.shard, shard(0));
    assert_eq!(got.message.payload, payload);
    assert_eq!(got.message.content_topic, topic.to_string());
    assert_eq!(got.message.timestamp, Some(timestamp_ms * 1_000_000));
    assert_eq!(got.hash, message_hash(&shard(0).to_string(), &got.message));
    js.finish().await;
    assert_eq!(s.counters().lightpush_served, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js and `npm ci` in tests/js (run by .ci/run)"]
async fn js_relay_node_publishes_to_our_node() {
    let (s, mut s_in) = start(waku_config(&[2])).await;
    let topic = topic_on(2, 0);
    let messages: Vec<(Vec<u8>, i64)> = (0..3u8)
        .map(|i| {
            (
                vec![i; 100 + usize::from(i)],
                1_700_000_000_000 + i64::from(i),
            )
        })
        .collect();
    let mut js = Js::spawn(
        "relay",
        "relay",
        json!({
            "addr": tcp_addr(&s).await.to_string(),
            "cluster": CLUSTER,
            "shard": 2,
            "contentTopic": topic.to_string(),
            "mode": "publish",
            "messages": messages.iter().map(|(p, t)| json!({"payloadHex": hex(p), "timestampMs": t})).collect::<Vec<_>>(),
        }),
    );
    let ready = js.expect("ready").await;
    for (payload, ms) in &messages {
        let sent = js.expect("sent").await;
        assert_eq!(sent["recipients"], json!([s.peer_id().to_string()]));
        let got = recv(&mut s_in).await;
        assert_eq!(got.shard, shard(2));
        assert_eq!(&got.message.payload, payload);
        assert_eq!(got.message.content_topic, topic.to_string());
        assert_eq!(got.message.timestamp, Some(ms * 1_000_000));
        assert_eq!(got.hash, message_hash(&shard(2).to_string(), &got.message));
        assert_eq!(sent["hash"], hex(&got.hash.0), "js-waku and we hash alike");
    }
    js.finish().await;
    assert!(s_in.try_recv().is_none());
    let c = s.counters();
    assert_eq!((c.relay_delivered, c.relay_rejected), (3, 0));
    assert_eq!(
        c.metadata_admitted, 1,
        "js-waku answered metadata with our cluster"
    );
    assert!(ready["peerId"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js and `npm ci` in tests/js (run by .ci/run)"]
async fn our_node_publishes_to_a_js_relay_node() {
    let (s, _s_in) = start(waku_config(&[2])).await;
    let topic = topic_on(2, 0);
    let mut js = Js::spawn(
        "relay",
        "relay",
        json!({
            "addr": tcp_addr(&s).await.to_string(),
            "cluster": CLUSTER,
            "shard": 2,
            "contentTopic": topic.to_string(),
            "mode": "receive",
            "expect": 2,
        }),
    );
    js.expect("ready").await;
    wait_mesh(&s, shard(2), 1).await;
    let mut sent = Vec::new();
    for i in 0..2u8 {
        let m = WakuMessage::new(topic.to_string(), vec![0xA0 + i; 1000])
            .with_timestamp(1_700_000_000_000_000_000 + i64::from(i) * 1_000_000);
        let (on, hash) = s.relay_publish_message(m.clone()).await.unwrap();
        assert_eq!(on, shard(2));
        sent.push((m, hash));
    }
    for (m, hash) in &sent {
        let got = js.expect("received").await;
        assert_eq!(got["payloadHex"], hex(&m.payload));
        assert_eq!(got["contentTopic"], m.content_topic.as_str());
        assert_eq!(got["pubsubTopic"], shard(2).to_string());
        assert_eq!(got["timestampMs"], json!(m.timestamp.unwrap() / 1_000_000));
        assert_eq!(got["hash"], hex(&hash.0));
    }
    js.finish().await;
}

/// One message as a js script prints it.
fn js_message(v: &serde_json::Value) -> (String, String, i64, String) {
    (
        v["payloadHex"].as_str().unwrap().to_string(),
        v["contentTopic"].as_str().unwrap().to_string(),
        v["timestampMs"].as_i64().unwrap(),
        v["hash"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js and `npm ci` in tests/js (run by .ci/run)"]
async fn js_light_node_queries_our_store_by_topic_time_and_hash_with_pages() {
    use pqmls_transport::store;

    let dir = support::temp_dir("js-store");
    let (s, _s_in) = start(waku_config(&[0]).with_store(&dir, store::Config::default())).await;
    let s_addr = tcp_addr(&s).await;
    let (r, _r_in) = start(waku_config(&[0]).with_bootstrap(s_addr.clone())).await;
    wait_mesh(&r, shard(0), 1).await;

    // Five messages on `chat`, one second apart, and one on `other` (same shard) between.
    let chat = topic_on(0, 0);
    let other = topic_on(0, 1);
    let t0_ms: i64 = 1_700_000_000_000;
    let mut chat_messages = Vec::new();
    for i in 0..5i64 {
        let m = WakuMessage::new(chat.to_string(), format!("chat {i}").into_bytes())
            .with_timestamp((t0_ms + i * 1000) * 1_000_000);
        let (_, hash) = r.relay_publish_message(m.clone()).await.unwrap();
        chat_messages.push((m, hash));
        if i == 2 {
            let o = WakuMessage::new(other.to_string(), b"other".to_vec())
                .with_timestamp((t0_ms + 2500) * 1_000_000);
            r.relay_publish_message(o).await.unwrap();
        }
    }
    support::wait_until("archived", || async { s.counters().stored == 6 }).await;

    let expected = |i: usize| {
        let (m, h) = &chat_messages[i];
        (
            hex(&m.payload),
            m.content_topic.clone(),
            m.timestamp.unwrap() / 1_000_000,
            hex(&h.0),
        )
    };
    let mut js = Js::spawn(
        "light",
        "store",
        json!({
            "addr": s_addr.to_string(),
            "cluster": CLUSTER,
            "contentTopic": chat.to_string(),
            "queries": [
                {"name": "topic"},
                {"name": "time", "timeStartMs": t0_ms + 1000, "timeEndMs": t0_ms + 2500},
                {"name": "hash", "hashes": [hex(&chat_messages[3].1.0)]},
                {"name": "pages", "limit": 2},
                {"name": "backward", "limit": 2, "forward": false},
            ],
        }),
    );
    // Each query's pages, as lists of message indices into `chat_messages`.
    let want: [(&str, Vec<Vec<usize>>); 5] = [
        ("topic", vec![vec![0, 1, 2, 3, 4]]),
        ("time", vec![vec![1, 2]]),
        ("hash", vec![vec![3]]),
        ("pages", vec![vec![0, 1], vec![2, 3], vec![4]]),
        ("backward", vec![vec![3, 4], vec![1, 2], vec![0]]),
    ];
    for (name, pages) in want {
        let result = js.expect("result").await;
        assert_eq!(result["name"], name);
        let got: Vec<Vec<_>> = result["pages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_array().unwrap().iter().map(js_message).collect())
            .collect();
        let want: Vec<Vec<_>> = pages
            .iter()
            .map(|p| p.iter().map(|i| expected(*i)).collect())
            .collect();
        assert_eq!(got, want, "query {name}");
    }
    js.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Node.js and `npm ci` in tests/js (run by .ci/run)"]
async fn js_light_node_receives_filter_pushes_from_our_node() {
    use pqmls_transport::waku::filter;

    let (s, _s_in) = start(waku_config(&[0]).with_filter_service(filter::Config::default())).await;
    let s_addr = tcp_addr(&s).await;
    let (r, _r_in) = start(waku_config(&[0]).with_bootstrap(s_addr.clone())).await;
    wait_mesh(&r, shard(0), 1).await;

    let topic = topic_on(0, 0);
    let mut js = Js::spawn(
        "light",
        "filter",
        json!({
            "addr": s_addr.to_string(),
            "cluster": CLUSTER,
            "contentTopic": topic.to_string(),
            "expect": 2,
        }),
    );
    js.expect("subscribed").await;
    assert_eq!(s.counters().filter_subscribers, 1);
    let mut sent = Vec::new();
    for i in 0..2i64 {
        let m = WakuMessage::new(topic.to_string(), format!("filtered {i}").into_bytes())
            .with_timestamp((1_700_000_000_000 + i) * 1_000_000);
        let (_, hash) = r.relay_publish_message(m.clone()).await.unwrap();
        sent.push((m, hash));
        // Not subscribed: never pushed.
        r.relay_publish_message(WakuMessage::new(
            topic_on(0, 1).to_string(),
            vec![7, i as u8],
        ))
        .await
        .unwrap();
    }
    for (m, hash) in &sent {
        let got = js.expect("received").await;
        assert_eq!(
            js_message(&got),
            (
                hex(&m.payload),
                m.content_topic.clone(),
                m.timestamp.unwrap() / 1_000_000,
                hex(&hash.0)
            )
        );
        assert_eq!(got["pubsubTopic"], shard(0).to_string());
    }
    js.finish().await;
    assert_eq!(s.counters().filter_pushed, 2, "only the subscribed topic");
}
