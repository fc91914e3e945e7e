//! The chunk-transfer protocol `/cinemesh/xfer/5.0.0`: request-response over a libp2p stream per request.
//!
//! Every message is a big-endian `u32` length followed by that many bytes of bincode (fixed-int,
//! little-endian as bincode 1 does by default). Lengths are checked before anything is allocated: requests
//! are at most [`MAX_REQUEST_BYTES`], responses at most [`MAX_RESPONSE_BYTES`] (the largest chunk or
//! manifest plus framing). Requests to the same peer run concurrently on separate streams, which is how
//! chunk requests are pipelined.
//!
//! | request | response | purpose |
//! |---|---|---|
//! | `Hello(info)` | `Hello(info)` | exchange role, name, ISP and site once per connection |
//! | `Manifest{content}` | `Manifest(bytes)` / `Missing` | fetch a manifest; the asker checks BLAKE3(bytes) = content id |
//! | `Bitfield{content}` | `Bitfield{..}` / `Missing` | which chunks the peer holds; also subscribes the asker to have-updates |
//! | `Chunk{content, index, rate}` | `Chunk{bytes, load}` / `Busy{load}` / `Missing{load}` / `Cancelled` | one chunk; the asker verifies its hash; every answer carries the uploader's load |
//! | `Have{content, chunks}` | `Ack` | batched have-updates pushed to interested peers |
//! | `Cancel{content, index}` | `Ack` | the asker no longer wants that chunk: the uploader frees its slot |
//! | `Sync{heads}` | `Entries(..)` | catalogue anti-entropy: entries after the asker's heads |
//!
//! Version 2 added `Cancel`, the load on `Chunk` and `Missing`, and `Cancelled`; version 3 added `held` to
//! `Chunk` (the asker's progress); version 4 (this one) replaced it with `rate`, the asker's highest receive
//! rate (`transfer.open_slots`). A peer of an older version does not negotiate it: upgrade the whole mesh
//! together (the catalogue and the DHT still work across versions).
//!
//! Any request may be answered `Refused{reason}` (e.g. a private mesh and a non-admitted peer).
//!
//! An uploader never holds a whole chunk: it answers [`Response::ChunkFrom`], which the codec writes as the
//! frame of `Chunk{bytes, load}` with the bytes read from the file [`PIECE`] at a time; an asker reads a
//! `Chunk` answer's bytes straight into their buffer.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::ContentId;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/cinemesh/xfer/5.0.0");

/// Largest request on the wire.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Largest response on the wire: a 64 MiB chunk or manifest plus framing.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024 + 64 * 1024;
/// Most chunk indices in one `Have`.
pub const MAX_HAVE_CHUNKS: usize = 8192;
/// Most distributor heads in one `Sync`.
pub const MAX_SYNC_HEADS: usize = 64;
/// Most catalogue entries in one `Entries` answer (the asker asks again for more).
pub const MAX_SYNC_ENTRIES: usize = 256;
/// Longest free-text field (names, ISP, site, reasons).
pub const MAX_TEXT: usize = 128;

/// What a node says about itself when a connection opens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `cinema`, `superseeder` or `distributor`.
    pub role: String,
    /// Human name.
    pub name: Option<String>,
    /// Self-declared ISP.
    pub isp: Option<String>,
    /// Self-declared site.
    pub site: Option<String>,
    /// Software version.
    pub version: String,
    /// The download rate of its line, bytes/s, when its operator declares it (`transfer.downlink`). Peers
    /// compare it with the others' (`cinemesh_core::engine::ALIKE_LINES`): where every cinema's line is
    /// alike, uploaders serve all askers alike. A false value can only turn that off for this node's
    /// peers (they then rank askers by rate, as where lines differ) or, declared alike, get the share
    /// every alike cinema gets.
    pub downlink: Option<u64>,
}

