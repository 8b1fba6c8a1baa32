//! The SFTP server driven packet by packet over an in-memory stream: version negotiation,
//! limits, malformed input, request ordering and the cleanup of unfinished uploads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_ssh::sftp::{
    self, ConnectionBudget, MAX_HANDLES, MAX_LISTED_ENTRIES, MAX_PACKET_LEN, MAX_READ_LEN,
    SftpError,
};
use ferry_vfs::{Limits, Permissions, Quota, UploadMode, Vfs};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

const INIT: u8 = 1;
const VERSION: u8 = 2;
const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const LSTAT: u8 = 7;
const FSTAT: u8 = 8;
const SETSTAT: u8 = 9;
const FSETSTAT: u8 = 10;
const OPENDIR: u8 = 11;
const READDIR: u8 = 12;
const MKDIR: u8 = 14;
const REALPATH: u8 = 16;
const STAT: u8 = 17;
const RENAME: u8 = 18;
const READLINK: u8 = 19;
const SYMLINK: u8 = 20;
const EXTENDED: u8 = 200;

const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const NAME: u8 = 104;
const ATTRS: u8 = 105;
const EXTENDED_REPLY: u8 = 201;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_NO_SUCH_FILE: u32 = 2;
const FX_PERMISSION_DENIED: u32 = 3;
const FX_FAILURE: u32 = 4;
const FX_BAD_MESSAGE: u32 = 5;
const FX_OP_UNSUPPORTED: u32 = 8;

const READ_FLAG: u32 = 0x01;
const WRITE_FLAG: u32 = 0x02;
const APPEND_FLAG: u32 = 0x04;
const CREAT_FLAG: u32 = 0x08;
const TRUNC_FLAG: u32 = 0x10;

const ATTR_SIZE: u32 = 0x01;
const ATTR_PERMISSIONS: u32 = 0x04;
const ATTR_ACMODTIME: u32 = 0x08;

const TIMEOUT: Duration = Duration::from_secs(10);

/// How a test server is set up; the default is atomic uploads, every permission, no limits
/// and a budget of its own.
struct Setup {
    permissions: Permissions,
    mode: UploadMode,
    limits: Limits,
    budget: ConnectionBudget,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            permissions: Permissions::default(),
            mode: UploadMode::Atomic,
            limits: Limits::default(),
            budget: ConnectionBudget::new(),
        }
    }
}

/// Builds packet bodies.
#[derive(Default, Clone)]
struct Body(Vec<u8>);

impl Body {
    fn new(kind: u8, id: u32) -> Body {
        Body(vec![kind]).u32(id)
    }
    fn u32(mut self, v: u32) -> Body {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Body {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn string(self, s: impl AsRef<[u8]>) -> Body {
        let s = s.as_ref();
        let mut b = self.u32(s.len() as u32);
        b.0.extend_from_slice(s);
        b
    }
}

/// Reads the fields of a reply.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&mut self) -> u32 {
        let (head, rest) = self.0.split_at(4);
        self.0 = rest;
        u32::from_be_bytes(head.try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        let (head, rest) = self.0.split_at(8);
        self.0 = rest;
        u64::from_be_bytes(head.try_into().unwrap())
    }
    fn string(&mut self) -> Vec<u8> {
        let len = self.u32() as usize;
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head.to_vec()
    }
    fn text(&mut self) -> String {
        String::from_utf8(self.string()).unwrap()
    }
    /// Reads attributes and returns (flags, size, permissions, mtime).
    fn attrs(&mut self) -> (u32, Option<u64>, Option<u32>, Option<u32>) {
        let flags = self.u32();
        let size = (flags & ATTR_SIZE != 0).then(|| self.u64());
        if flags & 0x02 != 0 {
            self.u32();
            self.u32();
        }
        let perms = (flags & ATTR_PERMISSIONS != 0).then(|| self.u32());
        let mtime = (flags & ATTR_ACMODTIME != 0).then(|| {
            self.u32();
            self.u32()
        });
        (flags, size, perms, mtime)
    }
}

struct Reply {
    kind: u8,
    id: u32,
    rest: Vec<u8>,
}

impl Reply {
    fn fields(&self) -> Fields<'_> {
        Fields(&self.rest)
    }

    /// Returns (code, message) of a STATUS reply.
    fn status(&self) -> (u32, String) {
        assert_eq!(self.kind, STATUS, "expected STATUS for request {}", self.id);
        let mut f = self.fields();
        (f.u32(), f.text())
    }

    fn code(&self) -> u32 {
        self.status().0
    }

    fn handle(&self) -> Vec<u8> {
        assert_eq!(
            self.kind, HANDLE,
            "expected HANDLE for request {}, got {}: {:?}",
            self.id, self.kind, self.rest
        );
        self.fields().string()
    }

