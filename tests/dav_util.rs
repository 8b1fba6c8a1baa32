//! Helpers for the WebDAV end-to-end tests: curl runs and raw HTTP over TCP.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::common::{TestServer, run};

/// What curl received: the final status, every header block, and the body.
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Returns the value of `name` in the last header block.
    pub fn header(&self, name: &str) -> Option<String> {
        let last_block = self
            .headers
            .rsplit("\r\n\r\n")
            .find(|b| !b.trim().is_empty())?;
        last_block.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Runs curl with `args` and returns the response. Fails the test if curl cannot run.
pub fn curl(args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let mut command = Command::new("curl");
    command
        .args(["-s", "-S", "--max-time", "300", "-w", "%{http_code}", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(args);
    let output = run(command, Duration::from_secs(330));
    let code = String::from_utf8_lossy(&output.stdout);
    let status = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {args:?} printed no status: {code:?}, stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Reply {
        status,
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// curl with one user's credentials against one server.
pub struct Client<'a> {
    server: &'a TestServer,
    user_password: String,
    base: String,
    extra: Vec<String>,
}

impl<'a> Client<'a> {
    /// Creates a client for `user:password` on the server's plain HTTP listener.
    pub fn new(server: &'a TestServer, user_password: &str) -> Client<'a> {
        Client {
            server,
            user_password: user_password.to_owned(),
            base: server.dav_url(),
            extra: Vec::new(),
        }
    }

    /// Uses `base` (such as `https://127.0.0.1:PORT`) and adds `extra` curl options to every
    /// request.
    pub fn with_base(mut self, base: &str, extra: &[&str]) -> Client<'a> {
        self.base = base.to_owned();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sends `method` to `path` (percent-encoded) with further curl options in `args`.
    pub fn send(&self, method: &str, path: &str, args: &[&str]) -> Reply {
        let target = format!("{}{path}", self.base);
        let mut all: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        all.extend(["-u", &self.user_password]);
        if method == "HEAD" {
            all.push("-I");
        } else {
            all.extend(["-X", method]);
        }
        all.extend(args);
        all.push(&target);
        curl(&all)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[])
    }

    /// Uploads `data` with a Content-Length.
    pub fn put(&self, path: &str, data: &str) -> Reply {
        self.send("PUT", path, &["--data-binary", data])
    }

    /// Uploads the local file `file`.
    pub fn put_file(&self, path: &str, file: &std::path::Path, args: &[&str]) -> Reply {
        let file = file.to_str().unwrap();
        let mut all = vec!["-T", file];
        all.extend(args);
        self.send("PUT", path, &all)
    }

    pub fn mkcol(&self, path: &str) -> Reply {
        self.send("MKCOL", path, &[])
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, &[])
    }

    /// Sends PROPFIND with `depth`, or without a Depth header for `None`, and an optional body.
    pub fn propfind(&self, path: &str, depth: Option<&str>, body: Option<&str>) -> Reply {
        let header = depth.map(|d| format!("Depth: {d}"));
        let mut args = Vec::new();
        if let Some(header) = &header {
            args.extend(["-H", header.as_str()]);
        }
        if let Some(body) = body {
            args.extend(["--data", body]);
        }
        self.send("PROPFIND", path, &args)
    }

    /// Sends COPY or MOVE of `from` to the path `to`, with extra headers.
    pub fn transfer(&self, method: &str, from: &str, to: &str, headers: &[&str]) -> Reply {
        let destination = format!("Destination: {to}");
        let mut args = vec!["-H", destination.as_str()];
        for header in headers {
            args.extend(["-H", header]);
        }
        self.send(method, from, &args)
    }

    pub fn server(&self) -> &TestServer {
        self.server
    }
}

/// Returns the `-u` argument for alice.
pub fn alice() -> String {
    format!("alice:{}", crate::common::ALICE_PASSWORD)
}

/// Returns the `-u` argument for bob.
pub fn bob() -> String {
    format!("bob:{}", crate::common::BOB_PASSWORD)
}

/// Returns the URL of `path` (already percent-encoded) on the server's WebDAV listener.
pub fn url(server: &TestServer, path: &str) -> String {
    format!("{}{path}", server.dav_url())
}

/// Returns the Basic `Authorization` header value for `user:password`.
pub fn basic(user_password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = user_password.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// Opens a TCP connection to the WebDAV listener with a read timeout.
pub fn connect(server: &TestServer) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.dav_port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Reads from `stream` until the server closes it or the read timeout passes.
pub fn read_until_closed(stream: &mut TcpStream) -> (String, bool) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&data).into_owned(), true),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&data).into_owned(), false),
        }
    }
}

/// Sends `head` (request line and headers, ending with an empty line) and then `body`.
pub fn send(stream: &mut TcpStream, head: &str, body: &[u8]) {
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream.flush().unwrap();
}

/// Lists the names in a directory, sorted.
pub fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
