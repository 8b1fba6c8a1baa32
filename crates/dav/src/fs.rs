//! dav-server's file system interface over a user's [`Vfs`].
//!
//! Every path goes through the user's jailed view, so symlinks cannot lead out of the home
//! and the user's permissions apply. Uploads are written through [`FileWriter`], so in atomic
//! upload mode a PUT replaces the target only when its body arrived completely. Dead
//! properties live in the user's [`PropStore`] and follow MOVE, COPY and DELETE.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsResult,
    FsStream, OpenOptions, ReadDirMeta,
};
use ferry_vfs::{FileKind, FileReader, FileWriter, Metadata, VPath, Vfs, VfsError, WriteOptions};
use futures::FutureExt;
use http::StatusCode;

use crate::props::PropStore;

/// Bytes collected from a PUT body before they are written, so that a large upload costs one
/// blocking-pool round trip per MiB instead of one per network read.
const WRITE_CHUNK: usize = 1 << 20;

/// One user's files, as a dav-server file system.
#[derive(Clone)]
pub(crate) struct VfsDav {
    vfs: Vfs,
    props: Arc<PropStore>,
}

impl VfsDav {
    pub(crate) fn new(vfs: Vfs, props: Arc<PropStore>) -> VfsDav {
        VfsDav { vfs, props }
    }
}

/// Turns a request path, already percent-decoded once by dav-server, into a path in the
/// home. Names that are not UTF-8 cannot exist in the home's listing, so they are refused.
pub(crate) fn to_vpath(path: &DavPath) -> FsResult<VPath> {
    let text = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::Forbidden)?;
    VPath::parse(text).map_err(fs_error)
}

/// Maps a file layer error to the dav-server error that selects the HTTP status.
pub(crate) fn fs_error(error: VfsError) -> FsError {
    match error {
        VfsError::NotFound | VfsError::NotADirectory => FsError::NotFound,
        VfsError::PermissionDenied | VfsError::IsADirectory | VfsError::InvalidPath(_) => {
            FsError::Forbidden
        }
        VfsError::AlreadyExists | VfsError::DirectoryNotEmpty => FsError::Exists,
        VfsError::StorageFull | VfsError::QuotaExceeded => FsError::InsufficientStorage,
        VfsError::Unsupported(_) => FsError::NotImplemented,
        error => {
            tracing::warn!(%error, "file operation failed");
            FsError::GeneralFailure
        }
    }
}

impl DavFileSystem for VfsDav {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let vpath = to_vpath(path)?;
            if !options.write && !options.append {
                let reader = self.vfs.open_read(&vpath).await.map_err(fs_error)?;
                let metadata = reader.metadata().await.map_err(fs_error)?;
                return Ok(Box::new(OpenFile::reading(reader, metadata)) as Box<dyn DavFile>);
            }

