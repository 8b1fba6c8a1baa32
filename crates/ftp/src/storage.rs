//! The libunftp storage back-end over a user's [`Vfs`].
//!
//! libunftp passes paths that it built by joining the client's argument to its working
//! directory, so they may still contain `.` and `..`; [`VPath`] normalizes them inside the
//! home directory. Uploads go through [`Vfs::open_write`] and are committed only when the
//! whole stream arrived and the client neither sent a command (ABOR) nor went away
//! meanwhile, so in atomic mode an interrupted upload never replaces a file. Over TLS the
//! stream must end with the client's close_notify; a bare TCP close may have cut it short,
//! so such an upload is discarded like any other interrupted one.

use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ferry_vfs::{FileKind, FileReader, FileWriter, VPath, Vfs, VfsError, WriteOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, debug, info, warn};
use unftp_core::auth::UserDetail;
use unftp_core::storage::{
    Error, ErrorKind, FEATURE_RESTART, Fileinfo, Metadata, Permissions, Result, StorageBackend,
};

use crate::connection::ConnectionState;

/// Bytes read from the socket or the file per step of a transfer.
const CHUNK_SIZE: usize = 256 * 1024;

/// Time an upload waits after its data stream ended for the control connection to close,
/// which shows that the client was killed rather than done. The sockets of a killed client
/// close at about the same moment, in either order. This margin covers jitter between the
/// two connections, and it adds the same delay to every upload.
const CONTROL_CLOSE_GRACE: Duration = Duration::from_millis(20);

/// File metadata from `stat`, plus a symlink's target for `LIST`.
#[derive(Clone, Debug)]
pub(crate) struct FileMetadata {
    inner: ferry_vfs::Metadata,
    link_target: Option<PathBuf>,
}

impl Metadata for FileMetadata {
    fn len(&self) -> u64 {
        self.inner.size
    }

    fn is_dir(&self) -> bool {
        self.inner.kind == FileKind::Dir
    }

    fn is_file(&self) -> bool {
        self.inner.kind == FileKind::File
    }

    fn is_symlink(&self) -> bool {
        self.inner.kind == FileKind::Symlink
    }

    fn modified(&self) -> Result<SystemTime> {
        Ok(self.inner.modified)
    }

    fn gid(&self) -> u32 {
        self.inner.gid
    }

    fn uid(&self) -> u32 {
        self.inner.uid
    }

    fn links(&self) -> u64 {
        self.inner.nlink
    }

    fn permissions(&self) -> Permissions {
        Permissions(self.inner.permissions())
    }

    fn readlink(&self) -> Option<&Path> {
        self.link_target.as_deref()
    }
}

/// The files of one FTP session. libunftp creates it per control connection; the [`Vfs`]
/// appears in the connection state once the login succeeded.
pub(crate) struct VfsStorage {
    state: Arc<ConnectionState>,
}

impl VfsStorage {
    pub(crate) fn new(state: Arc<ConnectionState>) -> VfsStorage {
        VfsStorage { state }
    }

    /// Returns the session's file view and the normalized path.
    fn resolve(&self, path: &Path) -> Result<(Vfs, VPath)> {
        let Some(vfs) = self.state.vfs() else {
            return Err(Error::new(ErrorKind::PermissionDenied, "not logged in"));
        };
        let Some(text) = path.to_str() else {
            return Err(Error::new(
                ErrorKind::FileNameNotAllowedError,
                "path is not valid UTF-8",
            ));
        };
        let vpath = VPath::parse(text).map_err(|error| storage_error(error, path))?;
        Ok((vfs, vpath))
    }

