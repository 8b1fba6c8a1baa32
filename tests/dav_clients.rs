//! WebDAV seen from real clients: curl and raw HTTP against the built `ferry` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dav_util;

use std::io::Write;
use std::os::unix::fs::symlink;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dav_util::*;

fn dav_server() -> TestServer {
    Setup::default().only(&["dav"]).start()
}

/// Names that need percent-encoding or XML escaping, with their encoded URL paths.
const ODD_NAMES: &[(&str, &str)] = &[
    ("with space.txt", "/with%20space.txt"),
    ("percent%41.txt", "/percent%2541.txt"),
    ("hash#tag.txt", "/hash%23tag.txt"),
    (
        "ünïcødé €.txt",
        "/%C3%BCn%C3%AFc%C3%B8d%C3%A9%20%E2%82%AC.txt",
    ),
    ("xml <&>'\".txt", "/xml%20%3C%26%3E%27%22.txt"),
];

#[test]
fn curl_verbs_round_trip() {
    let server = dav_server();
    let client = Client::new(&server, &alice());
    let home = server.home("alice");
    let local = server.root().join("local.txt");
    std::fs::write(&local, "0123456789abcdef").unwrap();

    // PUT creates (201), then replaces (204); GET and HEAD read it back.
    assert_eq!(client.put_file("/f.txt", &local, &[]).status, 201);
    assert_eq!(client.put_file("/f.txt", &local, &[]).status, 204);
    let get = client.get("/f.txt");
    assert_eq!(get.status, 200);
    assert_eq!(get.text(), "0123456789abcdef");
    let head = client.send("HEAD", "/f.txt", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("16"));

    // Byte ranges.
    let range = client.send("GET", "/f.txt", &["-r", "4-9"]);
    assert_eq!(range.status, 206);
    assert_eq!(range.text(), "456789");
    assert_eq!(
        range.header("content-range").as_deref(),
        Some("bytes 4-9/16")
    );
    assert_eq!(client.send("GET", "/f.txt", &["-r", "-3"]).text(), "def");
    assert_eq!(client.send("GET", "/f.txt", &["-r", "100-200"]).status, 416);

    // MKCOL, and PROPFIND in its forms.
    assert_eq!(client.mkcol("/dir").status, 201);
    assert_eq!(client.mkcol("/dir").status, 405);
    assert_eq!(client.mkcol("/no/dir").status, 409);
    assert!(home.join("dir").is_dir());
    let depth0 = client.propfind("/f.txt", Some("0"), None);
    assert_eq!(depth0.status, 207);
    assert!(
        depth0.text().contains("<D:getcontentlength>16<"),
        "{}",
        depth0.text()
    );
    let no_slash = client.propfind("/dir", Some("1"), None);
    assert_eq!(
        no_slash.status, 207,
        "a collection without a slash is listed, not redirected"
    );
    let root = client.propfind("/", Some("1"), None).text();
    assert!(root.contains("<D:href>/f.txt</D:href>"), "{root}");
    assert!(root.contains("<D:href>/dir/</D:href>"), "{root}");
    assert_eq!(client.propfind("/missing", Some("0"), None).status, 404);

    // Unbounded depth is rejected explicitly, never served as a partial tree.
    for depth in [Some("infinity"), None] {
        let reply = client.propfind("/", depth, None);
        assert_eq!(reply.status, 403, "depth {depth:?}");
        assert!(
            reply.text().contains("propfind-finite-depth"),
            "{}",
            reply.text()
        );
    }

    // COPY, MOVE and DELETE; Destination as an absolute URL and as a path.
    let copy_target = url(&server, "/dir/copy.txt");
    assert_eq!(
        client.transfer("COPY", "/f.txt", &copy_target, &[]).status,
        201
    );
    assert_eq!(
        client
            .transfer("MOVE", "/f.txt", "/dir/moved.txt", &[])
            .status,
        201
    );
    assert!(!home.join("f.txt").exists());
    let moved = std::fs::read_to_string(home.join("dir/moved.txt")).unwrap();
    assert_eq!(moved, "0123456789abcdef");
    let copied = std::fs::read_to_string(home.join("dir/copy.txt")).unwrap();
    assert_eq!(copied, "0123456789abcdef");
    let no_overwrite =
        client.transfer("COPY", "/dir/copy.txt", "/dir/moved.txt", &["Overwrite: F"]);
    assert_eq!(no_overwrite.status, 412);
    assert_eq!(client.transfer("MOVE", "/dir", "/dir2", &[]).status, 201);
    assert!(home.join("dir2/moved.txt").is_file());
    assert_eq!(client.delete("/dir2").status, 204);
    assert!(!home.join("dir2").exists());
    assert_eq!(client.delete("/dir2").status, 404);

    // Odd names round-trip: one percent-decoding, then the exact bytes on disk.
    for (name, path) in ODD_NAMES {
        assert_eq!(client.put(path, name).status, 201, "PUT {name}");
        assert_eq!(std::fs::read_to_string(home.join(name)).unwrap(), *name);
        assert_eq!(client.get(path).text(), *name, "GET {name}");
    }
    let listing = client.propfind("/", Some("1"), None).text();
    for (name, path) in ODD_NAMES {
        let href = format!("<D:href>{path}</D:href>");
        assert!(
            listing.contains(&href),
            "{name} not listed as {path}:\n{listing}"
        );
    }
    let target = "/dir%20%23%25/%C3%A9.txt";
    let early = client.transfer("MOVE", ODD_NAMES[0].1, target, &[]);
    assert_eq!(early.status, 409, "the target folder does not exist yet");
    assert_eq!(client.mkcol("/dir%20%23%25").status, 201);
    assert_eq!(
        client.transfer("MOVE", ODD_NAMES[0].1, target, &[]).status,
        201
    );
    assert!(home.join("dir #%").join("é.txt").is_file());
}