            let mut write = WriteOptions {
                create: options.create || options.create_new,
                exclusive: options.create_new,
                truncate: options.truncate,
                append: options.append,
            };
            if write.create && !write.truncate {
                // LOCK on an unmapped URL opens the file this way and drops it unwritten, and
                // the empty file must then exist (a lock-null resource). A writer publishes
                // only on commit, so the empty file is created and published first.
                match self.vfs.metadata(&vpath).await {
                    Ok(_) => {}
                    Err(VfsError::NotFound) => {
                        let empty = WriteOptions {
                            create: true,
                            exclusive: true,
                            ..WriteOptions::default()
                        };
                        let writer = self.vfs.open_write(&vpath, empty).await.map_err(fs_error)?;
                        writer.commit().await.map_err(fs_error)?;
                        write.exclusive = false;
                    }
                    Err(e) => return Err(fs_error(e)),
                }
            }
            let writer = self.vfs.open_write(&vpath, write).await.map_err(fs_error)?;
            Ok(Box::new(OpenFile::writing(writer, options.size)) as Box<dyn DavFile>)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let dir = to_vpath(path)?;
            let mut entries = self.vfs.read_dir(&dir).await.map_err(fs_error)?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            let follow_symlinks = meta == ReadDirMeta::Data;
            let vfs = self.vfs.clone();
            let items = entries.into_iter().map(move |entry| {
                let path = dir.join(&entry.name).map_err(fs_error)?;
                let item = Entry {
                    name: entry.name,
                    metadata: entry.metadata,
                    path,
                    vfs: vfs.clone(),
                    follow_symlinks,
                };
                Ok(Box::new(item) as Box<dyn DavDirEntry>)
            });
            Ok(Box::pin(futures::stream::iter(items)) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let metadata = self
                .vfs
                .metadata(&to_vpath(path)?)
                .await
                .map_err(fs_error)?;
            Ok(Box::new(Meta(metadata)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn symlink_metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let vpath = to_vpath(path)?;
            let metadata = self.vfs.symlink_metadata(&vpath).await.map_err(fs_error)?;
            Ok(Box::new(Meta(metadata)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let vpath = to_vpath(path)?;
            self.vfs.create_dir(&vpath).await.map_err(fs_error)
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let vpath = to_vpath(path)?;
            self.vfs.remove_dir(&vpath).await.map_err(fs_error)?;
            self.props.remove_tree(&vpath);
            Ok(())
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let vpath = to_vpath(path)?;
            self.vfs.remove_file(&vpath).await.map_err(fs_error)?;
            self.props.remove_tree(&vpath);
            Ok(())
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (source, target) = (to_vpath(from)?, to_vpath(to)?);
            // dav-server has already deleted an existing target when Overwrite allowed it.
            self.vfs
                .rename(&source, &target, true)
                .await
                .map_err(fs_error)?;
            self.props.move_tree(&source, &target);
            Ok(())
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            let (source, target) = (to_vpath(from)?, to_vpath(to)?);
            self.vfs
                .copy_file(&source, &target)
                .await
                .map_err(fs_error)?;
            self.props.copy_one(&source, &target);
            Ok(())
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::ready(true))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        let result = to_vpath(path).map(|vpath| self.props.patch(&vpath, patch));
        Box::pin(std::future::ready(result))
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        let result = to_vpath(path).map(|vpath| self.props.list(&vpath, do_content));
        Box::pin(std::future::ready(result))
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        let result =
            to_vpath(path).and_then(|vpath| self.props.get(&vpath, &prop).ok_or(FsError::NotFound));
        Box::pin(std::future::ready(result))
    }

    /// Reports the space of the file system that contains the home: used and total bytes, so
    /// that clients such as Finder show the free space that uploads can fill.
    fn get_quota(&'_ self) -> FsFuture<'_, (u64, Option<u64>)> {
        async move {
            let stats = self.vfs.statvfs(&VPath::root()).await.map_err(fs_error)?;
            let total = stats.blocks.saturating_mul(stats.fragment_size);
            let available = stats.blocks_available.saturating_mul(stats.fragment_size);
            Ok((total.saturating_sub(available), Some(total)))
        }
        .boxed()
    }
}

/// File metadata as dav-server reads it.
#[derive(Clone, Debug)]
struct Meta(Metadata);

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }

    fn modified(&self) -> FsResult<SystemTime> {
        Ok(self.0.modified)
    }

    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }

    fn is_file(&self) -> bool {
        self.0.is_file()
    }

    fn is_symlink(&self) -> bool {
        self.0.kind == FileKind::Symlink
    }

    fn accessed(&self) -> FsResult<SystemTime> {
        Ok(self.0.accessed)
    }

    fn executable(&self) -> FsResult<bool> {
        Ok(self.0.mode & 0o100 != 0)
    }
}

/// One directory entry. With `follow_symlinks`, a symlink reports the metadata of its target
/// in the home. A link that leads out of the home fails, so dav-server skips the entry.
struct Entry {
    name: String,
    metadata: Metadata,
    path: VPath,
    vfs: Vfs,
    follow_symlinks: bool,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }

    fn metadata(&'_ self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let metadata = if self.follow_symlinks && self.metadata.kind == FileKind::Symlink {
                self.vfs.metadata(&self.path).await.map_err(fs_error)?
            } else {
                self.metadata.clone()
            };
            Ok(Box::new(Meta(metadata)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }
}

/// An open file: a reader for GET, or a writer for PUT and for creating lock-null files.
struct OpenFile {
    state: FileState,
    position: u64,
}

enum FileState {
    Reading {
        reader: FileReader,
        metadata: Metadata,
    },
    Writing(Upload),
}

/// An upload in progress, published by [`DavFile::flush`] once its body is complete.
struct Upload {
    /// `None` once committed.
    writer: Option<FileWriter>,
    /// Bytes received but not yet written.
    pending: Vec<u8>,
    /// Bytes received in total, to compare with the announced size.
    received: u64,
    /// The body size from `Content-Length` or `X-Expected-Entity-Length`, when announced.
    expected: Option<u64>,
    /// The metadata of the published file, kept for the ETag of the PUT response.
    committed: Option<Metadata>,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("OpenFile");
        match &self.state {
            FileState::Reading { reader, .. } => out.field("reading", reader.path()),
            FileState::Writing(upload) => out.field("writing", &upload.writer),
        };
        out.field("position", &self.position).finish()
    }
}

impl OpenFile {
    fn reading(reader: FileReader, metadata: Metadata) -> OpenFile {
        OpenFile {
            state: FileState::Reading { reader, metadata },
            position: 0,
        }
    }