    fn data(&self) -> Vec<u8> {
        assert_eq!(self.kind, DATA, "expected DATA for request {}", self.id);
        self.fields().string()
    }

    /// Returns (filename, longname) of each NAME entry.
    fn names(&self) -> Vec<(String, String)> {
        assert_eq!(self.kind, NAME, "expected NAME for request {}", self.id);
        let mut f = self.fields();
        let count = f.u32();
        (0..count)
            .map(|_| {
                let entry = (f.text(), f.text());
                f.attrs();
                entry
            })
            .collect()
    }
}

/// A raw SFTP client on one end of an in-memory stream, with the server on the other.
struct Client {
    stream: DuplexStream,
    server: Option<JoinHandle<Result<(), SftpError>>>,
    next_id: u32,
    _home: tempfile::TempDir,
    home: std::path::PathBuf,
}

impl Client {
    /// Starts a server over a fresh home, without sending INIT.
    async fn connect() -> Client {
        Client::connect_with(Permissions::default()).await
    }

    async fn connect_with(permissions: Permissions) -> Client {
        Client::connect_to(Setup {
            permissions,
            ..Setup::default()
        })
        .await
    }

    async fn connect_to(setup: Setup) -> Client {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let vfs = Vfs::open_with_limits(&home, setup.permissions, setup.mode, setup.limits)
            .await
            .unwrap();
        let (client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(sftp::serve_with_budget(
            server,
            vfs,
            "test".into(),
            setup.budget,
        ));
        Client {
            stream: client,
            server: Some(task),
            next_id: 1,
            _home: dir,
            home,
        }
    }

    /// Starts a server and completes the version exchange.
    async fn ready() -> Client {
        let mut client = Client::connect().await;
        client.init(3).await;
        client
    }

    async fn init(&mut self, version: u32) -> Reply {
        self.send(Body(vec![INIT]).u32(version)).await;
        let reply = self.recv().await;
        assert_eq!(reply.kind, VERSION);
        reply
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    async fn send(&mut self, body: Body) {
        let mut packet = (body.0.len() as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body.0);
        self.stream.write_all(&packet).await.unwrap();
    }

    async fn recv(&mut self) -> Reply {
        tokio::time::timeout(TIMEOUT, async {
            let len = self.stream.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len];
            self.stream.read_exact(&mut body).await.unwrap();
            let kind = body[0];
            // For VERSION this is the version, since it has no request id.
            let id = u32::from_be_bytes(body[1..5].try_into().unwrap());
            Reply {
                kind,
                id,
                rest: body[5..].to_vec(),
            }
        })
        .await
        .expect("no reply from the server")
    }

    /// Sends one request and returns its reply.
    async fn call(&mut self, body: Body) -> Reply {
        self.send(body).await;
        self.recv().await
    }

    async fn open(&mut self, path: &str, flags: u32) -> Reply {
        let id = self.id();
        self.call(Body::new(OPEN, id).string(path).u32(flags).u32(0))
            .await
    }

    async fn close(&mut self, handle: &[u8]) -> Reply {
        let id = self.id();
        self.call(Body::new(CLOSE, id).string(handle)).await
    }

    async fn write(&mut self, handle: &[u8], offset: u64, data: &[u8]) -> Reply {
        let id = self.id();
        self.call(write_body(id, handle, offset, data)).await
    }

    async fn path_request(&mut self, kind: u8, path: &str) -> Reply {
        let id = self.id();
        self.call(Body::new(kind, id).string(path)).await
    }

    async fn extended(&mut self, name: &str, args: Body) -> Reply {
        let id = self.id();
        let mut body = Body::new(EXTENDED, id).string(name);
        body.0.extend_from_slice(&args.0);
        self.call(body).await
    }

    /// Closes the client's end and returns how the server's session ended.
    async fn finish(&mut self) -> Result<(), SftpError> {
        self.stream.shutdown().await.unwrap();
        let task = self.server.take().unwrap();
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("server did not end")
            .unwrap()
    }

    /// Waits for the server to end the session on its own.
    async fn ended(&mut self) -> Result<(), SftpError> {
        let task = self.server.take().unwrap();
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("server did not end")
            .unwrap()
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.home.join(name)
    }
}

fn write_body(id: u32, handle: &[u8], offset: u64, data: &[u8]) -> Body {
    Body::new(WRITE, id).string(handle).u64(offset).string(data)
}

fn entries_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn version_six_gets_three() {
    let mut client = Client::connect().await;
    let reply = client.init(6).await;
    // VERSION has no request id: the first four bytes are the version.
    assert_eq!(reply.id, 3);
    let mut f = Fields(&reply.rest);
    let mut extensions = Vec::new();
    while !f.0.is_empty() {
        extensions.push((f.text(), f.text()));
    }
    let names: Vec<&str> = extensions.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "posix-rename@openssh.com",
        "statvfs@openssh.com",
        "fstatvfs@openssh.com",
        "fsync@openssh.com",
        "limits@openssh.com",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(!names.contains(&"hardlink@openssh.com"));
    assert_eq!(client.finish().await.unwrap(), ());
}

#[tokio::test]
async fn version_two_rejected() {
    let mut client = Client::connect().await;
    client.send(Body(vec![INIT]).u32(2)).await;
    let result = client.ended().await;
    assert!(
        matches!(result, Err(SftpError::UnsupportedVersion(2))),
        "{result:?}"
    );
}

#[tokio::test]
async fn request_before_init_rejected() {
    let mut client = Client::connect().await;
    client.send(Body::new(STAT, 1).string("/")).await;
    let result = client.ended().await;
    assert!(
        matches!(result, Err(SftpError::MissingInit(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn close_before_init_is_clean() {
    let mut client = Client::connect().await;
    assert!(client.finish().await.is_ok());
}

#[tokio::test]
async fn limits_reply() {
    let mut client = Client::ready().await;
    let reply = client.extended("limits@openssh.com", Body::default()).await;
    assert_eq!(reply.kind, EXTENDED_REPLY);
    let mut f = reply.fields();
    assert_eq!(f.u64(), u64::from(MAX_PACKET_LEN));
    assert_eq!(f.u64(), u64::from(MAX_READ_LEN));
    let write_len = f.u64();
    assert!(write_len > 0);
    assert!(write_len + 1024 <= u64::from(MAX_PACKET_LEN));
    assert_eq!(f.u64(), MAX_HANDLES as u64);
}

#[tokio::test]
async fn unknown_request_type_unsupported() {
    let mut client = Client::ready().await;
    let reply = client.call(Body::new(77, 9).string("x")).await;
    assert_eq!(reply.id, 9);
    assert_eq!(reply.code(), FX_OP_UNSUPPORTED);
    // The session goes on.
    let reply = client.path_request(REALPATH, ".").await;
    assert_eq!(reply.names()[0].0, "/");
}

#[tokio::test]
async fn unknown_extension_unsupported() {
    let mut client = Client::ready().await;
    let reply = client
        .extended(
            "hardlink@openssh.com",
            Body::default().string("a").string("b"),
        )
        .await;
    assert_eq!(reply.code(), FX_OP_UNSUPPORTED);
    let reply = client.extended("nonsense", Body::default()).await;
    assert_eq!(reply.code(), FX_OP_UNSUPPORTED);
}

#[tokio::test]
async fn huge_packet_length_ends_session() {
    let mut client = Client::ready().await;
    client
        .stream
        .write_all(&u32::MAX.to_be_bytes())
        .await
        .unwrap();
    let result = client.ended().await;
    assert!(
        matches!(result, Err(SftpError::PacketTooLong { len: u32::MAX, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn zero_length_packet_ends_session() {
    let mut client = Client::ready().await;
    client.stream.write_all(&[0, 0, 0, 0]).await.unwrap();
    let result = client.ended().await;
    assert!(matches!(result, Err(SftpError::Malformed(_))), "{result:?}");
}

#[tokio::test]
async fn truncated_request_ends_session() {
    let mut client = Client::ready().await;
    // OPEN whose filename length points past the end of the packet.
    client
        .send(Body::new(OPEN, 5).u32(1000).u32(READ_FLAG))
        .await;
    let result = client.ended().await;
    assert!(matches!(result, Err(SftpError::Malformed(_))), "{result:?}");
}

#[tokio::test]
async fn write_data_past_packet_end() {
    let mut client = Client::ready().await;
    let handle = client
        .open("/w.txt", WRITE_FLAG | CREAT_FLAG)
        .await
        .handle();
    let mut body = Body::new(WRITE, 7).string(&handle).u64(0).u32(100);
    body.0.extend_from_slice(b"only ten b");
    client.send(body).await;
    let result = client.ended().await;
    assert!(matches!(result, Err(SftpError::Malformed(_))), "{result:?}");
}

#[tokio::test]
async fn write_with_long_handle_fails() {
    let mut client = Client::ready().await;
    let reply = client.write(&[7u8; 300], 0, b"data").await;
    assert_eq!(reply.code(), FX_FAILURE);
    let reply = client.path_request(REALPATH, ".").await;
    assert_eq!(reply.names()[0].0, "/");
}

#[tokio::test]
async fn stream_ending_inside_packet() {
    let mut client = Client::ready().await;
    client.stream.write_all(&[0, 0, 1, 0, STAT]).await.unwrap();
    let result = client.finish().await;
    assert!(matches!(result, Err(SftpError::Io(_))), "{result:?}");
}

#[tokio::test]
async fn realpath_dot_is_root() {
    let mut client = Client::ready().await;
    let reply = client.path_request(REALPATH, ".").await;
    assert_eq!(reply.names()[0].0, "/");
    let reply = client.path_request(REALPATH, "/a/../../b/./c").await;
    assert_eq!(reply.names()[0].0, "/b/c");
}

#[tokio::test]
async fn stat_missing_file() {
    let mut client = Client::ready().await;
    let reply = client.path_request(STAT, "/nothing").await;
    let (code, message) = reply.status();
    assert_eq!(code, FX_NO_SUCH_FILE);
    assert!(!message.is_empty());
}

#[tokio::test]
async fn invalid_handle_fails() {
    let mut client = Client::ready().await;
    let id = client.id();
    let reply = client
        .call(Body::new(READ, id).string("bogus").u64(0).u32(10))
        .await;
    assert_eq!(reply.code(), FX_FAILURE);
}

#[tokio::test]
async fn read_length_clamped() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("big"), vec![7u8; 1 << 20]).unwrap();
    let handle = client.open("/big", READ_FLAG).await.handle();
    let id = client.id();
    let reply = client
        .call(Body::new(READ, id).string(&handle).u64(0).u32(u32::MAX))
        .await;
    assert_eq!(reply.data().len(), MAX_READ_LEN as usize);
    let id = client.id();
    let reply = client
        .call(Body::new(READ, id).string(&handle).u64(1 << 20).u32(10))
        .await;
    assert_eq!(reply.code(), FX_EOF);
}

#[tokio::test]
async fn handle_limit() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("f"), b"x").unwrap();
    let mut handles = Vec::new();
    for _ in 0..MAX_HANDLES {
        handles.push(client.open("/f", READ_FLAG).await.handle());
    }
    let reply = client.open("/f", READ_FLAG).await;
    let (code, message) = reply.status();
    assert_eq!(code, FX_FAILURE);
    assert!(message.contains("handles"), "{message}");
    assert_eq!(client.close(&handles[0]).await.code(), FX_OK);
    client.open("/f", READ_FLAG).await.handle();
}

#[tokio::test]
async fn upload_without_close_discarded() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("keep.txt"), b"old content").unwrap();
    let flags = WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG;
    let handle = client.open("/keep.txt", flags).await.handle();
    assert_eq!(client.write(&handle, 0, b"new").await.code(), FX_OK);
    let new_file = client.open("/new.txt", flags).await.handle();
    assert_eq!(client.write(&new_file, 0, b"new").await.code(), FX_OK);
    client.finish().await.unwrap();
    assert_eq!(
        std::fs::read(client.file("keep.txt")).unwrap(),
        b"old content"
    );
    assert_eq!(entries_of(&client.home), vec!["keep.txt"]);
}

#[tokio::test]
async fn upload_published_on_close() {
    let mut client = Client::ready().await;
    let flags = WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG;
    let handle = client.open("/up.txt", flags).await.handle();
    client.write(&handle, 0, b"hello").await;
    assert!(!client.file("up.txt").exists());
    assert_eq!(client.close(&handle).await.code(), FX_OK);
    assert_eq!(std::fs::read(client.file("up.txt")).unwrap(), b"hello");
}

#[tokio::test]
async fn pipelined_writes_then_close() {
    let mut client = Client::ready().await;
    let flags = WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG;
    let handle = client.open("/p.bin", flags).await.handle();
    let chunk = 32 * 1024;
    let expected: Vec<u8> = (0..64 * chunk).map(|i| (i * 7 % 251) as u8).collect();
    let mut ids = Vec::new();
    for (n, part) in expected.chunks(chunk).enumerate() {
        let id = client.id();
        ids.push(id);
        client
            .send(write_body(id, &handle, (n * chunk) as u64, part))
            .await;
    }
    let close_id = client.id();
    client
        .send(Body::new(CLOSE, close_id).string(&handle))
        .await;
    let mut answered = Vec::new();
    for _ in 0..=ids.len() {
        let reply = client.recv().await;
        assert_eq!(reply.code(), FX_OK, "request {}", reply.id);
        answered.push(reply.id);
    }
    // CLOSE waits for the writes before it, so its reply comes last.
    assert_eq!(answered.last(), Some(&close_id));
    assert_eq!(std::fs::read(client.file("p.bin")).unwrap(), expected);
}

#[tokio::test]
async fn overlapping_writes_keep_order() {
    let mut client = Client::ready().await;
    let flags = WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG;
    let handle = client.open("/o.txt", flags).await.handle();
    let big = vec![b'A'; 200_000];
    client.send(write_body(100, &handle, 0, &big)).await;
    client.send(write_body(101, &handle, 1, b"BB")).await;
    client.send(write_body(102, &handle, 199_999, b"CC")).await;
    for _ in 0..3 {
        assert_eq!(client.recv().await.code(), FX_OK);
    }
    assert_eq!(client.close(&handle).await.code(), FX_OK);
    let content = std::fs::read(client.file("o.txt")).unwrap();
    assert_eq!(content.len(), 200_001);
    assert_eq!(&content[..4], b"ABBA");
    assert_eq!(&content[199_998..], b"ACC");
}

#[tokio::test]
async fn append_writes_keep_order() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("log.txt"), b"0").unwrap();
    let handle = client
        .open("/log.txt", WRITE_FLAG | CREAT_FLAG | APPEND_FLAG)
        .await
        .handle();
    for (n, part) in [b"1", b"2", b"3", b"4"].iter().enumerate() {
        client
            .send(write_body(200 + n as u32, &handle, 0, *part))
            .await;
    }
    for _ in 0..4 {
        assert_eq!(client.recv().await.code(), FX_OK);
    }
    assert_eq!(client.close(&handle).await.code(), FX_OK);
    assert_eq!(std::fs::read(client.file("log.txt")).unwrap(), b"01234");
}

#[tokio::test]
async fn read_on_write_only_handle() {
    let mut client = Client::ready().await;
    let handle = client
        .open("/w.txt", WRITE_FLAG | CREAT_FLAG)
        .await
        .handle();
    let id = client.id();
    let reply = client
        .call(Body::new(READ, id).string(&handle).u64(0).u32(10))
        .await;
    assert_eq!(reply.code(), FX_PERMISSION_DENIED);
}

#[tokio::test]
async fn write_on_read_handle() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("r.txt"), b"x").unwrap();
    let handle = client.open("/r.txt", READ_FLAG).await.handle();
    assert_eq!(
        client.write(&handle, 0, b"y").await.code(),
        FX_PERMISSION_DENIED
    );
}

#[tokio::test]
async fn rename_does_not_replace() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("a"), b"a").unwrap();
    std::fs::write(client.file("b"), b"b").unwrap();
    let id = client.id();
    let reply = client
        .call(Body::new(RENAME, id).string("/a").string("/b"))
        .await;
    assert_eq!(reply.code(), FX_FAILURE);
    assert_eq!(std::fs::read(client.file("b")).unwrap(), b"b");
}

