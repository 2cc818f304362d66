//! The in-kernel fast path (tc-BPF) in the lab: a decided flow's packets stop reaching the
//! engine (AF_XDP receive counters stay flat) while its record counts what the server got;
//! FIN, RST and the idle timeout end offloaded flows in the engine with exact counters; a
//! reload (`firewall off`) takes every flow back, so no stale entry forwards anything.
//!
//! Root only (prints `SKIP` otherwise); own namespace tags (`natfw-f<N>-*`), a guard tears the
//! lab down on panic. Host checksum offloads stay on: bulk TCP is GSO super-frames.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use natfw_lab::demo::flow_records;
use natfw_lab::{plan, Lab, LabGuard};

const METRICS: &str = "127.0.0.1:9110";
/// The test VPC host (default accept policy) behind the `test` gateway.
const HOST: &str = "test";
const T: Duration = Duration::from_secs(30);

struct Up {
    lab: LabGuard,
    gw_ns: String,
    cfg_text: String,
}

fn up(tag: &str) -> Option<Up> {
    let crate::support::FastPathLab {
        mut lab,
        gi,
        g,
        cfg_text,
    } = crate::support::fast_path_lab("fastpath", tag, HOST, METRICS)?;
    lab.start_natfw_with(gi, &cfg_text)
        .unwrap_or_else(|e| panic!("natfw run did not start: {e}"));
    let _ = lab.exec(&g.ns, &["ip", "link", "set", "lo", "up"], T);
    let log =
        std::fs::read_to_string(lab.dir.join(format!("natfw-{}.log", g.name))).unwrap_or_default();
    assert!(log.contains("fast path on"), "{log}");
    Some(Up {
        lab,
        gw_ns: g.ns,
        cfg_text,
    })
}

fn scrape(u: &Up) -> String {
    let o = u
        .lab
        .exec(
            &u.gw_ns,
            &["curl", "-sS", &format!("http://{METRICS}/metrics")],
            T,
        )
        .expect("curl metrics");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

use crate::support::metric_sum as metric;

fn afxdp_rx(text: &str) -> u64 {
    metric(text, "natfw_afxdp_rx_frames_total", &[])
}

/// Wait (bounded) until the fast path carries `n` flows.
fn wait_fastpath_flows(u: &Up, n: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(u);
        if metric(&m, "natfw_fastpath_flows", &[]) == n {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "natfw_fastpath_flows never became {n}:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop_and_read_log(lab: &mut Lab) -> Vec<Value> {
    for (g, st) in lab.stop_natfw() {
        assert!(
            st.is_some_and(|s| s.success()),
            "natfw on {g} did not exit cleanly: {st:?}"
        );
    }
    flow_records(lab)
}

fn u64_of(r: &Value, k: &str) -> u64 {
    r.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// The end record (`log_type: flow`, not an interim one) of a flow.
fn record<'a>(recs: &'a [Value], sport: u16, dport: u16, proto: &str) -> &'a Value {
    recs.iter()
        .find(|r| {
            r.get("log_type").and_then(Value::as_str) == Some("flow")
                && u64_of(r, "src_port") == u64::from(sport)
                && u64_of(r, "dst_port") == u64::from(dport)
                && r.get("ip_protocol").and_then(Value::as_str) == Some(proto)
        })
        .unwrap_or_else(|| panic!("no {proto} record :{sport} -> :{dport} in {recs:#?}"))
}

#[test]
fn an_offloaded_bulk_flow_bypasses_the_engine_and_its_record_counts_what_the_server_got() {
    let Some(mut u) = up("fp1") else {
        return;
    };
    wait_fastpath_flows(&u, 0);
    let before = scrape(&u);
    let to = plan::IPERF_ADDR.to_string();
    let port = plan::IPERF_PORT.to_string();
    let o = u
        .lab
        .host_exec(
            HOST,
            &[
                "iperf3",
                "-c",
                &to,
                "-p",
                &port,
                "-t",
                "3",
                "-J",
                "--connect-timeout",
                "3000",
            ],
            Duration::from_secs(30),
        )
        .expect("iperf3");
    let v: Value = serde_json::from_slice(&o.stdout).expect("iperf3 JSON");
    let received = v
        .pointer("/end/sum_received/bytes")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("iperf3 result: {v}"));
    let data_port = v
        .pointer("/start/connected/0/local_port")
        .and_then(Value::as_u64)
        .expect("iperf3 data connection port") as u16;
    assert!(received > 10_000_000, "iperf3 moved only {received} bytes");
    // Both connections closed with FIN: nothing left on the fast path.
    let after = wait_fastpath_flows(&u, 0);
    let engine_frames = afxdp_rx(&after) - afxdp_rx(&before);
    let fast = metric(
        &after,
        "natfw_xdp_packets_total",
        &["counter=\"fastpath_forwarded\""],
    ) - metric(
        &before,
        "natfw_xdp_packets_total",
        &["counter=\"fastpath_forwarded\""],
    );
    assert!(fast > 1000, "fast path forwarded {fast} frames:\n{after}");
    let offloaded = metric(&after, "natfw_fastpath_offloads_total", &["added"]);
    assert!(offloaded >= 1, "{after}");

    let recs = stop_and_read_log(&mut u.lab);
    let r = record(&recs, data_port, plan::IPERF_PORT, "tcp");
    // iperf3 ends its data connection with FIN or with RST: both take it back.
    let end = r.get("end_reason").and_then(Value::as_str);
    assert!(matches!(end, Some("fin" | "rst")), "{r}");
    let (pkts, bytes) = (u64_of(r, "out_packet_count"), u64_of(r, "out_packet_bytes"));
    eprintln!(
        "fast path: server received {received} B; record {pkts} packets {bytes} B; \
         engine received {engine_frames} frames; tc forwarded {fast} skbs"
    );
    // Wire packets (super-frames counted per segment): every byte the server received was
    // in them, each carries at most an MTU of payload, headers are at most 100 bytes each.
    assert!(
        bytes >= received,
        "record {bytes} bytes < received {received}: {r}"
    );
    assert!(
        bytes <= received + pkts * 100,
        "record {bytes} bytes for {pkts} packets vs {received} received: {r}"
    );
    assert!(
        pkts * 1500 >= received,
        "{pkts} packets for {received} bytes: {r}"
    );
    // The engine saw the handshakes, identification and the ends, not the bulk.
    assert!(
        engine_frames * 20 < pkts,
        "the engine received {engine_frames} frames for a {pkts}-packet flow"
    );
}

