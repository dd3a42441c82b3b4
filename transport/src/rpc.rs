//! The store protocol: request-response for the key-package directory and for history.
//!
//! One request and one response per stream, each a frame: a 4-byte big-endian length, then
//! the body. Bodies use a small hand-written binary encoding (tag byte, big-endian integers,
//! length-prefixed byte strings) so the codec has no serialisation dependency and every
//! length is checked against a limit before anything is allocated.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::message::MessageId;
use crate::store::{Cursor, Entry};
use crate::waku::framing::ReadBudget;

/// Protocol name of the store protocol. Only store nodes accept it inbound, so identify
/// tells other nodes which peers are stores.
pub const PROTOCOL: &str = "/pqmls/store/1.0.0";

/// Size limit of a request frame (fixed: requests are small, a directory blob is the largest
/// part and is limited separately).
pub(crate) fn max_request_frame(limits: &Limits) -> usize {
    limits.max_directory_key + limits.max_directory_blob + 1024
}

/// Size limit of a response frame.
pub(crate) fn max_response_frame(limits: &Limits) -> usize {
    // A history page holds at most `history_page_bytes` plus one message (the first message
    // is always included so paging always advances), plus per-entry overhead.
    limits.history_page_bytes
        + limits.max_message_size
        + limits.max_directory_blob
        + 64 * limits.history_page_messages
        + 1024
}

/// Encoded bytes a history entry adds to a page besides its payload: id, arrival time and
/// payload length.
pub(crate) const ENTRY_OVERHEAD: usize = 32 + 8 + 4;

/// Encoded bytes of a page besides its entries: tag, flag and entry count.
pub(crate) const PAGE_OVERHEAD: usize = 1 + 1 + 4;

/// The encoded size of the variable-size responses (history pages and directory blobs),
/// which the store charges to its response budget; 0 for the fixed ones of a few bytes.
pub(crate) fn response_len(res: &Response) -> usize {
    match res {
        Response::Page { entries, .. } => entries.iter().fold(PAGE_OVERHEAD, |n, e| {
            n.saturating_add(ENTRY_OVERHEAD)
                .saturating_add(e.data.len())
        }),
        Response::Found(blob) => 1usize.saturating_add(4).saturating_add(blob.len()),
        Response::Stored | Response::NotFound | Response::Refused(_) => 0,
    }
}

/// Size limits the codec enforces on both sides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_message_size: usize,
    pub max_directory_key: usize,
    pub max_directory_blob: usize,
    pub history_page_messages: usize,
    pub history_page_bytes: usize,
}

/// A request to a store node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Store `blob` under `key` in the directory (replaces an older blob).
    Put { key: Vec<u8>, blob: Vec<u8> },
    /// Look up `key` in the directory.
    Get { key: Vec<u8> },
    /// Messages of `topic` that arrived after `after`, at most `limit` of them.
    History {
        topic: String,
        after: Cursor,
        limit: u32,
    },
}

/// Why a store refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request was well formed but invalid (unknown topic name, entry too large...).
    BadRequest = 1,
    /// The store's database failed.
    Internal = 2,
    /// The store holds as many response bytes as its budget allows (for this peer or in
    /// total); retry later.
    Busy = 3,
    /// The store's directory validator refused the put.
    Rejected = 4,
    /// The put would exceed the writer's directory quota or the directory's size.
    OverQuota = 5,
}

/// A store node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// The put was stored.
    Stored,
    /// The blob under the requested key.
    Found(Vec<u8>),
    /// No blob under the requested key.
    NotFound,
    /// One page of history; `more` says whether another page follows.
    Page { entries: Vec<Entry>, more: bool },
    /// The request was refused.
    Refused(Refusal),
}

const REQ_PUT: u8 = 1;
const REQ_GET: u8 = 2;
const REQ_HISTORY: u8 = 3;
const RES_STORED: u8 = 1;
const RES_FOUND: u8 = 2;
const RES_NOT_FOUND: u8 = 3;
const RES_PAGE: u8 = 4;
const RES_REFUSED: u8 = 5;