#[tokio::test]
async fn posix_rename_replaces() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("a"), b"a").unwrap();
    std::fs::write(client.file("b"), b"b").unwrap();
    let reply = client
        .extended(
            "posix-rename@openssh.com",
            Body::default().string("/a").string("/b"),
        )
        .await;
    assert_eq!(reply.code(), FX_OK);
    assert_eq!(std::fs::read(client.file("b")).unwrap(), b"a");
    assert!(!client.file("a").exists());
}

#[tokio::test]
async fn symlink_target_first() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("target.txt"), b"t").unwrap();
    let id = client.id();
    let reply = client
        .call(
            Body::new(SYMLINK, id)
                .string("target.txt")
                .string("/link.txt"),
        )
        .await;
    assert_eq!(reply.code(), FX_OK);
    let on_disk = std::fs::read_link(client.file("link.txt")).unwrap();
    assert_eq!(on_disk, Path::new("target.txt"));
    let reply = client.path_request(READLINK, "/link.txt").await;
    assert_eq!(reply.names()[0].0, "/target.txt");
}

#[tokio::test]
async fn symlink_above_home_denied() {
    let mut client = Client::ready().await;
    let id = client.id();
    let reply = client
        .call(
            Body::new(SYMLINK, id)
                .string("../../etc/passwd")
                .string("/escape"),
        )
        .await;
    assert_eq!(reply.code(), FX_PERMISSION_DENIED);
}

