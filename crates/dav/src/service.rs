//! One HTTP request: connection gate, authentication, then dav-server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dav_server::DavConfig;
use dav_server::body::Body;
use dav_server::davpath::DavPath;
use ferry_hooks::{ConnectionPermit, LoginMethod, Protocol};
use ferry_users::{LoginContext, LoginError};
use ferry_vfs::VPath;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug};

use crate::auth::Credentials;
use crate::fs::{VfsDav, to_vpath};
use crate::props::PropStore;
use crate::server::Shared;

/// The post-connect verdict for the client of a connection.
pub(crate) enum Admission {
    /// Requests from `ip` may proceed; the permit keeps the connection counted.
    Admitted {
        ip: IpAddr,
        _permit: ConnectionPermit,
    },
    /// Requests from `ip` get 403.
    Rejected { ip: IpAddr },
    /// A connection from a trusted proxy before its first request.
    Pending,
}

impl Admission {
    /// Runs the connection gate (bans, limits, post-connect hook) for `ip`.
    pub(crate) async fn decide(shared: &Shared, ip: IpAddr, connection_id: &str) -> Admission {
        match shared
            .logins
            .hooks()
            .admit(ip, Protocol::Dav, connection_id)
            .await
        {
            Ok(permit) => Admission::Admitted {
                ip,
                _permit: permit,
            },
            Err(_) => Admission::Rejected { ip },
        }
    }

    /// Returns the verdict for `ip`, or `None` when `ip` has not been decided yet.
    fn verdict(&self, ip: IpAddr) -> Option<bool> {
        match self {
            Admission::Admitted { ip: admitted, .. } if *admitted == ip => Some(true),
            Admission::Rejected { ip: rejected } if *rejected == ip => Some(false),
            _ => None,
        }
    }
}

/// One TCP connection's state, shared by its requests.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    id: String,
    span: Span,
    admission: tokio::sync::Mutex<Admission>,
    user_recorded: AtomicBool,
    /// Cancelled to end the connection once the requests in progress are answered.
    closing: CancellationToken,
}

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        id: String,
        span: Span,
        admission: Admission,
    ) -> Connection {
        Connection {
            shared,
            peer,
            id,
            span,
            admission: tokio::sync::Mutex::new(admission),
            user_recorded: AtomicBool::new(false),
            closing: CancellationToken::new(),
        }
    }

    /// Returns the token that is cancelled when this connection should end: after a rejected
    /// client or a failed login, so that the next attempt passes the connection gate (and any
    /// ban that the failure triggered) on a new connection. `Connection: close` does that for
    /// HTTP/1.x; HTTP/2 needs a GOAWAY, which the connection's owner sends.
    pub(crate) fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    /// Handles one request and logs it at debug level. HTTP/2 runs each request as a task of
    /// its own, so the connection span is attached here rather than inherited.
    pub(crate) async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let http_method = request.method().clone();
        let path = request.uri().path().to_owned();
        async {
            let response = self.respond(request).await;
            debug!(
                %http_method,
                path,
                status = response.status().as_u16(),
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "request"
            );
            response
        }
        .instrument(self.span.clone())
        .await
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        let version = request.version();
        let client_ip = self
            .shared
            .proxies
            .client_ip(self.peer.ip(), request.headers());
        if !self.admit(client_ip).await {
            self.closing.cancel();
            return fixed_response(
                StatusCode::FORBIDDEN,
                TEXT,
                "connection rejected\n",
                can_close(version),
            );
        }

        let context = LoginContext {
            ip: client_ip,
            protocol: Protocol::Dav,
            method: LoginMethod::Password,
        };
        let (username, password) = match Credentials::from_headers(request.headers()) {
            Credentials::Missing => return unauthorized(false),
            Credentials::Malformed => {
                self.shared.logins.report(
                    "",
                    &context,
                    &self.id,
                    Some(&LoginError::InvalidCredentials),
                );
                self.closing.cancel();
                return unauthorized(can_close(version));
            }
            Credentials::Basic { username, password } => (username, password),
        };
        let session = match self
            .shared
            .auth
            .authenticate(&username, &password, &context, &self.id)
            .await
        {
            Ok(session) => session,
            Err(_) => {
                self.closing.cancel();
                return unauthorized(can_close(version));
            }
        };
        drop(password);
        self.record_user(&username);

        if let Some(response) = reject_infinite_depth(&request) {
            return response;
        }
        if let Some(response) = reject_foreign_destination(&request) {
            return response;
        }

        let state = self.shared.users.get(&session.user.username);
        let copy = CopyRequest::parse(&request);
        let config = DavConfig::new()
            .filesystem(Box::new(VfsDav::new(
                session.vfs.clone(),
                Arc::clone(&state.props),
            )))
            .locksystem(Box::new(state.locks.clone()))
            .principal(session.user.username.clone());
        let response = self.shared.handler.handle_with(config, request).await;
        if let Some(copy) = copy
            && matches!(
                response.status(),
                StatusCode::CREATED | StatusCode::NO_CONTENT
            )
        {
            copy.carry_props(&state.props);
        }
        response
    }

    /// Returns whether requests from `ip` may proceed, running the connection gate when this
    /// connection has not decided for `ip` yet.
    async fn admit(&self, ip: IpAddr) -> bool {
        let mut admission = self.admission.lock().await;
        if let Some(verdict) = admission.verdict(ip) {
            return verdict;
        }
        // Drop the old permit before asking for a new one, so that a proxy connection that
        // changes clients is never counted twice.
        *admission = Admission::Pending;
        *admission = Admission::decide(&self.shared, ip, &self.id).await;
        admission.verdict(ip).unwrap_or(false)
    }

    fn record_user(&self, username: &str) {
        if !self.user_recorded.swap(true, Ordering::Relaxed) {
            self.span.record("user", username);
            self.span.record("method", LoginMethod::Password.as_str());
        }
    }
}

