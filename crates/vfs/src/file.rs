//! Open files: readers, and writers that publish an upload only when it completes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use cap_std::fs::Dir;

use crate::{Metadata, VPath, VfsError, blocking};

/// A file opened for reading. Reads are positional, so one reader serves requests at any
/// offset in any order.
#[derive(Clone)]
pub struct FileReader {
    file: Arc<File>,
    path: VPath,
}

impl FileReader {
    pub(crate) fn new(file: File, path: VPath) -> FileReader {
        FileReader {
            file: Arc::new(file),
            path,
        }
    }

    pub fn path(&self) -> &VPath {
        &self.path
    }

    /// Reads up to `len` bytes at `offset`; a short or empty result means the end of the file.
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || read_at(&file, offset, len)).await
    }

    pub async fn metadata(&self) -> Result<Metadata, VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || file.metadata().map(|m| Metadata::from_std(&m))).await
    }

    /// Returns a tokio file positioned at `offset`, for protocols that stream.
    pub async fn into_stream(self, offset: u64) -> Result<tokio::fs::File, VfsError> {
        let file = self.file.try_clone()?;
        let mut file = tokio::fs::File::from_std(file);
        if offset > 0 {
            use tokio::io::AsyncSeekExt;
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(file)
    }
}

fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        let n = match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
    }
    buf.truncate(filled);
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
}

impl FileWriter {
    pub(crate) fn new(file: File, path: VPath, staging: Staging) -> FileWriter {
        FileWriter {
            file: Arc::new(file),
            path,
            staging,
            committed: false,
        }
    }

    pub fn path(&self) -> &VPath {
        &self.path
    }

    /// Writes all of `data` at `offset`. When the file was opened in append mode the offset
    /// is ignored and the data goes to the end.
    pub async fn write_at(&self, offset: u64, data: Vec<u8>) -> Result<(), VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || file.write_all_at(&data, offset)).await
    }

    /// Reads from the file being written, for handles opened for both reading and writing.
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || read_at(&file, offset, len)).await
    }

    pub async fn metadata(&self) -> Result<Metadata, VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || file.metadata().map(|m| Metadata::from_std(&m))).await
    }

    pub async fn set_len(&self, len: u64) -> Result<(), VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || file.set_len(len)).await
    }

    /// Flushes written data to stable storage.
    pub async fn sync(&self) -> Result<(), VfsError> {
        let file = Arc::clone(&self.file);
        blocking(move || file.sync_data()).await
    }

    /// Returns a tokio handle to the same open file, for protocols that stream. Data written
    /// through it is published by [`commit`](FileWriter::commit) like any other.
    pub fn stream(&self) -> Result<tokio::fs::File, VfsError> {
        Ok(tokio::fs::File::from_std(self.file.try_clone()?))
    }

    /// Publishes the upload: renames the temporary file over the target in atomic mode.
    pub async fn commit(mut self) -> Result<(), VfsError> {
        self.committed = true;
        let staging = std::mem::replace(&mut self.staging, Staging::InPlace);
        let Staging::Temporary {
            parent,
            temp_name,
            target_name,
            exclusive,
        } = staging
        else {
            return Ok(());
        };
        blocking(move || {
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
