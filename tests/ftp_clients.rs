//! FTP and FTPS with real clients: curl and lftp against the built binary.

mod common;
#[path = "ftp_common.rs"]
mod ftp_common;

use std::process::Command;
use std::time::Duration;

use common::*;
use ftp_common::*;

fn ftp_only() -> Setup {
    Setup::default().only(&["ftp"])
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[test]
fn curl_upload_download_list() {
    let server = ftp_only().start();
    let local = server.root().join("up.txt");
    std::fs::write(&local, "hello over FTP\n").unwrap();

    let upload = curl(&[
        s("-T"),
        local.display().to_string(),
        alice_url(&server, "up.txt"),
    ]);
    assert_success(&upload, "curl upload");
    assert_eq!(
        std::fs::read_to_string(server.home("alice").join("up.txt")).unwrap(),
        "hello over FTP\n"
    );

    let download = curl(&[alice_url(&server, "up.txt")]);
    assert_success(&download, "curl download");
    assert_eq!(download.stdout, b"hello over FTP\n");

    let listing = curl(&[alice_url(&server, "")]);
    assert_success(&listing, "curl listing");
    let listing = String::from_utf8(listing.stdout).unwrap();
    // curl turns the CRLF line ends of a listing into LF.
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.starts_with("-rw-r--r--"), "{listing}");
    assert_eq!(
        listing.split_whitespace().nth(4),
        Some("15"),
        "size column: {listing}"
    );
    assert!(listing.trim_end().ends_with(" up.txt"), "{listing}");

    let names = curl(&[s("--list-only"), alice_url(&server, "")]);
    assert_success(&names, "curl name listing");
    assert_eq!(String::from_utf8_lossy(&names.stdout).trim_end(), "up.txt");
}

#[test]
fn curl_missing_file_fails() {
    let server = ftp_only().start();
    let download = curl(&[alice_url(&server, "missing.txt")]);
    // curl exit code 78: the remote file was not found (550).
    assert_eq!(download.status.code(), Some(78), "{download:?}");
}

#[test]
fn large_file_round_trip() {
    let server = ftp_only().start();
    let local = server.root().join("large.bin");
    write_random_file(&local, 100 * 1024 * 1024 + 12345);

    let upload = curl(&[
        s("-T"),
        local.display().to_string(),
        alice_url(&server, "large.bin"),
    ]);
    assert_success(&upload, "curl upload");
    let stored = server.home("alice").join("large.bin");
    assert_eq!(sha256(&stored), sha256(&local));

    let copy = server.root().join("large.copy");
    let download = curl(&[
        alice_url(&server, "large.bin"),
        s("-o"),
        copy.display().to_string(),
    ]);
    assert_success(&download, "curl download");
    assert_eq!(sha256(&copy), sha256(&local));
}

#[test]
fn curl_ftps_required() {
    let certificate = TestCertificate::new();
    let server = certificate.configure(ftp_only()).start();
    let local = server.root().join("secret.bin");
    write_random_file(&local, 3 * 1024 * 1024 + 7);
    let tls = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            s("--ssl-reqd"),
            s("--cacert"),
            certificate.cert.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| s(a)));
        args
    };

    let mut upload = tls(&["-T"]);
    upload.push(local.display().to_string());
    upload.push(alice_url(&server, "secret.bin"));
    assert_success(&curl(&upload), "curl FTPS upload");
    assert_eq!(
        sha256(&server.home("alice").join("secret.bin")),
        sha256(&local)
    );

    for versions in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"][..]] {
        let copy = server.root().join("secret.copy");
        let mut download = tls(versions);
        download.extend([
            alice_url(&server, "secret.bin"),
            s("-o"),
            copy.display().to_string(),
        ]);
        assert_success(&curl(&download), "curl FTPS download");
        assert_eq!(sha256(&copy), sha256(&local), "{versions:?}");

        let mut listing = tls(versions);
        listing.push(alice_url(&server, ""));
        let listing = curl(&listing);
        assert_success(&listing, "curl FTPS listing");
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.trim_end().ends_with(" secret.bin"), "{listing}");
    }
}