#[test]
fn put_interrupted_keeps_old_file() {
    let server = dav_server();
    let client = Client::new(&server, &alice());
    assert_eq!(client.put("/keep.txt", "original").status, 201);
    let authorization = basic(&alice());

    // A body cut short of its Content-Length.
    let mut stream = connect(&server);
    let head = format!(
        "PUT /keep.txt HTTP/1.1\r\nHost: t\r\nAuthorization: {authorization}\r\n\
         Content-Length: 10000000\r\n\r\n"
    );
    send(&mut stream, &head, &vec![b'x'; 1_000_000]);
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);

    // A chunked body without its final chunk.
    let mut stream = connect(&server);
    let head = format!(
        "PUT /keep.txt HTTP/1.1\r\nHost: t\r\nAuthorization: {authorization}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let mut chunk = b"100000\r\n".to_vec();
    chunk.extend(vec![b'y'; 0x100000]);
    chunk.extend(b"\r\n");
    send(&mut stream, &head, &chunk);
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);

    // The server removes an unfinished upload once it notices the closed connection.
    let home = server.home("alice");
    let deadline = Instant::now() + Duration::from_secs(10);
    while names_in(&home).len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(home.join("keep.txt")).unwrap(),
        "original"
    );
    assert_eq!(
        names_in(&home),
        ["keep.txt"],
        "no partial upload is left behind"
    );
}

