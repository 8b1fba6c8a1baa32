//! Open files: readers, and writers that publish an upload only when it completes. Both apply
//! the user's bandwidth limits, and writers reserve quota before each write.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use cap_std::fs::Dir;

use crate::bandwidth::RateLimit;
use crate::quota::{Charge, file_size};
use crate::stream::FileStream;
use crate::{Metadata, VPath, VfsError, blocking};

/// A file opened for reading. Reads are positional, so one reader serves requests at any
/// offset in any order.
#[derive(Clone)]
pub struct FileReader {
    file: Arc<File>,
    path: VPath,
    download: Option<Arc<RateLimit>>,
}

impl FileReader {
    pub(crate) fn new(file: File, path: VPath, download: Option<Arc<RateLimit>>) -> FileReader {
        FileReader {
            file: Arc::new(file),
            path,
            download,
        }
    }

    pub fn path(&self) -> &VPath {
        &self.path
    }

    /// Reads up to `len` bytes at `offset`; a short or empty result means the end of the file.
    /// Under a download limit it returns once the bytes read may pass.
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, VfsError> {
        let file = Arc::clone(&self.file);
        let data = blocking(move || read_at(&file, offset, len)).await?;
        if let Some(limit) = &self.download {
            limit.acquire(data.len() as u64).await;
        }
        Ok(data)
    }

    pub async fn metadata(&self) -> Result<Metadata, VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || file.metadata().map(|m| Metadata::from_std(&m))).await
    }

    /// Returns a tokio stream positioned at `offset`, for protocols that stream. It reads
    /// under the user's download limit.
    pub async fn into_stream(self, offset: u64) -> Result<FileStream, VfsError> {
        let file = self.file.try_clone()?;
        let mut file = tokio::fs::File::from_std(file);
        if offset > 0 {
            use tokio::io::AsyncSeekExt;
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(FileStream::new(file).read_limit(self.download))
    }
}

/// Reads up to `len` bytes at `offset`, fewer only at the end of the file. The bytes go into
/// memory that is not zeroed first, which saves one pass over every chunk sent.
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    // The allocation may hold more than `len` bytes, and `pread` fills all of it.
    buf.truncate(len);
    Ok(buf)
}

/// Where the bytes of an upload go until [`FileWriter::commit`].
pub(crate) enum Staging {
    /// Written in place: the target itself is open.
    InPlace,
    /// Written to a temporary file in the target's folder, renamed over the target on commit.
    Temporary {
        parent: Dir,
        temp_name: String,
        target_name: String,
        /// Fail the commit, rather than replace, if the target appeared meanwhile.
        exclusive: bool,
    },
}

/// A file opened for writing.
///
/// In atomic upload mode the data goes to a temporary file that replaces the target only on
/// [`commit`](FileWriter::commit). Dropping a writer without committing deletes the temporary
/// file and leaves the target as it was, which is what happens when a transfer is interrupted.
pub struct FileWriter {
    file: Arc<File>,
    path: VPath,
    staging: Staging,
    committed: bool,
    /// Every write goes to the end of the file.
    append: bool,
    limits: WriterLimits,
    /// A write or resize failed, so the file lacks data the client sent and must not be
    /// published.
    failed: std::sync::atomic::AtomicBool,
}

/// The user's quota and bandwidth limits that a writer applies.
#[derive(Default)]
pub(crate) struct WriterLimits {
    pub(crate) charge: Option<Arc<Charge>>,
    pub(crate) upload: Option<Arc<RateLimit>>,
    pub(crate) download: Option<Arc<RateLimit>>,
}

