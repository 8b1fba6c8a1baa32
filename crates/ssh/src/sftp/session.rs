//! The session loop: one task reads packets, the dispatcher runs requests concurrently, and
//! one task writes replies.
//!
//! The reader drains the stream eagerly, so that a client's pipelined requests wait in this
//! process rather than in the SSH channel. russh stops reading the socket when a channel's
//! inbound queue is full, and would then miss the window adjustments that our replies wait
//! for. The queued bytes are capped by [`QUEUE_BUDGET`] per connection. The dispatcher starts
//! at most [`MAX_IN_FLIGHT`] requests at a time, in arrival order. A request that fills a
//! large buffer (READ, copy-data, READDIR) first reserves its size from the connection's
//! [`REPLY_BUDGET`]. A request keeps its slot and its reservation until its reply has been
//! written, which bounds the memory that replies can take. The writer packs every reply
//! that is ready into one buffer and writes it at once, so small replies share channel
//! packets; only the payload of a large DATA reply is written from its own buffer.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use ferry_vfs::{VPath, Vfs};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::handle::{self, Handle};
use super::ops::{self, Failure, OpResult};
use super::order::{Access, Gate, ReplyOrder, Span, Tracker, Turn};
use super::packet::{
    self, DecodeError, Extended, Limits, Request, Response, StatusCode, WRITE_PREFIX_LEN, ext,
    open_flags,
};
use super::{
    ConnectionBudget, MAX_HANDLES, MAX_IN_FLIGHT, MAX_PACKET_LEN, MAX_READ_LEN, MAX_WRITE_LEN,
    READDIR_REPLY_CHARGE, SftpError,
};
#[cfg(doc)]
use super::{QUEUE_BUDGET, REPLY_BUDGET};

/// The size of the read buffer in front of the stream. Small packets are read in bulk, and
/// larger bodies bypass it. It is kept small because every idle session keeps one.
const READ_BUFFER: usize = 8 * 1024;

/// The share of the queue budget that the smallest packet takes: an estimate of what a
/// queued request costs besides its body.
const MIN_FRAME_CHARGE: u32 = 256;

/// The writer sends what it has once this many bytes are waiting, even if more replies are
/// ready.
const WRITE_BUFFER: usize = 128 * 1024;

/// DATA payloads of this size or more are written from their own buffer instead of being
/// copied into the write buffer.
const DIRECT_WRITE_MIN: usize = 64 * 1024;

/// The channel packet size that OpenSSH's client and paramiko accept. russh cuts writes at
/// the client's maximum, so a write buffer topped up to this size goes out as one packet.
const CHANNEL_PACKET: usize = 32 * 1024;

/// The extensions announced in SSH_FXP_VERSION, with their versions.
const EXTENSIONS: [(&str, &str); 7] = [
    (ext::POSIX_RENAME, "1"),
    (ext::STATVFS, "2"),
    (ext::FSTATVFS, "2"),
    (ext::FSYNC, "1"),
    (ext::LIMITS, "1"),
    (ext::EXPAND_PATH, "1"),
    (ext::COPY_DATA, "1"),
];

/// One packet as read from the stream, with its share of the queue budget.
struct Frame {
    body: Body,
    budget: OwnedSemaphorePermit,
}

enum Body {
    Whole(Vec<u8>),
    /// A WRITE, with its data in a buffer of its own so that it reaches the file unmoved.
    Write {
        header: Vec<u8>,
        data: Vec<u8>,
    },
}

impl Body {
    fn decode(self) -> Result<Request, DecodeError> {
        match self {
            Body::Whole(body) => Request::decode(body),
            Body::Write { header, data } => packet::decode_write_parts(&header, data),
        }
    }
}

/// The resources a request keeps until its reply is written.
struct Ticket {
    _slot: OwnedSemaphorePermit,
    _budget: OwnedSemaphorePermit,
    /// The request's share of the reply budget, if it fills a large buffer.
    _reply: Option<OwnedSemaphorePermit>,
}

