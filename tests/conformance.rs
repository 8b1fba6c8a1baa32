//! The same user rules seen through SFTP (OpenSSH `sftp -b`), FTP (Python's ftplib) and
//! WebDAV (curl): one table of rules, each run once per protocol against its own user and
//! home, and each expected to end the same way everywhere.
//!
//! A denied operation must fail and leave the home exactly as it was; an allowed one must
//! make exactly the expected change. A refused login must produce a failed `password` event
//! with the user name the client sent, and the client must get the same reply as for a wrong
//! password, so it cannot learn which rule refused it.

mod common;
#[path = "dav_util.rs"]
mod dav_util;
#[path = "ftp_common.rs"]
mod ftp_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::*;

const PASSWORD: &str = "conformance-pw";

/// The modification time of `f.txt` in every fresh home, and the one that `chtimes` sets.
const FIXTURE_MTIME: u64 = 1_400_000_000;
const TOUCHED_MTIME: u64 = 1_500_000_000;

/// Size of the file that the bandwidth rules move, and the limit they set: 1 MiB at
/// 256 KiB/s takes at least 3 s even after the bucket's initial burst.
const BIG_SIZE: u64 = 1 << 20;
const BANDWIDTH_KIB: u64 = 256;
const BANDWIDTH_MIN_TIME: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Sftp,
    Ftp,
    Dav,
}

impl Proto {
    const ALL: [Proto; 3] = [Proto::Sftp, Proto::Ftp, Proto::Dav];

    fn name(self) -> &'static str {
        match self {
            Proto::Sftp => "sftp",
            Proto::Ftp => "ftp",
            Proto::Dav => "dav",
        }
    }

    /// Returns the protocol's name in hook events.
    fn hook_name(self) -> &'static str {
        match self {
            Proto::Sftp => "SSH",
            Proto::Ftp => "FTP",
            Proto::Dav => "DAV",
        }
    }
}

/// One client operation on the fixture home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Login,
    List,
    Download,
    /// Uploads `new.txt` with this many bytes.
    UploadNew(usize),
    /// Uploads over `f.txt` with this many bytes.
    Overwrite(usize),
    DeleteFile,
    DeleteDir,
    RenameFile,
    RenameDir,
    CreateDir,
    Symlink,
    Chmod,
    Chtimes,
    DownloadBig,
    UploadBig,
}

impl Op {
    /// Returns the protocols that have the operation. FTP and WebDAV have no symlinks, no
    /// chmod and no way to set a modification time.
    fn protocols(self) -> &'static [Proto] {
        match self {
            Op::Symlink | Op::Chmod | Op::Chtimes => &[Proto::Sftp],
            _ => &Proto::ALL,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Succeeds and makes the operation's change.
    Allowed,
    /// Fails with the protocol's permission error and changes nothing.
    Denied,
    /// Fails with the protocol's quota error and changes nothing.
    Quota,
    /// Login fails like a wrong password, with a failed `password` event.
    Refused,
    /// Succeeds, makes the change, and takes at least this long.
    Slow(Duration),
}

/// One rule of the table: users-file lines for the user, an operation and its outcome.
#[derive(Clone, Debug)]
struct Rule {
    name: String,
    fields: String,
    op: Op,
    expect: Expect,
    /// Keeps one session of the user open during the operation.
    hold_session: bool,
    /// Limits the rule to these protocols; `None` runs it on every protocol with the op.
    only: Option<&'static [Proto]>,
}

impl Rule {
    fn new(name: &str, fields: &str, op: Op, expect: Expect) -> Rule {
        Rule {
            name: name.to_owned(),
            fields: fields.to_owned(),
            op,
            expect,
            hold_session: false,
            only: None,
        }
    }

    fn protocols(&self) -> Vec<Proto> {
        let only = self.only.unwrap_or(&Proto::ALL);
        self.op
            .protocols()
            .iter()
            .copied()
            .filter(|p| only.contains(p))
            .collect()
    }

