//! Length-prefixed frames, as every Waku request-response protocol sends its protobufs (the
//! Nim node's `readLp`/`writeLp`, js-waku's `it-length-prefixed`): an unsigned-varint length,
//! then that many bytes. Every read is bounded: a length is checked against the caller's
//! maximum before anything is allocated.

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// A frame read by a service: the decoded message, or why there is none. A service answers
/// the last two with an error status (the Nim node answers an undecodable lightpush request
/// with 400 and request id `N/A`) instead of dropping the stream without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed<T> {
    /// A frame within the bound that decoded.
    Message(T),
    /// A frame within the bound that is not the protocol's protobuf.
    Malformed,
    /// A frame announced longer than the bound (but not longer than the drain limit); its
    /// bytes were read and thrown away. Holds the announced length.
    TooLarge(usize),
    /// Not read: as many requests as [`ReadSlots`] allows were being read already (or as
    /// many as the connection's share), or the frame did not fit what is left of a
    /// [`ReadBudget`] (or of the connection's share of it).
    Busy,
}

/// Takes `n` from what is left of `cap` in `counter`, if it fits.
fn take(counter: &AtomicU64, n: u64, cap: u64) -> Option<u64> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
            h.checked_add(n).filter(|t| *t <= cap)
        })
        .ok()
}

/// One connection's part of a bound that every connection shares (a [`ReadSlots`] or a
/// [`ReadBudget`]), so that one peer cannot take all of it with streams it opens and
/// then stalls in (DESIGN "Over Waku", flood finding 5). A peer holds at most its
/// connections' shares, and its connections are bounded (`Limits::max_connections_per_
/// peer`, and per address).
///
/// The codec of libp2p's request-response is where a read can be refused before its bytes
/// arrive, and it does not know the connection. But request-response clones the
/// behaviour's codec once for each new connection (`handle_established_inbound_
/// connection` and `..._outbound_...`), and that connection's codec once for each
/// stream (`on_fully_negotiated_inbound` and `..._outbound`; libp2p-request-response 0.30,
/// `lib.rs` and `handler.rs`). So a share not yet bound to a connection (the behaviour's)
/// gives each clone a counter of its own, and a bound share (a connection's) shares its
/// counter with its clones, the streams of that connection. The tests in
/// `tests/waku_read_shares.rs` fail if libp2p stops cloning so.
#[derive(Debug)]
pub struct ConnectionShare {
    cap: u64,
    held: Arc<AtomicU64>,
    bound: bool,
}

impl Clone for ConnectionShare {
    fn clone(&self) -> Self {
        Self {
            cap: self.cap,
            held: if self.bound {
                self.held.clone()
            } else {
                Arc::default()
            },
            bound: true,
        }
    }
}

impl ConnectionShare {
    fn new(cap: usize) -> Self {
        Self {
            cap: u64::try_from(cap).unwrap_or(u64::MAX),
            held: Arc::default(),
            bound: false,
        }
    }

    /// Takes `n` of the share if it fits: the counter to give it back to.
    fn take(&self, n: u64) -> Option<Arc<AtomicU64>> {
        take(&self.held, n, self.cap).map(|_| self.held.clone())
    }
}

/// A bound on the requests of one protocol being read at once, over all connections and
/// peers (request-response bounds streams per connection only), and optionally per
/// connection ([`ReadSlots::per_connection`]). A read holds a slot from its first byte to
/// its last, which is when a request holds up to a frame of memory and where a slow
/// sender can keep it; a request that finds every slot taken, or its connection's share
/// taken, is answered "busy" without being read. The count is shared with the node's
/// counters, and so is a count of reads that never finished (an I/O error, a frame too
/// long, the stream timeout): libp2p does not report those.
#[derive(Debug, Clone)]
pub struct ReadSlots {
    reading: Arc<AtomicU64>,
    unreadable: Arc<AtomicU64>,
    max: u64,
    connection: Option<ConnectionShare>,
}

/// A taken slot, given back when dropped; a slot dropped before [`Slot::finish`] counts
/// as an unreadable request.
#[derive(Debug)]
pub struct Slot {
    reading: Arc<AtomicU64>,
    connection: Option<Arc<AtomicU64>>,
    unreadable: Arc<AtomicU64>,
    finished: bool,
}