/// The request-response codec of [`PROTOCOL`]. Frames being read at once are bounded in
/// bytes by two [`ReadBudget`]s, one for the requests a store node reads (with a share
/// per connection) and one for the responses a client reads: the length a frame
/// announces is reserved before its body is allocated, and a frame that does not fit is
/// not read (the stream is closed; the requester sees the request fail and tries again
/// later).
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    limits: Limits,
    /// Counts inbound requests that could not be read: request-response drops those
    /// streams without an event, so the codec is the only place that sees them.
    malformed_requests: Arc<AtomicU64>,
    requests: ReadBudget,
    responses: ReadBudget,
}

impl Codec {
    pub(crate) fn new(
        limits: Limits,
        malformed_requests: Arc<AtomicU64>,
        requests: ReadBudget,
        responses: ReadBudget,
    ) -> Self {
        Self {
            limits,
            malformed_requests,
            requests,
            responses,
        }
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Why a frame was not read.
enum Unread {
    /// An I/O error, a frame over the size limit, a truncated frame.
    Io(io::Error),
    /// The frame did not fit what is left of the read budget.
    OverBudget,
}

/// Reads one frame of at most `max` bytes within `budget`, which holds the announced
/// length from before the body is allocated until the frame is decoded (`decode`).
async fn read_frame<T: AsyncRead + Unpin + Send, R>(
    io: &mut T,
    max: usize,
    budget: &ReadBudget,
    decode: impl FnOnce(&[u8]) -> R,
) -> Result<R, Unread> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.map_err(Unread::Io)?;
    let len = usize::try_from(u32::from_be_bytes(len))
        .map_err(|_| Unread::Io(invalid("frame length")))?;
    if len > max {
        return Err(Unread::Io(invalid("frame exceeds size limit")));
    }
    let Some(_held) = budget.try_reserve(len) else {
        return Err(Unread::OverBudget);
    };
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await.map_err(Unread::Io)?;
    Ok(decode(&buf))
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    body: &[u8],
    max: usize,
) -> io::Result<()> {
    if body.len() > max {
        return Err(invalid("frame exceeds size limit"));
    }
    let len = u32::try_from(body.len()).map_err(|_| invalid("frame length"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await?;
    io.close().await
}

/// Appends big-endian integers and length-prefixed byte strings.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) -> io::Result<()> {
        self.u32(u32::try_from(v.len()).map_err(|_| invalid("field too long"))?);
        self.0.extend_from_slice(v);
        Ok(())
    }
}

/// Reads what [`Writer`] wrote; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(invalid("truncated frame"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        let b = self.take(1)?;
        Ok(b.first().copied().unwrap_or_default())
    }
    // In the fixed-size reads below `take(n)` returns exactly `n` bytes or an error, so
    // `copy_from_slice` (which panics on a length mismatch) cannot panic.
    fn u32(&mut self) -> io::Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn id(&mut self) -> io::Result<MessageId> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(MessageId(a))
    }
    fn bytes(&mut self, max: usize) -> io::Result<&'a [u8]> {
        let len = usize::try_from(self.u32()?).map_err(|_| invalid("field length"))?;
        if len > max {
            return Err(invalid("field exceeds size limit"));
        }
        self.take(len)
    }
    fn finish(self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(invalid("trailing bytes"))
        }
    }
}

/// Longest topic name accepted in a history request.
const MAX_TOPIC_NAME: usize = 256;

impl Codec {
    pub(crate) fn encode_request(&self, req: &Request) -> io::Result<Vec<u8>> {
        let mut w = Writer(Vec::new());
        match req {
            Request::Put { key, blob } => {
                w.u8(REQ_PUT);
                w.bytes(key)?;
                w.bytes(blob)?;
            }
            Request::Get { key } => {
                w.u8(REQ_GET);
                w.bytes(key)?;
            }
            Request::History {
                topic,
                after,
                limit,
            } => {
                w.u8(REQ_HISTORY);
                w.bytes(topic.as_bytes())?;
                write_cursor(&mut w, after);
                w.u32(*limit);
            }
        }
        Ok(w.0)
    }