#[tokio::test]
async fn readdir_longnames() {
    let mut client = Client::ready().await;
    std::fs::create_dir(client.file("a dir")).unwrap();
    std::fs::write(client.file("é file.txt"), b"12345").unwrap();
    std::os::unix::fs::symlink("é file.txt", client.file("lnk")).unwrap();
    let handle = client.path_request(OPENDIR, "/").await.handle();
    let id = client.id();
    let reply = client.call(Body::new(READDIR, id).string(&handle)).await;
    let mut names = reply.names();
    names.sort();
    assert_eq!(names.len(), 3);
    let expected = [("a dir", 'd'), ("lnk", 'l'), ("é file.txt", '-')];
    for ((name, longname), (expected_name, kind)) in names.iter().zip(expected) {
        assert_eq!(name, expected_name);
        assert!(longname.starts_with(kind), "{longname}");
        assert!(
            longname.ends_with(&format!(" {expected_name}")),
            "{longname}"
        );
        assert_eq!(
            longname.split_whitespace().count(),
            9 + name.matches(' ').count()
        );
    }
    assert!(names[2].1.contains(" 5 "), "{}", names[2].1);
    let id = client.id();
    let reply = client.call(Body::new(READDIR, id).string(&handle)).await;
    assert_eq!(reply.code(), FX_EOF);
}