impl Slot {
    /// Marks the read as complete (whatever the bytes were).
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.reading.fetch_sub(1, Ordering::AcqRel);
        if let Some(c) = &self.connection {
            c.fetch_sub(1, Ordering::AcqRel);
        }
        if !self.finished {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ReadSlots {
    /// At most `max` reads at once, counted in `reading`; reads that never finish are
    /// counted in `unreadable`.
    pub fn new(reading: Arc<AtomicU64>, unreadable: Arc<AtomicU64>, max: usize) -> Self {
        Self {
            reading,
            unreadable,
            max: u64::try_from(max).unwrap_or(u64::MAX),
            connection: None,
        }
    }

    /// At most `max` of the reads from one connection ([`ConnectionShare`]: the slots must
    /// be a request-response behaviour's codec's, not yet cloned).
    #[must_use]
    pub fn per_connection(mut self, max: usize) -> Self {
        self.connection = Some(ConnectionShare::new(max));
        self
    }

    /// Takes a slot if one is free, and one of the connection's if it has a share.
    pub fn try_take(&self) -> Option<Slot> {
        let connection = match &self.connection {
            Some(share) => Some(share.take(1)?),
            None => None,
        };
        if take(&self.reading, 1, self.max).is_none() {
            if let Some(c) = connection {
                c.fetch_sub(1, Ordering::AcqRel);
            }
            return None;
        }
        Some(Slot {
            reading: self.reading.clone(),
            connection,
            unreadable: self.unreadable.clone(),
            finished: false,
        })
    }

    /// Reads being made now.
    pub fn reading(&self) -> u64 {
        self.reading.load(Ordering::Acquire)
    }

    /// Reads that never finished so far.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }
}

/// A budget of bytes for the frames of one protocol being read at once, over all
/// connections and peers (request-response bounds streams per connection only, so without
/// it many peers each sending a frame of the protocol's largest size make the node hold
/// that size times their number), and optionally per connection
/// ([`ReadBudget::per_connection`]). A read reserves the length a frame announces, after
/// its length prefix and before anything is allocated, and gives it back when the
/// reservation is dropped (after decoding, or when the read fails or is abandoned); a
/// frame that does not fit what is left (of the budget or of its connection's share) is
/// not read. The bytes held now and the most ever held are shared with the node's
/// counters, and so is a count of frames refused.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    held: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    cap: u64,
    connection: Option<ConnectionShare>,
}

/// Bytes reserved in a [`ReadBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    held: Arc<AtomicU64>,
    connection: Option<Arc<AtomicU64>>,
    bytes: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
        if let Some(c) = &self.connection {
            c.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

impl ReadBudget {
    /// At most `cap` bytes at once, counted in `held` (and its highest value in `peak`);
    /// refused frames are counted in `refused`.
    pub fn new(
        cap: usize,
        held: Arc<AtomicU64>,
        peak: Arc<AtomicU64>,
        refused: Arc<AtomicU64>,
    ) -> Self {
        Self {
            held,
            peak,
            refused,
            cap: u64::try_from(cap).unwrap_or(u64::MAX),
            connection: None,
        }
    }

    /// A budget of `cap` bytes with counters of its own.
    pub fn with_cap(cap: usize) -> Self {
        Self::new(
            cap,
            Default::default(),
            Default::default(),
            Default::default(),
        )
    }

    /// At most `cap` of the bytes for the frames of one connection ([`ConnectionShare`]:
    /// the budget must be a request-response behaviour's codec's, not yet cloned).
    #[must_use]
    pub fn per_connection(mut self, cap: usize) -> Self {
        self.connection = Some(ConnectionShare::new(cap));
        self
    }

    /// Reserves `bytes` if they fit what is left, of the budget and of the connection's
    /// share; counts a refusal otherwise.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reserved> {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let connection = match &self.connection {
            Some(share) => match share.take(bytes) {
                Some(c) => Some(c),
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            },
            None => None,
        };
        let Some(before) = take(&self.held, bytes, self.cap) else {
            if let Some(c) = connection {
                c.fetch_sub(bytes, Ordering::AcqRel);
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.peak
            .fetch_max(before.saturating_add(bytes), Ordering::AcqRel);
        Some(Reserved {
            held: self.held.clone(),
            connection,
            bytes,
        })
    }

    /// Bytes reserved now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }

    /// Frames refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

pub(crate) fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads an unsigned-varint length prefix of at most five bytes (up to 2^35 - 1).
async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<u64> {
    let mut b = [0u8; 1];
    io.read_exact(&mut b).await?;
    read_len_after(io, b[0]).await
}

/// Reads the rest of a length prefix whose first byte, `first`, was read already.
async fn read_len_after<T: AsyncRead + Unpin + Send>(io: &mut T, first: u8) -> io::Result<u64> {
    let mut len = u64::from(first & 0x7f);
    if first & 0x80 == 0 {
        return Ok(len);
    }
    for i in 1..5 {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(len);
        }
    }
    Err(invalid("frame length prefix too long"))
}

/// Waits for the first byte of the next frame on a stream that carries several: `None` if
/// the stream ends cleanly instead (the sender closed it between frames).
///
/// # Errors
///
/// The I/O error.
pub async fn read_frame_start<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    loop {
        match io.read(&mut b).await {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads the rest of a frame of at most `max` bytes whose first byte, `first`, came from
/// [`read_frame_start`].
///
/// # Errors
///
/// As for [`read_frame`]; a stream that ends inside the frame is `UnexpectedEof`.
pub async fn read_frame_after<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    first: u8,
    max: usize,
) -> io::Result<Vec<u8>> {
    let len = read_len_after(io, first).await?;
    let len = usize::try_from(len).map_err(|_| invalid("frame too large"))?;
    if len > max {
        return Err(invalid("frame too large"));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads one frame of at most `max` bytes.
///
/// # Errors
///
/// The I/O error, or `InvalidData` for a length above `max`, which is refused before
/// anything is read or allocated.
pub async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let len = usize::try_from(read_len(io).await?).map_err(|_| invalid("frame too large"))?;
    if len > max {
        return Err(invalid("frame too large"));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads one frame of at most `max` bytes inside `budget`: the announced length is
/// reserved before the body is allocated, and the reservation is returned with the body so
/// the caller holds it while decoding. `Ok(None)` if the length does not fit what is left
/// of the budget; only the length prefix was read then.
///
/// # Errors
///
/// As for [`read_frame`].
pub async fn read_budgeted_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    budget: &ReadBudget,
) -> io::Result<Option<(Vec<u8>, Reserved)>> {
    let len = usize::try_from(read_len(io).await?).map_err(|_| invalid("frame too large"))?;
    if len > max {
        return Err(invalid("frame too large"));
    }
    let Some(reserved) = budget.try_reserve(len) else {
        return Ok(None);
    };
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(Some((body, reserved)))
}

/// Reads one frame for a service: at most `max` bytes are kept and decoded with `decode`; a
/// frame announced longer, up to `drain`, is read in small pieces and discarded so the
/// service can still answer ([`Framed::TooLarge`]). Memory stays bounded by `max` either way.
///
/// # Errors
///
/// The I/O error, or `InvalidData` for an announced length above `drain`, refused before it
/// is read.
pub async fn read_service_frame<T, M>(
    io: &mut T,
    max: usize,
    drain: usize,
    decode: impl FnOnce(&[u8]) -> Option<M>,
) -> io::Result<Framed<M>>
where
    T: AsyncRead + Unpin + Send,
{
    let len = usize::try_from(read_len(io).await?).map_err(|_| invalid("frame too large"))?;
    if len > drain.max(max) {
        return Err(invalid("frame too large"));
    }
    if len > max {
        let mut left = len;
        let mut chunk = [0u8; 4096];
        while left > 0 {
            let n = left.min(chunk.len());
            io.read_exact(&mut chunk[..n]).await?;
            left -= n;
        }
        return Ok(Framed::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(decode(&body).map_or(Framed::Malformed, Framed::Message))
}

/// Writes `body` as one frame and flushes.
///
/// # Errors
///
/// The I/O error.
pub async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    let mut framed = Vec::with_capacity(body.len() + 5);
    prost::encoding::encode_varint(body.len() as u64, &mut framed);
    framed.extend_from_slice(body);
    io.write_all(&framed).await?;
    io.flush().await
}

/// The request-response codec of a protocol that sends one length-prefixed protobuf each
/// way, `Req` one way and `Res` back. Every read is bounded by one frame length per
/// direction, checked before anything is allocated, and optionally by a shared
/// [`ReadBudget`] per direction, reserved before anything is allocated too:
/// - a request is [`Framed::Message`], or [`Framed::Malformed`] if its frame is not a
///   `Req`, or [`Framed::Busy`] if it did not fit the request budget (its body is not
///   read); a frame announced longer than the bound, a truncated frame or an I/O error is
///   an error (the stream is closed). Malformed and unreadable requests are counted.
/// - a response is a `Res`; anything else (too long, not a `Res`, over the response
///   budget) is an error.
///
/// Only [`Framed::Message`] requests can be written.
pub struct ProtoCodec<Req, Res> {
    max_request: usize,
    max_response: usize,
    requests: Option<ReadBudget>,
    responses: Option<ReadBudget>,
    unreadable: Arc<AtomicU64>,
    what: &'static str,
    messages: PhantomData<fn() -> (Req, Res)>,
}

impl<Req, Res> Clone for ProtoCodec<Req, Res> {
    fn clone(&self) -> Self {
        Self {
            max_request: self.max_request,
            max_response: self.max_response,
            requests: self.requests.clone(),
            responses: self.responses.clone(),
            unreadable: self.unreadable.clone(),
            what: self.what,
            messages: PhantomData,
        }
    }
}

impl<Req, Res> std::fmt::Debug for ProtoCodec<Req, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtoCodec")
            .field("what", &self.what)
            .field("max_request", &self.max_request)
            .field("max_response", &self.max_response)
            .finish_non_exhaustive()
    }
}

impl<Req, Res> ProtoCodec<Req, Res> {
    /// A codec of the protocol `what` (named in errors) reading requests of at most
    /// `max_request` bytes and responses of at most `max_response`, with no budgets.
    pub fn new(what: &'static str, max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
            requests: None,
            responses: None,
            unreadable: Arc::default(),
            what,
            messages: PhantomData,
        }
    }

    /// Reads requests within `budget`.
    #[must_use]
    pub fn with_request_budget(mut self, budget: ReadBudget) -> Self {
        self.requests = Some(budget);
        self
    }

    /// Reads responses within `budget`.
    #[must_use]
    pub fn with_response_budget(mut self, budget: ReadBudget) -> Self {
        self.responses = Some(budget);
        self
    }

    /// Counts malformed and unreadable requests in `counter`.
    #[must_use]
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.unreadable = counter;
        self
    }

    /// Malformed and unreadable requests so far.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }
}

/// One frame of at most `max` bytes, within `budget` if there is one; `None` if it did not
/// fit the budget. The reservation is held until the frame is decoded.
async fn read_bounded<T, M>(
    io: &mut T,
    max: usize,
    budget: Option<&ReadBudget>,
    decode: impl FnOnce(&[u8]) -> M,
) -> io::Result<Option<M>>
where
    T: AsyncRead + Unpin + Send,
{
    match budget {
        Some(budget) => Ok(read_budgeted_frame(io, max, budget)
            .await?
            .map(|(body, _held)| decode(&body))),
        None => Ok(Some(decode(&read_frame(io, max).await?))),
    }
}

impl<Req, Res> libp2p::request_response::Codec for ProtoCodec<Req, Res>
where
    Req: prost::Message + Default + Send + 'static,
    Res: prost::Message + Default + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Framed<Req>;
    type Response = Res;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Framed<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let read = read_bounded(io, self.max_request, self.requests.as_ref(), |b| {
            Req::decode(b).map_or(Framed::Malformed, Framed::Message)
        })
        .await;
        match read {
            Ok(Some(Framed::Message(m))) => Ok(Framed::Message(m)),
            Ok(Some(_)) => {
                self.unreadable.fetch_add(1, Ordering::Relaxed);
                Ok(Framed::Malformed)
            }
            Ok(None) => Ok(Framed::Busy),
            Err(e) => {
                self.unreadable.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Res>
    where
        T: AsyncRead + Unpin + Send,
    {
        let what = self.what;
        read_bounded(io, self.max_response, self.responses.as_ref(), |b| {
            Res::decode(b).ok()
        })
        .await?
        .ok_or_else(|| io::Error::other(format!("{what} responses being read exceed the budget")))?
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed {what} response"),
            )
        })
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Framed<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Framed::Message(r) => write_frame(io, &r.encode_to_vec()).await,
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only a request can be sent",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Res,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode_to_vec()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn frames_round_trip_and_lengths_are_bounded() {
        let mut buf = Vec::new();
        run(write_frame(&mut buf, b"hello")).unwrap();
        assert_eq!(buf, b"\x05hello");
        let mut r = futures::io::Cursor::new(buf.clone());
        assert_eq!(run(read_frame(&mut r, 5)).unwrap(), b"hello");
        let mut r = futures::io::Cursor::new(buf);
        assert!(run(read_frame(&mut r, 4)).is_err(), "over the bound");
        // Six continuation bytes: refused before any body is read.
        let mut r = futures::io::Cursor::new(vec![0xff; 6]);
        assert!(run(read_frame(&mut r, usize::MAX)).is_err());
        let mut r = futures::io::Cursor::new(vec![3, 1]);
        assert!(run(read_frame(&mut r, 5)).is_err(), "truncated");
    }