    /// Lists a directory, or returns the single entry of a file, as `ls` does. A symlink is
    /// shown as its target when that lies inside the home, so that clients can open linked
    /// folders. Any other symlink is shown as a link with its target path.
    async fn entries(&self, path: &Path) -> Result<Vec<Fileinfo<PathBuf, FileMetadata>>> {
        let (vfs, dir) = self.resolve(path)?;
        let meta = vfs
            .metadata(&dir)
            .await
            .map_err(|error| storage_error(error, path))?;
        if !meta.is_dir() {
            return Ok(vec![Fileinfo {
                path: PathBuf::from(dir.file_name().unwrap_or("/")),
                metadata: FileMetadata {
                    inner: meta,
                    link_target: None,
                },
            }]);
        }
        let listing = vfs
            .read_dir(&dir)
            .await
            .map_err(|error| storage_error(error, path))?;
        let mut entries = Vec::with_capacity(listing.len());
        for entry in listing {
            let mut metadata = FileMetadata {
                inner: entry.metadata,
                link_target: None,
            };
            if metadata.inner.kind == FileKind::Symlink
                && let Ok(child) = dir.join(&entry.name)
            {
                match vfs.metadata(&child).await {
                    Ok(target) => metadata.inner = target,
                    Err(_) => {
                        metadata.link_target = vfs.read_link(&child).await.ok().map(Into::into)
                    }
                }
            }
            entries.push(Fileinfo {
                path: PathBuf::from(entry.name),
                metadata,
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Runs storage work inside the connection's span, because libunftp calls the back-end
    /// from tasks of its own.
    async fn in_span<T>(&self, work: impl Future<Output = T>) -> T {
        work.instrument(self.state.span.clone()).await
    }

    /// Lists for LIST, NLST and MLSD. libunftp has sent 150 before it requests the listing,
    /// and a 550 after a 150 makes clients such as rclone report a failed transfer rather
    /// than a missing folder, so a missing path lists as empty.
    ///
    /// libunftp strips `ls` options such as `-la` from LIST only. A missing last component
    /// that starts with `-` is taken for such an option, and its folder is listed.
    async fn data_listing(&self, path: &Path) -> Result<Vec<Fileinfo<PathBuf, FileMetadata>>> {
        self.check_data_tls()?;
        let (vfs, dir) = self.resolve(path)?;
        if let Err(VfsError::NotFound) = vfs.metadata(&dir).await {
            if dir.file_name().is_some_and(|name| name.starts_with('-')) {
                let parent = PathBuf::from(dir.parent().as_str());
                return self.entries(&parent).await;
            }
            debug!(path = ?dir.as_str(), "listing of a missing path sent as empty");
            return Ok(Vec::new());
        }
        self.entries(path).await
    }

    /// Rejects a data transfer when the binding requires TLS and the data connection has
    /// none; see [`ConnectionState::check_data_tls`].
    fn check_data_tls(&self) -> Result<()> {
        if self.state.check_data_tls() {
            Ok(())
        } else {
            warn!(
                connection_id = %self.state.id,
                "data connection without TLS rejected; this listener requires PROT P"
            );
            Err(Error::new(
                ErrorKind::PermissionDenied,
                "TLS is required on the data connection",
            ))
        }
    }
}

impl fmt::Debug for VfsStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfsStorage")
            .field("connection_id", &self.state.id)
            .finish()
    }
}

#[async_trait]
impl<User: UserDetail> StorageBackend<User> for VfsStorage {
    type Metadata = FileMetadata;

    fn name(&self) -> &str {
        "ferry-vfs"
    }

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &User,
        path: P,
    ) -> Result<FileMetadata> {
        self.in_span(async move {
            let (vfs, vpath) = self.resolve(path.as_ref())?;
            let inner = vfs
                .metadata(&vpath)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))?;
            Ok(FileMetadata {
                inner,
                link_target: None,
            })
        })
        .await
    }

    /// Serves MLSD, the one data command that calls it directly.
    async fn list<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &User,
        path: P,
    ) -> Result<Vec<Fileinfo<PathBuf, FileMetadata>>>
    where
        FileMetadata: Metadata,
    {
        self.in_span(async move { self.data_listing(path.as_ref()).await })
            .await
    }

    async fn list_fmt<P>(&self, _user: &User, path: P) -> Result<io::Cursor<Vec<u8>>>
    where
        P: AsRef<Path> + Send + fmt::Debug,
        FileMetadata: Metadata + 'static,
    {
        self.in_span(async move {
            let mut text = String::new();
            for entry in self.data_listing(path.as_ref()).await? {
                let _ = write!(text, "{entry}\r\n");
            }
            Ok(io::Cursor::new(text.into_bytes()))
        })
        .await
    }

    /// Serves `STAT path`, whose reply goes over the control connection.
    async fn list_vec<P>(&self, _user: &User, path: P) -> Result<Vec<String>>
    where
        P: AsRef<Path> + Send + fmt::Debug,
        FileMetadata: Metadata + 'static,
    {
        self.in_span(async move {
            let entries = self.entries(path.as_ref()).await?;
            Ok(entries.iter().map(ToString::to_string).collect())
        })
        .await
    }

    async fn nlst<P>(&self, _user: &User, path: P) -> io::Result<io::Cursor<Vec<u8>>>
    where
        P: AsRef<Path> + Send + fmt::Debug,
        FileMetadata: Metadata + 'static,
    {
        self.in_span(async move {
            let to_io = |error: Error| io::Error::new(io::ErrorKind::NotFound, error);
            let mut text = String::new();
            for entry in self.data_listing(path.as_ref()).await.map_err(to_io)? {
                let _ = write!(text, "{}\r\n", entry.path.display());
            }
            Ok(io::Cursor::new(text.into_bytes()))
        })
        .await
    }

    async fn get<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &User,
        path: P,
        start_pos: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        self.in_span(async move {
            self.check_data_tls()?;
            let (vfs, vpath) = self.resolve(path.as_ref())?;
            let reader = vfs
                .open_read(&vpath)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))?;
            let file = reader
                .into_stream(start_pos)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))?;
            let reader: Box<dyn AsyncRead + Send + Sync + Unpin> =
                Box::new(tokio::io::BufReader::with_capacity(CHUNK_SIZE, file));
            Ok(reader)
        })
        .await
    }

    /// Sends a file from `start_pos`, reading the next chunk while the previous one is sent.
    async fn get_into<'a, P, W: ?Sized>(
        &self,
        _user: &User,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> Result<u64>
    where
        W: AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + fmt::Debug,
    {
        self.in_span(async move {
            self.check_data_tls()?;
            let (vfs, vpath) = self.resolve(path.as_ref())?;
            let reader = vfs
                .open_read(&vpath)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))?;
            let watch = self.state.watch_control();
            let sent = tokio::select! {
                biased;
                () = watch.activity() => {
                    debug!(path = ?vpath.as_str(), "download stopped: the client sent a command or closed the control connection");
                    return Err(aborted_error());
                }
                sent = send_file(&reader, output, start_pos) => sent,
            };
            let size_bytes = sent.map_err(|error| match error {
                TransferError::File(error) => storage_error(error, path.as_ref()),
                TransferError::Connection(error) => transfer_error(error),
            })?;
            debug!(path = ?vpath.as_str(), size_bytes, start_pos, "download sent");
            Ok(size_bytes)
        })
        .await
    }

    /// Receives a file and commits it only when the client ended the data stream, sent no
    /// command meanwhile (ABOR), and is still connected.
    async fn put<
        P: AsRef<Path> + Send + fmt::Debug,
        R: AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        _user: &User,
        mut input: R,
        path: P,
        start_pos: u64,
    ) -> Result<u64> {
        self.in_span(async move {
            self.check_data_tls()?;
            let (vfs, vpath) = self.resolve(path.as_ref())?;
            let watch = self.state.watch_control();
            let options = if start_pos == 0 {
                WriteOptions::replace()
            } else {
                WriteOptions::resume()
            };
            let writer = vfs
                .open_write(&vpath, options)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))?;
            if start_pos > 0 {
                truncate_for_restart(&writer, start_pos)
                    .await
                    .map_err(|error| storage_error(error, path.as_ref()))?;
            }

            let received = tokio::select! {
                biased;
                () = watch.activity() => None,
                received = receive_file(&writer, &mut input, start_pos) => Some(received),
            };
            let size_bytes = match received {
                Some(Ok(size_bytes)) => size_bytes,
                Some(Err(TransferError::File(error))) => {
                    return Err(storage_error(error, path.as_ref()));
                }
                Some(Err(TransferError::Connection(error))) => {
                    debug!(path = ?vpath.as_str(), %error, "upload interrupted; discarded");
                    return Err(transfer_error(error));
                }
                None => {
                    info!(path = ?vpath.as_str(), "upload discarded: the client sent a command or closed the control connection during the transfer");
                    return Err(aborted_error());
                }
            };

            // A client that is killed closes its data connection as if the file were
            // complete; its control connection, closed at the same moment, distinguishes
            // the two. Linux may close the data socket first, so the check waits briefly, and
            // an ABOR sent right after closing the data connection arrives meanwhile too.
            tokio::time::sleep(CONTROL_CLOSE_GRACE).await;
            if watch.has_activity() || self.state.control_closed() {
                info!(path = ?vpath.as_str(), size_bytes, "upload discarded: the client sent a command or closed the control connection as the transfer ended");
                return Err(aborted_error());
            }
            writer
                .commit()
                .await
                .map_err(|error| storage_error(error, path.as_ref()))?;
            debug!(path = ?vpath.as_str(), size_bytes, start_pos, "upload stored");
            Ok(size_bytes)
        })
        .await
    }

    async fn del<P: AsRef<Path> + Send + fmt::Debug>(&self, _user: &User, path: P) -> Result<()> {
        self.in_span(async move {
            let (vfs, vpath) = self.resolve(path.as_ref())?;
            vfs.remove_file(&vpath)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))
        })
        .await
    }

    async fn mkd<P: AsRef<Path> + Send + fmt::Debug>(&self, _user: &User, path: P) -> Result<()> {
        self.in_span(async move {
            let (vfs, vpath) = self.resolve(path.as_ref())?;
            vfs.create_dir(&vpath)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))
        })
        .await
    }

    /// Renames like POSIX `rename`: an existing file at the target is replaced.
    async fn rename<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &User,
        from: P,
        to: P,
    ) -> Result<()> {
        self.in_span(async move {
            let (vfs, from_path) = self.resolve(from.as_ref())?;
            let (_, to_path) = self.resolve(to.as_ref())?;
            vfs.rename(&from_path, &to_path, true)
                .await
                .map_err(|error| storage_error(error, from.as_ref()))
        })
        .await
    }

    async fn rmd<P: AsRef<Path> + Send + fmt::Debug>(&self, _user: &User, path: P) -> Result<()> {
        self.in_span(async move {
            let (vfs, vpath) = self.resolve(path.as_ref())?;
            vfs.remove_dir(&vpath)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))
        })
        .await
    }

    async fn cwd<P: AsRef<Path> + Send + fmt::Debug>(&self, _user: &User, path: P) -> Result<()> {
        self.in_span(async move {
            let (vfs, vpath) = self.resolve(path.as_ref())?;
            let meta = vfs
                .metadata(&vpath)
                .await
                .map_err(|error| storage_error(error, path.as_ref()))?;
            if meta.is_dir() {
                Ok(())
            } else {
                Err(storage_error(VfsError::NotADirectory, path.as_ref()))
            }
        })
        .await
    }
}

