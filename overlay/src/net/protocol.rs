//! The chunk-transfer protocol `/cinemesh/xfer/3.0.0`: request-response over a libp2p stream per request.
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
//! | `Chunk{content, index, held}` | `Chunk{bytes, load}` / `Busy{load}` / `Missing{load}` / `Cancelled` | one chunk; the asker verifies its hash; every answer carries the uploader's load |
//! | `Have{content, chunks}` | `Ack` | batched have-updates pushed to interested peers |
//! | `Cancel{content, index}` | `Ack` | the asker no longer wants that chunk: the uploader frees its slot |
//! | `Sync{heads}` | `Entries(..)` | catalogue anti-entropy: entries after the asker's heads |
//!
//! Version 2 added `Cancel`, the load on `Chunk` and `Missing`, and `Cancelled`; version 3 (this one) added
//! `held` to `Chunk` (the asker's progress, `transfer.open_slots`). A peer of an older version does not
//! negotiate it: upgrade the whole mesh together (the catalogue and the DHT still work across versions).
//!
//! Any request may be answered `Refused{reason}` (e.g. a private mesh and a non-admitted peer).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::ContentId;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/cinemesh/xfer/3.0.0");

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
        /// Chunks of this content the asker holds (a busy uploader serves those nearest completion first).
        held: u32,
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

async fn read_frame<T: AsyncRead + Unpin + Send, M: DeserializeOwned>(
    io: &mut T,
    max: usize,
) -> io::Result<M> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(invalid(format!("message of {len} bytes exceeds the limit of {max}")));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
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
        let res = read_frame::<_, Response>(io, MAX_RESPONSE_BYTES)
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
        write_frame(io, &res, MAX_RESPONSE_BYTES).await
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
            Request::Chunk { content: cid(), index: 7, held: 3 },
            Request::Have { content: cid(), chunks: vec![1, 2, 3] },
            Request::Sync { heads: vec![([9; 32], 4)] },
            Request::Cancel { content: cid(), index: 3 },
            Request::Hello(NodeInfo {
                role: "cinema".into(),
                isp: Some("orange".into()),
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
        }
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