    #[test]
    fn frames_are_read_one_after_another_until_the_stream_ends() {
        let mut buf = Vec::new();
        run(write_frame(&mut buf, b"one")).unwrap();
        run(write_frame(&mut buf, &[7; 200])).unwrap();
        let next = |r: &mut futures::io::Cursor<Vec<u8>>, max| {
            run(async {
                match read_frame_start(r).await? {
                    Some(first) => read_frame_after(r, first, max).await.map(Some),
                    None => Ok(None),
                }
            })
        };
        let mut r = futures::io::Cursor::new(buf.clone());
        assert_eq!(next(&mut r, 300).unwrap().unwrap(), b"one");
        assert_eq!(next(&mut r, 300).unwrap().unwrap(), vec![7; 200]);
        assert_eq!(next(&mut r, 300).unwrap(), None, "a clean end");
        let mut r = futures::io::Cursor::new(buf[..6].to_vec());
        next(&mut r, 300).unwrap();
        assert!(next(&mut r, 300).is_err(), "ends inside a frame");
        let mut r = futures::io::Cursor::new(buf.clone());
        next(&mut r, 300).unwrap();
        assert!(next(&mut r, 100).is_err(), "over the bound");
        let mut r = futures::io::Cursor::new(vec![0xff; 6]);
        assert!(next(&mut r, usize::MAX).is_err(), "a prefix too long");
    }

