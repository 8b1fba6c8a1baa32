//! The operations behind each request, on the user's [`Vfs`].
//!
//! Each function returns the response to send, or a [`Failure`] that becomes an
//! SSH_FXP_STATUS. The session orders requests, so by the time a function here runs, every
//! earlier conflicting request has finished.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_vfs::{FsStats, Metadata, Permission, VPath, Vfs, VfsError, WriteOptions};

use super::handle::{Deferred, Handle, HandleKind, Listing, WriterHandle};
use super::longname;
use super::packet::{FileAttrs, NameEntry, Response, StatusCode, open_flags, statvfs_flags};
use super::{ConnectionBudget, MAX_LISTED_ENTRIES, MAX_READ_LEN, READDIR_BATCH};

/// Permission bits that the server's usual umask (022) removes from the mode a client asks
/// for when it creates a file or directory, as OpenSSH's sftp-server run by sshd does.
const UMASK: u32 = 0o022;

/// The mode new files and directories get from [`Vfs`] without further changes.
const VFS_FILE_MODE: u32 = 0o644;
const VFS_DIR_MODE: u32 = 0o755;

/// The largest file offset plus one: `off_t` is a signed 64-bit number.
const MAX_FILE_OFFSET: u64 = i64::MAX as u64;

/// Linux `statvfs` flags.
const ST_RDONLY: u64 = 1;
const ST_NOSUID: u64 = 2;

/// A request that failed, sent to the client as SSH_FXP_STATUS.
#[derive(Debug)]
pub struct Failure {
    pub code: StatusCode,
    pub message: String,
    /// The failure is the server's (an I/O error or a full disk) rather than the client's.
    pub local: bool,
}

impl Failure {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            local: false,
        }
    }

    pub fn generic(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::Failure, message)
    }

    pub fn into_response(self, id: u32) -> Response {
        Response::status(id, self.code, self.message)
    }
}

impl From<VfsError> for Failure {
    /// Maps file errors to the status codes OpenSSH's sftp-server uses for the same errno.
    fn from(error: VfsError) -> Failure {
        let code = match &error {
            VfsError::NotFound | VfsError::NotADirectory => StatusCode::NoSuchFile,
            VfsError::PermissionDenied => StatusCode::PermissionDenied,
            VfsError::Unsupported(_) => StatusCode::OpUnsupported,
            // SFTP v3 has no status code for quotas, so the message carries "quota exceeded".
            VfsError::QuotaExceeded => StatusCode::Failure,
            _ => StatusCode::Failure,
        };
        Failure {
            code,
            message: error.to_string(),
            local: !error.is_client_error(),
        }
    }
}

pub type OpResult = Result<Response, Failure>;

/// Parses a path from the client. The client's working directory is the home, `/`.
pub fn parse_path(bytes: &[u8]) -> Result<VPath, Failure> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Failure::generic("path is not valid UTF-8: only UTF-8 names are served"))?;
    Ok(VPath::parse(text)?)
}

/// Converts a time to the protocol's `uint32` seconds, clamped to its range.
fn to_secs(time: SystemTime) -> u32 {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn from_secs(secs: u32) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::from(secs))
}

pub fn attrs_of(meta: &Metadata) -> FileAttrs {
    FileAttrs {
        size: Some(meta.size),
        uid_gid: Some((meta.uid, meta.gid)),
        permissions: Some(meta.mode),
        times: Some((to_secs(meta.accessed), to_secs(meta.modified))),
    }
}

