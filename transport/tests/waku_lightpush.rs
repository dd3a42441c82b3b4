//! Waku lightpush v3 between nodes on 127.0.0.1 over real libp2p sockets: a light client
//! (a Waku node relaying no shard) pushes through a service node and a relay node receives
//! the message; bad requests get the spec's status codes and leave the service serving;
//! concurrent reads are bounded and a stalled sender times out.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::waku_support;

use std::time::Duration;

use pqmls_transport::node::{Config, RelayInbound};
use pqmls_transport::waku::lightpush::{
    self, LightPushRequest, LightPushResponse, PROTOCOL, Refused, Status,
};
use pqmls_transport::waku::{WakuMessage, message_hash, relay};
use pqmls_transport::{Error, Node};
use support::{tcp_addr, wait_until};
use waku_support::{
    CLUSTER, RawOutcome, RawPeer, recv, shard, start, topic_on, wait_admitted, wait_mesh,
    waku_config,
};

/// The status of a refused push, or a panic naming what came instead.
fn refused(r: pqmls_transport::Result<u32>) -> Status {
    match r {
        Err(Error::LightPush(Refused { status, .. })) => status,
        other => panic!("expected a lightpush refusal, got {other:?}"),
    }
}

/// A service relaying shards 0 and 1, a relay node meshed with it, and a light client
/// connected to the service.
async fn network(service: Config) -> (Node, Node, Node, RelayInbound) {
    let (s, _s_in) = start(service.with_lightpush_service(lightpush::Config::default())).await;
    let s_addr = tcp_addr(&s).await;
    let (r, r_in) = start(waku_config(&[0, 1]).with_bootstrap(s_addr.clone())).await;
    let (light, _l_in) = start(waku_config(&[]).with_bootstrap(s_addr)).await;
    wait_mesh(&s, shard(0), 1).await;
    wait_mesh(&s, shard(1), 1).await;
    wait_admitted(&light, 1).await;
    (s, r, light, r_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_light_client_pushes_and_a_relay_node_receives() {
    let (s, r, light, mut r_in) = network(waku_config(&[0, 1])).await;

    // Autosharded by the service.
    let t0 = topic_on(0, 0);
    let m = WakuMessage::new(t0.to_string(), b"pushed".to_vec()).with_timestamp(42);
    let peers = light.lightpush(s.peer_id(), None, m.clone()).await.unwrap();
    assert_eq!(
        peers, 1,
        "the relay node is the service's one relay peer on shard 0"
    );
    let got = recv(&mut r_in).await;
    assert_eq!((got.shard, &got.message), (shard(0), &m));
    assert_eq!(got.hash, message_hash(&shard(0).to_string(), &m));

    // On the shard the client names (static sharding: any content topic).
    let m1 = WakuMessage::new("/static/1/any/proto", b"on shard 1".to_vec());
    assert_eq!(
        light
            .lightpush(s.peer_id(), Some(shard(1)), m1.clone())
            .await
            .unwrap(),
        1
    );
    let got = recv(&mut r_in).await;
    assert_eq!((got.shard, &got.message), (shard(1), &m1));
    assert!(r_in.try_recv().is_none());

    let c = s.counters();
    assert_eq!((c.lightpush_served, c.lightpush_refused), (2, 0));
    assert_eq!(c.relay_published, 2);
    assert_eq!(r.counters().relay_delivered, 2);
    // A node that is not a service does not offer the protocol.
    assert!(matches!(
        s.lightpush(light.peer_id(), None, m).await,
        Err(Error::Request(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_get_the_spec_codes_and_the_service_keeps_serving() {
    let (s, _r, light, mut r_in) = network(waku_config(&[0, 1])).await;
    let sp = s.peer_id();
    let t0 = topic_on(0, 0).to_string();

    // Over 150 KiB: within the request frame bound (decoded, then refused) and beyond it
    // (drained without being kept, then refused).
    let over = WakuMessage::new(t0.clone(), vec![1; relay::DEFAULT_MAX_MESSAGE_SIZE]);
    assert_eq!(
        refused(light.lightpush(sp, None, over).await),
        Status::PayloadTooLarge
    );
    let far_over = WakuMessage::new(t0.clone(), vec![2; 300 * 1024]);
    assert_eq!(
        refused(light.lightpush(sp, None, far_over).await),
        Status::PayloadTooLarge
    );
    // Another cluster's shard: not supported here.
    let foreign = pqmls_transport::waku::PubsubTopic::new(CLUSTER + 1, 0).unwrap();
    let m = WakuMessage::new(t0.clone(), b"x".to_vec());
    assert_eq!(
        refused(light.lightpush(sp, Some(foreign), m.clone()).await),
        Status::UnsupportedPubsubTopic
    );
    // No pubsub topic and a content topic that does not autoshard; an empty content topic.
    assert_eq!(
        refused(
            light
                .lightpush(sp, None, WakuMessage::new("chat", b"x".to_vec()))
                .await
        ),
        Status::BadRequest
    );
    assert_eq!(
        refused(
            light
                .lightpush(sp, Some(shard(0)), WakuMessage::new("", b"x".to_vec()))
                .await
        ),
        Status::BadRequest
    );
    // The same message again is a duplicate for gossipsub.
    assert_eq!(light.lightpush(sp, None, m.clone()).await.unwrap(), 1);
    assert_eq!(
        refused(light.lightpush(sp, None, m.clone()).await),
        Status::BadRequest
    );
    assert_eq!(recv(&mut r_in).await.message, m);

    // Raw bytes: garbage, an empty pubsub topic, a frame longer than anything read, and
    // then a valid request, all on one connection.
    let mut raw = RawPeer::spawn(PROTOCOL, Duration::from_secs(5), sp, tcp_addr(&s).await);
    let frame = |r: &LightPushRequest| prost::Message::encode_length_delimited_to_vec(r);
    let empty_topic = LightPushRequest {
        request_id: "empty".into(),
        pubsub_topic: Some(String::new()),
        message: Some(WakuMessage::new(t0.clone(), b"y".to_vec())),
    };
    let valid = LightPushRequest {
        request_id: "valid".into(),
        pubsub_topic: None,
        message: Some(WakuMessage::new(t0.clone(), b"raw valid".to_vec())),
    };
    let mut huge = Vec::new();
    prost::encoding::encode_varint(lightpush::MAX_DRAINED as u64 + 1, &mut huge);
    // One after another: a connection may have only a few requests read at once
    // (`Config::max_concurrent_requests_per_connection`).
    let mut answers = vec![None; 4];
    for bytes in [
        vec![4, 0xff, 0xff, 0xff, 0xff],
        frame(&empty_topic),
        huge,
        frame(&valid),
    ] {
        raw.send(bytes, false);
        let (n, outcome) = raw.next().await;
        answers[n] = Some(match outcome {
            RawOutcome::Answer(b) if b.is_empty() => None,
            RawOutcome::Answer(b) => Some(
                prost::Message::decode_length_delimited(b.as_slice())
                    .map(|r: LightPushResponse| (r.request_id, r.status_code))
                    .unwrap(),
            ),
            RawOutcome::Failed => None,
        });
    }
    let answers: Vec<_> = answers.into_iter().map(Option::unwrap).collect();
    assert_eq!(answers[0], Some(("N/A".to_owned(), 400)), "garbage");
    assert_eq!(answers[1], Some(("empty".to_owned(), 400)), "empty topic");
    assert_eq!(answers[2], None, "closed without an answer");
    assert_eq!(answers[3], Some(("valid".to_owned(), 200)));
    assert_eq!(recv(&mut r_in).await.message.payload, b"raw valid");

    // Still serving the light client.
    let last = WakuMessage::new(t0, b"still there".to_vec());
    assert_eq!(light.lightpush(sp, None, last.clone()).await.unwrap(), 1);
    assert_eq!(recv(&mut r_in).await.message, last);
    let c = s.counters();
    assert_eq!(c.lightpush_served, 3);
    wait_until("refusals counted", || async {
        s.counters().lightpush_refused == 9
    })
    .await;
    assert_eq!(c.connected_peers, 3, "nobody was disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_relay_peers_answers_503() {
    let (s, _s_in) =
        start(waku_config(&[0]).with_lightpush_service(lightpush::Config::default())).await;
    let (light, _l_in) = start(waku_config(&[]).with_bootstrap(tcp_addr(&s).await)).await;
    wait_admitted(&light, 1).await;
    let m = WakuMessage::new(topic_on(0, 0).to_string(), b"alone".to_vec());
    assert_eq!(
        refused(light.lightpush(s.peer_id(), None, m).await),
        Status::NoPeersToRelay
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_are_bounded_and_a_stalled_sender_times_out() {
    let mut service = waku_config(&[0]);
    service.limits.request_timeout = Duration::from_secs(1);
    let mut lp = lightpush::Config::default();
    lp.max_concurrent_requests = 1;
    let (s, _s_in) = start(service.with_lightpush_service(lp)).await;
    let s_addr = tcp_addr(&s).await;
    let (_r, mut r_in) = start(waku_config(&[0]).with_bootstrap(s_addr.clone())).await;
    let (light, _l_in) = start(waku_config(&[]).with_bootstrap(s_addr.clone())).await;
    wait_mesh(&s, shard(0), 1).await;
    wait_admitted(&light, 1).await;

    // A sender announces 100 bytes, sends 3 and stalls: it holds the one read slot.
    let mut raw = RawPeer::spawn(PROTOCOL, Duration::from_secs(30), s.peer_id(), s_addr);
    raw.send(vec![100, 1, 2, 3], true);
    wait_until("the stalled read holds the slot", || async {
        s.counters().lightpush_reading == 1
    })
    .await;
    let m = WakuMessage::new(topic_on(0, 0).to_string(), b"after the stall".to_vec());
    assert_eq!(
        refused(light.lightpush(s.peer_id(), None, m.clone()).await),
        Status::TooManyRequests
    );
    // The service's stream timeout ends the stalled read and frees the slot.
    wait_until("the stalled read timed out", || async {
        s.counters().lightpush_reading == 0
    })
    .await;
    assert_eq!(
        light.lightpush(s.peer_id(), None, m.clone()).await.unwrap(),
        1
    );
    assert_eq!(recv(&mut r_in).await.message, m);
}