    /// Returns the user name for this rule on `proto`. Each run gets its own user, so it
    /// starts from a fresh home and shares no cached session with another protocol.
    fn user(&self, proto: Proto) -> String {
        format!("{}_{}", self.name, proto.name())
    }
}

/// Every permission name of the users file, with the atomic permissions it grants.
const PERMISSIONS: &[(&str, &[&str])] = &[
    ("list", &["list"]),
    ("download", &["download"]),
    ("upload", &["upload"]),
    ("overwrite", &["overwrite"]),
    ("delete", &["delete_files", "delete_dirs"]),
    ("delete_files", &["delete_files"]),
    ("delete_dirs", &["delete_dirs"]),
    ("rename", &["rename_files", "rename_dirs"]),
    ("rename_files", &["rename_files"]),
    ("rename_dirs", &["rename_dirs"]),
    ("create_dirs", &["create_dirs"]),
    ("create_symlinks", &["create_symlinks"]),
    ("chmod", &["chmod"]),
    ("chtimes", &["chtimes"]),
];

const ATOMIC_PERMISSIONS: &[&str] = &[
    "list",
    "download",
    "upload",
    "overwrite",
    "delete_files",
    "delete_dirs",
    "rename_files",
    "rename_dirs",
    "create_dirs",
    "create_symlinks",
    "chmod",
    "chtimes",
];

/// Returns the operations that need the atomic permission `atomic`.
fn ops_of(atomic: &str) -> Vec<Op> {
    match atomic {
        "list" => vec![Op::List],
        "download" => vec![Op::Download],
        "upload" => vec![Op::UploadNew(10)],
        "overwrite" => vec![Op::Overwrite(10)],
        "delete_files" => vec![Op::DeleteFile],
        "delete_dirs" => vec![Op::DeleteDir],
        "rename_files" => vec![Op::RenameFile],
        "rename_dirs" => vec![Op::RenameDir],
        "create_dirs" => vec![Op::CreateDir],
        "create_symlinks" => vec![Op::Symlink],
        "chmod" => vec![Op::Chmod],
        "chtimes" => vec![Op::Chtimes],
        other => panic!("no operation for {other}"),
    }
}

fn permissions_line(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("permissions = {{ \"/\" = [{}] }}", quoted.join(", "))
}

/// Builds the table: for each permission name, its operations without it (denied) and with
/// only it (allowed), then quotas, bandwidth limits and login rules.
fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for (name, atomics) in PERMISSIONS {
        let without: Vec<&str> = ATOMIC_PERMISSIONS
            .iter()
            .copied()
            .filter(|p| !atomics.contains(p))
            .collect();
        for (index, op) in atomics.iter().flat_map(|a| ops_of(a)).enumerate() {
            rules.push(Rule::new(
                &format!("without_{name}_{index}"),
                &permissions_line(&without),
                op,
                Expect::Denied,
            ));
            rules.push(Rule::new(
                &format!("only_{name}_{index}"),
                &permissions_line(atomics),
                op,
                Expect::Allowed,
            ));
        }
    }

    // The fixture home contains 150 bytes in 2 files.
    rules.extend([
        Rule::new(
            "quota_size_new",
            "quota_size = 200",
            Op::UploadNew(100),
            Expect::Quota,
        ),
        Rule::new(
            "quota_size_fits",
            "quota_size = 200",
            Op::UploadNew(50),
            Expect::Allowed,
        ),
        Rule::new(
            "quota_size_overwrite",
            "quota_size = 200",
            Op::Overwrite(140),
            Expect::Allowed,
        ),
        Rule::new(
            "quota_size_overwrite_over",
            "quota_size = 200",
            Op::Overwrite(160),
            Expect::Quota,
        ),
        Rule::new(
            "quota_size_full",
            "quota_size = 150",
            Op::UploadNew(1),
            Expect::Quota,
        ),
        Rule::new(
            "quota_files_new",
            "quota_files = 2",
            Op::UploadNew(10),
            Expect::Quota,
        ),
        Rule::new(
            "quota_files_overwrite",
            "quota_files = 2",
            Op::Overwrite(10),
            Expect::Allowed,
        ),
    ]);

    rules.extend([
        Rule::new(
            "download_bandwidth",
            &format!("download_bandwidth = {BANDWIDTH_KIB}"),
            Op::DownloadBig,
            Expect::Slow(BANDWIDTH_MIN_TIME),
        ),
        Rule::new(
            "upload_bandwidth",
            &format!("upload_bandwidth = {BANDWIDTH_KIB}"),
            Op::UploadBig,
            Expect::Slow(BANDWIDTH_MIN_TIME),
        ),
    ]);