/// Runs curl uploading `input` from stdin, which makes curl send a chunked body, and returns
/// the status code it printed.
fn put_from_stdin(server: &TestServer, path: &str, headers: &[&str], input: &[u8]) -> String {
    let mut command = Command::new("curl");
    command.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
    command.args(["-u", &alice()]);
    for header in headers {
        command.args(["-H", header]);
    }
    command.args(["-T", "-", &url(server, path)]);
    let output = run_with_input(command, input, Duration::from_secs(60));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn put_chunked_like_finder() {
    let server = dav_server();
    let client = Client::new(&server, &alice());
    let home = server.home("alice");
    let finder = "User-Agent: WebDAVFS/3.0.0 (03008000) Darwin/23.4.0 (arm64)";

    let big = server.root().join("r4m");
    write_random_file(&big, 4 << 20);
    let headers = ["-H", finder, "-H", "Transfer-Encoding: chunked"];
    let expected = ["-H", "X-Expected-Entity-Length: 4194304"];
    let put = client.put_file("/r4m", &big, &[&headers[..], &expected[..]].concat());
    assert_eq!(put.status, 201);
    assert_eq!(sha256(&home.join("r4m")), sha256(&big));

    let empty = put_from_stdin(
        &server,
        "/empty",
        &[finder, "X-Expected-Entity-Length: 0"],
        b"",
    );
    assert_eq!(empty, "201");
    assert_eq!(std::fs::metadata(home.join("empty")).unwrap().len(), 0);

    // A body shorter than announced is not published.
    let short = put_from_stdin(
        &server,
        "/r4m",
        &["X-Expected-Entity-Length: 100"],
        b"too short",
    );
    assert_eq!(short, "400");
    assert_eq!(sha256(&home.join("r4m")), sha256(&big));
    assert_eq!(names_in(&home), ["empty", "r4m"]);
}

const LOCK_BODY: &str = "<?xml version=\"1.0\"?><d:lockinfo xmlns:d=\"DAV:\">\
    <d:lockscope><d:exclusive/></d:lockscope><d:locktype><d:write/></d:locktype>\
    <d:owner><d:href>t</d:href></d:owner></d:lockinfo>";

fn lock(client: &Client, path: &str) -> Reply {
    let timeout = ["-H", "Timeout: Second-600"];
    let body = ["-H", "Content-Type: application/xml", "--data", LOCK_BODY];
    client.send("LOCK", path, &[&timeout[..], &body[..]].concat())
}

#[test]
fn lock_null_and_per_user_locks() {
    let server = dav_server();
    let client = Client::new(&server, &alice());
    let options = client.send("OPTIONS", "/", &[]);
    assert_eq!(options.status, 200);
    let dav = options.header("dav").unwrap_or_default();
    let classes: Vec<&str> = dav.split(',').map(str::trim).collect();
    assert!(classes.contains(&"1"), "DAV: {dav}");
    assert!(classes.contains(&"2"), "DAV: {dav}");
    let allow = options.header("allow").unwrap_or_default();
    assert!(allow.contains("LOCK"), "Allow: {allow}");
    assert!(allow.contains("UNLOCK"), "Allow: {allow}");

    // LOCK on an unmapped URL creates an empty file.
    let locked = lock(&client, "/new.txt");
    assert_eq!(locked.status, 201);
    let token = locked.header("lock-token").expect("Lock-Token header");
    let created = std::fs::metadata(server.home("alice").join("new.txt")).unwrap();
    assert_eq!(created.len(), 0);
    assert_eq!(client.put("/new.txt", "x").status, 423);

    // bob's lock table is his own: the same path in his home is free.
    assert_eq!(lock(&Client::new(&server, &bob()), "/new.txt").status, 201);

    let if_header = format!("If: ({token})");
    let with_token = client.send(
        "PUT",
        "/new.txt",
        &["-H", &if_header, "--data-binary", "content"],
    );
    assert_eq!(with_token.status, 204);
    let unlock_header = format!("Lock-Token: {token}");
    assert_eq!(
        client
            .send("UNLOCK", "/new.txt", &["-H", &unlock_header])
            .status,
        204
    );
    assert_eq!(client.put("/new.txt", "again").status, 204);
    let stored = std::fs::read_to_string(server.home("alice").join("new.txt")).unwrap();
    assert_eq!(stored, "again");
}

#[test]
fn windows_client_probes() {
    let server = dav_server();
    let agent = "User-Agent: Microsoft-WebDAV-MiniRedir/10.0.19045";
    let client = Client::new(&server, &alice()).with_base(&server.dav_url(), &["-H", agent]);
    std::fs::create_dir_all(server.home("alice").join("somedir")).unwrap();
    std::fs::write(server.home("alice").join("somedir/x"), "x").unwrap();

    let options = client.send("OPTIONS", "/", &[]);
    assert_eq!(options.status, 200);
    assert!(options.header("dav").is_some());
    let listing = client.propfind("/somedir", Some("1"), None);
    assert_eq!(listing.status, 207);
    assert!(listing.header("location").is_none(), "no redirect");
    assert!(listing.text().contains("/somedir/x"), "{}", listing.text());
    assert_eq!(client.propfind("/desktop.ini", Some("0"), None).status, 404);
    let update = "<?xml version=\"1.0\"?><D:propertyupdate xmlns:D=\"DAV:\" \
        xmlns:Z=\"urn:schemas-microsoft-com:\"><D:set><D:prop>\
        <Z:Win32LastModifiedTime>Mon, 01 Jan 2024 00:00:00 GMT</Z:Win32LastModifiedTime>\
        </D:prop></D:set></D:propertyupdate>";
    let content_type = "Content-Type: text/xml";
    let times = client.send(
        "PROPPATCH",
        "/somedir/x",
        &["-H", content_type, "--data", update],
    );
    assert_eq!(times.status, 207);
}

fn set_color(client: &Client, path: &str, value: &str) -> u16 {
    let body = format!(
        "<?xml version=\"1.0\"?><D:propertyupdate xmlns:D=\"DAV:\" xmlns:T=\"urn:ferry-test\">\
         <D:set><D:prop><T:color>{value}</T:color></D:prop></D:set></D:propertyupdate>"
    );
    client.send("PROPPATCH", path, &["--data", &body]).status
}

fn color_of(client: &Client, path: &str) -> String {
    let body = "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\" xmlns:T=\"urn:ferry-test\">\
                <D:prop><T:color/></D:prop></D:propfind>";
    let reply = client.propfind(path, Some("0"), Some(body));
    assert_eq!(reply.status, 207, "PROPFIND {path}");
    reply.text()
}

#[test]
fn dead_props_follow_resources() {
    let server = dav_server();
    let client = Client::new(&server, &alice());
    assert_eq!(client.put("/a.txt", "a").status, 201);
    assert_eq!(client.mkcol("/d").status, 201);
    assert_eq!(set_color(&client, "/a.txt", "red"), 207);
    assert_eq!(set_color(&client, "/d", "blue"), 207);
    assert!(color_of(&client, "/a.txt").contains(">red<"));

    assert_eq!(
        client.transfer("MOVE", "/a.txt", "/d/b.txt", &[]).status,
        201
    );
    assert!(color_of(&client, "/d/b.txt").contains(">red<"));

    assert_eq!(client.transfer("COPY", "/d", "/e", &[]).status, 201);
    let copied_dir = color_of(&client, "/e");
    assert!(
        copied_dir.contains(">blue<"),
        "a collection's own property is copied: {copied_dir}"
    );
    assert!(color_of(&client, "/e/b.txt").contains(">red<"));

    assert_eq!(client.delete("/d/b.txt").status, 204);
    assert_eq!(client.put("/d/b.txt", "b").status, 201);
    let recreated = color_of(&client, "/d/b.txt");
    assert!(
        !recreated.contains(">red<"),
        "a deleted file's property is gone: {recreated}"
    );
}

fn make_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success());
    (cert, key)
}

