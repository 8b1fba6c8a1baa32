//! The SFTP version 3 wire format (draft-ietf-secsh-filexfer-02 with the OpenSSH extensions):
//! requests decoded from packet bodies and responses encoded into bytes, with no I/O.
//!
//! A packet is a `uint32` length followed by that many bytes: the type byte and the fields.
//! The session reads the length and the body; everything after that happens here, so tests
//! can feed bytes straight in. Every length inside a body is checked against the bytes that
//! are actually there, so a lying length field yields [`DecodeError`], never a large
//! allocation or a panic.

use std::fmt;

use ferry_vfs::FsStats;

/// Packet types.
pub mod kind {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const REALPATH: u8 = 16;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const READLINK: u8 = 19;
    pub const SYMLINK: u8 = 20;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// Flags of SSH_FXP_OPEN.
pub mod open_flags {
    pub const READ: u32 = 0x01;
    pub const WRITE: u32 = 0x02;
    pub const APPEND: u32 = 0x04;
    pub const CREAT: u32 = 0x08;
    pub const TRUNC: u32 = 0x10;
    pub const EXCL: u32 = 0x20;
}

/// Flags that mark which attribute fields are present.
mod attr_flags {
    pub const SIZE: u32 = 0x01;
    pub const UIDGID: u32 = 0x02;
    pub const PERMISSIONS: u32 = 0x04;
    pub const ACMODTIME: u32 = 0x08;
    pub const EXTENDED: u32 = 0x8000_0000;
}

/// `f_flag` bits of the `statvfs@openssh.com` reply.
pub mod statvfs_flags {
    pub const READ_ONLY: u64 = 0x1;
    pub const NO_SUID: u64 = 0x2;
}

/// Names of the extended requests we serve.
pub mod ext {
    pub const POSIX_RENAME: &str = "posix-rename@openssh.com";
    pub const STATVFS: &str = "statvfs@openssh.com";
    pub const FSTATVFS: &str = "fstatvfs@openssh.com";
    pub const FSYNC: &str = "fsync@openssh.com";
    pub const LIMITS: &str = "limits@openssh.com";
    pub const EXPAND_PATH: &str = "expand-path@openssh.com";
    pub const COPY_DATA: &str = "copy-data";
}

/// SSH_FX status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StatusCode {
    Ok = 0,
    Eof = 1,
    NoSuchFile = 2,
    PermissionDenied = 3,
    Failure = 4,
    BadMessage = 5,
    NoConnection = 6,
    ConnectionLost = 7,
    OpUnsupported = 8,
}

/// A packet body that could not be decoded. The peer sent something that is not SFTP v3, so
/// the session ends. A malformed EXTENDED request is the exception: it decodes to
/// [`Extended::Malformed`] and gets a status reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("packet type {kind} ends inside field {field}")]
    Truncated { kind: u8, field: &'static str },
}

/// File attributes (the ATTRS structure). Absent fields are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileAttrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    /// The full `st_mode`, type bits included when the server sends it.
    pub permissions: Option<u32>,
    /// Access and modification time, in seconds since the Unix epoch.
    pub times: Option<(u32, u32)>,
}

/// A request from the client, with its request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Init {
        version: u32,
    },
    Open {
        id: u32,
        path: Vec<u8>,
        flags: u32,
        attrs: FileAttrs,
    },
    Close {
        id: u32,
        handle: Vec<u8>,
    },
    Read {
        id: u32,
        handle: Vec<u8>,
        offset: u64,
        len: u32,
    },
    Write {
        id: u32,
        handle: Vec<u8>,
        offset: u64,
        data: Vec<u8>,
    },
    Lstat {
        id: u32,
        path: Vec<u8>,
    },
    Fstat {
        id: u32,
        handle: Vec<u8>,
    },
    Setstat {
        id: u32,
        path: Vec<u8>,
        attrs: FileAttrs,
    },
    Fsetstat {
        id: u32,
        handle: Vec<u8>,
        attrs: FileAttrs,
    },
    Opendir {
        id: u32,
        path: Vec<u8>,
    },
    Readdir {
        id: u32,
        handle: Vec<u8>,
    },
    Remove {
        id: u32,
        path: Vec<u8>,
    },
    Mkdir {
        id: u32,
        path: Vec<u8>,
        attrs: FileAttrs,
    },
    Rmdir {
        id: u32,
        path: Vec<u8>,
    },
    Realpath {
        id: u32,
        path: Vec<u8>,
    },
    Stat {
        id: u32,
        path: Vec<u8>,
    },
    Rename {
        id: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Readlink {
        id: u32,
        path: Vec<u8>,
    },
    /// OpenSSH sends the target first and the link path second, the reverse of the draft,
    /// and every client follows OpenSSH.
    Symlink {
        id: u32,
        target: Vec<u8>,
        link: Vec<u8>,
    },
    Extended {
        id: u32,
        request: Extended,
    },
    /// A packet type that is not a v3 request; it gets SSH_FX_OP_UNSUPPORTED.
    Unknown {
        id: u32,
        kind: u8,
    },
}