impl NodeInfo {
    fn check(&self) -> Result<(), &'static str> {
        let long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > MAX_TEXT);
        if self.role.len() > MAX_TEXT || self.version.len() > MAX_TEXT {
            return Err("hello: role or version too long");
        }
        if long(&self.name) || long(&self.isp) || long(&self.site) {
            return Err("hello: name, isp or site longer than 128 bytes");
        }
        Ok(())
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Introduce ourselves.
    Hello(NodeInfo),
    /// Send me this content's manifest.
    Manifest {
        /// The content.
        content: ContentId,
    },
    /// Which chunks of this content do you hold?
    Bitfield {
        /// The content.
        content: ContentId,
    },
    /// Send me this chunk.
    Chunk {
        /// The content.
        content: ContentId,
        /// The chunk index.
        index: u32,
        /// The asker's highest receive rate so far, bytes/s, raised while it is refused (a busy uploader
        /// serves the fastest first; `cinemesh_core::engine::MAX_RATE_BOOST`).
        rate: u32,
    },
    /// I now hold these chunks too.
    Have {
        /// The content.
        content: ContentId,
        /// Chunk indices, at most [`MAX_HAVE_CHUNKS`].
        chunks: Vec<u32>,
    },
    /// I no longer want this chunk (another peer served it first).
    Cancel {
        /// The content.
        content: ContentId,
        /// The chunk index.
        index: u32,
    },
    /// Send me catalogue entries after these heads (distributor key, highest seq I hold).
    Sync {
        /// At most [`MAX_SYNC_HEADS`].
        heads: Vec<([u8; 32], u64)>,
    },
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Our introduction.
    Hello(NodeInfo),
    /// A manifest's canonical bytes.
    Manifest(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The chunks we hold, packed as `core::Bitfield::to_bytes`.
    Bitfield {
        /// Number of chunks.
        chunks: u32,
        /// Packed bits.
        #[serde(with = "serde_bytes")]
        bits: Vec<u8>,
    },
    /// A chunk's bytes, and the uploader's load.
    Chunk {
        /// The bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// Active uploads / slots.
        load: f32,
    },
    /// All upload slots are taken; our load (>= 1.0 saturated).
    Busy {
        /// Active uploads / slots.
        load: f32,
    },
    /// We do not hold that; our load.
    Missing {
        /// Active uploads / slots.
        load: f32,
    },
    /// You cancelled this chunk request before its bytes went out.
    Cancelled,
    /// Noted.
    Ack,
    /// Encoded signed catalogue entries, at most [`MAX_SYNC_ENTRIES`].
    Entries(Vec<Vec<u8>>),
    /// We will not answer you.
    Refused {
        /// Why.
        reason: String,
    },
    /// The uploader's side of [`Response::Chunk`]: the bytes stream from the file as they are written, so
    /// an upload holds [`PIECE`] bytes at a time, not the whole chunk. On the wire it is exactly
    /// `Chunk{bytes, load}`; it is never decoded (an asker reads `Chunk`).
    #[serde(skip)]
    ChunkFrom {
        /// Where the bytes are.
        source: ChunkSource,
        /// Active uploads / slots.
        load: f32,
    },
}

/// Bytes read from the file and written at a time when a chunk answer streams from disk.
pub const PIECE: usize = 256 * 1024;

/// bincode's variant index of [`Response::Chunk`] (checked by a test against bincode itself).
const CHUNK_TAG: u32 = 3;

/// A held chunk, opened for an upload (see [`Response::ChunkFrom`]).
#[derive(Debug, Clone)]
pub struct ChunkSource {
    /// The file holding the chunk, already open.
    pub file: std::sync::Arc<std::fs::File>,
    /// The chunk's offset in it.
    pub offset: u64,
    /// The chunk's length.
    pub len: u64,
    /// Flip the first byte on the way out (the `corrupt-uploads` fault of the tests).
    pub corrupt: bool,
    /// The node's upload pace, which the bytes keep to (none: as fast as the connection takes them).
    pub pace: Option<std::sync::Arc<UploadPace>>,
}

/// The bytes of a paced answer go out in pieces of this much of the pace's time (between
/// [`MIN_PACED_PIECE`] and [`PIECE`]), so a slow line's queue holds a piece or two, not a chunk.
pub const PACED_PIECE_TIME: std::time::Duration = std::time::Duration::from_millis(10);

/// The smallest piece a paced answer is written in.
pub const MIN_PACED_PIECE: usize = 1024;

