//! OpenSSH's `sftp` and `scp` against the SFTP server without SSH: `sftp -D` and `scp -S`
//! start the `sftp_stdio` example, which serves a temporary home on stdin and stdout.
//!
//! `cargo test` builds the example next to the test binaries, but a run limited with
//! `--test` does not rebuild it: run `cargo build -p ferry-ssh --example sftp_stdio` first.
//! Each test runs the client in batch mode, checks its exit status and output, and then the
//! files on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Returns the `sftp_stdio` example that `cargo test` built for this crate.
fn example_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join("sftp_stdio");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p ferry-ssh --example sftp_stdio`",
        bin.display()
    );
    bin
}

/// A home served over SFTP and a local folder for the client, both temporary.
struct Fixture {
    _dir: tempfile::TempDir,
    home: PathBuf,
    local: PathBuf,
    /// A script that starts the server on the home, for `sftp -D` and `scp -S`.
    server: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let local = dir.path().join("local");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&local).unwrap();
        let server = dir.path().join("server.sh");
        let script = format!(
            "#!/bin/sh\nexec '{}' '{}'\n",
            example_bin().display(),
            home.display()
        );
        std::fs::write(&server, script).unwrap();
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fixture {
            _dir: dir,
            home,
            local,
            server,
        }
    }

    /// Runs `sftp -b` with `batch` in the local folder.
    fn sftp(&self, batch: &str) -> Output {
        let batch_file = self.local.join("batch.txt");
        std::fs::write(&batch_file, batch).unwrap();
        let mut command = Command::new("sftp");
        command
            .arg("-b")
            .arg(&batch_file)
            .arg("-D")
            .arg(&self.server)
            .current_dir(&self.local);
        run(command)
    }

    /// Runs `sftp -b` and fails the test unless every command succeeded; returns stdout.
    fn sftp_ok(&self, batch: &str) -> String {
        let output = self.sftp(batch);
        assert!(
            output.status.success(),
            "sftp failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs `scp` with the server script in place of `ssh`.
    fn scp(&self, args: &[&str]) -> Output {
        let mut command = Command::new("scp");
        command
            .arg("-S")
            .arg(&self.server)
            .args(args)
            .current_dir(&self.local);
        run(command)
    }

    fn home_file(&self, name: &str) -> PathBuf {
        self.home.join(name)
    }

    fn local_file(&self, name: &str) -> PathBuf {
        self.local.join(name)
    }
}

/// Runs a client with no input and a time limit.
fn run(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).unwrap();
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).unwrap();
        buf
    });
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{command:?} did not finish within {CLIENT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Returns `len` bytes that differ from file to file and do not compress.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// Returns the output lines that follow the echo of `command` up to the next command.
fn output_of<'a>(stdout: &'a str, command: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .skip_while(|line| *line != format!("sftp> {command}"))
        .skip(1)
        .take_while(|line| !line.starts_with("sftp> "))
        .collect()
}

fn modified_secs(path: &Path) -> u64 {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    modified.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn ls_long_format() {
    let f = Fixture::new();
    std::fs::create_dir(f.home_file("a dir")).unwrap();
    std::fs::write(f.home_file("é ü.txt"), b"12345").unwrap();
    std::os::unix::fs::symlink("é ü.txt", f.home_file("lnk")).unwrap();
    let stdout = f.sftp_ok("ls -l\n");
    let lines = output_of(&stdout, "ls -l");
    assert_eq!(lines.len(), 3, "{stdout}");
    let expected = [("a dir", 'd'), ("lnk", 'l'), ("é ü.txt", '-')];
    for (line, (name, kind)) in lines.iter().zip(expected) {
        assert!(line.starts_with(kind), "{line}");
        assert!(line.ends_with(&format!(" {name}")), "{line}");
        let columns: Vec<&str> = line.split_whitespace().collect();
        // Mode, links, owner, group, size, month, day, time or year, then the name.
        assert!(columns.len() >= 9, "{line}");
        assert_eq!(columns[0].len(), 10, "{line}");
        assert!(columns[1].parse::<u64>().is_ok(), "{line}");
    }
    let file_columns: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(file_columns[4], "5", "{}", lines[2]);
}

#[test]
fn large_file_round_trip() {
    let f = Fixture::new();
    let content = pseudo_random(64 << 20, 1);
    std::fs::write(f.local_file("big.bin"), &content).unwrap();
    f.sftp_ok("put big.bin\nget big.bin copy.bin\n");
    assert!(std::fs::read(f.home_file("big.bin")).unwrap() == content);
    assert!(std::fs::read(f.local_file("copy.bin")).unwrap() == content);
}

#[test]
fn resume_with_reget_and_reput() {
    let f = Fixture::new();
    let content = pseudo_random(3_000_000, 2);
    std::fs::write(f.home_file("down.bin"), &content).unwrap();
    std::fs::write(f.local_file("down.bin"), &content[..1_000_000]).unwrap();
    std::fs::write(f.local_file("up.bin"), &content).unwrap();
    std::fs::write(f.home_file("up.bin"), &content[..1_200_000]).unwrap();
    f.sftp_ok("reget down.bin\nreput up.bin\n");
    assert!(std::fs::read(f.local_file("down.bin")).unwrap() == content);
    assert!(std::fs::read(f.home_file("up.bin")).unwrap() == content);
}

#[test]
fn symlink_openssh_order() {
    let f = Fixture::new();
    std::fs::write(f.home_file("target.txt"), b"target").unwrap();
    f.sftp_ok("ln -s target.txt link.txt\nget link.txt fetched.txt\n");
    let link = std::fs::read_link(f.home_file("link.txt")).unwrap();
    assert_eq!(link, Path::new("target.txt"));
    assert_eq!(
        std::fs::read(f.local_file("fetched.txt")).unwrap(),
        b"target"
    );
}

#[test]
fn symlink_outside_home_confined() {
    let f = Fixture::new();
    let stdout = f.sftp_ok(
        "ln -s /etc/passwd escape\n\
         -ln -s ../../../../etc/passwd climb\n\
         -get escape escape.out\n\
         ls\n",
    );
    // An absolute target means a path in the home, where /etc/passwd does not exist.
    let stored = std::fs::read_link(f.home_file("escape")).unwrap();
    assert_eq!(stored, Path::new("etc/passwd"));
    assert!(!f.local_file("escape.out").exists());
    assert!(!f.home_file("climb").exists(), "{stdout}");
}

#[test]
fn dotdot_paths_stay_in_home() {
    let f = Fixture::new();
    std::fs::write(f.local_file("f.txt"), b"f").unwrap();
    let stdout = f.sftp_ok(
        "cd ../../..\n\
         pwd\n\
         mkdir d\n\
         cd d/../d/./\n\
         put f.txt ../../../up.txt\n\
         -get ../../../../etc/passwd passwd.out\n",
    );
    assert!(stdout.contains("Remote working directory: /\n"), "{stdout}");
    assert_eq!(std::fs::read(f.home_file("up.txt")).unwrap(), b"f");
    assert!(!f.local_file("passwd.out").exists());
}

#[test]
fn spaces_and_non_ascii_names() {
    let f = Fixture::new();
    std::fs::write(f.local_file("plain.txt"), b"data").unwrap();
    f.sftp_ok(
        "mkdir \"dir with spaces\"\n\
         put plain.txt \"dir with spaces/naïve ünïcødé.txt\"\n\
         rename \"dir with spaces/naïve ünïcødé.txt\" \"dir with spaces/日本語 名前.txt\"\n\
         get \"dir with spaces/日本語 名前.txt\" back.txt\n",
    );
    let stored = f.home.join("dir with spaces").join("日本語 名前.txt");
    assert_eq!(std::fs::read(stored).unwrap(), b"data");
    assert_eq!(std::fs::read(f.local_file("back.txt")).unwrap(), b"data");
}

#[test]
fn rename_remove_and_directories() {
    let f = Fixture::new();
    std::fs::write(f.home_file("a.txt"), b"a").unwrap();
    std::fs::write(f.home_file("b.txt"), b"b").unwrap();
    let output = f.sftp(
        "-rename -l a.txt b.txt\n\
         rename a.txt b.txt\n\
         mkdir d\n\
         mkdir d/e\n\
         -rmdir d\n\
         rmdir d/e\n\
         rmdir d\n\
         rm b.txt\n",
    );
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Plain RENAME must not replace; OpenSSH's rename uses posix-rename, which does.
    assert!(stderr.contains("remote rename"), "{stderr}");
    assert!(stderr.contains("remote rmdir"), "{stderr}");
    assert!(!f.home_file("a.txt").exists());
    assert!(!f.home_file("b.txt").exists());
    assert!(!f.home_file("d").exists());
}

#[test]
fn chmod_and_chown() {
    let f = Fixture::new();
    std::fs::write(f.home_file("f.txt"), b"f").unwrap();
    let output = f.sftp("chmod 640 f.txt\n-chown 4242 f.txt\n");
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let mode = std::fs::metadata(f.home_file("f.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn put_and_get_preserve_times() {
    let f = Fixture::new();
    let local = f.local_file("old.txt");
    std::fs::write(&local, b"old").unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(&local)
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600)).unwrap();
    f.sftp_ok("put -p old.txt\nget -p old.txt back.txt\n");
    assert_eq!(modified_secs(&f.home_file("old.txt")), 1_500_000_000);
    let mode = std::fs::metadata(f.home_file("old.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(modified_secs(&f.local_file("back.txt")), 1_500_000_000);
}

#[test]
fn put_with_fsync() {
    let f = Fixture::new();
    std::fs::write(f.local_file("synced.txt"), b"synced").unwrap();
    // With -f the client sends fsync@openssh.com before it closes the file.
    let output = f.sftp("put -f synced.txt\n");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("fsync"), "{stderr}");
    assert_eq!(std::fs::read(f.home_file("synced.txt")).unwrap(), b"synced");
}

#[test]
fn df_reports_space() {
    let f = Fixture::new();
    let stdout = f.sftp_ok("df\n");
    let lines = output_of(&stdout, "df");
    assert_eq!(lines.len(), 2, "{stdout}");
    let size: u64 = lines[1].split_whitespace().next().unwrap().parse().unwrap();
    assert!(size > 0, "{stdout}");
}

#[test]
fn cp_copies_on_server() {
    let f = Fixture::new();
    std::fs::write(f.home_file("src.txt"), b"copy me").unwrap();
    f.sftp_ok("cp src.txt dst.txt\n");
    assert_eq!(std::fs::read(f.home_file("dst.txt")).unwrap(), b"copy me");
}

#[test]
fn hardlink_not_offered() {
    let f = Fixture::new();
    std::fs::write(f.home_file("f.txt"), b"f").unwrap();
    let output = f.sftp("-ln f.txt hard.txt\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hardlink@openssh.com"), "{stderr}");
    assert!(!f.home_file("hard.txt").exists());
}

#[test]
fn put_many_small_files() {
    let f = Fixture::new();
    let source = f.local_file("many");
    std::fs::create_dir(&source).unwrap();
    for n in 0..300 {
        std::fs::write(source.join(format!("f{n:03}")), pseudo_random(4096, n)).unwrap();
    }
    f.sftp_ok("mkdir many\ncd many\nlcd many\nput *\n");
    let stored = std::fs::read_dir(f.home_file("many")).unwrap().count();
    assert_eq!(stored, 300);
    assert_eq!(
        std::fs::read(f.home_file("many/f123")).unwrap(),
        pseudo_random(4096, 123)
    );
}

#[test]
fn scp_upload_and_download() {
    let f = Fixture::new();
    let content = pseudo_random(5_000_000, 3);
    std::fs::write(f.local_file("s.bin"), &content).unwrap();
    let output = f.scp(&["s.bin", "host:s.bin"]);
    assert!(output.status.success(), "{output:?}");
    assert!(std::fs::read(f.home_file("s.bin")).unwrap() == content);
    // Downloads write in place and keep only the data before the first reply that came
    // out of order, so repeat them to catch reordering.
    for round in 0..5 {
        let name = format!("back{round}.bin");
        let output = f.scp(&["host:s.bin", &name]);
        assert!(output.status.success(), "{output:?}");
        assert!(
            std::fs::read(f.local_file(&name)).unwrap() == content,
            "download {round} differs"
        );
    }
    // scp writes in place: a shorter file replaces a longer one completely.
    std::fs::write(f.local_file("short.bin"), b"short").unwrap();
    let output = f.scp(&["short.bin", "host:s.bin"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read(f.home_file("s.bin")).unwrap(), b"short");
}

#[test]
fn scp_recursive() {
    let f = Fixture::new();
    let tree = f.local_file("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a"), b"a").unwrap();
    std::fs::write(tree.join("sub").join("b"), b"b").unwrap();
    let output = f.scp(&["-r", "tree", "host:tree"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read(f.home.join("tree/sub/b")).unwrap(), b"b");
    let output = f.scp(&["-r", "host:tree", "copy"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read(f.local.join("copy/a")).unwrap(), b"a");
}