    let refused = |name: &str, fields: &str| Rule::new(name, fields, Op::Login, Expect::Refused);
    let allowed = |name: &str, fields: &str| Rule::new(name, fields, Op::Login, Expect::Allowed);
    rules.extend([
        refused("disabled", "status = \"disabled\""),
        refused("expired", "expiration_date = \"2001-01-01\""),
        allowed("not_expired", "expiration_date = \"2999-12-31\""),
        refused("allowed_ip_other", "allowed_ip = [\"10.0.0.0/8\"]"),
        allowed("allowed_ip_match", "allowed_ip = [\"127.0.0.0/8\"]"),
        refused("denied_ip", "denied_ip = [\"127.0.0.1\"]"),
        allowed("denied_ip_other", "denied_ip = [\"10.0.0.0/8\"]"),
    ]);
    for proto in Proto::ALL {
        let mut own = refused(
            &format!("denied_{}", proto.name()),
            &format!("denied_protocols = [\"{}\"]", proto.hook_name()),
        );
        own.only = own_protocol(proto);
        rules.push(own);
        let others: Vec<String> = Proto::ALL
            .iter()
            .filter(|p| **p != proto)
            .map(|p| format!("\"{}\"", p.hook_name()))
            .collect();
        let mut other = allowed(
            &format!("denied_not_{}", proto.name()),
            &format!("denied_protocols = [{}]", others.join(", ")),
        );
        other.only = own_protocol(proto);
        rules.push(other);
    }
    let mut busy = refused("max_sessions_busy", "max_sessions = 1");
    busy.hold_session = true;
    rules.push(busy);
    rules.push(allowed("max_sessions_free", "max_sessions = 1"));
    // An SSH client with the key gets the second step; FTP and WebDAV have only one step.
    let mut two_step = refused("two_step", "login_methods = [\"publickey+password\"]");
    two_step.only = Some(&[Proto::Ftp, Proto::Dav]);
    rules.push(two_step);
    rules
}

fn own_protocol(proto: Proto) -> Option<&'static [Proto]> {
    Some(match proto {
        Proto::Sftp => &[Proto::Sftp],
        Proto::Ftp => &[Proto::Ftp],
        Proto::Dav => &[Proto::Dav],
    })
}

/// What a home contains, by path relative to the home.
type Snapshot = BTreeMap<String, Node>;

/// One entry of a home. `None` in an expected snapshot matches any value.
#[derive(Clone, Debug)]
enum Node {
    File {
        data: Vec<u8>,
        mode: Option<u32>,
        mtime: Option<u64>,
    },
    Dir,
    Link(String),
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        let matches = |a: Option<u64>, b: Option<u64>| a.is_none() || b.is_none() || a == b;
        match (self, other) {
            (
                Node::File {
                    data: d1,
                    mode: m1,
                    mtime: t1,
                },
                Node::File {
                    data: d2,
                    mode: m2,
                    mtime: t2,
                },
            ) => d1 == d2 && matches(m1.map(u64::from), m2.map(u64::from)) && matches(*t1, *t2),
            (Node::Dir, Node::Dir) => true,
            (Node::Link(a), Node::Link(b)) => a == b,
            _ => false,
        }
    }
}

/// Reads every entry below `home`, including leftovers of uploads in progress.
fn snapshot(home: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(home.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let rel_path = rel.join(entry.file_name());
            let key = rel_path.to_string_lossy().into_owned();
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let node = if meta.is_symlink() {
                let target = std::fs::read_link(entry.path()).unwrap_or_default();
                Node::Link(target.to_string_lossy().into_owned())
            } else if meta.is_dir() {
                pending.push(rel_path);
                Node::Dir
            } else {
                Node::File {
                    data: std::fs::read(entry.path()).unwrap_or_default(),
                    mode: Some(meta.permissions().mode() & 0o7777),
                    mtime: Some(meta.mtime() as u64),
                }
            };
            out.insert(key, node);
        }
    }
    out
}

/// Deterministic file content of `len` bytes.
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

/// Fills a fresh home: `f.txt` (100 bytes), `d/inner.txt` (50 bytes), the empty folder
/// `empty`, and for the bandwidth rules `big.bin`.
fn make_home(home: &Path, big: bool) {
    std::fs::create_dir_all(home.join("d")).unwrap();
    std::fs::create_dir_all(home.join("empty")).unwrap();
    std::fs::write(home.join("f.txt"), content(1, 100)).unwrap();
    std::fs::write(home.join("d/inner.txt"), content(2, 50)).unwrap();
    let file = std::fs::File::options()
        .write(true)
        .open(home.join("f.txt"))
        .unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(FIXTURE_MTIME))
        .unwrap();
    std::fs::set_permissions(home.join("f.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    if big {
        write_random_file(&home.join("big.bin"), BIG_SIZE);
    }
}

