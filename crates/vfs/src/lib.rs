//! A user's view of the file tree, shared by SFTP, SCP, FTP and WebDAV.
//!
//! Each login gets a [`Vfs`] rooted at the user's home directory, which the client sees as
//! `/`. Client paths are normalized into [`VPath`]s, so `..` cannot climb above the home, and
//! every file operation then goes through a `cap-std` directory handle, which refuses to
//! follow a symlink or `..` out of the home at the system call level, including symlinks
//! created outside Ferry. Every operation checks the user's [`Permissions`] first.
//!
//! A [`Vfs`] opened with [`Limits`] also enforces the user's [`Quota`] and bandwidth
//! [`RateLimit`]s, which are shared by all sessions of that user; without limits no quota or
//! rate is tracked at all.
//!
//! File I/O is blocking; every operation runs on tokio's blocking pool.

mod bandwidth;
mod error;
mod file;
mod metadata;
mod path;
mod perms;
mod quota;
mod stream;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use cap_fs_ext::{DirExt, SystemTimeSpec};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

pub use bandwidth::RateLimit;
pub use error::VfsError;
pub use file::{FileReader, FileWriter};
pub use metadata::{DirEntry, FileKind, FsStats, Metadata};
pub use path::VPath;
pub use perms::{Permission, PermissionSet, Permissions};
pub use quota::{Quota, QuotaUsage};
pub use stream::FileStream;

use file::{Staging, WriterLimits};

/// File names with this prefix are uploads in progress; they are hidden from listings and
/// cannot be named by clients.
pub const UPLOAD_TEMP_PREFIX: &str = ".ferry-upload-";

/// How uploads reach their target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadMode {
    /// Write to a temporary file in the same folder and rename it over the target when the
    /// transfer completes, so an interrupted upload never replaces a good file.
    #[default]
    Atomic,
    /// Write the target in place.
    Standard,
}

/// How [`Vfs::open_write`] opens a file, mirroring the POSIX open flags clients send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Create the file when it does not exist.
    pub create: bool,
    /// Fail when the file exists.
    pub exclusive: bool,
    /// Discard existing content.
    pub truncate: bool,
    /// Every write goes to the end of the file.
    pub append: bool,
}

impl WriteOptions {
    /// Create or replace the whole file, as a plain upload does.
    pub fn replace() -> WriteOptions {
        WriteOptions {
            create: true,
            truncate: true,
            ..WriteOptions::default()
        }
    }

    /// Create the file or keep its content, to resume or patch it at an offset.
    pub fn resume() -> WriteOptions {
        WriteOptions {
            create: true,
            ..WriteOptions::default()
        }
    }
}

/// The quota and bandwidth limits of one user. Every session of the user shares the same
/// [`Arc`]s, so the limits hold over all of them; `None` means unlimited.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub quota: Option<Arc<Quota>>,
    /// Limits the bytes written to files.
    pub upload: Option<Arc<RateLimit>>,
    /// Limits the bytes read from files.
    pub download: Option<Arc<RateLimit>>,
}

/// A user's jailed view of the file tree; cheap to clone.
#[derive(Clone)]
pub struct Vfs {
    inner: Arc<Inner>,
}

struct Inner {
    root: Dir,
    home: PathBuf,
    permissions: Permissions,
    upload_mode: UploadMode,
    limits: Limits,
}

/// Runs blocking file work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, VfsError>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(VfsError::from),
        Err(join_error) => Err(VfsError::Io(io::Error::other(join_error))),
    }
}

impl Vfs {
    /// Opens the home directory, creating it (mode 0700) and its parents when missing.
    pub async fn open(
        home: &Path,
        permissions: Permissions,
        upload_mode: UploadMode,
    ) -> Result<Vfs, VfsError> {
        Vfs::open_with_limits(home, permissions, upload_mode, Limits::default()).await
    }

