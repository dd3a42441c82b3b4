//! Waku relay between rust-libp2p swarms on loopback: a message on a shard arrives checked,
//! with the relay's message id, and only peers speaking `/vac/waku/relay/2.0.0` get it.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::waku_support::listen;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Swarm, gossipsub, noise, tcp, yamux};
use pqmls_transport::waku::relay::{self, Config};
use pqmls_transport::waku::{ContentTopic, WakuMessage};
use sha2::{Digest, Sha256};

fn swarm(behaviour: gossipsub::Behaviour) -> Swarm<gossipsub::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

fn relay_swarm() -> Swarm<gossipsub::Behaviour> {
    let mut c = Config::new(3);
    c.heartbeat = Duration::from_millis(100);
    swarm(relay::behaviour(&c).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waku_message_crosses_the_relay_on_its_autoshard() {
    let content = ContentTopic::parse("/pqmls/1/group/proto").unwrap();
    let shard = content.pubsub_topic(3, 8).unwrap();
    let topic = gossipsub::IdentTopic::new(shard.to_string());

    let mut a = relay_swarm();
    let mut b = relay_swarm();
    // A stock gossipsub peer (meshsub ids): it shares no protocol with the relay peers.
    let mut stock = swarm(
        gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Anonymous,
            gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .build()
                .unwrap(),
        )
        .unwrap(),
    );
    let addr = listen(&mut a).await;
    for s in [&mut b, &mut stock] {
        s.behaviour_mut().subscribe(&topic).unwrap();
        s.dial(addr.clone()).unwrap();
    }
    a.behaviour_mut().subscribe(&topic).unwrap();

    let message = WakuMessage::new(content.to_string(), b"hello waku".to_vec())
        .with_timestamp(1_700_000_000_000_000_000);
    let data = message.to_bytes();
    let relay_config = Config::new(3);
    let run = async {
        let mut published = false;
        loop {
            tokio::select! {
                _ = a.select_next_some() => {
                    // Flood publishing reaches every subscribed peer once one is known.
                    if !published && a.behaviour().all_peers().any(|(_, t)| t.contains(&&topic.hash())) {
                        a.behaviour_mut().publish(topic.clone(), data.clone()).unwrap();
                        published = true;
                    }
                }
                ev = b.select_next_some() => {
                    if let SwarmEvent::Behaviour(gossipsub::Event::Message {
                        propagation_source, message_id, message,
                    }) = ev {
                        let (got_shard, got) =
                            relay::check(&relay_config, message.topic.as_str(), &message.data).unwrap();
                        b.behaviour_mut().report_message_validation_result(
                            &message_id, &propagation_source, gossipsub::MessageAcceptance::Accept,
                        );
                        assert!(message.source.is_none() && message.sequence_number.is_none());
                        return (message_id, got_shard, got);
                    }
                }
                ev = stock.select_next_some() => {
                    assert!(
                        !matches!(ev, SwarmEvent::Behaviour(gossipsub::Event::Message { .. })),
                        "a meshsub peer must not receive relay traffic"
                    );
                }
            }
        }
    };
    let (id, got_shard, got) = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("message relayed in time");
    assert_eq!(got, message);
    assert_eq!(got_shard, shard);
    assert_eq!(id.0, Sha256::digest(&data).to_vec());
}