    pub(crate) fn decode_request(&self, body: &[u8]) -> io::Result<Request> {
        let l = &self.limits;
        let mut r = Reader(body);
        let req = match r.u8()? {
            REQ_PUT => Request::Put {
                key: r.bytes(l.max_directory_key)?.to_vec(),
                blob: r.bytes(l.max_directory_blob)?.to_vec(),
            },
            REQ_GET => Request::Get {
                key: r.bytes(l.max_directory_key)?.to_vec(),
            },
            REQ_HISTORY => {
                let topic = String::from_utf8(r.bytes(MAX_TOPIC_NAME)?.to_vec())
                    .map_err(|_| invalid("topic is not UTF-8"))?;
                let after = read_cursor(&mut r)?;
                let limit = r.u32()?;
                Request::History {
                    topic,
                    after,
                    limit,
                }
            }
            _ => return Err(invalid("unknown request")),
        };
        r.finish()?;
        Ok(req)
    }

    pub(crate) fn encode_response(&self, res: &Response) -> io::Result<Vec<u8>> {
        let mut w = Writer(Vec::new());
        match res {
            Response::Stored => w.u8(RES_STORED),
            Response::Found(blob) => {
                w.u8(RES_FOUND);
                w.bytes(blob)?;
            }
            Response::NotFound => w.u8(RES_NOT_FOUND),
            Response::Page { entries, more } => {
                w.u8(RES_PAGE);
                w.u8(u8::from(*more));
                w.u32(u32::try_from(entries.len()).map_err(|_| invalid("too many entries"))?);
                for e in entries {
                    w.0.extend_from_slice(e.id.as_bytes());
                    w.u64(e.received_ms);
                    w.bytes(&e.data)?;
                }
            }
            Response::Refused(why) => {
                w.u8(RES_REFUSED);
                w.u8(*why as u8);
            }
        }
        Ok(w.0)
    }

    pub(crate) fn decode_response(&self, body: &[u8]) -> io::Result<Response> {
        let l = &self.limits;
        let mut r = Reader(body);
        let res = match r.u8()? {
            RES_STORED => Response::Stored,
            RES_FOUND => Response::Found(r.bytes(l.max_directory_blob)?.to_vec()),
            RES_NOT_FOUND => Response::NotFound,
            RES_PAGE => {
                let more = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(invalid("bad flag")),
                };
                let n = usize::try_from(r.u32()?).map_err(|_| invalid("entry count"))?;
                if n > l.history_page_messages {
                    return Err(invalid("too many entries"));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = r.id()?;
                    let received_ms = r.u64()?;
                    let data = r.bytes(l.max_message_size)?.to_vec();
                    entries.push(Entry {
                        id,
                        received_ms,
                        data,
                    });
                }
                Response::Page { entries, more }
            }
            RES_REFUSED => Response::Refused(match r.u8()? {
                1 => Refusal::BadRequest,
                2 => Refusal::Internal,
                3 => Refusal::Busy,
                4 => Refusal::Rejected,
                5 => Refusal::OverQuota,
                _ => return Err(invalid("unknown refusal")),
            }),
            _ => return Err(invalid("unknown response")),
        };
        r.finish()?;
        Ok(res)
    }
}

fn write_cursor(w: &mut Writer, c: &Cursor) {
    w.u64(c.after_ms);
    match &c.after_id {
        Some(id) => {
            w.u8(1);
            w.0.extend_from_slice(id.as_bytes());
        }
        None => w.u8(0),
    }
}