struct Outgoing {
    response: Response,
    _ticket: Ticket,
}

/// A change to the handle table that a finished request requires.
enum Effect {
    None,
    Opened { handle_id: u32, handle: Box<Handle> },
    OpenFailed,
}

struct Completion {
    id: u32,
    result: OpResult,
    effect: Effect,
    ticket: Ticket,
    /// The reply's place among the replies on its handle, released once it is queued.
    turn: Option<Turn>,
}

type Running = Pin<Box<dyn Future<Output = Completion> + Send>>;

/// An open handle with the requests still running on it.
struct Slot {
    handle: Arc<Handle>,
    tracker: Tracker,
    replies: ReplyOrder,
}

/// Serves one session until the client closes the stream. See the module documentation.
pub async fn run<S>(stream: S, vfs: Vfs, limits: ConnectionBudget) -> Result<(), SftpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(READ_BUFFER, read_half);
    let budget = Arc::clone(&limits.requests);

    let Some(first) = read_frame(&mut reader, &budget).await? else {
        return Ok(());
    };
    let version = match first.body.decode()? {
        Request::Init { version } => version,
        other => return Err(SftpError::MissingInit(kind_name(&other))),
    };
    if version < 3 {
        return Err(SftpError::UnsupportedVersion(version));
    }
    tracing::debug!(client_version = version, "sftp version 3 negotiated");

    let (replies, outgoing) = unbounded_channel();
    let writer = tokio::spawn(write_replies(write_half, outgoing));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let version_reply = Outgoing {
        response: Response::Version {
            version: 3,
            extensions: EXTENSIONS.to_vec(),
        },
        _ticket: Ticket {
            _slot: Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(slots_closed)?,
            _budget: first.budget,
            _reply: None,
        },
    };
    // The writer only stops when the channel closes or the stream fails.
    let _ = replies.send(version_reply);

    let (frames, queue) = unbounded_channel();
    let reader = tokio::spawn(read_frames(reader, frames, budget));

    let mut dispatcher = Dispatcher {
        vfs,
        limits,
        slots,
        replies,
        handles: HashMap::new(),
        opening: 0,
        next_handle: 0,
        namespace: Tracker::default(),
        running: FuturesUnordered::new(),
    };
    let result = dispatcher.run(queue).await;
    reader.abort();
    // Dropping the dispatcher closes the handles still open, which discards unfinished
    // uploads, and closes the reply queue so that the writer finishes.
    drop(dispatcher);
    let written = match writer.await {
        Ok(written) => written,
        Err(join_error) => Err(io::Error::other(join_error)),
    };
    result?;
    written.map_err(SftpError::Io)
}

/// Reads one packet body. Returns `None` when the stream ends between packets.
async fn read_frame<R>(reader: &mut R, budget: &Arc<Semaphore>) -> Result<Option<Frame>, SftpError>
where
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        let Some(rest) = prefix.get_mut(filled..) else {
            break;
        };
        let n = reader.read(rest).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(SftpError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        filled += n;
    }
    let len = u32::from_be_bytes(prefix);
    if len == 0 {
        return Err(DecodeError::Empty.into());
    }
    if len > MAX_PACKET_LEN {
        return Err(SftpError::PacketTooLong {
            len,
            max: MAX_PACKET_LEN,
        });
    }
    // Tiny packets are charged more than their length, because a queued request costs
    // memory beyond its bytes, so a flood of them cannot grow the queue without bound.
    let charge = len.max(MIN_FRAME_CHARGE);
    let Ok(permit) = Arc::clone(budget).acquire_many_owned(charge).await else {
        return Ok(None);
    };
    let len = len as usize;

    let mut head = Vec::with_capacity(len.min(READ_BUFFER));
    read_more(reader, &mut head, len.min(WRITE_PREFIX_LEN)).await?;
    let header_len = packet::write_header_len(&head).filter(|header_len| *header_len <= len);
    let body = match header_len {
        Some(header_len) => {
            let missing = header_len - head.len();
            read_more(reader, &mut head, missing).await?;
            let mut data = Vec::with_capacity(len - header_len);
            read_more(reader, &mut data, len - header_len).await?;
            Body::Write { header: head, data }
        }
        None => {
            let missing = len - head.len();
            head.reserve_exact(missing);
            read_more(reader, &mut head, missing).await?;
            Body::Whole(head)
        }
    };
    Ok(Some(Frame {
        body,
        budget: permit,
    }))
}

