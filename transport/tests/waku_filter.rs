//! Waku filter v2 between nodes on 127.0.0.1 over real libp2p sockets: a light client
//! subscribes with a service and gets the messages a third node relays, once each, until it
//! unsubscribes; pushes from peers it did not subscribe with, or for criteria it did not
//! subscribe to, are dropped; the service's subscriber and criteria limits hold; garbage
//! requests are answered and leave the service serving.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::waku_support;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, request_response};
use pqmls_transport::node::FilterInbound;
use pqmls_transport::waku::filter::{
    self, MessagePush, PushCodec, Received, Refused, Status, SubscribeCodec, SubscribeResponse,
};
use pqmls_transport::waku::framing::{self, Framed, ReadSlots};
use pqmls_transport::waku::{ContentTopic, WakuMessage, lightpush, message_hash, metadata};
use pqmls_transport::{Error, Node};
use support::{TIMEOUT, tcp_addr, wait_until};
use tokio::sync::mpsc;
use waku_support::{
    RawOutcome, RawPeer, listen, metadata_behaviour, our_metadata, shard, start, swarm, topic_on,
    wait_admitted, wait_mesh, waku_config,
};

fn refused(r: pqmls_transport::Result<()>) -> Status {
    match r {
        Err(Error::Filter(Refused { status, .. })) => status,
        other => panic!("expected a filter refusal, got {other:?}"),
    }
}

async fn next(inbound: &mut FilterInbound) -> Received {
    tokio::time::timeout(TIMEOUT, inbound.recv())
        .await
        .expect("push within timeout")
        .expect("node running")
}