/// An SSH_FXP_EXTENDED request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extended {
    PosixRename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Statvfs {
        path: Vec<u8>,
    },
    Fstatvfs {
        handle: Vec<u8>,
    },
    Fsync {
        handle: Vec<u8>,
    },
    Limits,
    ExpandPath {
        path: Vec<u8>,
    },
    /// Copies `len` bytes (0 means up to the end of the file) between two open handles
    /// inside the server.
    CopyData {
        read_handle: Vec<u8>,
        read_offset: u64,
        len: u64,
        write_handle: Vec<u8>,
        write_offset: u64,
    },
    /// An extension we do not serve; it gets SSH_FX_OP_UNSUPPORTED.
    Unknown {
        name: String,
    },
    /// A request whose name or arguments end early. It has a request id, so it gets
    /// SSH_FX_BAD_MESSAGE and the session goes on.
    Malformed(DecodeError),
}

impl Request {
    /// Decodes a packet body (everything after the length field). WRITE data is moved out of
    /// `body` without copying when it runs to the end of the packet, as it always does.
    pub fn decode(body: Vec<u8>) -> Result<Request, DecodeError> {
        let (&kind, _) = body.split_first().ok_or(DecodeError::Empty)?;
        if kind == kind::WRITE {
            return decode_write(body);
        }
        let mut r = Reader::new(&body, kind);
        r.u8("type")?;
        if kind == kind::INIT {
            // Extension pairs a client may send after the version are ignored.
            return Ok(Request::Init {
                version: r.u32("version")?,
            });
        }
        let id = r.u32("request id")?;
        let request = match kind {
            kind::OPEN => Request::Open {
                id,
                path: r.string("filename")?,
                flags: r.u32("pflags")?,
                attrs: r.attrs()?,
            },
            kind::CLOSE => Request::Close {
                id,
                handle: r.string("handle")?,
            },
            kind::READ => Request::Read {
                id,
                handle: r.string("handle")?,
                offset: r.u64("offset")?,
                len: r.u32("len")?,
            },
            kind::LSTAT => Request::Lstat {
                id,
                path: r.string("path")?,
            },
            kind::FSTAT => Request::Fstat {
                id,
                handle: r.string("handle")?,
            },
            kind::SETSTAT => Request::Setstat {
                id,
                path: r.string("path")?,
                attrs: r.attrs()?,
            },
            kind::FSETSTAT => Request::Fsetstat {
                id,
                handle: r.string("handle")?,
                attrs: r.attrs()?,
            },
            kind::OPENDIR => Request::Opendir {
                id,
                path: r.string("path")?,
            },
            kind::READDIR => Request::Readdir {
                id,
                handle: r.string("handle")?,
            },
            kind::REMOVE => Request::Remove {
                id,
                path: r.string("filename")?,
            },
            kind::MKDIR => Request::Mkdir {
                id,
                path: r.string("path")?,
                attrs: r.attrs()?,
            },
            kind::RMDIR => Request::Rmdir {
                id,
                path: r.string("path")?,
            },
            kind::REALPATH => Request::Realpath {
                id,
                path: r.string("path")?,
            },
            kind::STAT => Request::Stat {
                id,
                path: r.string("path")?,
            },
            kind::RENAME => Request::Rename {
                id,
                from: r.string("oldpath")?,
                to: r.string("newpath")?,
            },
            kind::READLINK => Request::Readlink {
                id,
                path: r.string("path")?,
            },
            kind::SYMLINK => Request::Symlink {
                id,
                target: r.string("targetpath")?,
                link: r.string("linkpath")?,
            },
            kind::EXTENDED => Request::Extended {
                id,
                request: decode_extended(&mut r).unwrap_or_else(Extended::Malformed),
            },
            other => Request::Unknown { id, kind: other },
        };
        Ok(request)
    }

    /// Returns the request id, or `None` for INIT, which has none.
    pub fn id(&self) -> Option<u32> {
        match self {
            Request::Init { .. } => None,
            Request::Open { id, .. }
            | Request::Close { id, .. }
            | Request::Read { id, .. }
            | Request::Write { id, .. }
            | Request::Lstat { id, .. }
            | Request::Fstat { id, .. }
            | Request::Setstat { id, .. }
            | Request::Fsetstat { id, .. }
            | Request::Opendir { id, .. }
            | Request::Readdir { id, .. }
            | Request::Remove { id, .. }
            | Request::Mkdir { id, .. }
            | Request::Rmdir { id, .. }
            | Request::Realpath { id, .. }
            | Request::Stat { id, .. }
            | Request::Rename { id, .. }
            | Request::Readlink { id, .. }
            | Request::Symlink { id, .. }
            | Request::Extended { id, .. }
            | Request::Unknown { id, .. } => Some(*id),
        }
    }
}

