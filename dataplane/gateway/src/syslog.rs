//! The remote flow-log sink (`logging.syslog`): every flow-log line, as the MSG of an RFC 5424
//! message, to a syslog receiver over TCP with octet-counting framing (RFC 6587, `LEN SP MSG`),
//! optionally in TLS (rustls, verified against `ca_file`).
//!
//! The flow-log writer thread hands each line to a [`SyslogTee`], which formats the message and
//! `try_send`s it on a bounded queue (`logging.syslog.queue`); a full queue drops the record and
//! counts it. One sender thread owns the connection: it sends queued messages in order,
//! reconnects with exponential backoff (200 ms doubling to 30 s) and, between messages and
//! before each one, checks that the receiver has not closed the connection, so a receiver that
//! went away is noticed before a message is written into a dead socket. Nothing here runs on
//! the packet path: the data path only ever meets the flow-log channel.
//!
//! Accounting: every record offered is either sent (`sent`), dropped because the queue was full
//! (`dropped`), still queued (`queued`), or, at shutdown, dropped because it could not be
//! delivered before the deadline (counted in `dropped` too). A message whose write failed is
//! kept and sent again after the reconnection (at least once: the receiver may see it twice if
//! the failure came after it had read it).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use natfw_flowlog::{FlowRecord, LineTee};
use natfw_policy::model::Syslog;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// First wait after a failed connection attempt; doubled each time up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Connection and write timeouts.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle sender checks the connection.
const IDLE_CHECK: Duration = Duration::from_millis(200);
/// How long the sender keeps trying to deliver what is queued once natfw stops.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);
/// RFC 5424 PRI: facility local0 (16), severity informational (6).
const PRI: u32 = 16 * 8 + 6;

/// What the sink has done so far (shared with metrics and status).
#[derive(Debug, Default)]
pub struct SyslogCounters {
    /// Records handed to the sink (sent, queued or dropped).
    pub offered: AtomicU64,
    /// Messages written to the receiver.
    pub sent: AtomicU64,
    /// Records lost: the queue was full, or they were still undelivered at shutdown.
    pub dropped: AtomicU64,
    /// Connections established.
    pub connects: AtomicU64,
    /// Connected right now.
    pub connected: AtomicBool,
    /// Messages waiting to be sent (in the queue, or the one being sent).
    pub queued: AtomicU64,
    /// The latest connection or write error.
    pub last_error: Mutex<Option<String>>,
}

impl SyslogCounters {
    fn note(&self, e: &str) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }
}

/// The writer thread's end: formats the message and queues it, never waits.
pub struct SyslogTee {
    tx: Sender<Vec<u8>>,
    counters: Arc<SyslogCounters>,
    closed_at: Arc<Mutex<Option<Instant>>>,
    hostname: String,
    procid: String,
}

impl std::fmt::Debug for SyslogTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogTee")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// RFC 5424 header fields are printable US-ASCII without spaces; `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// One framed message: `LEN SP <PRI>1 TIMESTAMP HOSTNAME natfw PROCID MSGID - MSG`.
pub fn frame(hostname: &str, procid: &str, msgid: &str, time: &str, msg: &[u8]) -> Vec<u8> {
    let head = format!(
        "<{PRI}>1 {time} {hostname} natfw {procid} {} - ",
        header_field(msgid, 32)
    );
    let len = head.len() + msg.len();
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(msg);
    out
}

impl Drop for SyslogTee {
    fn drop(&mut self) {
        if let Ok(mut g) = self.closed_at.lock() {
            *g = Some(Instant::now());
        }
    }
}