impl FileWriter {
    pub(crate) fn new(
        file: File,
        path: VPath,
        staging: Staging,
        append: bool,
        limits: WriterLimits,
    ) -> FileWriter {
        FileWriter {
            file: Arc::new(file),
            path,
            staging,
            committed: false,
            append,
            limits,
            failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &VPath {
        &self.path
    }

    /// Writes all of `data` at `offset`. When the file was opened in append mode the offset
    /// is ignored and the data goes to the end. Fails with [`VfsError::QuotaExceeded`] when
    /// the file would grow past the user's quota, and waits for the upload limit first.
    pub async fn write_at(&self, offset: u64, data: Vec<u8>) -> Result<(), VfsError> {
        let result = self.write_at_unchecked(offset, data).await;
        if result.is_err() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn write_at_unchecked(&self, offset: u64, data: Vec<u8>) -> Result<(), VfsError> {
        let len = data.len() as u64;
        if let Some(charge) = &self.limits.charge {
            if self.append {
                charge.append(len)?;
            } else {
                charge.write_until(offset.saturating_add(len))?;
            }
        }
        if let Some(limit) = &self.limits.upload {
            limit.acquire(len).await;
        }
        let file = Arc::clone(&self.file);
        blocking(move || file.write_all_at(&data, offset)).await
    }

    /// Reads from the file being written, for handles opened for both reading and writing.
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, VfsError> {
        let file = Arc::clone(&self.file);
        let data = blocking(move || read_at(&file, offset, len)).await?;
        if let Some(limit) = &self.limits.download {
            limit.acquire(data.len() as u64).await;
        }
        Ok(data)
    }

    pub async fn metadata(&self) -> Result<Metadata, VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || file.metadata().map(|m| Metadata::from_std(&m))).await
    }

    /// Truncates or extends the file; an extension counts against the user's quota.
    pub async fn set_len(&self, len: u64) -> Result<(), VfsError> {
        let result = match &self.limits.charge {
            Some(charge) => charge.set_len(len),
            None => Ok(()),
        };
        let result = match result {
            Ok(()) => {
                let file = Arc::clone(&self.file);
                blocking(move || file.set_len(len)).await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// Flushes written data to stable storage.
    pub async fn sync(&self) -> Result<(), VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || file.sync_data()).await
    }

    /// Returns a tokio stream over the same open file, for protocols that stream. Data
    /// written through it is published by [`commit`](FileWriter::commit) like any other, and
    /// it applies the user's upload limit and quota like [`write_at`](FileWriter::write_at).
    pub fn stream(&self) -> Result<FileStream, VfsError> {
        let std_file = self.file.try_clone()?;
        let position = match &self.limits.charge {
            None => 0,
            Some(charge) if self.append => charge.size(),
            Some(_) => {
                use std::io::Seek;
                (&std_file).stream_position()?
            }
        };
        Ok(FileStream::new(tokio::fs::File::from_std(std_file))
            .read_limit(self.limits.download.clone())
            .write_limit(self.limits.upload.clone())
            .charge(self.limits.charge.clone(), position))
    }

    /// Publishes the upload: renames the temporary file over the target in atomic mode.
    ///
    /// After a failed write the file lacks data that the client sent, so it is not published:
    /// this fails ([`VfsError::QuotaExceeded`] after a quota failure), and in atomic mode the
    /// target stays as it was.
    pub async fn commit(mut self) -> Result<(), VfsError> {
        if self.limits.charge.as_ref().is_some_and(|c| c.exceeded()) {
            tracing::debug!(path = %self.path, "upload not published: a write exceeded the quota");
            return Err(VfsError::QuotaExceeded);
        }
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::debug!(path = %self.path, "upload not published: a write failed");
            return Err(VfsError::Io(io::Error::other(
                "an earlier write to this file failed, so the upload was not published",
            )));
        }
        self.committed = true;
        let staging = std::mem::replace(&mut self.staging, Staging::InPlace);
        let charge = self.limits.charge.take();
        let file = Arc::clone(&self.file);
        let Staging::Temporary {
            parent,
            temp_name,
            target_name,
            exclusive,
        } = staging
        else {
            if let Some(charge) = charge {
                let size = blocking(move || file_size(&file)).await;
                charge.finish(Some(size.unwrap_or_else(|_| charge.size())));
            }
            return Ok(());
        };
        blocking(move || {
            let size = charge.as_ref().map(|_| file_size(&file));
            // What the rename replaces, as it is now rather than when the upload began.
            let replaced = charge.as_ref().and_then(|_| {
                parent
                    .symlink_metadata(&target_name)
                    .ok()
                    .filter(|meta| meta.is_file())
                    .map(|meta| meta.len())
            });
            if let (Some(charge), Some(Ok(size))) = (&charge, &size)
                && charge.check_publish(*size, replaced).is_err()
            {
                let _ = parent.remove_file(&temp_name);
                charge.finish(None);
                return Err(io::Error::new(
                    io::ErrorKind::QuotaExceeded,
                    "quota exceeded",
                ));
            }
            let result = if exclusive {
                rustix::fs::renameat_with(
                    &parent,
                    temp_name.as_str(),
                    &parent,
                    target_name.as_str(),
                    rustix::fs::RenameFlags::NOREPLACE,
                )
                .map_err(io::Error::from)
            } else {
                parent.rename(&temp_name, &parent, &target_name)
            };
            if result.is_err() {
                let _ = parent.remove_file(&temp_name);
            }
            if let Some(charge) = charge {
                match (&result, size) {
                    (Ok(()), Some(Ok(size))) => charge.finish_replacing(size, replaced),
                    (Ok(()), _) => charge.finish_replacing(charge.size(), replaced),
                    (Err(_), _) => charge.finish(None),
                }
            }
            result
        })
        .await
    }
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let atomic = matches!(self.staging, Staging::Temporary { .. });
        f.debug_struct("FileWriter")
            .field("path", &self.path)
            .field("atomic", &atomic)
            .finish()
    }
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Some(charge) = self.limits.charge.take() {
            // A file written in place keeps what was written; a temporary one is discarded.
            match self.staging {
                Staging::InPlace => {
                    let size = file_size(&self.file).unwrap_or_else(|_| charge.size());
                    charge.finish(Some(size));
                }
                Staging::Temporary { .. } => charge.finish(None),
            }
        }
        if let Staging::Temporary {
            parent, temp_name, ..
        } = &self.staging
        {
            if let Err(error) = parent.remove_file(temp_name) {
                tracing::warn!(path = %self.path, %error, "failed to remove an unfinished upload");
            } else {
                tracing::debug!(path = %self.path, "unfinished upload discarded");
            }
        }
    }
}
