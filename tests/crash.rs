//! A server killed with SIGKILL in the middle of an upload over an existing file: the old
//! file must survive byte for byte, and after a restart no client of any protocol may see
//! the half-written upload.

mod common;
#[path = "dav_util.rs"]
mod dav_util;
#[path = "ftp_common.rs"]
mod ftp_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const USER: &str = "crash";
const PASSWORD: &str = "crash-pw";
const TARGET: &str = "target.bin";
/// A dot file that every listing must show, so that a client hiding dot files cannot make
/// a leftover upload look hidden.
const VISIBLE_DOT_FILE: &str = ".keep";

/// 32 MiB at 1 MiB/s: the upload runs for about half a minute, so it is still in progress
/// when the server is killed.
const UPLOAD_SIZE: u64 = 32 << 20;
const UPLOAD_KIB_PER_SECOND: u64 = 1024;

/// The home and the client files, kept across the server's restarts.
struct Fixture {
    dir: tempfile::TempDir,
    old_sum: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        write_random_file(&home.join(TARGET), 3 << 20);
        std::fs::write(home.join(VISIBLE_DOT_FILE), "keep").unwrap();
        write_random_file(&dir.path().join("upload.bin"), UPLOAD_SIZE);
        let old_sum = sha256(&home.join(TARGET));
        Fixture { dir, old_sum }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn upload_source(&self) -> PathBuf {
        self.dir.path().join("upload.bin")
    }

    fn start(&self) -> TestServer {
        Setup::default()
            .user(&format!(
                "username = \"{USER}\"\npassword = \"{}\"\nhome_dir = \"{}\"\nupload_bandwidth = {UPLOAD_KIB_PER_SECOND}",
                password_hash(PASSWORD),
                self.home().display()
            ))
            .start()
    }
}

/// Returns the uploads in progress in `home` with their sizes.
fn temp_files(home: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(home)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().ok()?.len();
            name.starts_with(".ferry-upload-").then_some((name, size))
        })
        .collect()
}

