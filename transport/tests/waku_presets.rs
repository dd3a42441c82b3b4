//! Network presets (issue 13 item 1): the settings each gives, logos.dev's checked against
//! the Nim node's preset (a copy of logos-delivery's `networks_config.nim`, see
//! tests/data/README.md), and two `local` nodes that relay to each other. No test needs a
//! node of a public network.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;

use pqmls_transport::Node;
use pqmls_transport::waku::ContentTopic;
use pqmls_transport::waku::preset::Preset;
use support::{tcp_addr, wait_until};

/// The body of the Nim node's `proc <name>` in the copied preset file.
fn nim_preset(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/waku/networks_config.nim");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find(&format!("proc {name}")).unwrap();
    let end = text[start + 5..]
        .find("\nproc ")
        .map_or(text.len(), |e| start + 5 + e);
    text[start..end].to_owned()
}

fn nim_number(body: &str, field: &str) -> u64 {
    let at = body.find(&format!("{field}: ")).unwrap() + field.len() + 2;
    body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn logos_dev_has_the_nim_nodes_cluster_and_shards() {
    let nim = nim_preset("LogosDevConf");
    let p = Preset::LogosDev;
    assert_eq!(u64::from(p.cluster()), nim_number(&nim, "clusterId"));
    assert!(nim.contains("ShardingConf(kind: AutoSharding"));
    let relay = p.relay();
    assert_eq!(
        u64::from(relay.shard_count),
        nim_number(&nim, "numShardsInCluster")
    );
    assert_eq!(relay.cluster, 3);
    assert_eq!(relay.shard_count, 8);
    assert_eq!(
        relay.shards,
        (0..8).collect::<Vec<u16>>(),
        "relays every shard"
    );
    // DefaultMaxWakuMessageSizeStr: 150 KiB (64/WAKU2-NETWORK, "Message size").
    assert!(nim.contains("maxMessageSize: DefaultMaxWakuMessageSizeStr"));
    assert_eq!(relay.max_message_size, 150 * 1024);
    let c = p.node_config();
    assert!(
        c.bootstrap.is_empty(),
        "entry nodes come from the user, never built in"
    );
    assert!(!c.mdns && !c.kademlia);
    assert_eq!(c.listen, vec!["/ip4/0.0.0.0/tcp/60000".parse().unwrap()]);
    assert!(c.lightpush.is_some() && c.filter.is_some() && c.peer_exchange.is_some());
    assert_eq!(c.waku.unwrap().cluster, 3);
}

#[test]
fn local_is_a_loopback_network_of_cluster_zero() {
    let p = Preset::Local;
    let relay = p.relay();
    assert_eq!((relay.cluster, relay.shard_count), (0, 8));
    assert_eq!(relay.max_message_size, 150 * 1024);
    let c = p.node_config();
    assert!(c.bootstrap.is_empty() && !c.mdns && !c.kademlia);
    assert!(
        c.listen
            .iter()
            .all(|a| a.to_string().starts_with("/ip4/127.0.0.1/"))
    );
    assert!(c.lightpush.is_some() && c.filter.is_some() && c.peer_exchange.is_some());
    // No public network uses cluster 0.
    for nim in [
        "TheWakuNetworkConf",
        "LogosDevConf",
        "LogosTestConf",
        "StatusProdConf",
    ] {
        assert_ne!(nim_number(&nim_preset(nim), "clusterId"), 0, "{nim}");
    }
}

#[test]
fn presets_are_named_as_on_the_nim_command_line() {
    assert_eq!("local".parse::<Preset>().unwrap(), Preset::Local);
    assert_eq!("logos.dev".parse::<Preset>().unwrap(), Preset::LogosDev);
    assert!("twn".parse::<Preset>().unwrap_err().contains("logos.dev"));
    for p in Preset::ALL {
        assert_eq!(Preset::parse(&p.to_string()), Some(p));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_local_nodes_relay_to_each_other() {
    let (a, _) = Node::start(Preset::Local.node_config()).await.unwrap();
    let mut a_in = a.relay_inbound().unwrap();
    let addr = tcp_addr(&a).await;
    let (b, _) = Node::start(Preset::Local.node_config().with_bootstrap(addr))
        .await
        .unwrap();
    wait_until("metadata gate passed", || async {
        a.counters().metadata_admitted >= 1 && b.counters().metadata_admitted >= 1
    })
    .await;
    let topic = ContentTopic::parse("/pqmls/1/preset-test/proto").unwrap();
    let shard = topic.pubsub_topic(0, 8).unwrap();
    wait_until("relay mesh", || async {
        b.relay_mesh_peers(shard).await.unwrap() >= 1
    })
    .await;
    b.relay_publish(&topic, b"hello".to_vec()).await.unwrap();
    let got = tokio::time::timeout(support::TIMEOUT, a_in.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message.payload, b"hello");
    assert_eq!(got.shard.cluster, 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
