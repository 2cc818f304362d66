//! A small, bounded HTTP/1.1 server and client over std sockets, optionally TLS (rustls).
//!
//! Why not hyper/axum: the admin API serves a handful of operators' requests, not traffic;
//! a thread per connection (at most [`Limits::max_connections`]), one request per connection,
//! bounded head and body, and deadlines keep it small and predictable without an async runtime
//! in the binary (and without its build time on the gateway's build hosts). Heads are parsed
//! with `httparse`.
//!
//! Against clients that hold connections without credentials (slowloris): the TLS handshake
//! and the request head must arrive within [`Limits::head_deadline`]; the credentials (a
//! [`Gate`], e.g. the bearer token) are checked on the head, before any body byte is read;
//! at most [`Limits::max_unauthenticated`] connections may be waiting for their head (and
//! [`Limits::max_unauthenticated_per_source`] per client address), and when another one
//! arrives the oldest waiting connection of the busiest source is closed; the whole request, handshake to last
//! response byte, has [`Limits::request_deadline`]. When every slot is taken by authenticated
//! requests, new connections get `503 Service Unavailable` instead of a silent close.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Largest request or response head.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body (a full config) and largest response body the client reads.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Connections served at once (default of [`Limits::max_connections`]).
pub const MAX_CONNECTIONS: usize = 32;
/// Concurrent `503` answers being sent; connections beyond are closed.
const MAX_BUSY_ANSWERS: usize = 4;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once, authenticated or not.
    pub max_connections: usize,
    /// Connections still waiting for their head (and credentials). When one more arrives,
    /// the oldest waiting connection of the source that has the most of them is closed, so a
    /// client holding many slots only ever pushes out its own.
    pub max_unauthenticated: usize,
    /// Waiting connections per source address; one more closes that source's oldest.
    pub max_unauthenticated_per_source: usize,
    /// TLS handshake and request head within this time after accept.
    pub head_deadline: Duration,
    /// The whole request, accept to last response byte.
    pub request_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            max_unauthenticated: 16,
            max_unauthenticated_per_source: 4,
            head_deadline: Duration::from_secs(5),
            request_deadline: Duration::from_secs(30),
        }
    }
}

/// Checks a request's head (method, path, headers; the body is not read yet): `Some(response)`
/// refuses it with that response, `None` lets it through.
pub type Gate = Arc<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

/// One request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string (after `?`), empty if none.
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Value of query parameter `key`, decoded as `application/x-www-form-urlencoded`
    /// (`%XX` escapes and `+` for a space; invalid UTF-8 becomes U+FFFD and then fails to
    /// parse as an address or a domain).
    pub fn param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

#[cfg(test)]
mod param_tests {
    use super::Request;

    #[test]
    fn query_parameters_are_percent_decoded() {
        let r = Request {
            query: "src=fd00%3A%3A1%2F64&domain=%2A.b%C3%BCcher.example&q=a+b%20c&bad=%zz&e".into(),
            ..Request::default()
        };
        assert_eq!(r.param("src").as_deref(), Some("fd00::1/64"));
        assert_eq!(r.param("domain").as_deref(), Some("*.bücher.example"));
        assert_eq!(r.param("q").as_deref(), Some("a b c"));
        assert_eq!(r.param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.param("e").as_deref(), Some(""));
        assert_eq!(r.param("missing"), None);
    }
}

/// One response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Further header lines (the console's cookies, security headers, redirects). Values
    /// with CR or LF are not written.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, s: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: s.into().into_bytes(),
            headers: Vec::new(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The request handler a listener calls (from its connection threads).
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// TLS server config from PEM files, with the ring provider.
pub fn server_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map(Arc::new)
        .map_err(|e| format!("TLS certificate/key: {e}"))
}

/// A running listener; dropping it does not stop it, [`Server::stop`] does.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a listener serves and how.
struct Service {
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    gate: Option<Gate>,
    limits: Limits,
}