fn upload_data(op: Op) -> Vec<u8> {
    match op {
        Op::UploadNew(len) | Op::Overwrite(len) => content(7, len),
        _ => Vec::new(),
    }
}

/// Returns the home that `op` leaves when it succeeds on `before`.
fn expected_after(op: Op, before: &Snapshot) -> Snapshot {
    let mut after = before.clone();
    let new_file = |data: Vec<u8>| Node::File {
        data,
        mode: None,
        mtime: None,
    };
    match op {
        Op::Login | Op::List | Op::Download | Op::DownloadBig => {}
        Op::UploadNew(_) => {
            after.insert("new.txt".into(), new_file(upload_data(op)));
        }
        Op::Overwrite(_) => {
            after.insert("f.txt".into(), new_file(upload_data(op)));
        }
        Op::UploadBig => {
            let data = match &before["big.bin"] {
                Node::File { data, .. } => data.clone(),
                other => panic!("big.bin is {other:?}"),
            };
            after.insert("big-up.bin".into(), new_file(data));
        }
        Op::DeleteFile => {
            after.remove("f.txt");
        }
        Op::DeleteDir => {
            after.remove("empty");
        }
        Op::RenameFile => {
            let node = after.remove("f.txt").unwrap();
            after.insert("g.txt".into(), node);
        }
        Op::RenameDir => {
            after.remove("empty");
            after.insert("moved".into(), Node::Dir);
        }
        Op::CreateDir => {
            after.insert("newdir".into(), Node::Dir);
        }
        Op::Symlink => {
            after.insert("link".into(), Node::Link("f.txt".into()));
        }
        Op::Chmod => {
            if let Some(Node::File { mode, .. }) = after.get_mut("f.txt") {
                *mode = Some(0o600);
            }
        }
        Op::Chtimes => {
            if let Some(Node::File { mtime, .. }) = after.get_mut("f.txt") {
                *mtime = Some(TOUCHED_MTIME);
            }
        }
    }
    after
}

/// How a client run ended, reduced to what the rules compare.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The protocol's permission error.
    Denied,
    /// The protocol's quota error.
    Quota,
    /// The login failed; the text is the client-visible reply.
    LoginFailed(String),
    /// Anything else, with the client's output.
    Other(String),
}

/// Runs the clients of one protocol against one server.
struct Runner<'a> {
    server: &'a TestServer,
    proto: Proto,
    local: PathBuf,
}