#[test]
fn curl_resumes_upload_with_appe() {
    let server = ftp_only().start();
    let full = server.root().join("full.bin");
    write_random_file(&full, 3 * 1024 * 1024);
    let part = server.root().join("part.bin");
    write_prefix(&full, &part, 1024 * 1024);

    let first = curl(&[
        s("-T"),
        part.display().to_string(),
        alice_url(&server, "resume.bin"),
    ]);
    assert_success(&first, "curl partial upload");
    // -C - requests the size (SIZE) and sends the rest with APPE.
    let rest = curl(&[
        s("-v"),
        s("-C"),
        s("-"),
        s("-T"),
        full.display().to_string(),
        alice_url(&server, "resume.bin"),
    ]);
    assert_success(&rest, "curl resumed upload");
    let trace = String::from_utf8_lossy(&rest.stderr);
    assert!(trace.contains("> APPE resume.bin"), "{trace}");
    assert_eq!(
        sha256(&server.home("alice").join("resume.bin")),
        sha256(&full)
    );
}

#[test]
fn killed_upload_keeps_old_file() {
    let server = ftp_only().start();
    let target = server.home("alice").join("keep.bin");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "the original content").unwrap();
    let local = server.root().join("new.bin");
    write_random_file(&local, 40 * 1024 * 1024);

    let mut upload = Command::new("curl")
        .args(["-sS", "--limit-rate", "2M", "-T"])
        .arg(&local)
        .arg(alice_url(&server, "keep.bin"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    upload.kill().unwrap();
    upload.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));

    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "the original content"
    );
    let leftovers: Vec<String> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "keep.bin")
        .collect();
    assert_eq!(
        leftovers,
        Vec::<String>::new(),
        "temporary upload files left behind"
    );
}

#[test]
fn lftp_mirrors_both_ways() {
    let server = ftp_only().start();
    let source = server.root().join("tree");
    std::fs::create_dir_all(source.join("a/b")).unwrap();
    std::fs::create_dir_all(source.join("empty")).unwrap();
    write_random_file(&source.join("a/one.bin"), 200_000);
    write_random_file(&source.join("a/b/two.bin"), 1_500_000);
    std::fs::write(source.join("a/b/grüße.txt"), "ü\n").unwrap();
    std::fs::write(source.join("zero.txt"), "").unwrap();

    let up = lftp(
        server.ftp_port(),
        "set ftp:ssl-allow no",
        &format!("mirror -R {} tree", source.display()),
    );
    assert_success(&up, "lftp mirror -R");
    let copy = server.root().join("copy");
    let down = lftp(
        server.ftp_port(),
        "set ftp:ssl-allow no",
        &format!("mirror tree {}", copy.display()),
    );
    assert_success(&down, "lftp mirror");

    let diff = Command::new("diff")
        .arg("-r")
        .arg(&source)
        .arg(&copy)
        .output()
        .unwrap();
    assert_success(&diff, "diff of the mirrored trees");
    let stored = Command::new("diff")
        .arg("-r")
        .arg(&source)
        .arg(server.home("alice").join("tree"))
        .output()
        .unwrap();
    assert_success(&stored, "diff of the uploaded tree");
}

#[test]
fn lftp_resumes_download_with_rest() {
    let server = ftp_only().start();
    let remote = server.home("alice").join("big.bin");
    std::fs::create_dir_all(remote.parent().unwrap()).unwrap();
    write_random_file(&remote, 8 * 1024 * 1024 + 3);
    let local = server.root().join("big.part");
    write_prefix(&remote, &local, 3 * 1024 * 1024);

    let output = lftp(
        server.ftp_port(),
        "set ftp:ssl-allow no; debug 5",
        &format!("get -c big.bin -o {}", local.display()),
    );
    assert_success(&output, "lftp get -c");
    let trace = String::from_utf8_lossy(&output.stderr);
    assert!(trace.contains("---> REST 3145728"), "{trace}");
    assert_eq!(sha256(&local), sha256(&remote));
}

#[test]
fn lftp_resumes_upload_with_rest() {
    let server = ftp_only().start();
    let full = server.root().join("full.bin");
    write_random_file(&full, 5 * 1024 * 1024 + 1);
    let remote = server.home("alice").join("up.bin");
    std::fs::create_dir_all(remote.parent().unwrap()).unwrap();
    write_prefix(&full, &remote, 2 * 1024 * 1024);

    let output = lftp(
        server.ftp_port(),
        "set ftp:ssl-allow no; debug 5",
        &format!("put -c {} -o up.bin", full.display()),
    );
    assert_success(&output, "lftp put -c");
    let trace = String::from_utf8_lossy(&output.stderr);
    assert!(trace.contains("---> REST 2097152"), "{trace}");
    assert_eq!(sha256(&remote), sha256(&full));
}