impl Server {
    /// Bind `addr` and serve `handler` on a background thread, default limits, no gate.
    pub fn start(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> io::Result<Server> {
        Server::start_with(addr, tls, handler, None, Limits::default())
    }

    /// Bind `addr` and serve `handler`; `gate` checks each head before the body is read.
    pub fn start_with(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
        gate: Option<Gate>,
        limits: Limits,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let svc = Arc::new(Service {
            tls,
            handler,
            gate,
            limits,
        });
        let thread = std::thread::Builder::new()
            .name(format!("natfw-http-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &svc, &s))?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Stop accepting (connections in progress finish on their own).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection being served.
struct Slot {
    id: u64,
    peer: std::net::IpAddr,
    /// Head received and let through by the gate.
    authed: bool,
    /// To close it from the accept loop (eviction).
    sock: TcpStream,
}

#[derive(Default)]
struct Slots {
    open: Mutex<Vec<Slot>>,
    busy_answers: AtomicUsize,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn authed(&self, id: u64) {
        if let Some(s) = self.lock().iter_mut().find(|s| s.id == id) {
            s.authed = true;
        }
    }

    fn release(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
    }
}

/// Close the oldest connection still waiting for its head, of `peer` or else of the source
/// with the most waiting connections (slots are in accept order).
fn evict_unauthenticated(open: &mut Vec<Slot>, peer: Option<std::net::IpAddr>) -> bool {
    let waiting = |ip: std::net::IpAddr| open.iter().filter(|s| !s.authed && s.peer == ip).count();
    let victim = peer.or_else(|| {
        open.iter()
            .filter(|s| !s.authed)
            .max_by_key(|s| waiting(s.peer))
            .map(|s| s.peer)
    });
    let Some(ip) = victim else {
        return false;
    };
    match open.iter().position(|s| !s.authed && s.peer == ip) {
        Some(i) => {
            let s = open.remove(i);
            let _ = s.sock.shutdown(std::net::Shutdown::Both);
            true
        }
        None => false,
    }
}

fn accept_loop(l: &TcpListener, svc: &Arc<Service>, stop: &AtomicBool) {
    let slots = Arc::new(Slots::default());
    let mut next_id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (sock, peer) = match l.accept() {
            Ok((s, a)) => (s, a.ip()),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let accepted = Instant::now();
        let lim = svc.limits;
        let id = next_id;
        next_id += 1;
        let admitted = {
            let mut open = slots.lock();
            let mine = open.iter().filter(|s| !s.authed && s.peer == peer).count();
            let unauth = open.iter().filter(|s| !s.authed).count();
            if mine >= lim.max_unauthenticated_per_source.max(1) {
                evict_unauthenticated(&mut open, Some(peer));
            } else if unauth >= lim.max_unauthenticated.max(1) {
                evict_unauthenticated(&mut open, None);
            }
            if open.len() >= lim.max_connections.max(1) && !evict_unauthenticated(&mut open, None) {
                false
            } else {
                match sock.try_clone() {
                    Ok(c) => {
                        open.push(Slot {
                            id,
                            peer,
                            authed: false,
                            sock: c,
                        });
                        true
                    }
                    Err(_) => continue,
                }
            }
        };
        if !admitted {
            answer_busy(sock, svc, &slots);
            continue;
        }
        let (svc2, slots2) = (Arc::clone(svc), Arc::clone(&slots));
        let spawned = std::thread::Builder::new()
            .name("natfw-http-conn".into())
            .spawn(move || {
                let _ = serve_one(sock, accepted, &svc2, &|| slots2.authed(id));
                slots2.release(id);
            });
        if spawned.is_err() {
            // The closure never ran; the socket was dropped with it.
            slots.release(id);
        }
    }
}

/// Every slot is taken by authenticated requests: answer 503 (on a thread of its own, bounded,
/// with a short deadline, since a TLS client needs a handshake first).
fn answer_busy(sock: TcpStream, svc: &Arc<Service>, slots: &Arc<Slots>) {
    if slots.busy_answers.fetch_add(1, Ordering::AcqRel) >= MAX_BUSY_ANSWERS {
        slots.busy_answers.fetch_sub(1, Ordering::AcqRel);
        return; // closed
    }
    let (tls, counter) = (svc.tls.clone(), Arc::clone(slots));
    let spawned = std::thread::Builder::new()
        .name("natfw-http-busy".into())
        .spawn(move || {
            let until = Rc::new(Cell::new(Instant::now() + Duration::from_secs(2)));
            let raw = sock.try_clone();
            if let (Ok(mut stream), Ok(raw)) = (wrap(sock, tls, &until), raw) {
                let r = Response::text(503, "all connection slots are busy; retry shortly\n");
                let _ = write_response(&mut stream, &r).and_then(|()| stream.flush());
                // The request is unread: stop writing, drain a little, so the close does not
                // reset the answer away.
                let _ = raw.shutdown(std::net::Shutdown::Write);
                let _ = raw.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = io::copy(&mut (&raw).take(MAX_HEAD as u64), &mut io::sink());
            }
            counter.busy_answers.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        // The closure (and its decrement) never ran.
        slots.busy_answers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket whose every read and write must finish before a deadline that the server moves
/// (head deadline, then the request deadline). Covers the TLS handshake too, which runs
/// through these reads and writes.
struct Deadline {
    sock: TcpStream,
    until: Rc<Cell<Instant>>,
}

impl Deadline {
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.get().saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request deadline passed",
            ));
        }
        Ok(left)
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.sock.set_read_timeout(Some(left))?;
        self.sock.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.sock.set_write_timeout(Some(left))?;
        self.sock.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

fn wrap(
    sock: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    until: &Rc<Cell<Instant>>,
) -> io::Result<Box<dyn ReadWrite>> {
    sock.set_nonblocking(false)?;
    let d = Deadline {
        sock,
        until: Rc::clone(until),
    };
    Ok(match tls {
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(cfg).map_err(io::Error::other)?;
            Box::new(rustls::StreamOwned::new(conn, d))
        }
        None => Box::new(d),
    })
}

fn serve_one(
    sock: TcpStream,
    accepted: Instant,
    svc: &Service,
    authed: &dyn Fn(),
) -> io::Result<()> {
    let raw = sock.try_clone()?;
    let until = Rc::new(Cell::new(accepted + svc.limits.head_deadline));
    let mut stream = wrap(sock, svc.tls.clone(), &until)?;
    let (resp, unread) = match read_head_request(&mut stream) {
        Ok((req, rest, len)) => match svc.gate.as_ref().and_then(|g| g(&req)) {
            // Refused on the head: the body is never read.
            Some(r) => (r, true),
            None => {
                authed();
                until.set(accepted + svc.limits.request_deadline);
                match read_body(&mut stream, rest, len) {
                    Ok(body) => ((svc.handler)(&Request { body, ..req }), false),
                    Err(ReadErr::TooLarge) => (Response::text(413, "request too large\n"), true),
                    Err(ReadErr::Bad(m)) => (Response::text(400, format!("{m}\n")), true),
                    Err(ReadErr::Io(e)) => return Err(e),
                }
            }
        },
        Err(ReadErr::TooLarge) => (Response::text(413, "request too large\n"), true),
        Err(ReadErr::Bad(m)) => (Response::text(400, format!("{m}\n")), true),
        Err(ReadErr::Io(e)) => return Err(e),
    };
    // Answering gets a little time of its own even when the client used up the head deadline.
    until.set(until.get().max(Instant::now() + Duration::from_secs(2)));
    write_response(&mut stream, &resp)?;
    stream.flush()?;
    if unread {
        // Closing with unread request bytes makes the kernel send a RST that can destroy the
        // response before the client reads it: stop writing, then drain a bounded amount.
        raw.shutdown(std::net::Shutdown::Write)?;
        raw.set_read_timeout(Some(Duration::from_secs(1)))?;
        let _ = io::copy(&mut (&raw).take(MAX_BODY as u64), &mut io::sink());
    }
    Ok(())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

enum ReadErr {
    TooLarge,
    Bad(String),
    Io(io::Error),
}

/// Reads until the end of the head (`\r\n\r\n`), bounded; returns (head length, bytes read).
fn read_head(s: &mut dyn Read) -> Result<(usize, Vec<u8>), ReadErr> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    // The stream's deadline bounds the whole head: a client trickling bytes cannot hold a slot.
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((i + 4, buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadErr::TooLarge);
        }
        let n = s.read(&mut chunk).map_err(ReadErr::Io)?;
        if n == 0 {
            return Err(ReadErr::Bad(
                "connection closed before the end of the head".into(),
            ));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

fn read_body(s: &mut dyn Read, mut have: Vec<u8>, len: usize) -> Result<Vec<u8>, ReadErr> {
    if len > MAX_BODY {
        return Err(ReadErr::TooLarge);
    }
    have.truncate(len);
    let missing = len - have.len();
    let start = have.len();
    have.resize(len, 0);
    if missing > 0 {
        s.read_exact(&mut have[start..]).map_err(ReadErr::Io)?;
    }
    Ok(have)
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<usize, ReadErr> {
    match headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        None => Ok(0),
        Some(h) => std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ReadErr::Bad("bad Content-Length".into())),
    }
}

/// The head as a [`Request`] without body, the bytes read past the head, and the body length.
fn read_head_request(s: &mut dyn Read) -> Result<(Request, Vec<u8>, usize), ReadErr> {
    let (head_len, buf) = read_head(s)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(ReadErr::Bad("malformed request head".into())),
    }
    if req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Err(ReadErr::Bad(
            "chunked bodies are not accepted; send Content-Length".into(),
        ));
    }
    let len = content_length(req.headers)?;
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let out = Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
    let rest = buf.get(head_len..).unwrap_or_default().to_vec();
    Ok((out, rest, len))
}

fn write_response(s: &mut dyn Write, r: &Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.status == 401 {
        head.push_str("WWW-Authenticate: Bearer\r\n");
    }
    for (k, v) in &r.headers {
        if !v.contains(['\r', '\n']) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(&r.body)
}

/// How the client checks the server's certificate.
#[derive(Debug, Clone)]
pub enum ClientTls {
    /// The platform has no trust store here: a CA file is required for https.
    Ca(std::path::PathBuf),
    /// Accept any certificate (testing only; the token still goes over TLS).
    Insecure,
}

/// Sends one request to `url` (`http://host:port` or `https://host:port`, no path) and returns
/// (status, body).
pub fn call(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    tls: Option<&ClientTls>,
) -> Result<(u16, Vec<u8>), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "{url}: expected http://HOST:PORT or https://HOST:PORT"
        ));
    };
    let authority = rest.trim_end_matches('/');
    let sock = TcpStream::connect(authority).map_err(|e| format!("{authority}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut stream: Box<dyn ReadWrite> = if https {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let cfg = client_tls(tls.ok_or("https needs --ca CERT or --insecure")?)?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
        Box::new(rustls::StreamOwned::new(conn, sock))
    } else {
        Box::new(sock)
    };
    let body = body.unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let io = |e: io::Error| format!("{authority}: {e}");
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut resp = Vec::new();
    // Connection: close delimits the body; bounded read.
    let mut limited = (&mut stream).take((MAX_HEAD + MAX_BODY) as u64);
    match limited.read_to_end(&mut resp) {
        Ok(_) => {}
        // A TLS peer closing without close_notify after the full response is fine.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !resp.is_empty() => {}
        Err(e) => return Err(io(e)),
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(&resp) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(format!("{authority}: malformed response")),
    };
    Ok((
        r.code.unwrap_or(0),
        resp.get(n..).unwrap_or_default().to_vec(),
    ))
}

fn client_tls(t: &ClientTls) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let cfg = match t {
        ClientTls::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            b.with_root_certificates(roots).with_no_client_auth()
        }
        ClientTls::Insecure => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// `--insecure`: accepts any server certificate, still checks the handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
