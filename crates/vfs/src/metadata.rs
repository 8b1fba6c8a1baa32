use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_std::fs::MetadataExt;

/// The type of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// Sockets, devices and pipes, which are listed but cannot be opened.
    Other,
}

/// What `stat` or `lstat` reports about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub kind: FileKind,
    pub size: u64,
    /// The full `st_mode`, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub accessed: SystemTime,
    pub modified: SystemTime,
}

impl Metadata {
    pub(crate) fn from_cap(meta: &cap_std::fs::Metadata) -> Metadata {
        let file_type = meta.file_type();
        let kind = if file_type.is_symlink() {
            FileKind::Symlink
        } else if file_type.is_dir() {
            FileKind::Dir
        } else if file_type.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        };
        Metadata {
            kind,
            size: meta.len(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: meta.nlink(),
            accessed: to_system_time(meta.atime(), meta.atime_nsec()),
            modified: to_system_time(meta.mtime(), meta.mtime_nsec()),
        }
    }

    pub(crate) fn from_std(meta: &std::fs::Metadata) -> Metadata {
        Metadata::from_cap(&cap_std::fs::Metadata::from_just_metadata(meta.clone()))
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == FileKind::File
    }

    /// Returns the permission bits without the file type.
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}

fn to_system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = u32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// The name, with any bytes that are not UTF-8 replaced by U+FFFD.
    pub name: String,
    /// The entry itself, not what a symlink points to.
    pub metadata: Metadata,
}

/// Free and total space of the file system that holds a path, as `statvfs` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    pub block_size: u64,
    pub fragment_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
    pub files_available: u64,
    pub fs_id: u64,
    pub flags: u64,
    pub max_name_len: u64,
}