/// The bytes of a WRITE body that give the length of its header: type, request id and
/// handle length.
pub const WRITE_PREFIX_LEN: usize = 9;

/// The maximum handle length of a WRITE for [`write_header_len`]. Our handles have four
/// bytes, and the draft caps handles at 256.
const MAX_HANDLE_LEN: usize = 256;

/// Returns the length of a WRITE body's header (everything before the data) from its first
/// [`WRITE_PREFIX_LEN`] bytes, or `None` when the body is not a WRITE with a handle of at
/// most 256 bytes. The session uses it to read WRITE data into a buffer of its own.
pub fn write_header_len(prefix: &[u8]) -> Option<usize> {
    let mut r = Reader::new(prefix, kind::WRITE);
    if r.u8("type").ok()? != kind::WRITE {
        return None;
    }
    r.u32("request id").ok()?;
    let handle_len = r.u32("handle").ok()? as usize;
    // The offset and the data length follow the handle.
    (handle_len <= MAX_HANDLE_LEN).then_some(WRITE_PREFIX_LEN + handle_len + 12)
}

/// Decodes a WRITE whose header and data were read into separate buffers, as
/// [`write_header_len`] splits them. Data past the length the header gives is dropped, as
/// [`Request::decode`] ignores trailing bytes.
pub fn decode_write_parts(header: &[u8], mut data: Vec<u8>) -> Result<Request, DecodeError> {
    let mut r = Reader::new(header, kind::WRITE);
    r.u8("type")?;
    let id = r.u32("request id")?;
    let handle = r.string("handle")?;
    let offset = r.u64("offset")?;
    let len = r.u32("data length")? as usize;
    if len > data.len() {
        return Err(DecodeError::Truncated {
            kind: kind::WRITE,
            field: "data",
        });
    }
    data.truncate(len);
    Ok(Request::Write {
        id,
        handle,
        offset,
        data,
    })
}

fn decode_write(mut body: Vec<u8>) -> Result<Request, DecodeError> {
    let mut r = Reader::new(&body, kind::WRITE);
    r.u8("type")?;
    let id = r.u32("request id")?;
    let handle = r.string("handle")?;
    let offset = r.u64("offset")?;
    let len = r.u32("data length")? as usize;
    let start = r.position();
    let end = start
        .checked_add(len)
        .filter(|end| *end <= body.len())
        .ok_or(DecodeError::Truncated {
            kind: kind::WRITE,
            field: "data",
        })?;
    // Drop the header in place instead of copying the data into a new buffer.
    body.truncate(end);
    body.drain(..start);
    Ok(Request::Write {
        id,
        handle,
        offset,
        data: body,
    })
}

fn decode_extended(r: &mut Reader<'_>) -> Result<Extended, DecodeError> {
    let name = r.string("extended-request")?;
    let request = match name.as_slice() {
        n if n == ext::POSIX_RENAME.as_bytes() => Extended::PosixRename {
            from: r.string("oldpath")?,
            to: r.string("newpath")?,
        },
        n if n == ext::STATVFS.as_bytes() => Extended::Statvfs {
            path: r.string("path")?,
        },
        n if n == ext::FSTATVFS.as_bytes() => Extended::Fstatvfs {
            handle: r.string("handle")?,
        },
        n if n == ext::FSYNC.as_bytes() => Extended::Fsync {
            handle: r.string("handle")?,
        },
        n if n == ext::LIMITS.as_bytes() => Extended::Limits,
        n if n == ext::EXPAND_PATH.as_bytes() => Extended::ExpandPath {
            path: r.string("path")?,
        },
        n if n == ext::COPY_DATA.as_bytes() => Extended::CopyData {
            read_handle: r.string("read-from-handle")?,
            read_offset: r.u64("read-from-offset")?,
            len: r.u64("read-data-length")?,
            write_handle: r.string("write-to-handle")?,
            write_offset: r.u64("write-to-offset")?,
        },
        _ => Extended::Unknown {
            name: String::from_utf8_lossy(&name).into_owned(),
        },
    };
    Ok(request)
}