impl Runner<'_> {
    fn run(&self, user: &str, password: &str, op: Op) -> Outcome {
        match self.proto {
            Proto::Sftp => self.sftp(user, password, op),
            Proto::Ftp => self.ftp(user, password, op),
            Proto::Dav => self.dav(user, password, op),
        }
    }

    fn local_file(&self, user: &str, name: &str) -> PathBuf {
        self.local.join(format!("{user}-{name}"))
    }

    /// Writes the local file that `op` uploads and returns its path.
    fn upload_source(&self, user: &str, op: Op) -> PathBuf {
        let path = self.local_file(user, "upload");
        match op {
            Op::UploadBig => {
                let home = self.server.home(user);
                std::fs::copy(home.join("big.bin"), &path).unwrap();
            }
            _ => std::fs::write(&path, upload_data(op)).unwrap(),
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    fn sftp(&self, user: &str, password: &str, op: Op) -> Outcome {
        if op == Op::Chtimes {
            return self.sftp_chtimes(user, password);
        }
        let download = self.local_file(user, "download");
        let source = self.upload_source(user, op);
        let (download, source) = (download.display(), source.display());

        let batch = match op {
            Op::Login => "pwd".to_owned(),
            Op::List => "ls /".to_owned(),
            Op::Download => format!("get f.txt {download}"),
            Op::DownloadBig => format!("get big.bin {download}"),
            Op::UploadNew(_) => format!("put {source} new.txt"),
            Op::Overwrite(_) => format!("put {source} f.txt"),
            Op::UploadBig => format!("put {source} big-up.bin"),
            Op::DeleteFile => "rm f.txt".to_owned(),
            Op::DeleteDir => "rmdir empty".to_owned(),
            Op::RenameFile => "rename f.txt g.txt".to_owned(),
            Op::RenameDir => "rename empty moved".to_owned(),
            Op::CreateDir => "mkdir newdir".to_owned(),
            Op::Symlink => "ln -s f.txt link".to_owned(),
            Op::Chmod => "chmod 600 f.txt".to_owned(),
            Op::Chtimes => unreachable!("set through paramiko"),
        };

        let output = sftp_batch_with_password(self.server, user, password, &format!("{batch}\n"));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();

        if output.status.success() {
            return Outcome::Ok;
        }
        if stderr.contains("Permission denied (") {
            // The login itself failed; the host part differs by user name only.
            return Outcome::LoginFailed(stderr.replace(user, "USER"));
        }
        if stderr.contains("Permission denied") {
            return Outcome::Denied;
        }
        // OpenSSH's sftp prints the status code's name, not the server's message, so a quota
        // failure shows as "Failure"; the message is checked with paramiko below.
        if stderr.contains(": Failure") {
            return Outcome::Quota;
        }
        Outcome::Other(stderr)
    }

    /// Sets `f.txt`'s modification time with paramiko, because OpenSSH's sftp has no command
    /// for it.
    fn sftp_chtimes(&self, user: &str, password: &str) -> Outcome {
        let script = format!(
            "import paramiko, sys\n\
             t = paramiko.Transport(('127.0.0.1', int(sys.argv[1])))\n\
             t.connect(username=sys.argv[2], password=sys.argv[3])\n\
             s = paramiko.SFTPClient.from_transport(t)\n\
             try:\n    s.utime('f.txt', ({TOUCHED_MTIME}, {TOUCHED_MTIME}))\n    print('OK')\n\
             except PermissionError:\n    print('DENIED')\n\
             except OSError as e:\n    print('ERR', e)\n\
             t.close()\n"
        );
        let output = ftp_common::python(
            &script,
            &[
                self.server.ssh_port().to_string(),
                user.to_owned(),
                password.to_owned(),
            ],
        );
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        match stdout.as_str() {
            "OK" => Outcome::Ok,
            "DENIED" => Outcome::Denied,
            _ => Outcome::Other(format!(
                "{stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    }

    fn ftp(&self, user: &str, password: &str, op: Op) -> Outcome {
        let download = self.local_file(user, "download");
        let source = self.upload_source(user, op);
        let (download, source) = (download.display().to_string(), source.display().to_string());

        let args: Vec<&str> = match op {
            Op::Login => vec!["login"],
            Op::List => vec!["list"],
            Op::Download => vec!["get", "f.txt", &download],
            Op::DownloadBig => vec!["get", "big.bin", &download],
            Op::UploadNew(_) => vec!["put", "new.txt", &source],
            Op::Overwrite(_) => vec!["put", "f.txt", &source],
            Op::UploadBig => vec!["put", "big-up.bin", &source],
            Op::DeleteFile => vec!["dele", "f.txt"],
            Op::DeleteDir => vec!["rmd", "empty"],
            Op::RenameFile => vec!["rename", "f.txt", "g.txt"],
            Op::RenameDir => vec!["rename", "empty", "moved"],
            Op::CreateDir => vec!["mkd", "newdir"],
            Op::Symlink | Op::Chmod | Op::Chtimes => unreachable!("not in FTP"),
        };

        let mut all = vec![
            self.server.ftp_port().to_string(),
            user.to_owned(),
            password.to_owned(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let output = ftp_common::python(FTP_CLIENT, &all);
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();

        if stdout == "OK" {
            return Outcome::Ok;
        }
        if let Some(reply) = stdout.strip_prefix("LOGIN ") {
            return Outcome::LoginFailed(reply.to_owned());
        }
        if stdout.starts_with("ERR 550") {
            return Outcome::Denied;
        }
        if stdout.starts_with("ERR 552") {
            return Outcome::Quota;
        }
        Outcome::Other(format!(
            "{stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    fn dav(&self, user: &str, password: &str, op: Op) -> Outcome {
        let client = dav_util::Client::new(self.server, &format!("{user}:{password}"));
        let download = self.local_file(user, "download");
        let source = self.upload_source(user, op);
        let reply = match op {
            Op::Login => client.propfind("/", Some("0"), None),
            Op::List => client.propfind("/", Some("1"), None),
            Op::Download => client.get("/f.txt"),
            Op::DownloadBig => client.get("/big.bin"),
            Op::UploadNew(_) => client.put_file("/new.txt", &source, &[]),
            Op::Overwrite(_) => client.put_file("/f.txt", &source, &[]),
            Op::UploadBig => client.put_file("/big-up.bin", &source, &[]),
            Op::DeleteFile => client.delete("/f.txt"),
            Op::DeleteDir => client.delete("/empty/"),
            Op::RenameFile => {
                client.transfer("MOVE", "/f.txt", &dav_util::url(self.server, "/g.txt"), &[])
            }
            Op::RenameDir => client.transfer(
                "MOVE",
                "/empty/",
                &dav_util::url(self.server, "/moved/"),
                &[],
            ),
            Op::CreateDir => client.mkcol("/newdir"),
            Op::Symlink | Op::Chmod | Op::Chtimes => unreachable!("not in WebDAV"),
        };
        if matches!(op, Op::Download | Op::DownloadBig) && reply.status == 200 {
            std::fs::write(&download, &reply.body).unwrap();
        }
        // For a PROPFIND on a folder that cannot be listed, dav-server returns the folder
        // alone, so a listing that lacks the fixture's files was denied.
        if op == Op::List && reply.status == 207 && !reply.text().contains("f.txt") {
            return Outcome::Denied;
        }
        match reply.status {
            200..=299 => Outcome::Ok,
            401 => Outcome::LoginFailed(format!("{} {}", reply.status, reply.text())),
            403 => Outcome::Denied,
            507 => Outcome::Quota,
            status => Outcome::Other(format!("status {status}: {}", reply.text())),
        }
    }
}

/// Logs in with `argv[2:4]` on port `argv[1]` and runs one command: prints `OK`, `ERR` with
/// the server's reply, or `LOGIN` with the reply to a failed login.
const FTP_CLIENT: &str = r#"
import ftplib, sys
port, user, password, op = sys.argv[1:5]
args = sys.argv[5:]
f = ftplib.FTP()
f.connect('127.0.0.1', int(port), timeout=60)
try:
    f.login(user, password)
except ftplib.all_errors as e:
    print('LOGIN', e)
    sys.exit(0)
try:
    if op == 'login':
        f.pwd()
    elif op == 'list':
        f.retrlines('LIST /', lambda line: None)
    elif op == 'get':
        with open(args[1], 'wb') as out:
            f.retrbinary('RETR ' + args[0], out.write)
    elif op == 'put':
        with open(args[1], 'rb') as source:
            f.storbinary('STOR ' + args[0], source)
    elif op == 'dele':
        f.delete(args[0])
    elif op == 'rmd':
        f.rmd(args[0])
    elif op == 'rename':
        f.rename(args[0], args[1])
    elif op == 'mkd':
        f.mkd(args[0])
    print('OK')
except ftplib.all_errors as e:
    print('ERR', e)
f.close()
"#;

/// An FTP control connection logged in as one user, kept open to count as a session.
struct HeldSession {
    _stream: TcpStream,
}

fn hold_ftp_session(server: &TestServer, user: &str) -> HeldSession {
    let stream = TcpStream::connect(("127.0.0.1", server.ftp_port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream.try_clone().unwrap();
    let mut reply = |command: Option<String>| {
        if let Some(command) = command {
            writer
                .write_all(format!("{command}\r\n").as_bytes())
                .unwrap();
        }
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.len() >= 4 && line.as_bytes()[3] == b' ' {
                return line;
            }
            assert!(!line.is_empty(), "FTP connection closed");
        }
    };
    assert!(reply(None).starts_with("220"));
    assert!(reply(Some(format!("USER {user}"))).starts_with("331"));
    let pass = reply(Some(format!("PASS {PASSWORD}")));
    assert!(pass.starts_with("230"), "{pass:?}");
    HeldSession { _stream: stream }
}

/// Starts a server with one user per rule and protocol, each with a fresh fixture home.
fn start(rules: &[Rule]) -> TestServer {
    let hash = password_hash(PASSWORD);
    let mut setup = Setup::default()
        // Every refused login counts as a failure, and this test makes many from 127.0.0.1.
        .set("defender", "enabled = false")
        .set("common", "max_per_host_connections = 0");
    for rule in rules {
        for proto in rule.protocols() {
            let user = rule.user(proto);
            setup = setup.user(&format!(
                "username = \"{user}\"\npassword = \"{hash}\"\nhome_dir = \"home/{user}\"\n{}",
                rule.fields
            ));
        }
    }
    let server = setup.start();
    for rule in rules {
        let big = matches!(rule.op, Op::DownloadBig | Op::UploadBig);
        for proto in rule.protocols() {
            make_home(&server.home(&rule.user(proto)), big);
        }
    }
    std::fs::create_dir_all(server.root().join("local")).unwrap();
    server
}

/// Waits up to 10 s for the home to match `expected`, since a discarded upload may be
/// removed just after the client got its reply, and returns the last snapshot.
fn settle(home: &Path, expected: &Snapshot) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = snapshot(home);
        if &now == expected || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs every rule on every protocol it applies to (one thread per protocol) and returns one
/// line per mismatch.
fn check_rules(server: &TestServer, rules: &[Rule]) -> Vec<String> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = Proto::ALL
            .iter()
            .map(|&proto| {
                scope.spawn(move || {
                    let runner = Runner {
                        server,
                        proto,
                        local: server.root().join("local"),
                    };
                    let mut problems = Vec::new();
                    for rule in rules.iter().filter(|r| r.protocols().contains(&proto)) {
                        if let Err(problem) = check_rule(&runner, rule) {
                            problems.push(format!("{} on {}: {problem}", rule.name, proto.name()));
                        }
                    }
                    problems
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
}

fn check_rule(runner: &Runner, rule: &Rule) -> Result<(), String> {
    let user = rule.user(runner.proto);
    let home = runner.server.home(&user);
    let before = snapshot(&home);
    let _held = rule
        .hold_session
        .then(|| hold_ftp_session(runner.server, &user));
    let started = Instant::now();
    let outcome = runner.run(&user, PASSWORD, rule.op);
    let elapsed = started.elapsed();

    let (wanted, expected_home) = match rule.expect {
        Expect::Allowed | Expect::Slow(_) => (Outcome::Ok, expected_after(rule.op, &before)),
        Expect::Denied => (Outcome::Denied, before.clone()),
        Expect::Quota => (Outcome::Quota, before.clone()),
        Expect::Refused => {
            // The same client with a wrong password gets the reply to compare with.
            let baseline = runner.run(&user, "wrong-password", rule.op);
            let Outcome::LoginFailed(_) = baseline else {
                return Err(format!("wrong password gave {baseline:?}"));
            };
            (baseline, before.clone())
        }
    };
    let (wanted, expected_home) = match known_difference(rule, runner.proto) {
        Some(outcome) => (outcome, before.clone()),
        None => (wanted, expected_home),
    };
    if outcome != wanted {
        return Err(format!("expected {wanted:?}, got {outcome:?}"));
    }
    let after = settle(&home, &expected_home);
    if after != expected_home {
        return Err(format!(
            "home differs:\n  expected {:?}\n  found    {:?}",
            keys_and_sizes(&expected_home),
            keys_and_sizes(&after)
        ));
    }
    if let Expect::Slow(minimum) = rule.expect
        && elapsed < minimum
    {
        return Err(format!(
            "took {elapsed:?}, expected at least {minimum:?} for {BIG_SIZE} bytes at {BANDWIDTH_KIB} KiB/s"
        ));
    }
    if matches!(rule.op, Op::Download | Op::DownloadBig) && rule.expect != Expect::Denied {
        let name = if rule.op == Op::Download {
            "f.txt"
        } else {
            "big.bin"
        };
        let local = runner.local_file(&user, "download");
        if sha256(&local) != sha256(&home.join(name)) {
            return Err("downloaded bytes differ from the file".into());
        }
    }
    Ok(())
}

/// Returns the outcome of a rule on a protocol where it knowingly differs from the table.
fn known_difference(rule: &Rule, proto: Proto) -> Option<Outcome> {
    // NOTE: dav-server lists a collection before it deletes it, so a WebDAV DELETE of a
    // folder also needs the list permission, which SFTP's rmdir and FTP's RMD do not.
    let delete_dirs_only = rule.name.starts_with("only_delete") && rule.op == Op::DeleteDir;
    (proto == Proto::Dav && delete_dirs_only).then_some(Outcome::Denied)
}

/// Describes a snapshot briefly for failure messages.
fn keys_and_sizes(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .iter()
        .map(|(path, node)| match node {
            Node::File { data, mode, mtime } => {
                let mode = mode.map(|m| format!("{m:o}"));
                format!(
                    "{path} ({} bytes, mode {mode:?}, mtime {mtime:?})",
                    data.len()
                )
            }
            Node::Dir => format!("{path}/"),
            Node::Link(target) => format!("{path} -> {target}"),
        })
        .collect()
}

fn run_category(filter: impl Fn(&Rule) -> bool) -> (TestServer, Vec<Rule>) {
    let rules: Vec<Rule> = rules().into_iter().filter(|r| filter(r)).collect();
    assert!(!rules.is_empty());
    let server = start(&rules);
    let problems = check_rules(&server, &rules);
    assert!(
        problems.is_empty(),
        "{} of the rules differ:\n{}",
        problems.len(),
        problems.join("\n")
    );
    (server, rules)
}

#[test]
fn permissions_same_everywhere() {
    run_category(|r| r.name.starts_with("without_") || r.name.starts_with("only_"));
}

#[test]
fn quotas_same_everywhere() {
    run_category(|r| r.name.starts_with("quota_"));
}

#[test]
fn bandwidth_same_everywhere() {
    run_category(|r| r.name.ends_with("_bandwidth"));
}

#[test]
fn login_rules_same_everywhere() {
    let (server, rules) = run_category(|r| r.op == Op::Login);
    // Each refused rule made two failed attempts (the rule, then a wrong password), and the
    // held session one successful FTP login.
    let refused: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.expect == Expect::Refused)
        .collect();
    let mut expected = Vec::new();
    for rule in &refused {
        for proto in rule.protocols() {
            let user = rule.user(proto);
            expected.push(Event::new(&user, "password", 0, proto.hook_name()));
            expected.push(Event::new(&user, "password", 0, proto.hook_name()));
            if rule.hold_session {
                expected.push(Event::new(&user, "password", 1, "FTP"));
            }
        }
    }
    expected.sort();
    let events = server.wait_events(expected.len(), Duration::from_millis(1500));
    let refused_users: Vec<String> = refused
        .iter()
        .flat_map(|r| r.protocols().into_iter().map(|p| r.user(p)))
        .collect();
    let events: Vec<Event> = events
        .into_iter()
        .filter(|e| refused_users.contains(&e.user))
        .collect();
    assert_eq!(events, expected);
}

/// SFTP clients that show the server's message read "quota exceeded". paramiko shows it, but
/// OpenSSH's sftp shows only the name of the status code.
#[test]
fn sftp_quota_message() {
    let rules = [Rule::new(
        "quota_message",
        "quota_size = 200",
        Op::UploadNew(100),
        Expect::Quota,
    )];
    let server = start(&rules);
    let user = rules[0].user(Proto::Sftp);
    // putfo hides the error of a failed close, so the file is written by hand.
    let script = "import paramiko, sys\n\
         t = paramiko.Transport(('127.0.0.1', int(sys.argv[1])))\n\
         t.connect(username=sys.argv[2], password=sys.argv[3])\n\
         s = paramiko.SFTPClient.from_transport(t)\n\
         try:\n    f = s.open('new.txt', 'w')\n    f.write(b'x' * 100)\n    f.close()\n    print('OK')\n\
         except OSError as e:\n    print('ERR', e)\n\
         t.close()\n";
    let output = ftp_common::python(
        script,
        &[
            server.ssh_port().to_string(),
            user.clone(),
            PASSWORD.to_owned(),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "ERR quota exceeded",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!server.home(&user).join("new.txt").exists());
}

/// scp reports the quota as an error line and publishes nothing.
#[test]
fn scp_quota_error() {
    let rules = [Rule::new(
        "quota_scp",
        "quota_size = 200",
        Op::UploadNew(100),
        Expect::Quota,
    )];
    let server = start(&rules);
    let user = rules[0].user(Proto::Sftp);
    let source = server.root().join("local/scp-source");
    std::fs::write(&source, content(9, 100)).unwrap();
    let mut command = Command::new("sshpass");
    command
        .env("SSHPASS", PASSWORD)
        .args(["-e", "scp", "-O"])
        .args(ssh_options(server.ssh_port()))
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .arg(&source)
        .arg(format!("{user}@127.0.0.1:new.txt"));
    let output = run(command, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Disk quota exceeded"), "{stderr}");
    assert!(!server.home(&user).join("new.txt").exists());
}