/// The side of a transfer that failed: the local file or the data connection.
enum TransferError {
    File(VfsError),
    Connection(io::Error),
}

/// Writes a file from `offset` to `output`, reading the next chunk while the previous one
/// is sent, and returns the bytes sent.
async fn send_file<W: AsyncWrite + Unpin + ?Sized>(
    reader: &FileReader,
    output: &mut W,
    start_pos: u64,
) -> std::result::Result<u64, TransferError> {
    let mut offset = start_pos;
    let mut chunk = reader
        .read_at(offset, CHUNK_SIZE)
        .await
        .map_err(TransferError::File)?;
    while !chunk.is_empty() {
        offset += chunk.len() as u64;
        let (sent, next) =
            tokio::join!(output.write_all(&chunk), reader.read_at(offset, CHUNK_SIZE));
        sent.map_err(TransferError::Connection)?;
        chunk = next.map_err(TransferError::File)?;
    }
    output.flush().await.map_err(TransferError::Connection)?;
    Ok(offset - start_pos)
}

/// Reads the data stream to its end into `writer` from `start_pos`, writing each chunk
/// while the next one is read, and returns the bytes received.
async fn receive_file<R: AsyncRead + Unpin>(
    writer: &FileWriter,
    input: &mut R,
    start_pos: u64,
) -> std::result::Result<u64, TransferError> {
    let mut offset = start_pos;
    let mut pending: Option<(u64, Vec<u8>)> = None;
    loop {
        let write = async {
            match pending.take() {
                Some((at, data)) => writer.write_at(at, data).await,
                None => Ok(()),
            }
        };
        let (written, received) = tokio::join!(write, read_chunk(input));
        written.map_err(TransferError::File)?;
        let chunk = received.map_err(TransferError::Connection)?;
        if chunk.is_empty() {
            return Ok(offset - start_pos);
        }
        let len = chunk.len() as u64;
        pending = Some((offset, chunk));
        offset += len;
    }
}

