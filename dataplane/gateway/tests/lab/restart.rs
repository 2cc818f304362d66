//! Restart without dropping connections (fast path): natfw is stopped (SIGTERM) and started
//! again under a running iperf3 stream and a held-open HTTPS connection that keeps making
//! requests. Both survive: the pinned steering links forward their offloaded packets while no
//! natfw runs, the new run adopts the flows from the handover file, and each flow gets exactly
//! one end record whose counters cover the whole flow. A new connection tried while no natfw
//! runs gets nowhere (fail closed).
//!
//! Root only (prints `SKIP` otherwise); own namespace tag (`natfw-rs1-*`); the pins live on a
//! bpffs mounted in the lab's state directory.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use natfw_lab::demo::flow_records;
use natfw_lab::{plan, Lab, LabGuard};

const HOST: &str = "test";
const T: Duration = Duration::from_secs(30);
const METRICS: &str = "127.0.0.1:9112";

/// Unmounts the lab's bpffs (before the lab directory goes).
struct BpfMount(PathBuf);

impl Drop for BpfMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn u64_of(r: &Value, k: &str) -> u64 {
    r.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn end_records(recs: &[Value], sport: u16, dport: u16) -> Vec<&Value> {
    recs.iter()
        .filter(|r| {
            r.get("log_type").and_then(Value::as_str) == Some("flow")
                && u64_of(r, "src_port") == u64::from(sport)
                && u64_of(r, "dst_port") == u64::from(dport)
                && r.get("ip_protocol").and_then(Value::as_str) == Some("tcp")
        })
        .collect()
}

fn read_until(r: &mut impl BufRead, what: &str, text: &mut String, err: &std::path::Path) {
    while !text.contains(what) {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("client output");
        assert!(
            n > 0,
            "client ended before {what}: {text}\n{}",
            std::fs::read_to_string(err).unwrap_or_default()
        );
        text.push_str(&line);
    }
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn wait_fastpath_flows(lab: &Lab, ns: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = lab
            .exec(
                ns,
                &["curl", "-sS", &format!("http://{METRICS}/metrics")],
                T,
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if metric(&m, "natfw_fastpath_flows") >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "natfw_fastpath_flows never reached {at_least}:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The held-open HTTPS connection: one request every 200 ms on the same TLS connection until
/// `stop` exists (one more request then, `REQUESTS n`); a failure prints `FAILED n: why` and
/// exits 3. Returns the child, its stdout and the client's port.
fn https_client(
    lab: &Lab,
    host_ns: &str,
    stop: &std::path::Path,
    err: &std::path::Path,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    u16,
) {
    let web = plan::WEB_NAMES[0];
    let py = format!(
        r#"
import os, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile="{ca}")
raw = socket.create_connection(("{addr}", 443), timeout=10)
s = ctx.wrap_socket(raw, server_hostname="{name}")
f = s.makefile("rb")
n = 0
def one():
    global n
    s.sendall(b"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n")
    status = f.readline()
    if not status.startswith(b"HTTP/1.1 200"):
        raise OSError("bad status %r" % status)
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        if h.lower().startswith(b"content-length:"):
            length = int(h.split(b":")[1])
    f.read(length)
    n += 1
one()
print("PORT", s.getsockname()[1], flush=True)
try:
    while not os.path.exists("{stop}"):
        one()
        time.sleep(0.2)
    one()
except Exception as e:
    print("FAILED", n, ":", e, flush=True)
    sys.exit(3)
print("REQUESTS", n, flush=True)
s.close()
"#,
        ca = lab.ca_cert().display(),
        addr = web.addr,
        name = web.name,
        stop = stop.display(),
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", host_ns, "python3", "-c", &py])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(err).expect("stderr file"))
        .spawn()
        .expect("https client");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut text = String::new();
    read_until(&mut out, "PORT", &mut text, err);
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("PORT ")?.trim().parse().ok())
        .expect("https port");
    (child, out, port)
}

/// Mount a bpffs on the lab's pin directory (unmounted when the guard drops).
fn mount_bpf(lab: &Lab) -> BpfMount {
    let bpf = lab.dir.join("bpf");
    std::fs::create_dir_all(&bpf).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&bpf)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mounting a bpffs on {}", bpf.display());
    BpfMount(bpf)
}

/// A lab with a bpffs for the pins, and the test host's gateway config with the fast path
/// and a metrics listener; `None` (SKIP printed) without the lab's prerequisites.
struct Up {
    lab: LabGuard,
    _mount: BpfMount,
    gi: usize,
    g: natfw_lab::plan::GatewaySpec,
    host_ns: String,
    cfg_text: String,
}

fn up(tag: &str) -> Option<Up> {
    let crate::support::FastPathLab {
        lab,
        gi,
        g,
        cfg_text,
    } = crate::support::fast_path_lab("restart", tag, HOST, METRICS)?;
    let mount = mount_bpf(&lab);
    let host_ns = lab.plan.host(HOST).expect("host").ns.clone();
    Some(Up {
        lab,
        _mount: mount,
        gi,
        g,
        host_ns,
        cfg_text,
    })
}

#[test]
fn a_restart_under_an_iperf3_stream_and_a_held_open_https_connection_keeps_both() {
    let Some(Up {
        mut lab,
        _mount,
        gi,
        g,
        host_ns,
        cfg_text,
    }) = up("rs1")
    else {
        return;
    };
    lab.start_natfw_with(gi, &cfg_text)
        .unwrap_or_else(|e| panic!("natfw run did not start: {e}"));
    let _ = lab.exec(&g.ns, &["ip", "link", "set", "lo", "up"], T);
    let log_path = lab.dir.join(format!("natfw-{}.log", g.name));

    // The held-open HTTPS connection: one request every 200 ms on the same TLS connection
    // until told to stop; any failure ends it with an error.
    let web = plan::WEB_NAMES[0];
    let stop_marker = lab.dir.join("restart-stop");
    let https_err = lab.dir.join("https-client.err");
    let (https, mut https_out, https_port) = https_client(&lab, &host_ns, &stop_marker, &https_err);
    let mut https_text = String::new();

    // The iperf3 stream: long enough to outlast a restart of a debug build on a loaded box.
    let secs = 45;
    let iperf = Command::new("ip")
        .args(["netns", "exec", &host_ns, "iperf3", "-c"])
        .arg(plan::IPERF_ADDR.to_string())
        .args(["-p", &plan::IPERF_PORT.to_string()])
        .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iperf3");
    let started = Instant::now();
    // iperf3's control and data connections and the HTTPS one are on the fast path.
    wait_fastpath_flows(&lab, &g.ns, 3);
    std::thread::sleep(Duration::from_secs(2));

    // Restart: SIGTERM, wait for the exit, start again.
    for (gw, st) in lab.stop_natfw() {
        assert!(st.is_some_and(|s| s.success()), "natfw on {gw}: {st:?}");
    }
    let first_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        first_log.contains("handed 3 offloaded flows over"),
        "{first_log}"
    );
    let stopped_at = Instant::now();
    let between = flow_records(&lab);
    // While no natfw runs the kernel keeps forwarding them, and admits nothing new: a new
    // connection from the same host gets nowhere.
    let web2 = plan::WEB_NAMES[1];
    let probe = lab.host_exec(
        HOST,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            &format!("http://{}/", web2.addr),
        ],
        T,
    );
    assert!(
        probe.as_ref().is_ok_and(|o| !o.status.success()),
        "a new connection was forwarded while no natfw ran: {probe:?}"
    );
    lab.start_natfw_with(gi, &cfg_text)
        .unwrap_or_else(|e| panic!("natfw run did not start again: {e}"));
    let restart = stopped_at.elapsed();
    let second_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(second_log.contains("adopted 3 of 3 flows"), "{second_log}");
    assert_eq!(
        second_log
            .matches("took over the link the previous run pinned")
            .count(),
        2,
        "{second_log}"
    );
    assert!(
        started.elapsed() + Duration::from_secs(5) < Duration::from_secs(secs),
        "the restart took {restart:?}: iperf3 ({secs} s) ended before it could be checked"
    );
    wait_fastpath_flows(&lab, &g.ns, 3);