/// The body's side of the engine's upload pace ([`Engine::upload_pace`](crate::core::engine::Engine::upload_pace)):
/// every chunk answer's bytes leave at that rate, shared by all answers in progress, in pieces of
/// [`PACED_PIECE_TIME`]. The engine decides the rate and grants whole answers by it; this only spreads
/// each answer's bytes evenly, where the connection would send them as fast as the line takes them and
/// fill the line's queue. Bounded: one rate and one instant.
#[derive(Debug, Default)]
pub struct UploadPace {
    /// Bytes/s as `f64` bits; 0 = not paced.
    rate: std::sync::atomic::AtomicU64,
    /// When the next piece may go.
    next: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl UploadPace {
    /// Sets the pace (none or not positive: not paced).
    pub fn set(&self, rate: Option<f64>) {
        let bits = rate.filter(|r| *r > 0.0 && r.is_finite()).map_or(0, f64::to_bits);
        self.rate.store(bits, std::sync::atomic::Ordering::Relaxed);
    }

    /// The pace in force, bytes/s.
    pub fn rate(&self) -> Option<f64> {
        let bits = self.rate.load(std::sync::atomic::Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// The piece to write next at `rate`.
    fn piece(rate: f64) -> usize {
        ((rate * PACED_PIECE_TIME.as_secs_f64()) as usize).clamp(MIN_PACED_PIECE, PIECE)
    }

    /// Waits until `n` bytes may go at the pace, and books their time.
    async fn take(&self, n: usize) {
        let Some(rate) = self.rate() else { return };
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            let at = next.map_or(now, |t| t.max(now));
            *next = Some(at + std::time::Duration::from_secs_f64(n as f64 / rate));
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

impl PartialEq for ChunkSource {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.file, &other.file)
            && (self.offset, self.len, self.corrupt) == (other.offset, other.len, other.corrupt)
    }
}

impl Request {
    /// Checks the bounds that bincode's size limit does not.
    pub fn check(&self) -> Result<(), &'static str> {
        match self {
            Request::Hello(info) => info.check(),
            Request::Have { chunks, .. } if chunks.len() > MAX_HAVE_CHUNKS => Err("have: too many chunks"),
            Request::Sync { heads } if heads.len() > MAX_SYNC_HEADS => Err("sync: too many heads"),
            _ => Ok(()),
        }
    }
}

impl Response {
    /// Checks the bounds that bincode's size limit does not.
    pub fn check(&self) -> Result<(), &'static str> {
        match self {
            Response::Hello(info) => info.check(),
            Response::Entries(e) if e.len() > MAX_SYNC_ENTRIES => Err("entries: too many"),
            Response::Refused { reason } if reason.len() > 4 * MAX_TEXT => Err("refused: reason too long"),
            _ => Ok(()),
        }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Encodes `msg` as a length-prefixed frame; fails if it exceeds `max`.
pub fn encode_frame<M: Serialize>(msg: &M, max: usize) -> io::Result<Vec<u8>> {
    let body = bincode::serialize(msg).map_err(|e| invalid(format!("encode: {e}")))?;
    if body.len() > max {
        return Err(invalid(format!("message of {} bytes exceeds the limit of {max}", body.len())));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame body (without the length prefix), bounded by `max`.
pub fn decode_body<M: DeserializeOwned>(body: &[u8], max: usize) -> io::Result<M> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(max as u64)
        .deserialize(body)
        .map_err(|e| invalid(format!("malformed message: {e}")))
}

/// Reads a frame's length prefix and checks it against `max` before anything is allocated.
async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(invalid(format!("message of {len} bytes exceeds the limit of {max}")));
    }
    Ok(len)
}

async fn read_frame<T: AsyncRead + Unpin + Send, M: DeserializeOwned>(
    io: &mut T,
    max: usize,
) -> io::Result<M> {
    let len = read_len(io, max).await?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    decode_body(&body, max)
}

/// Reads a response frame. A `Chunk` answer's bytes are read straight into their own buffer (the frame is
/// not buffered whole and then copied by the decoder); any other answer is decoded as [`read_frame`] does.
async fn read_response_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Response> {
    let len = read_len(io, max).await?;
    let mut head = [0u8; 12];
    let head_len = len.min(head.len());
    io.read_exact(&mut head[..head_len]).await?;
    let tag = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if head_len == head.len() && tag == CHUNK_TAG {
        let n = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        if n.checked_add(16) != Some(len as u64) {
            return Err(invalid(format!("malformed message: a chunk of {n} bytes in a frame of {len}")));
        }
        let mut bytes = vec![0u8; n as usize];
        io.read_exact(&mut bytes).await?;
        let mut load = [0u8; 4];
        io.read_exact(&mut load).await?;
        return Ok(Response::Chunk { bytes, load: f32::from_le_bytes(load) });
    }
    let mut body = vec![0u8; len];
    body[..head_len].copy_from_slice(&head[..head_len]);
    io.read_exact(&mut body[head_len..]).await?;
    decode_body(&body, max)
}

async fn write_frame<T: AsyncWrite + Unpin + Send, M: Serialize>(
    io: &mut T,
    msg: &M,
    max: usize,
) -> io::Result<()> {
    let frame = encode_frame(msg, max)?;
    io.write_all(&frame).await?;
    io.flush().await?;
    io.close().await
}

/// Reads `n` bytes at `offset` of `file` into the front of `buf`, on the blocking pool when there is a
/// tokio runtime (a page-cache miss must not stall the connection tasks).
async fn read_piece(
    file: std::sync::Arc<std::fs::File>,
    mut buf: Vec<u8>,
    n: usize,
    offset: u64,
) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let read = move || file.read_exact_at(&mut buf[..n], offset).map(|()| buf);
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt.spawn_blocking(read).await.map_err(io::Error::other)?,
        Err(_) => read(),
    }
}

