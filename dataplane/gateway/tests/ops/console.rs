//! The console over a real loopback listener, without a browser (no root): attacker-chosen
//! record fields come out HTML-escaped; the cookie login, CSRF and Origin checks, security
//! headers and the firewall switch through the API's code path.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use natfw_engine::engine::{Engine, GeoDb};
use natfw_gateway::admin::http::Server;
use natfw_gateway::admin::{api_handler, Control, Token};

const TOKEN: &str = "console-test-token";

/// One raw HTTP/1.1 request; (status, head, body).
fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn record(src: &str, domain: &str, reason: &str) -> String {
    let now = natfw_flowlog::format_rfc3339_millis(natfw_engine::time::Timestamp::now());
    serde_json::json!({
        "log_type": "flow", "gateway": "gw-ui", "start_time": now, "end_time": now,
        "src_ip": src, "src_port": 40001, "dst_ip": "192.0.2.80", "dst_port": 443,
        "ip_protocol": "tcp", "snat_ip": "192.0.2.1", "snat_port": 1024, "app_name": "HTTPS",
        "domain": domain, "domain_source": "sni", "ech": false, "dst_country": null,
        "acl_rule_id": null, "monitor_rules": [], "action": "accept", "app_dpi_state": "success",
        "reason": reason, "out_packet_count": 3, "out_packet_bytes": 300, "in_packet_count": 2,
        "in_packet_bytes": 200, "end_reason": "fin", "dns_verified": null
    })
    .to_string()
}

#[test]
fn console_escapes_records_and_guards_changes() {
    let dir = tempfile::tempdir().unwrap();
    let flow_log = dir.path().join("flows.jsonl");
    let evil = "<script>alert(1)</script>.example";
    let lines = [
        record(
            "10.0.1.10",
            evil,
            "matched \"x\" <img src=x onerror=alert(2)>",
        ),
        record("10.0.1.11", "ok.example", "fine"),
    ];
    std::fs::write(&flow_log, lines.join("\n") + "\n").unwrap();
    let text = format!(
        "gateway:
  name: gw-ui
  inside: in0
  outside: out0
  eips: [192.0.2.1]
  snat:
    - {{name: all, source: 10.0.0.0/8}}
firewall:
  default_action: accept
  rules:
    - {{name: r1, destination: {{domain: blocked.example}}, action: drop}}
logging: {{flow_log: {}}}
",
        flow_log.display()
    );
    let (cfg, _) = natfw_gateway::admin::load("natfw.yaml", &text).expect("config");
    let engine = Engine::new(
        &cfg,
        GeoDb::embedded(),
        Box::new(natfw_engine::engine::NullSink),
    )
    .expect("engine");
    let control = Arc::new(Control::new(
        cfg,
        "natfw.yaml".into(),
        engine.policy_handle(),
    ));
    let api = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        None,
        api_handler(Arc::clone(&control), Token::new(TOKEN)),
    )
    .unwrap();
    let addr = api.addr.to_string();
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];

    // Escaping: the raw markup from the record never reaches the page.
    for path in ["/ui/logs", "/ui/connections", "/ui/logs?src=10.0.1.10"] {
        let (s, head, body) = raw(&addr, "GET", path, &auth, "");
        assert_eq!(s, 200, "{path}: {body}");
        assert!(
            !body.contains("<script>") && !body.contains("<img"),
            "{path}: {body}"
        );
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;.example"),
            "{path}"
        );
        let csp = header(&head, "Content-Security-Policy").unwrap();
        assert!(csp.starts_with("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(header(&head, "X-Frame-Options"), Some("DENY"));
        assert!(header(&head, "Content-Type")
            .unwrap()
            .starts_with("text/html"));
    }
    let (_, _, body) = raw(&addr, "GET", "/ui/logs?src=10.0.1.11", &auth, "");
    assert!(
        body.contains("ok.example") && !body.contains("alert(1)"),
        "filtered by source"
    );
    // A search value is escaped too (reflected in the form).
    let (s, _, body) = raw(&addr, "GET", "/ui/logs?domain=%22%3E%3Cb%3E", &auth, "");
    assert_eq!(s, 400);
    assert!(
        !body.contains("\"><b>") && body.contains("&quot;&gt;&lt;b&gt;"),
        "{body}"
    );
    // Nothing from the browser's side without credentials.
    let (s, head, _) = raw(&addr, "GET", "/ui/logs", &[], "");
    assert_eq!((s, header(&head, "Location")), (303, Some("/ui/login")));

    // Cookie login.
    let origin = format!("http://{addr}");
    let o = [("Origin", origin.as_str())];
    let (s, head, _) = raw(&addr, "POST", "/ui/login", &o, &format!("token={TOKEN}"));
    assert_eq!(s, 303);
    let set = header(&head, "Set-Cookie").unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let (s, _, page) = raw(&addr, "GET", "/ui/policies", &[("Cookie", &cookie)], "");
    assert_eq!(s, 200);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 64);
    let enabled = || {
        let (_, _, b) = raw(&addr, "GET", "/v1/status", &auth, "");
        serde_json::from_str::<serde_json::Value>(&b).unwrap()["firewall_enabled"] == true
    };
    assert!(enabled());
    let off = "enabled=false&allow_open=true";
    // No CSRF token; a wrong one; the right one from another origin; no origin at all.
    for (hdrs, body) in [
        (
            vec![("Cookie", cookie.as_str()), ("Origin", origin.as_str())],
            off.to_string(),
        ),
        (
            vec![("Cookie", cookie.as_str()), ("Origin", origin.as_str())],
            format!("{off}&csrf={}", "0".repeat(64)),
        ),
        (
            vec![
                ("Cookie", cookie.as_str()),
                ("Origin", "http://evil.example"),
            ],
            format!("{off}&csrf={csrf}"),
        ),
        (
            vec![("Cookie", cookie.as_str())],
            format!("{off}&csrf={csrf}"),
        ),
    ] {
        let (s, _, b) = raw(&addr, "POST", "/ui/firewall", &hdrs, &body);
        assert_eq!(s, 403, "{hdrs:?} {body}: {b}");
        assert!(enabled(), "a refused POST changed the state");
    }
    let ok = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
    let (s, head, _) = raw(
        &addr,
        "POST",
        "/ui/firewall",
        &ok,
        &format!("{off}&csrf={csrf}"),
    );
    assert_eq!((s, header(&head, "Location")), (303, Some("/ui/policies")));
    assert!(!enabled(), "switched off through the API's code path");
    let (_, _, page) = raw(&addr, "GET", "/ui/policies", &[("Cookie", &cookie)], "");
    assert!(page.contains("id=\"flash\"") && page.contains("firewall is off"));
    let on = format!("enabled=true&csrf={csrf}");
    assert_eq!(raw(&addr, "POST", "/ui/firewall", &ok, &on).0, 303);
    assert!(enabled());
    // Logging out ends the session.
    let bye = format!("csrf={csrf}");
    assert_eq!(raw(&addr, "POST", "/ui/logout", &ok, &bye).0, 303);
    assert_eq!(
        raw(&addr, "GET", "/ui/policies", &[("Cookie", &cookie)], "").0,
        303
    );
    api.stop();
    drop(engine);
}