/// Appends exactly `count` bytes from `reader` to `buffer`, reading into its spare capacity
/// rather than zeroing bytes that are overwritten at once.
async fn read_more<R>(reader: &mut R, buffer: &mut Vec<u8>, count: usize) -> Result<(), SftpError>
where
    R: AsyncRead + Unpin,
{
    let end = buffer.len() + count;
    while buffer.len() < end {
        let missing = (end - buffer.len()) as u64;
        if (&mut *reader).take(missing).read_buf(buffer).await? == 0 {
            return Err(SftpError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(())
}

/// Reads packets until the stream ends or fails, and queues them for the dispatcher.
async fn read_frames<R>(
    mut reader: R,
    frames: UnboundedSender<Result<Frame, SftpError>>,
    budget: Arc<Semaphore>,
) where
    R: AsyncRead + Unpin,
{
    loop {
        match read_frame(&mut reader, &budget).await {
            Ok(Some(frame)) => {
                if frames.send(Ok(frame)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(error) => {
                let _ = frames.send(Err(error));
                return;
            }
        }
    }
}

/// Encodes replies into one buffer and writes it whenever no more replies are ready or the
/// buffer is full. A reply's ticket is released once its bytes are written.
async fn write_replies<W>(mut writer: W, mut replies: UnboundedReceiver<Outgoing>) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    // Grows to WRITE_BUFFER only when replies pile up, so that an idle session keeps little memory.
    let mut buffer = Vec::new();
    let mut written = Vec::new();
    while let Some(first) = replies.recv().await {
        let mut next = Some(first);
        while let Some(reply) = next {
            if let Some(payload) = reply.response.encode_head(&mut buffer, DIRECT_WRITE_MIN) {
                // Top the buffer up to a full channel packet, then write the rest as it is.
                let fill = CHANNEL_PACKET.saturating_sub(buffer.len());
                let (first_part, rest) = payload.split_at_checked(fill).unwrap_or((payload, &[]));
                buffer.extend_from_slice(first_part);
                writer.write_all(&buffer).await?;
                buffer.clear();
                writer.write_all(rest).await?;
            }
            written.push(reply);
            next = if buffer.len() < WRITE_BUFFER {
                replies.try_recv().ok()
            } else {
                None
            };
        }
        if !buffer.is_empty() {
            writer.write_all(&buffer).await?;
            buffer.clear();
        }
        writer.flush().await?;
        written.clear();
    }
    // The session is over; a client that already closed its side cannot get an EOF.
    let _ = writer.shutdown().await;
    Ok(())
}

struct Dispatcher {
    vfs: Vfs,
    limits: ConnectionBudget,
    slots: Arc<Semaphore>,
    replies: UnboundedSender<Outgoing>,
    handles: HashMap<u32, Slot>,
    /// OPEN and OPENDIR requests still running, which count toward [`MAX_HANDLES`].
    opening: usize,
    next_handle: u32,
    /// Orders requests that name paths: changes wait for everything before them, and
    /// everything waits for changes before it.
    namespace: Tracker,
    running: FuturesUnordered<Running>,
}

impl Dispatcher {
    async fn run(
        &mut self,
        mut queue: UnboundedReceiver<Result<Frame, SftpError>>,
    ) -> Result<(), SftpError> {
        let mut next: Option<(Request, OwnedSemaphorePermit)> = None;
        let mut ended = false;
        loop {
            let charge = next
                .as_ref()
                .map_or(0, |(request, _)| reply_charge(request));
            let reserve = reserve(
                Arc::clone(&self.slots),
                Arc::clone(&self.limits.replies),
                charge,
            );
            tokio::select! {
                biased;
                Some(done) = self.running.next(), if !self.running.is_empty() => {
                    self.complete(done)?;
                }
                reserved = reserve, if next.is_some() => {
                    let (slot, reply) = reserved.map_err(slots_closed)?;
                    if let Some((request, budget)) = next.take() {
                        let ticket = Ticket {
                            _slot: slot,
                            _budget: budget,
                            _reply: reply,
                        };
                        self.dispatch(request, ticket)?;
                    }
                }
                frame = queue.recv(), if next.is_none() && !ended => match frame {
                    Some(frame) => {
                        let frame = frame?;
                        next = Some((frame.body.decode()?, frame.budget));
                    }
                    None => ended = true,
                },
                else => return Ok(()),
            }
        }
    }

    fn send(&self, id: u32, result: OpResult, ticket: Ticket) -> Result<(), SftpError> {
        let response = result.unwrap_or_else(|failure| {
            if failure.local {
                tracing::warn!(id, code = ?failure.code, error = ?failure.message, "request failed");
            } else {
                tracing::debug!(id, code = ?failure.code, error = ?failure.message, "request failed");
            }
            failure.into_response(id)
        });
        let reply = Outgoing {
            response,
            _ticket: ticket,
        };
        self.replies
            .send(reply)
            .map_err(|_| SftpError::Io(io::ErrorKind::BrokenPipe.into()))
    }

    fn complete(&mut self, done: Completion) -> Result<(), SftpError> {
        let mut result = done.result;
        match done.effect {
            Effect::None => {}
            Effect::OpenFailed => self.opening -= 1,
            Effect::Opened { handle_id, handle } => {
                self.opening -= 1;
                let slot = Slot {
                    handle: Arc::from(handle),
                    tracker: Tracker::default(),
                    replies: ReplyOrder::default(),
                };
                self.handles.insert(handle_id, slot);
                result = Ok(Response::Handle {
                    id: done.id,
                    handle: handle::encode_id(handle_id),
                });
            }
        }
        self.send(done.id, result, done.ticket)?;
        // The reply is queued; the next reply on the same handle may follow it.
        drop(done.turn);
        Ok(())
    }

    fn spawn<F>(&mut self, id: u32, ticket: Ticket, work: F)
    where
        F: Future<Output = OpResult> + Send + 'static,
    {
        self.spawn_in_turn(id, ticket, None, work);
    }

    /// Runs a request; with a turn, its reply waits for the replies before it on its handle.
    fn spawn_in_turn<F>(&mut self, id: u32, ticket: Ticket, mut turn: Option<Turn>, work: F)
    where
        F: Future<Output = OpResult> + Send + 'static,
    {
        self.running.push(Box::pin(async move {
            let result = work.await;
            if let Some(turn) = turn.as_mut() {
                turn.wait().await;
            }
            Completion {
                id,
                result,
                effect: Effect::None,
                ticket,
                turn,
            }
        }));
    }

    /// Registers a request on the path namespace.
    fn path_gate(&mut self, access: Access) -> Gate {
        self.namespace.enter(access, Span::whole())
    }

    /// Finds an open handle and registers a request on it.
    fn handle_gate(
        &mut self,
        handle: &[u8],
        access: Access,
        span: Span,
    ) -> Result<(Arc<Handle>, Gate, Turn), Failure> {
        let slot = handle::decode_id(handle)
            .and_then(|id| self.handles.get_mut(&id))
            .ok_or_else(invalid_handle)?;
        let gate = slot.tracker.enter(access, span);
        let turn = slot.replies.next();
        Ok((Arc::clone(&slot.handle), gate, turn))
    }

    fn dispatch(&mut self, request: Request, ticket: Ticket) -> Result<(), SftpError> {
        let Some(id) = request.id() else {
            return Err(SftpError::RepeatedInit);
        };
        let vfs = self.vfs.clone();
        match request {
            Request::Init { .. } => return Err(SftpError::RepeatedInit),
            Request::Open {
                path, flags, attrs, ..
            } => {
                let access = if flags & open_flags::WRITE != 0 {
                    Access::Write
                } else {
                    Access::Read
                };
                let gate = self.path_gate(access);
                self.open_handle(id, ticket, gate, async move {
                    let path = ops::parse_path(&path)?;
                    tracing::debug!(id, path = ?path.as_str(), flags, "open");
                    ops::open(&vfs, &path, flags, &attrs).await
                });
            }
            Request::Opendir { path, .. } => {
                let gate = self.path_gate(Access::Read);
                let limits = self.limits.clone();
                self.open_handle(id, ticket, gate, async move {
                    let path = ops::parse_path(&path)?;
                    tracing::debug!(id, path = ?path.as_str(), "opendir");
                    ops::opendir(&vfs, &path, &limits).await
                });
            }
            Request::Close { handle, .. } => {
                let Some(slot) = handle::decode_id(&handle).and_then(|h| self.handles.remove(&h))
                else {
                    return self.send(id, Err(invalid_handle()), ticket);
                };
                let Slot {
                    handle,
                    mut tracker,
                    mut replies,
                } = slot;
                let mut gate = tracker.enter(Access::Write, Span::whole());
                let turn = replies.next();
                // Publishing an upload changes the namespace.
                let mut publish = if handle.is_writer() {
                    self.path_gate(Access::Write)
                } else {
                    Gate::open()
                };
                self.spawn_in_turn(id, ticket, Some(turn), async move {
                    gate.wait().await;
                    publish.wait().await;
                    tracing::debug!(id, path = ?handle.path.as_str(), "close");
                    ops::close(id, &vfs, handle).await
                });
            }
            Request::Read {
                handle,
                offset,
                len,
                ..
            } => {
                let span = Span::bytes(offset, u64::from(len.min(MAX_READ_LEN)));
                self.on_handle(
                    id,
                    ticket,
                    &handle,
                    (Access::Read, span),
                    "read",
                    move |h| async move { ops::read(id, &h, offset, len).await },
                )?;
            }
            Request::Write {
                handle,
                offset,
                data,
                ..
            } => {
                let span = Span::bytes(offset, data.len() as u64);
                let appends = handle::decode_id(&handle)
                    .and_then(|h| self.handles.get(&h))
                    .is_some_and(|slot| slot.handle.appends());
                let span = if appends { Span::whole() } else { span };
                self.on_handle(
                    id,
                    ticket,
                    &handle,
                    (Access::Write, span),
                    "write",
                    move |h| async move { ops::write(id, &h, offset, data).await },
                )?;
            }
            Request::Fstat { handle, .. } => {
                self.on_handle(
                    id,
                    ticket,
                    &handle,
                    (Access::Read, Span::whole()),
                    "fstat",
                    move |h| async move { ops::fstat(id, &h).await },
                )?;
            }
            Request::Fsetstat { handle, attrs, .. } => {
                self.on_handle(
                    id,
                    ticket,
                    &handle,
                    (Access::Write, Span::whole()),
                    "fsetstat",
                    move |h| async move { ops::fsetstat(id, &vfs, &h, &attrs).await },
                )?;
            }
            Request::Readdir { handle, .. } => {
                self.on_handle(
                    id,
                    ticket,
                    &handle,
                    (Access::Write, Span::whole()),
                    "readdir",
                    move |h| async move { ops::readdir(id, &h) },
                )?;
            }
            Request::Lstat { path, .. } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Read,
                    path,
                    "lstat",
                    move |p| async move { ops::stat(id, &vfs, &p, false).await },
                );
            }
            Request::Stat { path, .. } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Read,
                    path,
                    "stat",
                    move |p| async move { ops::stat(id, &vfs, &p, true).await },
                );
            }
            Request::Setstat { path, attrs, .. } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Write,
                    path,
                    "setstat",
                    move |p| async move { ops::setstat(id, &vfs, &p, &attrs).await },
                );
            }
            Request::Remove { path, .. } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Write,
                    path,
                    "remove",
                    move |p| async move { ops::remove(id, &vfs, &p).await },
                );
            }
            Request::Mkdir { path, attrs, .. } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Write,
                    path,
                    "mkdir",
                    move |p| async move { ops::mkdir(id, &vfs, &p, &attrs).await },
                );
            }
            Request::Rmdir { path, .. } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Write,
                    path,
                    "rmdir",
                    move |p| async move { ops::rmdir(id, &vfs, &p).await },
                );
            }
            Request::Realpath { path, .. } => {
                let result = ops::parse_path(&path).and_then(|p| ops::realpath(id, &p));
                return self.send(id, result, ticket);
            }
            Request::Readlink { path, .. } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Read,
                    path,
                    "readlink",
                    move |p| async move { ops::readlink(id, &vfs, &p).await },
                );
            }
            Request::Symlink { target, link, .. } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Write,
                    link,
                    "symlink",
                    move |p| async move { ops::symlink(id, &vfs, &target, &p).await },
                );
            }
            Request::Rename { from, to, .. } => self.rename(id, ticket, from, to, false),
            Request::Extended { request, .. } => {
                return self.dispatch_extended(id, request, ticket);
            }
            Request::Unknown { kind, .. } => {
                tracing::debug!(id, kind, "unsupported request type");
                let failure = Failure::new(
                    StatusCode::OpUnsupported,
                    format!("request type {kind} is not supported"),
                );
                return self.send(id, Err(failure), ticket);
            }
        }
        Ok(())
    }

    fn dispatch_extended(
        &mut self,
        id: u32,
        request: Extended,
        ticket: Ticket,
    ) -> Result<(), SftpError> {
        let vfs = self.vfs.clone();
        match request {
            Extended::PosixRename { from, to } => self.rename(id, ticket, from, to, true),
            Extended::Statvfs { path } => {
                self.on_path(
                    id,
                    ticket,
                    Access::Read,
                    path,
                    "statvfs",
                    move |p| async move { ops::statvfs(id, &vfs, &p).await },
                );
            }
            Extended::Fstatvfs { handle } => {
                self.on_handle(
                    id,
                    ticket,
                    &handle,
                    (Access::Read, Span::bytes(0, 0)),
                    "fstatvfs",
                    move |h| async move { ops::fstatvfs(id, &vfs, &h).await },
                )?;
            }
            Extended::Fsync { handle } => {
                self.on_handle(
                    id,
                    ticket,
                    &handle,
                    (Access::Write, Span::whole()),
                    "fsync",
                    move |h| async move { ops::fsync(id, &h).await },
                )?;
            }
            Extended::Limits => {
                let limits = Limits {
                    max_packet_len: u64::from(MAX_PACKET_LEN),
                    max_read_len: u64::from(MAX_READ_LEN),
                    max_write_len: u64::from(MAX_WRITE_LEN),
                    max_open_handles: MAX_HANDLES as u64,
                };
                return self.send(id, Ok(Response::Limits { id, limits }), ticket);
            }
            Extended::ExpandPath { path } => {
                return self.send(id, ops::expand_path(id, &path), ticket);
            }
            Extended::CopyData {
                read_handle,
                read_offset,
                len,
                write_handle,
                write_offset,
            } => {
                if read_handle == write_handle {
                    let failure = Failure::generic("copy-data needs two different handles");
                    return self.send(id, Err(failure), ticket);
                }
                let read_span = Span::bytes(read_offset, if len == 0 { u64::MAX } else { len });
                let write_span = Span::bytes(write_offset, if len == 0 { u64::MAX } else { len });
                let source = self.handle_gate(&read_handle, Access::Read, read_span);
                let target = self.handle_gate(&write_handle, Access::Write, write_span);
                let (source, target) = match (source, target) {
                    (Ok(source), Ok(target)) => (source, target),
                    (Err(failure), _) | (_, Err(failure)) => {
                        return self.send(id, Err(failure), ticket);
                    }
                };
                let (source, mut source_gate, mut source_turn) = source;
                let (target, mut target_gate, target_turn) = target;
                self.spawn_in_turn(id, ticket, Some(target_turn), async move {
                    source_gate.wait().await;
                    target_gate.wait().await;
                    tracing::debug!(
                        id,
                        from = ?source.path.as_str(),
                        to = ?target.path.as_str(),
                        "copy-data"
                    );
                    let result =
                        ops::copy_data(id, &source, read_offset, len, &target, write_offset).await;
                    drop((source, target));
                    drop((source_gate, target_gate));
                    // The reply is ordered among the target's replies; the source's next
                    // reply only has to wait until this request is done.
                    source_turn.wait().await;
                    result
                });
            }
            Extended::Malformed(problem) => {
                tracing::debug!(id, %problem, "malformed extended request");
                let failure = Failure::new(
                    StatusCode::BadMessage,
                    format!("malformed extended request: {problem}"),
                );
                return self.send(id, Err(failure), ticket);
            }
            Extended::Unknown { name } => {
                tracing::debug!(id, extension = ?name, "unsupported extension");
                let failure = Failure::new(
                    StatusCode::OpUnsupported,
                    format!("extension {name} is not supported"),
                );
                return self.send(id, Err(failure), ticket);
            }
        }
        Ok(())
    }

    fn rename(&mut self, id: u32, ticket: Ticket, from: Vec<u8>, to: Vec<u8>, replace: bool) {
        let vfs = self.vfs.clone();
        let mut gate = self.path_gate(Access::Write);
        self.spawn(id, ticket, async move {
            gate.wait().await;
            let (from, to) = (ops::parse_path(&from)?, ops::parse_path(&to)?);
            tracing::debug!(id, from = ?from.as_str(), to = ?to.as_str(), replace, "rename");
            ops::rename(id, &vfs, &from, &to, replace).await
        });
    }

    /// Runs a request that names a path, once earlier conflicting path requests finished.
    fn on_path<F, Fut>(
        &mut self,
        id: u32,
        ticket: Ticket,
        access: Access,
        path: Vec<u8>,
        op: &'static str,
        work: F,
    ) where
        F: FnOnce(VPath) -> Fut + Send + 'static,
        Fut: Future<Output = OpResult> + Send,
    {
        let mut gate = self.path_gate(access);
        self.spawn(id, ticket, async move {
            gate.wait().await;
            let path = ops::parse_path(&path)?;
            tracing::debug!(id, path = ?path.as_str(), op);
            let result = work(path).await;
            drop(gate);
            result
        });
    }

    /// Runs a request on an open handle, once earlier conflicting requests on it finished.
    /// An unknown handle gets its failure reply at once.
    fn on_handle<F, Fut>(
        &mut self,
        id: u32,
        ticket: Ticket,
        handle: &[u8],
        (access, span): (Access, Span),
        op: &'static str,
        work: F,
    ) -> Result<(), SftpError>
    where
        F: FnOnce(Arc<Handle>) -> Fut + Send + 'static,
        Fut: Future<Output = OpResult> + Send,
    {
        let (handle, mut gate, turn) = match self.handle_gate(handle, access, span) {
            Ok(found) => found,
            Err(failure) => return self.send(id, Err(failure), ticket),
        };
        self.spawn_in_turn(id, ticket, Some(turn), async move {
            gate.wait().await;
            if matches!(op, "read" | "write") {
                tracing::trace!(id, path = ?handle.path.as_str(), op);
            } else {
                tracing::debug!(id, path = ?handle.path.as_str(), op);
            }
            // `work` owns the handle and drops it before the gate marks the request done,
            // so a CLOSE waiting on the gate finds itself the handle's only owner.
            let result = work(handle).await;
            drop(gate);
            result
        });
        Ok(())
    }

    /// Runs an OPEN or OPENDIR, reserving a handle id for the result.
    fn open_handle<F>(&mut self, id: u32, ticket: Ticket, mut gate: Gate, work: F)
    where
        F: Future<Output = Result<Handle, Failure>> + Send + 'static,
    {
        if self.handles.len() + self.opening >= MAX_HANDLES {
            let failure = Failure::generic(format!(
                "too many open handles: at most {MAX_HANDLES} per session"
            ));
            // The reply queue only closes when the session is ending.
            let _ = self.send(id, Err(failure), ticket);
            return;
        }
        let handle_id = self.allocate_handle_id();
        self.opening += 1;
        self.running.push(Box::pin(async move {
            gate.wait().await;
            let (result, effect) = match work.await {
                Ok(handle) => (
                    Ok(Response::ok(id)),
                    Effect::Opened {
                        handle_id,
                        handle: Box::new(handle),
                    },
                ),
                Err(failure) => (Err(failure), Effect::OpenFailed),
            };
            drop(gate);
            Completion {
                id,
                result,
                effect,
                ticket,
                turn: None,
            }
        }));
    }

    /// Returns an id no open handle uses. Ids of finished OPENs are inserted only when the
    /// OPEN completes, so ids are handed out in sequence to keep in-flight ones unique.
    fn allocate_handle_id(&mut self) -> u32 {
        loop {
            let id = self.next_handle;
            self.next_handle = self.next_handle.wrapping_add(1);
            if !self.handles.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Reserves a request slot, then `charge` bytes of the reply budget. The dispatcher reserves
/// for one request at a time in arrival order, so a request that holds a reservation never
/// waits for one that has none yet.
async fn reserve(
    slots: Arc<Semaphore>,
    replies: Arc<Semaphore>,
    charge: u32,
) -> Result<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>), tokio::sync::AcquireError> {
    let slot = slots.acquire_owned().await?;
    let reply = match charge {
        0 => None,
        charge => Some(replies.acquire_many_owned(charge).await?),
    };
    Ok((slot, reply))
}

/// Returns the bytes of reply buffer that a request fills at most: the data of a READ, the
/// chunk buffer of copy-data, or one batch of READDIR entries.
fn reply_charge(request: &Request) -> u32 {
    match request {
        Request::Read { len, .. } => (*len).min(MAX_READ_LEN),
        Request::Readdir { .. } => READDIR_REPLY_CHARGE,
        Request::Extended {
            request: Extended::CopyData { .. },
            ..
        } => MAX_READ_LEN,
        _ => 0,
    }
}

/// Maps the error of a closed semaphore, which cannot happen because the request slots and
/// budgets are never closed, without a panic.
fn slots_closed(_: tokio::sync::AcquireError) -> SftpError {
    SftpError::Io(io::Error::other("request slots closed"))
}

fn invalid_handle() -> Failure {
    Failure::generic("invalid handle")
}

/// Names a request type for error messages.
fn kind_name(request: &Request) -> &'static str {
    match request {
        Request::Init { .. } => "INIT",
        Request::Open { .. } => "OPEN",
        Request::Close { .. } => "CLOSE",
        Request::Read { .. } => "READ",
        Request::Write { .. } => "WRITE",
        Request::Lstat { .. } => "LSTAT",
        Request::Fstat { .. } => "FSTAT",
        Request::Setstat { .. } => "SETSTAT",
        Request::Fsetstat { .. } => "FSETSTAT",
        Request::Opendir { .. } => "OPENDIR",
        Request::Readdir { .. } => "READDIR",
        Request::Remove { .. } => "REMOVE",
        Request::Mkdir { .. } => "MKDIR",
        Request::Rmdir { .. } => "RMDIR",
        Request::Realpath { .. } => "REALPATH",
        Request::Stat { .. } => "STAT",
        Request::Rename { .. } => "RENAME",
        Request::Readlink { .. } => "READLINK",
        Request::Symlink { .. } => "SYMLINK",
        Request::Extended { .. } => "EXTENDED",
        Request::Unknown { .. } => "an unknown type",
    }
}
