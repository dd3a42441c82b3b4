//! One peer cannot hold what a Waku service reads at once (DESIGN "Over Waku", flood
//! finding 5): a single connection that opens as many request streams as it may and
//! stalls in each (a length prefix and a few bytes, or nothing) holds at most its
//! connection's share of the store's request read budget and of the lightpush and filter
//! subscribe read slots, and another peer is still served meanwhile. Before the shares,
//! the stalling connection took the whole budget and every slot, and the honest peer was
//! answered 503 (store) or 429 (lightpush, filter) until the stalled streams timed out.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::waku_support;

use std::time::Duration;

use pqmls_transport::store;
use pqmls_transport::waku::store::{MAX_REQUEST, QueryRequest};
use pqmls_transport::waku::{WakuMessage, filter, lightpush};
use support::{tcp_addr, wait_until};
use waku_support::{RawPeer, shard, start, topic_on, wait_admitted, wait_mesh, waku_config};

/// Streams the stalling peer opens: as many as one connection may have at once.
const STREAMS: usize = 32;

/// The first bytes of a request frame announcing `len` bytes of body (only 3 follow).
fn stalled_frame(len: usize) -> Vec<u8> {
    let mut b = Vec::new();
    prost::encoding::encode_varint(len as u64, &mut b);
    b.extend_from_slice(&[1, 2, 3]);
    b
}

/// A light client (relaying nothing) connected to `service`.
async fn client(service: &pqmls_transport::Node) -> pqmls_transport::Node {
    let (c, _c_in) = start(waku_config(&[]).with_bootstrap(tcp_addr(service).await)).await;
    wait_admitted(&c, 1).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalling_peer_holds_only_its_share_of_a_stores_read_budget() {
    let mut config = waku_config(&[0]).with_store(
        support::temp_dir("store-read-share"),
        store::Config::default(),
    );
    // The stalled reads must outlast the honest query on a loaded machine.
    config.limits.request_timeout = Duration::from_secs(20);
    let share = config.limits.store_request_read_bytes_per_connection as u64;
    let budget = config.limits.store_request_read_bytes as u64;
    assert!(
        share < budget,
        "a connection's share is a part of the budget"
    );
    let (s, _s_in) = start(config).await;
    let mut raw = RawPeer::spawn(
        pqmls_transport::waku::store::PROTOCOL,
        Duration::from_secs(60),
        s.peer_id(),
        tcp_addr(&s).await,
    );
    wait_admitted(&s, 1).await;
    // Four frames of a quarter of the share each (the share holds them), then frames of
    // the largest size: without shares they would take the whole budget.
    let small = usize::try_from(share / 4).unwrap();
    for _ in 0..4 {
        raw.send(stalled_frame(small), true);
    }
    for _ in 4..STREAMS {
        raw.send(stalled_frame(MAX_REQUEST), true);
    }
    assert!((STREAMS - 4) * MAX_REQUEST > budget as usize);
    wait_until("every stalled frame reserved or refused", || async {
        let c = s.counters();
        // Every frame held (as a small one) or refused; or, without shares, the budget
        // full.
        c.store_reads_refused + c.store_request_read_bytes / small as u64 >= STREAMS as u64
            || c.store_request_read_bytes >= budget - MAX_REQUEST as u64
    })
    .await;
    let held = s.counters().store_request_read_bytes;
    assert!(
        held <= share,
        "one connection holds {held} bytes of reads, over its share of {share}"
    );

    // Another peer is served meanwhile.
    let honest = client(&s).await;
    let query = QueryRequest {
        request_id: "honest".into(),
        include_data: true,
        pagination_forward: true,
        ..Default::default()
    };
    let answer = honest.store_query(s.peer_id(), query).await.unwrap();
    assert_eq!(
        (answer.request_id.as_str(), answer.status_code),
        ("honest", Some(200))
    );
    assert!(
        s.counters().store_request_read_bytes > 0,
        "the stalled reads were still held while the honest query was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalling_peer_holds_only_its_share_of_the_lightpush_and_filter_reads() {
    let mut config = waku_config(&[0])
        .with_lightpush_service(lightpush::Config::default())
        .with_filter_service(filter::Config::default());
    config.limits.request_timeout = Duration::from_secs(20);
    let (s, _s_in) = start(config).await;
    let addr = tcp_addr(&s).await;
    let (_r, _r_in) = start(waku_config(&[0]).with_bootstrap(addr.clone())).await;
    wait_mesh(&s, shard(0), 1).await;

    // One connection per protocol opens every stream it may and sends nothing on them.
    let mut raws = Vec::new();
    for protocol in [lightpush::PROTOCOL, filter::SUBSCRIBE_PROTOCOL] {
        let mut raw = RawPeer::spawn(protocol, Duration::from_secs(60), s.peer_id(), addr.clone());
        for _ in 0..STREAMS {
            raw.send(Vec::new(), true);
        }
        raws.push(raw);
    }
    wait_admitted(&s, 3).await;
    let per_connection = lightpush::Config::default().max_concurrent_requests_per_connection;
    wait_until("the stalled streams are being read or refused", || async {
        let c = s.counters();
        c.lightpush_reading + c.lightpush_refused >= STREAMS as u64
            && c.filter_reading + c.filter_requests_refused >= STREAMS as u64
    })
    .await;
    let c = s.counters();
    assert!(
        c.lightpush_reading <= per_connection as u64,
        "one connection holds {} lightpush reads",
        c.lightpush_reading
    );
    assert!(
        c.filter_reading <= filter::Config::default().max_concurrent_requests_per_connection as u64,
        "one connection holds {} filter subscribe reads",
        c.filter_reading
    );

    // Another peer pushes and subscribes meanwhile.
    let honest = client(&s).await;
    let t = topic_on(0, 0);
    let m = WakuMessage::new(t.to_string(), b"still served".to_vec());
    assert_eq!(honest.lightpush(s.peer_id(), None, m).await.unwrap(), 1);
    honest
        .filter_subscribe(s.peer_id(), shard(0), std::slice::from_ref(&t))
        .await
        .unwrap();
    let c = s.counters();
    assert!(
        c.lightpush_reading > 0 && c.filter_reading > 0,
        "the stalled reads were still held: {c:?}"
    );
}

/// The default shares against the default per-address connection limit: one address,
/// whatever peer ids it uses, can hold at most half of a service's lightpush and filter
/// read slots and a quarter of the store's request read budget (the loopback preset
/// lifts the per-address limit for loopback addresses only).
#[test]
fn one_address_holds_at_most_a_part_of_each_bound_by_default() {
    let limits = pqmls_transport::node::Limits::default();
    let per_address = limits.max_connections_per_ip;
    let lp = lightpush::Config::default();
    let f = filter::Config::default();
    assert!(
        2 * per_address * lp.max_concurrent_requests_per_connection <= lp.max_concurrent_requests
    );
    assert!(
        2 * per_address * f.max_concurrent_requests_per_connection <= f.max_concurrent_requests
    );
    assert!(
        4 * per_address * limits.store_request_read_bytes_per_connection
            <= limits.store_request_read_bytes
    );
}
