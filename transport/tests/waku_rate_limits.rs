//! Per-peer rate limits of the Waku services (issue 13 item 4): a peer over its rate is
//! answered 429 by store v3, lightpush v3 and filter, while another peer is still served.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::waku_support;

use std::time::Duration;

use pqmls_transport::node::RateLimits;
use pqmls_transport::rate_limit::Rate;
use pqmls_transport::waku::store::QueryRequest;
use pqmls_transport::waku::{WakuMessage, filter, lightpush};
use pqmls_transport::{Error, Node, store};
use support::tcp_addr;
use waku_support::{wait_admitted, waku_config};

fn two_per_ten_minutes() -> Option<Rate> {
    Some(Rate::new(2, Duration::from_secs(600)))
}

/// A store, lightpush and filter service allowing each peer 2 requests per service.
async fn service() -> Node {
    let dir = support::temp_dir("rate");
    let mut c = waku_config(&[0])
        .with_store(&dir, store::Config::default())
        .with_lightpush_service(lightpush::Config::default())
        .with_filter_service(filter::Config::default());
    c.limits.rate_limits = RateLimits::unlimited();
    c.limits.rate_limits.store = two_per_ten_minutes();
    c.limits.rate_limits.lightpush = two_per_ten_minutes();
    c.limits.rate_limits.filter = two_per_ten_minutes();
    Node::start(c).await.unwrap().0
}

async fn client(service: &Node) -> Node {
    let c = waku_config(&[]).with_bootstrap(tcp_addr(service).await);
    let (n, _) = Node::start(c).await.unwrap();
    wait_admitted(&n, 1).await;
    n
}

fn is_429(e: &Error) -> bool {
    match e {
        Error::LightPush(r) => r.status == lightpush::Status::TooManyRequests,
        Error::Filter(r) => r.status == filter::Status::TooManyRequests,
        Error::Refused(d) => d.contains("429"),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_answers_429_beyond_a_peers_rate_and_serves_other_peers() {
    let s = service().await;
    let a = client(&s).await;
    let b = client(&s).await;
    let query = QueryRequest {
        request_id: "q".into(),
        include_data: true,
        pagination_forward: true,
        ..Default::default()
    };
    let message = || WakuMessage::new("/app/1/chat/proto", b"hi".to_vec());
    for round in 0..3 {
        let store = a.store_query(s.peer_id(), query.clone()).await;
        // Lightpush: the service has no relay peer, so within the rate it answers
        // "no peers to relay"; over it, 429.
        let push = a.lightpush(s.peer_id(), None, message()).await.unwrap_err();
        // Filter ping: within the rate 404 (no subscription); over it, 429.
        let ping = a.filter_ping(s.peer_id()).await.unwrap_err();
        if round < 2 {
            assert!(store.is_ok(), "{store:?}");
            assert!(!is_429(&push) && !is_429(&ping), "{push} / {ping}");
        } else {
            let e = store.unwrap_err();
            assert!(is_429(&e), "{e}");
            assert!(is_429(&push), "{push}");
            assert!(is_429(&ping), "{ping}");
        }
    }
    assert_eq!(s.counters().rate_limited, 3);
    // Another peer has its own buckets.
    assert!(b.store_query(s.peer_id(), query).await.is_ok());
    assert!(!is_429(&b.filter_ping(s.peer_id()).await.unwrap_err()));
    for n in [a, b, s] {
        n.shutdown().await.unwrap();
    }
}
