//! The admin API against hostile or careless clients, over real loopback sockets: slowloris
//! (many slow connections without a token) while the operator's calls still succeed, the token
//! checked before any body byte, a 503 when every slot is busy, and changes that open the
//! firewall for everything refused without an explicit flag.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use natfw_engine::engine::{Engine, GeoDb};
use natfw_gateway::admin::http::{call, Limits, Response, Server};
use natfw_gateway::admin::{start_listeners, token_gate, Control, Token};

const TOKEN: &str = "hardening-test-token";

fn config(admin_listen: &str, token_file: &std::path::Path) -> String {
    format!(
        "gateway:
  name: gw-hard
  inside: in0
  outside: out0
  eips: [192.0.2.1]
  snat:
    - {{name: all, source: 10.0.0.0/8}}
firewall:
  rules:
    - name: block
      destination: {{domain: blocked.example}}
      action: drop
admin:
  listen: \"{admin_listen}\"
  token_file: {}
  plain_http: true
",
        token_file.display()
    )
}

struct Fixture {
    engine: Engine,
    _control: Arc<Control>,
    servers: Vec<Server>,
    url: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let text = config("127.0.0.1:0", &token);
    let (cfg, _) = natfw_gateway::admin::load("natfw.yaml", &text).expect("valid config");
    let engine = Engine::new(
        &cfg,
        GeoDb::embedded(),
        Box::new(natfw_engine::engine::NullSink),
    )
    .unwrap();
    let control = Arc::new(Control::new(
        cfg.clone(),
        "natfw.yaml".into(),
        engine.policy_handle(),
    ));
    let servers = start_listeners(&cfg, &control).expect("listeners");
    let url = format!("http://{}", servers[0].addr);
    Fixture {
        engine,
        _control: control,
        servers,
        url,
        _dir: dir,
    }
}

/// A TCP connection to `to` from the loopback address `from` (bound before connecting, so the
/// server sees another client address).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sa = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let (local, remote) = (sa(SocketAddrV4::new(from, 0)), sa(to));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket; bind/connect read `len` bytes of the sockaddr_in values above,
    // which live across the calls; the descriptor goes into a TcpStream that owns it (or is
    // closed on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// One slowloris client: connect, start a head, trickle a byte now and then; when the server
/// closes the connection, reconnect and do it again. Counts the connections it made.
fn slowloris(
    from: Ipv4Addr,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut made = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = connect_from(from, to) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            made += 1;
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            if s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
                .is_err()
            {
                continue;
            }
            let mut buf = [0u8; 512];
            loop {
                if stop.load(Ordering::Relaxed) {
                    return made;
                }
                // Closed (or answered) by the server: go again.
                match s.read(&mut buf) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
                if s.write_all(b"X").is_err() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        made
    })
}

#[test]
fn slowloris_without_a_token_cannot_lock_the_operator_out() {
    let f = fixture();
    let addr = f.servers[0].addr;
    // Is 127.0.0.2 usable as a source here?
    if connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).is_err() {
        eprintln!("SKIP slowloris test: cannot bind 127.0.0.2");
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    // 3 sources x 40 connections: far more than the slots (32 in all, 16 waiting for a head).
    for src in 2..5u8 {
        for _ in 0..40 {
            attackers.push(slowloris(
                Ipv4Addr::new(127, 0, 0, src),
                addr,
                Arc::clone(&stop),
            ));
        }
    }
    std::thread::sleep(Duration::from_secs(2));

    // A held connection that never completes its head is closed by the head deadline (5 s).
    let t0 = Instant::now();
    let mut lone = connect_from(Ipv4Addr::new(127, 0, 0, 9), addr).unwrap();
    lone.write_all(b"GET /v1/status HTTP/1.1\r\n").unwrap();
    lone.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = lone.read_to_end(&mut sink);
    let held = t0.elapsed();

    let mut ok = 0;
    let mut failures = Vec::new();
    for _ in 0..20 {
        match call(&f.url, "GET", "/v1/status", Some(TOKEN), None, None) {
            Ok((200, _)) => ok += 1,
            Ok((s, b)) => failures.push(format!("HTTP {s}: {}", String::from_utf8_lossy(&b))),
            Err(e) => failures.push(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let made: u32 = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        ok, 20,
        "operator calls failed under slowloris: {failures:?}"
    );
    assert!(made > 120, "the attack did not run: {made} connections");
    assert!(
        held < Duration::from_secs(12),
        "a connection without a head held its slot for {held:?}"
    );
    for s in f.servers {
        s.stop();
    }
}

#[test]
fn the_token_is_checked_before_the_body_is_read() {
    let f = fixture();
    let addr = f.servers[0].addr;
    // Announce a 4 MB body and send none of it: a wrong token is refused at once.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        b"PUT /v1/policy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 4000000\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("no answer before the body");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    for s in f.servers {
        s.stop();
    }
}

#[test]
fn busy_slots_answer_503_instead_of_closing() {
    let handler = Arc::new(|_: &natfw_gateway::admin::http::Request| {
        std::thread::sleep(Duration::from_millis(1500));
        Response::text(200, "slow\n")
    });
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let gate = Some(token_gate(Token::new(TOKEN)));
    let srv =
        Server::start_with("127.0.0.1:0".parse().unwrap(), None, handler, gate, limits).unwrap();
    let url = format!("http://{}", srv.addr);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || call(&url, "GET", "/x", Some(TOKEN), None, None))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (s, b) = call(&url, "GET", "/x", Some(TOKEN), None, None).expect("an answer, not a close");
    assert_eq!(s, 503, "{}", String::from_utf8_lossy(&b));
    for t in busy {
        assert_eq!(t.join().unwrap().unwrap().0, 200);
    }
    // Free again.
    assert_eq!(
        call(&url, "GET", "/x", Some(TOKEN), None, None).unwrap().0,
        200
    );
    srv.stop();
}