/// Builds a NAME reply with one path, as REALPATH and READLINK send it.
fn single_name(id: u32, path: String) -> Response {
    Response::Name {
        id,
        entries: vec![NameEntry {
            longname: path.clone(),
            filename: path,
            attrs: FileAttrs::default(),
        }],
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The locks guard plain data that no code path leaves half-updated, so the data of a
    // poisoned lock is still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens a file. Without the WRITE flag the file is opened for reading, and the creation
/// flags are ignored, as they are for OpenSSH's `O_RDONLY` opens.
pub async fn open(
    vfs: &Vfs,
    path: &VPath,
    flags: u32,
    attrs: &FileAttrs,
) -> Result<Handle, Failure> {
    if flags & open_flags::WRITE == 0 {
        let reader = vfs.open_read(path).await?;
        return Ok(Handle::new(path.clone(), HandleKind::Reader(reader)));
    }
    let create = flags & open_flags::CREAT != 0;
    let options = WriteOptions {
        create,
        exclusive: create && flags & open_flags::EXCL != 0,
        truncate: flags & open_flags::TRUNC != 0,
        append: flags & open_flags::APPEND != 0,
    };
    // A replaced file keeps its permissions, as with an open(2) that truncates, and a new
    // file gets the requested ones. Either way a mode other than the one the file is
    // created with is set once the upload is published.
    // NOTE: Vfs writes an atomic upload to a new 0644 file, even when it replaces a file with
    // other permissions, so they are restored here.
    let publish_mode = match vfs.metadata(path).await {
        Ok(existing) if existing.is_file() => Some(existing.permissions()),
        _ if create => attrs.permissions.map(|mode| mode & 0o777 & !UMASK),
        _ => None,
    }
    .filter(|mode| *mode != VFS_FILE_MODE);
    let writer = vfs.open_write(path, options).await?;
    let handle = WriterHandle {
        writer,
        readable: flags & open_flags::READ != 0,
        append: options.append,
        deferred: Mutex::new(Deferred {
            publish_mode,
            ..Deferred::default()
        }),
    };
    Ok(Handle::new(path.clone(), HandleKind::Writer(handle)))
}

/// Opens a directory listing. The connection reads one folder at a time, and the entries
/// count toward its [`MAX_LISTED_ENTRIES`] until the listing is read or closed.
pub async fn opendir(
    vfs: &Vfs,
    path: &VPath,
    limits: &ConnectionBudget,
) -> Result<Handle, Failure> {
    // TODO: `Vfs::read_dir` returns the whole folder at once, so a very large folder is held in
    // memory here before the limit is checked. Reading it in batches at READDIR needs a
    // streaming listing in ferry_vfs.
    let reading = limits.listing.lock().await;
    let entries = vfs.read_dir(path).await?;
    let count = u32::try_from(entries.len().min(MAX_LISTED_ENTRIES)).unwrap_or(u32::MAX);
    let reservation = Arc::clone(&limits.listed_entries)
        .try_acquire_many_owned(count)
        .map_err(|_| {
            Failure::generic(format!(
                "cannot list {path}: directory handles of this connection already hold \
                 {MAX_LISTED_ENTRIES} entries; read or close them first"
            ))
        })?;
    drop(reading);
    let listing = Listing {
        entries: entries.into_iter(),
        reservation: Some(reservation),
    };
    Ok(Handle::new(
        path.clone(),
        HandleKind::Dir(Mutex::new(listing)),
    ))
}

/// Closes a handle. Closing an upload publishes it, then applies the mode and times that
/// OPEN and FSETSTAT requested. The caller must hold the only reference by then.
pub async fn close(id: u32, vfs: &Vfs, handle: Arc<Handle>) -> OpResult {
    let handle = Arc::try_unwrap(handle)
        .map_err(|_| Failure::generic("handle is still in use by another request"))?;
    let transferred = handle.transferred();
    let elapsed_ms = handle.opened.elapsed().as_millis() as u64;
    let path = handle.path;
    match handle.kind {
        HandleKind::Dir(_) => {}
        HandleKind::Reader(_) => {
            if transferred > 0 {
                tracing::info!(path = ?path.as_str(), size_bytes = transferred, elapsed_ms, "download finished");
            }
        }
        HandleKind::Writer(writer) => {
            let deferred = writer
                .deferred
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            writer.writer.commit().await?;
            tracing::info!(path = ?path.as_str(), size_bytes = transferred, elapsed_ms, "upload finished");
            if let Some(mode) = deferred.publish_mode
                && let Err(error) = vfs.set_mode(&path, mode).await
            {
                tracing::debug!(path = ?path.as_str(), %error, "mode of the uploaded file left as created");
            }
            if let Some(mode) = deferred.mode {
                vfs.set_mode(&path, mode).await?;
            }
            if let Some((accessed, modified)) = deferred.times {
                vfs.set_times(&path, Some(accessed), Some(modified)).await?;
            }
        }
    }
    Ok(Response::ok(id))
}

/// Reads up to `len` bytes at `offset`. An offset at or past the largest that a file can
/// have (`off_t` is a signed 64-bit number) is at the end of the file.
pub async fn read(id: u32, handle: &Handle, offset: u64, len: u32) -> OpResult {
    let Some(room) = MAX_FILE_OFFSET.checked_sub(offset).filter(|room| *room > 0) else {
        return Ok(Response::status(id, StatusCode::Eof, "end of file"));
    };
    let len = u64::from(len.min(MAX_READ_LEN)).min(room) as usize;
    let data = match &handle.kind {
        HandleKind::Reader(reader) => reader.read_at(offset, len).await?,
        HandleKind::Writer(writer) if writer.readable => writer.writer.read_at(offset, len).await?,
        HandleKind::Writer(_) => {
            return Err(Failure::new(
                StatusCode::PermissionDenied,
                "file is not open for reading",
            ));
        }
        HandleKind::Dir(_) => return Err(Failure::generic("handle is a directory")),
    };
    if data.is_empty() {
        return Ok(Response::status(id, StatusCode::Eof, "end of file"));
    }
    handle.add_transferred(data.len());
    Ok(Response::Data { id, data })
}

pub async fn write(id: u32, handle: &Handle, offset: u64, data: Vec<u8>) -> OpResult {
    let HandleKind::Writer(writer) = &handle.kind else {
        return Err(Failure::new(
            StatusCode::PermissionDenied,
            "file is not open for writing",
        ));
    };
    let len = data.len();
    writer.writer.write_at(offset, data).await?;
    handle.add_transferred(len);
    Ok(Response::ok(id))
}

pub async fn fstat(id: u32, handle: &Handle) -> OpResult {
    let meta = file_metadata(handle).await?;
    Ok(Response::Attrs {
        id,
        attrs: attrs_of(&meta),
    })
}

/// Returns the metadata of the open file behind a file handle.
async fn file_metadata(handle: &Handle) -> Result<Metadata, Failure> {
    match &handle.kind {
        HandleKind::Reader(reader) => Ok(reader.metadata().await?),
        HandleKind::Writer(writer) => Ok(writer.writer.metadata().await?),
        HandleKind::Dir(_) => Err(Failure::generic("handle is a directory")),
    }
}

pub async fn stat(id: u32, vfs: &Vfs, path: &VPath, follow: bool) -> OpResult {
    let meta = if follow {
        vfs.metadata(path).await?
    } else {
        vfs.symlink_metadata(path).await?
    };
    Ok(Response::Attrs {
        id,
        attrs: attrs_of(&meta),
    })
}

/// Rejects a change of owner or group; the same ids as now are accepted, because some
/// clients send back every attribute they read.
fn check_owner(attrs: &FileAttrs, current: &Metadata) -> Result<(), Failure> {
    match attrs.uid_gid {
        Some(ids) if ids != (current.uid, current.gid) => Err(Failure::new(
            StatusCode::PermissionDenied,
            format!(
                "changing owner or group to {}:{} is not supported",
                ids.0, ids.1
            ),
        )),
        _ => Ok(()),
    }
}

/// Applies attributes to a path: size, then permissions, then times, so that truncating
/// does not undo a modification time set in the same request.
pub async fn setstat(id: u32, vfs: &Vfs, path: &VPath, attrs: &FileAttrs) -> OpResult {
    if attrs.uid_gid.is_some() {
        check_owner(attrs, &vfs.metadata(path).await?)?;
    }
    if let Some(size) = attrs.size {
        vfs.set_len(path, size).await?;
    }
    if let Some(mode) = attrs.permissions {
        vfs.set_mode(path, mode & 0o7777).await?;
    }
    if let Some((atime, mtime)) = attrs.times {
        vfs.set_times(path, Some(from_secs(atime)), Some(from_secs(mtime)))
            .await?;
    }
    Ok(Response::ok(id))
}

/// Applies attributes through a handle. An upload's size changes at once; its permissions
/// and times wait for CLOSE, because in atomic mode the file is published only then.
pub async fn fsetstat(id: u32, vfs: &Vfs, handle: &Handle, attrs: &FileAttrs) -> OpResult {
    let HandleKind::Writer(writer) = &handle.kind else {
        return setstat(id, vfs, &handle.path, attrs).await;
    };
    if attrs.uid_gid.is_some() {
        check_owner(attrs, &writer.writer.metadata().await?)?;
    }
    let allows = |permission| vfs.permissions().allows(&handle.path, permission);
    if attrs.permissions.is_some() && !allows(Permission::Chmod)
        || attrs.times.is_some() && !allows(Permission::Chtimes)
    {
        return Err(VfsError::PermissionDenied.into());
    }
    if let Some(size) = attrs.size {
        writer.writer.set_len(size).await?;
    }
    let mut deferred = lock(&writer.deferred);
    if let Some(mode) = attrs.permissions {
        deferred.mode = Some(mode & 0o7777);
    }
    if let Some((atime, mtime)) = attrs.times {
        deferred.times = Some((from_secs(atime), from_secs(mtime)));
    }
    Ok(Response::ok(id))
}

/// Returns the next batch of a directory listing, or EOF when it is exhausted.
pub fn readdir(id: u32, handle: &Handle) -> OpResult {
    let HandleKind::Dir(listing) = &handle.kind else {
        return Err(Failure::generic("handle is not a directory"));
    };
    let now = SystemTime::now();
    let mut listing = lock(listing);
    let entries: Vec<NameEntry> = listing
        .entries
        .by_ref()
        .take(READDIR_BATCH)
        .map(|entry| NameEntry {
            longname: longname::format(&entry.name, &entry.metadata, now),
            attrs: attrs_of(&entry.metadata),
            filename: entry.name,
        })
        .collect();
    if entries.is_empty() {
        // The listing is used up; its memory and reservation go back to the connection.
        listing.entries = Vec::new().into_iter();
        listing.reservation = None;
        return Ok(Response::status(id, StatusCode::Eof, "end of directory"));
    }
    Ok(Response::Name { id, entries })
}

pub async fn remove(id: u32, vfs: &Vfs, path: &VPath) -> OpResult {
    vfs.remove_file(path).await?;
    Ok(Response::ok(id))
}

pub async fn mkdir(id: u32, vfs: &Vfs, path: &VPath, attrs: &FileAttrs) -> OpResult {
    vfs.create_dir(path).await?;
    if let Some(mode) = attrs.permissions.map(|mode| mode & 0o777 & !UMASK)
        && mode != VFS_DIR_MODE
        && let Err(error) = vfs.set_mode(path, mode).await
    {
        tracing::debug!(path = ?path.as_str(), %error, "mode of the new directory left as created");
    }
    Ok(Response::ok(id))
}

pub async fn rmdir(id: u32, vfs: &Vfs, path: &VPath) -> OpResult {
    vfs.remove_dir(path).await?;
    Ok(Response::ok(id))
}

/// Renames a file. Plain RENAME fails when the target exists, as SFTP v3 requires;
/// `posix-rename@openssh.com` replaces it.
pub async fn rename(id: u32, vfs: &Vfs, from: &VPath, to: &VPath, replace: bool) -> OpResult {
    vfs.rename(from, to, replace).await?;
    Ok(Response::ok(id))
}

/// Returns the canonical form of a path. Paths are normalized without touching the disk,
/// so a path that does not exist yet (the target of an upload) has one too.
pub fn realpath(id: u32, path: &VPath) -> OpResult {
    Ok(single_name(id, path.to_string()))
}

/// Expands a leading `~` or `~/` to the home directory, `/`, then returns the canonical
/// path like REALPATH.
pub fn expand_path(id: u32, bytes: &[u8]) -> OpResult {
    let expanded: Vec<u8> = match bytes {
        [b'~'] => b"/".to_vec(),
        [b'~', b'/', rest @ ..] => [b"/", rest].concat(),
        [b'~', ..] => {
            return Err(Failure::new(
                StatusCode::NoSuchFile,
                "only the own home directory (~) can be expanded",
            ));
        }
        other => other.to_vec(),
    };
    realpath(id, &parse_path(&expanded)?)
}

pub async fn readlink(id: u32, vfs: &Vfs, path: &VPath) -> OpResult {
    let target = vfs.read_link(path).await?;
    Ok(single_name(id, target))
}

/// Creates a symlink at `link` pointing to `target`. An absolute target means a path in the
/// home, and [`Vfs::symlink`] rejects relative targets that climb above it.
pub async fn symlink(id: u32, vfs: &Vfs, target: &[u8], link: &VPath) -> OpResult {
    let target = std::str::from_utf8(target)
        .map_err(|_| Failure::generic("symlink target is not valid UTF-8"))?;
    vfs.symlink(target, link).await?;
    Ok(Response::ok(id))
}

pub async fn statvfs(id: u32, vfs: &Vfs, path: &VPath) -> OpResult {
    let stats = vfs.statvfs(path).await?;
    let mut flags = 0;
    if stats.flags & ST_RDONLY != 0 {
        flags |= statvfs_flags::READ_ONLY;
    }
    if stats.flags & ST_NOSUID != 0 {
        flags |= statvfs_flags::NO_SUID;
    }
    let stats = FsStats { flags, ..stats };
    Ok(Response::Statvfs { id, stats })
}

/// Reports the file system of an open handle. An upload in atomic mode may not exist under
/// its name yet, so file handles ask about their folder, which is on the same file system.
pub async fn fstatvfs(id: u32, vfs: &Vfs, handle: &Handle) -> OpResult {
    let path = if handle.is_dir() {
        handle.path.clone()
    } else {
        handle.path.parent()
    };
    statvfs(id, vfs, &path).await
}

pub async fn fsync(id: u32, handle: &Handle) -> OpResult {
    match &handle.kind {
        HandleKind::Writer(writer) => writer.writer.sync().await?,
        HandleKind::Reader(_) => {}
        HandleKind::Dir(_) => return Err(Failure::generic("handle is a directory")),
    }
    Ok(Response::ok(id))
}

/// Copies `len` bytes (0 means up to the end of the file) from one open file to another
/// in chunks of the maximum read length, for the `copy-data` extension.
///
/// The copy ends at the source's size when the request started, so a copy into the file it
/// reads cannot chase its own writes. Overlapping ranges of the same path are rejected, as
/// OpenSSH's sftp-server rejects them for the same file.
pub async fn copy_data(
    id: u32,
    source: &Handle,
    read_offset: u64,
    len: u64,
    target: &Handle,
    write_offset: u64,
) -> OpResult {
    let HandleKind::Writer(writer) = &target.kind else {
        return Err(Failure::new(
            StatusCode::PermissionDenied,
            "copy target is not open for writing",
        ));
    };
    let size = file_metadata(source).await?.size;
    let available = size.saturating_sub(read_offset);
    let len = if len == 0 {
        available
    } else {
        len.min(available)
    };
    // NOTE: two paths that lead to one file (a symlink or a hard link) are not recognised as
    // the same file. Comparing device and inode would need them in ferry_vfs::Metadata.
    if source.path == target.path && ranges_overlap(read_offset, write_offset, len) {
        return Err(Failure::generic(format!(
            "copy-data of {len} bytes from offset {read_offset} to offset {write_offset} of \
             {} overlaps itself",
            source.path
        )));
    }
    let mut copied: u64 = 0;
    while copied < len {
        let chunk = (len - copied).min(u64::from(MAX_READ_LEN)) as u32;
        let (Some(from), Some(to)) = (
            read_offset.checked_add(copied),
            write_offset.checked_add(copied),
        ) else {
            return Err(Failure::generic(format!(
                "copy-data offset out of range: {write_offset} plus {len} bytes"
            )));
        };
        let Response::Data { data, .. } = read(id, source, from, chunk).await? else {
            break; // end of file
        };
        let n = data.len() as u64;
        writer.writer.write_at(to, data).await?;
        target.add_transferred(n as usize);
        copied += n;
    }
    Ok(Response::ok(id))
}

/// Returns whether `len` bytes at `first` and `len` bytes at `second` share a byte.
fn ranges_overlap(first: u64, second: u64, len: u64) -> bool {
    len > 0 && first < second.saturating_add(len) && second < first.saturating_add(len)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn name_of(response: Response) -> String {
        match response {
            Response::Name { mut entries, .. } => entries.remove(0).filename,
            other => panic!("not a NAME reply: {other:?}"),
        }
    }

    #[test]
    fn realpath_of_dot_is_root() {
        let path = parse_path(b".").unwrap();
        assert_eq!(name_of(realpath(1, &path).unwrap()), "/");
    }

    #[test]
    fn realpath_stays_in_home() {
        let path = parse_path(b"../../etc/./passwd").unwrap();
        assert_eq!(name_of(realpath(1, &path).unwrap()), "/etc/passwd");
    }

    #[test]
    fn expand_tilde() {
        assert_eq!(name_of(expand_path(1, b"~").unwrap()), "/");
        assert_eq!(name_of(expand_path(1, b"~/a/b").unwrap()), "/a/b");
        assert_eq!(name_of(expand_path(1, b"x/../y").unwrap()), "/y");
    }

    #[test]
    fn expand_other_user_fails() {
        let failure = expand_path(1, b"~root/x").unwrap_err();
        assert_eq!(failure.code, StatusCode::NoSuchFile);
    }

    #[test]
    fn invalid_utf8_path() {
        let failure = parse_path(b"\xff\xfe").unwrap_err();
        assert_eq!(failure.code, StatusCode::Failure);
        assert!(failure.message.contains("UTF-8"), "{}", failure.message);
    }

    #[test]
    fn error_codes() {
        let cases = [
            (VfsError::NotFound, StatusCode::NoSuchFile),
            (VfsError::NotADirectory, StatusCode::NoSuchFile),
            (VfsError::PermissionDenied, StatusCode::PermissionDenied),
            (VfsError::AlreadyExists, StatusCode::Failure),
            (VfsError::DirectoryNotEmpty, StatusCode::Failure),
            (VfsError::Unsupported("x"), StatusCode::OpUnsupported),
            (VfsError::StorageFull, StatusCode::Failure),
            (VfsError::QuotaExceeded, StatusCode::Failure),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let failure = Failure::from(error);
            assert_eq!(failure.code, code, "{text}");
            assert_eq!(failure.message, text);
        }
    }

    #[test]
    fn full_disk_is_local() {
        assert!(Failure::from(VfsError::StorageFull).local);
        assert!(!Failure::from(VfsError::NotFound).local);
    }

    #[test]
    fn time_conversion_clamps() {
        assert_eq!(to_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(to_secs(UNIX_EPOCH + Duration::from_secs(1 << 40)), u32::MAX);
        assert_eq!(to_secs(from_secs(1234)), 1234);
    }
}