#[tokio::test]
async fn readdir_in_batches() {
    let mut client = Client::ready().await;
    for n in 0..250 {
        std::fs::write(client.file(&format!("f{n}")), b"").unwrap();
    }
    let handle = client.path_request(OPENDIR, "/").await.handle();
    let mut total = 0;
    loop {
        let id = client.id();
        let reply = client.call(Body::new(READDIR, id).string(&handle)).await;
        if reply.kind == STATUS {
            assert_eq!(reply.code(), FX_EOF);
            break;
        }
        let batch = reply.names().len();
        assert!(batch > 0);
        assert!(batch <= 100, "{batch}");
        total += batch;
    }
    assert_eq!(total, 250);
}

#[tokio::test]
async fn setstat_size_mode_times() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("s.txt"), b"0123456789").unwrap();
    let id = client.id();
    let body = Body::new(SETSTAT, id)
        .string("/s.txt")
        .u32(ATTR_SIZE | ATTR_PERMISSIONS | ATTR_ACMODTIME)
        .u64(4)
        .u32(0o600)
        .u32(1_000_000_000)
        .u32(1_200_000_000);
    assert_eq!(client.call(body).await.code(), FX_OK);
    let reply = client.path_request(STAT, "/s.txt").await;
    assert_eq!(reply.kind, ATTRS);
    let (_, size, perms, mtime) = reply.fields().attrs();
    assert_eq!(size, Some(4));
    assert_eq!(perms.map(|p| p & 0o7777), Some(0o600));
    assert_eq!(mtime, Some(1_200_000_000));
}