#[test]
fn https_with_generated_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = make_certificate(certs.path());
    let binding = "bindings = [{ address = \"127.0.0.1\", port = 0, enable_https = true }]";
    let server = Setup::default()
        .only(&["dav"])
        .set("webdavd", binding)
        .set(
            "webdavd",
            &format!("certificate_file = \"{}\"", cert.display()),
        )
        .set(
            "webdavd",
            &format!("certificate_key_file = \"{}\"", key.display()),
        )
        .start();
    let base = format!("https://127.0.0.1:{}", server.dav_port());
    let cacert = cert.to_str().unwrap();
    let client = Client::new(&server, &alice()).with_base(&base, &["--cacert", cacert]);

    assert_eq!(client.put("/tls.txt", "over tls").status, 201);
    for version in ["--http1.1", "--http2"] {
        let get = client.send("GET", "/tls.txt", &[version]);
        assert_eq!(get.status, 200, "{version}");
        assert_eq!(get.text(), "over tls", "{version}");
        assert_eq!(
            get.header("content-length").as_deref(),
            Some("8"),
            "{version}"
        );
    }
    assert_eq!(client.propfind("/", Some("1"), None).status, 207);
    let anonymous = curl(&["--cacert", cacert, &format!("{base}/tls.txt")]);
    assert_eq!(anonymous.status, 401);
    let plain = curl(&[&format!("http://127.0.0.1:{}/", server.dav_port())]);
    assert_eq!(
        plain.status, 0,
        "plain HTTP on the HTTPS port gets no HTTP response"
    );
}

#[test]
fn large_file_round_trip() {
    let server = dav_server();
    let client = Client::new(&server, &alice());
    let source = server.root().join("big.bin");
    write_random_file(&source, 100 << 20);
    assert_eq!(client.put_file("/big.bin", &source, &[]).status, 201);
    let stored = server.home("alice").join("big.bin");
    assert_eq!(sha256(&stored), sha256(&source));

    let download = server.root().join("down.bin");
    let mut command = Command::new("curl");
    command.args(["-s", "-S", "-f", "-u", &alice(), "-o"]);
    command.arg(&download).arg(url(&server, "/big.bin"));
    let output = run(command, Duration::from_secs(300));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(sha256(&download), sha256(&source));
    assert_eq!(names_in(&server.home("alice")), ["big.bin"]);
}