/// Returns whether a response can close the connection with `Connection: close`, a header
/// that exists in HTTP/1.x only.
fn can_close(version: Version) -> bool {
    version < Version::HTTP_2
}

const TEXT: &str = "text/plain; charset=utf-8";
const XML: &str = "application/xml; charset=utf-8";

fn fixed_response(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
    close: bool,
) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn unauthorized(close: bool) -> Response<Body> {
    let mut response = fixed_response(
        StatusCode::UNAUTHORIZED,
        TEXT,
        "authentication required\n",
        close,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"ferry\""),
    );
    response
}

/// Rejects a PROPFIND of unbounded depth (RFC 4918 section 9.1: `Depth: infinity`, which a
/// missing header also means) with 403 and `propfind-finite-depth`. Serving it would walk the
/// whole home for one request, so clients list one level at a time instead.
fn reject_infinite_depth(request: &Request<Incoming>) -> Option<Response<Body>> {
    if request.method().as_str() != "PROPFIND" {
        return None;
    }
    let depth = request
        .headers()
        .get("depth")
        .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase());
    match depth.as_deref() {
        Some("0") | Some("1") => None,
        None | Some("infinity") => Some(fixed_response(
            StatusCode::FORBIDDEN,
            XML,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n",
            false,
        )),
        Some(_) => Some(fixed_response(
            StatusCode::BAD_REQUEST,
            TEXT,
            "invalid Depth header: expected 0, 1 or infinity\n",
            false,
        )),
    }
}

/// Answers a MOVE or COPY whose `Destination` names another server with `502 Bad Gateway`,
/// as RFC 4918 (9.9.4) asks; dav-server would otherwise use only the path and move the file
/// within this server. A destination with the request's own host, or a bare path, is local.
fn reject_foreign_destination(request: &Request<Incoming>) -> Option<Response<Body>> {
    if !matches!(request.method().as_str(), "MOVE" | "COPY") {
        return None;
    }
    let destination = request.headers().get("destination")?.to_str().ok()?;
    if destination.starts_with('/') {
        return None;
    }
    let own_host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let foreign = match destination.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let scheme_ok =
                scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
            !scheme_ok || own_host.is_none_or(|own| !own.eq_ignore_ascii_case(authority))
        }
        None => true,
    };
    foreign.then(|| {
        fixed_response(
            StatusCode::BAD_GATEWAY,
            TEXT,
            "the Destination header names another server; this server moves and copies only within itself\n",
            false,
        )
    })
}

/// A COPY request, remembered so that a collection's own dead properties can follow it.
/// dav-server copies a collection by creating an empty one and copying the files inside
/// (whose properties the file system copies), so the properties of collections are copied
/// here once the whole COPY succeeded.
struct CopyRequest {
    source: VPath,
    target: VPath,
    /// `Depth: 0` copies the collection alone, without its members.
    shallow: bool,
}

impl CopyRequest {
    fn parse(request: &Request<Incoming>) -> Option<CopyRequest> {
        if request.method() != Method::from_bytes(b"COPY").ok()? {
            return None;
        }
        let source = to_vpath(&DavPath::new(request.uri().path()).ok()?).ok()?;
        let destination = request.headers().get("destination")?.to_str().ok()?;
        let target_path = destination_path(destination)?;
        let target = to_vpath(&DavPath::new(target_path).ok()?).ok()?;
        let shallow = request
            .headers()
            .get("depth")
            .is_some_and(|d| d.as_bytes().trim_ascii() == b"0");
        Some(CopyRequest {
            source,
            target,
            shallow,
        })
    }

    fn carry_props(&self, props: &PropStore) {
        if self.shallow {
            props.copy_one(&self.source, &self.target);
        } else {
            props.copy_tree(&self.source, &self.target);
        }
    }
}

/// Returns the still percent-encoded path of a `Destination` header, which is an absolute
/// URL or an absolute path.
fn destination_path(destination: &str) -> Option<&str> {
    if destination.starts_with('/') {
        return Some(destination);
    }
    let (_, rest) = destination.split_once("://")?;
    let path = &rest[rest.find('/')?..];
    let end = path.find(['?', '#']).unwrap_or(path.len());
    Some(&path[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn destination_forms() {
        assert_eq!(destination_path("/a%20b"), Some("/a%20b"));
        assert_eq!(
            destination_path("http://127.0.0.1:8080/dir/x?y=1"),
            Some("/dir/x")
        );
        assert_eq!(destination_path("https://host"), None);
        assert_eq!(destination_path("relative"), None);
    }

    #[test]
    fn close_only_before_http2() {
        assert!(can_close(Version::HTTP_11));
        assert!(can_close(Version::HTTP_10));
        assert!(!can_close(Version::HTTP_2));
    }
}