/// Cuts the file at the `REST` offset, so that the upload continues from there. An offset
/// beyond the end is rejected rather than leaving a hole of zeros.
async fn truncate_for_restart(
    writer: &FileWriter,
    start_pos: u64,
) -> std::result::Result<(), VfsError> {
    let current = writer.metadata().await?.size;
    if start_pos > current {
        debug!(
            start_pos,
            size_bytes = current,
            "restart offset beyond the end of the file"
        );
        return Err(VfsError::InvalidPath(format!(
            "restart offset {start_pos} is beyond the end of the file ({current} bytes)"
        )));
    }
    writer.set_len(start_pos).await
}

/// Returns the error for a transfer that the client aborted, which libunftp answers with 426.
fn aborted_error() -> Error {
    Error::new(
        ErrorKind::ConnectionClosed,
        "transfer aborted by the client",
    )
}

/// Reads up to [`CHUNK_SIZE`] bytes, fewer only at the end of the stream.
async fn read_chunk<R: AsyncRead + Unpin>(input: &mut R) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(CHUNK_SIZE);
    input
        .take(CHUNK_SIZE as u64)
        .read_to_end(&mut chunk)
        .await?;
    Ok(chunk)
}

/// Maps a failure on the data connection to 426 (connection closed; transfer aborted).
fn transfer_error(error: io::Error) -> Error {
    Error::new(ErrorKind::ConnectionClosed, error)
}

