//! The bytes a Waku store v3 server reads at once, over all peers: many peers announcing
//! request frames of the largest size and stalling make the store reserve at most its read
//! budget, the requests beyond it are answered 503 unread, and the store serves again once
//! the stalled reads time out.

// Tests may unwrap: a panic is a test failure (clippy.toml allows it only inside #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::waku_support;

use std::time::Duration;

use pqmls_transport::store;
use pqmls_transport::waku::store::{MAX_REQUEST, PROTOCOL, QueryRequest, QueryResponse};
use prost::Message as _;
use support::{tcp_addr, wait_until};
use waku_support::{RawOutcome, RawPeer, start, wait_admitted, waku_config};

/// Stalled senders, and frames each keeps open.
const PEERS: usize = 4;
const FRAMES_PER_PEER: usize = 8;
/// Frames of the largest size the store's budget holds at once.
const BUDGET_FRAMES: usize = 4;

/// The first bytes of a request frame announcing `len` bytes of body (only 3 follow).
fn stalled_frame(len: usize) -> Vec<u8> {
    let mut b = Vec::new();
    prost::encoding::encode_varint(len as u64, &mut b);
    b.extend_from_slice(&[1, 2, 3]);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_store_requests_stay_within_the_read_budget() {
    let cap = BUDGET_FRAMES * MAX_REQUEST;
    let mut config = waku_config(&[0]).with_store(
        support::temp_dir("store-read-cap"),
        store::Config::default(),
    );
    config.limits.store_request_read_bytes = cap;
    // A frame of the largest size per connection: the budget over all peers is what this
    // test reads (`waku_read_shares` the connection's share).
    config.limits.store_request_read_bytes_per_connection = MAX_REQUEST;
    // Long enough that no stalled read times out before all of them are counted, even on
    // a loaded machine; the store frees them after that.
    config.limits.request_timeout = Duration::from_secs(6);
    let (s, _s_in) = start(config).await;
    let addr = tcp_addr(&s).await;

    // Peers announcing frames of the largest size, sending 3 bytes of each and stalling.
    let mut raws = Vec::new();
    for _ in 0..PEERS {
        raws.push(RawPeer::spawn(
            PROTOCOL,
            Duration::from_secs(30),
            s.peer_id(),
            addr.clone(),
        ));
    }
    wait_admitted(&s, PEERS as u64).await;
    for raw in &mut raws {
        for _ in 0..FRAMES_PER_PEER {
            raw.send(stalled_frame(MAX_REQUEST), true);
        }
    }
    // Every frame has been either reserved or refused.
    let frames = (PEERS * FRAMES_PER_PEER) as u64;
    let max = MAX_REQUEST as u64;
    wait_until("every stalled frame reserved or refused", || async {
        let c = s.counters();
        c.store_request_read_bytes + c.store_reads_refused * max >= frames * max
    })
    .await;
    let c = s.counters();
    assert!(
        c.store_request_read_bytes_peak <= cap as u64,
        "{} bytes of requests were read at once, over the cap of {cap}",
        c.store_request_read_bytes_peak
    );
    assert_eq!(
        c.store_request_read_bytes_peak, cap as u64,
        "the budget was used"
    );
    assert_eq!(c.store_reads_refused, frames - BUDGET_FRAMES as u64);
    assert_eq!(
        c.requests_busy, c.store_reads_refused,
        "each refusal answered"
    );

    // While the budget is held, even a small complete request is answered 503, unread.
    let mut late = RawPeer::spawn(PROTOCOL, Duration::from_secs(30), s.peer_id(), addr);
    wait_admitted(&s, PEERS as u64 + 1).await;
    let query = QueryRequest {
        request_id: "late".into(),
        message_hashes: vec![vec![7; 32]],
        ..Default::default()
    };
    let mut frame = Vec::new();
    prost::encoding::encode_varint(query.encoded_len() as u64, &mut frame);
    frame.extend_from_slice(&query.encode_to_vec());
    late.send(frame.clone(), false);
    let RawOutcome::Answer(bytes) = late.next().await.1 else {
        panic!("the busy store answers");
    };
    let mut r = bytes.as_slice();
    let len = prost::encoding::decode_varint(&mut r).unwrap() as usize;
    let answer = QueryResponse::decode(&r[..len]).unwrap();
    assert_eq!(answer.status_code, Some(503));

    // The stalled reads time out, give their bytes back, and the store serves again.
    wait_until("stalled reads timed out", || async {
        s.counters().store_request_read_bytes == 0
    })
    .await;
    late.send(frame, false);
    let RawOutcome::Answer(bytes) = late.next().await.1 else {
        panic!("the store answers");
    };
    let mut r = bytes.as_slice();
    let len = prost::encoding::decode_varint(&mut r).unwrap() as usize;
    let answer = QueryResponse::decode(&r[..len]).unwrap();
    assert_eq!(
        (answer.request_id.as_str(), answer.status_code),
        ("late", Some(200))
    );
    assert!(s.counters().store_request_read_bytes_peak <= cap as u64);
}