fn natfw_pid(u: &Up) -> u32 {
    natfw_lab::ns_pids(&u.gw_ns)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "natfw")
        })
        .expect("natfw pid")
}

#[test]
fn rst_and_a_firewall_off_reload_take_offloaded_flows_back_and_udp_idles_out_exactly() {
    let Some(mut u) = up("fp2") else {
        return;
    };
    let host_ns = u.lab.plan.host(HOST).expect("host").ns.clone();
    let marker = u.lab.dir.join("fastpath-reloaded");
    let web = plan::WEB_NAMES[1];
    let py = format!(
        r#"
import os, socket, struct, sys, time
s = socket.create_connection(("{addr}", 80), timeout=5)
req = b"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n"
got = 0
def one():
    global got
    s.sendall(req)
    got += len(s.recv(65536))
one()
time.sleep(1.0)
for i in range(30):
    one()
print("PORT", s.getsockname()[1], flush=True)
for i in range(100):
    if os.path.exists("{marker}"):
        break
    time.sleep(0.1)
time.sleep(2.5)
for i in range(10):
    one()
time.sleep(2.5)
print("GOT", got, flush=True)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(2)
u.bind(("0.0.0.0", 40999))
echoed = 0
for i in range(300):
    u.sendto(b"x" * 32, ("{echo}", {echo_port}))
    try:
        u.recvfrom(2048)
        echoed += 1
    except socket.timeout:
        pass
print("ECHOED", echoed, flush=True)
"#,
        addr = web.addr,
        name = web.name,
        marker = marker.display(),
        echo = plan::ECHO_ADDR,
        echo_port = plan::ECHO_PORT,
    );
    let mut client = Command::new("ip")
        .args(["netns", "exec", &host_ns, "python3", "-c", &py])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client");
    // The client made its requests and now waits: the flow is offloaded and idle.
    let mut stdout = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut text = String::new();
    while !text.contains("PORT") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).expect("client output");
        assert!(n > 0, "client ended early: {text}");
        text.push_str(&line);
    }
    let held = wait_fastpath_flows(&u, 1);
    let removed_before = metric(&held, "natfw_fastpath_offloads_total", &["removed"]);
    // `firewall off` by SIGHUP: every flow is taken back at once.
    let off = u.cfg_text.replacen("enabled: true", "enabled: false", 1);
    assert_ne!(off, u.cfg_text);
    let gname = u.lab.plan.host(HOST).map(|h| h.gateway).expect("gw");
    let cfg_path = u
        .lab
        .dir
        .join(format!("{}.yaml", u.lab.plan.gateways[gname].name));
    std::fs::write(&cfg_path, &off).unwrap();
    let pid = natfw_pid(&u);
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success()));
    let flushed = wait_fastpath_flows(&u, 0);
    assert!(
        metric(&flushed, "natfw_fastpath_offloads_total", &["removed"]) > removed_before,
        "{flushed}"
    );
    std::fs::write(&marker, b"").unwrap();
    // The client goes on: the engine still has the flow and offloads it again.
    wait_fastpath_flows(&u, 1);

    std::io::Read::read_to_string(&mut stdout, &mut text).expect("client output");
    let out = client.wait_with_output().expect("client output");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {text}"))
    };
    let (port, got, echoed) = (field("PORT") as u16, field("GOT"), field("ECHOED"));
    assert_eq!(echoed, 300, "{text}");
    // RST ended the TCP flow; the UDP flow is offloaded until it idles out (60 s).
    wait_fastpath_flows(&u, 1);
    // Counters are read back from the kernel about every second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(&u);
        let fast = metric(&m, "natfw_fastpath_packets_total", &[]);
        if fast > 500 {
            break;
        }
        assert!(Instant::now() < deadline, "fast path packets {fast}:\n{m}");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(64));
    wait_fastpath_flows(&u, 0);

    let recs = stop_and_read_log(&mut u.lab);
    let r = record(&recs, port, 80, "tcp");
    assert_eq!(
        r.get("end_reason").and_then(Value::as_str),
        Some("rst"),
        "{r}"
    );
    // 41 requests and responses: every response byte the client read is in the record.
    assert!(u64_of(r, "in_packet_count") >= 41, "{r}");
    assert!(u64_of(r, "out_packet_count") >= 41, "{r}");
    assert!(u64_of(r, "in_packet_bytes") >= got, "{r} vs {got} read");
    let r = record(&recs, 40_999, plan::ECHO_PORT, "udp");
    assert_eq!(
        r.get("end_reason").and_then(Value::as_str),
        Some("timeout"),
        "{r}"
    );
    // UDP is not aggregated: the counts are exact.
    assert_eq!(u64_of(r, "out_packet_count"), 300, "{r}");
    assert_eq!(u64_of(r, "in_packet_count"), 300, "{r}");
    assert_eq!(
        u64_of(r, "out_packet_bytes"),
        300 * (14 + 20 + 8 + 32),
        "{r}"
    );
}