#[test]
fn lftp_ftps_mirror() {
    let certificate = TestCertificate::new();
    let server = start_tls_required(&certificate);
    let source = server.root().join("tree");
    std::fs::create_dir_all(source.join("d")).unwrap();
    write_random_file(&source.join("d/f.bin"), 2_000_000);
    // GnuTLS in lftp sends no close_notify on some uploads; a file of this size is where
    // that used to show.
    write_random_file(&source.join("f43k.bin"), 43_277);
    let settings = format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {}; \
         set ssl:check-hostname no",
        certificate.cert.display()
    );

    let up = lftp(
        server.ftp_port(),
        &settings,
        &format!("mirror -R {} tree", source.display()),
    );
    assert_success(&up, "lftp FTPS mirror -R");
    let copy = server.root().join("copy");
    let down = lftp(
        server.ftp_port(),
        &settings,
        &format!("mirror tree {}", copy.display()),
    );
    assert_success(&down, "lftp FTPS mirror");
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&source)
        .arg(&copy)
        .output()
        .unwrap();
    assert_success(&diff, "diff of the mirrored trees");
}

/// Runs rclone with a configuration given on the command line only.
/// Runs rclone without its retries, except for a lost FTPS handshake, which
/// [`retry_lost_handshake`] retries.
fn rclone(args: &[String]) -> std::process::Output {
    retry_lost_handshake("first record does not look like a TLS handshake", || {
        let mut command = Command::new("rclone");
        command
            .args([
                "--config",
                "/dev/null",
                "--retries",
                "1",
                "--low-level-retries",
                "1",
            ])
            .args(args);
        run(command, CLIENT_TIMEOUT)
    })
}

#[test]
fn rclone_copies_into_new_folder() {
    let certificate = TestCertificate::new();
    let server = certificate.configure(ftp_only()).start();
    let source = server.root().join("tree");
    std::fs::create_dir_all(source.join("a/b")).unwrap();
    write_random_file(&source.join("a/one.bin"), 300_000);
    write_random_file(&source.join("a/b/two.bin"), 3_000_000);
    let obscured = rclone(&[s("obscure"), s(ALICE_PASSWORD)]);
    assert_success(&obscured, "rclone obscure");
    let password = String::from_utf8(obscured.stdout)
        .unwrap()
        .trim()
        .to_owned();

    for (tls, folder) in [
        ("", "plain"),
        (",explicit_tls=true,no_check_certificate=true", "tls"),
    ] {
        let remote = format!(
            ":ftp,host=localhost,port={},user=alice,pass={password}{tls}:{folder}",
            server.ftp_port()
        );
        // The target folder does not exist yet, so rclone first lists a missing path.
        let copy = rclone(&[s("copy"), source.display().to_string(), remote.clone()]);
        assert_success(&copy, "rclone copy");
        let check = rclone(&[s("check"), source.display().to_string(), remote]);
        assert_success(&check, "rclone check");
        assert_eq!(
            sha256(&server.home("alice").join(folder).join("a/b/two.bin")),
            sha256(&source.join("a/b/two.bin"))
        );
    }
}

#[test]
fn lftp_ftps_uploads_with_small_buffers() {
    let certificate = TestCertificate::new();
    let server = start_tls_required(&certificate);
    let local = server.root().join("f43k.bin");
    write_random_file(&local, 43_277);
    let settings = format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {}; \
         set ssl:check-hostname no; set net:socket-buffer 4096",
        certificate.cert.display()
    );
    // Each round uploads and downloads again on a new data connection.
    let rounds: Vec<String> = (0..10)
        .map(|i| {
            format!(
                "put {} -o u{i}.bin; get u{i}.bin -o {}/d{i}.bin",
                local.display(),
                server.root().display()
            )
        })
        .collect();
    let output = lftp(server.ftp_port(), &settings, &rounds.join("; "));
    assert_success(&output, "lftp FTPS uploads");
    for i in 0..10 {
        assert_eq!(
            sha256(&server.home("alice").join(format!("u{i}.bin"))),
            sha256(&local),
            "upload {i}"
        );
        assert_eq!(
            sha256(&server.root().join(format!("d{i}.bin"))),
            sha256(&local),
            "download {i}"
        );
    }
}
