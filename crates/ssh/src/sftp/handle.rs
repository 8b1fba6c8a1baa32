//! Open handles: files being read or written, and directory listings.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use ferry_vfs::{DirEntry, FileReader, FileWriter, VPath};
use tokio::sync::OwnedSemaphorePermit;

/// The number of bytes of a handle id on the wire.
const HANDLE_LEN: usize = 4;

/// Encodes a handle id as the opaque string sent to the client.
pub fn encode_id(id: u32) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// Decodes a handle string from the client; anything we did not send yields `None`.
pub fn decode_id(bytes: &[u8]) -> Option<u32> {
    let bytes: [u8; HANDLE_LEN] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// An open handle.
pub struct Handle {
    pub path: VPath,
    pub kind: HandleKind,
    pub opened: Instant,
    /// Bytes read or written through the handle, for the transfer log.
    transferred: AtomicU64,
}

pub enum HandleKind {
    Reader(FileReader),
    Writer(WriterHandle),
    Dir(Mutex<Listing>),
}

/// A file opened for writing (and possibly reading).
pub struct WriterHandle {
    pub writer: FileWriter,
    pub readable: bool,
    /// Every write goes to the end of the file, whatever its offset.
    pub append: bool,
    /// Attribute changes applied once the upload is published on CLOSE.
    pub deferred: Mutex<Deferred>,
}

/// Attributes set on a file being uploaded. In atomic upload mode the file that the client
/// names does not exist yet, so these wait for CLOSE.
#[derive(Debug, Default)]
pub struct Deferred {
    /// The permissions of the file that the upload replaces, or those that OPEN requested for
    /// a new file. Skipped silently if the user may not chmod, as the client did not request
    /// a change of mode.
    pub publish_mode: Option<u32>,
    /// Permissions from FSETSTAT.
    pub mode: Option<u32>,
    /// Access and modification times from FSETSTAT.
    pub times: Option<(SystemTime, SystemTime)>,
}

/// The rest of a directory listing that READDIR hands out in batches.
pub struct Listing {
    pub entries: std::vec::IntoIter<DirEntry>,
    /// The listing's share of the connection's listed entries, returned once the listing is
    /// read to its end or its handle is closed.
    pub reservation: Option<OwnedSemaphorePermit>,
}

impl Handle {
    pub fn new(path: VPath, kind: HandleKind) -> Handle {
        Handle {
            path,
            kind,
            opened: Instant::now(),
            transferred: AtomicU64::new(0),
        }
    }

    pub fn add_transferred(&self, bytes: usize) {
        self.transferred.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn transferred(&self) -> u64 {
        self.transferred.load(Ordering::Relaxed)
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, HandleKind::Dir(_))
    }

    /// Returns whether writes on this handle ignore their offset, so that they must run one
    /// after the other in arrival order.
    pub fn appends(&self) -> bool {
        matches!(&self.kind, HandleKind::Writer(w) if w.append)
    }

    /// Returns whether the handle stages an upload, which CLOSE publishes.
    pub fn is_writer(&self) -> bool {
        matches!(self.kind, HandleKind::Writer(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trip() {
        assert_eq!(decode_id(&encode_id(0xdead_beef)), Some(0xdead_beef));
    }

    #[test]
    fn foreign_handle_rejected() {
        assert_eq!(decode_id(b""), None);
        assert_eq!(decode_id(b"12345"), None);
    }
}
