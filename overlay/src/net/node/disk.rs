//! Disk jobs on tokio's blocking pool: chunk writes (verify, write, fsync, mark), chunk reads, manifest
//! checks and reads, installs, removals, verification. Each comes back to the event loop as a [`Done`].

use libp2p::request_response::{InboundRequestId, ResponseChannel};
use libp2p::PeerId;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::Node;
use crate::catalogue::SignedEntry;
use crate::content::Manifest;
use crate::core::engine::{ManifestReply, UploadId, Written};
use crate::core::Bitfield;
use crate::net::client::VerifyStatus;
use crate::net::protocol::ChunkSource;
use crate::net::protocol::Response;
use crate::net::Fault;
use crate::store::{ContentRoot, Have, StoreError};
use crate::ContentId;

/// A disk job finished on the blocking pool.
#[derive(Debug)]
pub enum Done {
    /// A chunk was verified and written (or not).
    Written {
        /// From whom.
        peer: PeerId,
        /// Which content.
        content: ContentId,
        /// Which chunk.
        index: u32,
        /// Bytes.
        len: u64,
        /// The store's verdict.
        result: Result<(), StoreError>,
    },
    /// A chunk was read for an upload.
    Read {
        /// Which upload.
        upload: UploadId,
        /// The chunk, opened: its file, offset and length.
        result: Result<(std::fs::File, u64, u64), StoreError>,
    },
    /// A manifest answer was decoded and checked against the content id and the signed Publish.
    ManifestChecked {
        /// From whom.
        peer: PeerId,
        /// Which content.
        content: ContentId,
        /// The manifest, or why it is bad.
        result: Result<Manifest, String>,
    },
    /// Our manifest was read and encoded for a peer that asked.
    ManifestRead {
        /// Who asked.
        peer: PeerId,
        /// Which request.
        request: InboundRequestId,
        /// Which content.
        content: ContentId,
        /// Where the answer goes.
        channel: ResponseChannel<Response>,
        /// The canonical bytes, if we hold it.
        bytes: Option<Vec<u8>>,
    },
    /// A content's files and metadata were created.
    Installed {
        /// Which content.
        content: ContentId,
        /// What is held after reuse.
        result: Result<Bitfield, StoreError>,
    },
    /// A content was removed.
    Removed {
        /// Which content.
        content: ContentId,
        /// The store's verdict.
        result: Result<(), StoreError>,
    },
    /// A publish's files were registered in the store (from where they lie).
    Published {
        /// Which content.
        content: ContentId,
        /// Its chunks.
        chunks: u32,
        /// Its bytes.
        size: u64,
        /// The entry to apply and gossip.
        entry: Box<SignedEntry>,
        /// The store's verdict.
        result: Result<(), String>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// `cinemesh verify` finished.
    Verified {
        /// Per content.
        results: Vec<(ContentId, Result<Bitfield, StoreError>)>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Vec<VerifyStatus>, String>>,
    },
}

/// Whether a store error means the disk is full.
fn no_space(e: &StoreError) -> bool {
    match e {
        StoreError::NoSpace { .. } => true,
        StoreError::Io { source, .. } => {
            source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28)
        }
        _ => false,
    }
}