    let out = iperf.wait_with_output().expect("iperf3 output");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(v.get("error").is_none(), "iperf3: {v}");
    let received = v
        .pointer("/end/sum_received/bytes")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("iperf3 result: {v}"));
    let data_port = v
        .pointer("/start/connected/0/local_port")
        .and_then(Value::as_u64)
        .expect("iperf3 data port") as u16;
    let intervals = v
        .pointer("/intervals")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let empty = intervals
        .iter()
        .filter(|i| {
            i.pointer("/sum/bytes")
                .and_then(Value::as_u64)
                .is_some_and(|b| b == 0)
        })
        .count();
    assert!(
        intervals.len() as u64 >= secs - 1 && empty == 0,
        "iperf3 stalled ({empty} empty intervals of {}): {v}",
        intervals.len()
    );

    std::fs::write(&stop_marker, b"").unwrap();
    read_until(&mut https_out, "REQUESTS", &mut https_text, &https_err);
    let st = https.wait_with_output().expect("https client");
    assert!(
        st.status.success(),
        "{https_text}\n{}",
        std::fs::read_to_string(&https_err).unwrap_or_default()
    );
    let requests: u64 = https_text
        .lines()
        .find_map(|l| l.strip_prefix("REQUESTS ")?.trim().parse().ok())
        .expect("requests");

    for (gw, st) in lab.stop_natfw() {
        assert!(st.is_some_and(|s| s.success()), "natfw on {gw}: {st:?}");
    }
    let recs = flow_records(&lab);
    // Nothing of the three was recorded at the handover.
    assert!(end_records(&between, data_port, plan::IPERF_PORT).is_empty());
    assert!(end_records(&between, https_port, 443).is_empty());
    let data = end_records(&recs, data_port, plan::IPERF_PORT);
    assert_eq!(data.len(), 1, "iperf3 data records: {data:#?}");
    let r = data[0];
    let (pkts, bytes) = (u64_of(r, "out_packet_count"), u64_of(r, "out_packet_bytes"));
    eprintln!(
        "restart in {restart:?}: iperf3 server received {received} B; record {pkts} packets \
         {bytes} B; HTTPS: {requests} requests on one connection"
    );
    assert!(
        bytes >= received,
        "record {bytes} B < received {received}: {r}"
    );
    assert!(
        bytes <= received + pkts * 100,
        "record {bytes} B for {pkts}: {r}"
    );
    let h = end_records(&recs, https_port, 443);
    assert_eq!(h.len(), 1, "HTTPS records: {h:#?}");
    let h = h[0];
    assert_eq!(
        h.get("domain").and_then(Value::as_str),
        Some(web.name),
        "{h}"
    );
    // Every request and response crossed the gateway: at least one packet each way each.
    assert!(u64_of(h, "out_packet_count") >= requests, "{h}");
    assert!(u64_of(h, "in_packet_count") >= requests, "{h}");
    assert!(
        matches!(
            h.get("end_reason").and_then(Value::as_str),
            Some("fin" | "rst")
        ),
        "{h}"
    );
}