/// A cursor over a packet body that fails, instead of panicking, when a field runs past the
/// end.
struct Reader<'a> {
    body: &'a [u8],
    rest: &'a [u8],
    kind: u8,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8], kind: u8) -> Reader<'a> {
        Reader {
            body,
            rest: body,
            kind,
        }
    }

    fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            kind: self.kind,
            field,
        }
    }

    fn position(&self) -> usize {
        self.body.len() - self.rest.len()
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or_else(|| self.truncated(field))?;
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let (&byte, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| self.truncated(field))?;
        self.rest = rest;
        Ok(byte)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let (bytes, rest) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or_else(|| self.truncated(field))?;
        self.rest = rest;
        Ok(u32::from_be_bytes(*bytes))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let (bytes, rest) = self
            .rest
            .split_first_chunk::<8>()
            .ok_or_else(|| self.truncated(field))?;
        self.rest = rest;
        Ok(u64::from_be_bytes(*bytes))
    }

    /// Reads a `string`: a `uint32` length and that many bytes, which must all be present.
    fn string(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(field)? as usize;
        Ok(self.take(len, field)?.to_vec())
    }

    fn attrs(&mut self) -> Result<FileAttrs, DecodeError> {
        let flags = self.u32("attribute flags")?;
        let mut attrs = FileAttrs::default();
        if flags & attr_flags::SIZE != 0 {
            attrs.size = Some(self.u64("size")?);
        }
        if flags & attr_flags::UIDGID != 0 {
            attrs.uid_gid = Some((self.u32("uid")?, self.u32("gid")?));
        }
        if flags & attr_flags::PERMISSIONS != 0 {
            attrs.permissions = Some(self.u32("permissions")?);
        }
        if flags & attr_flags::ACMODTIME != 0 {
            attrs.times = Some((self.u32("atime")?, self.u32("mtime")?));
        }
        if flags & attr_flags::EXTENDED != 0 {
            // Vendor attributes are skipped. Each pair takes at least eight bytes, so the
            // count cannot make this loop run longer than the packet is.
            let count = self.u32("extended count")?;
            for _ in 0..count {
                let len = self.u32("extended type")? as usize;
                self.take(len, "extended type")?;
                let len = self.u32("extended data")? as usize;
                self.take(len, "extended data")?;
            }
        }
        Ok(attrs)
    }
}

/// One entry of an SSH_FXP_NAME reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameEntry {
    pub filename: String,
    /// The `ls -l` style line that clients such as FileZilla parse.
    pub longname: String,
    pub attrs: FileAttrs,
}

/// The values of the `limits@openssh.com` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_packet_len: u64,
    pub max_read_len: u64,
    pub max_write_len: u64,
    pub max_open_handles: u64,
}

/// A response to the client.
#[derive(Clone, PartialEq, Eq)]
pub enum Response {
    Version {
        version: u32,
        extensions: Vec<(&'static str, &'static str)>,
    },
    Status {
        id: u32,
        code: StatusCode,
        message: String,
    },
    Handle {
        id: u32,
        handle: Vec<u8>,
    },
    Data {
        id: u32,
        data: Vec<u8>,
    },
    Name {
        id: u32,
        entries: Vec<NameEntry>,
    },
    Attrs {
        id: u32,
        attrs: FileAttrs,
    },
    Limits {
        id: u32,
        limits: Limits,
    },
    /// The `statvfs@openssh.com` reply, with the protocol's flag bits in `stats.flags`.
    Statvfs {
        id: u32,
        stats: FsStats,
    },
}

impl fmt::Debug for Response {
    /// Shows the length of DATA, not its bytes, so logs stay short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Data { id, data } => f
                .debug_struct("Data")
                .field("id", id)
                .field("len", &data.len())
                .finish(),
            Response::Version {
                version,
                extensions,
            } => f
                .debug_struct("Version")
                .field("version", version)
                .field("extensions", extensions)
                .finish(),
            Response::Status { id, code, message } => f
                .debug_struct("Status")
                .field("id", id)
                .field("code", code)
                .field("message", message)
                .finish(),
            Response::Handle { id, handle } => f
                .debug_struct("Handle")
                .field("id", id)
                .field("handle", handle)
                .finish(),
            Response::Name { id, entries } => f
                .debug_struct("Name")
                .field("id", id)
                .field("entries", entries)
                .finish(),
            Response::Attrs { id, attrs } => f
                .debug_struct("Attrs")
                .field("id", id)
                .field("attrs", attrs)
                .finish(),
            Response::Limits { id, limits } => f
                .debug_struct("Limits")
                .field("id", id)
                .field("limits", limits)
                .finish(),
            Response::Statvfs { id, stats } => f
                .debug_struct("Statvfs")
                .field("id", id)
                .field("stats", stats)
                .finish(),
        }
    }
}

impl Response {
    pub fn status(id: u32, code: StatusCode, message: impl Into<String>) -> Response {
        Response::Status {
            id,
            code,
            message: message.into(),
        }
    }

    pub fn ok(id: u32) -> Response {
        Response::status(id, StatusCode::Ok, "ok")
    }