/// Maps a file error to the FTP reply libunftp sends for its kind: 550 for a missing or
/// denied file, 553 for an invalid name, 552 when the disk is full or the user's quota is
/// exceeded, 451 for a local failure.
pub(crate) fn storage_error(error: VfsError, path: &Path) -> Error {
    let kind = match &error {
        VfsError::NotFound | VfsError::AlreadyExists | VfsError::IsADirectory => {
            ErrorKind::PermanentFileNotAvailable
        }
        VfsError::PermissionDenied => ErrorKind::PermissionDenied,
        VfsError::NotADirectory => ErrorKind::PermanentDirectoryNotAvailable,
        VfsError::DirectoryNotEmpty => ErrorKind::PermanentDirectoryNotEmpty,
        VfsError::InvalidPath(_) => ErrorKind::FileNameNotAllowedError,
        VfsError::StorageFull | VfsError::QuotaExceeded => {
            ErrorKind::ExceededStorageAllocationError
        }
        VfsError::Unsupported(_) => ErrorKind::CommandNotImplemented,
        _ => ErrorKind::LocalError,
    };
    if error.is_client_error() {
        debug!(path = ?path, %error, "file operation failed");
    } else {
        warn!(path = ?path, %error, "file operation failed");
    }
    Error::new(kind, error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn errors_map_to_ftp_replies() {
        let cases = [
            (VfsError::NotFound, "550"),
            (VfsError::PermissionDenied, "550"),
            (VfsError::DirectoryNotEmpty, "550"),
            (VfsError::NotADirectory, "550"),
            (VfsError::InvalidPath("x".into()), "553"),
            (VfsError::StorageFull, "552"),
            (VfsError::QuotaExceeded, "552"),
            (VfsError::Unsupported("x"), "502"),
            (VfsError::Io(io::Error::other("disk")), "451"),
        ];
        for (error, code) in cases {
            let label = error.to_string();
            let kind = storage_error(error, Path::new("/f")).kind();
            assert!(
                kind.to_string().starts_with(code),
                "{label} gave {kind}, expected {code}"
            );
        }
    }
}