/// Writes `Chunk{bytes, load}` with the bytes streamed from `source`, [`PIECE`] at a time: the same frame
/// as [`encode_frame`] of the bytes in memory.
async fn write_chunk_from<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    source: ChunkSource,
    load: f32,
    max: usize,
) -> io::Result<()> {
    let body = 4 + 8 + source.len + 4;
    if body > max as u64 {
        return Err(invalid(format!("message of {body} bytes exceeds the limit of {max}")));
    }
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(&(body as u32).to_be_bytes());
    head[4..8].copy_from_slice(&CHUNK_TAG.to_le_bytes());
    head[8..].copy_from_slice(&source.len.to_le_bytes());
    io.write_all(&head).await?;
    let mut buf = vec![0u8; PIECE.min(source.len as usize)];
    let mut done = 0u64;
    while done < source.len {
        let rate = source.pace.as_ref().and_then(|p| p.rate());
        let piece = rate.map_or(PIECE, UploadPace::piece);
        let n = (source.len - done).min(piece as u64) as usize;
        buf = read_piece(source.file.clone(), buf, n, source.offset + done).await?;
        if source.corrupt && done == 0 {
            buf[0] ^= 0xff;
        }
        if let Some(pace) = &source.pace {
            pace.take(n).await;
        }
        io.write_all(&buf[..n]).await?;
        // A paced piece goes now, not when the transport's buffer fills.
        if rate.is_some() {
            io.flush().await?;
        }
        done += n as u64;
    }
    io.write_all(&load.to_le_bytes()).await?;
    io.flush().await?;
    io.close().await
}

/// The request-response codec for [`PROTOCOL`]. It counts the malformed messages it refuses: libp2p's
/// request-response drops an inbound request that fails to decode without telling the behaviour, so the
/// codec is the one place that sees every one.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    malformed: prometheus_client::metrics::counter::Counter,
}

impl Codec {
    /// A codec that counts malformed messages in `malformed` (shared by every clone).
    pub fn counting(malformed: prometheus_client::metrics::counter::Counter) -> Self {
        Self { malformed }
    }