    /// Appends the packet to `out` like [`encode`](Response::encode), except the payload of a
    /// DATA reply of at least `min_direct` bytes, which it returns instead. The caller writes
    /// that payload right after `out`, without copying it into `out` first.
    pub fn encode_head(&self, out: &mut Vec<u8>, min_direct: usize) -> Option<&[u8]> {
        match self {
            Response::Data { id, data } if data.len() >= min_direct => {
                put_u32(out, len_u32(1 + 4 + 4 + data.len()));
                out.push(kind::DATA);
                put_u32(out, *id);
                put_u32(out, len_u32(data.len()));
                Some(data)
            }
            _ => {
                self.encode(out);
                None
            }
        }
    }

    /// Appends the packet, length field included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Response::Version {
                version,
                extensions,
            } => {
                out.push(kind::VERSION);
                put_u32(out, *version);
                for (name, data) in extensions {
                    put_string(out, name.as_bytes());
                    put_string(out, data.as_bytes());
                }
            }
            Response::Status { id, code, message } => {
                out.push(kind::STATUS);
                put_u32(out, *id);
                put_u32(out, *code as u32);
                put_string(out, message.as_bytes());
                put_string(out, b"en");
            }
            Response::Handle { id, handle } => {
                out.push(kind::HANDLE);
                put_u32(out, *id);
                put_string(out, handle);
            }
            Response::Data { id, data } => {
                out.push(kind::DATA);
                put_u32(out, *id);
                put_string(out, data);
            }
            Response::Name { id, entries } => {
                out.push(kind::NAME);
                put_u32(out, *id);
                put_u32(out, len_u32(entries.len()));
                for entry in entries {
                    put_string(out, entry.filename.as_bytes());
                    put_string(out, entry.longname.as_bytes());
                    put_attrs(out, &entry.attrs);
                }
            }
            Response::Attrs { id, attrs } => {
                out.push(kind::ATTRS);
                put_u32(out, *id);
                put_attrs(out, attrs);
            }
            Response::Limits { id, limits } => {
                out.push(kind::EXTENDED_REPLY);
                put_u32(out, *id);
                for value in [
                    limits.max_packet_len,
                    limits.max_read_len,
                    limits.max_write_len,
                    limits.max_open_handles,
                ] {
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
            Response::Statvfs { id, stats } => {
                out.push(kind::EXTENDED_REPLY);
                put_u32(out, *id);
                for value in [
                    stats.block_size,
                    stats.fragment_size,
                    stats.blocks,
                    stats.blocks_free,
                    stats.blocks_available,
                    stats.files,
                    stats.files_free,
                    stats.files_available,
                    stats.fs_id,
                    stats.flags,
                    stats.max_name_len,
                ] {
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
        }
        let len = len_u32(out.len() - start - 4);
        if let Some(slot) = out.get_mut(start..start + 4) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
    }
}

/// Converts a length to the protocol's `uint32`. Every packet we build is far below 4 GiB
/// because its parts are capped, so the saturation never happens in practice.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, len_u32(bytes.len()));
    out.extend_from_slice(bytes);
}