    fn writing(writer: FileWriter, expected: Option<u64>) -> OpenFile {
        OpenFile {
            state: FileState::Writing(Upload {
                writer: Some(writer),
                pending: Vec::new(),
                received: 0,
                expected,
                committed: None,
            }),
            position: 0,
        }
    }

    /// Writes the bytes collected so far at the current position.
    async fn write_pending(&mut self) -> FsResult<()> {
        let FileState::Writing(upload) = &mut self.state else {
            return Ok(());
        };
        if upload.pending.is_empty() {
            return Ok(());
        }
        let writer = upload.writer.as_ref().ok_or(FsError::GeneralFailure)?;
        let data = std::mem::take(&mut upload.pending);
        let len = data.len() as u64;
        writer
            .write_at(self.position, data)
            .await
            .map_err(fs_error)?;
        self.position += len;
        Ok(())
    }

    async fn accept(&mut self, data: &[u8]) -> FsResult<()> {
        let FileState::Writing(upload) = &mut self.state else {
            return Err(FsError::Forbidden);
        };
        if upload.writer.is_none() {
            return Err(FsError::GeneralFailure);
        }
        // Write what is pending first when `data` would not fit, so that the buffer is
        // allocated once per chunk and never copied by a reallocation.
        if upload.pending.len() + data.len() > WRITE_CHUNK {
            self.write_pending().await?;
        }
        let FileState::Writing(upload) = &mut self.state else {
            return Err(FsError::GeneralFailure);
        };
        if upload.pending.capacity() == 0 {
            upload.pending.reserve_exact(WRITE_CHUNK.max(data.len()));
        }
        upload.pending.extend_from_slice(data);
        upload.received += data.len() as u64;
        if upload.pending.len() >= WRITE_CHUNK {
            self.write_pending().await?;
        }
        Ok(())
    }

    async fn current_metadata(&self) -> FsResult<Metadata> {
        match &self.state {
            FileState::Reading { metadata, .. } => Ok(metadata.clone()),
            FileState::Writing(upload) => match (&upload.committed, &upload.writer) {
                (Some(metadata), _) => Ok(metadata.clone()),
                (None, Some(writer)) => writer.metadata().await.map_err(fs_error),
                (None, None) => Err(FsError::GeneralFailure),
            },
        }
    }
}

impl DavFile for OpenFile {
    fn metadata(&'_ mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            self.write_pending().await?;
            let metadata = self.current_metadata().await?;
            Ok(Box::new(Meta(metadata)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn write_buf(&'_ mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        async move {
            while buf.has_remaining() {
                let chunk = buf.chunk().to_vec();
                buf.advance(chunk.len());
                self.accept(&chunk).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn write_bytes(&'_ mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move { self.accept(&buf).await }.boxed()
    }

    fn read_bytes(&'_ mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            self.write_pending().await?;
            let data = match &self.state {
                FileState::Reading { reader, .. } => reader.read_at(self.position, count).await,
                FileState::Writing(Upload {
                    writer: Some(writer),
                    ..
                }) => writer.read_at(self.position, count).await,
                FileState::Writing(_) => return Err(FsError::GeneralFailure),
            }
            .map_err(fs_error)?;
            self.position += data.len() as u64;
            Ok(Bytes::from(data))
        }
        .boxed()
    }

    fn seek(&'_ mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            self.write_pending().await?;
            let target = match pos {
                SeekFrom::Start(offset) => Some(offset),
                SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
                SeekFrom::End(delta) => {
                    let size = self.current_metadata().await?.size;
                    size.checked_add_signed(delta)
                }
            };
            self.position = target.ok_or(FsError::GeneralFailure)?;
            Ok(self.position)
        }
        .boxed()
    }

    /// Publishes an upload. dav-server calls this once, after the request body ended without
    /// a transport error. When the body was shorter or longer than announced, the upload is
    /// not published (dav-server then responds with 400) and the writer's drop discards it.
    fn flush(&'_ mut self) -> FsFuture<'_, ()> {
        async move {
            self.write_pending().await?;
            let FileState::Writing(upload) = &mut self.state else {
                return Ok(());
            };
            if let Some(expected) = upload.expected
                && upload.received != expected
            {
                tracing::debug!(
                    received_bytes = upload.received,
                    expected_bytes = expected,
                    "upload not published: body size differs from the announced size"
                );
                return Ok(());
            }
            let Some(writer) = upload.writer.take() else {
                return Ok(());
            };
            let metadata = writer.metadata().await.map_err(fs_error)?;
            writer.commit().await.map_err(fs_error)?;
            upload.committed = Some(metadata);
            Ok(())
        }
        .boxed()
    }
}