#[test]
fn malformed_request_closes_its_connection() {
    let server = dav_server();
    let mut good = connect(&server);
    let mut bad = connect(&server);
    send(&mut bad, "NOT A REQUEST\0\r\nHost: t\r\n\r\n", b"");
    let (reply, closed) = read_until_closed(&mut bad);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    assert!(closed);

    // The other connection still works.
    let head = format!(
        "OPTIONS / HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic(&alice())
    );
    send(&mut good, &head, b"");
    let (reply, _) = read_until_closed(&mut good);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
}

#[test]
fn slow_headers_time_out() {
    let server = Setup::default()
        .only(&["dav"])
        .set("webdavd", "header_read_timeout = 2")
        .start();
    let mut stream = connect(&server);
    let started = Instant::now();
    stream
        .write_all(b"PROPFIND / HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let (_, closed) = read_until_closed(&mut stream);
    assert!(
        closed,
        "the server closes a connection whose headers never end"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[test]
fn symlink_out_of_home_rejected() {
    let server = dav_server();
    let client = Client::new(&server, &alice());
    // The first request creates the home.
    assert_eq!(client.put("/x", "x").status, 201);
    let outside = server.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    symlink(&outside, server.home("alice").join("escape")).unwrap();
    symlink("x", server.home("alice").join("inside")).unwrap();

    let escaped = client.get("/escape/secret.txt");
    assert_eq!(escaped.status, 403);
    assert!(!escaped.text().contains("secret"));
    assert_eq!(client.put("/escape/new.txt", "y").status, 403);
    assert!(!outside.join("new.txt").exists());
    assert_eq!(
        client.get("/inside").text(),
        "x",
        "a symlink inside the home is followed"
    );
    let listing = client.propfind("/", Some("1"), None).text();
    assert!(!listing.contains("/escape"), "{listing}");
    assert!(listing.contains("/inside"), "{listing}");
}

#[test]
fn read_only_user_cannot_write() {
    let reader = format!(
        "username = \"reader\"\npassword = \"{}\"\nhome_dir = \"home/reader\"\n\
         permissions = {{ \"/\" = [\"list\", \"download\"] }}",
        password_hash("readerpw")
    );
    let server = Setup::default().only(&["dav"]).user(&reader).start();
    std::fs::create_dir_all(server.home("reader")).unwrap();
    std::fs::write(server.home("reader").join("doc.txt"), "doc").unwrap();
    let client = Client::new(&server, "reader:readerpw");
    assert_eq!(client.get("/doc.txt").text(), "doc");
    assert_eq!(client.put("/doc.txt", "z").status, 403);
    assert_eq!(client.delete("/doc.txt").status, 403);
    assert_eq!(client.mkcol("/new").status, 403);
    let unchanged = std::fs::read_to_string(server.home("reader").join("doc.txt")).unwrap();
    assert_eq!(unchanged, "doc");
}

#[test]
fn foreign_destination_refused() {
    let server = dav_server();
    let client = Client::new(&server, &alice());
    let home = server.home("alice");
    let local = server.root().join("local.txt");
    std::fs::write(&local, "stay").unwrap();
    assert_eq!(client.put_file("/m.txt", &local, &[]).status, 201);
    for (method, destination) in [
        ("MOVE", "http://evil.example.com/stolen.txt"),
        ("COPY", "https://evil.example.com/stolen.txt"),
        ("MOVE", "ftp://x/stolen.txt"),
    ] {
        let reply = client.send(
            method,
            "/m.txt",
            &["-H", &format!("Destination: {destination}")],
        );
        assert_eq!(reply.status, 502, "{method} {destination}");
    }
    assert_eq!(std::fs::read_to_string(home.join("m.txt")).unwrap(), "stay");
    assert!(!home.join("stolen.txt").exists());
    let own = format!("{}/moved.txt", server.dav_url());
    let reply = client.send("MOVE", "/m.txt", &["-H", &format!("Destination: {own}")]);
    assert_eq!(reply.status, 201);
    assert!(home.join("moved.txt").exists());
}