    /// Opens the home directory like [`Vfs::open`] and applies `limits`. The first view
    /// opened with a quota computes the quota usage by walking the home. Later views with the
    /// same quota wait for that walk and then share its result.
    pub async fn open_with_limits(
        home: &Path,
        permissions: Permissions,
        upload_mode: UploadMode,
        limits: Limits,
    ) -> Result<Vfs, VfsError> {
        let home = home.to_path_buf();
        let path = home.clone();
        let root = blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            if !path.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&path)?;
                tracing::info!(home = %path.display(), "home directory created");
            }
            Dir::open_ambient_dir(&path, cap_std::ambient_authority())
        })
        .await?;
        if let Some(quota) = &limits.quota {
            quota.scan_once(&root, home.clone()).await?;
        }
        Ok(Vfs {
            inner: Arc::new(Inner {
                root,
                home,
                permissions,
                upload_mode,
                limits,
            }),
        })
    }

    /// The home directory on the server's disk.
    pub fn home(&self) -> &Path {
        &self.inner.home
    }

    pub fn permissions(&self) -> &Permissions {
        &self.inner.permissions
    }

    /// Returns the quota and bandwidth limits that this view applies.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn quota(&self) -> Option<&Arc<Quota>> {
        self.inner.limits.quota.as_ref()
    }

    /// Checks a permission and that the path does not name an upload in progress.
    fn check(&self, path: &VPath, permission: Permission) -> Result<(), VfsError> {
        check_not_temp(path)?;
        if self.inner.permissions.allows(path, permission) {
            Ok(())
        } else {
            tracing::debug!(%path, ?permission, "operation denied by permissions");
            Err(VfsError::PermissionDenied)
        }
    }

    async fn run<T, F>(&self, work: F) -> Result<T, VfsError>
    where
        F: FnOnce(&Dir) -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || work(&inner.root)).await
    }

    /// Returns the metadata of `path`, following symlinks inside the home.
    pub async fn metadata(&self, path: &VPath) -> Result<Metadata, VfsError> {
        check_not_temp(path)?;
        let rel = path.to_relative();
        self.run(move |root| root.metadata(&rel).map(|m| Metadata::from_cap(&m)))
            .await
    }

    /// Returns the metadata of `path` itself, not following a final symlink.
    pub async fn symlink_metadata(&self, path: &VPath) -> Result<Metadata, VfsError> {
        check_not_temp(path)?;
        let rel = path.to_relative();
        self.run(move |root| root.symlink_metadata(&rel).map(|m| Metadata::from_cap(&m)))
            .await
    }

    /// Lists a directory, without `.` and `..` and without uploads in progress.
    pub async fn read_dir(&self, path: &VPath) -> Result<Vec<DirEntry>, VfsError> {
        self.check(path, Permission::List)?;
        let rel = path.to_relative();
        self.run(move |root| {
            let dir = root.open_dir(&rel)?;
            let mut entries = Vec::new();
            for entry in dir.entries()? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(UPLOAD_TEMP_PREFIX) {
                    continue;
                }
                let metadata = match entry.metadata() {
                    Ok(m) => Metadata::from_cap(&m),
                    // The entry vanished between listing and stat.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                entries.push(DirEntry { name, metadata });
            }
            Ok(entries)
        })
        .await
    }

    /// Opens a regular file for reading.
    pub async fn open_read(&self, path: &VPath) -> Result<FileReader, VfsError> {
        self.check(path, Permission::Download)?;
        let rel = path.to_relative();
        let vpath = path.clone();
        let download = self.inner.limits.download.clone();
        self.run(move |root| {
            let file = root.open(&rel)?.into_std();
            if file.metadata()?.is_dir() {
                return Err(io::Error::from(io::ErrorKind::IsADirectory));
            }
            Ok(FileReader::new(file, vpath, download))
        })
        .await
    }

    /// Opens a file for writing. New files need the `upload` permission and existing ones
    /// `overwrite`. In atomic mode the writer works on a temporary copy (with the current
    /// content when `truncate` is off, so resumed uploads continue where they stopped).
    ///
    /// Under a quota, a new file needs a free file slot, and some bytes must be left once an
    /// overwrite with `truncate` has freed the replaced file. Otherwise this fails with
    /// [`VfsError::QuotaExceeded`].
    pub async fn open_write(
        &self,
        path: &VPath,
        options: WriteOptions,
    ) -> Result<FileWriter, VfsError> {
        check_not_temp(path)?;
        let Some(name) = path.file_name().map(str::to_owned) else {
            return Err(VfsError::IsADirectory);
        };
        let existing = match self.metadata(path).await {
            Ok(meta) if meta.is_dir() => return Err(VfsError::IsADirectory),
            Ok(_) if options.exclusive => return Err(VfsError::AlreadyExists),
            Ok(meta) => Some(meta),
            Err(VfsError::NotFound) if options.create => None,
            Err(e) => return Err(e),
        };
        let needed = if existing.is_some() {
            Permission::Overwrite
        } else {
            Permission::Upload
        };
        self.check(path, needed)?;
        let charge = match self.quota() {
            Some(quota) => {
                let existing_size = existing.as_ref().map(|meta| meta.size);
                Some(Arc::new(
                    quota.begin_upload(existing_size, options.truncate)?,
                ))
            }
            None => None,
        };
        let limits = WriterLimits {
            charge,
            upload: self.inner.limits.upload.clone(),
            download: self.inner.limits.download.clone(),
        };

        let parent_rel = path.parent().to_relative();
        let vpath = path.clone();
        let mode = self.inner.upload_mode;
        self.run(move |root| {
            let parent = root.open_dir(&parent_rel)?;
            match mode {
                UploadMode::Standard => {
                    let mut open = OpenOptions::new();
                    open.read(true)
                        .write(true)
                        .create(options.create)
                        .truncate(options.truncate);
                    if options.exclusive {
                        open.create_new(true);
                    }
                    if options.append {
                        open.append(true);
                    }
                    let file = parent.open_with(&name, &open)?.into_std();
                    Ok(FileWriter::new(
                        file,
                        vpath,
                        Staging::InPlace,
                        options.append,
                        limits,
                    ))
                }
                UploadMode::Atomic => {
                    let (temp_name, file) = create_temp(&parent, options.append)?;
                    let file = file.into_std();
                    if let Some(meta) = &existing {
                        // The replacement keeps the target's mode: a private file must not
                        // become readable by others because it was overwritten.
                        use std::os::unix::fs::PermissionsExt;
                        let mode = std::fs::Permissions::from_mode(meta.permissions() & 0o777);
                        let prepared = file.set_permissions(mode).and_then(|()| {
                            if options.truncate {
                                Ok(())
                            } else {
                                copy_existing(&parent, &name, &file)
                            }
                        });
                        if let Err(e) = prepared {
                            let _ = parent.remove_file(&temp_name);
                            return Err(e);
                        }
                    }
                    let staging = Staging::Temporary {
                        parent,
                        temp_name,
                        target_name: name,
                        exclusive: options.exclusive,
                    };
                    Ok(FileWriter::new(
                        file,
                        vpath,
                        staging,
                        options.append,
                        limits,
                    ))
                }
            }
        })
        .await
    }

    pub async fn create_dir(&self, path: &VPath) -> Result<(), VfsError> {
        self.check(path, Permission::CreateDirs)?;
        if path.is_root() {
            return Err(VfsError::AlreadyExists);
        }
        let rel = path.to_relative();
        self.run(move |root| {
            use cap_std::fs::DirBuilderExt;
            let mut builder = cap_std::fs::DirBuilder::new();
            builder.mode(0o755);
            root.create_dir_with(&rel, &builder)
        })
        .await
    }

    /// Removes a file or a symlink (never what the symlink points to).
    pub async fn remove_file(&self, path: &VPath) -> Result<(), VfsError> {
        self.check(path, Permission::DeleteFiles)?;
        let meta = self.symlink_metadata(path).await?;
        if meta.is_dir() {
            return Err(VfsError::IsADirectory);
        }
        let rel = path.to_relative();
        self.run(move |root| root.remove_file_or_symlink(&rel))
            .await?;
        if let Some(quota) = self.quota()
            && meta.is_file()
        {
            quota.release(meta.size, 1);
        }
        Ok(())
    }

    /// Removes an empty directory.
    pub async fn remove_dir(&self, path: &VPath) -> Result<(), VfsError> {
        self.check(path, Permission::DeleteDirs)?;
        if path.is_root() {
            return Err(VfsError::PermissionDenied);
        }
        let rel = path.to_relative();
        self.run(move |root| root.remove_dir(&rel)).await
    }

    /// Renames `from` to `to`. With `replace` off the rename fails when `to` exists, as SFTP
    /// v3 requires; with it on an existing file is replaced atomically.
    pub async fn rename(&self, from: &VPath, to: &VPath, replace: bool) -> Result<(), VfsError> {
        if from.is_root() || to.is_root() {
            return Err(VfsError::PermissionDenied);
        }
        check_not_temp(to)?;
        let meta = self.symlink_metadata(from).await?;
        let permission = if meta.is_dir() {
            Permission::RenameDirs
        } else {
            Permission::RenameFiles
        };
        self.check(from, permission)?;
        self.check(to, permission)?;
        if to.starts_with(from) && to != from {
            return Err(VfsError::InvalidPath(
                "cannot move a directory into itself".into(),
            ));
        }
        // A regular file that the rename replaces leaves the quota usage.
        let replaced = match self.quota() {
            Some(_) if replace && to != from => match self.symlink_metadata(to).await {
                Ok(meta) if meta.is_file() => Some(meta.size),
                _ => None,
            },
            _ => None,
        };
        let (from_rel, to_rel) = (from.to_relative(), to.to_relative());
        self.run(move |root| {
            if replace {
                root.rename(&from_rel, root, &to_rel)
            } else {
                // Resolve both parents through the jail, then rename by plain name so that
                // RENAME_NOREPLACE makes the existence check and the rename one step.
                let (from_parent, from_name) = open_parent(root, &from_rel)?;
                let (to_parent, to_name) = open_parent(root, &to_rel)?;
                rustix::fs::renameat_with(
                    &from_parent,
                    from_name.as_str(),
                    &to_parent,
                    to_name.as_str(),
                    rustix::fs::RenameFlags::NOREPLACE,
                )
                .map_err(io::Error::from)
            }
        })
        .await?;
        if let (Some(quota), Some(size)) = (self.quota(), replaced) {
            quota.release(size, 1);
        }
        Ok(())
    }

    /// Copies a regular file. Needs `download` on the source and `upload` (or `overwrite`
    /// when the target exists) on the target. Under a quota the copy must fit, counting the
    /// space of a file it replaces as free.
    pub async fn copy_file(&self, from: &VPath, to: &VPath) -> Result<(), VfsError> {
        self.check(from, Permission::Download)?;
        let target = match self.metadata(to).await {
            Ok(meta) => Some(meta),
            Err(VfsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let needed = if target.is_some() {
            Permission::Overwrite
        } else {
            Permission::Upload
        };
        self.check(to, needed)?;
        // (bytes, files) reserved for the copy, and the bytes of the file it replaces.
        let reserved = match self.quota() {
            Some(quota) => {
                let size = self.metadata(from).await?.size;
                let replaced = target.as_ref().filter(|m| m.is_file()).map(|m| m.size);
                let files = u64::from(target.is_none());
                quota.reserve(size, files, replaced.unwrap_or(0))?;
                Some((size, files, replaced.unwrap_or(0)))
            }
            None => None,
        };
        let (from_rel, to_rel) = (from.to_relative(), to.to_relative());
        let result = self
            .run(move |root| root.copy(&from_rel, root, &to_rel).map(|_| ()))
            .await;
        if let (Some(quota), Some((size, files, replaced))) = (self.quota(), reserved) {
            match &result {
                Ok(()) => quota.release(replaced, 0),
                Err(_) => quota.release(size, files),
            }
        }
        result
    }

    /// Sets the permission bits; set-user-id, set-group-id and sticky bits are dropped.
    pub async fn set_mode(&self, path: &VPath, mode: u32) -> Result<(), VfsError> {
        self.check(path, Permission::Chmod)?;
        let rel = path.to_relative();
        self.run(move |root| {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::Permissions::from_mode(mode & 0o777);
            root.set_permissions(&rel, cap_std::fs::Permissions::from_std(perms))
        })
        .await
    }

    /// Sets access and modification times; `None` leaves a time unchanged.
    pub async fn set_times(
        &self,
        path: &VPath,
        accessed: Option<SystemTime>,
        modified: Option<SystemTime>,
    ) -> Result<(), VfsError> {
        self.check(path, Permission::Chtimes)?;
        let rel = path.to_relative();
        let spec = |t: SystemTime| SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(t));
        let (accessed, modified) = (accessed.map(spec), modified.map(spec));
        self.run(move |root| root.set_times(&rel, accessed, modified))
            .await
    }

    /// Truncates or extends a file to `len` bytes. Under a quota an extension must fit.
    pub async fn set_len(&self, path: &VPath, len: u64) -> Result<(), VfsError> {
        self.check(path, Permission::Overwrite)?;
        let rel = path.to_relative();
        let Some(quota) = self.quota().cloned() else {
            return self
                .run(move |root| {
                    let file = root.open_with(&rel, OpenOptions::new().write(true))?;
                    file.set_len(len)
                })
                .await;
        };
        // The size is read from the opened file, so the change counted is the one made.
        self.run(move |root| {
            let file = root.open_with(&rel, OpenOptions::new().write(true))?;
            let old = file.metadata()?.len();
            if len > old {
                quota
                    .reserve(len - old, 0, 0)
                    .map_err(|_| VfsError::quota_io_error())?;
                if let Err(error) = file.set_len(len) {
                    quota.release(len - old, 0);
                    return Err(error);
                }
            } else {
                file.set_len(len)?;
                quota.release(old - len, 0);
            }
            Ok(())
        })
        .await
    }

    /// Creates a symlink at `link` pointing to `target`, which is a client path: absolute
    /// paths mean paths in the home. The target must lie in the link's own folder or below
    /// it, and the link stores it as a relative path without `..`.
    ///
    /// A link may only point down because a stored `..` climbs the folders on disk, not the
    /// path the client used: below a symlinked folder, or after the link is renamed into
    /// another folder, a link with `..` could point out of the home for every program that
    /// follows it outside Ferry (backups, web servers, a shell). A link without `..` stays
    /// inside the folder that holds it, wherever that folder is.
    pub async fn symlink(&self, target: &str, link: &VPath) -> Result<(), VfsError> {
        self.check(link, Permission::CreateSymlinks)?;
        let folder = link.parent();
        let resolved = resolve_link_target(&folder, target)?;
        check_not_temp(&resolved)?;
        if resolved == folder || !resolved.starts_with(&folder) {
            tracing::debug!(%link, target, "symlink rejected: its target is not below the link's folder");
            return Err(VfsError::PermissionDenied);
        }
        let stored = link.relative_link_to(&resolved);
        let rel = link.to_relative();
        self.run(move |root| root.symlink(&stored, &rel)).await
    }

    /// Returns a symlink's target as a path in the home, or the stored text when the link
    /// points outside it (such a link cannot be followed).
    pub async fn read_link(&self, path: &VPath) -> Result<String, VfsError> {
        check_not_temp(path)?;
        let rel = path.to_relative();
        let target = self.run(move |root| root.read_link_contents(&rel)).await?;
        let text = target.to_string_lossy().into_owned();
        if target.is_absolute() {
            return Ok(text);
        }
        Ok(resolve_link_target(&path.parent(), &text)
            .map(|p| p.to_string())
            .unwrap_or(text))
    }

    /// Reports the space of the file system that holds `path`.
    pub async fn statvfs(&self, path: &VPath) -> Result<FsStats, VfsError> {
        let rel = path.to_relative();
        self.run(move |root| {
            let meta = root.metadata(&rel)?;
            let dir = if meta.is_dir() {
                root.open_dir(&rel)?
            } else {
                root.open_dir(
                    rel.parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(Path::new(".")),
                )?
            };
            let s = rustix::fs::fstatvfs(&dir)?;
            Ok(FsStats {
                block_size: s.f_bsize,
                fragment_size: s.f_frsize,
                blocks: s.f_blocks,
                blocks_free: s.f_bfree,
                blocks_available: s.f_bavail,
                files: s.f_files,
                files_free: s.f_ffree,
                files_available: s.f_favail,
                fs_id: s.f_fsid,
                flags: s.f_flag.bits(),
                max_name_len: s.f_namemax,
            })
        })
        .await
    }
}

