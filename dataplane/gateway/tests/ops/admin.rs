//! Admin API and hot reload against real loopback listeners: authentication, policy swap,
//! rejected policies keep the running one, metrics exposition.

use std::sync::Arc;

use natfw_engine::engine::{Engine, GeoDb};
use natfw_flowlog::FlowRecord;
use natfw_gateway::admin::http::{call, Server};
use natfw_gateway::admin::{api_handler, metrics_handler, Control, Token};
use natfw_gateway::metrics::Snapshot;

const TOKEN: &str = "s3cret-token-for-tests";

fn config(rule: &str, domain: &str, eip: &str) -> String {
    format!(
        "gateway:
  name: gw-test
  inside: in0
  outside: out0
  eips: [{eip}]
  snat:
    - {{name: all, source: 10.0.0.0/8}}
firewall:
  default_action: accept
  rules:
    - name: {rule}
      destination: {{domain: {domain}}}
      action: drop
"
    )
}

struct Fixture {
    engine: Engine,
    control: Arc<Control>,
    api: Server,
    metrics: Server,
    url: String,
}

fn fixture() -> Fixture {
    fixture_with(&config("block-example", "blocked.example", "192.0.2.1"))
}

fn fixture_with(text: &str) -> Fixture {
    let (cfg, _) = natfw_gateway::admin::load("natfw.yaml", text).expect("valid config");
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
    let any = "127.0.0.1:0".parse().unwrap();
    let api = Server::start(
        any,
        None,
        api_handler(Arc::clone(&control), Token::new(TOKEN)),
    )
    .expect("api listener");
    let metrics = Server::start(any, None, metrics_handler(Arc::clone(&control))).unwrap();
    let url = format!("http://{}", api.addr);
    Fixture {
        engine,
        control,
        api,
        metrics,
        url,
    }
}

fn body(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

#[test]
fn requests_without_the_right_token_are_refused() {
    let f = fixture();
    let (s, _) = call(&f.url, "GET", "/v1/status", None, None, None).unwrap();
    assert_eq!(s, 401, "no token");
    let (s, _) = call(&f.url, "GET", "/v1/status", Some("wrong"), None, None).unwrap();
    assert_eq!(s, 401, "wrong token");
    let longer = format!("{TOKEN}x");
    let (s, _) = call(&f.url, "GET", "/v1/status", Some(&longer), None, None).unwrap();
    assert_eq!(s, 401, "token with a suffix");
    let (s, _) = call(&f.url, "PUT", "/v1/policy", Some("wrong"), Some(b"x"), None).unwrap();
    assert_eq!(s, 401, "writes need the token too");
    let (s, b) = call(&f.url, "GET", "/v1/status", Some(TOKEN), None, None).unwrap();
    assert_eq!(s, 200);
    assert_eq!(body(&b)["gateway"], "gw-test");
    assert_eq!(body(&b)["rules"], 1);
    f.api.stop();
    f.metrics.stop();
}

#[test]
fn bad_policy_is_rejected_with_positions_and_the_old_one_keeps_running() {
    let f = fixture();
    // Unknown action on line 13 col 15 (the rule's `action:` value), and an unknown top-level
    // key on line 14.
    let bad = config("block-example", "blocked.example", "192.0.2.1")
        .replace("action: drop", "action: explode")
        + "bogus_section: 1\n";
    let (s, b) = call(
        &f.url,
        "PUT",
        "/v1/policy",
        Some(TOKEN),
        Some(bad.as_bytes()),
        None,
    )
    .unwrap();
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    let v = body(&b);
    assert_eq!(v["applied"], false);
    let errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.starts_with("<request>:13:15: ")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("<request>:14:1: ")),
        "{errors:?}"
    );
    // The engine's policy is the one it started with.
    let p = f.engine.policy_handle().load_full();
    assert_eq!(p.rules().len(), 1);
    assert_eq!(p.rules()[0].name, "block-example");
    let (s, b) = call(&f.url, "GET", "/v1/policy", Some(TOKEN), None, None).unwrap();
    assert_eq!(s, 200);
    assert_eq!(body(&b)["rules"][0]["name"], "block-example");
    f.api.stop();
    f.metrics.stop();
}