impl Node {
    fn spawn_job(&self, job: impl FnOnce() -> Done + Send + 'static) {
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = done.blocking_send(job());
        });
    }

    pub(super) fn spawn_write(&self, peer: PeerId, content: ContentId, index: u32, bytes: Vec<u8>) {
        let store = self.store.clone();
        let len = bytes.len() as u64;
        self.spawn_job(move || {
            let result = store.write_chunk(&content, index, &bytes);
            Done::Written { peer, content, index, len, result }
        });
    }

    pub(super) fn spawn_read(&self, upload: UploadId, content: ContentId, index: u32) {
        let store = self.store.clone();
        self.spawn_job(move || Done::Read { upload, result: store.open_chunk(&content, index) });
    }

    pub(super) fn spawn_install(&self, content: ContentId, manifest: Manifest) {
        let store = self.store.clone();
        self.spawn_job(move || {
            let result = store
                .add_content(&manifest, ContentRoot::Managed, Have::Nothing)
                .and_then(|()| store.reuse_local(&content))
                .and_then(|_| store.bitfield(&content))
                .and_then(|b| b.ok_or(StoreError::UnknownContent(content)));
            Done::Installed { content, result }
        });
    }

    pub(super) fn spawn_remove(&self, content: ContentId) {
        let store = self.store.clone();
        self.spawn_job(move || Done::Removed { content, result: store.remove_content(&content) });
    }

    /// Decodes and checks a manifest off the event loop: it must hash to the content id and agree with
    /// the signed Publish on size and chunk count.
    pub(super) fn spawn_manifest_check(&self, peer: PeerId, content: ContentId, bytes: Vec<u8>) {
        let signed = self.catalogue.film(&content).map(|f| (f.publish.chunks, f.publish.size));
        self.spawn_job(move || {
            let result = Manifest::decode(&bytes).map_err(|e| e.to_string()).and_then(|m| {
                if m.id() != content {
                    return Err("manifest does not hash to the content id".to_owned());
                }
                match signed {
                    Some((chunks, size)) if chunks != m.chunk_count() || size != m.total_size() => {
                        Err("manifest disagrees with the signed Publish (size or chunk count)".to_owned())
                    }
                    _ => Ok(m),
                }
            });
            Done::ManifestChecked { peer, content, result }
        });
    }

    pub(super) fn spawn_manifest_read(
        &self,
        peer: PeerId,
        request: InboundRequestId,
        content: ContentId,
        channel: ResponseChannel<Response>,
    ) {
        let store = self.store.clone();
        self.spawn_job(move || {
            let bytes = store.manifest(&content).ok().flatten().map(|m| m.encode());
            Done::ManifestRead { peer, request, content, channel, bytes }
        });
    }

    pub(super) fn spawn_verify(
        &self,
        targets: Vec<ContentId>,
        reply: oneshot::Sender<Result<Vec<VerifyStatus>, String>>,
    ) {
        let store = self.store.clone();
        self.spawn_job(move || {
            let results = targets
                .into_iter()
                .map(|c| {
                    let r = store
                        .verify(&c)
                        .and_then(|_| store.bitfield(&c))
                        .and_then(|b| b.ok_or(StoreError::UnknownContent(c)));
                    (c, r)
                })
                .collect();
            Done::Verified { results, reply }
        });
    }

    pub(super) fn on_done(&mut self, done: Done) {
        let now = self.now();
        match done {
            Done::Written { peer, content, index, len, result } => {
                let written = match result {
                    Ok(()) => Written::Ok,
                    Err(StoreError::Corrupt { reason, .. }) => {
                        warn!(%peer, content = %content.short(), index, "chunk failed verification: {reason}");
                        self.metrics.failed("corrupt");
                        Written::Corrupt
                    }
                    Err(e) if no_space(&e) => {
                        warn!(content = %content.short(), index, "disk full: {e}");
                        self.metrics.failed("no_space");
                        Written::NoSpace(e.to_string())
                    }
                    Err(e) => {
                        warn!(content = %content.short(), index, "cannot store chunk: {e}");
                        self.metrics.failed("store");
                        Written::Io(e.to_string())
                    }
                };
                self.engine.chunk_written(now, &peer, &content, index, len, written);
            }
            Done::Read { upload, result } => {
                let result = match result {
                    // The request may have been cancelled meanwhile: keep the file only while it waits. The
                    // bytes are read as they are sent (`Response::ChunkFrom`), a piece at a time.
                    Ok((file, offset, len)) if self.uploads.channels.contains_key(&upload) => {
                        let corrupt = self.cfg.fault == Some(Fault::CorruptUploads);
                        let source = ChunkSource {
                            file: std::sync::Arc::new(file),
                            offset,
                            len,
                            corrupt,
                            pace: Some(self.upload_pace.clone()),
                        };
                        self.uploads.sources.insert(upload, source);
                        Ok(len)
                    }
                    Ok((_, _, len)) => Ok(len),
                    Err(e) => {
                        debug!(upload, "cannot serve chunk: {e}");
                        Err(e.to_string())
                    }
                };
                self.engine.chunk_read(now, upload, result);
            }
            Done::ManifestChecked { peer, content, result } => match result {
                Ok(manifest) => {
                    let size = manifest.total_size();
                    self.manifests.insert(content, manifest);
                    self.engine.manifest(now, &peer, content, ManifestReply::Good { size });
                    // Unless the engine asked for the install at once, the manifest is not needed.
                    self.drive();
                    self.manifests.remove(&content);
                }
                Err(reason) => {
                    warn!(%peer, content = %content, "bad manifest: {reason}");
                    self.engine.manifest(now, &peer, content, ManifestReply::Bad(reason));
                }
            },
            Done::ManifestRead { peer, request, content, channel, bytes } => {
                self.manifest_reads.release(&peer);
                match bytes {
                    Some(b) => {
                        self.answers.put_manifest(content, b.clone());
                        self.respond_bounded(peer, request, channel, Response::Manifest(b));
                    }
                    None => self.respond(channel, Response::Missing { load: 0.0 }),
                }
            }
            Done::Installed { content, result } => {
                let result = result.map_err(|e| e.to_string());
                if let Ok(have) = &result {
                    info!(content = %content, have = have.count(), chunks = have.len(), "manifest installed");
                }
                self.engine.installed(now, content, result);
            }
            Done::Removed { content, result } => {
                if let Err(e) = result {
                    warn!(content = %content, "cannot remove content: {e}");
                }
                self.refresh_gauges();
            }
            Done::Published { content, chunks, size, entry, result, reply } => {
                self.on_published(content, chunks, size, *entry, result, reply)
            }
            Done::Verified { results, reply } => {
                let mut out = Vec::new();
                for (content, result) in results {
                    match result {
                        Ok(have) => {
                            let before = self.engine.held(&content).map_or(0, |h| h.have.count());
                            out.push(VerifyStatus {
                                content_id: content.to_hex(),
                                good: have.count(),
                                bad: before.saturating_sub(have.count()),
                            });
                            self.engine.verified(now, content, have);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(format!("verify {content}: {e}")));
                            return;
                        }
                    }
                }
                let _ = reply.send(Ok(out));
            }
        }
    }
}