fn check_not_temp(path: &VPath) -> Result<(), VfsError> {
    if path
        .components()
        .any(|part| part.starts_with(UPLOAD_TEMP_PREFIX))
    {
        return Err(VfsError::NotFound);
    }
    Ok(())
}

/// Resolves a symlink target written relative to `dir` (or absolute within the home),
/// refusing relative targets that climb above the home.
fn resolve_link_target(dir: &VPath, target: &str) -> Result<VPath, VfsError> {
    if target.is_empty() {
        return Err(VfsError::InvalidPath("empty symlink target".into()));
    }
    if target.starts_with('/') {
        return VPath::parse(target);
    }
    let mut depth = dir.components().count();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => return Err(VfsError::PermissionDenied),
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    VPath::resolve(dir, target)
}

/// Opens the parent directory of `rel` through the jail and returns it with the final name.
fn open_parent(root: &Dir, rel: &Path) -> io::Result<(Dir, String)> {
    let name = rel
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_owned();
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => root.open_dir(p)?,
        _ => root.open_dir(".")?,
    };
    Ok((parent, name))
}

/// Creates a new temporary file with a random name in `parent`.
fn create_temp(parent: &Dir, append: bool) -> io::Result<(String, cap_std::fs::File)> {
    let mut open = OpenOptions::new();
    open.read(true).write(true).create_new(true).mode(0o644);
    if append {
        open.append(true);
    }
    loop {
        let name = format!("{UPLOAD_TEMP_PREFIX}{:016x}", rand::random::<u64>());
        match parent.open_with(&name, &open) {
            Ok(file) => return Ok((name, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Copies the current content of `name` into the temporary file, so that a resumed upload
/// in atomic mode starts from what is already there. Only the data extents are copied (found
/// with `SEEK_DATA` and `SEEK_HOLE`) and the length is set at the end, so a sparse file stays
/// sparse: otherwise one write far beyond the end of a file, then an open for writing, would
/// fill the disk with zeros.
fn copy_existing(parent: &Dir, name: &str, temp: &File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;

    let source = parent.open(name)?.into_std();
    let len = source.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let data_start = match rustix::fs::seek(&source, rustix::fs::SeekFrom::Data(offset)) {
            Ok(start) => start,
            // ENXIO: no data after `offset`, only a hole up to the end.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let data_end = rustix::fs::seek(&source, rustix::fs::SeekFrom::Hole(data_start))?.min(len);
        let mut at = data_start;
        while at < data_end {
            let want = usize::try_from(data_end - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = source.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            temp.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        offset = data_end;
    }
    temp.set_len(len)?;
    // Positional writes do not depend on the cursor, but appends and streams do.
    use std::io::Seek;
    let mut cursor = temp;
    cursor.seek(io::SeekFrom::End(0))?;
    Ok(())
}

#[cfg(test)]
mod tests;