impl LineTee for SyslogTee {
    fn line(&mut self, rec: &FlowRecord, line: &[u8]) {
        self.counters.offered.fetch_add(1, Ordering::Relaxed);
        let time = natfw_flowlog::format_rfc3339_millis(natfw_engine::time::Timestamp::now());
        let m = frame(&self.hostname, &self.procid, &rec.log_type, &time, line);
        match self.tx.try_send(m) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The sender thread's control end.
#[derive(Debug)]
pub struct SyslogHandle {
    pub counters: Arc<SyslogCounters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SyslogHandle {
    /// Call after the flow-log writer has stopped (it drops the tee, which closes the queue):
    /// delivers what is queued within a few seconds, counts the rest as dropped, stops.
    pub fn finish(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + SHUTDOWN_DRAIN + IO_TIMEOUT * 2;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

impl Drop for SyslogHandle {
    fn drop(&mut self) {
        self.join();
    }
}

/// Starts the sender thread; the tee goes to the flow-log writer
/// (`natfw_flowlog::spawn_writer_tee`). Fails only on a bad `ca_file` or server name.
pub fn start(cfg: &Syslog, hostname: &str) -> Result<(SyslogTee, SyslogHandle), String> {
    let tls = if cfg.tls {
        let ca = cfg
            .ca_file
            .as_deref()
            .ok_or("logging.syslog: tls needs ca_file")?;
        let name = cfg.server_name.clone().unwrap_or_else(|| cfg.host.clone());
        let name = ServerName::try_from(name.clone())
            .map_err(|e| format!("logging.syslog.server_name {name}: {e}"))?;
        Some((client_config(Path::new(ca))?, name))
    } else {
        None
    };
    let (tx, rx) = crossbeam_channel::bounded(cfg.queue.max(1));
    let counters = Arc::new(SyslogCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let closed_at = Arc::new(Mutex::new(None));
    let sender = Sender_ {
        closed_at: Arc::clone(&closed_at),
        host: cfg.host.clone(),
        port: cfg.port,
        address: cfg.address.clone(),
        tls,
        counters: Arc::clone(&counters),
        stop: Arc::clone(&stop),
    };
    let thread = std::thread::Builder::new()
        .name("natfw-syslog".into())
        .spawn(move || sender.run(rx))
        .map_err(|e| format!("syslog thread: {e}"))?;
    Ok((
        SyslogTee {
            tx,
            counters: Arc::clone(&counters),
            closed_at,
            hostname: header_field(hostname, 255),
            procid: std::process::id().to_string(),
        },
        SyslogHandle {
            counters,
            stop,
            thread: Some(thread),
        },
    ))
}

fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("logging.syslog.ca_file {}: {e}", ca.display()))?
    {
        let c = c.map_err(|e| format!("logging.syslog.ca_file {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("logging.syslog.ca_file {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "logging.syslog.ca_file {}: no certificate in it",
            ca.display()
        ));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    fn send(&mut self, m: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(m),
            Conn::Tls(s) => s.write_all(m).and_then(|()| s.flush()),
        }
    }

    /// The receiver has not closed the connection (receivers send nothing; whatever they do
    /// send is read and ignored).
    fn alive(&mut self) -> bool {
        if self.tcp().set_nonblocking(true).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        let r = loop {
            let r = match self {
                Conn::Plain(s) => s.read(&mut buf),
                Conn::Tls(s) => s.read(&mut buf),
            };
            match r {
                Ok(0) => break false,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break false,
            }
        };
        r && self.tcp().set_nonblocking(false).is_ok()
    }
}

struct Sender_ {
    host: String,
    port: u16,
    address: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    counters: Arc<SyslogCounters>,
    stop: Arc<AtomicBool>,
    /// When the tee (the writer's end) was dropped.
    closed_at: Arc<Mutex<Option<Instant>>>,
}

impl Sender_ {
    fn connect(&self) -> Result<Conn, String> {
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", self.address))?;
        let mut last = format!("{}: no address", self.address);
        for a in addrs {
            let sock = match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                Ok(s) => s,
                Err(e) => {
                    last = format!("{a}: {e}");
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let _ = sock.set_write_timeout(Some(IO_TIMEOUT));
            let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
            return match &self.tls {
                None => Ok(Conn::Plain(sock)),
                Some((cfg, name)) => {
                    let mut conn = rustls::ClientConnection::new(Arc::clone(cfg), name.clone())
                        .map_err(|e| format!("{a}: TLS: {e}"))?;
                    let mut sock = sock;
                    while conn.is_handshaking() {
                        conn.complete_io(&mut sock)
                            .map_err(|e| format!("{a}: TLS handshake: {e}"))?;
                    }
                    Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, sock))))
                }
            };
        }
        Err(last)
    }

    fn set_connected(&self, on: bool) {
        self.counters.connected.store(on, Ordering::Relaxed);
    }

    fn run(self, rx: Receiver<Vec<u8>>) {
        let mut conn: Option<Conn> = None;
        let mut pending: Option<Vec<u8>> = None;
        let mut backoff = BACKOFF_MIN;
        let mut last_err = String::new();
        let mut dropped_logged = 0u64;
        let mut drop_log_at = Instant::now();
        loop {
            let d = self.counters.dropped.load(Ordering::Relaxed);
            if d != dropped_logged && drop_log_at.elapsed() >= Duration::from_secs(10) {
                tracing::warn!(
                    "syslog {}: {} record(s) dropped so far (queue full or receiver away)",
                    self.address,
                    d
                );
                dropped_logged = d;
                drop_log_at = Instant::now();
            }
            if self.stopping(&rx, &pending) {
                break;
            }
            if conn.is_none() {
                match self.connect() {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = BACKOFF_MIN;
                        self.counters.connects.fetch_add(1, Ordering::Relaxed);
                        self.set_connected(true);
                        tracing::info!("syslog: connected to {}", self.address);
                    }
                    Err(e) => {
                        if e != last_err {
                            tracing::warn!("syslog: cannot connect: {e} (retrying)");
                            last_err = e.clone();
                        }
                        self.counters.note(&e);
                        // Wait, but notice a shutdown while waiting.
                        let until = Instant::now() + backoff;
                        while Instant::now() < until && !self.stopping(&rx, &pending) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let msg = match pending.take() {
                Some(m) => m,
                None => match rx.recv_timeout(IDLE_CHECK) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if !c.alive() {
                            self.lost(&mut conn, "the receiver closed the connection");
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            if !c.alive() {
                pending = Some(msg);
                self.lost(&mut conn, "the receiver closed the connection");
                continue;
            }
            match c.send(&msg) {
                Ok(()) => {
                    // Counted as queued until sent: records = sent + dropped + queued.
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                }
                Err(e) => {
                    pending = Some(msg);
                    self.lost(&mut conn, &format!("write: {e}"));
                }
            }
        }
        // Stopping: whatever could not be delivered is lost, and counted.
        let left = u64::from(pending.is_some()) + rx.try_iter().count() as u64;
        if left > 0 {
            self.counters.dropped.fetch_add(left, Ordering::Relaxed);
            self.counters.queued.store(0, Ordering::Relaxed);
            tracing::warn!(
                "syslog {}: {left} record(s) undelivered at shutdown (dropped)",
                self.address
            );
        }
        if let Some(Conn::Tls(mut s)) = conn {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        self.set_connected(false);
    }

    /// Time to stop: told to, or the writer is gone and nothing is left to send, or it has
    /// been gone for [`SHUTDOWN_DRAIN`].
    fn stopping(&self, rx: &Receiver<Vec<u8>>, pending: &Option<Vec<u8>>) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        let closed = self.closed_at.lock().ok().and_then(|g| *g);
        closed
            .is_some_and(|t| t.elapsed() >= SHUTDOWN_DRAIN || (rx.is_empty() && pending.is_none()))
    }

    fn lost(&self, conn: &mut Option<Conn>, why: &str) {
        *conn = None;
        self.set_connected(false);
        self.counters.note(why);
        tracing::warn!(
            "syslog {}: connection lost: {why} (reconnecting)",
            self.address
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn record(i: u32) -> FlowRecord {
        serde_json::from_value(serde_json::json!({
            "log_type": "flow", "gateway": "gw", "start_time": "2026-12-01T12:00:00.000Z",
            "end_time": "2026-12-01T12:00:01.000Z", "src_ip": "10.0.0.5", "src_port": i,
            "dst_ip": "203.0.113.5", "dst_port": 443, "ip_protocol": "tcp", "snat_ip": null,
            "snat_port": null, "app_name": null, "domain": null, "domain_source": null,
            "ech": false, "dst_country": null, "acl_rule_id": null, "monitor_rules": [],
            "action": "accept", "app_dpi_state": "success", "reason": "r",
            "out_packet_count": 1, "out_packet_bytes": 60, "in_packet_count": 0,
            "in_packet_bytes": 0, "end_reason": "fin", "dns_verified": null
        }))
        .unwrap()
    }

    fn offer(tee: &mut SyslogTee, i: u32) {
        let r = record(i);
        let line = serde_json::to_vec(&r).unwrap();
        tee.line(&r, &line);
    }

    /// Reads octet-counted messages until `n` arrived; returns their MSG parts.
    fn read_msgs(c: &mut TcpStream, n: usize) -> Vec<String> {
        // Generous: CI runs this beside builds and lab tests on two cores.
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < n {
            let k = c
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("read after {} of {n} messages: {e}", out.len()));
            assert!(k > 0, "closed after {} messages", out.len());
            buf.extend_from_slice(&chunk[..k]);
            while let Some(sp) = buf.iter().position(|&b| b == b' ') {
                let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
                if buf.len() < sp + 1 + len {
                    break;
                }
                let m = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap();
                buf.drain(..sp + 1 + len);
                let msg = m.splitn(8, ' ').nth(7).unwrap().to_string();
                assert!(m.starts_with("<134>1 "), "{m}");
                out.push(msg);
            }
        }
        out
    }

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Against a plain TCP listener: framing, delivery in order, a closed receiver noticed
    /// before anything is written to it, exact drop counting while it is away, the backlog
    /// after it is back. (The lab test does the same against rsyslog.)
    #[test]
    fn delivers_in_order_counts_drops_exactly_and_reconnects() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cfg = Syslog {
            address: format!("127.0.0.1:{port}"),
            host: "127.0.0.1".into(),
            port,
            tls: false,
            ca_file: None,
            server_name: None,
            queue: 5,
        };
        let (mut tee, h) = start(&cfg, "gw 1").unwrap();
        let c = Arc::clone(&h.counters);
        let (mut conn, _) = l.accept().unwrap();
        for i in 0..3 {
            offer(&mut tee, i);
        }
        let got = read_msgs(&mut conn, 3);
        for (i, m) in got.iter().enumerate() {
            let r: FlowRecord = serde_json::from_str(m).unwrap();
            assert_eq!(r.src_port, Some(i as u16));
        }
        wait("3 sent", || c.sent.load(Ordering::Relaxed) == 3);
        // The receiver goes away.
        drop(conn);
        drop(l);
        wait("disconnect noticed", || {
            !c.connected.load(Ordering::Relaxed)
        });
        for i in 3..23 {
            offer(&mut tee, i);
        }
        assert_eq!(
            c.dropped.load(Ordering::Relaxed),
            20 - 5,
            "the queue holds 5"
        );
        assert_eq!(c.queued.load(Ordering::Relaxed), 5);
        // Back: the 5 queued arrive, in order, then new ones.
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (mut conn, _) = l.accept().unwrap();
        offer(&mut tee, 99);
        let got = read_msgs(&mut conn, 6);
        let ports: Vec<u16> = got
            .iter()
            .map(|m| {
                serde_json::from_str::<FlowRecord>(m)
                    .unwrap()
                    .src_port
                    .unwrap()
            })
            .collect();
        assert_eq!(ports, [3, 4, 5, 6, 7, 99]);
        wait("all sent", || c.sent.load(Ordering::Relaxed) == 3 + 6);
        assert_eq!(c.offered.load(Ordering::Relaxed), 24);
        assert_eq!(c.connects.load(Ordering::Relaxed), 2);
        drop(tee);
        h.finish();
        assert_eq!(c.queued.load(Ordering::Relaxed), 0);
        assert_eq!(
            c.offered.load(Ordering::Relaxed),
            c.sent.load(Ordering::Relaxed) + c.dropped.load(Ordering::Relaxed)
        );
    }

    /// Nothing listening at shutdown: what is queued is counted as dropped, and finish returns.
    #[test]
    fn undelivered_at_shutdown_is_counted() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let cfg = Syslog {
            address: format!("127.0.0.1:{port}"),
            host: "127.0.0.1".into(),
            port,
            tls: false,
            ca_file: None,
            server_name: None,
            queue: 100,
        };
        let (mut tee, h) = start(&cfg, "gw").unwrap();
        let c = Arc::clone(&h.counters);
        for i in 0..7 {
            offer(&mut tee, i);
        }
        drop(tee);
        let t = Instant::now();
        h.finish();
        assert!(t.elapsed() < SHUTDOWN_DRAIN + Duration::from_secs(2));
        assert_eq!(c.dropped.load(Ordering::Relaxed), 7);
        assert_eq!(c.sent.load(Ordering::Relaxed), 0);
        assert!(c.last_error.lock().unwrap().is_some());
    }

    #[test]
    fn octet_counted_rfc5424_frame() {
        let m = frame(
            "gw1",
            "42",
            "flow",
            "2026-12-01T12:00:00.000Z",
            b"{\"a\":1}",
        );
        let s = String::from_utf8(m).unwrap();
        let (len, rest) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        assert_eq!(
            rest,
            "<134>1 2026-12-01T12:00:00.000Z gw1 natfw 42 flow - {\"a\":1}"
        );
        assert_eq!(header_field("gw 1", 255), "gw1");
        assert_eq!(header_field("", 255), "-");
    }
}
