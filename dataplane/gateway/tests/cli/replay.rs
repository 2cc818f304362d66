//! `natfw replay` as a user runs it: the real binary on real captures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use natfw_flowlog::FlowRecord;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/corpus")
        .join(name)
}

fn natfw(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_natfw"))
        .args(args)
        .output()
        .expect("run natfw")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses `replay: N packets, N flows, N accepted, N dropped, N log records dropped...`.
fn summary_numbers(stderr: &str) -> [u64; 5] {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("replay: "))
        .unwrap_or_else(|| panic!("no summary line in {stderr:?}"));
    let mut nums = [0u64; 5];
    let words = [
        "packets",
        "flows",
        "accepted",
        "dropped",
        "log records dropped",
    ];
    let parts: Vec<&str> = line["replay: ".len()..].split(", ").collect();
    for (i, w) in words.iter().enumerate() {
        let (n, rest) = parts[i].split_once(' ').unwrap();
        assert_eq!(rest, *w, "{line}");
        nums[i] = n.parse().unwrap();
    }
    nums
}

#[test]
fn replays_to_stdout_with_summary() {
    let out = natfw(&["replay".as_ref(), corpus("http_curl.pcap").as_os_str()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let [packets, flows, accepted, dropped, log_dropped] = summary_numbers(&stderr);
    assert_eq!(packets, 12); // every frame of the capture (tcpdump -r counts 12)
    assert_eq!(log_dropped, 0);
    let records: Vec<FlowRecord> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(records.len() as u64, flows);
    assert_eq!(accepted + dropped, flows);
    // Every key present, even the null ones.
    for l in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 26, "{l}");
    }
    let web = records
        .iter()
        .find(|r| r.dst_ip == "198.51.100.10" && r.dst_port == Some(80))
        .unwrap_or_else(|| panic!("no HTTP flow in {stdout:?} / {stderr}"));
    assert_eq!(web.src_ip, "10.0.1.10");
    assert_eq!(web.snat_ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(web.domain.as_deref(), Some("shop.example.test"));
    assert_eq!(web.action, "accept");
    assert!(web.out_packet_count > 0 && web.in_packet_count > 0);
    assert!(web.start_time.ends_with('Z') && web.start_time <= web.end_time);
}

#[test]
fn writes_flow_log_file_and_merges_captures() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flows.jsonl");
    // Stale content must not survive: a replay's log is its result.
    std::fs::write(&log, "stale\n").unwrap();
    let out = natfw(&[
        "replay".as_ref(),
        "--flow-log".as_ref(),
        log.as_os_str(),
        corpus("dns_query.pcap").as_os_str(),
        corpus("icmp_ping.pcap").as_os_str(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(out.stdout.is_empty());
    let [packets, flows, ..] = summary_numbers(&stderr);
    assert_eq!(packets, 2 + 4);
    let records: Vec<FlowRecord> = natfw_flowlog::read_records(&log)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len() as u64, flows);
    let protos: Vec<&str> = records.iter().map(|r| r.ip_protocol.as_str()).collect();
    assert!(
        protos.contains(&"udp") && protos.contains(&"icmp"),
        "{protos:?}"
    );
}

#[test]
fn input_errors_exit_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pcap");
    let out = natfw(&["replay".as_ref(), missing.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nope.pcap"),
        "{}",
        text(&out.stderr)
    );

    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let out = natfw(&["replay".as_ref(), junk.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a pcap or pcapng"),
        "{}",
        text(&out.stderr)
    );

    let cfg = dir.path().join("natfw.yaml");
    std::fs::write(&cfg, "gateway: [\n").unwrap();
    let out = natfw(&[
        "replay".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
        corpus("dns_query.pcap").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("natfw.yaml:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn truncated_capture_keeps_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(corpus("https_curl.pcap")).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &whole[..whole.len() - 10]).unwrap();
    let out = natfw(&["replay".as_ref(), cut.as_os_str()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let [packets, ..] = summary_numbers(&stderr);
    assert_eq!(packets, 20); // 21 frames, the last one cut
    assert!(
        stderr.contains("1 parse errors") && stderr.contains("cut.pcap"),
        "{stderr}"
    );
}

/// `logging.format: ecs`: the same flows as Elastic Common Schema documents, same facts as
/// the default records of the same capture.
#[test]
fn ecs_format_writes_the_same_flows_as_elastic_common_schema() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |format: &str| {
        let p = dir.path().join(format!("{format}.yaml"));
        std::fs::write(
            &p,
            format!(
                "gateway:
  name: gw-ecs
  inside: in0
  outside: out0
  eips: [192.0.2.1]
  snat:
    - {{name: all, source: 10.0.0.0/8}}
firewall: {{default_action: accept, rules: [{{name: web, destination: {{domain: shop.example.test}}, action: accept}}]}}
logging: {{format: {format}}}
"
            ),
        )
        .unwrap();
        p
    };
    let run = |c: PathBuf| {
        let out = natfw(&[
            "replay".as_ref(),
            "--config".as_ref(),
            c.as_os_str(),
            corpus("http_curl.pcap").as_os_str(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let native: Vec<FlowRecord> = run(cfg("json"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ecs: Vec<serde_json::Value> = run(cfg("ecs"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(native.len(), ecs.len());
    assert!(!ecs.is_empty());
    for (n, e) in native.iter().zip(&ecs) {
        assert_eq!(*e, natfw_flowlog::to_ecs(n));
    }
    let web = ecs
        .iter()
        .find(|e| e["destination"]["port"] == 80)
        .expect("the HTTP flow");
    assert_eq!(web["source"]["ip"], "10.0.1.10");
    assert_eq!(web["source"]["nat"]["ip"], "192.0.2.1");
    assert_eq!(web["url"]["domain"], "shop.example.test");
    assert_eq!(web["rule"]["name"], "web");
    assert_eq!(web["event"]["action"], "accept");
    assert_eq!(web["network"]["transport"], "tcp");
    assert_eq!(web["observer"]["name"], "gw-ecs");
}