/// A restart with a changed policy does not adopt: the handed-over HTTPS flow gets its record
/// at the new start (`shutdown`, its facts and counters kept), its kernel entries go, and its
/// next request is reset instead of being forwarded under a policy that did not decide it.
#[test]
fn a_restart_with_a_changed_policy_decides_the_handed_over_flows_again() {
    let Some(Up {
        mut lab,
        _mount,
        gi,
        g,
        host_ns,
        cfg_text,
    }) = up("rs2")
    else {
        return;
    };
    // A change that still accepts the connection, then one that denies its domain.
    let reworded = cfg_text.replacen(
        "description: test systems never talk to the payment partner",
        "description: no payments from test systems",
        1,
    );
    assert_ne!(reworded, cfg_text);
    let denying = cfg_text.replacen(
        "destination: { domain: [pay.partner.test] }",
        &format!(
            "destination: {{ domain: [pay.partner.test, {}] }}",
            plan::WEB_NAMES[0].name
        ),
        1,
    );
    assert_ne!(denying, cfg_text);
    lab.start_natfw_with(gi, &cfg_text)
        .unwrap_or_else(|e| panic!("natfw run did not start: {e}"));
    let _ = lab.exec(&g.ns, &["ip", "link", "set", "lo", "up"], T);
    let log_path = lab.dir.join(format!("natfw-{}.log", g.name));
    let stop_marker = lab.dir.join("restart-stop");
    let err = lab.dir.join("https-client.err");
    let (https, mut out, port) = https_client(&lab, &host_ns, &stop_marker, &err);
    wait_fastpath_flows(&lab, &g.ns, 1);
    for (gw, st) in lab.stop_natfw() {
        assert!(st.is_some_and(|s| s.success()), "natfw on {gw}: {st:?}");
    }
    let first_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        first_log.contains("handed 1 offloaded flows over"),
        "{first_log}"
    );
    lab.start_natfw_with(gi, &reworded)
        .unwrap_or_else(|e| panic!("natfw run did not start again: {e}"));
    let second_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        second_log.contains("adopted 1 of 1 flows the previous run handed over (0 ended: the firewall changed, every flow decided again, 0 denied)"),
        "{second_log}"
    );
    // Still forwarded: the client's requests go on across the restart (nginx logs them).
    let served = lab.access_log().lines().count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.access_log().lines().count() < served + 3 {
        assert!(
            Instant::now() < deadline,
            "no request served after the adoption"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_fastpath_flows(&lab, &g.ns, 1);
    for (gw, st) in lab.stop_natfw() {
        assert!(st.is_some_and(|s| s.success()), "natfw on {gw}: {st:?}");
    }
    lab.start_natfw_with(gi, &denying)
        .unwrap_or_else(|e| panic!("natfw run did not start a third time: {e}"));
    let third_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        third_log.contains("adopted 0 of 1 flows the previous run handed over (1 ended: the firewall changed, every flow decided again, 1 denied)"),
        "{third_log}"
    );
    let mut text = String::new();
    read_until(&mut out, "FAILED", &mut text, &err);
    let st = https.wait_with_output().expect("https client");
    assert_eq!(st.status.code(), Some(3), "{text}");
    for (gw, st) in lab.stop_natfw() {
        assert!(st.is_some_and(|s| s.success()), "natfw on {gw}: {st:?}");
    }
    // Nothing offloaded at that stop: nothing is left pinned.
    for side in ["inside", "outside"] {
        let dir = lab.dir.join("bpf").join(side);
        assert!(!dir.join("steer_link").exists(), "{}", dir.display());
        assert!(!dir.join("offload").exists(), "{}", dir.display());
    }
    assert!(!lab.dir.join("handover").exists());
    let recs = flow_records(&lab);
    let h = end_records(&recs, port, 443);
    assert_eq!(h.len(), 1, "HTTPS records: {h:#?}");
    let h = h[0];
    assert_eq!(
        h.get("end_reason").and_then(Value::as_str),
        Some("shutdown"),
        "{h}"
    );
    assert_eq!(
        h.get("domain").and_then(Value::as_str),
        Some(plan::WEB_NAMES[0].name),
        "{h}"
    );
    let requests: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("requests");
    assert!(u64_of(h, "out_packet_count") >= requests, "{h}");
}