    #[test]
    fn read_slots_are_bounded_given_back_and_count_unfinished_reads() {
        let slots = ReadSlots::new(Default::default(), Default::default(), 2);
        let a = slots.try_take().unwrap();
        let b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        assert_eq!(slots.reading(), 2);
        a.finish();
        let c = slots.try_take().unwrap();
        b.finish();
        drop(c);
        assert_eq!((slots.reading(), slots.unreadable()), (0, 1));
    }

    #[test]
    fn a_read_budget_is_shared_given_back_and_keeps_its_peak() {
        let budget = ReadBudget::with_cap(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(41).is_none(), "over what is left");
        let b = budget.clone().try_reserve(40).unwrap();
        assert_eq!(
            (budget.held(), budget.peak(), budget.refused()),
            (100, 100, 1)
        );
        drop(a);
        assert!(budget.try_reserve(usize::MAX).is_none());
        drop(b);
        assert_eq!(
            (budget.held(), budget.peak(), budget.refused()),
            (0, 100, 2)
        );
    }

    #[test]
    fn each_connection_reserves_within_its_share_and_the_budget() {
        // The behaviour's budget; request-response clones it once per connection, and a
        // connection's once per stream.
        let budget = ReadBudget::with_cap(100).per_connection(40);
        let (one, two) = (budget.clone(), budget.clone());
        let one_stream = one.clone();
        let a = one.try_reserve(30).unwrap();
        assert!(
            one_stream.try_reserve(11).is_none(),
            "a stream of connection one: over its share"
        );
        let b = one_stream.try_reserve(10).unwrap();
        let c = two.try_reserve(40).unwrap();
        assert_eq!((budget.held(), budget.refused()), (80, 1));
        // Connection three fits its share but not what is left of the budget: refused,
        // and its share is given back (it can reserve once the budget has room).
        let three = budget.clone();
        assert!(three.try_reserve(25).is_none());
        drop(c);
        let d = three.try_reserve(40).unwrap();
        assert_eq!(
            (budget.held(), budget.peak(), budget.refused()),
            (80, 80, 2)
        );
        // Dropping a reservation gives back both the budget and the share.
        drop(a);
        let e = one.try_reserve(30).unwrap();
        drop((b, d, e));
        assert_eq!(budget.held(), 0);
        assert!(one.try_reserve(40).is_some() && two.try_reserve(40).is_some());
    }