    fn count<T>(&self, r: io::Result<T>) -> io::Result<T> {
        if matches!(&r, Err(e) if e.kind() == io::ErrorKind::InvalidData) {
            self.malformed.inc();
        }
        r
    }
}

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let req = read_frame::<_, Request>(io, MAX_REQUEST_BYTES)
            .await
            .and_then(|req| req.check().map(|()| req).map_err(invalid));
        self.count(req)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let res = read_response_frame(io, MAX_RESPONSE_BYTES)
            .await
            .and_then(|res| res.check().map(|()| res).map_err(invalid));
        self.count(res)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, MAX_REQUEST_BYTES).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match res {
            Response::ChunkFrom { source, load } => {
                write_chunk_from(io, source, load, MAX_RESPONSE_BYTES).await
            }
            res => write_frame(io, &res, MAX_RESPONSE_BYTES).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec as _;

    fn cid() -> ContentId {
        ContentId(*blake3::hash(b"x").as_bytes())
    }

    #[test]
    fn frames_round_trip() {
        let msgs = vec![
            Request::Chunk { content: cid(), index: 7, rate: 3_000_000 },
            Request::Have { content: cid(), chunks: vec![1, 2, 3] },
            Request::Sync { heads: vec![([9; 32], 4)] },
            Request::Cancel { content: cid(), index: 3 },
            Request::Hello(NodeInfo {
                role: "cinema".into(),
                isp: Some("orange".into()),
                downlink: Some(125_000_000),
                ..Default::default()
            }),
        ];
        for m in msgs {
            let frame = encode_frame(&m, MAX_REQUEST_BYTES).unwrap();
            let back: Request = decode_body(&frame[4..], MAX_REQUEST_BYTES).unwrap();
            assert_eq!(back, m);
        }
        let answers = vec![
            Response::Chunk { bytes: vec![1, 2, 3], load: 0.25 },
            Response::Busy { load: 1.0 },
            Response::Missing { load: 0.5 },
            Response::Cancelled,
        ];
        for m in answers {
            let frame = encode_frame(&m, MAX_RESPONSE_BYTES).unwrap();
            let back: Response = decode_body(&frame[4..], MAX_RESPONSE_BYTES).unwrap();
            assert_eq!(back, m);
            // The codec reads a chunk answer without the decoder: it must agree with it.
            let read = futures::executor::block_on(
                Codec::default().read_response(&PROTOCOL, &mut futures::io::Cursor::new(frame.clone())),
            )
            .unwrap();
            assert_eq!(read, m);
            // Cut anywhere, the frame is an error, never a shorter answer.
            for cut in [1, 4, 5, 8, 15, frame.len() - 1].into_iter().filter(|&c| c < frame.len()) {
                let r = futures::executor::block_on(
                    Codec::default().read_response(&PROTOCOL, &mut futures::io::Cursor::new(&frame[..cut])),
                );
                assert!(r.is_err(), "{m:?} cut at {cut}");
            }
        }
        // A chunk whose length disagrees with its frame is refused.
        let mut frame =
            encode_frame(&Response::Chunk { bytes: vec![7; 10], load: 0.5 }, MAX_RESPONSE_BYTES).unwrap();
        frame[8] = 11;
        let r = futures::executor::block_on(
            Codec::default().read_response(&PROTOCOL, &mut futures::io::Cursor::new(frame)),
        );
        assert!(r.unwrap_err().to_string().contains("malformed"));
    }

    #[test]
    fn a_chunk_streamed_from_its_file_is_the_frame_of_the_chunk_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("film");
        // Three pieces and a bit, at an offset, so the piece loop and the tail are both exercised.
        let data: Vec<u8> = (0..(3 * PIECE + 1000 + 77)).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
        let chunk = &data[77..];
        for corrupt in [false, true] {
            let source =
                ChunkSource { file: file.clone(), offset: 77, len: chunk.len() as u64, corrupt, pace: None };
            let mut wire = futures::io::Cursor::new(Vec::new());
            futures::executor::block_on(Codec::default().write_response(
                &PROTOCOL,
                &mut wire,
                Response::ChunkFrom { source, load: 0.75 },
            ))
            .unwrap();
            let mut bytes = chunk.to_vec();
            if corrupt {
                bytes[0] ^= 0xff;
            }
            let expected = encode_frame(&Response::Chunk { bytes, load: 0.75 }, MAX_RESPONSE_BYTES).unwrap();
            assert!(wire.get_ref() == &expected, "streamed frame differs (corrupt: {corrupt})");
            let back = futures::executor::block_on(
                Codec::default().read_response(&PROTOCOL, &mut futures::io::Cursor::new(wire.into_inner())),
            )
            .unwrap();
            assert!(
                matches!(back, Response::Chunk { bytes, load } if bytes.len() == chunk.len() && load == 0.75)
            );
        }
        // A file shorter than the chunk it claims fails the write; it never sends a short frame as whole.
        let source = ChunkSource { file, offset: 0, len: data.len() as u64 + 1, corrupt: false, pace: None };
        let mut wire = futures::io::Cursor::new(Vec::new());
        let res = futures::executor::block_on(Codec::default().write_response(
            &PROTOCOL,
            &mut wire,
            Response::ChunkFrom { source, load: 0.0 },
        ));
        assert!(res.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn paced_answers_share_the_pace_in_small_pieces_and_send_the_same_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("film");
        let data: Vec<u8> = (0..128 * 1024).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
        // 64 KiB/s: pieces of 1 KiB (10 ms of it is less), one every 15.6 ms.
        let pace = std::sync::Arc::new(UploadPace::default());
        pace.set(Some(65536.0));
        assert_eq!(UploadPace::piece(65536.0), MIN_PACED_PIECE);
        assert_eq!(UploadPace::piece(1e9), PIECE);
        let answer = |offset: u64| {
            let source = ChunkSource {
                file: file.clone(),
                offset,
                len: 64 * 1024,
                corrupt: false,
                pace: Some(pace.clone()),
            };
            async move {
                let mut wire = futures::io::Cursor::new(Vec::new());
                let res = Response::ChunkFrom { source, load: 0.5 };
                Codec::default().write_response(&PROTOCOL, &mut wire, res).await.unwrap();
                (wire.into_inner(), tokio::time::Instant::now())
            }
        };
        let start = tokio::time::Instant::now();
        let ((a, a_done), (b, b_done)) = futures::join!(answer(0), answer(64 * 1024));
        for (wire, chunk) in [(a, &data[..64 * 1024]), (b, &data[64 * 1024..])] {
            let expected =
                encode_frame(&Response::Chunk { bytes: chunk.to_vec(), load: 0.5 }, MAX_RESPONSE_BYTES);
            assert!(wire == expected.unwrap(), "a paced answer is the same frame");
        }
        // 128 pieces of 1 KiB between them: the last may go 127 x 15.6 ms after the first.
        let last = a_done.max(b_done) - start;
        assert!(last >= std::time::Duration::from_millis(1984), "{last:?}");
        assert!(last < std::time::Duration::from_millis(2100), "{last:?}");
        // Not paced: no wait at all.
        pace.set(None);
        let start = tokio::time::Instant::now();
        let (_, done) = answer(0).await;
        assert_eq!(done - start, std::time::Duration::ZERO);
    }

    #[test]
    fn oversized_and_garbage_frames_are_rejected() {
        futures::executor::block_on(async {
            let counter = prometheus_client::metrics::counter::Counter::default();
            let mut c = Codec::counting(counter.clone());
            let mut huge = Vec::new();
            huge.extend_from_slice(&(MAX_REQUEST_BYTES as u32 + 1).to_be_bytes());
            let err = c.read_request(&PROTOCOL, &mut futures::io::Cursor::new(huge)).await.unwrap_err();
            assert!(err.to_string().contains("exceeds the limit"), "{err}");

            let mut garbage = vec![0, 0, 0, 3];
            garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
            let err = c.read_request(&PROTOCOL, &mut futures::io::Cursor::new(garbage)).await.unwrap_err();
            assert!(err.to_string().contains("malformed"), "{err}");

            let too_many = Request::Have { content: cid(), chunks: vec![0; MAX_HAVE_CHUNKS + 1] };
            let frame = encode_frame(&too_many, MAX_REQUEST_BYTES).unwrap();
            let err = c.read_request(&PROTOCOL, &mut futures::io::Cursor::new(frame)).await.unwrap_err();
            assert!(err.to_string().contains("too many"), "{err}");
            assert_eq!(counter.get(), 3, "every refused message is counted");
        });
    }

    #[test]
    fn a_length_prefix_claiming_more_than_sent_is_an_error_not_a_hang() {
        futures::executor::block_on(async {
            let mut frame = encode_frame(&Request::Bitfield { content: cid() }, MAX_REQUEST_BYTES).unwrap();
            frame.truncate(frame.len() - 1);
            assert!(Codec::default()
                .read_request(&PROTOCOL, &mut futures::io::Cursor::new(frame))
                .await
                .is_err());
        });
    }
}