/// Waits until an upload in progress has received some bytes.
fn wait_mid_transfer(home: &Path, client: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if temp_files(home).iter().any(|(_, size)| *size > 0) {
            return;
        }
        if let Some(status) = client.try_wait().unwrap() {
            panic!("the upload client exited with {status} before the transfer started");
        }
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(mut command: Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sftp_upload(server: &TestServer, fixture: &Fixture) -> Child {
    let batch = fixture.dir.path().join("batch.txt");
    std::fs::write(
        &batch,
        format!("put {} {TARGET}\n", fixture.upload_source().display()),
    )
    .unwrap();
    let mut command = Command::new("sshpass");
    command
        .env("SSHPASS", PASSWORD)
        .args(["-e", "sftp"])
        .args(ssh_options(server.ssh_port()))
        .args([
            "-o",
            "BatchMode=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-b",
        ])
        .arg(&batch)
        .arg(format!("{USER}@127.0.0.1"));
    spawn(command)
}

fn ftp_upload(server: &TestServer, fixture: &Fixture) -> Child {
    curl_upload(
        fixture,
        &format!("ftp://127.0.0.1:{}/{TARGET}", server.ftp_port()),
    )
}

fn dav_upload(server: &TestServer, fixture: &Fixture) -> Child {
    curl_upload(fixture, &format!("{}/{TARGET}", server.dav_url()))
}

/// Uploads the source file to `url` with curl, which speaks both FTP and WebDAV's PUT.
fn curl_upload(fixture: &Fixture, url: &str) -> Child {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "120", "-u"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg("-T")
        .arg(fixture.upload_source())
        .arg(url);
    spawn(command)
}

/// Lists `/` through every protocol; each list must contain the same names.
fn listings(server: &TestServer) -> Vec<(&'static str, Vec<String>)> {
    let sftp = sftp_batch_with_password(server, USER, PASSWORD, "ls -1a /\n");
    assert!(sftp.status.success(), "{sftp:?}");
    let mut sftp_names: Vec<String> = String::from_utf8_lossy(&sftp.stdout)
        .lines()
        .filter(|line| !line.starts_with("sftp>"))
        .map(|line| line.trim().trim_start_matches('/').to_owned())
        .filter(|name| !name.is_empty() && name != "." && name != "..")
        .collect();
    sftp_names.sort();

    let ftp = ftp_common::python(
        "import ftplib, sys\n\
         f = ftplib.FTP()\n\
         f.connect('127.0.0.1', int(sys.argv[1]), timeout=60)\n\
         f.login(sys.argv[2], sys.argv[3])\n\
         for name, facts in f.mlsd('/'):\n    print(name)\n\
         f.quit()\n",
        &[
            server.ftp_port().to_string(),
            USER.to_owned(),
            PASSWORD.to_owned(),
        ],
    );
    assert!(ftp.status.success(), "{ftp:?}");
    let mut ftp_names: Vec<String> = String::from_utf8_lossy(&ftp.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|name| name != "." && name != "..")
        .collect();
    ftp_names.sort();

    let client = dav_util::Client::new(server, &format!("{USER}:{PASSWORD}"));
    let reply = client.propfind("/", Some("1"), None);
    assert_eq!(reply.status, 207, "{}", reply.text());
    let text = reply.text();
    let mut dav_names: Vec<String> = text
        .split("<D:href>")
        .skip(1)
        .filter_map(|part| part.split("</D:href>").next())
        .map(|href| href.trim_matches('/').to_owned())
        .filter(|name| !name.is_empty())
        .collect();
    dav_names.sort();

    vec![
        ("SFTP", sftp_names),
        ("FTP", ftp_names),
        ("WebDAV", dav_names),
    ]
}

/// Downloads the target through every protocol and returns each checksum.
fn downloads(server: &TestServer, fixture: &Fixture) -> Vec<(&'static str, String)> {
    let local = fixture.dir.path().join("download");
    let mut sums = Vec::new();

    let sftp = sftp_batch_with_password(
        server,
        USER,
        PASSWORD,
        &format!("get {TARGET} {}\n", local.display()),
    );
    assert!(sftp.status.success(), "{sftp:?}");
    sums.push(("SFTP", sha256(&local)));

    let ftp = ftp_common::curl(&[
        "-u".into(),
        format!("{USER}:{PASSWORD}"),
        "-o".into(),
        local.display().to_string(),
        format!("ftp://127.0.0.1:{}/{TARGET}", server.ftp_port()),
    ]);
    assert!(ftp.status.success(), "{ftp:?}");
    sums.push(("FTP", sha256(&local)));

    let client = dav_util::Client::new(server, &format!("{USER}:{PASSWORD}"));
    let reply = client.get(&format!("/{TARGET}"));
    assert_eq!(reply.status, 200);
    std::fs::write(&local, &reply.body).unwrap();
    sums.push(("WebDAV", sha256(&local)));
    sums
}

/// Kills the server during an upload started by `upload`, then checks the file on disk and,
/// after a restart, what every protocol shows.
fn crash_during_upload(upload: fn(&TestServer, &Fixture) -> Child) {
    let fixture = Fixture::new();
    let home = fixture.home();
    let mut server = fixture.start();
    let mut client = upload(&server, &fixture);
    wait_mid_transfer(&home, &mut client);

    server.kill();
    let _ = client.kill();
    let _ = client.wait();

    assert_eq!(sha256(&home.join(TARGET)), fixture.old_sum);
    let leftovers = temp_files(&home);
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert!(leftovers[0].1 < UPLOAD_SIZE, "{leftovers:?}");

    let server = fixture.start();
    let mut expected = vec![VISIBLE_DOT_FILE.to_owned(), TARGET.to_owned()];
    expected.sort();
    for (protocol, names) in listings(&server) {
        assert_eq!(names, expected, "{protocol} listing");
    }
    for (protocol, sum) in downloads(&server, &fixture) {
        assert_eq!(sum, fixture.old_sum, "{protocol} download");
    }

    // The leftover cannot be named either.
    let name = &leftovers[0].0;
    let client = dav_util::Client::new(&server, &format!("{USER}:{PASSWORD}"));
    assert_eq!(client.get(&format!("/{name}")).status, 404);
    let sftp =
        sftp_batch_with_password(&server, USER, PASSWORD, &format!("get {name} /dev/null\n"));
    assert!(!sftp.status.success());
}

#[test]
fn sftp_upload_survives_kill() {
    crash_during_upload(sftp_upload);
}

#[test]
fn ftp_upload_survives_kill() {
    crash_during_upload(ftp_upload);
}

#[test]
fn dav_upload_survives_kill() {
    crash_during_upload(dav_upload);
}