fn put_attrs(out: &mut Vec<u8>, attrs: &FileAttrs) {
    let mut flags = 0;
    if attrs.size.is_some() {
        flags |= attr_flags::SIZE;
    }
    if attrs.uid_gid.is_some() {
        flags |= attr_flags::UIDGID;
    }
    if attrs.permissions.is_some() {
        flags |= attr_flags::PERMISSIONS;
    }
    if attrs.times.is_some() {
        flags |= attr_flags::ACMODTIME;
    }
    put_u32(out, flags);
    if let Some(size) = attrs.size {
        out.extend_from_slice(&size.to_be_bytes());
    }
    if let Some((uid, gid)) = attrs.uid_gid {
        put_u32(out, uid);
        put_u32(out, gid);
    }
    if let Some(permissions) = attrs.permissions {
        put_u32(out, permissions);
    }
    if let Some((atime, mtime)) = attrs.times {
        put_u32(out, atime);
        put_u32(out, mtime);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    /// Builds packet bodies the way a client does.
    #[derive(Default)]
    struct Body(Vec<u8>);

    impl Body {
        fn new(kind: u8) -> Body {
            Body(vec![kind])
        }
        fn u32(mut self, v: u32) -> Body {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Body {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn string(self, s: &[u8]) -> Body {
            let mut b = self.u32(s.len() as u32);
            b.0.extend_from_slice(s);
            b
        }
        fn raw(mut self, bytes: &[u8]) -> Body {
            self.0.extend_from_slice(bytes);
            self
        }
    }

    fn decode(body: Body) -> Result<Request, DecodeError> {
        Request::decode(body.0)
    }

    /// Splits an encoded response into its type byte and the bytes after it, checking the
    /// length field on the way.
    fn encoded(response: &Response) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        response.encode(&mut out);
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4, "length field of {response:?}");
        (out[4], out[5..].to_vec())
    }

    #[test]
    fn init_version() {
        let request = decode(Body::new(kind::INIT).u32(6)).unwrap();
        assert_eq!(request, Request::Init { version: 6 });
    }

    #[test]
    fn init_ignores_extension_pairs() {
        let body = Body::new(kind::INIT)
            .u32(3)
            .string(b"ext@example.com")
            .string(b"1");
        assert_eq!(decode(body).unwrap(), Request::Init { version: 3 });
    }

    #[test]
    fn open_with_attrs() {
        let body = Body::new(kind::OPEN)
            .u32(7)
            .string(b"/a b/\xc3\xa9.txt")
            .u32(open_flags::WRITE | open_flags::CREAT | open_flags::TRUNC)
            .u32(attr_flags::PERMISSIONS | attr_flags::ACMODTIME)
            .u32(0o644)
            .u32(10)
            .u32(20);
        let expected = Request::Open {
            id: 7,
            path: "/a b/é.txt".as_bytes().to_vec(),
            flags: open_flags::WRITE | open_flags::CREAT | open_flags::TRUNC,
            attrs: FileAttrs {
                permissions: Some(0o644),
                times: Some((10, 20)),
                ..FileAttrs::default()
            },
        };
        assert_eq!(decode(body).unwrap(), expected);
    }

    #[test]
    fn attrs_all_fields_and_extended_pairs() {
        let body = Body::new(kind::SETSTAT)
            .u32(1)
            .string(b"f")
            .u32(
                attr_flags::SIZE
                    | attr_flags::UIDGID
                    | attr_flags::PERMISSIONS
                    | attr_flags::ACMODTIME
                    | attr_flags::EXTENDED,
            )
            .u64(99)
            .u32(1000)
            .u32(1001)
            .u32(0o100600)
            .u32(1)
            .u32(2)
            .u32(1)
            .string(b"vendor@example.com")
            .string(b"data");
        let Request::Setstat { attrs, .. } = decode(body).unwrap() else {
            panic!("not SETSTAT");
        };
        assert_eq!(attrs.size, Some(99));
        assert_eq!(attrs.uid_gid, Some((1000, 1001)));
        assert_eq!(attrs.permissions, Some(0o100600));
        assert_eq!(attrs.times, Some((1, 2)));
    }

    #[test]
    fn extended_count_larger_than_packet() {
        let body = Body::new(kind::SETSTAT)
            .u32(1)
            .string(b"f")
            .u32(attr_flags::EXTENDED)
            .u32(u32::MAX);
        assert!(matches!(
            decode(body),
            Err(DecodeError::Truncated {
                field: "extended type",
                ..
            })
        ));
    }

    #[test]
    fn write_moves_data_out() {
        let body = Body::new(kind::WRITE)
            .u32(9)
            .string(&[0, 0, 0, 1])
            .u64(4096)
            .string(b"hello");
        let expected = Request::Write {
            id: 9,
            handle: vec![0, 0, 0, 1],
            offset: 4096,
            data: b"hello".to_vec(),
        };
        assert_eq!(decode(body).unwrap(), expected);
    }

    #[test]
    fn write_split_header_and_data() {
        let body = Body::new(kind::WRITE)
            .u32(9)
            .string(&[0, 0, 0, 1])
            .u64(4096)
            .string(b"hello")
            .0;
        let header_len = write_header_len(&body[..WRITE_PREFIX_LEN]).unwrap();
        assert_eq!(header_len, body.len() - 5);
        let (header, data) = body.split_at(header_len);
        let request = decode_write_parts(header, data.to_vec()).unwrap();
        assert_eq!(request, Request::decode(body.clone()).unwrap());
    }

    #[test]
    fn write_split_rejects_short_data() {
        let header = Body::new(kind::WRITE).u32(9).string(b"h").u64(0).u32(10).0;
        assert!(decode_write_parts(&header, b"short".to_vec()).is_err());
    }

    #[test]
    fn write_header_len_other_packets() {
        let read = Body::new(kind::READ).u32(1).u32(4).0;
        assert_eq!(write_header_len(&read), None);
        let long_handle = Body::new(kind::WRITE).u32(1).u32(100_000).0;
        assert_eq!(write_header_len(&long_handle), None);
        assert_eq!(write_header_len(&[kind::WRITE, 0, 0]), None);
    }

    #[test]
    fn write_data_length_past_end() {
        let body = Body::new(kind::WRITE)
            .u32(9)
            .string(&[0, 0, 0, 1])
            .u64(0)
            .u32(100)
            .raw(b"short");
        assert_eq!(
            decode(body),
            Err(DecodeError::Truncated {
                kind: kind::WRITE,
                field: "data"
            })
        );
    }

    #[test]
    fn write_huge_data_length() {
        let body = Body::new(kind::WRITE)
            .u32(9)
            .string(&[0, 0, 0, 1])
            .u64(0)
            .u32(u32::MAX);
        assert!(decode(body).is_err());
    }

    #[test]
    fn read_request() {
        let body = Body::new(kind::READ)
            .u32(3)
            .string(b"h")
            .u64(1 << 40)
            .u32(u32::MAX);
        let expected = Request::Read {
            id: 3,
            handle: b"h".to_vec(),
            offset: 1 << 40,
            len: u32::MAX,
        };
        assert_eq!(decode(body).unwrap(), expected);
    }

    #[test]
    fn symlink_keeps_openssh_order() {
        let body = Body::new(kind::SYMLINK)
            .u32(5)
            .string(b"target.txt")
            .string(b"/link.txt");
        let expected = Request::Symlink {
            id: 5,
            target: b"target.txt".to_vec(),
            link: b"/link.txt".to_vec(),
        };
        assert_eq!(decode(body).unwrap(), expected);
    }

    #[test]
    fn empty_body() {
        assert_eq!(Request::decode(Vec::new()), Err(DecodeError::Empty));
    }

    #[test]
    fn truncated_at_every_byte() {
        let full = Body::new(kind::OPEN)
            .u32(7)
            .string(b"/file")
            .u32(open_flags::READ)
            .u32(attr_flags::SIZE | attr_flags::ACMODTIME)
            .u64(5)
            .u32(1)
            .u32(2)
            .0;
        assert!(Request::decode(full.clone()).is_ok());
        for cut in 1..full.len() {
            let result = Request::decode(full[..cut].to_vec());
            assert!(result.is_err(), "decoded a body cut at {cut}: {result:?}");
        }
    }

    #[test]
    fn truncated_write_at_every_byte() {
        let full = Body::new(kind::WRITE)
            .u32(1)
            .string(b"hh")
            .u64(0)
            .string(b"data")
            .0;
        for cut in 1..full.len() {
            assert!(
                Request::decode(full[..cut].to_vec()).is_err(),
                "decoded a body cut at {cut}"
            );
        }
    }

    #[test]
    fn string_length_larger_than_packet() {
        let body = Body::new(kind::STAT).u32(1).u32(0xffff_fff0).raw(b"abc");
        assert_eq!(
            decode(body),
            Err(DecodeError::Truncated {
                kind: kind::STAT,
                field: "path"
            })
        );
    }

    #[test]
    fn random_bodies_never_panic() {
        // Bodies that start with every packet type followed by pseudo-random bytes, many of
        // them with plausible small lengths.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut body = vec![(round % 256) as u8];
            body.extend((0..len).map(|_| {
                let byte = next() as u8;
                if byte < 128 { byte % 8 } else { byte }
            }));
            let _ = Request::decode(body.clone());
            if let Some(header_len) = write_header_len(&body) {
                let split = header_len.min(body.len());
                let (header, data) = body.split_at(split);
                let _ = decode_write_parts(header, data.to_vec());
            }
        }
    }

    #[test]
    fn unknown_type_keeps_id() {
        let body = Body::new(99).u32(42).raw(b"whatever");
        assert_eq!(decode(body).unwrap(), Request::Unknown { id: 42, kind: 99 });
    }

    #[test]
    fn unknown_type_without_id() {
        assert!(decode(Body::new(99).raw(b"ab")).is_err());
    }

    #[test]
    fn extended_requests() {
        let rename = Body::new(kind::EXTENDED)
            .u32(1)
            .string(ext::POSIX_RENAME.as_bytes())
            .string(b"a")
            .string(b"b");
        assert_eq!(
            decode(rename).unwrap(),
            Request::Extended {
                id: 1,
                request: Extended::PosixRename {
                    from: b"a".to_vec(),
                    to: b"b".to_vec()
                }
            }
        );
        let limits = Body::new(kind::EXTENDED)
            .u32(2)
            .string(ext::LIMITS.as_bytes());
        assert_eq!(
            decode(limits).unwrap(),
            Request::Extended {
                id: 2,
                request: Extended::Limits
            }
        );
        let copy = Body::new(kind::EXTENDED)
            .u32(3)
            .string(ext::COPY_DATA.as_bytes())
            .string(b"r")
            .u64(1)
            .u64(2)
            .string(b"w")
            .u64(3);
        assert_eq!(
            decode(copy).unwrap(),
            Request::Extended {
                id: 3,
                request: Extended::CopyData {
                    read_handle: b"r".to_vec(),
                    read_offset: 1,
                    len: 2,
                    write_handle: b"w".to_vec(),
                    write_offset: 3
                }
            }
        );
    }

    #[test]
    fn extended_unknown_name() {
        let body = Body::new(kind::EXTENDED)
            .u32(4)
            .string(b"hardlink@openssh.com")
            .string(b"a")
            .string(b"b");
        assert_eq!(
            decode(body).unwrap(),
            Request::Extended {
                id: 4,
                request: Extended::Unknown {
                    name: "hardlink@openssh.com".into()
                }
            }
        );
    }

    #[test]
    fn extended_truncated_arguments() {
        let body = Body::new(kind::EXTENDED)
            .u32(4)
            .string(ext::POSIX_RENAME.as_bytes())
            .string(b"a");
        assert_eq!(
            decode(body).unwrap(),
            Request::Extended {
                id: 4,
                request: Extended::Malformed(DecodeError::Truncated {
                    kind: kind::EXTENDED,
                    field: "newpath"
                })
            }
        );
    }

    #[test]
    fn extended_without_name() {
        let body = Body::new(kind::EXTENDED).u32(15);
        assert_eq!(
            decode(body).unwrap(),
            Request::Extended {
                id: 15,
                request: Extended::Malformed(DecodeError::Truncated {
                    kind: kind::EXTENDED,
                    field: "extended-request"
                })
            }
        );
    }

    #[test]
    fn extended_without_id_fails() {
        let body = Body::new(kind::EXTENDED);
        assert!(decode(body).is_err());
    }

    #[test]
    fn encode_status() {
        let (kind, rest) = encoded(&Response::status(7, StatusCode::NoSuchFile, "gone"));
        assert_eq!(kind, kind::STATUS);
        let expected = Body::default()
            .u32(7)
            .u32(2)
            .string(b"gone")
            .string(b"en")
            .0;
        assert_eq!(rest, expected);
    }

    #[test]
    fn encode_version_with_extensions() {
        let response = Response::Version {
            version: 3,
            extensions: vec![(ext::LIMITS, "1")],
        };
        let (kind, rest) = encoded(&response);
        assert_eq!(kind, kind::VERSION);
        let expected = Body::default()
            .u32(3)
            .string(b"limits@openssh.com")
            .string(b"1")
            .0;
        assert_eq!(rest, expected);
    }

    #[test]
    fn encode_data() {
        let (kind, rest) = encoded(&Response::Data {
            id: 1,
            data: b"xyz".to_vec(),
        });
        assert_eq!(kind, kind::DATA);
        assert_eq!(rest, Body::default().u32(1).string(b"xyz").0);
    }

    #[test]
    fn encode_name_with_attrs() {
        let response = Response::Name {
            id: 2,
            entries: vec![NameEntry {
                filename: "a".into(),
                longname: "-rw-r--r-- a".into(),
                attrs: FileAttrs {
                    size: Some(5),
                    uid_gid: Some((1, 2)),
                    permissions: Some(0o100644),
                    times: Some((3, 4)),
                },
            }],
        };
        let (kind, rest) = encoded(&response);
        assert_eq!(kind, kind::NAME);
        let expected = Body::default()
            .u32(2)
            .u32(1)
            .string(b"a")
            .string(b"-rw-r--r-- a")
            .u32(0xf)
            .u64(5)
            .u32(1)
            .u32(2)
            .u32(0o100644)
            .u32(3)
            .u32(4)
            .0;
        assert_eq!(rest, expected);
    }

    #[test]
    fn encode_head_splits_large_data() {
        let response = Response::Data {
            id: 4,
            data: vec![9; 100],
        };
        let mut whole = Vec::new();
        response.encode(&mut whole);
        let mut head = Vec::new();
        let payload = response.encode_head(&mut head, 50).unwrap();
        assert_eq!([head.as_slice(), payload].concat(), whole);
        let mut small = Vec::new();
        assert!(response.encode_head(&mut small, 101).is_none());
        assert_eq!(small, whole);
    }

    #[test]
    fn encode_empty_attrs() {
        let (_, rest) = encoded(&Response::Attrs {
            id: 1,
            attrs: FileAttrs::default(),
        });
        assert_eq!(rest, Body::default().u32(1).u32(0).0);
    }

    #[test]
    fn encode_limits() {
        let limits = Limits {
            max_packet_len: 1,
            max_read_len: 2,
            max_write_len: 3,
            max_open_handles: 4,
        };
        let (kind, rest) = encoded(&Response::Limits { id: 9, limits });
        assert_eq!(kind, kind::EXTENDED_REPLY);
        let expected = Body::default().u32(9).u64(1).u64(2).u64(3).u64(4).0;
        assert_eq!(rest, expected);
    }

    #[test]
    fn encode_appends() {
        let mut out = vec![0xaa];
        Response::ok(1).encode(&mut out);
        Response::ok(2).encode(&mut out);
        assert_eq!(out[0], 0xaa);
        let first = u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize;
        assert_eq!(out.len(), 1 + 2 * (4 + first));
    }
}