#[test]
fn changes_that_open_everything_need_allow_open() {
    let f = fixture();
    let post = |path: &str, method: &str, body: &str| {
        call(
            &f.url,
            method,
            path,
            Some(TOKEN),
            Some(body.as_bytes()),
            None,
        )
        .unwrap()
    };
    // Bypass of every source: refused without the flag; with it, it goes on to the data path
    // (absent here: 503).
    for src in ["0.0.0.0/0", "10.0.0.0/8", "::/0"] {
        let (s, b) = post("/v1/bypass", "POST", &format!("{{\"source\": \"{src}\"}}"));
        assert_eq!(s, 400, "{src}: {}", String::from_utf8_lossy(&b));
        assert!(String::from_utf8_lossy(&b).contains("allow_open"));
    }
    let (s, _) = post(
        "/v1/bypass",
        "POST",
        r#"{"source": "0.0.0.0/0", "allow_open": true}"#,
    );
    assert_eq!(s, 503);
    let (s, _) = post("/v1/bypass", "POST", r#"{"source": "10.1.2.3"}"#);
    assert_eq!(s, 503, "an ordinary bypass needs no flag");

    // Firewall off.
    let (s, _) = post("/v1/firewall", "POST", r#"{"enabled": false}"#);
    assert_eq!(s, 400);
    assert!(f.engine.policy_handle().load().enabled());
    let (s, _) = post(
        "/v1/firewall",
        "POST",
        r#"{"enabled": false, "allow_open": true}"#,
    );
    assert_eq!(s, 200);
    assert!(!f.engine.policy_handle().load().enabled());
    let (s, _) = post("/v1/firewall", "POST", r#"{"enabled": true}"#);
    assert_eq!(s, 200);

    // A policy without any drop rule (default accept).
    let open = "gateway:
  name: gw-hard
  inside: in0
  outside: out0
  eips: [192.0.2.1]
  snat:
    - {name: all, source: 10.0.0.0/8}
firewall:
  rules:
    - name: only-accept
      destination: {domain: ok.example}
      action: accept
";
    let (s, b) = post("/v1/policy", "PUT", open);
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("allow_open"));
    let (s, b) = post("/v1/policy?allow_open=true", "PUT", open);
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    for s in f.servers {
        s.stop();
    }
}

/// `metrics.require_token: true`: the metrics listener (`/metrics` and `/healthz`) answers 401
/// without the admin bearer token and serves the exposition with it.
#[test]
fn metrics_can_require_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let text = format!(
        "{}metrics:\n  listen: \"127.0.0.2:0\"\n  require_token: true\n",
        config("127.0.0.1:0", &token)
    );
    let (cfg, _) = natfw_gateway::admin::load("natfw.yaml", &text).expect("valid config");
    assert!(cfg.metrics.as_ref().is_some_and(|m| m.require_token));
    let engine = Engine::new(
        &cfg,
        GeoDb::embedded(),
        Box::new(natfw_engine::engine::NullSink),
    )
    .unwrap();
    let control = Arc::new(Control::new(
        cfg.clone(),
        "natfw.yaml".into(),
        engine.policy_handle(),
    ));
    let servers = start_listeners(&cfg, &control).expect("listeners");
    assert_eq!(servers.len(), 2, "admin and metrics listeners");
    let murl = format!("http://{}", servers[1].addr);
    for path in ["/metrics", "/healthz"] {
        let (s, _) = call(&murl, "GET", path, None, None, None).unwrap();
        assert_eq!(s, 401, "{path} without a token");
        let (s, _) = call(&murl, "GET", path, Some("wrong-token"), None, None).unwrap();
        assert_eq!(s, 401, "{path} with a wrong token");
    }
    let (s, b) = call(&murl, "GET", "/metrics", Some(TOKEN), None, None).unwrap();
    assert_eq!(s, 200);
    let text = String::from_utf8(b).unwrap();
    assert!(text.contains("natfw_build_info"), "{text}");
}