#[tokio::test]
async fn setstat_owner_change_denied() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("o.txt"), b"").unwrap();
    let id = client.id();
    let body = Body::new(SETSTAT, id)
        .string("/o.txt")
        .u32(0x02)
        .u32(12345)
        .u32(12345);
    assert_eq!(client.call(body).await.code(), FX_PERMISSION_DENIED);
}

#[tokio::test]
async fn fsetstat_times_survive_publish() {
    let mut client = Client::ready().await;
    let flags = WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG;
    let handle = client.open("/t.txt", flags).await.handle();
    client.write(&handle, 0, b"data").await;
    let id = client.id();
    let body = Body::new(FSETSTAT, id)
        .string(&handle)
        .u32(ATTR_PERMISSIONS | ATTR_ACMODTIME)
        .u32(0o640)
        .u32(1_100_000_000)
        .u32(1_100_000_000);
    assert_eq!(client.call(body).await.code(), FX_OK);
    let id = client.id();
    let reply = client.call(Body::new(FSTAT, id).string(&handle)).await;
    assert_eq!(reply.fields().attrs().1, Some(4));
    assert_eq!(client.close(&handle).await.code(), FX_OK);
    let reply = client.path_request(LSTAT, "/t.txt").await;
    let (_, size, perms, mtime) = reply.fields().attrs();
    assert_eq!(size, Some(4));
    assert_eq!(perms.map(|p| p & 0o777), Some(0o640));
    assert_eq!(mtime, Some(1_100_000_000));
}