fn read_cursor(r: &mut Reader<'_>) -> io::Result<Cursor> {
    let after_ms = r.u64()?;
    let after_id = match r.u8()? {
        0 => None,
        1 => Some(r.id()?),
        _ => return Err(invalid("bad cursor flag")),
    };
    Ok(Cursor { after_ms, after_id })
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let max = max_request_frame(&self.limits);
        let requests = self.requests.clone();
        match read_frame(io, max, &requests, |b| self.decode_request(b)).await {
            Ok(Ok(request)) => Ok(request),
            Ok(Err(e)) | Err(Unread::Io(e)) => {
                self.malformed_requests.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
            // Counted by the budget.
            Err(Unread::OverBudget) => {
                Err(io::Error::other("requests being read exceed the budget"))
            }
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let max = max_response_frame(&self.limits);
        let responses = self.responses.clone();
        match read_frame(io, max, &responses, |b| self.decode_response(b)).await {
            Ok(r) => r,
            Err(Unread::Io(e)) => Err(e),
            Err(Unread::OverBudget) => {
                Err(io::Error::other("responses being read exceed the budget"))
            }
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let body = self.encode_request(&req)?;
        write_frame(io, &body, max_request_frame(&self.limits)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let body = self.encode_response(&res)?;
        // Only the encoded copy is held while a slow reader drains it.
        drop(res);
        write_frame(io, &body, max_response_frame(&self.limits)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> Codec {
        Codec::new(
            Limits {
                max_message_size: 1000,
                max_directory_key: 16,
                max_directory_blob: 100,
                history_page_messages: 4,
                history_page_bytes: 2000,
            },
            Arc::default(),
            ReadBudget::with_cap(usize::MAX),
            ReadBudget::with_cap(usize::MAX),
        )
    }

    #[test]
    fn requests_round_trip() {
        let c = codec();
        let reqs = [
            Request::Put {
                key: b"k".to_vec(),
                blob: vec![7; 100],
            },
            Request::Get { key: vec![] },
            Request::History {
                topic: "t".into(),
                after: Cursor {
                    after_ms: 5,
                    after_id: Some(MessageId([3; 32])),
                },
                limit: 9,
            },
        ];
        for req in reqs {
            let body = c.encode_request(&req).unwrap();
            assert_eq!(c.decode_request(&body).unwrap(), req);
        }
    }

    #[test]
    fn responses_round_trip() {
        let c = codec();
        let entry = Entry {
            id: MessageId([1; 32]),
            received_ms: 42,
            data: vec![1, 2, 3],
        };
        let ress = [
            Response::Stored,
            Response::Found(vec![1]),
            Response::NotFound,
            Response::Page {
                entries: vec![entry.clone(), entry],
                more: true,
            },
            Response::Refused(Refusal::BadRequest),
            Response::Refused(Refusal::Internal),
            Response::Refused(Refusal::Busy),
            Response::Refused(Refusal::Rejected),
            Response::Refused(Refusal::OverQuota),
        ];
        for res in &ress {
            let body = c.encode_response(res).unwrap();
            let charged = response_len(res);
            assert!(charged == 0 || charged == body.len(), "{res:?}");
        }
        for res in ress {
            let body = c.encode_response(&res).unwrap();
            assert_eq!(c.decode_response(&body).unwrap(), res);
        }
    }

    #[test]
    fn malformed_input_is_rejected() {
        let c = codec();
        // Unknown tag, empty body, truncation, trailing bytes, oversized fields.
        assert!(c.decode_request(&[99]).is_err());
        assert!(c.decode_request(&[]).is_err());
        let good = c.encode_request(&Request::Get { key: vec![1, 2] }).unwrap();
        assert!(c.decode_request(&good[..good.len() - 1]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(c.decode_request(&trailing).is_err());
        let big_key = c
            .encode_request(&Request::Get { key: vec![0; 17] })
            .unwrap();
        assert!(c.decode_request(&big_key).is_err());
        // A length field claiming 4 GiB must fail without allocating it.
        assert!(
            c.decode_request(&[REQ_GET, 0xff, 0xff, 0xff, 0xff])
                .is_err()
        );
        // Too many history entries.
        let page = Response::Page {
            entries: vec![
                Entry {
                    id: MessageId([0; 32]),
                    received_ms: 0,
                    data: vec![],
                };
                5
            ],
            more: false,
        };
        let body = c.encode_response(&page).unwrap();
        assert!(c.decode_response(&body).is_err());
    }

    #[test]
    fn frames_over_the_limit_are_refused() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut futures::io::Cursor::new(&mut buf), &[1, 2, 3], 10)
                .await
                .unwrap();
            let budget = ReadBudget::with_cap(3);
            let read = async |max| {
                let mut rd = futures::io::Cursor::new(buf.clone());
                read_frame(&mut rd, max, &budget, <[u8]>::to_vec).await
            };
            assert!(matches!(read(10).await, Ok(v) if v == [1, 2, 3]));
            assert!(matches!(read(2).await, Err(Unread::Io(_))));
            // Over what is left of the budget: not read, counted, and given back after.
            let held = budget.try_reserve(1).unwrap();
            assert!(matches!(read(10).await, Err(Unread::OverBudget)));
            assert_eq!(budget.refused(), 1);
            drop(held);
            assert!(read(10).await.is_ok());
            assert_eq!(budget.held(), 0);
            let mut sink = Vec::new();
            assert!(
                write_frame(&mut futures::io::Cursor::new(&mut sink), &[0; 11], 10)
                    .await
                    .is_err()
            );
        });
    }
}