#[test]
fn good_policy_is_swapped_into_the_engine_and_restart_only_changes_are_reported() {
    let f = fixture();
    let new = config("block-other", "other.example", "192.0.2.9");
    let (s, b) = call(
        &f.url,
        "PUT",
        "/v1/policy",
        Some(TOKEN),
        Some(new.as_bytes()),
        None,
    )
    .unwrap();
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v = body(&b);
    assert_eq!(v["rules"], 1);
    let ignored = v["ignored"].to_string();
    assert!(ignored.contains("gateway.eips"), "{ignored}");
    assert!(!ignored.contains("firewall"), "{ignored}");
    assert!(!ignored.contains("logging"), "{ignored}");
    let p = f.engine.policy_handle().load_full();
    assert_eq!(p.rules()[0].name, "block-other");

    // Firewall off: the engine's policy says so; on again restores inspection.
    let (s, _) = call(
        &f.url,
        "POST",
        "/v1/firewall",
        Some(TOKEN),
        Some(br#"{"enabled": false, "allow_open": true}"#),
        None,
    )
    .unwrap();
    assert_eq!(s, 200);
    assert!(!f.engine.policy_handle().load().enabled());
    let (s, _) = call(
        &f.url,
        "POST",
        "/v1/firewall",
        Some(TOKEN),
        Some(br#"{"enabled": true}"#),
        None,
    )
    .unwrap();
    assert_eq!(s, 200);
    assert!(f.engine.policy_handle().load().enabled());
    assert_eq!(
        f.engine.policy_handle().load().rules()[0].name,
        "block-other"
    );
    // Bypass: a bad source is a 400; without `natfw run` owning the XDP maps, a 503.
    let (s, _) = call(
        &f.url,
        "POST",
        "/v1/bypass",
        Some(TOKEN),
        Some(br#"{"source": "nope"}"#),
        None,
    )
    .unwrap();
    assert_eq!(s, 400);
    let (s, _) = call(
        &f.url,
        "POST",
        "/v1/bypass",
        Some(TOKEN),
        Some(br#"{"source": "10.0.0.5"}"#),
        None,
    )
    .unwrap();
    assert_eq!(s, 503);
    f.api.stop();
    f.metrics.stop();
}

fn record(src: &str, domain: &str, rule: &str, bytes: u64) -> FlowRecord {
    FlowRecord {
        log_type: "flow".into(),
        gateway: "gw-test".into(),
        start_time: "2026-11-28T10:00:00.000Z".into(),
        end_time: "2026-11-28T10:00:01.000Z".into(),
        src_ip: src.into(),
        src_port: Some(40000),
        dst_ip: "198.51.100.7".into(),
        dst_port: Some(443),
        ip_protocol: "tcp".into(),
        snat_ip: None,
        snat_port: None,
        app_name: None,
        domain: Some(domain.into()),
        domain_source: Some("sni".into()),
        ech: false,
        dst_country: None,
        acl_rule_id: Some(rule.into()),
        monitor_rules: vec![],
        action: "drop".into(),
        app_dpi_state: "success".into(),
        reason: "test".into(),
        out_packet_count: 3,
        out_packet_bytes: bytes,
        in_packet_count: 0,
        in_packet_bytes: 0,
        end_reason: "denied".into(),
        dns_verified: None,
        interim: None,
    }
}

#[test]
fn rule_hits_show_in_policy_and_metrics() {
    let f = fixture();
    // The engine credits the deciding rule's counter in the policy it evaluated.
    let policy = f.engine.policy_handle().load_full();
    let at = natfw_flowlog::parse_rfc3339("2026-11-28T10:00:01.000Z").unwrap();
    for _ in 0..2 {
        let c = policy.counters().get(Some(natfw_policy::RuleId(0)));
        c.hit(at.as_nanos());
        c.add_bytes(300);
    }
    let mut snap = Snapshot {
        flowlog_records: 2,
        ..Snapshot::default()
    };
    snap.engine.fwd_out.add(1500);
    snap.engine.flows_created = 7;
    f.control.publish(snap);

    let (_, b) = call(&f.url, "GET", "/v1/policy", Some(TOKEN), None, None).unwrap();
    let v = body(&b);
    assert_eq!(v["rules"][0]["hits"], 2);
    assert_eq!(v["rules"][0]["bytes"], 600);
    assert_eq!(v["rules"][0]["last_hit"], "2026-11-28T10:00:01.000Z");

    let murl = format!("http://{}", f.metrics.addr);
    let (s, b) = call(&murl, "GET", "/metrics", None, None, None).unwrap();
    assert_eq!(s, 200);
    let text = String::from_utf8(b).unwrap();
    assert!(
        text.contains("natfw_rule_hits_total{rule=\"block-example\"} 2"),
        "{text}"
    );
    assert!(text.contains("natfw_flows_created_total 7"), "{text}");
    assert!(text.contains("natfw_flowlog_records_total 2"), "{text}");
    f.api.stop();
    f.metrics.stop();
}

#[test]
fn logs_top_and_trend_read_the_flow_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flows.jsonl");
    let mut text = String::new();
    for r in [
        record("10.0.0.5", "a.example", "block-example", 1000),
        record("10.0.0.5", "b.example", "block-example", 2000),
        record("10.0.0.9", "c.example", "block-example", 100),
    ] {
        text.push_str(&serde_json::to_string(&r).unwrap());
        text.push('\n');
    }
    std::fs::write(&log, text).unwrap();
    let cfg = format!(
        "{}logging:\n  flow_log: {}\n",
        config("block-example", "blocked.example", "192.0.2.1"),
        log.display()
    );
    let f = fixture_with(&cfg);

    let (s, b) = call(
        &f.url,
        "GET",
        "/v1/logs?src=10.0.0.9",
        Some(TOKEN),
        None,
        None,
    )
    .unwrap();
    assert_eq!(s, 200);
    let lines: Vec<&str> = std::str::from_utf8(&b).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("c.example"));

    let (s, b) = call(&f.url, "GET", "/v1/top?by=bytes", Some(TOKEN), None, None).unwrap();
    assert_eq!(s, 200);
    let v = body(&b);
    assert_eq!(v["talkers"][0]["src_ip"], "10.0.0.5");
    assert_eq!(v["talkers"][0]["bytes_out"], 3000);
    assert_eq!(v["talkers"][1]["src_ip"], "10.0.0.9");

    let (s, b) = call(
        &f.url,
        "GET",
        "/v1/trend?interval=1m",
        Some(TOKEN),
        None,
        None,
    )
    .unwrap();
    assert_eq!(s, 200);
    let v = body(&b);
    let total: u64 = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bytes_out"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3100);
    let (s, _) = call(&f.url, "GET", "/v1/top?by=packets", Some(TOKEN), None, None).unwrap();
    assert_eq!(s, 400);
    f.api.stop();
    f.metrics.stop();
}

#[test]
fn oversized_and_malformed_requests_are_refused() {
    use std::io::{Read, Write};
    let f = fixture();
    let raw = |req: &[u8]| {
        let mut s = std::net::TcpStream::connect(f.api.addr).unwrap();
        s.write_all(req).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let big = raw(b"PUT /v1/policy HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
    assert!(big.starts_with("HTTP/1.1 413 "), "{big}");
    let bad = raw(b"NOT HTTP AT ALL\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let chunked = raw(b"PUT /v1/policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(chunked.starts_with("HTTP/1.1 400 "), "{chunked}");
    let mut head = b"GET /v1/status HTTP/1.1\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'a', 20_000));
    let long = raw(&head);
    assert!(long.starts_with("HTTP/1.1 413 "), "{long}");
    f.api.stop();
    f.metrics.stop();
}

#[test]
fn cli_client_applies_and_reports_errors_with_exit_codes() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, config("cli-rule", "cli.example", "192.0.2.1")).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "gateway: [\n").unwrap();
    let natfw = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_natfw"))
            .args(args)
            .args(["--admin", &f.url, "--token-file"])
            .arg(&token)
            .output()
            .unwrap()
    };
    let o = natfw(&["policy", "apply", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("<request>:"),
        "{o:?}"
    );
    assert_eq!(
        f.engine.policy_handle().load().rules()[0].name,
        "block-example"
    );
    let o = natfw(&["policy", "apply", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(f.engine.policy_handle().load().rules()[0].name, "cli-rule");
    let o = natfw(&["status"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"reloads_failed\": 1"),
        "{o:?}"
    );
    let o = natfw(&["firewall", "off"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "firewall off without --allow-open"
    );
    assert!(f.engine.policy_handle().load().enabled());
    let o = natfw(&["firewall", "off", "--allow-open"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!f.engine.policy_handle().load().enabled());
    f.api.stop();
    f.metrics.stop();
}