/// A light client (relaying nothing) connected to `service`, with its push stream.
async fn light_client(service: &Node) -> (Node, FilterInbound) {
    let (c, _c_in) = start(waku_config(&[]).with_bootstrap(tcp_addr(service).await)).await;
    wait_admitted(&c, 1).await;
    let inbound = c.filter_inbound().expect("filter inbound, first take");
    assert!(c.filter_inbound().is_none(), "the stream is taken once");
    (c, inbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_messages_reach_a_filter_client_once_each_until_it_unsubscribes() {
    let (s, _s_in) = start(waku_config(&[0]).with_filter_service(filter::Config::default())).await;
    let (r, _r_in) = start(waku_config(&[0]).with_bootstrap(tcp_addr(&s).await)).await;
    wait_mesh(&s, shard(0), 1).await;
    wait_mesh(&r, shard(0), 1).await;
    let (c, mut c_in) = light_client(&s).await;
    let sp = s.peer_id();
    let (t_a, t_b, t_other) = (topic_on(0, 0), topic_on(0, 1), topic_on(0, 2));

    c.filter_subscribe(sp, shard(0), &[t_a.clone(), t_b.clone()])
        .await
        .unwrap();
    assert_eq!(s.counters().filter_subscribers, 1);
    c.filter_ping(sp).await.unwrap();

    // The third node relays three messages; two match.
    let a1 = r.relay_publish(&t_a, b"a1".to_vec()).await.unwrap();
    r.relay_publish(&t_other, b"o1".to_vec()).await.unwrap();
    let b1 = r.relay_publish(&t_b, b"b1".to_vec()).await.unwrap();
    let mut got = HashSet::new();
    for _ in 0..2 {
        let m = next(&mut c_in).await;
        assert_eq!((m.peer, m.shard), (sp, shard(0)));
        assert_eq!(m.hash, message_hash(&shard(0).to_string(), &m.message));
        got.insert((m.hash, m.message.payload));
    }
    assert_eq!(
        got,
        HashSet::from([(a1, b"a1".to_vec()), (b1, b"b1".to_vec())])
    );
    // Pushes are sent when the service accepts a relay message: with all three accepted,
    // exactly the two matching ones were pushed, and nothing else arrived.
    wait_until("service got all three", || async {
        s.counters().relay_delivered == 3
    })
    .await;
    assert_eq!(s.counters().filter_pushed, 2);
    assert!(c_in.try_recv().is_none());
    assert_eq!(
        (c.counters().filter_delivered, c.counters().filter_rejected),
        (2, 0)
    );

    // Unsubscribing from a stops its pushes; b still comes.
    c.filter_unsubscribe(sp, shard(0), std::slice::from_ref(&t_a))
        .await
        .unwrap();
    r.relay_publish(&t_a, b"a2".to_vec()).await.unwrap();
    r.relay_publish(&t_b, b"b2".to_vec()).await.unwrap();
    assert_eq!(next(&mut c_in).await.message.payload, b"b2");
    wait_until("service got a2 and b2", || async {
        s.counters().relay_delivered == 5
    })
    .await;
    assert_eq!(s.counters().filter_pushed, 3, "a2 was not pushed");
    assert!(c_in.try_recv().is_none());
    assert_eq!(
        refused(c.filter_unsubscribe(sp, shard(0), &[t_a]).await),
        Status::NotFound
    );

    // Unsubscribing from everything ends the subscription.
    c.filter_unsubscribe_all(sp).await.unwrap();
    assert_eq!(refused(c.filter_ping(sp).await), Status::NotFound);
    assert_eq!(s.counters().filter_subscribers, 0);
    r.relay_publish(&t_b, b"b3".to_vec()).await.unwrap();
    wait_until("service got b3", || async {
        s.counters().relay_delivered == 6
    })
    .await;
    assert_eq!(s.counters().filter_pushed, 3);
    assert_eq!(s.counters().filter_pushes_failed, 0);
    assert!(c_in.try_recv().is_none());
}

/// A service relaying shard 0 with filter and lightpush on.
fn filter_and_lightpush_service() -> pqmls_transport::node::Config {
    waku_config(&[0])
        .with_filter_service(filter::Config::default())
        .with_lightpush_service(lightpush::Config::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lightpushed_message_reaches_a_filter_client_of_the_same_service() {
    let (s, _s_in) = start(filter_and_lightpush_service()).await;
    let (r, _r_in) = start(waku_config(&[0]).with_bootstrap(tcp_addr(&s).await)).await;
    wait_mesh(&s, shard(0), 1).await;
    let (c, mut c_in) = light_client(&s).await;
    let (pusher, _p_in) = light_client(&s).await;
    let t = topic_on(0, 0);
    c.filter_subscribe(s.peer_id(), shard(0), std::slice::from_ref(&t))
        .await
        .unwrap();
    let m = WakuMessage::new(t.to_string(), b"light to light".to_vec());
    assert_eq!(
        pusher
            .lightpush(s.peer_id(), None, m.clone())
            .await
            .unwrap(),
        1
    );
    assert_eq!(next(&mut c_in).await.message, m);
    drop(r);
}

/// A service with no relay peer on the shard still hands a lightpushed message to its
/// local handlers, as the Nim node does (its relay runs with `triggerSelf`, and the
/// filter handler is one of them, before the archive: logos-delivery
/// `waku/node/subscription_manager.nim`): the pusher gets 503 (no peers to relay), and
/// the service's filter subscriber gets the message. Before, only the archive took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lightpushed_message_without_relay_peers_still_reaches_a_filter_client() {
    let (s, _s_in) = start(filter_and_lightpush_service()).await;
    let (c, mut c_in) = light_client(&s).await;
    let (pusher, _p_in) = light_client(&s).await;
    let t = topic_on(0, 0);
    c.filter_subscribe(s.peer_id(), shard(0), std::slice::from_ref(&t))
        .await
        .unwrap();
    let m = WakuMessage::new(t.to_string(), b"no relay peers".to_vec()).with_timestamp(7);
    match pusher.lightpush(s.peer_id(), None, m.clone()).await {
        Err(Error::LightPush(lightpush::Refused { status, .. })) => {
            assert_eq!(status, lightpush::Status::NoPeersToRelay);
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(next(&mut c_in).await.message, m);
}

/// A raw filter peer: answers metadata, answers every subscription request 200, and pushes
/// what it is told to, one push per stream or scripted streams of several.
#[derive(NetworkBehaviour)]
struct RawFilter {
    metadata: request_response::Behaviour<metadata::Codec>,
    subscribe: request_response::Behaviour<SubscribeCodec>,
    push: request_response::Behaviour<PushCodec>,
    script: request_response::Behaviour<Scripted>,
}

/// What a scripted push stream does, in order.
#[derive(Debug, Clone)]
enum Step {
    /// Writes a length-prefixed frame.
    Frame(Vec<u8>),
    /// Writes bytes as they are.
    Raw(Vec<u8>),
    /// Waits, with the stream open.
    Wait(Duration),
}

fn frame(push: &MessagePush) -> Step {
    Step::Frame(prost::Message::encode_to_vec(push))
}

/// Writes a scripted push stream and then closes it: as the Nim filter service does, which
/// keeps the push stream to a subscriber open and writes each further push on it.
#[derive(Debug, Clone, Copy, Default)]
struct Scripted;

impl request_response::Codec for Scripted {
    type Protocol = StreamProtocol;
    type Request = Vec<Step>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<Vec<Step>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<()>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        steps: Vec<Step>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        use futures::AsyncWriteExt;
        for step in steps {
            match step {
                Step::Frame(body) => framing::write_frame(io, &body).await?,
                Step::Raw(bytes) => {
                    io.write_all(&bytes).await?;
                    io.flush().await?;
                }
                Step::Wait(d) => tokio::time::sleep(d).await,
            }
        }
        Ok(())
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: (),
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

type Scripts = mpsc::UnboundedSender<(PeerId, Vec<Step>)>;

/// Starts a raw filter peer on its own task; returns its peer id, listen address, a sender
/// of (target, push) commands (one stream each), and a sender of scripted streams.
async fn raw_filter() -> (
    PeerId,
    Multiaddr,
    mpsc::UnboundedSender<(PeerId, MessagePush)>,
    Scripts,
) {
    let slots = || ReadSlots::new(Default::default(), Default::default(), 8);
    let mut s = swarm(RawFilter {
        metadata: metadata_behaviour(),
        subscribe: request_response::Behaviour::with_codec(
            SubscribeCodec::new(slots()),
            [(
                StreamProtocol::new(filter::SUBSCRIBE_PROTOCOL),
                request_response::ProtocolSupport::Inbound,
            )],
            request_response::Config::default(),
        ),
        push: request_response::Behaviour::with_codec(
            PushCodec::new(1 << 20, slots()),
            [(
                StreamProtocol::new(filter::PUSH_PROTOCOL),
                request_response::ProtocolSupport::Outbound,
            )],
            request_response::Config::default(),
        ),
        script: request_response::Behaviour::with_codec(
            Scripted,
            [(
                StreamProtocol::new(filter::PUSH_PROTOCOL),
                request_response::ProtocolSupport::Outbound,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        ),
    });
    let addr = listen(&mut s).await;
    let peer = *s.local_peer_id();
    let (tx, mut rx) = mpsc::unbounded_channel::<(PeerId, MessagePush)>();
    let (scripts, mut script_rx) = mpsc::unbounded_channel::<(PeerId, Vec<Step>)>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                // A closed channel only disables its branch: the peer lives as long as
                // the test's runtime.
                Some((to, push)) = rx.recv() => {
                    s.behaviour_mut().push.send_request(&to, push);
                }
                Some((to, steps)) = script_rx.recv() => {
                    s.behaviour_mut().script.send_request(&to, steps);
                }
                ev = s.select_next_some() => match ev {
                    SwarmEvent::Behaviour(RawFilterEvent::Metadata(
                        request_response::Event::Message {
                            message: request_response::Message::Request { channel, .. },
                            ..
                        },
                    )) => {
                        let _ = s.behaviour_mut().metadata.send_response(channel, our_metadata());
                    }
                    SwarmEvent::Behaviour(RawFilterEvent::Subscribe(
                        request_response::Event::Message {
                            message: request_response::Message::Request { request, channel, .. },
                            ..
                        },
                    )) => {
                        let Framed::Message(request) = request else {
                            continue;
                        };
                        let ok = SubscribeResponse::new(request.request_id, Status::Success, "");
                        let _ = s.behaviour_mut().subscribe.send_response(channel, ok);
                    }
                    _ => {}
                },
            }
        }
    });
    (
        peer,
        addr.with(libp2p::multiaddr::Protocol::P2p(peer)),
        tx,
        scripts,
    )
}

/// A client connected to a raw filter peer and subscribed there to one content topic on
/// shard 0; returns the client, its pushes, the raw peer, its scripts, and a maker of
/// pushes on that topic.
async fn subscribed_to_raw(
    client: pqmls_transport::node::Config,
) -> (
    Node,
    FilterInbound,
    PeerId,
    Scripts,
    impl Fn(&[u8]) -> MessagePush,
) {
    let (c, _c_in) = start(client).await;
    let c_in = c.filter_inbound().unwrap();
    let (a, a_addr, _, scripts) = raw_filter().await;
    c.dial(a_addr).await.unwrap();
    wait_admitted(&c, 1).await;
    let t = topic_on(0, 0);
    c.filter_subscribe(a, shard(0), std::slice::from_ref(&t))
        .await
        .unwrap();
    let push = move |payload: &[u8]| MessagePush {
        waku_message: Some(WakuMessage::new(t.to_string(), payload.to_vec())),
        pubsub_topic: Some(shard(0).to_string()),
    };
    (c, c_in, a, scripts, push)
}

const GAP: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_a_nim_style_service_writes_on_one_stream_arrives() {
    let (c, mut c_in, a, scripts, push) = subscribed_to_raw(waku_config(&[])).await;
    let cp = c.peer_id();
    // A burst of five on one stream, then more on the same stream after a pause.
    let mut steps: Vec<Step> = (0..5u8).map(|i| frame(&push(&[i]))).collect();
    steps.push(Step::Wait(Duration::from_millis(300)));
    steps.extend((5..8u8).flat_map(|i| [frame(&push(&[i])), Step::Wait(GAP)]));
    scripts.send((cp, steps)).unwrap();
    for i in 0..8u8 {
        let m = next(&mut c_in).await;
        assert_eq!(
            (m.peer, m.message.payload),
            (a, vec![i]),
            "push {i}, in order"
        );
    }
    // The stream ended; a new one is read too.
    scripts
        .send((cp, vec![frame(&push(b"again")), frame(&push(b"and again"))]))
        .unwrap();
    assert_eq!(next(&mut c_in).await.message.payload, b"again");
    assert_eq!(next(&mut c_in).await.message.payload, b"and again");
    let n = c.counters();
    assert_eq!((n.filter_delivered, n.filter_rejected), (10, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_push_stream_ends_alone() {
    let mut config = waku_config(&[]);
    config.limits.filter_pushes_per_stream = 3;
    let (c, mut c_in, _a, scripts, push) = subscribed_to_raw(config).await;
    let cp = c.peer_id();
    // A steady stream of three pushes (the bound) that outlives the bad ones.
    let steady: Vec<Step> = (0..3u8)
        .flat_map(|i| {
            [
                frame(&push(&[b's', i])),
                Step::Wait(Duration::from_millis(250)),
            ]
        })
        .collect();
    scripts.send((cp, steady)).unwrap();
    tokio::time::sleep(GAP).await;
    // Garbage: a frame that is no MessagePush, then a good push nobody reads.
    let garbage = vec![
        frame(&push(b"g1")),
        Step::Frame(vec![0xff; 40]),
        Step::Wait(GAP),
        frame(&push(b"g-lost")),
    ];
    // Oversized: a frame announced above the message limit plus overhead (150 KiB +
    // 64 KiB), then bytes.
    let mut prefix = Vec::new();
    prost::encoding::encode_varint(150 * 1024 + 64 * 1024 + 1, &mut prefix);
    let oversized = vec![
        frame(&push(b"o1")),
        Step::Raw(prefix),
        Step::Raw(vec![0; 4096]),
        Step::Wait(GAP),
        frame(&push(b"o-lost")),
    ];
    // Too many: four pushes where three are read.
    let many: Vec<Step> = (0..4u8)
        .flat_map(|i| [frame(&push(&[b'm', i])), Step::Wait(GAP)])
        .collect();
    for script in [garbage, oversized, many] {
        scripts.send((cp, script)).unwrap();
    }
    let mut got = HashSet::new();
    for _ in 0..(3 + 1 + 1 + 3) {
        got.insert(next(&mut c_in).await.message.payload);
    }
    let want: HashSet<Vec<u8>> = (0..3u8)
        .map(|i| vec![b's', i])
        .chain((0..3u8).map(|i| vec![b'm', i]))
        .chain([b"g1".to_vec(), b"o1".to_vec()])
        .collect();
    assert_eq!(got, want);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        c_in.try_recv().is_none(),
        "nothing after a bad frame or the bound"
    );
    let n = c.counters();
    assert_eq!((n.filter_delivered, n.filter_rejected), (8, 2));
    // The peer's next stream is read as usual.
    scripts.send((cp, vec![frame(&push(b"later"))])).unwrap();
    assert_eq!(next(&mut c_in).await.message.payload, b"later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_streams_per_peer_are_bounded() {
    let mut config = waku_config(&[]);
    config.limits.filter_push_streams_per_peer = 2;
    let (c, mut c_in, _a, scripts, push) = subscribed_to_raw(config).await;
    let cp = c.peer_id();
    // Three streams open at once, each quiet for a while before its push: the third is
    // closed unread.
    for i in 0..3u8 {
        let steps = vec![Step::Wait(Duration::from_millis(500)), frame(&push(&[i]))];
        scripts.send((cp, steps)).unwrap();
    }
    next(&mut c_in).await;
    next(&mut c_in).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c_in.try_recv().is_none());
    let n = c.counters();
    assert_eq!((n.filter_delivered, n.filter_rejected), (2, 1));
    // With those streams ended, another is read.
    scripts.send((cp, vec![frame(&push(b"next"))])).unwrap();
    assert_eq!(next(&mut c_in).await.message.payload, b"next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_push_stream_is_closed() {
    let mut config = waku_config(&[]);
    config.limits.filter_push_idle = Duration::from_millis(300);
    config.limits.filter_push_streams_per_peer = 1;
    let (c, mut c_in, _a, scripts, push) = subscribed_to_raw(config).await;
    let cp = c.peer_id();
    // One push, then silence past the idle timeout: the stream is closed, and its one slot
    // is free for the next stream, while the push after the silence is lost.
    let steps = vec![
        frame(&push(b"first")),
        Step::Wait(Duration::from_millis(1500)),
        frame(&push(b"lost")),
    ];
    scripts.send((cp, steps)).unwrap();
    assert_eq!(next(&mut c_in).await.message.payload, b"first");
    tokio::time::sleep(Duration::from_millis(600)).await;
    scripts.send((cp, vec![frame(&push(b"second"))])).unwrap();
    assert_eq!(next(&mut c_in).await.message.payload, b"second");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(c_in.try_recv().is_none());
    assert_eq!(c.counters().filter_rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_from_other_peers_or_for_other_criteria_are_dropped() {
    let (c, _c_in) = start(waku_config(&[])).await;
    let mut c_in = c.filter_inbound().unwrap();
    let (a, a_addr, a_push, _) = raw_filter().await;
    let (_b, b_addr, b_push, _) = raw_filter().await;
    c.dial(a_addr).await.unwrap();
    c.dial(b_addr).await.unwrap();
    wait_admitted(&c, 2).await;
    let t = topic_on(0, 0);
    c.filter_subscribe(a, shard(0), std::slice::from_ref(&t))
        .await
        .unwrap();

    let push = |topic: &ContentTopic, on: u16, payload: &[u8]| MessagePush {
        waku_message: Some(WakuMessage::new(topic.to_string(), payload.to_vec())),
        pubsub_topic: Some(shard(on).to_string()),
    };
    let cp = c.peer_id();
    // b: no subscription with it. a: another content topic, another shard, no message,
    // no pubsub topic, a meta field the spec forbids.
    b_push.send((cp, push(&t, 0, b"from b"))).unwrap();
    a_push
        .send((cp, push(&topic_on(0, 1), 0, b"other topic")))
        .unwrap();
    a_push.send((cp, push(&t, 1, b"other shard"))).unwrap();
    a_push
        .send((
            cp,
            MessagePush {
                waku_message: None,
                pubsub_topic: Some(shard(0).to_string()),
            },
        ))
        .unwrap();
    let mut no_topic = push(&t, 0, b"no topic");
    no_topic.pubsub_topic = None;
    a_push.send((cp, no_topic)).unwrap();
    let mut long_meta = push(&t, 0, b"meta");
    long_meta.waku_message = long_meta.waku_message.map(|m| m.with_meta(vec![0; 65]));
    a_push.send((cp, long_meta)).unwrap();
    wait_until("six pushes refused", || async {
        c.counters().filter_rejected == 6
    })
    .await;
    assert!(c_in.try_recv().is_none());

    // The one push that matches arrives, from a.
    a_push.send((cp, push(&t, 0, b"good"))).unwrap();
    let got = next(&mut c_in).await;
    assert_eq!(
        (got.peer, got.message.payload.as_slice()),
        (a, &b"good"[..])
    );
    // After unsubscribing, a's pushes are refused too.
    let _ = c.filter_unsubscribe_all(a).await;
    a_push.send((cp, push(&t, 0, b"late"))).unwrap();
    wait_until("late push refused", || async {
        c.counters().filter_rejected == 7
    })
    .await;
    assert!(c_in.try_recv().is_none());
    assert_eq!(c.counters().filter_delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_and_criteria_limits_hold() {
    let mut config = filter::Config::default();
    config.max_subscribers = 2;
    config.max_criteria_per_subscriber = 3;
    let (s, _s_in) = start(waku_config(&[0]).with_filter_service(config)).await;
    let sp = s.peer_id();
    let (c1, _) = light_client(&s).await;
    let (c2, _) = light_client(&s).await;
    let (c3, _) = light_client(&s).await;
    let t = |i| topic_on(0, i);
    c1.filter_subscribe(sp, shard(0), &[t(0)]).await.unwrap();
    c2.filter_subscribe(sp, shard(0), &[t(0)]).await.unwrap();
    // The third subscriber is refused with 503, and holds nothing.
    assert_eq!(
        refused(c3.filter_subscribe(sp, shard(0), &[t(0)]).await),
        Status::ServiceUnavailable
    );
    assert_eq!(refused(c3.filter_ping(sp).await), Status::NotFound);
    assert_eq!(s.counters().filter_subscribers, 2);

    // c1 may hold three criteria, not four.
    c1.filter_subscribe(sp, shard(0), &[t(1), t(2)])
        .await
        .unwrap();
    assert_eq!(
        refused(c1.filter_subscribe(sp, shard(0), &[t(3)]).await),
        Status::ServiceUnavailable
    );
    // Over 100 content topics in one request; a shard the service does not relay.
    let many: Vec<ContentTopic> = (0..101).map(t).collect();
    assert_eq!(
        refused(c2.filter_subscribe(sp, shard(0), &many).await),
        Status::BadRequest
    );
    assert_eq!(
        refused(c2.filter_subscribe(sp, shard(1), &[t(0)]).await),
        Status::BadRequest
    );

    // When c2 leaves, c3 gets its place.
    c2.filter_unsubscribe_all(sp).await.unwrap();
    c3.filter_subscribe(sp, shard(0), &[t(0)]).await.unwrap();
    c3.filter_ping(sp).await.unwrap();
    assert_eq!(s.counters().filter_subscribers, 2);
    let c = s.counters();
    // Served: c1 x2, c2, c2 leaving, c3, c3's ping. Refused: c3 x2, c1, c2 x2.
    assert_eq!(
        (c.filter_requests_served, c.filter_requests_refused),
        (6, 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_subscription_requests_are_answered_and_the_service_keeps_serving() {
    let (s, _s_in) = start(waku_config(&[0]).with_filter_service(filter::Config::default())).await;
    let sp = s.peer_id();
    let mut raw = RawPeer::spawn(
        filter::SUBSCRIBE_PROTOCOL,
        Duration::from_secs(5),
        sp,
        tcp_addr(&s).await,
    );
    let mut huge = Vec::new();
    prost::encoding::encode_varint(4 << 20, &mut huge);
    let ping = pqmls_transport::waku::filter::SubscribeRequest {
        request_id: "ping".into(),
        ..Default::default()
    };
    // One after another: a connection may have only a few requests read at once
    // (`Config::max_concurrent_requests_per_connection`).
    let mut answers = [None, None, None];
    for bytes in [
        vec![4, 0xff, 0xff, 0xff, 0xff],
        huge,
        prost::Message::encode_length_delimited_to_vec(&ping),
    ] {
        raw.send(bytes, false);
        let (n, outcome) = raw.next().await;
        answers[n] = match outcome {
            RawOutcome::Answer(b) if !b.is_empty() => Some(
                prost::Message::decode_length_delimited(b.as_slice())
                    .map(|r: SubscribeResponse| (r.request_id, r.status_code))
                    .unwrap(),
            ),
            _ => None,
        };
    }
    assert_eq!(answers[0], Some(("N/A".to_owned(), 400)), "garbage");
    assert_eq!(answers[1], None, "closed without an answer");
    assert_eq!(
        answers[2],
        Some(("ping".to_owned(), 404)),
        "no subscription"
    );
    // A real client is still served.
    let (c, _) = light_client(&s).await;
    c.filter_subscribe(sp, shard(0), &[topic_on(0, 0)])
        .await
        .unwrap();
    assert_eq!(s.counters().filter_requests_refused, 3);
}

/// Strangers cannot take the push read slots the real service needs: four peers with no
/// subscription here each open as many push streams as a peer may and stall in the first
/// byte of a frame (64 streams, every one of the node's push read slots), and a push of
/// the service the client subscribed with still arrives. Before, each stranger's stream
/// held a slot until the frame timeout, and the service's push found none and was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_stalling_push_streams_do_not_starve_the_service() {
    let config = waku_config(&[]);
    let streams = config.limits.filter_push_streams_per_peer;
    let (c, mut c_in, _a, scripts, push) = subscribed_to_raw(config).await;
    let cp = c.peer_id();
    let mut strangers = Vec::new();
    for _ in 0..4 {
        let (_, addr, _, s) = raw_filter().await;
        c.dial(addr).await.unwrap();
        strangers.push(s);
    }
    wait_admitted(&c, 5).await;
    for s in &strangers {
        for _ in 0..streams {
            // The first byte of a frame's length, then nothing for a long while.
            let steps = vec![Step::Raw(vec![0x85]), Step::Wait(Duration::from_secs(15))];
            s.send((cp, steps)).unwrap();
        }
    }
    // Time for the strangers' streams to open (and, before, to take the slots).
    tokio::time::sleep(Duration::from_secs(1)).await;
    scripts
        .send((cp, vec![frame(&push(b"from the service"))]))
        .unwrap();
    // Well before the stalled streams end (15 s).
    let got = tokio::time::timeout(Duration::from_secs(5), c_in.recv())
        .await
        .expect("the service's push arrives while the strangers stall")
        .unwrap();
    assert_eq!(got.message.payload, b"from the service");
    wait_until("every stranger's stream closed unread", || async {
        c.counters().filter_rejected >= (4 * streams) as u64
    })
    .await;
}

/// A filter service that takes subscription requests and never answers them.
#[derive(NetworkBehaviour)]
struct SilentFilter {
    metadata: request_response::Behaviour<metadata::Codec>,
    subscribe: request_response::Behaviour<SubscribeCodec>,
}

/// Starts a [`SilentFilter`] on its own task; returns its listen address.
async fn silent_filter() -> Multiaddr {
    let mut s = swarm(SilentFilter {
        metadata: metadata_behaviour(),
        subscribe: request_response::Behaviour::with_codec(
            SubscribeCodec::new(ReadSlots::new(Default::default(), Default::default(), 8)),
            [(
                StreamProtocol::new(filter::SUBSCRIBE_PROTOCOL),
                request_response::ProtocolSupport::Inbound,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
        ),
    });
    let addr = listen(&mut s).await;
    let addr = addr.with(libp2p::multiaddr::Protocol::P2p(*s.local_peer_id()));
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            match s.select_next_some().await {
                SwarmEvent::Behaviour(SilentFilterEvent::Metadata(
                    request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    },
                )) => {
                    let _ = s
                        .behaviour_mut()
                        .metadata
                        .send_response(channel, our_metadata());
                }
                SwarmEvent::Behaviour(SilentFilterEvent::Subscribe(
                    request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    },
                )) => held.push(channel),
                _ => {}
            }
        }
    });
    addr
}

/// An unsubscription takes the criteria back locally even when the node is too busy to
/// send the request: pushes of that service are refused from then on, and the node does
/// not renew the criteria with it. Before, a busy node answered `Busy` having forgotten
/// nothing (a light client moving to another service then kept the old one for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscription_is_taken_back_locally_even_when_the_node_is_busy() {
    let mut config = waku_config(&[]);
    config.limits.max_pending_requests = 1;
    let (c, mut c_in, a, scripts, push) = subscribed_to_raw(config).await;
    let cp = c.peer_id();
    // One request that is never answered takes the node's only request slot.
    let silent = silent_filter().await;
    let silent_peer = match silent.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => unreachable!(),
    };
    c.dial(silent).await.unwrap();
    wait_admitted(&c, 2).await;
    let held = {
        let c = c.clone();
        tokio::spawn(async move { c.filter_ping(silent_peer).await })
    };
    // (A probe that goes out first stays outstanding in the node and takes the slot.)
    wait_until("the request slot taken", || async {
        matches!(
            tokio::time::timeout(Duration::from_millis(200), c.filter_ping(silent_peer)).await,
            Ok(Err(Error::Busy))
        )
    })
    .await;
    assert!(matches!(
        c.filter_unsubscribe_all(a).await,
        Err(Error::Busy)
    ));
    let rejected = c.counters().filter_rejected;
    scripts.send((cp, vec![frame(&push(b"after"))])).unwrap();
    wait_until("the push refused", || async {
        c.counters().filter_rejected > rejected
    })
    .await;
    assert!(
        c_in.try_recv().is_none(),
        "nothing delivered after the unsubscription"
    );
    held.abort();
}