    #[test]
    fn each_connection_takes_read_slots_within_its_share() {
        let slots = ReadSlots::new(Arc::default(), Arc::default(), 3).per_connection(2);
        let (one, two) = (slots.clone(), slots.clone());
        let taken: Vec<_> = (0..2).map(|_| one.clone().try_take().unwrap()).collect();
        assert!(one.try_take().is_none(), "connection one's share is taken");
        let t = two.try_take().unwrap();
        assert!(
            two.try_take().is_none(),
            "the slots are taken; connection two's share is not"
        );
        drop(t);
        assert_eq!(slots.reading(), 2);
        let t = two.try_take().unwrap();
        drop(taken);
        assert!(one.try_take().is_some());
        drop(t);
        assert_eq!(slots.reading(), 0);
        // Without a share, one connection may take every slot.
        let all = ReadSlots::new(Arc::default(), Arc::default(), 3).clone();
        let held: Vec<_> = (0..3).map(|_| all.try_take().unwrap()).collect();
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn a_budgeted_frame_is_refused_before_its_body_is_read() {
        let budget = ReadBudget::with_cap(150);
        let mut buf = Vec::new();
        run(write_frame(&mut buf, &[1; 100])).unwrap();
        let mut r = futures::io::Cursor::new(buf.clone());
        let (body, held) = run(read_budgeted_frame(&mut r, 200, &budget))
            .unwrap()
            .unwrap();
        assert_eq!((body.len(), budget.held()), (100, 100));
        let mut r2 = futures::io::Cursor::new(buf.clone());
        assert!(
            run(read_budgeted_frame(&mut r2, 200, &budget))
                .unwrap()
                .is_none()
        );
        assert_eq!(r2.position(), 1, "only the length prefix was read");
        drop(held);
        let mut r3 = futures::io::Cursor::new(buf.clone());
        assert!(
            run(read_budgeted_frame(&mut r3, 200, &budget))
                .unwrap()
                .is_some()
        );
        assert_eq!(budget.held(), 0, "dropped with the body");
        let mut r4 = futures::io::Cursor::new(buf);
        assert!(
            run(read_budgeted_frame(&mut r4, 99, &budget)).is_err(),
            "over max"
        );
        // A truncated body gives its reservation back.
        let mut r5 = futures::io::Cursor::new(vec![100, 1, 2]);
        assert!(run(read_budgeted_frame(&mut r5, 200, &budget)).is_err());
        assert_eq!((budget.held(), budget.peak()), (0, 100));
    }

    #[test]
    fn a_service_frame_over_the_bound_is_drained_up_to_the_drain_limit() {
        let decode = |b: &[u8]| (b != b"bad").then(|| b.to_vec());
        let mut framed = Vec::new();
        run(write_frame(&mut framed, &[7; 10_000])).unwrap();
        framed.extend_from_slice(b"\x02ok");
        let mut r = futures::io::Cursor::new(framed);
        assert_eq!(
            run(read_service_frame(&mut r, 100, 20_000, decode)).unwrap(),
            Framed::TooLarge(10_000)
        );
        // The stream is positioned after the drained frame.
        assert_eq!(
            run(read_service_frame(&mut r, 100, 20_000, decode)).unwrap(),
            Framed::Message(b"ok".to_vec())
        );
        let mut r = futures::io::Cursor::new(b"\x03bad".to_vec());
        assert_eq!(
            run(read_service_frame(&mut r, 100, 20_000, decode)).unwrap(),
            Framed::Malformed
        );
        let mut over = Vec::new();
        prost::encoding::encode_varint(20_001, &mut over);
        let mut r = futures::io::Cursor::new(over);
        assert!(run(read_service_frame(&mut r, 100, 20_000, decode)).is_err());
    }
}
