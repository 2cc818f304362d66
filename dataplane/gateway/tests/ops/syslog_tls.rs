//! The syslog sink in TLS (`logging.syslog.tls`): against a rustls server on loopback with a
//! certificate from a test CA made with the `openssl` command (SKIP without it), messages arrive
//! octet-counted inside TLS; a receiver whose certificate does not chain to `ca_file` gets
//! nothing, and the error says why.

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use natfw_flowlog::{FlowRecord, LineTee};
use natfw_gateway::admin::http::server_tls;
use natfw_policy::model::Syslog;

fn record(i: u16) -> FlowRecord {
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

fn cfg(port: u16, ca: &std::path::Path) -> Syslog {
    Syslog {
        address: format!("127.0.0.1:{port}"),
        host: "127.0.0.1".into(),
        port,
        tls: true,
        ca_file: Some(ca.display().to_string()),
        server_name: None,
        queue: 100,
    }
}

#[test]
fn syslog_over_tls_delivers_and_refuses_an_unverified_receiver() {
    let dir = tempfile::tempdir().unwrap();
    if super::tls::make_certs(dir.path()).is_none() {
        eprintln!("SKIP syslog_tls: the openssl command is not available");
        return;
    }
    let server = server_tls(&dir.path().join("srv.crt"), &dir.path().join("srv.key")).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (mut tee, h) =
        natfw_gateway::syslog::start(&cfg(port, &dir.path().join("ca.crt")), "gw").unwrap();
    let receiver = std::thread::spawn(move || {
        let (sock, _) = l.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn = rustls::ServerConnection::new(server).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        // Three messages, octet-counted.
        let mut msgs = Vec::new();
        while msgs.len() < 3 {
            let n = tls.read(&mut buf).unwrap();
            assert!(n > 0);
            text.extend_from_slice(&buf[..n]);
            while let Some(sp) = text.iter().position(|&b| b == b' ') {
                let len: usize = std::str::from_utf8(&text[..sp]).unwrap().parse().unwrap();
                if text.len() < sp + 1 + len {
                    break;
                }
                msgs.push(String::from_utf8(text[sp + 1..sp + 1 + len].to_vec()).unwrap());
                text.drain(..sp + 1 + len);
            }
        }
        msgs
    });
    for i in 0..3 {
        let r = record(i);
        tee.line(&r, &serde_json::to_vec(&r).unwrap());
    }
    let msgs = receiver.join().unwrap();
    for (i, m) in msgs.iter().enumerate() {
        assert!(m.starts_with("<134>1 "), "{m}");
        let json = m.splitn(8, ' ').nth(7).unwrap();
        let r: FlowRecord = serde_json::from_str(json).unwrap();
        assert_eq!(r.src_port, Some(i as u16));
    }
    drop(tee);
    h.finish();

    // A CA the receiver's certificate does not chain to: no connection, the error says so.
    let other = tempfile::tempdir().unwrap();
    assert!(super::tls::make_certs(other.path()).is_some());
    let server = server_tls(&dir.path().join("srv.crt"), &dir.path().join("srv.key")).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (mut tee, h) =
        natfw_gateway::syslog::start(&cfg(port, &other.path().join("ca.crt")), "gw").unwrap();
    let c = Arc::clone(&h.counters);
    std::thread::spawn(move || {
        for s in l.incoming().take(1) {
            let Ok(sock) = s else { continue };
            let conn = rustls::ServerConnection::new(Arc::clone(&server)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut b = [0u8; 64];
            let _ = tls.read(&mut b);
        }
    });
    let r = record(7);
    tee.line(&r, &serde_json::to_vec(&r).unwrap());
    let t = Instant::now();
    while c.last_error.lock().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "no error recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = c.last_error.lock().unwrap().clone().unwrap();
    assert!(e.contains("TLS"), "{e}");
    assert_eq!(c.sent.load(Ordering::Relaxed), 0);
    assert!(!c.connected.load(Ordering::Relaxed));
    drop(tee);
    h.finish();
    assert_eq!(
        c.dropped.load(Ordering::Relaxed),
        1,
        "undelivered at shutdown: counted"
    );
}