#[tokio::test]
async fn open_mode_applies_to_new_file() {
    let mut client = Client::ready().await;
    let id = client.id();
    let body = Body::new(OPEN, id)
        .string("/x.sh")
        .u32(WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG)
        .u32(ATTR_PERMISSIONS)
        .u32(0o755);
    let handle = client.call(body).await.handle();
    assert_eq!(client.close(&handle).await.code(), FX_OK);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(client.file("x.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[tokio::test]
async fn replaced_file_keeps_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mut client = Client::ready().await;
    std::fs::write(client.file("secret.txt"), b"old").unwrap();
    std::fs::set_permissions(
        client.file("secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let id = client.id();
    let body = Body::new(OPEN, id)
        .string("/secret.txt")
        .u32(WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG)
        .u32(ATTR_PERMISSIONS)
        .u32(0o644);
    let handle = client.call(body).await.handle();
    client.write(&handle, 0, b"new").await;
    assert_eq!(client.close(&handle).await.code(), FX_OK);
    let mode = std::fs::metadata(client.file("secret.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read(client.file("secret.txt")).unwrap(), b"new");
}

#[tokio::test]
async fn mkdir_and_statvfs() {
    let mut client = Client::ready().await;
    let id = client.id();
    let reply = client.call(Body::new(MKDIR, id).string("/d").u32(0)).await;
    assert_eq!(reply.code(), FX_OK);
    assert!(client.file("d").is_dir());
    let reply = client
        .extended("statvfs@openssh.com", Body::default().string("/d"))
        .await;
    assert_eq!(reply.kind, EXTENDED_REPLY);
    let mut f = reply.fields();
    let block_size = f.u64();
    let _fragment = f.u64();
    let blocks = f.u64();
    assert!(block_size > 0);
    assert!(blocks > 0);
}

#[tokio::test]
async fn fstatvfs_and_fsync_on_upload() {
    let mut client = Client::ready().await;
    let handle = client
        .open("/n.txt", WRITE_FLAG | CREAT_FLAG)
        .await
        .handle();
    let reply = client
        .extended("fstatvfs@openssh.com", Body::default().string(&handle))
        .await;
    assert_eq!(reply.kind, EXTENDED_REPLY);
    let reply = client
        .extended("fsync@openssh.com", Body::default().string(&handle))
        .await;
    assert_eq!(reply.code(), FX_OK);
}

#[tokio::test]
async fn copy_data_between_handles() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("src"), b"0123456789").unwrap();
    let source = client.open("/src", READ_FLAG).await.handle();
    let target = client
        .open("/dst", WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG)
        .await
        .handle();
    let args = Body::default()
        .string(&source)
        .u64(2)
        .u64(0)
        .string(&target)
        .u64(0);
    assert_eq!(client.extended("copy-data", args).await.code(), FX_OK);
    client.close(&target).await;
    assert_eq!(std::fs::read(client.file("dst")).unwrap(), b"23456789");
}

#[tokio::test]
async fn permission_denied_mapped() {
    let read_only = ["list".to_owned(), "download".to_owned()];
    let permissions = Permissions::from_rules([("/", &read_only[..])]).unwrap();
    let mut client = Client::connect_with(permissions).await;
    client.init(3).await;
    let reply = client
        .open("/new.txt", WRITE_FLAG | CREAT_FLAG | TRUNC_FLAG)
        .await;
    assert_eq!(reply.code(), FX_PERMISSION_DENIED);
    let id = client.id();
    let reply = client.call(Body::new(MKDIR, id).string("/d").u32(0)).await;
    assert_eq!(reply.code(), FX_PERMISSION_DENIED);
}

#[tokio::test]
async fn pipelined_reads_answered_in_order() {
    let mut client = Client::ready().await;
    let content: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(client.file("r.bin"), &content).unwrap();
    let handle = client.open("/r.bin", READ_FLAG).await.handle();
    // More requests than run at once, sent without waiting, as paramiko's prefetch does.
    let chunk = 16 * 1024;
    let count = content.len().div_ceil(chunk);
    for n in 0..count {
        client
            .send(
                Body::new(READ, 1000 + n as u32)
                    .string(&handle)
                    .u64((n * chunk) as u64)
                    .u32(chunk as u32),
            )
            .await;
    }
    let mut received = Vec::new();
    for n in 0..count {
        let reply = client.recv().await;
        // Replies on one handle come in request order, which OpenSSH's client needs.
        assert_eq!(reply.id, 1000 + n as u32);
        received.extend_from_slice(&reply.data());
    }
    assert_eq!(received, content);
}

#[tokio::test]
async fn extended_without_name_bad_message() {
    let mut client = Client::ready().await;
    let reply = client.call(Body::new(EXTENDED, 15)).await;
    assert_eq!(reply.kind, STATUS);
    assert_eq!(reply.id, 15);
    assert_eq!(reply.code(), FX_BAD_MESSAGE);
    // Truncated arguments of a known extension get the same reply.
    let reply = client
        .extended("posix-rename@openssh.com", Body::default().string("/a"))
        .await;
    assert_eq!(reply.code(), FX_BAD_MESSAGE);
    // The session goes on.
    let reply = client.path_request(REALPATH, ".").await;
    assert_eq!(reply.names()[0].0, "/");
    assert!(client.finish().await.is_ok());
}

#[tokio::test]
async fn read_past_largest_offset_eof() {
    let mut client = Client::ready().await;
    std::fs::write(client.file("five"), b"12345").unwrap();
    let handle = client.open("/five", READ_FLAG).await.handle();
    for offset in [1u64 << 63, u64::MAX, (1u64 << 63) - 1] {
        let id = client.id();
        let reply = client
            .call(Body::new(READ, id).string(&handle).u64(offset).u32(100))
            .await;
        assert_eq!(reply.kind, STATUS, "offset {offset}");
        assert_eq!(
            reply.code(),
            FX_EOF,
            "offset {offset}: {:?}",
            reply.status()
        );
    }
    let id = client.id();
    let reply = client
        .call(Body::new(READ, id).string(&handle).u64(1).u32(100))
        .await;
    assert_eq!(reply.data(), b"2345");
}

fn copy_args(source: &[u8], read_offset: u64, len: u64, target: &[u8], write_offset: u64) -> Body {
    Body::default()
        .string(source)
        .u64(read_offset)
        .u64(len)
        .string(target)
        .u64(write_offset)
}

/// Connects to a server that writes files in place, with a quota that stops a runaway copy.
async fn standard_mode_client() -> Client {
    let limits = Limits {
        quota: Some(Arc::new(Quota::new(4 * 1024 * 1024, 0))),
        ..Limits::default()
    };
    let mut client = Client::connect_to(Setup {
        mode: UploadMode::Standard,
        limits,
        ..Setup::default()
    })
    .await;
    client.init(3).await;
    client
}

#[tokio::test]
async fn copy_data_overlap_rejected() {
    let mut client = standard_mode_client().await;
    std::fs::write(client.file("f"), [b'x'; 100]).unwrap();
    let source = client.open("/f", READ_FLAG).await.handle();
    let target = client.open("/f", WRITE_FLAG).await.handle();
    for (read_offset, len, write_offset) in [(0, 0, 50), (0, 0, 99), (50, 10, 45), (0, 100, 0)] {
        let args = copy_args(&source, read_offset, len, &target, write_offset);
        let reply = client.extended("copy-data", args).await;
        assert_eq!(
            reply.code(),
            FX_FAILURE,
            "{read_offset} {len} {write_offset}"
        );
        assert!(
            reply.status().1.contains("overlaps"),
            "{:?}",
            reply.status()
        );
    }
    assert_eq!(std::fs::metadata(client.file("f")).unwrap().len(), 100);
    // Ranges side by side in the same file are copied.
    let args = copy_args(&source, 0, 100, &target, 100);
    assert_eq!(client.extended("copy-data", args).await.code(), FX_OK);
    client.close(&target).await;
    assert_eq!(std::fs::read(client.file("f")).unwrap(), [b'x'; 200]);
}

#[tokio::test]
async fn copy_data_stops_at_source_size() {
    let mut client = standard_mode_client().await;
    std::fs::write(client.file("f"), [b'y'; 1000]).unwrap();
    std::os::unix::fs::symlink("f", client.file("link")).unwrap();
    // Two paths to one file: the copy reads what it writes, and without a bound at the
    // source's size it would run until the quota stops it.
    let source = client.open("/f", READ_FLAG).await.handle();
    let target = client.open("/link", WRITE_FLAG).await.handle();
    let args = copy_args(&source, 0, 0, &target, 500);
    let reply = client.extended("copy-data", args).await;
    assert_eq!(reply.code(), FX_OK, "{:?}", reply.status());
    client.close(&target).await;
    assert_eq!(std::fs::metadata(client.file("f")).unwrap().len(), 1500);
}

#[tokio::test]
async fn listings_limited_per_connection() {
    let budget = ConnectionBudget::new();
    let mut first = Client::connect_to(Setup {
        budget: budget.clone(),
        ..Setup::default()
    })
    .await;
    first.init(3).await;
    let mut second = Client::connect_to(Setup {
        budget,
        ..Setup::default()
    })
    .await;
    second.init(3).await;
    let count = MAX_LISTED_ENTRIES / 2 + 1;
    for client in [&first, &second] {
        std::fs::create_dir(client.file("big")).unwrap();
        for n in 0..count {
            std::fs::File::create(client.file(&format!("big/{n}"))).unwrap();
        }
    }

    let held = first.path_request(OPENDIR, "/big").await.handle();
    // Another session of the same connection cannot hold a second listing as well.
    let reply = second.path_request(OPENDIR, "/big").await;
    assert_eq!(reply.code(), FX_FAILURE);
    assert!(reply.status().1.contains("entries"), "{:?}", reply.status());

    // A listing read to its end is released.
    let mut listed = 0;
    loop {
        let id = first.id();
        let reply = first.call(Body::new(READDIR, id).string(&held)).await;
        if reply.kind == STATUS {
            assert_eq!(reply.code(), FX_EOF);
            break;
        }
        listed += reply.names().len();
    }
    assert_eq!(listed, count);
    let reply = second.path_request(OPENDIR, "/big").await;
    assert_eq!(reply.kind, HANDLE, "{:?}", reply.status());
    // Closing a handle releases its listing too.
    second.close(&reply.handle()).await;
    let reply = first.path_request(OPENDIR, "/big").await;
    assert_eq!(reply.kind, HANDLE, "{:?}", reply.status());
}
